"""Winograd's minimal filtering along x: :func:`gridconv._cpu.gather.gather_direct` for
three consecutive x taps with fewer multiplications.

``F(mt, 3)`` computes ``mt`` outputs of a 3-tap row filter from the ``mt + 2`` inputs
they read with ``mt + 2`` products instead of ``3*mt`` (Lavin and Gray, "Fast Algorithms
for Convolutional Neural Networks", 2016):

    y = AT [(G g) * (BT d)]

``d`` the inputs of one tile of ``mt`` outputs, ``g`` the three taps. Applied along x
only, the products of one phase ``j`` (row ``j`` of ``BT d`` times row ``j`` of
``G g``) summed over source channels and the z and y taps are one convolution without
x taps: ``nph = mt + 2`` such convolutions, each over rows of ``ceil(W/mt)`` tiles, do
the work of one with 3 x taps over rows of ``W``: 2/3 of the multiply-adds for
``F(2, 3)`` and 1/2 for ``F(4, 3)``.

The kernel is the direct kernel's, phase by phase: the slab fill transforms each padded
source row into its ``nph`` phase rows (``BT d``), the register blocks run the phases'
reductions with the transformed weights (``G g``, packed by the driver) into the
accumulator, and the store pass applies ``AT``, interleaving the ``mt`` outputs of each
tile. The reduction is unchanged, so it keeps its chunks and channel blocks.

Exactness. The transforms add and subtract inputs, so an infinite input would meet
another of the opposite sign and give NaN where the direct sum gives an infinity, and
inputs near the largest float could overflow. ``AT`` cancels an input's products in the
outputs of its tile that do not read it, but only for finite values: a NaN would reach
them too. So the fill sums the transformed values as it goes; a non-finite sum flags
the call, and the driver runs the direct kernel instead (as it does for non-finite
weights). Rounding: F(4, 3)'s constants (up to 8 and 1/24) make its float32 results
differ from the exact sums by about ten times the direct kernel's error (about 1e-6 of
the largest output instead of 1e-7). The driver routes float32 here only (the kernel
itself takes either dtype).
"""

from __future__ import annotations

import llvmlite.ir as ir
import numpy as np
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from .gather import (
    JIT,
    _lookup,
    _lookups,
    _padded_row,
    _reduce,
    _region,
    _source_row,
    _tap_range,
    _task_grid,
    _tile_bounds,
)
from .micro import I32, I64, _data, _Vec, claim
from .options import PARALLEL

# G per output count mt: the phases' weights from the three taps (rows: phases).
FILTER_TRANSFORM = {
    2: np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]]),
    4: np.array([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
                 [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]]),
}


# BT and AT per mt: a tile's phases from its mt + 2 inputs, its mt outputs from the
# phases' sums.
INPUT_TRANSFORM = {
    2: ((1, 0, -1, 0), (0, 1, 1, 0), (0, -1, 1, 0), (0, 1, 0, -1)),
    4: ((4, 0, -5, 0, 1, 0), (0, -4, -4, 1, 1, 0), (0, 4, -4, -1, 1, 0), (0, -2, -1, 2, 1, 0),
        (0, 2, -1, -2, 1, 0), (0, 4, 0, -5, 0, 1)),
}
OUTPUT_TRANSFORM = {
    2: ((1, 1, 1, 0), (0, 1, -1, -1)),
    4: ((1, 1, 1, 1, 1, 0), (0, 1, -1, 2, -2, 0), (0, 1, 1, 4, 4, 0), (0, 1, -1, 8, -8, 1)),
}


def transform_weights(taps: np.ndarray, mt: int) -> np.ndarray:
    """(..., 3) taps in offset order -> (nph, ...) phase weights ``G g`` (computed in
    float64, returned in the taps' dtype)."""
    g = FILTER_TRANSFORM[mt]
    u = np.tensordot(g, taps.astype(np.float64), axes=(1, taps.ndim - 1))
    return u.astype(taps.dtype)


def _combine(builder, vec, terms, coeffs):
    """``sum_k coeffs[k] * terms[k]`` over the nonzero small-integer coefficients."""
    total = None
    for c, t in zip(coeffs, terms, strict=True):
        if c == 0:
            continue
        mag = abs(c)
        v = t if mag == 1 else builder.fmul(vec.splat(ir.Constant(vec.fty, float(mag))), t)
        if total is None:
            total = v if c > 0 else builder.fneg(v)
        else:
            total = builder.fadd(total, v) if c > 0 else builder.fsub(total, v)
    return total


def _strided(builder, vec, ptr, offset, step):
    """A vector of ``ptr[offset + step*i]``, ``i < lanes``: ``step`` (1, 2 or 4)
    consecutive vectors loaded and their lanes picked by shuffles."""
    lanes = vec.lanes
    loads = [vec.load(ptr, builder.add(offset, ir.Constant(I64, v * lanes)))
             for v in range(step)]
    if step == 1:
        return loads[0]

    def mask(idx):
        return ir.Constant(ir.VectorType(I32, lanes), [ir.Constant(I32, i) for i in idx])

    # each pair of vectors holds 2*lanes/step of the wanted elements
    per = 2 * lanes // step
    halves = [builder.shuffle_vector(loads[p], loads[p + 1], mask(
        [step * i for i in range(per)] + [0] * (lanes - per))) for p in range(0, step, 2)]
    if len(halves) == 1:
        return halves[0]
    return builder.shuffle_vector(halves[0], halves[1], mask(
        list(range(per)) + [lanes + i for i in range(per)]))


def _zip(builder, vec, a, b):
    """The lanes of ``a`` and ``b`` interleaved: two vectors, ``a0 b0 a1 b1 ...``."""
    lanes = vec.lanes
    half = lanes // 2

    def mask(lo):
        idx = []
        for i in range(lo, lo + half):
            idx += [i, lanes + i]
        return ir.Constant(ir.VectorType(I32, lanes), [ir.Constant(I32, i) for i in idx])

    return builder.shuffle_vector(a, b, mask(0)), builder.shuffle_vector(a, b, mask(half))


def _make_input(mt: int):
    """An intrinsic ``input(slab, d, pstride, buf, nblk)``: ``BT d`` of the tiles of a
    padded row ``buf`` (``mt*t + k`` their inputs) for ``nblk`` blocks of ``lanes``
    tiles, phase ``j`` of tile ``t`` to ``slab[d + j*pstride + t]``; returns the sum of
    the values written (finite when they all are). Whole vectors only: it writes up to
    ``lanes - 1`` tiles past the row (the caller writes them again or never reads them),
    and reads ``buf`` up to ``mt*(nblk + 1)*lanes + 2``. Written as vectors (the loop
    Numba compiles from the same arithmetic runs scalar on rows of 16 tiles: its vector
    body takes 32 at a time)."""
    bt = INPUT_TRANSFORM[mt]

    @intrinsic
    def transform(typingctx, slab, d, pstride, buf, nblk):
        sig = slab.dtype(slab, d, pstride, buf, nblk)

        def codegen(context, builder, signature, args):
            slab_v, d_v, ps_v, buf_v, nblk_v = args
            at = signature.args
            vec = _Vec(context, builder, at[0].dtype)
            lanes = vec.lanes
            sp = builder.gep(_data(context, builder, at[0], slab_v), [d_v])
            bp = _data(context, builder, at[3], buf_v)
            chk = cgutils.alloca_once(builder, vec.vty)
            builder.store(ir.Constant(vec.vty, None), chk)
            with cgutils.for_range(builder, nblk_v) as loop:
                t0 = builder.mul(loop.index, ir.Constant(I64, lanes))
                first = builder.mul(t0, ir.Constant(I64, mt))
                ins = [_strided(builder, vec, bp, builder.add(first, ir.Constant(I64, k)), mt)
                       for k in range(mt + 2)]
                total = builder.load(chk)
                for j, row in enumerate(bt):
                    v = _combine(builder, vec, ins, row)
                    vec.store(v, sp, builder.add(builder.mul(ps_v, ir.Constant(I64, j)), t0))
                    total = builder.fadd(total, v)
                builder.store(total, chk)
            total = builder.load(chk)
            out = builder.extract_element(total, ir.Constant(I32, 0))
            for i in range(1, lanes):
                out = builder.fadd(out, builder.extract_element(total, ir.Constant(I32, i)))
            return out

        return sig, codegen

    return transform


def _make_output(mt: int):
    """An intrinsic ``output(dst, doff, acc, a0, pstride, nblk)``: ``AT m`` of ``nblk``
    blocks of ``lanes`` tiles (phase ``j`` of tile ``t`` at ``acc[a0 + j*pstride + t]``),
    the ``mt`` outputs of tile ``t`` to ``dst[doff + mt*t:]``, interleaved by
    shuffles."""
    atr = OUTPUT_TRANSFORM[mt]

    @intrinsic
    def transform(typingctx, dst, doff, acc, a0, pstride, nblk):
        sig = types.void(dst, doff, acc, a0, pstride, nblk)

        def codegen(context, builder, signature, args):
            dst_v, doff_v, acc_v, a0_v, ps_v, nblk_v = args
            at = signature.args
            vec = _Vec(context, builder, at[0].dtype)
            lanes = vec.lanes
            dp = builder.gep(_data(context, builder, at[0], dst_v), [doff_v])
            ap = builder.gep(_data(context, builder, at[2], acc_v), [a0_v])
            with cgutils.for_range(builder, nblk_v) as loop:
                t0 = builder.mul(loop.index, ir.Constant(I64, lanes))
                ms = [vec.load(ap, builder.add(builder.mul(ps_v, ir.Constant(I64, j)), t0))
                      for j in range(len(atr[0]))]
                ys = [_combine(builder, vec, ms, row) for row in atr]
                if mt == 2:
                    outs = list(_zip(builder, vec, ys[0], ys[1]))
                else:
                    p_lo, p_hi = _zip(builder, vec, ys[0], ys[2])
                    q_lo, q_hi = _zip(builder, vec, ys[1], ys[3])
                    outs = [*_zip(builder, vec, p_lo, q_lo), *_zip(builder, vec, p_hi, q_hi)]
                base = builder.mul(t0, ir.Constant(I64, mt))
                for v, o in enumerate(outs):
                    vec.store(o, dp, builder.add(base, ir.Constant(I64, v * lanes)))
            return context.get_dummy_value()

        return sig, codegen

    return transform


_IN2, _IN4 = _make_input(2), _make_input(4)
_OUT2, _OUT4 = _make_output(2), _make_output(4)


@njit(inline="always")
def _output_tail(dflat, drow, acc, a0, pstride, t1, ncols, mt):
    """``AT m`` of the tiles from ``t1`` (the last, after the vector blocks of the
    intrinsics), the outputs up to ``ncols`` only."""
    two = dflat.dtype.type(2)
    four = dflat.dtype.type(4)
    eight = dflat.dtype.type(8)
    for t in range(t1, (ncols + mt - 1) // mt):
        m0 = acc[a0 + t]
        m1 = acc[a0 + pstride + t]
        m2 = acc[a0 + 2 * pstride + t]
        m3 = acc[a0 + 3 * pstride + t]
        if mt == 2:
            ys = ((m0 + m1) + m2, (m1 - m2) - m3, m0, m0)
        else:
            m4 = acc[a0 + 4 * pstride + t]
            m5 = acc[a0 + 5 * pstride + t]
            s12 = m1 + m2
            d12 = m1 - m2
            s34 = m3 + m4
            d34 = m3 - m4
            ys = ((m0 + s12) + s34, d12 + two * d34, s12 + four * s34,
                  (d12 + eight * d34) + m5)
        for i in range(min(mt, ncols - mt * t)):
            dflat[drow + mt * t + i] = ys[i]


@njit(**JIT)
def _fill_phases(src, n, c0, cs, mz, my0, my1, mx0, nt, mt, ss, offz, offy, offx, mapz,
                 mapy, mapx, qlo, slab, plane, pstride, idx, buf):
    """The phase rows of a tile: for channel ``c``, slab row ``(zz, yy)`` and phase ``j``,
    the ``nt`` tiles' transformed inputs at ``slab[j*pstride + c*plane + (zz*ys +
    yy)*nt:]``, from the padded source row (any padding mode, through the maps) of
    ``mt*nt + 2`` elements from ``mx0 + offx[0]``. Returns (ys, the sum of every phase
    value: finite when they all are)."""
    zero = src.dtype.type(0)
    lanes = 32 // src.itemsize
    iy_size, ix_size = src.shape[3], src.shape[4]
    # the region of whole Winograd tiles: mt*nt + 2 columns
    z0, y0, x0, zs, ys, xs, xa, xb = _region(ix_size, mz, my0, my1, mx0, mx0 + mt * nt, ss,
                                             offz, offy, offx)
    _lookups(idx, mapy, mapx, qlo, y0, ys, x0, xs, xa, xb, iy_size)
    nph = mt + 2
    nblk = (nt + lanes - 1) // lanes
    flat = src.reshape(src.size)  # C-contiguous: a view
    chk = zero
    for c in range(cs):
        for zz in range(zs):
            iz = _lookup(mapz, qlo[0], z0 + zz)
            for yy in range(ys):
                iy = idx[yy]
                d = c * plane + (zz * ys + yy) * nt
                r = _source_row(src, n, c0 + c, iz, iy)
                if r < 0:
                    for j in range(nph):
                        for t in range(nt):
                            slab[d + j * pstride + t] = zero
                    continue
                _padded_row(buf, 0, flat, r, x0, xs, xa, xb, idx, ys)
                if mt == 2:
                    chk += _IN2(slab, d, pstride, buf, nblk)
                else:
                    chk += _IN4(slab, d, pstride, buf, nblk)
    return ys, chk


@njit(parallel=PARALLEL, **JIT)
def gather_winograd(src, wpk, bias, dst, m, d0, ds, ss, offz, offy, offx, mapz, mapy,
                    mapx, qlo, rows, cols, chunk, nthreads):
    """``dst`` as :func:`gridconv._cpu.gather.gather_direct` computes it, for three
    consecutive x taps at unit source and destination steps along x and unit source
    steps along y, by ``F(mt, 3)`` along x (see the module docstring), ``mt = nph - 2``.

    wpk : (nph, G, od * nunit) the phases' transformed weights of the ``nunit = cs*Tz*Ty``
    units (z tap, y tap, channel), packed per block of 6 destination channels as for
    ``gather_direct``; ss : the source steps (1 along y and x); rows x cols : the tile in output
    positions (a tile's last Winograd tile may be partial); chunk : units per chunk of
    the reduction. Other arguments as ``gather_direct``.

    Returns one value per thread: nonzero when a transformed input was not finite (the
    caller then runs the direct kernel; ``dst`` holds garbage).
    """
    nph = wpk.shape[0]
    mt = nph - 2
    ng = wpk.shape[1]
    od = dst.shape[1] // ng
    cs = src.shape[1] // ng
    nsamp = src.shape[0]
    nyb, nxb, ntask, nth = _task_grid(nsamp, ng, m, rows, cols, nthreads)
    tz, ty = offz.shape[0], offy.shape[0]
    zs = offz[tz - 1] - offz[0] + 1
    ys_max = rows - 1 + offy[ty - 1] - offy[0] + 1
    nt_max = (cols + mt - 1) // mt
    plane = zs * ys_max * nt_max
    lanes = 32 // src.itemsize
    slack = 8 * lanes
    # phase j of channel c at j*pstride + c*plane: the blocks read up to ``slack`` past
    # a phase's last plane
    pstride = cs * plane + slack
    nunit = cs * tz * ty
    per_a = ty * cs
    # the sums of phase 1 start at the bias (every output takes it with weight 1), the
    # others at zero
    zeros = np.zeros(ng * od, src.dtype)
    start = bias if bias.shape[0] > 0 else zeros
    ld = rows * nt_max + slack  # accumulator rows
    nz, ny, nx_all = dst.shape[2], dst.shape[3], dst.shape[4]
    dflat = dst.reshape(dst.size)  # C-contiguous: a view
    bad = np.zeros(nth, np.int64)
    counter = np.zeros(1, np.int64)  # the next tile (see micro.claim)
    for th in prange(nth):
        # zeroed once: the blocks read up to ``slack`` past the last plane
        slab = np.zeros(nph * pstride, src.dtype)
        acc = np.empty(nph * od * ld, src.dtype)
        uoff = np.empty(nunit, np.int64)
        idx = np.empty(ys_max + mt * nt_max + 2, np.int64)
        # zeroed once: the vectors of the transform read past the row (see _make_input)
        buf = np.zeros(mt * (nt_max + 2 * lanes) + 2, src.dtype)
        zidx = np.empty(zs, np.int64)
        chk = src.dtype.type(0)
        for _ in range(ntask):
            task = claim(counter)
            if task >= ntask:
                break
            n, g, mz, my0, my1, mx0, mx1 = _tile_bounds(
                task, ng, m[0], nyb, nxb, m[1], m[2], rows, cols)
            ncols = mx1 - mx0
            nrows = my1 - my0
            nt = (ncols + mt - 1) // mt
            ys, c = _fill_phases(src, n, g * cs, cs, mz, my0, my1, mx0, nt, mt, ss, offz,
                                 offy, offx, mapz, mapy, mapx, qlo, slab, plane, pstride,
                                 idx, buf)
            chk += c
            for zz in range(zs):
                iz = _lookup(mapz, qlo[0], ss[0] * mz + offz[0] + zz)
                zidx[zz] = iz if iz < src.shape[2] else -1
            a_lo, a_hi = _tap_range(zidx, 0, offz)
            for a in range(tz):
                for b in range(ty):
                    for cc in range(cs):
                        uoff[(a * ty + b) * cs + cc] = cc * plane + (
                            (offz[a] - offz[0]) * ys + offy[b] - offy[0]) * nt
            if a_lo >= a_hi:
                useg = (0, per_a, 0, 0)
            else:
                useg = (a_lo * per_a, per_a, 1, (a_hi - a_lo) * per_a)
            # the tile's rows are one span: slab rows and accumulator rows are both nt
            # tiles long, and the y taps step by whole rows
            span = nrows * nt
            for j in range(nph):
                base = j * od * ld
                _reduce(od, acc, base, ld, acc, base, ld, slab, j * pstride, uoff,
                        wpk[j, g], nunit, useg, chunk, 0, span, start if j == 1 else zeros,
                        g * od, lanes)
            dz = d0[0] + ds[0] * mz
            # Whole destination rows of whole tiles are one span, as the accumulator rows
            # are: one pass per channel (rows of 8-16 outputs would take no vector block).
            one = ncols == nx_all and ncols % mt == 0 and d0[2] == 0 and ds[1] == 1
            nrun = 1 if one else nrows
            rcols = nrows * ncols if one else ncols
            nfull = rcols // (mt * lanes)  # blocks of lanes whole tiles
            for o in range(od):
                for yr in range(nrun):
                    drow = (((n * dst.shape[1] + g * od + o) * nz + dz) * ny + d0[1]
                            + ds[1] * (my0 + yr)) * nx_all + d0[2] + mx0
                    a0 = o * ld + yr * nt
                    if mt == 2:
                        _OUT2(dflat, drow, acc, a0, od * ld, nfull)
                    else:
                        _OUT4(dflat, drow, acc, a0, od * ld, nfull)
                    _output_tail(dflat, drow, acc, a0, od * ld, nfull * lanes, rcols, mt)
        if chk - chk != 0:
            bad[th] = 1
    return bad
