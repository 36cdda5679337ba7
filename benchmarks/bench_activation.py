"""asv benchmarks of gridconv's activation functions (CPU).

Run from the repository root (see benchmarks/README.md)::

    asv run --python=same --bench Activation --quick --show-stderr

Every operation on an ``N=32, C=64, 32x32`` feature map (2 M elements; softmax and
log_softmax over the channels, per pixel), and log_softmax over the classes of a dense
``(4096, 1000)`` batch. ``direction="forward"`` times the forward call; ``"backward"``
times the backward call alone, from ``x`` (``prelu_backward`` returns the input and
weight gradients); ``"backward_output"`` passes the forward result as ``output=``
instead (sigmoid, tanh, softmax and log_softmax only; skipped for the others). Every
``setup`` makes one warm-up call, so Numba compilation (or loading from its on-disk
cache) is excluded. ``peakmem_*`` record the process's peak resident set size (compare
across commits).
"""

import numpy as np

import gridconv

OPS = ["relu", "leaky_relu", "prelu", "abs_rectify", "sigmoid", "tanh", "softmax",
       "log_softmax"]
DIRECTIONS = ["forward", "backward", "backward_output"]
DTYPES = ["float32", "float64"]
SHAPE = (32, 64, 32, 32)
_WITH_OUTPUT = {"sigmoid", "tanh", "softmax", "log_softmax"}


def _calls(op, x, g, weight, axis):
    """(forward, backward from x, backward from the output or None) for ``op``."""
    fwd = getattr(gridconv, op)
    bwd = getattr(gridconv, op + "_backward")
    if op == "prelu":
        return lambda: fwd(x, weight), lambda: bwd(g, x, weight), None
    kw = {"negative_slope": 0.1} if op == "leaky_relu" else {}
    if op in ("softmax", "log_softmax"):
        kw = {"axis": axis}
    if op not in _WITH_OUTPUT:
        return lambda: fwd(x, **kw), lambda: bwd(g, x, **kw), None
    y = fwd(x, **kw)
    return lambda: fwd(x, **kw), lambda: bwd(g, x, **kw), lambda: bwd(g, None, **kw, output=y)


class _Case:
    timeout = 120.0

    def _prepare(self, op, shape, direction, dtype, axis=1):
        rng = np.random.default_rng(0)
        x = rng.standard_normal(shape).astype(dtype)
        g = rng.standard_normal(shape).astype(dtype)
        weight = rng.uniform(0.05, 0.3, shape[1]).astype(dtype)
        fwd, bwd, bwd_output = _calls(op, x, g, weight, axis)
        self.call = {"forward": fwd, "backward": bwd, "backward_output": bwd_output}[direction]
        if self.call is None:
            raise NotImplementedError(f"{op} has no `output=` backward")  # asv: skipped
        self.call()  # warm-up: compile or load from cache, start the thread pool


class Activation(_Case):
    """Time of every activation, forward and backward, on (32, 64, 32, 32)."""

    params = [OPS, DIRECTIONS, DTYPES]
    param_names = ["op", "direction", "dtype"]

    def setup(self, op, direction, dtype):
        self._prepare(op, SHAPE, direction, dtype)

    def time_activation(self, *params):
        self.call()


class ActivationMemory(_Case):
    """Peak memory of every activation, forward and backward (float32)."""

    params = [OPS, ["forward", "backward"], ["float32"]]
    param_names = ["op", "direction", "dtype"]

    def setup(self, op, direction, dtype):
        self._prepare(op, SHAPE, direction, dtype)

    def peakmem_activation(self, *params):
        self.call()


class DenseLogSoftmax(_Case):
    """log_softmax over the last axis of (4096, 1000) logits (contiguous rows)."""

    params = [DIRECTIONS, DTYPES]
    param_names = ["direction", "dtype"]

    def setup(self, direction, dtype):
        self._prepare("log_softmax", (4096, 1000), direction, dtype, axis=-1)

    def time_dense_log_softmax(self, *params):
        self.call()
