"""asv benchmarks of gridconv's CPU convolutions.

Run from the repository root (see benchmarks/README.md)::

    asv machine --yes
    asv run --python=same --quick --show-stderr
    asv run --python=same --bench Conv.time_conv --quick

``time_*`` benchmarks time one call; ``peakmem_*`` record the process's peak resident set
size during the call (asv's ``peakmem``, which includes the inputs allocated in ``setup``
and the interpreter; compare it across commits, not as an absolute workspace size --
``benchmarks/compare.py`` prints the workspace of each call).  Every ``setup`` makes one
warm-up call so that Numba compilation (or loading from its on-disk cache) is excluded.
``direction="forward"`` times the forward call; ``"backward"`` times the backward call
alone (``conv_backward``: gradients of input, weight and bias, given ``grad_output``).
Shapes are small so that ``asv run --quick`` finishes in a few minutes on 2 cores; the
thread count is Numba's default (set ``NUMBA_NUM_THREADS`` to pin it).
"""

import numpy as np

import gridconv

DIRECTIONS = ["forward", "backward"]
DTYPES = ["float32", "float64"]

# Batch and spatial size per rank, chosen so that the largest configuration
# (32 -> 32 channels, kernel 5) is a few hundred million multiply-adds.
SHAPES = {1: (8, (8192,)), 2: (4, (48, 48)), 3: (2, (12, 12, 12))}


def _arrays(rng, x_shape, w_shape, c_out, out_shape, dtype):
    x = rng.standard_normal(x_shape).astype(dtype)
    w = (rng.standard_normal(w_shape) / np.sqrt(np.prod(w_shape[1:]))).astype(dtype)
    b = rng.standard_normal(c_out).astype(dtype)
    g = rng.standard_normal(out_shape).astype(dtype)
    return x, w, b, g


class _Case:
    """Shared plumbing: ``setup`` builds ``self.call`` and makes one warm-up call."""

    timeout = 300.0

    def _prepare(self, forward, backward, x, w, b, g, params, direction):
        if direction == "forward":
            self.call = lambda: forward(x, w, b, **params)
        else:
            self.call = lambda: backward(g, x, w, b, **params)
        self.call()  # warm-up: compile or load from Numba's cache


class _ConvCase(_Case):
    """``gridconv.conv`` / ``conv_backward`` with C_in = C_out = channels, padding k // 2."""

    def setup(self, rank, channels, kernel, stride, direction, dtype):
        n, size = SHAPES[rank]
        pad = kernel // 2
        out = tuple((s + 2 * pad - kernel) // stride + 1 for s in size)
        rng = np.random.default_rng(0)
        x, w, b, g = _arrays(rng, (n, channels, *size), (channels, channels, *(kernel,) * rank),
                             channels, (n, channels, *out), dtype)
        self._prepare(gridconv.conv, gridconv.conv_backward, x, w, b, g,
                      dict(stride=stride, padding=pad), direction)


class Conv(_ConvCase):
    """Time of ``conv`` (forward) / ``conv_backward``, the full parameter grid."""

    params = [[1, 2, 3], [4, 32], [3, 5], [1, 2], DIRECTIONS, DTYPES]
    param_names = ["rank", "channels", "kernel", "stride", "direction", "dtype"]

    def time_conv(self, *params):
        self.call()


class ConvMemory(_ConvCase):
    """Peak memory of ``conv`` / ``conv_backward`` (32 channels, stride 1, float32)."""

    params = [[1, 2, 3], [32], [3, 5], [1], DIRECTIONS, ["float32"]]
    param_names = ["rank", "channels", "kernel", "stride", "direction", "dtype"]

    def peakmem_conv(self, *params):
        self.call()


class _DepthwiseCase(_Case):
    """Depthwise ``conv`` (groups = channels = 32), kernel 3, padding 1."""

    def setup(self, rank, stride, direction, dtype):
        n, size = SHAPES[rank]
        c, k = 32, 3
        out = tuple((s + 2 - k) // stride + 1 for s in size)
        rng = np.random.default_rng(0)
        x, w, b, g = _arrays(rng, (n, c, *size), (c, 1, *(k,) * rank), c, (n, c, *out), dtype)
        self._prepare(gridconv.conv, gridconv.conv_backward, x, w, b, g,
                      dict(stride=stride, padding=1, groups=c), direction)


class Depthwise(_DepthwiseCase):
    params = [[1, 2, 3], [1, 2], DIRECTIONS, DTYPES]
    param_names = ["rank", "stride", "direction", "dtype"]

    def time_depthwise(self, *params):
        self.call()


class DepthwiseMemory(_DepthwiseCase):
    params = [[1, 2, 3], [1], DIRECTIONS, ["float32"]]
    param_names = ["rank", "stride", "direction", "dtype"]

    def peakmem_depthwise(self, *params):
        self.call()


class _ConvTransposeCase(_Case):
    """``gridconv.conv_transpose`` / its backward, 32 -> 16 channels, upsampling by 2."""

    def setup(self, rank, kernel, direction, dtype):
        n, size = SHAPES[rank]
        size = tuple(s // 2 for s in size)
        c_in, c_out, stride = 32, 16, 2
        pad = (kernel - 1) // 2
        out_pad = (kernel % 2) if kernel > 2 else 0
        out = tuple((s - 1) * stride - 2 * pad + kernel + out_pad for s in size)
        rng = np.random.default_rng(0)
        x, w, b, g = _arrays(rng, (n, c_in, *size), (c_in, c_out, *(kernel,) * rank), c_out,
                             (n, c_out, *out), dtype)
        self._prepare(gridconv.conv_transpose, gridconv.conv_transpose_backward, x, w, b, g,
                      dict(stride=stride, padding=pad, output_padding=out_pad), direction)


class ConvTranspose(_ConvTransposeCase):
    params = [[1, 2, 3], [2, 3], DIRECTIONS, DTYPES]
    param_names = ["rank", "kernel", "direction", "dtype"]

    def time_conv_transpose(self, *params):
        self.call()


class ConvTransposeMemory(_ConvTransposeCase):
    params = [[1, 2, 3], [2], DIRECTIONS, ["float32"]]
    param_names = ["rank", "kernel", "direction", "dtype"]

    def peakmem_conv_transpose(self, *params):
        self.call()


class Filter:
    """Single-channel filtering, ``conv(x[None, None], w[None, None], padding="same")``."""

    params = [[(1, 65536, 31), (2, 512, 7), (3, 64, 3)], DTYPES]
    param_names = ["rank_size_kernel", "dtype"]
    timeout = 300.0

    def setup(self, case, dtype):
        rank, size, k = case
        rng = np.random.default_rng(0)
        self.x = rng.standard_normal((1, 1, *(size,) * rank)).astype(dtype)
        self.w = rng.standard_normal((1, 1, *(k,) * rank)).astype(dtype)
        self.time_filter(case, dtype)  # warm-up

    def time_filter(self, case, dtype):
        gridconv.conv(self.x, self.w, padding="same")

    def peakmem_filter(self, case, dtype):
        gridconv.conv(self.x, self.w, padding="same")


_FIRST_CALL = """
x = np.ones((2, 3, 32, 32), np.float32)
w = np.ones((8, 3, 3, 3), np.float32)
gridconv.conv(x, w, padding=1)
"""


def timeraw_import():
    """``import gridconv`` in a fresh interpreter (numpy and numba already imported)."""
    return "import gridconv", "import numpy, numba"


def timeraw_first_call():
    """First small 2-D float32 ``conv`` in a fresh interpreter (on-disk cache warm)."""
    return _FIRST_CALL, "import numpy as np\nimport gridconv"
