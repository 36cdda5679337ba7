"""The public operations on CUDA arrays (called by :mod:`gridconv._dispatch`).

Same names, signatures, argument checks and error messages as the CPU functions (the
checks are the CPU modules' own helpers, which work on shapes); the arrays stay on the
device, and results come back as the caller's kind of device array.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from .. import _geometry as geo
from .._params import fail
from ..activation import _check_axis, _check_prelu, _check_same_shape, _check_slope, _view3
from ..conv import _conv_spec, _lift, _lift3, _shape_arg, _transpose_spec, _with_dtype
from ..local import _spec as _local_spec
from ..pool import (
    _check_bool,
    _check_grad,
    _check_p,
    _check_x,
    _inverse_divisors,
    _kept,
    _pool_spec,
)
from . import arrays as A
from . import kernels as K

# Shared memory a gather block may use (bytes; 48 KiB is every GPU's static limit).
_SHARED_BYTES = 40 * 1024


# ================================================================== convolution engine


def _axis_row(m, d0, ds, ss, off, kidx, flip_k=None, per=1, shift=0) -> list:
    """One ``geo`` row of the gather kernels from a tap table (arithmetic progressions);
    ``per`` weight stacks along the axis, ``shift``: stacks follow the source coordinate
    (see :func:`gridconv._cuda.kernels.make_gather`)."""
    t = len(off)
    off0 = int(off[0]) if t else 0
    tstep = int(off[1] - off[0]) if t > 1 else 1
    k0 = int(kidx[0]) if t else 0
    kstep = int(kidx[1] - kidx[0]) if t > 1 else 0
    if t > 2:
        assert np.all(np.diff(off) == tstep) and np.all(np.diff(kidx) == kstep)
    if flip_k is not None and t:  # the flipped kernel: index K-1-k
        k0, kstep = flip_k - 1 - k0, -kstep
    return [m, d0, ds, ss, t, off0, tstep, k0, kstep, per, shift]


_UNIT_ROW = [1, 0, 1, 1, 1, 0, 1, 0, 0, 1, 0]


def _conv_rows(out, kernel, stride, dilation, los, flip: bool = False, periods=None) -> list:
    """The forward gather's rows (lifted to 3 axes) from per-axis parameters."""
    nd = len(out)
    periods = periods or (1,) * nd
    rows = [_UNIT_ROW] * (3 - nd)
    for o, k, s, r, lo, t in zip(out, kernel, stride, dilation, los, periods):
        if flip:
            rows.append([o, 0, 1, s, k, -lo, r, k - 1, -1, t, 0])
        else:
            rows.append([o, 0, 1, s, k, -lo, r, 0, 1, t, 0])
    return rows


def _phase_rows(sizes, out, kernel, stride, dilation, los, flip: bool = False, periods=None):
    """The input gradient's gathers, one per stride phase (rows lifted to 3 axes): stride
    and dilation exchanged, kernel flipped, only the taps of the phase. With ``periods``
    the weight stacks follow the forward output's position (``shift``)."""
    nd = len(out)
    periods = periods or (1,) * nd
    shift = 0 if periods == (1,) * nd else 1
    per_axis = [[None]] * (3 - nd) + [
        geo.phase_axes(i, o, k, s, r, lo) for i, o, k, s, r, lo in
        zip(sizes, out, kernel, stride, dilation, los)]
    kern = [1] * (3 - nd) + list(kernel)
    pers = [1] * (3 - nd) + list(periods)
    for axes in itertools.product(*per_axis):
        rows = []
        for ax, k, t in zip(axes, kern, pers):
            if ax is None:
                rows.append(_UNIT_ROW)
            else:
                rows.append(_axis_row(ax.m, ax.d0, ax.ds, 1, ax.off, ax.kidx,
                                      k if flip else None, t, shift))
        yield np.array(rows, dtype=np.int64)


def _forward_geo(spec, padded: bool) -> np.ndarray:
    """The forward gather (``padded``: over the explicitly padded source, lo = 0)."""
    los = [0 if padded else lo for lo, _ in spec.pads]
    return np.array(_conv_rows(spec.out_shape[2:], spec.w_shape[2:], spec.stride,
                               spec.dilation, los, spec.flip), dtype=np.int64)


def _blocks(rows: int) -> list:
    """Candidate thread blocks (x, y) of the tiled kernels, largest first; under the
    simulator tiny ones, so that tests on tiny shapes still use several blocks."""
    if A.simulated():
        return [(4, 1)] if rows == 1 else [(4, 2)]
    if rows == 1:
        return [(128, 1), (32, 1)]
    return [(32, 8), (32, 4), (32, 2), (32, 1)]


def _gather_config(my: int, mx: int, d: int, taps_y: int, taps_x: int, ss_y: int, ss_x: int,
                   st_y: int, st_x: int, s: int, itemsize: int):
    """(block, cot, CC, EY, EX) of the tiled gather, or None when no tile fits."""
    for cot in ((8, 1) if d >= 4 else (1,)):
        for bx, by in _blocks(my):
            ey = ss_y * (by - 1) + st_y * (max(taps_y, 1) - 1) + 1
            ex = ss_x * (bx * K.RX - 1) + st_x * (max(taps_x, 1) - 1) + 1
            per = (ey * ex + cot * taps_y * taps_x) * itemsize
            cc = min(s, _SHARED_BYTES // per)
            if cc >= 1:
                return (bx, by), cot, cc, ey, ex
    return None


def _gather(src, w, bias, dst, rows: np.ndarray, groups: int, d: int, s: int,
            swap: bool) -> None:
    """One gather launch: ``dst`` positions of ``rows`` from ``src`` (all contiguous, one
    dtype; ``w`` 6-D with the weight stacks first); ``d``/``s`` destination/source
    channels per group."""
    dtype = np.dtype(dst.dtype)
    n = dst.shape[0]
    mz, my, mx = (int(v) for v in rows[:, 0])
    if n * mz * my * mx == 0:
        return
    has_bias = bias is not None
    b = bias if has_bias else A.dummy(dtype)
    _, pery, perx = (int(v) for v in rows[:, 9])
    sub_y, sub_x = -(-my // pery), -(-mx // perx)  # the largest phase of the periods
    cfg = _gather_config(sub_y, sub_x, d, int(rows[1, 4]), int(rows[2, 4]),
                         int(rows[1, 3]) * pery, int(rows[2, 3]) * perx, int(rows[1, 6]),
                         int(rows[2, 6]), s, dtype.itemsize)
    geo_d = A.table(rows)
    if cfg is None:  # taps too many for a shared-memory tile
        prm = A.table([0, 0, 0, 0, 0, 0, groups, d, s, has_bias, swap])
        A.launch1("gather_naive", dtype, dst.shape[0] * groups * d * mz * my * mx, src, w, b,
                  dst, geo_d, prm)
        return
    (bx, by), cot, cc, ey, ex = cfg
    ntx = -(-sub_x // (bx * K.RX))
    nty = -(-sub_y // by)
    dtiles = -(-d // cot)
    prm = A.table([ey, ex, cc, ntx, nty, dtiles, groups, d, s, has_bias, swap])
    shared = (cc * ey * ex + cc * cot * int(rows[1, 4]) * int(rows[2, 4])) * dtype.itemsize
    kern = K.get(f"gather{cot}", dtype)
    grid = (ntx * nty * min(perx, mx) * min(pery, my) * mz * n, groups * dtiles)
    kern[grid, (bx, by), 0, shared](src, w, b, dst, geo_d, prm)


def _w6(w5):
    """A conv weight as the gather's 6-D weight: one stack."""
    return w5.reshape((1,) + tuple(w5.shape))


def _pad_maps(sizes, pads, mode, nd):
    return [np.zeros(1, np.int64)] * (3 - nd) + [
        geo.index_map(i, lo, hi, mode) for i, (lo, hi) in zip(sizes, pads)]


def _pad(x5, sizes, pads, mode: str, nd: int):
    """``x5`` padded explicitly on the device (reflect, replicate, circular)."""
    maps = _pad_maps(sizes, pads, mode, nd)
    out = A.empty(x5.shape[:2] + tuple(len(m) for m in maps), x5.dtype)
    A.launch1("pad5", x5.dtype, out.size, x5, out, *(A.table(m) for m in maps))
    return out


def _unpad(gpad, shape5, sizes, pads, mode: str, nd: int):
    """The adjoint of :func:`_pad`: each padded coordinate's gradient to its source."""
    tables = []
    for m, size in zip(_pad_maps(sizes, pads, mode, nd), shape5[2:]):
        ptr = np.zeros(size + 1, np.int64)
        np.cumsum(np.bincount(m, minlength=size), out=ptr[1:])
        tables += [A.table(ptr), A.table(np.argsort(m, kind="stable"))]
    out = A.empty(shape5, gpad.dtype)
    A.launch1("unpad5", gpad.dtype, out.size, gpad, out, *tables)
    return out


def _source(x5, spec):
    """The forward source: ``x5``, or its explicit padding for the non-zero modes."""
    if spec.mode == "zeros":
        return x5, False
    return _pad(x5, spec.in_shape[2:], spec.pads, spec.mode, spec.nd), True


def _conv_forward(x5, w5, b1, spec):
    """Forward conv of lifted operands; returns the lifted output."""
    g = spec.groups
    src, padded = _source(x5, spec)
    dst = A.empty(_lift(spec.out_shape, spec.nd), x5.dtype)
    _gather(src, _w6(w5), b1, dst, _forward_geo(spec, padded), g, spec.out_shape[1] // g,
            spec.in_shape[1] // g, False)
    return dst


def _input_grad(gy5, w5, b1, spec, dtype):
    """Gradient w.r.t. the conv input (also conv_transpose, with ``b1``): one gather per
    stride phase (stride and dilation exchanged, kernel flipped, no zero multiplied)."""
    nd, g = spec.nd, spec.groups
    sizes = spec.in_shape[2:]
    if spec.mode == "zeros":
        gsizes, los = sizes, [lo for lo, _ in spec.pads]
    else:
        gsizes = tuple(i + lo + hi for i, (lo, hi) in zip(sizes, spec.pads))
        los = [0] * nd
    dst = A.empty(_lift(spec.in_shape[:2] + tuple(gsizes), nd), dtype)
    for rows in _phase_rows(gsizes, spec.out_shape[2:], spec.w_shape[2:], spec.stride,
                            spec.dilation, los, spec.flip):
        _gather(gy5, _w6(w5), b1, dst, rows, g, spec.in_shape[1] // g,
                spec.out_shape[1] // g, True)
    if spec.mode != "zeros":
        dst = _unpad(dst, _lift(spec.in_shape, nd), sizes, spec.pads, spec.mode, nd)
    return dst


def _pow2(v: int, lo: int, hi: int) -> int:
    """The smallest power of two >= ``v``, clipped to ``[lo, hi]``."""
    p = lo
    while p < v and p < hi:
        p *= 2
    return p


def _wgrad(src5, gy5, rows: np.ndarray, kern, groups: int, d: int, s: int):
    """Weight gradient (P*G*D, S*K) by the implicit-GEMM kernel: ``P`` weight stacks
    (``rows[:, 9]`` per axis; 1 for a conv), each reduced over the positions of its phase,
    split over the positions and the splits summed in a fixed order."""
    dtype = np.dtype(gy5.dtype)
    per = [int(v) for v in rows[:, 9]]
    nstack = math.prod(per)
    ktot = math.prod(kern)
    ncol = s * ktot
    if A.simulated():
        bx, by = 2, 2
    else:  # 256 threads, the tile shaped to the result (few channels: wide and short)
        by = _pow2(-(-d // K.RW), 4, 16)
        bx = 256 // by
    td, tc = by * K.RW, bx * K.RW
    ctiles, ndt = -(-ncol // tc), -(-d // td)
    npos = gy5.shape[0] * math.prod(-(-int(m) // t) for m, t in zip(rows[:, 0], per))
    out_shape = (nstack * groups * d, ncol)
    if npos == 0:
        out = A.empty(out_shape, dtype)
        _fill_zero(out)
        return out
    base = ctiles * groups * ndt * nstack
    target = 4 if A.simulated() else 528
    nsplit = max(1, min(-(-npos // (K.KP * 8)), -(-target // base)))
    chunk = -(-npos // nsplit)
    chunk = -(-chunk // K.KP) * K.KP
    nsplit = -(-npos // chunk)
    part = A.empty((nsplit,) + out_shape, dtype)
    prm = A.table([groups, d, s, chunk, ndt, *kern, ctiles])
    shared = (K.KP * (td + 1) + K.KP * (tc + 1)) * dtype.itemsize
    K.get("wgrad", dtype)[(ctiles * nstack, groups * ndt, nsplit), (bx, by), 0, shared](
        src5, gy5, part, A.table(rows), prm)
    if nsplit == 1:
        return part.reshape(out_shape)
    out = A.empty(out_shape, dtype)
    A.launch1("sum_split", dtype, out.size, part, out)
    return out


def _weight_grad(src5, gy5, spec, padded: bool):
    """Weight gradient (G*D, S*K) of a conv."""
    g = spec.groups
    kern = [1] * (3 - spec.nd) + list(spec.w_shape[2:])
    return _wgrad(src5, gy5, _forward_geo(spec, padded), kern, g, spec.out_shape[1] // g,
                  spec.in_shape[1] // g)


def _fill_zero(a) -> None:
    """Zero a contiguous device array (via the cast kernel from a zero table)."""
    flat = a.reshape((1, 1, 1, 1, a.size))
    zero = A.table(np.zeros(a.size), a.dtype).reshape((1, 1, 1, 1, a.size))
    A.launch1("copy5", a.dtype, a.size, zero, flat)


def _bias_grad(gy5):
    dtype = np.dtype(gy5.dtype)
    n, c = gy5.shape[:2]
    out = A.empty((c,), dtype)
    g3 = gy5.reshape((n, c, gy5.size // max(n * c, 1)))
    t = A.reduce_threads()
    if c:
        K.get("bias_grad", dtype)[c, t, 0, t * dtype.itemsize](g3, out)
    return out


def _check_bias(op: str, bias, channels: int):
    if bias is not None and tuple(bias.shape) != (channels,):
        raise fail(op, f"`bias` must have shape ({channels},) (one value per output channel), "
                       f"got {tuple(bias.shape)}")


def _gout(op: str, gout, shape, dtype, nd: int):
    if tuple(gout.shape) != tuple(shape):
        raise fail(op, f"`grad_output` must have the output's shape {tuple(shape)}, "
                       f"got {tuple(gout.shape)}")
    A.check_real(op, gout, "grad_output")
    return _lifted(gout, dtype, nd)


def _lifted(a, dtype, nd: int):
    a = A.operand(a, dtype)
    return a.reshape(_lift(tuple(a.shape), nd))


def _devs(op: str, **arrays):
    return [A.dev(v, k, op) for k, v in arrays.items()]


# ------------------------------------------------------------------------ public: conv


def conv(x, weight, bias=None, *, stride=1, padding=0, dilation=1, groups=1,
         padding_mode="zeros", flip=False):
    op = "conv"
    how = A.caller_kind(x, weight, bias)
    x, weight, bias = _devs(op, x=x, weight=weight, bias=bias)
    spec = _conv_spec(op, x, weight, bias, stride, padding, dilation, groups, padding_mode,
                      flip)
    _check_bias(op, bias, spec.w_shape[0])
    dtype = A.dtype_of(op, x=x, weight=weight, bias=bias)
    b1 = None if bias is None else A.operand(bias, dtype)
    y = _conv_forward(_lifted(x, dtype, spec.nd), _lifted(weight, dtype, spec.nd), b1, spec)
    return A.wrap(y.reshape(spec.out_shape), how)


def conv_backward(grad_output, x, weight, bias=None, *, stride=1, padding=0, dilation=1,
                  groups=1, padding_mode="zeros", flip=False):
    op = "conv_backward"
    how = A.caller_kind(grad_output, x, weight, bias)
    grad_output, x, weight, bias = _devs(op, grad_output=grad_output, x=x, weight=weight,
                                         bias=bias)
    spec = _conv_spec(op, x, weight, bias, stride, padding, dilation, groups, padding_mode,
                      flip)
    _check_bias(op, bias, spec.w_shape[0])
    dtype = A.dtype_of(op, x=x, weight=weight, bias=bias)
    spec = _with_dtype(spec, dtype)
    g5 = _gout(op, grad_output, spec.out_shape, dtype, spec.nd)
    x5, w5 = _lifted(x, dtype, spec.nd), _lifted(weight, dtype, spec.nd)
    gx = _input_grad(g5, w5, None, spec, dtype).reshape(spec.in_shape)
    src, padded = _source(x5, spec)
    gw = _weight_grad(src, g5, spec, padded).reshape(spec.w_shape)
    gb = None if bias is None else _bias_grad(g5)
    return A.wrap((gx, gw, gb), how)


def conv_grad_input(grad_output, weight, input_shape, *, stride=1, padding=0, dilation=1,
                    groups=1, padding_mode="zeros", flip=False):
    op = "conv_grad_input"
    how = A.caller_kind(grad_output, weight)
    grad_output, weight = _devs(op, grad_output=grad_output, weight=weight)
    input_shape = _shape_arg(op, input_shape, "input_shape", weight.ndim)
    spec = _conv_spec(op, None, weight, None, stride, padding, dilation, groups, padding_mode,
                      flip, in_shape=input_shape)
    A.check_real(op, grad_output, "grad_output")
    dtype = A.dtype_of(op, grad_output=grad_output, weight=weight)
    spec = _with_dtype(spec, dtype)
    g5 = _gout(op, grad_output, spec.out_shape, dtype, spec.nd)
    gx = _input_grad(g5, _lifted(weight, dtype, spec.nd), None, spec, dtype)
    return A.wrap(gx.reshape(spec.in_shape), how)


def conv_grad_weight(grad_output, x, weight_shape, *, stride=1, padding=0, dilation=1,
                     groups=1, padding_mode="zeros", flip=False):
    op = "conv_grad_weight"
    how = A.caller_kind(grad_output, x)
    grad_output, x = _devs(op, grad_output=grad_output, x=x)
    weight_shape = _shape_arg(op, weight_shape, "weight_shape", x.ndim)
    probe = np.broadcast_to(np.zeros((), dtype=x.dtype), weight_shape)
    spec = _conv_spec(op, x, probe, None, stride, padding, dilation, groups, padding_mode,
                      flip)
    A.check_real(op, grad_output, "grad_output")
    dtype = A.dtype_of(op, grad_output=grad_output, x=x)
    spec = _with_dtype(spec, dtype)
    g5 = _gout(op, grad_output, spec.out_shape, dtype, spec.nd)
    src, padded = _source(_lifted(x, dtype, spec.nd), spec)
    return A.wrap(_weight_grad(src, g5, spec, padded).reshape(spec.w_shape), how)


def conv_transpose(x, weight, bias=None, *, stride=1, padding=0, output_padding=0,
                   dilation=1, groups=1):
    op = "conv_transpose"
    how = A.caller_kind(x, weight, bias)
    x, weight, bias = _devs(op, x=x, weight=weight, bias=bias)
    tspec = _transpose_spec(op, x, weight, stride, padding, output_padding, dilation, groups)
    _check_bias(op, bias, tspec.out_shape[1])
    dtype = A.dtype_of(op, x=x, weight=weight, bias=bias)
    spec = _with_dtype(tspec.conv, dtype)
    b1 = None if bias is None else A.operand(bias, dtype)
    y = _input_grad(_lifted(x, dtype, spec.nd), _lifted(weight, dtype, spec.nd), b1, spec,
                    dtype)
    return A.wrap(y.reshape(tspec.out_shape), how)


def conv_transpose_backward(grad_output, x, weight, bias=None, *, stride=1, padding=0,
                            output_padding=0, dilation=1, groups=1):
    op = "conv_transpose_backward"
    how = A.caller_kind(grad_output, x, weight, bias)
    grad_output, x, weight, bias = _devs(op, grad_output=grad_output, x=x, weight=weight,
                                         bias=bias)
    tspec = _transpose_spec(op, x, weight, stride, padding, output_padding, dilation, groups)
    _check_bias(op, bias, tspec.out_shape[1])
    dtype = A.dtype_of(op, x=x, weight=weight, bias=bias)
    spec = _with_dtype(tspec.conv, dtype)  # conv from grad_output's grid to x's
    nd = spec.nd
    g5 = _gout(op, grad_output, tspec.out_shape, dtype, nd)
    x5, w5 = _lifted(x, dtype, nd), _lifted(weight, dtype, nd)
    gx = _conv_forward(g5, w5, None, spec).reshape(x.shape)
    gw = _weight_grad(g5, x5, spec, False).reshape(weight.shape)
    gb = None if bias is None else _bias_grad(g5)
    return A.wrap((gx, gw, gb), how)


# ======================================================== unshared and tiled convolutions


# Up to this many weight stacks (in use), a tiled conv runs on the conv gather with one
# launch covering every phase of the periods (as the CPU engine); beyond, the phases hold
# too few positions to fill blocks and the per-position kernel takes over.
_MAX_STACKS = 64


def _periodic(spec) -> bool:
    if spec.unshared:
        return False
    used = [min(t, o) for t, o in zip(spec.tiles, spec.out_shape[2:])]
    return math.prod(used) <= _MAX_STACKS


def _local_config(my: int, mx: int, d: int, n: int, taps_y: int, taps_x: int, ss_y: int,
                  ss_x: int, st_y: int, st_x: int, s: int, itemsize: int):
    """(kernel name, cot, rn, block, CC, EY, EX, direct) of the per-position gather."""
    variants = [("local8", 8, 4), ("local8n1", 8, 1), ("local1", 1, 4)]

    def useful(v):  # the fraction of a thread's accumulators that hold real outputs
        _, cot, rn = v
        return (d / (-(-d // cot) * cot)) * (n / (-(-n // rn) * rn)), cot * rn

    name, cot, rn = max(variants, key=useful)
    blocks = _blocks(my)
    for bx, by in blocks:
        ey = ss_y * (by - 1) + st_y * (max(taps_y, 1) - 1) + 1
        ex = ss_x * (bx - 1) + st_x * (max(taps_x, 1) - 1) + 1
        cc = min(s, _SHARED_BYTES // (rn * ey * ex * itemsize))
        if cc >= 1:
            return name, cot, rn, (bx, by), cc, ey, ex, 0
    return name, cot, rn, blocks[0], max(s, 1), 0, 0, 1  # no tile fits: direct reads


def _local(src, wp, bias2, dst, rows: np.ndarray, d: int, s: int, kern) -> None:
    """One launch of the per-position gather (``wp`` prepacked by :func:`_pack`)."""
    dtype = np.dtype(dst.dtype)
    n = dst.shape[0]
    mz, my, mx = (int(v) for v in rows[:, 0])
    if n * mz * my * mx == 0:
        return
    name, cot, rn, (bx, by), cc, ey, ex, direct = _local_config(
        my, mx, d, n, int(rows[1, 4]), int(rows[2, 4]), int(rows[1, 3]), int(rows[2, 3]),
        int(rows[1, 6]), int(rows[2, 6]), s, dtype.itemsize)
    has_bias = bias2 is not None
    b = bias2 if has_bias else A.dummy(dtype, 2)
    ntx, nty = -(-mx // bx), -(-my // by)
    prm = A.table([ey, ex, cc, ntx, nty, direct, d, s, has_bias, kern[1], kern[2]])
    shared = rn * cc * ey * ex * dtype.itemsize
    grid = (ntx * nty * mz * -(-n // rn), -(-d // cot))
    K.get(name, dtype)[grid, (bx, by), 0, shared](src, wp, b, dst, A.table(rows), prm)


def _pack(w4, swap: bool):
    """Prepacked weights of the per-position gather: ``w4`` (P, C_out, C_in, K) to
    (C_in, K, C_out, P), or (C_out, K, C_in, P) with ``swap`` (the input gradient)."""
    p, co, ci, k = (int(v) for v in w4.shape)
    out = A.empty((co, k, ci, p) if swap else (ci, k, co, p), w4.dtype)
    A.launch1("pack", w4.dtype, out.size, w4, out, int(swap))
    return out


def _local_arrays(op, unshared, x, weight, bias, stride, padding, dilation, padding_mode):
    x, weight, bias = _devs(op, x=x, weight=weight, bias=bias)
    spec = _local_spec(op, unshared, tuple(x.shape), weight, bias, stride, padding,
                       dilation, padding_mode)
    dtype = A.dtype_of(op, x=x, weight=weight, bias=bias)
    x5 = _lifted(x, dtype, spec.nd)
    kern = tuple(_lift3(spec.kernel, 1, spec.nd))
    w6 = A.operand(weight, dtype).reshape((math.prod(spec.tiles), spec.c_out, spec.in_shape[1])
                                          + kern)
    b2 = None if bias is None else A.operand(bias, dtype).reshape((spec.c_out, -1))
    return spec, dtype, x5, w6, b2


def _local_rows(spec, padded: bool) -> np.ndarray:
    los = [0 if padded else lo for lo, _ in spec.pads]
    return np.array(_conv_rows(spec.out_shape[2:], spec.kernel, spec.stride, spec.dilation,
                               los, periods=tuple(spec.tiles)), dtype=np.int64)


def _local_forward(op, unshared, x, weight, bias, stride, padding, dilation, padding_mode):
    how = A.caller_kind(x, weight, bias)
    spec, dtype, x5, w6, b2 = _local_arrays(op, unshared, x, weight, bias, stride, padding,
                                            dilation, padding_mode)
    padded = spec.mode != "zeros"
    src = _pad(x5, spec.in_shape[2:], spec.pads, spec.mode, spec.nd) if padded else x5
    dst = A.empty(_lift(spec.out_shape, spec.nd), dtype)
    rows = _local_rows(spec, padded)
    c_in = spec.in_shape[1]
    if _periodic(spec):  # the conv gather, the stack chosen per phase of the periods
        b1 = None if b2 is None else b2.reshape((spec.c_out,))
        _gather(src, w6, b1, dst, rows, 1, spec.c_out, c_in, False)
    else:
        wp = _pack(w6.reshape(w6.shape[:3] + (-1,)), False)
        _local(src, wp, b2, dst, rows, spec.c_out, c_in, w6.shape[3:])
    return A.wrap(dst.reshape(spec.out_shape), how)


def _local_backward(op, unshared, grad_output, x, weight, bias, stride, padding, dilation,
                    padding_mode):
    how = A.caller_kind(grad_output, x, weight, bias)
    grad_output = A.dev(grad_output, "grad_output", op)
    spec, dtype, x5, w6, b2 = _local_arrays(op, unshared, x, weight, bias, stride, padding,
                                            dilation, padding_mode)
    nd = spec.nd
    g5 = _gout(op, grad_output, spec.out_shape, dtype, nd)
    padded = spec.mode != "zeros"
    sizes = tuple(i + (lo + hi) * padded for i, (lo, hi) in zip(spec.in_shape[2:], spec.pads))
    los = [0 if padded else lo for lo, _ in spec.pads]
    c_in, c_out = spec.in_shape[1], spec.c_out
    kern = tuple(int(k) for k in w6.shape[3:])
    # input gradient: one gather per stride phase, the stacks following the output position
    gx = A.empty(_lift(spec.in_shape[:2] + sizes, nd), dtype)
    periodic = _periodic(spec)
    wq = None if periodic else _pack(w6.reshape(w6.shape[:3] + (-1,)), True)
    for rows in _phase_rows(sizes, spec.out_shape[2:], spec.kernel, spec.stride,
                            spec.dilation, los, periods=tuple(spec.tiles)):
        if periodic:
            _gather(g5, w6, None, gx, rows, 1, c_in, c_out, True)
        else:
            _local(g5, wq, None, gx, rows, c_in, c_out, kern)
    src = x5
    if padded:
        gx = _unpad(gx, x5.shape, spec.in_shape[2:], spec.pads, spec.mode, nd)
        src = _pad(x5, spec.in_shape[2:], spec.pads, spec.mode, nd)
    gw = _wgrad(src, g5, _local_rows(spec, padded), kern, 1, c_out, c_in)
    gb = None
    if b2 is not None:
        if unshared:
            g2 = g5.reshape((g5.shape[0], g5.size // max(g5.shape[0], 1)))
            gb = A.empty((g2.shape[1],), dtype)
            A.launch1("sum_rows", dtype, g2.shape[1], g2, gb)
        else:
            gb = _bias_grad(g5)
        gb = gb.reshape(spec.bias_shape)
    return A.wrap((gx.reshape(spec.in_shape), gw.reshape(spec.w_shape), gb), how)


def unshared_conv(x, weight, bias=None, *, stride=1, padding=0, dilation=1,
                  padding_mode="zeros"):
    return _local_forward("unshared_conv", True, x, weight, bias, stride, padding, dilation,
                          padding_mode)


def unshared_conv_backward(grad_output, x, weight, bias=None, *, stride=1, padding=0,
                           dilation=1, padding_mode="zeros"):
    return _local_backward("unshared_conv_backward", True, grad_output, x, weight, bias,
                           stride, padding, dilation, padding_mode)


def tiled_conv(x, weight, bias=None, *, stride=1, padding=0, dilation=1,
               padding_mode="zeros"):
    return _local_forward("tiled_conv", False, x, weight, bias, stride, padding, dilation,
                          padding_mode)


def tiled_conv_backward(grad_output, x, weight, bias=None, *, stride=1, padding=0,
                        dilation=1, padding_mode="zeros"):
    return _local_backward("tiled_conv_backward", False, grad_output, x, weight, bias,
                           stride, padding, dilation, padding_mode)


# ============================================================================= pooling


def _win(spec) -> np.ndarray:
    return np.array(spec.axes(), dtype=np.int64)


def _pool_tiles(rows: int, cols: int, extent, itemsize_of) -> tuple:
    """(block, EY, EX, direct, ntx, nty) of a tiled pooling kernel over a ``rows x cols``
    plane; ``extent(bx, by)`` is the staged tile (EY, EX) of a block, ``itemsize_of(ey,
    ex)`` its bytes."""
    blocks = _blocks(rows)
    choice = None
    for bx, by in blocks:
        ey, ex = extent(bx, by)
        if itemsize_of(ey, ex) <= _SHARED_BYTES:
            choice = (bx, by), ey, ex, 0
            break
    if choice is None:  # windows too large for a tile: direct reads
        choice = blocks[0], 0, 0, 1
    (bx, by), ey, ex, direct = choice
    return (bx, by), ey, ex, direct, -(-cols // (bx * K.RX)), -(-rows // by)


def _pool_run(spec, x5, mode: int, want: bool, inv=None, p: float = 1.0):
    dtype = np.dtype(x5.dtype)
    t = dtype.type
    y = A.empty(spec.lifted(spec.out_shape), dtype)
    idx = A.empty(y.shape, np.int64) if want else A.dummy(np.int64, 5)
    inv_d = A.table(inv if inv is not None else np.ones((3, 1)), dtype)
    win = _win(spec)
    if y.size == 0:
        return y, idx
    (_, _, ky, sy, dy, _), (_, _, kx, sx, dx, _) = win[1], win[2]

    def extent(bx, by):
        return sy * (by - 1) + dy * (ky - 1) + 1, sx * (bx * K.RX - 1) + dx * (kx - 1) + 1

    oz, oy, ox = y.shape[2:]
    (bx, by), ey, ex, direct, ntx, nty = _pool_tiles(oy, ox, extent,
                                                      lambda a, b: a * b * dtype.itemsize)
    prm = A.table([ey, ex, ntx, nty, direct])
    grid = ntx * nty * oz * y.shape[0] * y.shape[1]
    K.get("pool_fwd", dtype)[grid, (bx, by), 0, ey * ex * dtype.itemsize](
        x5, y, idx, A.table(win), inv_d, mode, int(want), t(p), t(1.0 / p), prm)
    return y, idx


def _pool_grad(spec, g5, mode: int, *, x5=None, y=None, idx=None, inv=None, pm1=0.0):
    dtype = np.dtype(g5.dtype)
    gx = A.empty(spec.lifted(spec.in_shape), dtype)
    if gx.size == 0:
        return gx.reshape(spec.in_shape)
    d5 = A.dummy(dtype, 5)
    win = _win(spec)
    (_, _, ky, sy, dy, _), (_, _, kx, sx, dx, _) = win[1], win[2]
    item = dtype.itemsize

    def extent(bx, by):  # the windows that cover a block's elements
        return (by - 1 + dy * (ky - 1)) // sy + 2, (bx * K.RX - 1 + dx * (kx - 1)) // sx + 2

    def nbytes(ey, ex):  # values, then (max) the winners as int64 from an 8-byte boundary
        return -(-ey * ex * item // 8) * 8 + (ey * ex * 8 if mode == K.MAXIDX else 0)

    zs, ys, xs = gx.shape[2:]
    (bx, by), ey, ex, direct, ntx, nty = _pool_tiles(ys, xs, extent, nbytes)
    prm = A.table([ey, ex, ntx, nty, -(-ey * ex * item // 8), direct])
    grid = ntx * nty * zs * gx.shape[0] * gx.shape[1]
    K.get("pool_bwd", dtype)[grid, (bx, by), 0, 0 if direct else nbytes(ey, ex)](
        g5, d5 if x5 is None else x5, d5 if y is None else y,
        A.dummy(np.int64, 5) if idx is None else idx, gx, A.table(win),
        A.table(inv if inv is not None else np.ones((3, 1)), dtype), mode, dtype.type(pm1),
        prm)
    return gx.reshape(spec.in_shape)


def _pool_x(op, x):
    x = A.dev(x, "x", op)
    _check_x(op, x)
    return x


def _pool_g(op, grad_output, spec):
    g = A.dev(grad_output, "grad_output", op)
    _check_grad(op, _Shape(g), spec.out_shape)
    return g


class _Shape:
    """The shape of a device array as a tuple (what the CPU checks compare)."""

    def __init__(self, a):
        self.shape = tuple(a.shape)


def _lp_mode(p: float) -> int:
    return K.LP2 if p == 2.0 else (K.LP1 if p == 1.0 else K.LPP)


def max_pool(x, window, stride=None, padding=0, dilation=1, ceil_mode=False,
             return_indices=False):
    op = "max_pool"
    how = A.caller_kind(x)
    x = _pool_x(op, x)
    spec = _pool_spec(op, tuple(x.shape), window, stride, padding, dilation, ceil_mode)
    want = _check_bool(op, return_indices, "return_indices")
    dtype = A.dtype_of(op, x=x)
    x5 = A.operand(x, dtype).reshape(spec.lifted(tuple(x.shape)))
    y, idx = _pool_run(spec, x5, K.MAX, want)
    y = y.reshape(spec.out_shape)
    return A.wrap((y, idx.reshape(spec.out_shape)) if want else y, how)


def max_pool_backward(grad_output, x, window, stride=None, padding=0, dilation=1,
                      ceil_mode=False, indices=None):
    op = "max_pool_backward"
    how = A.caller_kind(grad_output, x, indices)
    x = _pool_x(op, x)
    spec = _pool_spec(op, tuple(x.shape), window, stride, padding, dilation, ceil_mode)
    g = _pool_g(op, grad_output, spec)
    dtype = A.dtype_of(op, grad_output=g, x=x)
    g5 = A.operand(g, dtype).reshape(spec.lifted(spec.out_shape))
    if indices is None:
        x5 = A.operand(x, dtype).reshape(spec.lifted(tuple(x.shape)))
        _, idx = _pool_run(spec, x5, K.MAX, True)
    else:
        idx = A.dev(indices, "indices", op)
        if np.dtype(idx.dtype).kind not in "iu":
            raise fail(op, f"`indices` must be an integer array (from max_pool(..., "
                           f"return_indices=True)), got dtype {idx.dtype}", TypeError)
        if tuple(idx.shape) != spec.out_shape:
            raise fail(op, f"`indices` must have the output's shape {spec.out_shape}, got "
                           f"{tuple(idx.shape)}")
        idx = A.operand(idx, np.int64).reshape(spec.lifted(spec.out_shape))
        bad = A.cuda().to_device(np.zeros(1, np.int32))
        A.launch1("pool_check", np.float64, idx.size, idx, A.table(_win(spec)), bad)
        wrong = int(bad.copy_to_host()[0])
        if wrong:
            raise fail(op, f"`indices` must come from max_pool(..., return_indices=True) with "
                           f"the same parameters: {wrong} of {g.size} entries are outside the "
                           f"plane or mark a non-empty window as empty (-1)")
    return A.wrap(_pool_grad(spec, g5, K.MAXIDX, idx=idx), how)


def avg_pool(x, window, stride=None, padding=0, ceil_mode=False, count_include_pad=True):
    op = "avg_pool"
    how = A.caller_kind(x)
    x = _pool_x(op, x)
    spec = _pool_spec(op, tuple(x.shape), window, stride, padding, 1, ceil_mode)
    include = _check_bool(op, count_include_pad, "count_include_pad")
    dtype = A.dtype_of(op, x=x)
    x5 = A.operand(x, dtype).reshape(spec.lifted(tuple(x.shape)))
    y, _ = _pool_run(spec, x5, K.AVG, False, inv=_inverse_divisors(spec, include, dtype))
    return A.wrap(y.reshape(spec.out_shape), how)


def avg_pool_backward(grad_output, x, window, stride=None, padding=0, ceil_mode=False,
                      count_include_pad=True):
    op = "avg_pool_backward"
    how = A.caller_kind(grad_output, x)
    x = _pool_x(op, x)
    spec = _pool_spec(op, tuple(x.shape), window, stride, padding, 1, ceil_mode)
    include = _check_bool(op, count_include_pad, "count_include_pad")
    g = _pool_g(op, grad_output, spec)
    dtype = A.dtype_of(op, grad_output=g, x=x)
    g5 = A.operand(g, dtype).reshape(spec.lifted(spec.out_shape))
    return A.wrap(_pool_grad(spec, g5, K.AVG, inv=_inverse_divisors(spec, include, dtype)),
                  how)


def lp_pool(x, p, window, stride=None, padding=0, ceil_mode=False):
    op = "lp_pool"
    how = A.caller_kind(x)
    x = A.dev(x, "x", op)
    p = _check_p(op, p)
    _check_x(op, x)
    spec = _pool_spec(op, tuple(x.shape), window, stride, padding, 1, ceil_mode)
    dtype = A.dtype_of(op, x=x)
    x5 = A.operand(x, dtype).reshape(spec.lifted(tuple(x.shape)))
    y, _ = _pool_run(spec, x5, _lp_mode(p), False, p=p)
    return A.wrap(y.reshape(spec.out_shape), how)


def lp_pool_backward(grad_output, x, p, window, stride=None, padding=0, ceil_mode=False):
    op = "lp_pool_backward"
    how = A.caller_kind(grad_output, x)
    x = A.dev(x, "x", op)
    p = _check_p(op, p)
    _check_x(op, x)
    spec = _pool_spec(op, tuple(x.shape), window, stride, padding, 1, ceil_mode)
    g = _pool_g(op, grad_output, spec)
    dtype = A.dtype_of(op, grad_output=g, x=x)
    x5 = A.operand(x, dtype).reshape(spec.lifted(tuple(x.shape)))
    g5 = A.operand(g, dtype).reshape(spec.lifted(spec.out_shape))
    mode = _lp_mode(p)
    y, _ = _pool_run(spec, x5, mode, False, p=p)
    return A.wrap(_pool_grad(spec, g5, mode, x5=x5, y=y, pm1=p - 1.0), how)


def _planes(x, dtype):
    return A.operand(x, dtype).reshape((x.shape[0] * x.shape[1], math.prod(x.shape[2:])))


def _global(x, dtype, want_max: bool):
    planes = _planes(x, dtype)
    rows, length = planes.shape
    out = A.empty((rows,), dtype)
    idx = A.empty((rows,), np.int64) if want_max else A.dummy(np.int64)
    t = A.reduce_threads()
    if rows:
        K.get("global_reduce", dtype)[rows, t, 0, 16 * t](planes, out, idx, int(want_max),
                                                          np.dtype(dtype).type(length))
    return out, idx


def global_max_pool(x):
    op = "global_max_pool"
    how = A.caller_kind(x)
    x = _pool_x(op, x)
    out, _ = _global(x, A.dtype_of(op, x=x), True)
    return A.wrap(out.reshape(_kept(tuple(x.shape))), how)


def global_avg_pool(x):
    op = "global_avg_pool"
    how = A.caller_kind(x)
    x = _pool_x(op, x)
    out, _ = _global(x, A.dtype_of(op, x=x), False)
    return A.wrap(out.reshape(_kept(tuple(x.shape))), how)


def _global_backward(op, grad_output, x, want_max: bool):
    how = A.caller_kind(grad_output, x)
    x = _pool_x(op, x)
    g = A.dev(grad_output, "grad_output", op)
    _check_grad(op, _Shape(g), _kept(tuple(x.shape)))
    dtype = A.dtype_of(op, grad_output=g, x=x)
    rows = x.shape[0] * x.shape[1]
    length = math.prod(x.shape[2:])
    idx = _global(x, dtype, True)[1] if want_max else A.dummy(np.int64)
    g1 = A.operand(g, dtype).reshape((rows,))
    gx = A.empty((rows, length), dtype)
    A.launch1("global_bwd", dtype, gx.size, g1, idx, gx, int(want_max),
              np.dtype(dtype).type(length))
    return A.wrap(gx.reshape(tuple(x.shape)), how)


def global_max_pool_backward(grad_output, x):
    return _global_backward("global_max_pool_backward", grad_output, x, True)


def global_avg_pool_backward(grad_output, x):
    return _global_backward("global_avg_pool_backward", grad_output, x, False)


# ========================================================================= activations


def _flat(a, dtype, op, name):
    return A.operand(a, dtype, op, name).reshape((a.size,))


def _elementwise(dtype, g, x, w, code: int, nb: int, shape):
    out = A.empty((int(math.prod(shape)),), dtype)
    A.launch1("elementwise", dtype, out.size, g, x, w, out, code, max(int(nb), 1))
    return out.reshape(tuple(shape))


def _act_forward(op: str, x, code: int, slope: float = 0.0):
    how = A.caller_kind(x)
    x = A.dev(x, "x", op)
    dtype = A.dtype_of(op, x=x)
    flat = _flat(x, dtype, op, "x")
    w = A.table(np.full(1, slope), dtype)
    return A.wrap(_elementwise(dtype, flat, flat, w, code, x.size, tuple(x.shape)), how)


def _grad_arrays(op: str, grad_output, x, output=None, *, need_x: bool = True):
    g = A.dev(grad_output, "grad_output", op)
    if x is None and (need_x or output is None):
        raise fail(op, "`x` is required" + ("" if need_x else " when `output` is not given"),
                   TypeError)
    x = A.dev(x, "x", op)
    output = A.dev(output, "output", op)
    ref_name, ref = ("x", x) if x is not None else ("output", output)
    _check_same_shape(op, _Shape(g), "grad_output", tuple(ref.shape), ref_name)
    if x is not None and output is not None:
        _check_same_shape(op, _Shape(output), "output", tuple(x.shape), "x")
    return g, x, output, A.dtype_of(op, grad_output=g, x=x, output=output)


def _act_backward(op: str, grad_output, x, code: int, slope: float = 0.0, output=None,
                  out_code: int = -1):
    how = A.caller_kind(grad_output, x, output)
    g, x, output, dtype = _grad_arrays(op, grad_output, x, output, need_x=out_code < 0)
    src, code = (x, code) if output is None else (output, out_code)
    w = A.table(np.full(1, slope), dtype)
    out = _elementwise(dtype, _flat(g, dtype, op, "grad_output"), _flat(src, dtype, op, "x"),
                       w, K.GRAD + code, g.size, tuple(g.shape))
    return A.wrap(out, how)


def relu(x):
    return _act_forward("relu", x, K.RELU)


def relu_backward(grad_output, x):
    return _act_backward("relu_backward", grad_output, x, K.RELU)


def leaky_relu(x, negative_slope=0.01):
    op = "leaky_relu"
    return _act_forward(op, x, K.LEAKY, _check_slope(op, negative_slope))


def leaky_relu_backward(grad_output, x, negative_slope=0.01):
    op = "leaky_relu_backward"
    return _act_backward(op, grad_output, x, K.LEAKY, _check_slope(op, negative_slope))


def abs_rectify(x):
    return _act_forward("abs_rectify", x, K.ABS)


def abs_rectify_backward(grad_output, x):
    return _act_backward("abs_rectify_backward", grad_output, x, K.ABS)


def sigmoid(x):
    return _act_forward("sigmoid", x, K.SIGMOID)


def sigmoid_backward(grad_output, x, *, output=None):
    return _act_backward("sigmoid_backward", grad_output, x, K.SIGMOID, output=output,
                         out_code=K.SIGMOID_OUT)


def tanh(x):
    return _act_forward("tanh", x, K.TANH)


def tanh_backward(grad_output, x, *, output=None):
    return _act_backward("tanh_backward", grad_output, x, K.TANH, output=output,
                         out_code=K.TANH_OUT)


def _prelu_rows(x, weight) -> int:
    if weight.shape[0] == 1:
        return max(x.size, 1)
    return math.prod(x.shape[2:])


def prelu(x, weight):
    op = "prelu"
    how = A.caller_kind(x, weight)
    x, weight = _devs(op, x=x, weight=weight)
    _check_prelu(op, _Shape2(x), _Shape(weight))
    dtype = A.dtype_of(op, x=x, weight=weight)
    flat = _flat(x, dtype, op, "x")
    w = _flat(weight, dtype, op, "weight")
    return A.wrap(_elementwise(dtype, flat, flat, w, K.LEAKY, _prelu_rows(x, weight),
                               tuple(x.shape)), how)


def prelu_backward(grad_output, x, weight):
    op = "prelu_backward"
    how = A.caller_kind(grad_output, x, weight)
    x, weight = _devs(op, x=x, weight=weight)
    _check_prelu(op, _Shape2(x), _Shape(weight))
    g, x, _, _ = _grad_arrays(op, grad_output, x)
    dtype = A.dtype_of(op, grad_output=g, x=x, weight=weight)
    gw = A.empty((weight.shape[0],), dtype)
    if not x.size:
        _fill_zero(gw)
        return A.wrap((A.empty(tuple(x.shape), dtype), gw), how)
    gf, xf, wf = (_flat(g, dtype, op, "grad_output"), _flat(x, dtype, op, "x"),
                  _flat(weight, dtype, op, "weight"))
    nb = _prelu_rows(x, weight)
    gx = _elementwise(dtype, gf, xf, wf, K.GRAD + K.LEAKY, nb, tuple(x.shape))
    t = A.reduce_threads()
    K.get("prelu_wgrad", dtype)[weight.shape[0], t, 0, t * np.dtype(dtype).itemsize](
        gf, xf, gw, nb)
    return A.wrap((gx, gw.reshape(tuple(weight.shape))), how)


class _Shape2(_Shape):
    def __init__(self, a):
        super().__init__(a)
        self.ndim = len(self.shape)


def _softmax_run(shape, ax, dtype, log, mode, g, src):
    shape3 = _view3(tuple(shape), ax)
    src3 = A.operand(src, dtype).reshape(shape3)
    g3 = src3 if g is None else A.operand(g, dtype).reshape(shape3)
    out = A.empty(shape3, dtype)
    A.launch1("softmax", dtype, shape3[0] * shape3[2] if out.size else 0, g3, src3, out,
              int(log), mode)
    return out.reshape(tuple(shape))


def _softmax(op, x, axis, log):
    how = A.caller_kind(x)
    x = A.dev(x, "x", op)
    ax = _check_axis(op, axis, x.ndim)
    return A.wrap(_softmax_run(x.shape, ax, A.dtype_of(op, x=x), log, K.FORWARD, None, x),
                  how)


def _softmax_backward(op, grad_output, x, axis, output, log):
    how = A.caller_kind(grad_output, x, output)
    g, x, output, dtype = _grad_arrays(op, grad_output, x, output, need_x=False)
    ax = _check_axis(op, axis, g.ndim)
    if output is None:
        return A.wrap(_softmax_run(g.shape, ax, dtype, log, K.BACKWARD_X, g, x), how)
    return A.wrap(_softmax_run(g.shape, ax, dtype, log, K.BACKWARD_Y, g, output), how)


def softmax(x, axis=1):
    return _softmax("softmax", x, axis, False)


def softmax_backward(grad_output, x, axis=1, *, output=None):
    return _softmax_backward("softmax_backward", grad_output, x, axis, output, False)


def log_softmax(x, axis=1):
    return _softmax("log_softmax", x, axis, True)


def log_softmax_backward(grad_output, x, axis=1, *, output=None):
    return _softmax_backward("log_softmax_backward", grad_output, x, axis, output, True)
