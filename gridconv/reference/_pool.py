"""Reference pooling (max, average, L^p, global) and its gradients, in plain NumPy.

Every function pads the input explicitly (``-inf`` for max pooling, zeros otherwise), takes
one strided slice per window offset (a view of every window's tap at that offset), and
reduces over the offsets; the gradients scatter back through the same slices. The
output-size rule is written out here again, from PyTorch's definition, rather than
shared with the engine.
"""

from __future__ import annotations

import itertools
from typing import Any, NamedTuple

import numpy as np

from .._params import fail, per_axis, result_dtype

__all__ = [
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
]


class _Windows(NamedTuple):
    """Validated pooling geometry, per spatial axis."""

    window: tuple
    stride: tuple
    padding: tuple
    dilation: tuple
    out: tuple  # number of windows
    high: tuple  # padding on the high side that makes room for every window


def _windows(op: str, shape: tuple, window, stride, padding, dilation,
             ceil_mode: bool) -> _Windows:
    nd = len(shape) - 2
    if nd < 1:
        raise fail(op, f"`x` must have shape (N, C, *spatial) with at least one spatial "
                       f"axis, got shape {shape}")
    window = per_axis(window, nd, "window", op)
    stride = window if stride is None else per_axis(stride, nd, "stride", op)
    padding = per_axis(padding, nd, "padding", op, minimum=0)
    dilation = per_axis(dilation, nd, "dilation", op)
    out, high = [], []
    for axis, (i, k, s, p, r) in enumerate(zip(shape[2:], window, stride, padding,
                                               dilation)):
        if p > k // 2:
            raise fail(op, f"`padding` must be at most half the window (window // 2) on "
                           f"every axis, as in PyTorch, got padding {padding} for window "
                           f"{window}")
        extent = r * (k - 1) + 1
        # Windows start at s*o in the padded input (of size i + 2p). Without ceil_mode
        # only windows that fit; with it, the count is rounded up, but a window may not
        # start in the right padding.
        if ceil_mode:
            n = -(-(i + 2 * p - extent) // s) + 1
            if (n - 1) * s >= i + p:
                n -= 1
        else:
            n = (i + 2 * p - extent) // s + 1
        if n < 1:
            raise fail(op, f"the window (extent {extent}) is larger than the padded input "
                           f"on spatial axis {axis}")
        out.append(n)
        high.append(max(p, (n - 1) * s + extent - i - p))
    return _Windows(window, stride, padding, dilation, tuple(out), tuple(high))


def _padded(a: np.ndarray, w: _Windows, fill) -> np.ndarray:
    """``a`` (N, C, *S) padded by ``padding`` before and ``high`` after, with ``fill``."""
    width = [(0, 0), (0, 0)] + [(p, h) for p, h in zip(w.padding, w.high)]
    return np.pad(a, width, mode="constant", constant_values=fill)


def _taps(w: _Windows):
    """``(offset, slices)`` for every window offset, in row-major order: ``xpad[slices]``
    holds, for every window, its tap at ``offset``."""
    for offset in itertools.product(*(range(k) for k in w.window)):
        slices = tuple(slice(r * t, r * t + s * (n - 1) + 1, s)
                       for t, s, r, n in zip(offset, w.stride, w.dilation, w.out))
        yield offset, (Ellipsis, *slices)


def _crop(apad: np.ndarray, w: _Windows, shape: tuple) -> np.ndarray:
    return apad[(Ellipsis, *(slice(p, p + i) for p, i in zip(w.padding, shape[2:])))]


def _float(op: str, **arrays) -> tuple:
    dtype = result_dtype(op, **arrays)
    return dtype, [np.asarray(a, dtype=dtype) for a in arrays.values()]


def _check_grad(op: str, g: np.ndarray, shape: tuple) -> None:
    if g.shape != tuple(shape):
        raise fail(op, f"`grad_output` must have the output's shape {tuple(shape)}, got "
                       f"{g.shape}")


# --------------------------------------------------------------------------------------
# Max pooling
# --------------------------------------------------------------------------------------


def max_pool(x: Any, window, stride=None, padding=0, dilation=1, ceil_mode=False,
             return_indices=False):
    """``y[n, c, i] = max over taps k of x[n, c, stride*i - padding + dilation*k]``.

    Taps in the padding never win. The winner's index is its flat position in the
    ``(n, c)`` plane; scanning a window's taps in row-major order, a tap replaces the
    current winner when it is larger or NaN (so ties go to the first tap and NaNs to the
    last NaN, PyTorch's rule), the first tap inside the input being the initial winner.
    A window with no tap inside the input gives ``-inf`` and index ``-1``.

    Examples
    --------
    >>> max_pool(np.array([[[1., 3., 2., 5., 4.]]]), 2, return_indices=True)
    (array([[[3., 5.]]]), array([[[1, 3]]]))
    """
    op = "reference.max_pool"
    x = np.asarray(x)
    w = _windows(op, x.shape, window, stride, padding, dilation, ceil_mode)
    _, (x,) = _float(op, x=x)
    xpad = _padded(x, w, -np.inf)
    # The flat index of every element of the padded input (-1 in the padding).
    plane = np.arange(int(np.prod(x.shape[2:]))).reshape(x.shape[2:])[None, None]
    ipad = _padded(plane, w, -1)
    best = np.full(x.shape[:2] + w.out, -np.inf, dtype=x.dtype)
    idx = np.full(best.shape, -1, dtype=np.int64)
    for _, sl in _taps(w):
        v, vi = xpad[sl], np.broadcast_to(ipad[sl], best.shape)
        take = (vi >= 0) & ((idx < 0) | (v > best) | np.isnan(v))
        best = np.where(take, v, best)
        idx = np.where(take, vi, idx)
    return (best, idx) if return_indices else best


def max_pool_backward(grad_output: Any, x: Any, window, stride=None, padding=0, dilation=1,
                      ceil_mode=False, indices=None):
    """Each window's gradient is added to the input element that won it (its index)."""
    op = "reference.max_pool_backward"
    x = np.asarray(x)
    w = _windows(op, x.shape, window, stride, padding, dilation, ceil_mode)
    if indices is None:
        _, indices = max_pool(x, window, stride, padding, dilation, ceil_mode, True)
    _, (g, x) = _float(op, grad_output=grad_output, x=x)
    indices = np.asarray(indices)
    _check_grad(op, g, x.shape[:2] + w.out)
    if indices.shape != g.shape:
        raise fail(op, f"`indices` must have the output's shape {g.shape}, got "
                       f"{indices.shape}")
    planes = x.shape[0] * x.shape[1]
    gx = np.zeros((planes, int(np.prod(x.shape[2:]))), dtype=g.dtype)
    rows = np.broadcast_to(np.arange(planes)[:, None], (planes, indices[0, 0].size))
    flat_idx = indices.reshape(planes, -1)
    keep = flat_idx >= 0
    np.add.at(gx, (rows[keep], flat_idx[keep]), g.reshape(planes, -1)[keep])
    return gx.reshape(x.shape)


# --------------------------------------------------------------------------------------
# Average pooling
# --------------------------------------------------------------------------------------


def _divisor(x_shape: tuple, w: _Windows, count_include_pad: bool) -> np.ndarray:
    """How many taps of each window are counted: those inside the padded bounds
    (``count_include_pad``; a ceil_mode window's part beyond them is not) or inside the
    input."""
    inside = np.ones((1, 1) + tuple(x_shape[2:]))
    if count_include_pad:
        inside = np.pad(inside, [(0, 0), (0, 0)] + [(p, p) for p in w.padding],
                        constant_values=1.0)
        inside = np.pad(inside, [(0, 0), (0, 0)] + [(0, h - p) for p, h in
                                                    zip(w.padding, w.high)])
    else:
        inside = _padded(inside, w, 0.0)
    return sum(inside[sl] for _, sl in _taps(w))


def avg_pool(x: Any, window, stride=None, padding=0, ceil_mode=False,
             count_include_pad=True):
    """``y[n, c, i] = sum over taps k of xpad[n, c, stride*i + k] / divisor(i)``, zero
    padding; the divisor counts the taps within the padded bounds or, with
    ``count_include_pad=False``, inside the input.

    Examples
    --------
    >>> avg_pool(np.array([[[1., 3., 2., 5., 4.]]]), 2, padding=1, count_include_pad=False)
    array([[[1. , 2.5, 4.5]]])
    """
    op = "reference.avg_pool"
    x = np.asarray(x)
    w = _windows(op, x.shape, window, stride, padding, 1, ceil_mode)
    _, (x,) = _float(op, x=x)
    xpad = _padded(x, w, 0.0)
    total = sum(xpad[sl] for _, sl in _taps(w))
    return total / _divisor(x.shape, w, count_include_pad)


def avg_pool_backward(grad_output: Any, x: Any, window, stride=None, padding=0,
                      ceil_mode=False, count_include_pad=True):
    """Each window spreads ``grad / divisor`` over its taps; the padding's share is
    dropped."""
    op = "reference.avg_pool_backward"
    x = np.asarray(x)
    w = _windows(op, x.shape, window, stride, padding, 1, ceil_mode)
    _, (g, x) = _float(op, grad_output=grad_output, x=x)
    _check_grad(op, g, x.shape[:2] + w.out)
    share = g / _divisor(x.shape, w, count_include_pad)
    gpad = _padded(np.zeros_like(x), w, 0.0)
    for _, sl in _taps(w):
        gpad[sl] += share
    return _crop(gpad, w, x.shape)


# --------------------------------------------------------------------------------------
# L^p pooling
# --------------------------------------------------------------------------------------


def _check_p(op: str, p) -> float:
    p = float(p)
    if not (p >= 1 and np.isfinite(p)):
        raise fail(op, f"`p` must be a finite number >= 1, got {p!r}")
    return p


def lp_pool(x: Any, p, window, stride=None, padding=0, ceil_mode=False):
    """``y[n, c, i] = (sum over taps k of |xpad[n, c, stride*i + k]|^p) ^ (1/p)``, zero
    padding.

    Examples
    --------
    >>> lp_pool(np.array([[[3., -4., 1., 0.]]]), 2, 2)
    array([[[5., 1.]]])
    """
    op = "reference.lp_pool"
    p = _check_p(op, p)
    x = np.asarray(x)
    w = _windows(op, x.shape, window, stride, padding, 1, ceil_mode)
    _, (x,) = _float(op, x=x)
    apad = np.abs(_padded(x, w, 0.0)) ** p
    return sum(apad[sl] for _, sl in _taps(w)) ** (1.0 / p)


def lp_pool_backward(grad_output: Any, x: Any, p, window, stride=None, padding=0,
                     ceil_mode=False):
    """``dy/dx = sign(x) |x|^(p-1) y^(1-p)`` summed over the windows containing ``x``;
    0 for a window whose norm ``y`` is 0."""
    op = "reference.lp_pool_backward"
    p = _check_p(op, p)
    x = np.asarray(x)
    w = _windows(op, x.shape, window, stride, padding, 1, ceil_mode)
    _, (g, x) = _float(op, grad_output=grad_output, x=x)
    _check_grad(op, g, x.shape[:2] + w.out)
    y = lp_pool(x, p, window, stride, padding, ceil_mode)
    h = np.zeros_like(y)
    nonzero = y != 0
    h[nonzero] = g[nonzero] * y[nonzero] ** (1.0 - p)  # NaN where y is NaN
    gpad = _padded(np.zeros_like(x), w, 0.0)
    for _, sl in _taps(w):
        gpad[sl] += h
    return _crop(gpad, w, x.shape) * np.sign(x) * np.abs(x) ** (p - 1.0)


# --------------------------------------------------------------------------------------
# Global pooling
# --------------------------------------------------------------------------------------


def global_max_pool(x: Any):
    """The maximum of each ``(n, c)`` plane: ``max_pool`` with the whole plane as window.
    Shape ``(N, C, 1, ..., 1)``.

    Examples
    --------
    >>> global_max_pool(np.array([[[1., 7., 3.]]]))
    array([[[7.]]])
    """
    x = np.asarray(x)
    return max_pool(x, x.shape[2:])


def global_max_pool_backward(grad_output: Any, x: Any):
    """The gradient of each plane goes to its winner."""
    x = np.asarray(x)
    return max_pool_backward(grad_output, x, x.shape[2:])


def global_avg_pool(x: Any):
    """The mean of each ``(n, c)`` plane, shape ``(N, C, 1, ..., 1)``.

    Examples
    --------
    >>> global_avg_pool(np.array([[[1., 7., 4.]]]))
    array([[[4.]]])
    """
    op = "reference.global_avg_pool"
    _, (x,) = _float(op, x=np.asarray(x))
    return x.mean(axis=tuple(range(2, x.ndim)), keepdims=True)


def global_avg_pool_backward(grad_output: Any, x: Any):
    """Every element of a plane gets ``grad / (number of elements in the plane)``."""
    op = "reference.global_avg_pool_backward"
    _, (g, x) = _float(op, grad_output=grad_output, x=np.asarray(x))
    size = int(np.prod(x.shape[2:]))
    _check_grad(op, g, x.shape[:2] + (1,) * (x.ndim - 2))
    return np.broadcast_to(g / size, x.shape).copy()
