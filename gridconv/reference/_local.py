"""Reference locally connected convolutions: ``unshared_conv`` and ``tiled_conv``.

Unshared (locally connected) convolution, one kernel stack per output position ``i``::

    y[n, o, i] = b[o, i] + sum_{c, k} w[i, o, c, k] * xpad[n, c, s*i + r*k]

Tiled convolution, ``T`` stacks per axis cycling over the positions::

    y[n, o, i] = b[o] + sum_{c, k} w[i mod T, o, c, k] * xpad[n, c, s*i + r*k]

The tiled version is computed here exactly as the definition reads: the weight is
expanded to one stack per position (``w[i mod T]``) and handed to the unshared one; its
weight gradient sums the per-position gradients of the positions that share a stack.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

from .._params import conv_padding, fail, per_axis, result_dtype
from .._params import padding_mode as check_padding_mode
from .._shapes import conv_output_shape
from ._conv import _pad, _unpad_gradient

__all__ = ["unshared_conv", "unshared_conv_backward", "tiled_conv", "tiled_conv_backward"]


def _geometry(op, x, weight, stride, padding, dilation, padding_mode):
    """(d, pads, stride, dilation, O, mode) of a locally connected convolution."""
    if weight.ndim < 4 or weight.ndim % 2:
        raise fail(op, f"`weight` must have shape (*O or *T, C_out, C_in, *K) with as many "
                       f"leading as kernel axes, got shape {weight.shape}")
    d = (weight.ndim - 2) // 2
    if x.ndim != d + 2:
        raise fail(op, f"`x` must be {d + 2}-D (N, C_in, *spatial), got shape {x.shape}")
    if x.shape[1] != weight.shape[d + 1]:
        raise fail(op, f"`x` has {x.shape[1]} channels, `weight` expects "
                       f"{weight.shape[d + 1]}")
    ks = weight.shape[d + 2:]
    st = per_axis(stride, d, "stride", op)
    dl = per_axis(dilation, d, "dilation", op)
    pads = conv_padding(padding, x.shape[2:], ks, st, dl, op)
    out = conv_output_shape(op, x.shape[2:], ks, st, dl, pads)
    return d, pads, st, dl, out, check_padding_mode(padding_mode, op)


def _window(k, stride, dilation, out) -> tuple:
    """The slice of ``xpad`` that kernel offset ``k`` reads: ``xpad[:, :, s*i + r*k]``."""
    return (slice(None), slice(None)) + tuple(
        slice(r * kk, r * kk + s * (o - 1) + 1, s)
        for kk, s, r, o in zip(k, stride, dilation, out))


def _offsets(weight: np.ndarray, d: int):
    """Every kernel offset ``k`` with the ``(*O, C_out, C_in)`` weights it multiplies."""
    for k in itertools.product(*(range(n) for n in weight.shape[d + 2:])):
        yield k, weight[(Ellipsis,) + k]


def unshared_conv(x: Any, weight: Any, bias: Any = None, *, stride: Any = 1,
                  padding: Any = 0, dilation: Any = 1,
                  padding_mode: str = "zeros") -> np.ndarray:
    """Unshared (locally connected) convolution, straight from the definition.

    ``x`` is ``(N, C_in, *S)``, ``weight`` is ``(*O, C_out, C_in, *K)`` (one stack per
    output position), ``bias`` is ``(C_out, *O)``; returns ``(N, C_out, *O)``.
    """
    op = "reference.unshared_conv"
    x, weight = np.asarray(x), np.asarray(weight)
    bias = None if bias is None else np.asarray(bias)
    dtype = result_dtype(op, x=x, weight=weight, bias=bias)
    d, pads, st, dl, out, mode = _geometry(op, x, weight, stride, padding, dilation,
                                           padding_mode)
    if weight.shape[:d] != tuple(out):
        raise fail(op, f"`weight` must have one stack per output position {tuple(out)}, "
                       f"got leading axes {weight.shape[:d]}")
    xpad = _pad(x.astype(dtype), pads, mode)
    y = np.zeros((x.shape[0], weight.shape[d], *out), dtype=dtype)
    for k, wk in _offsets(weight.astype(dtype), d):
        # y[n, o, i] += sum_c wk[i, o, c] * xpad[n, c, s*i + r*k]
        y += np.einsum("nc...,...oc->no...", xpad[_window(k, st, dl, out)], wk)
    if bias is not None:
        y += bias.astype(dtype)[None]
    return y


def unshared_conv_backward(grad_output: Any, x: Any, weight: Any, bias: Any = None, *,
                           stride: Any = 1, padding: Any = 0, dilation: Any = 1,
                           padding_mode: str = "zeros"):
    """``(grad_x, grad_weight, grad_bias)`` of :func:`unshared_conv`."""
    op = "reference.unshared_conv_backward"
    x, weight, g = np.asarray(x), np.asarray(weight), np.asarray(grad_output)
    dtype = result_dtype(op, x=x, weight=weight, grad_output=g)
    d, pads, st, dl, out, mode = _geometry(op, x, weight, stride, padding, dilation,
                                           padding_mode)
    g = g.astype(dtype)
    xpad = _pad(x.astype(dtype), pads, mode)
    gxpad = np.zeros_like(xpad)
    gw = np.zeros(weight.shape, dtype=dtype)
    for k, wk in _offsets(weight.astype(dtype), d):
        win = _window(k, st, dl, out)
        gxpad[win] += np.einsum("no...,...oc->nc...", g, wk)
        gw[(Ellipsis,) + k] = np.einsum("no...,nc...->...oc", g, xpad[win])
    gx = _unpad_gradient(gxpad, pads, mode)
    gb = None if bias is None else g.sum(axis=0)
    return gx, gw, gb


def _stack_index(out, tiles):
    """Per axis, the stack each output position uses: ``i mod T``."""
    return [np.arange(o) % t for o, t in zip(out, tiles)]


def tiled_conv(x: Any, weight: Any, bias: Any = None, *, stride: Any = 1, padding: Any = 0,
               dilation: Any = 1, padding_mode: str = "zeros") -> np.ndarray:
    """Tiled convolution: ``weight`` is ``(*T, C_out, C_in, *K)``, position ``i`` uses stack
    ``i mod T``; ``bias`` is ``(C_out,)``. Returns ``(N, C_out, *O)``."""
    op = "reference.tiled_conv"
    x, weight = np.asarray(x), np.asarray(weight)
    d, _, _, _, out, _ = _geometry(op, x, weight, stride, padding, dilation, padding_mode)
    expanded = weight[np.ix_(*_stack_index(out, weight.shape[:d]))]
    y = unshared_conv(x, expanded, stride=stride, padding=padding, dilation=dilation,
                      padding_mode=padding_mode)
    if bias is not None:
        y = y + np.asarray(bias, dtype=y.dtype).reshape((1, -1) + (1,) * d)
    return y


def tiled_conv_backward(grad_output: Any, x: Any, weight: Any, bias: Any = None, *,
                        stride: Any = 1, padding: Any = 0, dilation: Any = 1,
                        padding_mode: str = "zeros"):
    """``(grad_x, grad_weight, grad_bias)`` of :func:`tiled_conv`."""
    op = "reference.tiled_conv_backward"
    x, weight = np.asarray(x), np.asarray(weight)
    d, _, _, _, out, _ = _geometry(op, x, weight, stride, padding, dilation, padding_mode)
    index = _stack_index(out, weight.shape[:d])
    gx, gw_pos, _ = unshared_conv_backward(
        grad_output, x, weight[np.ix_(*index)], stride=stride, padding=padding,
        dilation=dilation, padding_mode=padding_mode)
    # positions sharing a stack add their gradients into it, one axis at a time
    gw = gw_pos
    for axis, (idx, t) in enumerate(zip(index, weight.shape[:d])):
        summed = np.zeros((t,) + gw.shape[:axis] + gw.shape[axis + 1:], dtype=gw.dtype)
        np.add.at(summed, idx, np.moveaxis(gw, axis, 0))
        gw = np.moveaxis(summed, 0, axis)
    g = np.asarray(grad_output, dtype=gx.dtype)
    gb = None if bias is None else g.sum(axis=(0, *range(2, g.ndim)))
    return gx, gw, gb
