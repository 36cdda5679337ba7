"""The CUDA kernels of every operation, built per dtype and compiled lazily.

Each kernel is a plain Python function made by a factory that closes over the dtype's
constants (``ZERO``, ``ONE``, ... as NumPy scalars of that dtype, which Numba freezes as
constants of the same type), so a float32 kernel holds no float64 literal and does its
arithmetic in float32; :func:`ptx` compiles any of them for a compute capability without a
GPU, which is how the tests check the float32 PTX for ``.f64`` instructions.

Every kernel has one explicit signature (:data:`SPECS`, letters explained in
:func:`signature`): the drivers in :mod:`gridconv._cuda.ops` pass C-contiguous arrays of
the computation dtype and int64 parameter arrays, so one compiled specialisation per
kernel and dtype serves every call. The index and padding arithmetic they share (flat
index to coordinates, bounds, staging a tile with its halo, the windows that cover an
element, stride-phase sub-grids) lives in the device functions below, inlined into the
kernels on a GPU.

The kernels
-----------
``gather`` (forward conv, its input gradient, conv_transpose, and tiled conv forward and
input gradient): the gather of :mod:`gridconv._geometry` with arithmetic tap progressions
per axis and weights periodic over the positions (``period`` stacks per axis; 1 for a
plain convolution). A block computes a tile of ``BY x (BX*RX)`` destination positions of
one ``(n, z)`` plane and one phase of the periods (so its weight stack is fixed) for
``COT`` destination channels; per chunk of ``CC`` source channels and per tap along z it
stages the source tile with its halo and the chunk's weights in shared memory (coalesced
loads along x), then every thread accumulates its ``COT x RX`` outputs in registers from
shared memory (the weights are read as warp-wide broadcasts). No atomics, one writer per
output: deterministic.

``local`` (unshared conv forward and input gradient; tiled conv with many stacks): the
same gather with one weight stack per position, read from a prepacked layout
``wp[s, k, d, stack]`` (:func:`make_pack`) in which neighbouring threads (neighbouring
positions) read neighbouring addresses. A block stages the source tile with its halo for
``RN`` samples and a chunk of source channels; each thread computes ``COT`` destination
channels x ``RN`` samples at its position, so each weight loaded feeds ``RN``
multiply-adds and each staged value ``COT``.

``wgrad`` (every weight gradient: conv, tiled, unshared): an implicit GEMM
``gw[stack, d, (s, k)] = sum_p gy[d, p] * patch[(s, k), p]`` over the positions
``p = (n, z, y, x)`` of the stack's phase; a block owns a ``4*BY x 4*BX`` tile of the result
and one slice of the positions (split-K), staging ``KP`` positions of both operands per
step in shared memory; each thread holds 4 x 4 accumulators. The slices are summed in a
fixed order by ``sum_split``: deterministic, without atomics.

``pool_fwd`` / ``pool_bwd``: a block covers a tile of ``BY x (BX*RX)`` positions of one
``(n, c, z)`` plane, staging per window tap along z the input tile with its halo
(forward) or the tile of output gradients whose windows cover the block (backward, a
gather: each input element sums the windows that reach it, max pooling only those whose
winner it is). Each thread computes ``RX`` outputs.

The others are one thread per element with grid-stride loops (padding, casts, packing,
activations) or one block per reduction with a fixed-order tree in shared memory (bias
gradients, global pooling, prelu's slope gradient).
"""

from __future__ import annotations

import math
import threading

import numpy as np
from numba import cuda  # a module global: the simulator swaps it in the kernels

# Register blocking of the gather and pooling kernels: outputs along x per thread.
RX = 2
# Accumulators per thread of the weight-gradient GEMM, per side.
RW = 4
# Positions staged per step of the weight-gradient GEMM.
KP = 16

# Modes of pool_fwd / pool_bwd
MAX, AVG, LP1, LP2, LPP, MAXIDX = 0, 1, 2, 3, 4, 5
# Elementwise codes: as gridconv._cpu.activation
RELU, LEAKY, ABS, SIGMOID, TANH = 0, 1, 2, 3, 4
SIGMOID_OUT, TANH_OUT = 5, 6
GRAD = 16
FORWARD, BACKWARD_X, BACKWARD_Y = 0, 1, 2

# Columns of a gather's ``geo`` table (one row per axis z, y, x): positions, destination
# start and step, source step, taps, first source offset, source step between taps, first
# kernel index, kernel index step, weight period, period shift (see make_gather).
GEO_COLS = 11


def _simulated() -> bool:
    from numba import config

    return bool(config.ENABLE_CUDASIM)


def _consts(dtype):
    t = np.dtype(dtype).type
    return t, t(0), t(1), t(2), t(4), t(-np.inf)


# ---------------------------------------------------------------------- device functions


def _device(fn):
    """A device function, inlined into its callers at Numba's IR level (``inline=
    "always"``): generic over the callers' types (the helpers stay dtype-free) and, unlike
    a separately compiled device function, compiled by ``compile_ptx`` without a GPU (a
    device function of its own asks the current device for its compute capability). The
    simulator's ``jit`` runs it as Python."""
    if _simulated():
        return cuda.jit(device=True)(fn)
    return cuda.jit(device=True, inline="always")(fn)


@_device
def unravel5(u5_i, u5_nc, u5_zs, u5_ys, u5_xs):
    """``(n, c, z, y, x)`` of flat index ``i`` in a C-ordered ``(N, nc, zs, ys, xs)`` grid."""
    u5_x = u5_i % u5_xs
    u5_r = u5_i // u5_xs
    u5_y = u5_r % u5_ys
    u5_r //= u5_ys
    u5_z = u5_r % u5_zs
    u5_r //= u5_zs
    return u5_r // u5_nc, u5_r % u5_nc, u5_z, u5_y, u5_x


@_device
def inside(in_z, in_y, in_x, in_zs, in_ys, in_xs):
    return (in_z >= 0 and in_z < in_zs and in_y >= 0 and in_y < in_ys and in_x >= 0
            and in_x < in_xs)


@_device
def load(ld_a, ld_n, ld_c, ld_z, ld_y, ld_x, ld_fill):
    """``a[n, c, z, y, x]``, or ``fill`` outside the grid (zero padding, -inf for max)."""
    if (inside(ld_z, ld_y, ld_x, ld_a.shape[2], ld_a.shape[3], ld_a.shape[4])
            and ld_n < ld_a.shape[0]):
        return ld_a[ld_n, ld_c, ld_z, ld_y, ld_x]
    return ld_fill


@_device
def stage(sg_sm, sg_base, sg_src, sg_n, sg_c0, sg_nch, sg_z, sg_y0, sg_x0, sg_ey, sg_ex,
          sg_tid, sg_nthr, sg_fill):
    """Stage the ``ey x ex`` window at ``(y0, x0)`` of plane ``z`` of channels
    ``c0 .. c0+nch-1`` of sample ``n`` into ``sm[base:]``, ``fill`` outside the grid (and
    for a sample ``n`` past the batch). Consecutive threads read consecutive x: coalesced."""
    sg_plane = sg_ey * sg_ex
    for sg_i in range(sg_tid, sg_nch * sg_plane, sg_nthr):
        sg_cc = sg_i // sg_plane
        sg_r = sg_i - sg_cc * sg_plane
        sg_row = sg_r // sg_ex
        sg_sm[sg_base + sg_i] = load(sg_src, sg_n, sg_c0 + sg_cc, sg_z, sg_y0 + sg_row,
                                     sg_x0 + sg_r - sg_row * sg_ex, sg_fill)


@_device
def block_threads():
    """``(lx, ly, bx, by, tid, nthr)``: the thread's x and y in its 2-D block, the block's
    sizes, the flat thread index and the thread count."""
    bt_bx = cuda.blockDim.x
    bt_lx = cuda.threadIdx.x
    bt_ly = cuda.threadIdx.y
    return bt_lx, bt_ly, bt_bx, cuda.blockDim.y, bt_ly * bt_bx + bt_lx, bt_bx * cuda.blockDim.y


@_device
def phase_size(ps_m, ps_phase, ps_period):
    """How many of ``phase, phase + period, ...`` are below ``m`` (a stride phase's or a
    weight period's sub-grid)."""
    return (ps_m - ps_phase + ps_period - 1) // ps_period


@_device
def block_tile(bt_b, bt_ntx, bt_nty):
    """``(tile_x, tile_y, rest)`` of a block index whose fastest parts are the tiles."""
    return bt_b % bt_ntx, (bt_b // bt_ntx) % bt_nty, bt_b // (bt_ntx * bt_nty)


@_device
def covering_window(cw_i, cw_pad, cw_tap, cw_dil, cw_stride, cw_count):
    """The window whose tap ``tap`` reads element ``i`` (``window*stride - pad + tap*dil
    == i``), or -1 when no window in ``0 .. count-1`` does."""
    cw_q = cw_i + cw_pad - cw_tap * cw_dil
    if cw_q < 0 or cw_q % cw_stride != 0 or cw_q // cw_stride >= cw_count:
        return -1
    return cw_q // cw_stride


@_device
def window_taps(wt_m, wt_stride, wt_dil, wt_pad, wt_k, wt_size):
    """``(lo, hi)``: the taps of window ``m`` that fall inside ``0 .. size-1``."""
    wt_start = wt_m * wt_stride - wt_pad
    wt_lo = 0
    if wt_start < 0:
        wt_lo = (-wt_start + wt_dil - 1) // wt_dil
    wt_hi = (wt_size - 1 - wt_start) // wt_dil + 1
    if wt_hi > wt_k:
        wt_hi = wt_k
    return wt_lo, wt_hi


# ----------------------------------------------------------------- the convolution gather


def make_gather(dtype, cot: int):
    """Tiled direct gather; ``cot`` destination channels per thread (see module doc).

    ``geo`` (3, 11) per axis z, y, x: ``m, d0, ds, ss, T, off0, tstep, k0, kstep, per,
    shift`` (positions, destination start and step, source step, taps, first source
    offset, source step between taps, first kernel index, kernel index step, weight
    period, shift). Position ``m`` of an axis reads the source at ``ss*m + off0 +
    t*tstep`` for its taps ``t`` and uses, on that axis, weight stack ``m mod per``, or
    ``(m + off0 + t*tstep) mod per`` with ``shift`` (the input gradient of a tiled conv,
    where ``ss = 1`` and the source coordinate is the forward output's position).
    ``prm``: ``EY, EX, CC, ntx, nty, dtiles, G, D, S, has_bias, swap``. ``w`` (P, ...) is
    read as ``w[stack, g*D + d, s, k]`` (a conv weight) or, with ``swap``,
    ``w[stack, g*S + s, d, k]`` (the adjoint's).
    """
    from numba import from_dtype

    nbt = from_dtype(np.dtype(dtype))
    _, ZERO, _, _, _, _ = _consts(dtype)
    COT = cot

    def gather(src, w, bias, dst, geo, prm):
        EY = prm[0]
        EX = prm[1]
        CC = prm[2]
        ntx = prm[3]
        nty = prm[4]
        dtiles = prm[5]
        D = prm[7]
        S = prm[8]
        has_bias = prm[9]
        swap = prm[10]
        ssz = geo[0, 3]
        tzn = geo[0, 4]
        tyn = geo[1, 4]
        txn = geo[2, 4]
        tstz = geo[0, 6]
        tsty = geo[1, 6]
        tstx = geo[2, 6]
        perz = geo[0, 9]
        pery = geo[1, 9]
        perx = geo[2, 9]
        sm = cuda.shared.array(0, nbt)
        acc = cuda.local.array((COT, RX), nbt)
        xv = cuda.local.array(RX, nbt)
        lx, ly, bx, by, tid, nthr = block_threads()
        tile_x, tile_y, b = block_tile(cuda.blockIdx.x, ntx, nty)
        # the block's phase of the weight periods (one stack per tap); a period longer
        # than the axis has empty phases, which get no blocks
        phx = min(perx, geo[2, 0])
        phy = min(pery, geo[1, 0])
        px = b % phx
        b //= phx
        py = b % phy
        b //= phy
        mz = b % geo[0, 0]
        n = b // geo[0, 0]
        myn = phase_size(geo[1, 0], py, pery)
        mxn = phase_size(geo[2, 0], px, perx)
        my0 = tile_y * by
        mx0 = tile_x * bx * RX
        if my0 >= myn or mx0 >= mxn:  # the whole block (a short phase): before any barrier
            return
        gd = cuda.blockIdx.y
        g = gd // dtiles
        dc0 = (gd - g * dtiles) * COT
        # neighbouring threads are `per` positions apart: source steps ss*per
        esy = geo[1, 3] * pery
        esx = geo[2, 3] * perx
        sy0 = geo[1, 3] * (py + pery * my0) + geo[1, 5]
        sx0 = geo[2, 3] * (px + perx * mx0) + geo[2, 5]
        for co in range(COT):
            for j in range(RX):
                acc[co, j] = ZERO
        nplane = EY * EX
        xs_size = CC * nplane
        wt = tyn * txn
        cwt = COT * wt
        for c0 in range(0, S, CC):
            cn = min(CC, S - c0)
            for tz in range(tzn):
                oz = geo[0, 5] + tz * tstz
                sz = ssz * mz + oz
                if sz < 0 or sz >= src.shape[2]:  # the same for the whole block
                    continue
                kz = geo[0, 7] + tz * geo[0, 8]
                stz = (mz + geo[0, 10] * oz) % perz
                cuda.syncthreads()
                stage(sm, 0, src, n, g * S + c0, cn, sz, sy0, sx0, EY, EX, tid, nthr, ZERO)
                for i in range(tid, cn * cwt, nthr):
                    cc = i // cwt
                    r = i - cc * cwt
                    co = r // wt
                    t = r - co * wt
                    ty = t // txn
                    tx = t - ty * txn
                    d = dc0 + co
                    v = ZERO
                    if d < D:
                        ky = geo[1, 7] + ty * geo[1, 8]
                        kx = geo[2, 7] + tx * geo[2, 8]
                        sty = (py + geo[1, 10] * (geo[1, 5] + ty * tsty)) % pery
                        stx = (px + geo[2, 10] * (geo[2, 5] + tx * tstx)) % perx
                        st = (stz * pery + sty) * perx + stx
                        if swap:
                            v = w[st, g * S + c0 + cc, d, kz, ky, kx]
                        else:
                            v = w[st, g * D + d, c0 + cc, kz, ky, kx]
                    sm[xs_size + i] = v
                cuda.syncthreads()
                for cc in range(cn):
                    base = cc * nplane + ly * esy * EX + lx * esx
                    wb = xs_size + cc * cwt
                    for ty in range(tyn):
                        rowb = base + ty * tsty * EX
                        for tx in range(txn):
                            p = rowb + tx * tstx
                            for j in range(RX):
                                xv[j] = sm[p + j * bx * esx]
                            wo = wb + ty * txn + tx
                            for co in range(COT):
                                wv = sm[wo + co * wt]
                                for j in range(RX):
                                    acc[co, j] += wv * xv[j]
        my = my0 + ly
        if my >= myn:
            return
        dz = geo[0, 1] + geo[0, 2] * mz
        dy = geo[1, 1] + geo[1, 2] * (py + pery * my)
        for co in range(COT):
            d = dc0 + co
            if d < D:
                bv = ZERO
                if has_bias:
                    bv = bias[g * D + d]
                for j in range(RX):
                    mx = mx0 + lx + j * bx
                    if mx < mxn:
                        dst[n, g * D + d, dz, dy,
                            geo[2, 1] + geo[2, 2] * (px + perx * mx)] = acc[co, j] + bv

    return gather


def make_gather_naive(dtype):
    """The gather without shared memory, one thread per output: for tap sets too large
    for a shared-memory tile. Same arguments as :func:`make_gather` (``prm`` entries
    ``G, D, S, has_bias, swap`` used)."""
    _, ZERO, _, _, _, _ = _consts(dtype)

    def gather_naive(src, w, bias, dst, geo, prm):
        D = prm[7]
        S = prm[8]
        has_bias = prm[9]
        swap = prm[10]
        zs = src.shape[2]
        ys = src.shape[3]
        xs = src.shape[4]
        nch = dst.shape[1]
        perz = geo[0, 9]
        pery = geo[1, 9]
        perx = geo[2, 9]
        total = dst.shape[0] * nch * geo[0, 0] * geo[1, 0] * geo[2, 0]
        for i in range(cuda.grid(1), total, cuda.gridsize(1)):
            n, o, mz, my, mx = unravel5(i, nch, geo[0, 0], geo[1, 0], geo[2, 0])
            g = o // D
            d = o - g * D
            acc = ZERO
            for s in range(S):
                for tz in range(geo[0, 4]):
                    oz = geo[0, 5] + tz * geo[0, 6]
                    z = geo[0, 3] * mz + oz
                    if z < 0 or z >= zs:
                        continue
                    kz = geo[0, 7] + tz * geo[0, 8]
                    stz = (mz + geo[0, 10] * oz) % perz
                    for ty in range(geo[1, 4]):
                        oy = geo[1, 5] + ty * geo[1, 6]
                        y = geo[1, 3] * my + oy
                        if y < 0 or y >= ys:
                            continue
                        ky = geo[1, 7] + ty * geo[1, 8]
                        sty = (my + geo[1, 10] * oy) % pery
                        for tx in range(geo[2, 4]):
                            ox = geo[2, 5] + tx * geo[2, 6]
                            x = geo[2, 3] * mx + ox
                            if x < 0 or x >= xs:
                                continue
                            kx = geo[2, 7] + tx * geo[2, 8]
                            st = (stz * pery + sty) * perx + (mx + geo[2, 10] * ox) % perx
                            if swap:
                                wv = w[st, g * S + s, d, kz, ky, kx]
                            else:
                                wv = w[st, o, s, kz, ky, kx]
                            acc += wv * src[n, g * S + s, z, y, x]
            if has_bias:
                acc += bias[o]
            dst[n, o, geo[0, 1] + geo[0, 2] * mz, geo[1, 1] + geo[1, 2] * my,
                geo[2, 1] + geo[2, 2] * mx] = acc

    return gather_naive


def make_local(dtype, cot: int, rn: int):
    """The gather with one weight stack per position (unshared conv, tiled conv with many
    stacks), ``cot`` destination channels x ``rn`` samples per thread, one position each.

    ``geo`` as :func:`make_gather` (``per`` the stacks per axis: the output size for an
    unshared conv). ``wp`` (S, Kz*Ky*Kx, D, P): the prepacked weights (:func:`make_pack`),
    ``wp[s, k, d, stack]``, so that neighbouring positions read neighbouring addresses;
    ``bias`` (D, 1) per channel or (D, P) per channel and stack. ``prm``: ``EY, EX, CC,
    ntx, nty, direct, D, S, has_bias, Ky, Kx``; ``direct``: read the source from global
    memory (no shared tile; for tap sets too large for one).
    """
    from numba import from_dtype

    nbt = from_dtype(np.dtype(dtype))
    _, ZERO, _, _, _, _ = _consts(dtype)
    COT = cot
    RN = rn

    def local(src, wp, bias, dst, geo, prm):
        EY = prm[0]
        EX = prm[1]
        CC = prm[2]
        ntx = prm[3]
        nty = prm[4]
        direct = prm[5]
        D = prm[6]
        S = prm[7]
        kyn = prm[9]
        kxn = prm[10]
        ssy = geo[1, 3]
        ssx = geo[2, 3]
        tsty = geo[1, 6]
        tstx = geo[2, 6]
        perz = geo[0, 9]
        pery = geo[1, 9]
        perx = geo[2, 9]
        sm = cuda.shared.array(0, nbt)
        acc = cuda.local.array((COT, RN), nbt)
        xv = cuda.local.array(RN, nbt)
        lx, ly, bx, by, tid, nthr = block_threads()
        tile_x, tile_y, b = block_tile(cuda.blockIdx.x, ntx, nty)
        mz = b % geo[0, 0]
        n0 = (b // geo[0, 0]) * RN
        dc0 = cuda.blockIdx.y * COT
        my = tile_y * by + ly
        mx = tile_x * bx + lx
        sy0 = ssy * tile_y * by + geo[1, 5]
        sx0 = ssx * tile_x * bx + geo[2, 5]
        for co in range(COT):
            for j in range(RN):
                acc[co, j] = ZERO
        nplane = EY * EX
        cplane = CC * nplane
        for c0 in range(0, S, CC):
            cn = min(CC, S - c0)
            for tz in range(geo[0, 4]):
                oz = geo[0, 5] + tz * geo[0, 6]
                sz = geo[0, 3] * mz + oz
                if sz < 0 or sz >= src.shape[2]:  # the same for the whole block
                    continue
                kz = geo[0, 7] + tz * geo[0, 8]
                stz = (mz + geo[0, 10] * oz) % perz
                if not direct:
                    cuda.syncthreads()
                    for j in range(RN):
                        stage(sm, j * cplane, src, n0 + j, c0, cn, sz, sy0, sx0, EY, EX, tid,
                              nthr, ZERO)
                    cuda.syncthreads()
                for cc in range(cn):
                    for ty in range(geo[1, 4]):
                        oy = geo[1, 5] + ty * tsty
                        ky = geo[1, 7] + ty * geo[1, 8]
                        sty = (my + geo[1, 10] * oy) % pery
                        rowb = cc * nplane + (ly * ssy + ty * tsty) * EX + lx * ssx
                        # the stack along x, stepped per tap (no division in the loop)
                        stx = (mx + geo[2, 10] * geo[2, 5]) % perx
                        stx_step = (geo[2, 10] * tstx) % perx
                        for tx in range(geo[2, 4]):
                            ox = geo[2, 5] + tx * tstx
                            kf = (kz * kyn + ky) * kxn + geo[2, 7] + tx * geo[2, 8]
                            st = (stz * pery + sty) * perx + stx
                            stx += stx_step
                            if stx >= perx:
                                stx -= perx
                            if direct:
                                for j in range(RN):
                                    xv[j] = load(src, n0 + j, c0 + cc, sz, ssy * my + oy,
                                                 ssx * mx + ox, ZERO)
                            else:
                                for j in range(RN):
                                    xv[j] = sm[j * cplane + rowb + tx * tstx]
                            for co in range(COT):
                                # past the last channel: a valid address, result dropped
                                wv = wp[c0 + cc, kf, min(dc0 + co, D - 1), st]
                                for j in range(RN):
                                    acc[co, j] += wv * xv[j]
        if my >= geo[1, 0] or mx >= geo[2, 0]:
            return
        bst = 0
        if bias.shape[1] > 1:
            bst = ((mz % perz) * pery + my % pery) * perx + mx % perx
        dz = geo[0, 1] + geo[0, 2] * mz
        dy = geo[1, 1] + geo[1, 2] * my
        dx = geo[2, 1] + geo[2, 2] * mx
        for co in range(COT):
            d = dc0 + co
            if d < D:
                bv = ZERO
                if prm[8]:
                    bv = bias[d, bst]
                for j in range(RN):
                    if n0 + j < dst.shape[0]:
                        dst[n0 + j, d, dz, dy, dx] = acc[co, j] + bv

    return local


def make_pack(dtype):
    """Prepack locally connected weights: ``w`` (P, C_out, C_in, K) to ``out`` (C_in, K,
    C_out, P) (forward), or with ``swap`` to (C_out, K, C_in, P) (input gradient): the
    layout :func:`make_local` reads, the stack (position) axis last and contiguous."""

    def pack(w, out, swap):
        s_n = out.shape[0]
        k_n = out.shape[1]
        d_n = out.shape[2]
        p_n = out.shape[3]
        total = s_n * k_n * d_n * p_n
        for i in range(cuda.grid(1), total, cuda.gridsize(1)):
            _, s, k, d, p = unravel5(i, s_n, k_n, d_n, p_n)
            if swap:
                out[s, k, d, p] = w[p, s, d, k]
            else:
                out[s, k, d, p] = w[p, d, s, k]

    return pack


def make_wgrad(dtype):
    """Weight-gradient implicit GEMM, one split of the positions per ``blockIdx.z``.

    ``part[split, stack*G*D + g*D + d, col]``, ``col = s*Kz*Ky*Kx + (kz*Ky + ky)*Kx + kx``,
    is the sum over the split's positions of the stack's phase of
    ``gy[n, g*D + d, z, y, x] * src[n, g*S + s, taps]``. ``geo`` is the forward geometry
    (``per`` the weight stacks per axis: 1 for a conv, the tiles for a tiled conv, the
    output size for an unshared one); ``prm``: ``G, D, S, p_chunk, ndt, Kz, Ky, Kx,
    ctiles``; ``blockIdx.x`` is ``stack*ctiles + column tile``.
    """
    from numba import from_dtype

    nbt = from_dtype(np.dtype(dtype))
    _, ZERO, _, _, _, _ = _consts(dtype)

    def wgrad(src, gy, part, geo, prm):
        D = prm[1]
        S = prm[2]
        p_chunk = prm[3]
        ndt = prm[4]
        ky_n = prm[6]
        kx_n = prm[7]
        ctiles = prm[8]
        tzn = geo[0, 4]
        tyn = geo[1, 4]
        txn = geo[2, 4]
        perz = geo[0, 9]
        pery = geo[1, 9]
        perx = geo[2, 9]
        sm = cuda.shared.array(0, nbt)
        acc = cuda.local.array((RW, RW), nbt)
        av = cuda.local.array(RW, nbt)
        bv = cuda.local.array(RW, nbt)
        lx, ly, bx, by, tid, nthr = block_threads()
        td = by * RW
        tc = bx * RW
        rd = td + 1  # row strides of the staged tiles (+1: no bank conflicts)
        rc = tc + 1
        stack = cuda.blockIdx.x // ctiles
        c0 = (cuda.blockIdx.x - stack * ctiles) * tc
        px = stack % perx
        pz = stack // (perx * pery)
        py = (stack // perx) % pery
        mzn = phase_size(geo[0, 0], pz, perz)
        myn = phase_size(geo[1, 0], py, pery)
        mxn = phase_size(geo[2, 0], px, perx)
        g = cuda.blockIdx.y // ndt
        d0 = (cuda.blockIdx.y - g * ndt) * td
        ktot = tzn * tyn * txn
        ncol = S * ktot
        npos = gy.shape[0] * mzn * myn * mxn
        p_lo = cuda.blockIdx.z * p_chunk
        p_hi = min(npos, p_lo + p_chunk)
        for i in range(RW):
            for j in range(RW):
                acc[i, j] = ZERO
        for pb in range(p_lo, p_hi, KP):
            cuda.syncthreads()
            for i in range(tid, KP * td, nthr):
                dd = i // KP
                pp = i - dd * KP
                p = pb + pp
                d = d0 + dd
                v = ZERO
                if p < p_hi and d < D:
                    n, _, mz, my, mx = unravel5(p, 1, mzn, myn, mxn)
                    v = gy[n, g * D + d, pz + perz * mz, py + pery * my, px + perx * mx]
                sm[pp * rd + dd] = v
            for i in range(tid, KP * tc, nthr):
                cc = i // KP
                pp = i - cc * KP
                p = pb + pp
                col = c0 + cc
                v = ZERO
                if p < p_hi and col < ncol:
                    _, s, tz, ty, tx = unravel5(col, S, tzn, tyn, txn)
                    n, _, mz, my, mx = unravel5(p, 1, mzn, myn, mxn)
                    v = load(src, n, g * S + s,
                             geo[0, 3] * (pz + perz * mz) + geo[0, 5] + tz * geo[0, 6],
                             geo[1, 3] * (py + pery * my) + geo[1, 5] + ty * geo[1, 6],
                             geo[2, 3] * (px + perx * mx) + geo[2, 5] + tx * geo[2, 6], ZERO)
                sm[KP * rd + pp * rc + cc] = v
            cuda.syncthreads()
            for pp in range(KP):
                for i in range(RW):
                    av[i] = sm[pp * rd + ly + by * i]
                for j in range(RW):
                    bv[j] = sm[KP * rd + pp * rc + lx + bx * j]
                for i in range(RW):
                    for j in range(RW):
                        acc[i, j] += av[i] * bv[j]
        split = cuda.blockIdx.z
        row0 = stack * gy.shape[1] + g * D
        for i in range(RW):
            d = d0 + ly + by * i
            if d < D:
                for j in range(RW):
                    col = c0 + lx + bx * j
                    if col < ncol:
                        _, s, tz, ty, tx = unravel5(col, S, tzn, tyn, txn)
                        kz = geo[0, 7] + tz * geo[0, 8]
                        ky = geo[1, 7] + ty * geo[1, 8]
                        kx = geo[2, 7] + tx * geo[2, 8]
                        out = s * prm[5] * ky_n * kx_n + (kz * ky_n + ky) * kx_n + kx
                        part[split, row0 + d, out] = acc[i, j]

    return wgrad


def make_sum_split(dtype):
    """``out[r, c] = sum_s part[s, r, c]``, the splits in order (deterministic)."""
    _, ZERO, _, _, _, _ = _consts(dtype)

    def sum_split(part, out):
        rows = part.shape[1]
        cols = part.shape[2]
        for i in range(cuda.grid(1), rows * cols, cuda.gridsize(1)):
            r = i // cols
            c = i - r * cols
            acc = ZERO
            for s in range(part.shape[0]):
                acc += part[s, r, c]
            out[r, c] = acc

    return sum_split


def make_bias_grad(dtype):
    """``out[o] = sum over n and positions of gy[n, o, :]`` (gy as (N, C, L)); one block
    per channel, a fixed-order tree: deterministic. The block size is a power of two."""
    from numba import from_dtype

    nbt = from_dtype(np.dtype(dtype))
    _, ZERO, _, _, _, _ = _consts(dtype)

    def bias_grad(gy, out):
        sm = cuda.shared.array(0, nbt)
        o = cuda.blockIdx.x
        tid = cuda.threadIdx.x
        nthr = cuda.blockDim.x
        length = gy.shape[2]
        total = gy.shape[0] * length
        acc = ZERO
        for i in range(tid, total, nthr):
            n = i // length
            acc += gy[n, o, i - n * length]
        sm[tid] = acc
        half = nthr // 2  # fixed-order tree (nthr is a power of two)
        while half > 0:
            cuda.syncthreads()
            if tid < half:
                sm[tid] += sm[tid + half]
            half //= 2
        cuda.syncthreads()
        if tid == 0:
            out[o] = sm[0]

    return bias_grad


def make_sum_rows(dtype):
    """``out[r] = sum_n a[n, r]`` (the batch sum of unshared conv's bias gradient)."""
    _, ZERO, _, _, _, _ = _consts(dtype)

    def sum_rows(a, out):
        for r in range(cuda.grid(1), a.shape[1], cuda.gridsize(1)):
            acc = ZERO
            for n in range(a.shape[0]):
                acc += a[n, r]
            out[r] = acc

    return sum_rows


# ------------------------------------------------------------------------ padding, casts


def make_pad5(dtype):
    """``dst[n, c, z, y, x] = src[n, c, mz[z], my[y], mx[x]]`` (0 where a map is -1)."""
    _, ZERO, _, _, _, _ = _consts(dtype)

    def pad5(src, dst, mz, my, mx):
        nc = dst.shape[1]
        total = dst.shape[0] * nc * dst.shape[2] * dst.shape[3] * dst.shape[4]
        for i in range(cuda.grid(1), total, cuda.gridsize(1)):
            n, c, z, y, x = unravel5(i, nc, dst.shape[2], dst.shape[3], dst.shape[4])
            a = mz[z]
            b = my[y]
            e = mx[x]
            v = ZERO
            if a >= 0 and b >= 0 and e >= 0:
                v = src[n, c, a, b, e]
            dst[n, c, z, y, x] = v

    return pad5


def make_unpad5(dtype):
    """The adjoint of :func:`make_pad5`: ``dst[n, c, j] = sum of gpad[n, c, q]`` over the
    padded coordinates ``q`` that map to ``j`` (CSR lists per axis, fixed order)."""
    _, ZERO, _, _, _, _ = _consts(dtype)

    def unpad5(gpad, dst, pz, iz, py, iy, px, ix):
        nc = dst.shape[1]
        total = dst.shape[0] * nc * dst.shape[2] * dst.shape[3] * dst.shape[4]
        for i in range(cuda.grid(1), total, cuda.gridsize(1)):
            n, c, z, y, x = unravel5(i, nc, dst.shape[2], dst.shape[3], dst.shape[4])
            acc = ZERO
            for a in range(pz[z], pz[z + 1]):
                for b in range(py[y], py[y + 1]):
                    for e in range(px[x], px[x + 1]):
                        acc += gpad[n, c, iz[a], iy[b], ix[e]]
            dst[n, c, z, y, x] = acc

    return unpad5


def make_copy5(dtype):
    """``dst = src`` cast to ``dtype`` (any source layout and dtype: compiled per call
    types, the only lazily typed kernel)."""
    t = np.dtype(dtype).type

    def copy5(src, dst):
        nc = dst.shape[1]
        total = dst.shape[0] * nc * dst.shape[2] * dst.shape[3] * dst.shape[4]
        for i in range(cuda.grid(1), total, cuda.gridsize(1)):
            n, c, z, y, x = unravel5(i, nc, dst.shape[2], dst.shape[3], dst.shape[4])
            dst[n, c, z, y, x] = t(src[n, c, z, y, x])

    return copy5


# ----------------------------------------------------------------------------- pooling


def make_pool_fwd(dtype):
    """Windowed pooling. ``win`` (3, 6) per axis ``I, O, k, s, d, p``; ``inv`` (3, Omax)
    per-axis reciprocal divisors (average pooling); ``pp`` = p, ``rp`` = 1/p (L^p). MAX
    writes the flat winner index into ``idx`` when ``want`` (NaN wins, the last NaN; ties
    to the first tap). ``prm``: ``EY, EX, ntx, nty, direct``.

    A block computes ``BY x (BX*RX)`` outputs of one ``(n, c, z)`` plane, ``RX`` per
    thread; per window tap along z it stages the input tile with its halo (``EY x EX``,
    -inf outside the grid for max, 0 otherwise: the same results as skipping those taps),
    or with ``direct`` reads the input from global memory (windows too large for a tile).
    """
    from numba import from_dtype, int64

    nbt = from_dtype(np.dtype(dtype))
    _, ZERO, _, _, _, NEG_INF = _consts(dtype)

    def pool_fwd(x, y, idx, win, inv, mode, want, pp, rp, prm):
        EY = prm[0]
        EX = prm[1]
        direct = prm[4]
        sy = win[1, 3]
        sx = win[2, 3]
        dy = win[1, 4]
        dx = win[2, 4]
        ys = x.shape[3]
        xs = x.shape[4]
        nc = y.shape[1]
        sm = cuda.shared.array(0, nbt)
        acc = cuda.local.array(RX, nbt)
        bi = cuda.local.array(RX, int64)
        lx, ly, bx, by, tid, nthr = block_threads()
        tile_x, tile_y, b = block_tile(cuda.blockIdx.x, prm[2], prm[3])
        mz = b % y.shape[2]
        b //= y.shape[2]
        n = b // nc
        c = b - n * nc
        my0 = tile_y * by
        mx0 = tile_x * bx * RX
        sy0 = my0 * sy - win[1, 5]
        sx0 = mx0 * sx - win[2, 5]
        fill = NEG_INF if mode == MAX else ZERO
        for j in range(RX):
            acc[j] = fill
            bi[j] = -1
        for tz in range(win[0, 2]):
            z = mz * win[0, 3] - win[0, 5] + tz * win[0, 4]
            if z < 0 or z >= x.shape[2]:  # the same for the whole block
                continue
            if not direct:
                cuda.syncthreads()
                stage(sm, 0, x, n, c, 1, z, sy0, sx0, EY, EX, tid, nthr, fill)
                cuda.syncthreads()
            for ty in range(win[1, 2]):
                ey = ly * sy + ty * dy
                for tx in range(win[2, 2]):
                    for j in range(RX):
                        ex = (lx + j * bx) * sx + tx * dx
                        if direct:
                            v = load(x, n, c, z, sy0 + ey, sx0 + ex, fill)
                        else:
                            v = sm[ey * EX + ex]
                        if mode == MAX:
                            if v > acc[j] or math.isnan(v):
                                acc[j] = v
                                bi[j] = (z * ys + sy0 + ey) * xs + sx0 + ex
                        elif mode == AVG:
                            acc[j] += v
                        elif mode == LP1:
                            acc[j] += abs(v)
                        elif mode == LP2:
                            acc[j] += v * v
                        else:
                            acc[j] += math.pow(abs(v), pp)
        my = my0 + ly
        if my >= y.shape[3]:
            return
        for j in range(RX):
            mx = mx0 + lx + j * bx
            if mx < y.shape[4]:
                a = acc[j]
                if mode == MAX:
                    if want:
                        idx[n, c, mz, my, mx] = bi[j]
                elif mode == AVG:
                    a = a * inv[0, mz] * inv[1, my] * inv[2, mx]
                elif mode == LP2:
                    a = math.sqrt(a)
                elif mode == LPP:
                    a = math.pow(a, rp) if a > ZERO else ZERO
                y[n, c, mz, my, mx] = a

    return pool_fwd


def make_pool_bwd(dtype):
    """Pooling input gradient, a gather (no atomics): each input element sums the output
    gradients of the windows that cover it. AVG: ``g * inv``; MAXIDX: ``g`` of the windows
    whose winner it is (``idx``); L^p: ``sign(x)|x|^(p-1) * sum g / y^(p-1)`` (``y`` the
    forward output, a window with ``y = 0`` gives 0). ``prm``: ``EY, EX, ntx, nty, ioff,
    direct``.

    A block computes ``BY x (BX*RX)`` elements of one ``(n, c, z)`` plane, ``RX`` per
    thread; per window tap along z it stages the ``EY x EX`` windows that cover the tile,
    already weighted (``g * inv``, ``g / y^(p-1)``; max: ``g`` and the winner, the winners
    as int64 from slot ``ioff`` of the same shared memory). ``direct``: no staging.
    """
    from numba import from_dtype, int64

    nbt = from_dtype(np.dtype(dtype))
    _, ZERO, ONE, _, _, _ = _consts(dtype)
    NONE = np.int64(-2)  # a winner index that matches no element

    @_device
    def weighted(wg_g, wg_y, wg_idx, wg_inv, wg_n, wg_c, wg_mz, wg_my, wg_mx, wg_mode, wg_pm1):
        """(weighted gradient, winner) of window (mz, my, mx); (0, NONE) outside."""
        if wg_my < 0 or wg_my >= wg_g.shape[3] or wg_mx < 0 or wg_mx >= wg_g.shape[4]:
            return ZERO, NONE
        wg_v = wg_g[wg_n, wg_c, wg_mz, wg_my, wg_mx]
        if wg_mode == AVG:
            return wg_v * wg_inv[0, wg_mz] * wg_inv[1, wg_my] * wg_inv[2, wg_mx], NONE
        if wg_mode == MAXIDX:
            return wg_v, wg_idx[wg_n, wg_c, wg_mz, wg_my, wg_mx]
        wg_yv = wg_y[wg_n, wg_c, wg_mz, wg_my, wg_mx]
        if not wg_yv > ZERO:
            return ZERO, NONE
        if wg_mode == LP1:
            return wg_v, NONE
        if wg_mode == LP2:
            return wg_v / wg_yv, NONE
        return wg_v / math.pow(wg_yv, wg_pm1), NONE

    def pool_bwd(g, x, y, idx, gx, win, inv, mode, pm1, prm):
        EY = prm[0]
        EX = prm[1]
        ioff = prm[4]
        direct = prm[5]
        ky = win[1, 2]
        kx = win[2, 2]
        sy = win[1, 3]
        sx = win[2, 3]
        dy = win[1, 4]
        dx = win[2, 4]
        ys = gx.shape[3]
        xs = gx.shape[4]
        nc = gx.shape[1]
        sm = cuda.shared.array(0, nbt)
        si = cuda.shared.array(0, int64)
        acc = cuda.local.array(RX, nbt)
        lx, ly, bx, by, tid, nthr = block_threads()
        tile_x, tile_y, b = block_tile(cuda.blockIdx.x, prm[2], prm[3])
        z = b % gx.shape[2]
        b //= gx.shape[2]
        n = b // nc
        c = b - n * nc
        iy = tile_y * by + ly
        ix0 = tile_x * bx * RX
        # the first windows that can cover the tile (floor: possibly one too early)
        my_lo = (tile_y * by + win[1, 5] - dy * (ky - 1)) // sy
        mx_lo = (ix0 + win[2, 5] - dx * (kx - 1)) // sx
        for j in range(RX):
            acc[j] = ZERO
        for tz in range(win[0, 2]):
            mz = covering_window(z, win[0, 5], tz, win[0, 4], win[0, 3], g.shape[2])
            if mz < 0:  # the same for the whole block
                continue
            if not direct:
                cuda.syncthreads()
                for i in range(tid, EY * EX, nthr):
                    ey = i // EX
                    v, w_ = weighted(g, y, idx, inv, n, c, mz, my_lo + ey, mx_lo + i - ey * EX,
                                     mode, pm1)
                    sm[i] = v
                    if mode == MAXIDX:
                        si[ioff + i] = w_
                cuda.syncthreads()
            for ty in range(ky):
                qy = iy + win[1, 5] - ty * dy
                if qy % sy != 0:
                    continue
                ey = qy // sy - my_lo
                for tx in range(kx):
                    for j in range(RX):
                        ix = ix0 + lx + j * bx
                        qx = ix + win[2, 5] - tx * dx
                        if qx % sx != 0:
                            continue
                        ex = qx // sx - mx_lo
                        if direct:
                            v, w_ = weighted(g, y, idx, inv, n, c, mz, my_lo + ey, mx_lo + ex,
                                             mode, pm1)
                        else:
                            v = sm[ey * EX + ex]
                            w_ = si[ioff + ey * EX + ex] if mode == MAXIDX else NONE
                        if mode != MAXIDX or w_ == (z * ys + iy) * xs + ix:
                            acc[j] += v
        if iy >= ys:
            return
        for j in range(RX):
            ix = ix0 + lx + j * bx
            if ix < xs:
                a = acc[j]
                if mode != AVG and mode != MAXIDX:
                    v = x[n, c, z, iy, ix]
                    if mode == LP1:
                        f = ONE if v > ZERO else (-ONE if v < ZERO else v * ZERO)
                    elif mode == LP2:
                        f = v
                    else:
                        f = math.pow(abs(v), pm1)
                        if v < ZERO:
                            f = -f
                        elif not v > ZERO:
                            f = v * ZERO  # 0, NaN stays NaN
                    a = a * f
                gx[n, c, z, iy, ix] = a

    return pool_bwd


def make_pool_check(dtype):
    """Count the entries of ``idx`` that are not a tap of their own window (or -1 for a
    non-empty window, or not -1 for an empty one) into ``bad[0]``. Validation only,
    never on the forward path: the one kernel with an atomic."""

    def pool_check(idx, win, bad):
        zs = win[0, 0]
        ys = win[1, 0]
        xs = win[2, 0]
        nc = idx.shape[1]
        total = idx.shape[0] * nc * idx.shape[2] * idx.shape[3] * idx.shape[4]
        for i in range(cuda.grid(1), total, cuda.gridsize(1)):
            n, c, mz, my, mx = unravel5(i, nc, idx.shape[2], idx.shape[3], idx.shape[4])
            empty = False
            for a in range(3):
                m = mz if a == 0 else (my if a == 1 else mx)
                lo, hi = window_taps(m, win[a, 3], win[a, 4], win[a, 5], win[a, 2], win[a, 0])
                if hi <= lo:
                    empty = True
            v = idx[n, c, mz, my, mx]
            ok = True
            if v == -1:
                ok = empty
            elif empty or v < 0 or v >= zs * ys * xs:
                ok = False
            else:
                _, _, q, b, e = unravel5(v, 1, zs, ys, xs)
                for a in range(3):
                    pos = q if a == 0 else (b if a == 1 else e)
                    m = mz if a == 0 else (my if a == 1 else mx)
                    off = pos - (m * win[a, 3] - win[a, 5])
                    if off < 0 or off % win[a, 4] != 0 or off // win[a, 4] >= win[a, 2]:
                        ok = False
            if not ok:
                cuda.atomic.add(bad, 0, 1)

    return pool_check


def make_global_reduce(dtype):
    """Max (NaN wins, the last NaN; ties to the first index) and its index, or the sum
    divided by ``div``, of each row of ``planes`` (P, L); one block per row, a fixed-order
    tree."""
    from numba import from_dtype

    nbt = from_dtype(np.dtype(dtype))
    _, ZERO, _, _, _, NEG_INF = _consts(dtype)

    from numba import int64

    def global_reduce(planes, out, idx, want_max, div):
        sm = cuda.shared.array(0, nbt)
        si = cuda.shared.array(0, int64)
        row = cuda.blockIdx.x
        tid = cuda.threadIdx.x
        nthr = cuda.blockDim.x
        length = planes.shape[1]
        best = NEG_INF
        bi = -1
        acc = ZERO
        for i in range(tid, length, nthr):
            v = planes[row, i]
            if want_max:
                if bi < 0 or v > best or math.isnan(v):
                    best = v
                    bi = i
            else:
                acc += v
        # values in the first nthr slots of the dynamic shared memory, their indices in
        # int64 slots nthr.. (past the values for either dtype)
        if want_max:
            sm[tid] = best
            si[nthr + tid] = bi
        else:
            sm[tid] = acc
        half = nthr // 2
        while half > 0:
            cuda.syncthreads()
            if tid < half:
                if want_max:
                    v1 = sm[tid]
                    v2 = sm[tid + half]
                    i1 = si[nthr + tid]
                    i2 = si[nthr + tid + half]
                    take = False
                    if i2 >= 0:
                        if i1 < 0:
                            take = True
                        elif math.isnan(v1) or math.isnan(v2):
                            take = math.isnan(v2) and (not math.isnan(v1) or i2 > i1)
                        elif v2 > v1 or (v2 == v1 and i2 < i1):
                            take = True
                    if take:
                        sm[tid] = v2
                        si[nthr + tid] = i2
                else:
                    sm[tid] += sm[tid + half]
            half //= 2
        cuda.syncthreads()
        if tid == 0:
            if want_max:
                out[row] = sm[0]
                idx[row] = si[nthr]
            else:
                out[row] = sm[0] / div

    return global_reduce


def make_global_bwd(dtype):
    """``gx[p, l] = g[p] / div`` (average), or ``g[p]`` where ``l == idx[p]`` (max)."""
    _, ZERO, _, _, _, _ = _consts(dtype)

    def global_bwd(g, idx, gx, want_max, div):
        length = gx.shape[1]
        total = gx.shape[0] * length
        for i in range(cuda.grid(1), total, cuda.gridsize(1)):
            p = i // length
            li = i - p * length
            if want_max:
                gx[p, li] = g[p] if idx[p] == li else ZERO
            else:
                gx[p, li] = g[p] / div

    return global_bwd


# --------------------------------------------------------------------------- activations


def make_elementwise(dtype):
    """``out = f(x)`` or ``g * f'(x)`` (codes as :mod:`gridconv._cpu.activation`); LEAKY's
    slope is ``w[(i // nb) % len(w)]`` (prelu's channel)."""
    _, ZERO, ONE, TWO, FOUR, _ = _consts(dtype)

    def elementwise(g, x, w, out, op, nb):
        n = x.shape[0]
        nc = w.shape[0]
        for i in range(cuda.grid(1), n, cuda.gridsize(1)):
            v = x[i]
            if op == RELU:
                r = ZERO if v <= ZERO else v
            elif op == LEAKY:
                r = v if v > ZERO else w[(i // nb) % nc] * v
            elif op == ABS:
                r = abs(v)
            elif op == SIGMOID:
                e = math.exp(-abs(v))
                q = ONE / (ONE + e)
                r = q if v >= ZERO else e * q
            elif op == TANH:
                m = math.expm1(-TWO * abs(v))
                t = -m / (TWO + m)
                r = t if v > ZERO else (-t if v < ZERO else v)
            elif op == GRAD + RELU:
                r = g[i] * (ONE if v > ZERO else (ZERO if v <= ZERO else v))
            elif op == GRAD + LEAKY:
                r = g[i] * (ONE if v > ZERO else (w[(i // nb) % nc] if v <= ZERO else v))
            elif op == GRAD + ABS:
                d = ONE if v > ZERO else (-ONE if v < ZERO else (ZERO if v == ZERO else v))
                r = g[i] * d
            elif op == GRAD + SIGMOID:
                e = math.exp(-abs(v))
                p = ONE + e
                r = g[i] * (e / (p * p))
            elif op == GRAD + TANH:
                e = math.exp(-TWO * abs(v))
                p = ONE + e
                r = g[i] * (FOUR * e / (p * p))
            elif op == GRAD + SIGMOID_OUT:
                r = g[i] * (v * (ONE - v))
            else:  # GRAD + TANH_OUT
                r = g[i] * (ONE - v * v)
            out[i] = r

    return elementwise


def make_prelu_wgrad(dtype):
    """``out[c] = sum of g * min(x, 0)`` over the runs of ``nb`` elements with slope
    ``c`` (run ``j`` has slope ``j % len(out)``); one block per slope, a fixed tree."""
    from numba import from_dtype

    nbt = from_dtype(np.dtype(dtype))
    _, ZERO, _, _, _, _ = _consts(dtype)

    def prelu_wgrad(g, x, out, nb):
        sm = cuda.shared.array(0, nbt)
        c = cuda.blockIdx.x
        tid = cuda.threadIdx.x
        nthr = cuda.blockDim.x
        nc = out.shape[0]
        runs = x.shape[0] // nb
        mine = (runs - c + nc - 1) // nc
        acc = ZERO
        for e in range(tid, mine * nb, nthr):
            j = e // nb
            i = (c + j * nc) * nb + e - j * nb
            v = x[i]
            acc += g[i] * (ZERO if v > ZERO else v)
        sm[tid] = acc
        half = nthr // 2  # fixed-order tree (nthr is a power of two)
        while half > 0:
            cuda.syncthreads()
            if tid < half:
                sm[tid] += sm[tid + half]
            half //= 2
        cuda.syncthreads()
        if tid == 0:
            out[c] = sm[0]

    return prelu_wgrad


def make_softmax(dtype):
    """softmax / log_softmax over axis 1 of (A, C, B), one thread per ``(a, b)``; modes
    FORWARD, BACKWARD_X (from the input ``x``), BACKWARD_Y (from the output in ``x``)."""
    _, ZERO, ONE, _, _, NEG_INF = _consts(dtype)

    def softmax(g, x, out, log, mode):
        nb = x.shape[2]
        nc = x.shape[1]
        total = x.shape[0] * nb
        for i in range(cuda.grid(1), total, cuda.gridsize(1)):
            a = i // nb
            b = i - a * nb
            if mode == BACKWARD_Y:
                acc = ZERO
                for c in range(nc):
                    acc += g[a, c, b] if log else g[a, c, b] * x[a, c, b]
                for c in range(nc):
                    y = x[a, c, b]
                    if log:
                        out[a, c, b] = g[a, c, b] - math.exp(y) * acc
                    else:
                        out[a, c, b] = y * (g[a, c, b] - acc)
                continue
            m = NEG_INF
            for c in range(nc):
                v = x[a, c, b]
                if v > m or math.isnan(v):
                    m = v
            if m == NEG_INF:  # all -inf: shift by 0 (NaN results, as the CPU)
                m = ZERO
            s = ZERO
            for c in range(nc):
                s += math.exp(x[a, c, b] - m)
            if mode == FORWARD:
                if log:
                    ls = math.log(s)
                    for c in range(nc):
                        out[a, c, b] = (x[a, c, b] - m) - ls
                else:
                    r = ONE / s
                    for c in range(nc):
                        out[a, c, b] = math.exp(x[a, c, b] - m) * r
                continue
            r = ONE / s
            acc = ZERO
            for c in range(nc):
                acc += g[a, c, b] if log else g[a, c, b] * (math.exp(x[a, c, b] - m) * r)
            for c in range(nc):
                y = math.exp(x[a, c, b] - m) * r
                if log:
                    out[a, c, b] = g[a, c, b] - y * acc
                else:
                    out[a, c, b] = y * (g[a, c, b] - acc)

    return softmax


# ------------------------------------------------------------------ registry, compiling

# name: (factory, factory arguments, signature letters); see signature()
SPECS = {
    "gather8": (make_gather, (8,), "X5 X6 X1 X5 I2 I1"),
    "gather1": (make_gather, (1,), "X5 X6 X1 X5 I2 I1"),
    "gather_naive": (make_gather_naive, (), "X5 X6 X1 X5 I2 I1"),
    "local8": (make_local, (8, 4), "X5 X4 X2 X5 I2 I1"),
    "local8n1": (make_local, (8, 1), "X5 X4 X2 X5 I2 I1"),
    "local1": (make_local, (1, 4), "X5 X4 X2 X5 I2 I1"),
    "pack": (make_pack, (), "X4 X4 i"),
    "wgrad": (make_wgrad, (), "X5 X5 X3 I2 I1"),
    "sum_split": (make_sum_split, (), "X3 X2"),
    "bias_grad": (make_bias_grad, (), "X3 X1"),
    "sum_rows": (make_sum_rows, (), "X2 X1"),
    "pad5": (make_pad5, (), "X5 X5 I1 I1 I1"),
    "unpad5": (make_unpad5, (), "X5 X5 I1 I1 I1 I1 I1 I1"),
    "copy5": (make_copy5, (), "A5 X5"),
    "pool_fwd": (make_pool_fwd, (), "X5 X5 I5 I2 X2 i i f f I1"),
    "pool_bwd": (make_pool_bwd, (), "X5 X5 X5 I5 X5 I2 X2 i f I1"),
    "pool_check": (make_pool_check, (), "I5 I2 J1"),
    "global_reduce": (make_global_reduce, (), "X2 X1 I1 i f"),
    "global_bwd": (make_global_bwd, (), "X1 I1 X2 i f"),
    "elementwise": (make_elementwise, (), "X1 X1 X1 X1 i i"),
    "prelu_wgrad": (make_prelu_wgrad, (), "X1 X1 X1 i"),
    "softmax": (make_softmax, (), "X3 X3 X3 i i"),
}

# Kernels without a floating-point dtype of their own (compiled once, for float64).
DTYPE_FREE = ("pool_check",)

def signature(name: str, dtype):
    """The Numba signature of kernel ``name`` for ``dtype``: ``Xn`` a C-contiguous n-D
    array of the dtype, ``An`` any-layout n-D array of the dtype, ``In`` C-contiguous
    int64, ``Jn`` C-contiguous int32, ``i`` an int64 scalar, ``f`` a scalar of the dtype."""
    from numba import from_dtype, types

    nbt = from_dtype(np.dtype(dtype))
    out = []
    for code in SPECS[name][2].split():
        kind = code[0]
        if kind == "i":
            out.append(types.int64)
            continue
        if kind == "f":
            out.append(nbt)
            continue
        elem = {"X": nbt, "A": nbt, "I": types.int64, "J": types.int32}[kind]
        out.append(types.Array(elem, int(code[1:]), "A" if kind == "A" else "C"))
    return types.void(*out)


_CACHE: dict = {}
_LOCK = threading.Lock()


def get(name: str, dtype):
    """The compiled kernel ``name`` for ``dtype`` (compiled on first use, then cached).

    ``copy5`` is typed lazily (any source dtype and layout); every other kernel has its one
    explicit signature.
    """
    dt = np.dtype(dtype)
    key = (name, dt)
    kern = _CACHE.get(key)
    if kern is not None:
        return kern
    with _LOCK:
        kern = _CACHE.get(key)
        if kern is None:
            factory, args, _ = SPECS[name]
            fn = factory(dt, *args)
            if name == "copy5" or _simulated():
                kern = cuda.jit(fn)
            else:
                kern = cuda.jit(signature(name, dt))(fn)
            _CACHE[key] = kern
    return kern


def python_function(name: str, dtype):
    """The kernel's Python function (what :func:`ptx` compiles)."""
    factory, args, _ = SPECS[name]
    return factory(np.dtype(dtype), *args)


def ptx(name: str, dtype, cc=(9, 0)) -> str:
    """PTX of kernel ``name`` for ``dtype`` and compute capability ``cc`` (no GPU needed)."""
    code, _ = cuda.compile_ptx(python_function(name, dtype), signature(name, dtype).args,
                               cc=cc)
    return code
