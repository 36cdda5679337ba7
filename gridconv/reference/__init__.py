"""Plain-NumPy reference convolutions: the mathematics of a CNN as readable code.

Every function here is written straight from the definitions, for clarity rather than
speed: it loops over the kernel offsets and lets NumPy slicing and :func:`numpy.einsum`
do the rest. The test-suite checks the fast Numba engine (:mod:`gridconv.conv`) against
these functions, and users can read them to see exactly what the engine computes, or
call them on small problems.

Conventions
-----------
Arrays are channels-first: an input ``x`` has shape ``(N, C_in, *S)`` (batch, channels,
spatial sizes) and a weight has shape ``(C_out, C_in // groups, *K)``; the spatial rank
``d = weight.ndim - 2`` (1, 2 or 3 in the engine; any ``d >= 1`` here). Per spatial axis
there is a stride ``s``, a dilation ``r`` and a padding ``(lo, hi)``.

Convolution (cross-correlation, the "convolution" of deep learning)::

    y[n, o, i] = b[o] + sum_{c, k} w[o, c, k] * xpad[n, g(o) * C_in/groups + c, s*i + r*k]

with multi-indices ``i`` (output position) and ``k`` (kernel offset), the group of an
output channel ``g(o) = o // (C_out / groups)``, and ``xpad`` the input padded by
``(lo, hi)`` on every spatial axis. The output size on each axis is
``O = floor((I + lo + hi - r*(K-1) - 1) / s) + 1``. With ``flip=True`` the kernel is
reversed on every spatial axis first, which gives the true (mathematical) convolution.

Transposed convolution is the adjoint of the (zero-padded) convolution with respect to
its input: each input element scatters a copy of the kernel into the output::

    y[n, g*Cog + o, s*i + r*k - lo] += x[n, g*Cig + c, i] * w[g*Cig + c, o, k]

keeping only the positions that land inside ``[0, O)``, where
``O = (I-1)*s - lo - hi + r*(K-1) + 1 + output_padding`` (PyTorch's rule).

Pooling reduces each window ``xpad[n, c, s*i + r*k]`` (over the offsets ``k``) by its
maximum (padding with ``-inf``), its mean, or its L^p norm ``(sum |x|^p)^(1/p)``; the
global poolings reduce whole ``(n, c)`` planes. Window counts follow PyTorch's
``max_pool``/``avg_pool`` rule, ``ceil_mode`` included (see :mod:`._pool`).

The argument conventions (padding forms, errors, output shapes) are the engine's own:
they come from :mod:`gridconv._params` and :mod:`gridconv._shapes`.
"""

from ._activation import (
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
from ._conv import (
    NUMPY_PAD_MODES,
    conv,
    conv_backward,
    conv_grad_input,
    conv_grad_weight,
    conv_transpose,
    conv_transpose_backward,
    convolve,
    pad,
)
from ._local import tiled_conv, tiled_conv_backward, unshared_conv, unshared_conv_backward
from ._pool import (
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

__all__ = [
    "NUMPY_PAD_MODES",
    "pad",
    "conv",
    "convolve",
    "conv_transpose",
    "conv_grad_input",
    "conv_grad_weight",
    "conv_backward",
    "conv_transpose_backward",
    "unshared_conv",
    "unshared_conv_backward",
    "tiled_conv",
    "tiled_conv_backward",
    "max_pool",
    "max_pool_backward",
    "avg_pool",
    "avg_pool_backward",
    "lp_pool",
    "lp_pool_backward",
    "global_max_pool",
    "global_max_pool_backward",
    "global_avg_pool",
    "global_avg_pool_backward",
    "relu",
    "relu_backward",
    "leaky_relu",
    "leaky_relu_backward",
    "prelu",
    "prelu_backward",
    "abs_rectify",
    "abs_rectify_backward",
    "sigmoid",
    "sigmoid_backward",
    "tanh",
    "tanh_backward",
    "softmax",
    "softmax_backward",
    "log_softmax",
    "log_softmax_backward",
]
