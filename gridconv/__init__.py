"""gridconv: Numba kernels for convolutions over grids, with their gradients.

Functional operations over NumPy arrays, channels-first ``(N, C, *spatial)``; the spatial
rank (1, 2 or 3) comes from the weight.
"""

import os as _os

# Numba's OpenMP workers busy-wait after each parallel region by default. On a machine with
# few cores that spinning steals the cores from the next kernel, from BLAS and from other
# processes (measured on 2 cores: a training step 2x slower, single ops up to 20x).
# Sleeping workers cost microseconds per region instead. Set before the OpenMP runtime
# starts; a value the user set wins. Other OpenMP runtimes loaded later in the process (for
# example PyTorch's own libgomp) read the same variable, which is why benchmarks/compare.py
# imports torch with it unset.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from . import kernels, reference  # noqa: E402
from ._algorithms import algorithms, set_algorithms  # noqa: E402
from .activation import (
    abs_rectify,
    abs_rectify_backward,
    leaky_relu,
    leaky_relu_backward,
    log_softmax,
    log_softmax_backward,
    prelu,
    prelu_backward,
    relu,
    relu_backward,
    sigmoid,
    sigmoid_backward,
    softmax,
    softmax_backward,
    tanh,
    tanh_backward,
)
from .conv import (
    conv,
    conv1d,
    conv2d,
    conv3d,
    conv_backward,
    conv_grad_input,
    conv_grad_weight,
    conv_transpose,
    conv_transpose_backward,
    convolve,
)
from .device import backends, to_device, to_host
from .local import tiled_conv, tiled_conv_backward, unshared_conv, unshared_conv_backward
from .pool import (
    avg_pool,
    avg_pool_backward,
    global_avg_pool,
    global_avg_pool_backward,
    global_max_pool,
    global_max_pool_backward,
    lp_pool,
    lp_pool_backward,
    max_pool,
    max_pool_backward,
)

__version__ = "0.1.0"

# Submodules with heavier dependencies (h5py, Dask) load on first use: ``gridconv.nn``,
# ``gridconv.data``, ``gridconv.datasets``, ``gridconv.dask``.
_LAZY = ("nn", "data", "datasets", "dask")


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "conv", "conv1d", "conv2d", "conv3d", "convolve", "conv_transpose",
    "conv_backward", "conv_transpose_backward", "conv_grad_input", "conv_grad_weight",
    "unshared_conv", "unshared_conv_backward", "tiled_conv", "tiled_conv_backward",
    "max_pool", "max_pool_backward", "avg_pool", "avg_pool_backward", "lp_pool",
    "lp_pool_backward", "global_max_pool", "global_max_pool_backward", "global_avg_pool",
    "global_avg_pool_backward",
    "relu", "relu_backward", "leaky_relu", "leaky_relu_backward", "prelu", "prelu_backward",
    "abs_rectify", "abs_rectify_backward", "sigmoid", "sigmoid_backward", "tanh",
    "tanh_backward", "softmax", "softmax_backward", "log_softmax", "log_softmax_backward",
    "reference", "kernels", "to_device", "to_host", "backends", "algorithms",
    "set_algorithms",
]
