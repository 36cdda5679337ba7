"""asv benchmarks of the locally connected convolutions (``unshared_conv``, ``tiled_conv``).

Run from the repository root (see benchmarks/README.md)::

    asv run --python=same --bench Local --quick

``direction="forward"`` times the forward call; ``"backward"`` the backward call alone
(gradients of input, weight and bias). Shapes follow the side-by-side script
(``benchmarks/side_local.py``), reduced so that the whole grid runs in a few minutes.
"""

import numpy as np

import gridconv

DIRECTIONS = ["forward", "backward"]
# (N, channels, spatial size) per rank; kernel 3, valid padding
SHAPES = {1: (16, 16, (256,)), 2: (16, 16, (32, 32)), 3: (4, 8, (12, 12, 12))}


class _LocalCase:
    timeout = 300.0

    def setup(self, op, rank, tiles, direction, dtype):
        if op == "unshared" and tiles != 1:
            raise NotImplementedError  # asv skips: unshared has no tile parameter
        n, c, size = SHAPES[rank]
        out = tuple(s - 2 for s in size)
        lead = out if op == "unshared" else (tiles,) * rank
        rng = np.random.default_rng(0)
        x = rng.standard_normal((n, c, *size)).astype(dtype)
        w = (rng.standard_normal(lead + (c, c) + (3,) * rank) / np.sqrt(c * 3 ** rank))
        w = w.astype(dtype)
        b = rng.standard_normal((c, *out) if op == "unshared" else (c,)).astype(dtype)
        g = rng.standard_normal((n, c, *out)).astype(dtype)
        fwd = gridconv.unshared_conv if op == "unshared" else gridconv.tiled_conv
        bwd = (gridconv.unshared_conv_backward if op == "unshared"
               else gridconv.tiled_conv_backward)
        if direction == "forward":
            self.call = lambda: fwd(x, w, b)
        else:
            self.call = lambda: bwd(g, x, w, b)
        self.call()  # warm-up: compile or load from Numba's cache


class Local(_LocalCase):
    params = [["unshared", "tiled"], [1, 2, 3], [1, 2, 4], DIRECTIONS, ["float32", "float64"]]
    param_names = ["op", "rank", "tiles", "direction", "dtype"]

    def time_local(self, *params):
        self.call()


class LocalMemory(_LocalCase):
    params = [["unshared", "tiled"], [1, 2, 3], [1, 2], DIRECTIONS, ["float32"]]
    param_names = ["op", "rank", "tiles", "direction", "dtype"]

    def peakmem_local(self, *params):
        self.call()
