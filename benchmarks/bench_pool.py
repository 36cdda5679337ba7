"""asv benchmarks of gridconv's CPU pooling (max, average, L2, global).

Run from the repository root (see benchmarks/README.md)::

    asv run --python=same --quick --show-stderr --bench Pool

``time_*`` benchmarks time one call; ``peakmem_*`` record the process's peak resident set
size during the call (asv's ``peakmem``; compare it across commits). Every ``setup`` makes
one warm-up call so that Numba compilation (or loading from its on-disk cache) is
excluded. ``direction="forward"`` times the forward call (max pooling with its indices,
as a layer needs them); ``"backward"`` times the backward call alone, given
``grad_output`` (max pooling routes with the forward's indices). Shapes are small so
that ``asv run --quick`` finishes in a minute or two on 2 cores; the thread count is
Numba's default (set ``NUMBA_NUM_THREADS`` to pin it).
"""

import numpy as np

import gridconv

DIRECTIONS = ["forward", "backward"]
DTYPES = ["float32", "float64"]

# Batch, channels and spatial size per rank: about 2-4 million input elements.
SHAPES = {1: (8, 16, (16384,)), 2: (8, 32, (64, 64)), 3: (2, 8, (48, 48, 48))}
# (window, stride, padding): non-overlapping windows (the fast path) and the overlapping
# 3-wide windows of ResNet stems.
GEOMETRIES = {"2s2": (2, 2, 0), "3s2p1": (3, 2, 1)}


class _PoolCase:
    """``setup`` builds ``self.call`` and makes one warm-up call."""

    timeout = 300.0

    def _arrays(self, rank, dtype, out_shape_of):
        n, c, size = SHAPES[rank]
        rng = np.random.default_rng(0)
        x = rng.standard_normal((n, c, *size)).astype(dtype)
        g = rng.standard_normal(out_shape_of(x)).astype(dtype)
        return x, g


class _WindowedCase(_PoolCase):
    """``max_pool`` / ``avg_pool`` / ``lp_pool`` (p = 2) and their backward functions."""

    def setup(self, op, rank, geometry, direction, dtype):
        k, s, p = GEOMETRIES[geometry]
        kw = dict(window=k, stride=s, padding=p)
        x, g = self._arrays(rank, dtype, lambda a: gridconv.avg_pool(a, **kw).shape)
        if op == "max":
            _, idx = gridconv.max_pool(x, **kw, return_indices=True)
            if direction == "forward":
                self.call = lambda: gridconv.max_pool(x, **kw, return_indices=True)
            else:
                self.call = lambda: gridconv.max_pool_backward(g, x, **kw, indices=idx)
        elif op == "avg":
            if direction == "forward":
                self.call = lambda: gridconv.avg_pool(x, **kw)
            else:
                self.call = lambda: gridconv.avg_pool_backward(g, x, **kw)
        else:
            if direction == "forward":
                self.call = lambda: gridconv.lp_pool(x, 2, **kw)
            else:
                self.call = lambda: gridconv.lp_pool_backward(g, x, 2, **kw)
        self.call()  # warm-up: compile or load from Numba's cache


class Pool(_WindowedCase):
    """Time of every windowed pooling, forward and backward, the full parameter grid."""

    params = [["max", "avg", "lp2"], [1, 2, 3], list(GEOMETRIES), DIRECTIONS, DTYPES]
    param_names = ["op", "rank", "geometry", "direction", "dtype"]

    def time_pool(self, *params):
        self.call()


class PoolMemory(_WindowedCase):
    """Peak memory of the 2-D and 3-D non-overlapping cases, float32."""

    params = [["max", "avg", "lp2"], [2, 3], ["2s2"], DIRECTIONS, ["float32"]]
    param_names = ["op", "rank", "geometry", "direction", "dtype"]

    def peakmem_pool(self, *params):
        self.call()


class GlobalPool(_PoolCase):
    """``global_max_pool`` / ``global_avg_pool`` and their backward functions."""

    params = [["max", "avg"], [1, 2, 3], DIRECTIONS, DTYPES]
    param_names = ["op", "rank", "direction", "dtype"]

    def setup(self, op, rank, direction, dtype):
        x, g = self._arrays(rank, dtype, lambda a: a.shape[:2] + (1,) * (a.ndim - 2))
        fwd = gridconv.global_max_pool if op == "max" else gridconv.global_avg_pool
        bwd = (gridconv.global_max_pool_backward if op == "max"
               else gridconv.global_avg_pool_backward)
        self.call = (lambda: fwd(x)) if direction == "forward" else (lambda: bwd(g, x))
        self.call()

    def time_global_pool(self, *params):
        self.call()


_FIRST_CALL = """
x = np.ones((2, 3, 32, 32), np.float32)
gridconv.max_pool(x, 2, return_indices=True)
"""


def timeraw_first_max_pool():
    """First small 2-D float32 ``max_pool`` in a fresh interpreter (on-disk cache warm)."""
    return _FIRST_CALL, "import numpy as np\nimport gridconv"
