"""FFT path of the forward convolution, for large kernels.

A direct kernel costs ``prod(K)`` multiply-adds per output and input channel; an FFT
costs ``O(log F)`` per grid point whatever the kernel. For large kernels (long FIR
filters, wide blurs) the FFT wins, so :func:`gridconv.conv` picks it automatically with
the cost model of :func:`fft_is_faster`. Padding (every mode) is applied explicitly,
dilation by spreading the kernel, stride by subsampling the stride-1 result; channels
and groups are summed in the frequency domain, so each input plane and each kernel is
transformed once.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.fft as sfft

from ._geometry import index_map

# Rough sustained rates on the target machines (2 cores), in operations per second:
# the direct kernels' multiply-adds and the FFT's floating-point operations.
_DIRECT_RATE = 8e9
_FFT_RATE = 1.5e9
_MIN_TAPS = 32  # below this many taps the direct kernel always wins


def _fft_shape(padded):
    """Fast transform lengths covering the padded input (the valid part never wraps)."""
    return tuple(sfft.next_fast_len(int(p), real=True) for p in padded)


def fft_is_faster(in_shape, w_shape, out_shape, pads, dilation, groups) -> bool:
    # Python ints and math: asked on every call, where np.prod and np.log2 cost tens of
    # microseconds
    taps = math.prod(w_shape[2:])
    if taps < _MIN_TAPS:
        return False
    n, c = in_shape[:2]
    o, cg = w_shape[:2]
    direct = n * o * cg * math.prod(out_shape[2:]) * taps / _DIRECT_RATE
    padded = [i + lo + hi for i, (lo, hi) in zip(in_shape[2:], pads)]
    f = math.prod(_fft_shape(padded))
    transforms = (n * c + o * cg + n * o) * 2.5 * f * math.log2(max(f, 2))
    products = n * o * cg * f * 4  # complex multiply-adds on the half spectrum, x2
    return (transforms + products) / _FFT_RATE < direct


def conv_fft(x, weight, bias, *, stride, pads, dilation, groups, mode) -> np.ndarray:
    """Cross-correlation of ``x`` (N, C, *S) with ``weight`` (O, C/groups, *K) by FFT."""
    nd = weight.ndim - 2
    axes = tuple(range(2, 2 + nd))
    # explicit padding, any mode, through the same index maps as the direct kernels
    xp = x
    for ax, (size, (lo, hi)) in zip(axes, zip(x.shape[2:], pads)):
        if lo or hi:
            idx = index_map(size, lo, hi, mode)
            xp = np.take(xp, np.maximum(idx, 0), axis=ax)
            if mode == "zeros":
                shape = [1] * xp.ndim
                shape[ax] = idx.size
                xp = xp * (idx >= 0).reshape(shape).astype(xp.dtype)
    ks = weight.shape[2:]
    keff = tuple(r * (k - 1) + 1 for k, r in zip(ks, dilation))
    wd = np.zeros(weight.shape[:2] + keff, dtype=weight.dtype)
    wd[(slice(None), slice(None)) + tuple(slice(None, None, r) for r in dilation)] = weight
    # correlation = convolution with the reversed kernel
    wd = wd[(slice(None), slice(None)) + (slice(None, None, -1),) * nd]
    fshape = _fft_shape(xp.shape[2:])
    xf = sfft.rfftn(xp, fshape, axes=axes, workers=-1)
    wf = sfft.rfftn(wd, fshape, axes=axes, workers=-1)
    n, c = x.shape[:2]
    o, cg = weight.shape[:2]
    og = o // groups
    yf = np.empty((n, o) + xf.shape[2:], dtype=xf.dtype)
    for g in range(groups):
        yf[:, g * og:(g + 1) * og] = np.einsum(
            "nc...,oc...->no...", xf[:, g * cg:(g + 1) * cg], wf[g * og:(g + 1) * og],
            optimize=True)
    y = sfft.irfftn(yf, fshape, axes=axes, workers=-1)
    valid = tuple(slice(k - 1, p, s) for k, p, s in zip(keff, xp.shape[2:], stride))
    y = y[(slice(None), slice(None)) + valid].astype(x.dtype, copy=False)
    if bias is not None:
        y += bias.reshape((1, -1) + (1,) * nd)
    return np.ascontiguousarray(y)
