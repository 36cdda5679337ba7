"""gridconv: Numba kernels for convolutions over grids, with their gradients.

Functional operations over NumPy arrays, channels-first ``(N, C, *spatial)``; the spatial
rank (1, 2 or 3) comes from the weight.
"""

from . import kernels, reference
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

__version__ = "0.1.0"

__all__ = [
    "conv", "conv1d", "conv2d", "conv3d", "convolve", "conv_transpose",
    "conv_backward", "conv_transpose_backward", "conv_grad_input", "conv_grad_weight",
    "reference", "kernels",
]
