"""Locally connected convolutions: ``unshared_conv`` and ``tiled_conv``, with gradients.

A convolution shares one kernel stack over all output positions. An *unshared*
(locally connected) convolution has one stack per output position; a *tiled*
convolution has ``T`` stacks per axis that cycle over the output positions (position
``i`` uses stack ``i mod T``), a middle ground with ``T = 1`` being ``conv`` and
``T = O`` being ``unshared_conv``. Both take every padding form and mode of
:func:`gridconv.conv`, stride and dilation, in 1, 2 and 3 spatial dimensions.

The functions here validate and normalise their arguments, lift 1-D and 2-D problems to
3-D ones with unit axes, and call the kernels of :mod:`gridconv._cpu.local`.
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass

import numpy as np

from . import _geometry as geo
from ._cpu import driver
from ._cpu import local as kern
from ._dispatch import dispatch
from ._params import (
    as_array,
    check_circular,
    contiguous,
    conv_padding,
    fail,
    padding_mode,
    per_axis,
    result_dtype,
)
from ._shapes import conv_output_shape
from .conv import ArrayLike, _check_gout, _lift, _lift3

__all__ = ["unshared_conv", "unshared_conv_backward", "tiled_conv", "tiled_conv_backward"]

_DOC_PARAMS = """\
    stride : int or tuple of int
        Step between output positions, per spatial axis (>= 1).
    padding : int, tuple, tuple of (lo, hi) pairs, or {"valid", "same", "full"}
        Padding of the input per spatial axis, as in :func:`gridconv.conv`: ``"same"``
        gives ``ceil(I / stride)`` outputs (extra padding on the high side), ``"full"``
        pads ``dilation * (K - 1)`` on both sides.
    dilation : int or tuple of int
        Spacing between kernel taps (>= 1).
    padding_mode : {"zeros", "reflect", "replicate", "circular"}
        Values outside the input: zeros, mirrored without repeating the edge, the edge
        repeated, or wrapped around."""


def _doc(func):
    func.__doc__ = func.__doc__.replace("{params}", _DOC_PARAMS)
    return func


@dataclass(frozen=True)
class _LocalSpec:
    """A validated locally connected convolution: everything but the arrays."""

    nd: int
    unshared: bool
    stride: tuple
    dilation: tuple
    pads: tuple
    mode: str
    tiles: tuple  # stacks per axis: T (tiled) or O (unshared)
    in_shape: tuple  # (N, C_in, *S)
    w_shape: tuple  # (*T, C_out, C_in, *K)
    out_shape: tuple  # (N, C_out, *O)
    bias_shape: tuple  # (C_out, *O) unshared, (C_out,) tiled

    @property
    def kernel(self) -> tuple:
        return self.w_shape[self.nd + 2:]

    @property
    def c_out(self) -> int:
        return self.w_shape[self.nd]


def _spec(op: str, unshared: bool, x_shape, weight, bias, stride, padding, dilation,
          mode) -> _LocalSpec:
    layout = "(*O, C_out, C_in, *K)" if unshared else "(*T, C_out, C_in, *K)"
    if weight.ndim not in (4, 6, 8):
        raise fail(op, f"`weight` must be 4-D, 6-D or 8-D {layout} for 1, 2 or 3 spatial "
                       f"axes, got shape {weight.shape}")
    if min(weight.shape) < 1:
        raise fail(op, f"`weight` must have no empty axis, got shape {weight.shape}")
    nd = (weight.ndim - 2) // 2
    lead, (c_out, c_in), ks = weight.shape[:nd], weight.shape[nd:nd + 2], weight.shape[nd + 2:]
    if len(x_shape) != nd + 2:
        raise fail(op, f"`x` must be {nd + 2}-D (N, C_in, *spatial) to match the "
                       f"{weight.ndim}-D weight {layout}, got shape {tuple(x_shape)}")
    if min(x_shape[1:]) < 1:
        raise fail(op, f"`x` must have channels and non-empty spatial axes, got shape "
                       f"{tuple(x_shape)}")
    if x_shape[1] != c_in:
        raise fail(op, f"`x` has {x_shape[1]} input channels but `weight` {layout} expects "
                       f"{c_in} (weight.shape[{nd + 1}])")
    st = per_axis(stride, nd, "stride", op)
    dl = per_axis(dilation, nd, "dilation", op)
    pads = conv_padding(padding, x_shape[2:], ks, st, dl, op)
    mode = padding_mode(mode, op)
    out = conv_output_shape(op, x_shape[2:], ks, st, dl, pads)
    check_circular(op, mode, x_shape[2:], pads)
    if unshared and tuple(lead) != tuple(out):
        raise fail(op, f"`weight` holds one kernel stack per output position, so its leading "
                       f"axes must be the output size {tuple(out)}, got {tuple(lead)} "
                       f"(weight shape {weight.shape})")
    bias_shape = (c_out, *out) if unshared else (c_out,)
    if bias is not None and tuple(bias.shape) != bias_shape:
        what = "one value per output channel and position" if unshared else \
            "one value per output channel"
        raise fail(op, f"`bias` must have shape {bias_shape} ({what}), got {bias.shape}")
    return _LocalSpec(nd, unshared, st, dl, pads, mode, tuple(lead), tuple(x_shape), weight.shape,
                      (x_shape[0], c_out, *out), bias_shape)


def _arrays(op: str, **arrays):
    """As arrays, and the computation dtype."""
    arrays = {k: None if v is None else as_array(v, k, op) for k, v in arrays.items()}
    return arrays, result_dtype(op, **arrays)


def _axes(spec: _LocalSpec, padded: bool = False) -> list:
    """Tap tables; ``padded``: over the padded grid itself (one-to-one maps)."""
    axes = []
    for i, o, k, s, r, (lo, hi) in zip(spec.in_shape[2:], spec.out_shape[2:], spec.kernel,
                                       spec.stride, spec.dilation, spec.pads):
        if padded:
            axes.append(geo.forward_axis(i + lo + hi, o, k, s, r, 0, 0, "zeros"))
        else:
            axes.append(geo.forward_axis(i, o, k, s, r, lo, hi, spec.mode))
    return [geo.unit_axis()] * (3 - spec.nd) + axes


def _w3(weight: np.ndarray, spec: _LocalSpec, dtype) -> np.ndarray:
    stacks = int(np.prod(spec.tiles))
    return contiguous(weight, dtype).reshape(stacks, spec.c_out, -1)


# Up to this many kernel stacks, a tiled conv runs on the conv engine with the stack
# chosen per position (one slab per tile, then patches per stack); beyond, the tiles of
# the engine hold too few positions per stack and the per-position kernels take over.
_MAX_STACKS = 64


def _use_periodic(spec: _LocalSpec) -> bool:
    if spec.unshared:
        return False
    used = [min(t, o) for t, o in zip(spec.tiles, spec.out_shape[2:])]
    return int(np.prod(used)) <= _MAX_STACKS


def _w8(weight: np.ndarray, spec: _LocalSpec, dtype) -> np.ndarray:
    """(Tz, Ty, Tx, C_out, C_in, Kz, Ky, Kx): stacks and kernels lifted to 3 axes."""
    nd = spec.nd
    shape = (_lift3(spec.tiles, 1, nd) + spec.w_shape[nd:nd + 2]
             + _lift3(spec.kernel, 1, nd))
    return contiguous(weight, dtype).reshape(shape)


def _w7(weight: np.ndarray, spec: _LocalSpec, dtype) -> np.ndarray:
    """(P, G=1, C_out, C_in, Kz, Ky, Kx): the engine's periodic weight layout."""
    w8 = _w8(weight, spec, dtype)
    return w8.reshape((-1, 1) + w8.shape[3:])


def _tiled_input_grad(g5, w8, gshape, spec: _LocalSpec, padded: bool) -> np.ndarray:
    """Input gradient of a tiled conv on the conv engine, one gather per stride phase.

    In stride phase ``i0`` of an axis, input ``i0 + s*u`` receives tap ``k`` from output
    position ``u + c_k`` (the conv engine's phase tables), whose stack is
    ``(u + c_k) mod T``: periodic in ``u`` with period ``T``, so stack ``psi = u mod T`` of
    this gather holds, for tap ``k``, the weights of stack ``(psi + c_k) mod T``.
    """
    geoms = []
    for i, o, k, s, r, (lo, hi) in zip(spec.in_shape[2:], spec.out_shape[2:], spec.kernel,
                                       spec.stride, spec.dilation, spec.pads):
        geoms.append((i + lo + hi, o, k, s, r, 0) if padded else (i, o, k, s, r, lo))
    per_axis_ = [[geo.unit_axis()]] * (3 - spec.nd) + [geo.phase_axes(*gm) for gm in geoms]
    tiles = np.array(w8.shape[:3])
    phases = list(itertools.product(*per_axis_))
    any_empty = any(ax.taps == 0 and ax.m > 0 for ph in phases for ax in ph)
    gx = (np.zeros if any_empty else np.empty)(gshape, g5.dtype)
    for axes in phases:
        if any(ax.m == 0 or ax.taps == 0 for ax in axes):
            continue
        # stack of (psi, tap) per axis: (psi + c_k) mod T, as an index grid
        stacks = [(np.arange(t)[:, None] + ax.off[None, :]) % t for t, ax in zip(tiles, axes)]
        sz = stacks[0][:, None, None, :, None, None]
        sy = stacks[1][None, :, None, None, :, None]
        sx = stacks[2][None, None, :, None, None, :]
        kz = axes[0].kidx[None, None, None, :, None, None]
        ky = axes[1].kidx[None, None, None, None, :, None]
        kx = axes[2].kidx[None, None, None, None, None, :]
        # (Tz, Ty, Tx, tz, ty, tx, C_out, C_in) -> (P, 1, C_in, C_out, tz, ty, tx)
        taps = w8[sz, sy, sx, :, :, kz, ky, kx]
        w7 = taps.transpose(0, 1, 2, 7, 6, 3, 4, 5).reshape(
            (-1, 1, w8.shape[4], w8.shape[3]) + taps.shape[3:6])
        axes = [dataclasses.replace(a, kidx=np.arange(a.taps)) for a in axes]
        driver.gather(g5, np.ascontiguousarray(w7), None, gx, axes, tuple(tiles))
    return gx


def _work(spec: _LocalSpec) -> int:
    """Multiply-adds of one pass (decides whether a second thread is worth waking)."""
    return int(np.prod(spec.out_shape)) * int(np.prod(spec.w_shape[spec.nd + 1:]))


def _forward(op: str, unshared: bool, x, weight, bias, stride, padding, dilation,
             padding_mode_) -> np.ndarray:
    arrays, dtype = _arrays(op, x=x, weight=weight, bias=bias)
    x, weight, bias = arrays.values()
    spec = _spec(op, unshared, x.shape, weight, bias, stride, padding, dilation,
                 padding_mode_)
    x5 = contiguous(x, dtype).reshape(_lift(x.shape, spec.nd))
    if bias is None:
        b2 = np.zeros((0, 1), dtype)
    else:
        b2 = contiguous(bias, dtype).reshape(spec.c_out, -1)
    out = np.empty(_lift(spec.out_shape, spec.nd), dtype)
    if _use_periodic(spec):
        # the conv engine with the stack chosen per position
        driver.gather(x5, _w7(weight, spec, dtype), None if bias is None else b2.ravel(), out,
                      _axes(spec), _lift3(spec.tiles, 1, spec.nd))
        return out.reshape(spec.out_shape)
    driver._run(kern.run_forward, _work(spec), x5, _w3(weight, spec, dtype), b2, out,
                _axes(spec), _lift3(spec.tiles, 1, spec.nd))
    return out.reshape(spec.out_shape)


def _backward(op: str, unshared: bool, grad_output, x, weight, bias, stride, padding,
              dilation, padding_mode_):
    arrays, dtype = _arrays(op, x=x, weight=weight, bias=bias)
    x, weight, bias = arrays.values()
    spec = _spec(op, unshared, x.shape, weight, bias, stride, padding, dilation,
                 padding_mode_)
    g5 = _check_gout(op, grad_output, spec.out_shape, dtype).reshape(
        _lift(spec.out_shape, spec.nd))
    x5 = contiguous(x, dtype).reshape(_lift(x.shape, spec.nd))

    # the input gradient goes to x's grid (zero padding drops the border) or to the padded
    # grid, folded back onto its sources afterwards
    padded = spec.mode != "zeros"
    sizes = tuple(i + (lo + hi) * padded for i, (lo, hi) in zip(spec.in_shape[2:], spec.pads))
    gshape = _lift(spec.in_shape[:2] + sizes, spec.nd)
    if _use_periodic(spec):
        gx = _tiled_input_grad(g5, _w8(weight, spec, dtype), gshape, spec, padded)
        gw = driver.weight_grad(x5, g5, 1, _axes(spec), _lift3(spec.tiles, 1, spec.nd))
    else:
        w3 = _w3(weight, spec, dtype)
        tiles = _lift3(spec.tiles, 1, spec.nd)
        gx = np.zeros(gshape, dtype)
        driver._run(kern.run_input_grad, _work(spec), g5, w3, gx, _axes(spec, padded), tiles)
        gw = driver._run(kern.run_weight_grad, _work(spec), x5, g5, w3.shape, _axes(spec),
                         tiles)
    if padded:
        maps = [np.zeros(1, np.int64)] * (3 - spec.nd) + [
            geo.index_map(i, lo, hi, spec.mode) for i, (lo, hi) in
            zip(spec.in_shape[2:], spec.pads)]
        gx = driver.pad_adjoint(gx, x5.shape, maps)
    gb = None
    if bias is not None:
        gb = g5.sum(axis=0) if unshared else g5.sum(axis=(0, 2, 3, 4))
        gb = gb.reshape(spec.bias_shape)
    return gx.reshape(spec.in_shape), gw.reshape(spec.w_shape), gb


# -------------------------------------------------------------------------- public API


@_doc
@dispatch
def unshared_conv(x: ArrayLike, weight: ArrayLike, bias: ArrayLike | None = None, *,
                  stride=1, padding=0, dilation=1, padding_mode: str = "zeros") -> np.ndarray:
    """Unshared (locally connected) convolution: one kernel stack per output position.

    ``y[n, o, i] = bias[o, i] + sum_{c, k} weight[i, o, c, k] * xpad[n, c,
    stride*i + dilation*k]`` over multi-indices ``i`` (output position) and ``k``.

    Parameters
    ----------
    x : array, shape (N, C_in, *S)
        Input; the spatial rank ``d`` (1, 2 or 3) is ``(weight.ndim - 2) / 2``.
    weight : array, shape (*O, C_out, C_in, *K)
        One ``(C_out, C_in, *K)`` kernel stack per output position; ``O`` must be the
        output size that ``x``, ``K`` and the parameters give (as for :func:`conv`).
    bias : array, shape (C_out, *O), optional
        One value per output channel and position.
{params}

    Returns
    -------
    numpy.ndarray, shape (N, C_out, *O)
        In ``x``'s dtype (float32 or float64; integers give float64).

    See Also
    --------
    tiled_conv : ``T`` stacks cycling over the positions (``T == O`` is this function).
    unshared_conv_backward : the gradients.
    gridconv.reference.unshared_conv : the plain-NumPy definition.

    Examples
    --------
    >>> import numpy as np
    Each of the three output positions of a length-5 signal picks a different tap:

    >>> x = np.arange(5.0)[None, None]                # (N=1, C=1, 5)
    >>> w = np.zeros((3, 1, 1, 3))                    # (O=3, C_out=1, C_in=1, K=3)
    >>> w[:, 0, 0] = np.eye(3)
    >>> unshared_conv(x, w)                           # valid padding: x[0], x[2], x[4]
    array([[[0., 2., 4.]]])
    """
    return _forward("unshared_conv", True, x, weight, bias, stride, padding, dilation,
                    padding_mode)


@_doc
@dispatch
def unshared_conv_backward(grad_output: ArrayLike, x: ArrayLike, weight: ArrayLike,
                           bias: ArrayLike | None = None, *, stride=1, padding=0, dilation=1,
                           padding_mode: str = "zeros"):
    """Gradients of :func:`unshared_conv` with respect to its inputs.

    Parameters
    ----------
    grad_output : array, shape (N, C_out, *O)
        Gradient of the loss with respect to ``unshared_conv(x, weight, bias, ...)``.
    x, weight, bias : the inputs of the forward call.
{params}

    Returns
    -------
    grad_x : numpy.ndarray, shape (N, C_in, *S)
    grad_weight : numpy.ndarray, shape (*O, C_out, C_in, *K)
    grad_bias : numpy.ndarray, shape (C_out, *O), or None when ``bias`` is None
    """
    return _backward("unshared_conv_backward", True, grad_output, x, weight, bias, stride,
                     padding, dilation, padding_mode)


@_doc
@dispatch
def tiled_conv(x: ArrayLike, weight: ArrayLike, bias: ArrayLike | None = None, *, stride=1,
               padding=0, dilation=1, padding_mode: str = "zeros") -> np.ndarray:
    """Tiled convolution: ``T`` kernel stacks per axis, cycling over the output positions.

    ``y[n, o, i] = bias[o] + sum_{c, k} weight[i mod T, o, c, k] * xpad[n, c,
    stride*i + dilation*k]`` (``i mod T`` per axis). ``T`` all ones is :func:`conv`;
    ``T == O`` is :func:`unshared_conv` (with a bias shared over positions).

    Parameters
    ----------
    x : array, shape (N, C_in, *S)
        Input; the spatial rank ``d`` (1, 2 or 3) is ``(weight.ndim - 2) / 2``.
    weight : array, shape (*T, C_out, C_in, *K)
        ``T[a]`` kernel stacks along spatial axis ``a`` (any positive number; stacks
        beyond the output size are unused and get a zero gradient).
    bias : array, shape (C_out,), optional
{params}

    Returns
    -------
    numpy.ndarray, shape (N, C_out, *O)

    See Also
    --------
    tiled_conv_backward : the gradients.
    gridconv.reference.tiled_conv : the plain-NumPy definition.

    Examples
    --------
    Two alternating 1-tap kernels along a signal (``T = 2``):

    >>> x = np.ones((1, 1, 6))
    >>> w = np.array([1.0, -1.0])[:, None, None, None]  # (T=2, C_out=1, C_in=1, K=1)
    >>> tiled_conv(x, w)
    array([[[ 1., -1.,  1., -1.,  1., -1.]]])
    """
    return _forward("tiled_conv", False, x, weight, bias, stride, padding, dilation,
                    padding_mode)


@_doc
@dispatch
def tiled_conv_backward(grad_output: ArrayLike, x: ArrayLike, weight: ArrayLike,
                        bias: ArrayLike | None = None, *, stride=1, padding=0, dilation=1,
                        padding_mode: str = "zeros"):
    """Gradients of :func:`tiled_conv` with respect to its inputs.

    Parameters
    ----------
    grad_output : array, shape (N, C_out, *O)
        Gradient of the loss with respect to ``tiled_conv(x, weight, bias, ...)``.
    x, weight, bias : the inputs of the forward call.
{params}

    Returns
    -------
    grad_x : numpy.ndarray, shape (N, C_in, *S)
    grad_weight : numpy.ndarray, shape (*T, C_out, C_in, *K)
    grad_bias : numpy.ndarray, shape (C_out,), or None when ``bias`` is None
    """
    return _backward("tiled_conv_backward", False, grad_output, x, weight, bias, stride,
                     padding, dilation, padding_mode)
