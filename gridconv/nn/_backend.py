"""The array maths of :mod:`gridconv.nn`, on the host or on a CUDA device.

Layers, losses and optimisers compute with the public gridconv operations (convolutions,
pooling, activations: those dispatch on the array kind themselves) and with the small
functions below for everything else. Each function looks at its array arguments: NumPy
arrays run the NumPy code (exactly what the layers computed before they could run on a
GPU), CUDA arrays (Numba device arrays, CuPy, PyTorch CUDA tensors, the simulator's arrays)
run the kernels of :mod:`gridconv._cuda.nn` and give Numba device arrays. That module,
and with it ``numba.cuda``, is imported only when a device array arrives.
"""

from __future__ import annotations

import importlib
import math

import numpy as np

from .._dispatch import array_kind

CPU, CUDA = "cpu", "cuda"


def is_device(a) -> bool:
    """Whether ``a`` is a CUDA array."""
    return not isinstance(a, np.ndarray) and array_kind(a) == CUDA


def location(a) -> str:
    """``"cuda"`` for a CUDA array, else ``"cpu"``."""
    return CUDA if is_device(a) else CPU


def describe(where: str) -> str:
    return "on the CUDA device" if where == CUDA else "on the host (NumPy)"


def cuda():
    """:mod:`gridconv._cuda.nn` (imports ``numba.cuda``)."""
    return importlib.import_module("gridconv._cuda.nn")


def as_array(x):
    """A device array as it is; anything else through :func:`numpy.asarray`."""
    return x if is_device(x) else np.asarray(x)


def to_device(a, dtype=None):
    """A host array copied to the device (a device array is returned as it is; ``dtype``
    converts on the host first, before the copy)."""
    if is_device(a):
        return a if dtype is None else astype(a, dtype)
    return cuda().to_device(np.asarray(a), dtype)


def to_host(a):
    """A NumPy array (device arrays are copied; host arrays returned as they are)."""
    if a is None or isinstance(a, np.ndarray):
        return a
    from ..device import to_host as _to_host

    return _to_host(a)


def to(a, where: str, dtype=None):
    """``a`` moved to ``where`` (``"cpu"`` or ``"cuda"``)."""
    if where == CUDA:
        return to_device(a, dtype)
    host = to_host(a)
    return host if dtype is None else host.astype(dtype, copy=False)


def host_copy(a) -> np.ndarray:
    """A NumPy copy of ``a`` (never the array itself)."""
    return to_host(a) if is_device(a) else np.array(a, copy=True)


# ------------------------------------------------------------------ elementwise, fills ---

def astype(a, dtype):
    """``a`` in ``dtype``; ``a`` itself when it already is."""
    if is_device(a):
        return cuda().astype(a, dtype)
    return a.astype(dtype, copy=False)


def zeros_like(a):
    if is_device(a):
        return cuda().zeros(a.shape, a.dtype)
    return np.zeros_like(a)


def fill(a, value) -> None:
    """Set every element of ``a`` to ``value``, in place."""
    if is_device(a):
        cuda().fill(a, value)
    else:
        a[...] = value


def assign(dst, src) -> None:
    """Copy the values of ``src`` (host or device, same shape) into ``dst``, in place."""
    if is_device(dst):
        cuda().assign(dst, src)
    else:
        dst[...] = to_host(src)


def copy(a):
    return cuda().copy(a) if is_device(a) else a.copy()


def add(a, b):
    """``a + b`` (a new array)."""
    return cuda().add(a, b) if is_device(a) else a + b


def add_into(dst, src) -> None:
    """``dst += src``, in place."""
    if is_device(dst):
        cuda().add_into(dst, src)
    else:
        dst += src


def reshape(a, shape):
    """``a`` with a new shape (a view when possible; device arrays made contiguous)."""
    shape = tuple(int(s) for s in shape)
    return cuda().reshape(a, shape) if is_device(a) else a.reshape(shape)


def flatten2(a):
    """``(N, *rest) -> (N, prod(rest))``."""
    return reshape(a, (a.shape[0], math.prod(a.shape[1:])))


# ------------------------------------------------------------------------ reductions ---

def channel_sum(a):
    """Sum over every axis but the channels (axis 1): a convolution's bias gradient."""
    if is_device(a):
        return cuda().channel_sum(a)
    return a.sum(axis=(0, *range(2, a.ndim)))


def column_sum(a):
    """``a.sum(axis=0)`` of a matrix: the dense layer's bias gradient."""
    return cuda().column_sum(a) if is_device(a) else a.sum(axis=0)


# --------------------------------------------------------------------------- products ---

_BLAS = None


def one_blas_thread():
    """A context that pins BLAS to one thread: its spinning worker threads and Numba's
    threads otherwise fight over the cores (a 25 MFLOP product took 40-100 ms instead of
    1.5 ms in a training step on 2 cores)."""
    global _BLAS
    if _BLAS is None:
        from threadpoolctl import ThreadpoolController

        _BLAS = ThreadpoolController()
    return _BLAS.limit(limits=1, user_api="blas")


def matmul(a, b, *, trans_a: bool = False, trans_b: bool = False, bias=None, out=None):
    """``op(a) @ op(b)`` (``op`` the transpose where asked) plus ``bias`` (a row vector);
    with ``out``, the product is added into ``out`` in place (and ``out`` returned)."""
    if is_device(a):
        return cuda().matmul(a, b, trans_a=trans_a, trans_b=trans_b, bias=bias, out=out)
    with one_blas_thread():
        y = (a.T if trans_a else a) @ (b.T if trans_b else b)
    if out is not None:
        out += y
        return out
    return y + bias if bias is not None else y


# ------------------------------------------------------------------------- channels ---

def concat_channels(parts: list):
    """Concatenation along axis 1."""
    if is_device(parts[0]):
        return cuda().concat_channels(parts)
    return np.concatenate(parts, axis=1)


def split_channels(a, sizes: list) -> list:
    """``a`` split along axis 1 into contiguous pieces of ``sizes`` channels."""
    if is_device(a):
        return cuda().split_channels(a, sizes)
    cuts = list(np.cumsum(sizes)[:-1])
    return [np.ascontiguousarray(p) for p in np.split(a, cuts, axis=1)]


# ----------------------------------------------------------------------- upsampling ---

def repeat(x, scale: int, axis: int, mat=None):
    """Nearest upsampling along ``axis`` (``mat``: the same as an interpolation matrix,
    which the device applies)."""
    if is_device(x):
        return cuda().apply_axis(x, axis, mat)
    return np.repeat(x, scale, axis=axis)


def apply_axis(x, axis: int, mat: np.ndarray):
    """``mat`` (n_out, n_in) applied along ``axis`` of ``x``."""
    if is_device(x):
        return cuda().apply_axis(x, axis, mat)
    return np.moveaxis(np.tensordot(x, mat, axes=([axis], [1])), -1, axis)


def apply_axis_adjoint(x, axis: int, mat: np.ndarray):
    """``mat.T`` applied along ``axis`` of ``x`` (the backward of :func:`apply_axis`)."""
    if is_device(x):
        return cuda().apply_axis(x, axis, np.ascontiguousarray(mat.T))
    return np.moveaxis(np.tensordot(x, mat, axes=([axis], [0])), -1, axis)


def contiguous(a):
    return a if is_device(a) else np.ascontiguousarray(a)


# --------------------------------------------------------------- batch normalisation ---

def batchnorm_forward(x3, gamma, beta, rmean, rvar, training: bool, momentum: float,
                      eps: float):
    """``(y, xhat, inv)`` of batch normalisation on ``(N, C, L)``; in training the batch
    statistics are used and the running ones (``rmean``, ``rvar``) updated in place."""
    if is_device(x3):
        return cuda().batchnorm_forward(x3, gamma, beta, rmean, rvar, training, momentum,
                                        eps)
    dt = rmean.dtype
    if training:
        m = x3.shape[0] * x3.shape[2]
        mean = x3.mean(axis=(0, 2))
        var = x3.var(axis=(0, 2))
        mom = dt.type(momentum)
        rmean *= 1 - mom
        rmean += mom * mean
        rvar *= 1 - mom
        rvar += mom * var * dt.type(m / (m - 1))
    else:
        mean, var = rmean, rvar
    inv = (1 / np.sqrt(var + dt.type(eps))).astype(dt)
    xhat = (x3 - mean[:, None]) * inv[:, None]
    y = xhat if gamma is None else xhat * gamma[:, None] + beta[:, None]
    return y, xhat, inv


def batchnorm_backward(g3, xhat, inv, gamma, training: bool, input_grad: bool):
    """``(grad_input or None, grad_gamma, grad_beta)`` on ``(N, C, L)``."""
    if is_device(g3):
        return cuda().batchnorm_backward(g3, xhat, inv, gamma, training, input_grad)
    g = g3
    ggamma = gbeta = None
    if gamma is not None:
        ggamma = (g * xhat).sum(axis=(0, 2))
        gbeta = g.sum(axis=(0, 2))
        g = g * gamma[:, None]
    if not input_grad:
        return None, ggamma, gbeta
    if not training:
        return g * inv[:, None], ggamma, gbeta
    # d/dx of (x - mean) / std with the batch statistics: subtract the means of g and of
    # g * xhat over the normalised axes.
    gm = g.mean(axis=(0, 2))
    gxm = (g * xhat).mean(axis=(0, 2))
    return (g - gm[:, None] - xhat * gxm[:, None]) * inv[:, None], ggamma, gbeta


# -------------------------------------------------------------------------- dropout ---

def dropout(x, p: float, rng: np.random.Generator):
    """``(x * mask, mask)``: elements zeroed with probability ``p``, the others scaled by
    ``1 / (1 - p)``. On the host the mask comes from ``rng``; on the device from a hash of
    the element index and two seeds drawn from ``rng`` (reproducible, not the same draws)."""
    if is_device(x):
        s1, s2 = (int(s) for s in rng.integers(0, 2**32, size=2))
        return cuda().dropout(x, p, s1, s2)
    keep = rng.random(x.shape) >= p
    mask = keep.astype(x.dtype) * x.dtype.type(1 / (1 - p))
    return x * mask, mask


def multiply(a, b):
    return cuda().multiply(a, b) if is_device(a) else a * b
