"""The CUDA kernels of every operation, built per dtype and compiled lazily.

Each kernel is a plain Python function made by a factory that closes over the dtype's
constants (``ZERO``, ``ONE``, ... as NumPy scalars of that dtype, which Numba freezes as
constants of the same type), so a float32 kernel holds no float64 literal and does its
arithmetic in float32; :func:`ptx` compiles any of them for a compute capability without a
GPU, which is how the tests check the float32 PTX for ``.f64`` instructions.

Every kernel has one explicit signature (:data:`SPECS`, letters explained in
:func:`signature`): the drivers in :mod:`gridconv._cuda.ops` pass C-contiguous arrays of
the computation dtype and int64 parameter arrays, so one compiled specialisation per
kernel and dtype serves every call.

The kernels
-----------
``gather`` (the convolution engine, forward conv, input gradient, conv_transpose): the
gather of :mod:`gridconv._geometry` with arithmetic tap progressions per axis. A block
computes a tile of ``BY x (BX*RX)`` destination positions of one ``(n, z)`` plane for
``COT`` destination channels; per chunk of ``CC`` source channels and per tap along z it
stages the source tile with its halo and the chunk's weights in shared memory (coalesced
loads along x), then every thread accumulates its ``COT x RX`` outputs in registers from
shared memory (the weights are read as warp-wide broadcasts). No atomics, one writer per
output: deterministic.

``wgrad`` (the weight gradient): an implicit GEMM ``gw[d, (s, k)] = sum_p gy[d, p] *
patch[(s, k), p]`` over the positions ``p = (n, z, y, x)``; a block owns a
``4*BY x 4*BX`` tile of the result and one slice of the positions (split-K), staging
``KP`` positions of both operands per step in shared memory; each thread holds 4 x 4
accumulators. The slices are summed in a fixed order by ``sum_split``: deterministic,
without atomics.

The others are one thread per output with grid-stride loops (padding, pooling,
activations, locally connected layers) or one block per reduction with a fixed-order
tree in shared memory (bias gradients, global pooling, prelu's slope gradient).
"""

from __future__ import annotations

import math
import threading

import numpy as np
from numba import cuda  # a module global: the simulator swaps it in the kernels

# Register blocking of the gather kernel: outputs along x per thread.
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


# ----------------------------------------------------------------------------- factories


def _consts(dtype):
    t = np.dtype(dtype).type
    return t, t(0), t(1), t(2), t(4), t(-np.inf)


def make_gather(dtype, cot: int):
    """Tiled direct gather; ``cot`` destination channels per thread (see module doc).

    ``geo`` (3, 9) per axis z, y, x: ``m, d0, ds, ss, T, off0, tstep, k0, kstep`` (positions,
    destination start and step, source step, taps, first source offset, source step between
    taps, first kernel index, kernel index step). ``prm``: ``EY, EX, CC, ntx, nty, dtiles,
    G, D, S, has_bias, swap``. ``w`` is read as ``w[g*D + d, s, k]`` (a conv weight) or,
    with ``swap``, ``w[g*S + s, d, k]`` (the adjoint's).
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
        mzn = geo[0, 0]
        myn = geo[1, 0]
        mxn = geo[2, 0]
        ssz = geo[0, 3]
        ssy = geo[1, 3]
        ssx = geo[2, 3]
        tzn = geo[0, 4]
        tyn = geo[1, 4]
        txn = geo[2, 4]
        tstz = geo[0, 6]
        tsty = geo[1, 6]
        tstx = geo[2, 6]
        sm = cuda.shared.array(0, nbt)
        acc = cuda.local.array((COT, RX), nbt)
        xv = cuda.local.array(RX, nbt)
        bx = cuda.blockDim.x
        by = cuda.blockDim.y
        lx = cuda.threadIdx.x
        ly = cuda.threadIdx.y
        tid = ly * bx + lx
        nthr = bx * by
        b = cuda.blockIdx.x
        tile_x = b % ntx
        b //= ntx
        tile_y = b % nty
        b //= nty
        mz = b % mzn
        n = b // mzn
        gd = cuda.blockIdx.y
        g = gd // dtiles
        dc0 = (gd - g * dtiles) * COT
        mx0 = tile_x * bx * RX
        my0 = tile_y * by
        sy0 = ssy * my0 + geo[1, 5]
        sx0 = ssx * mx0 + geo[2, 5]
        zs = src.shape[2]
        ys = src.shape[3]
        xs = src.shape[4]
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
                sz = ssz * mz + geo[0, 5] + tz * tstz
                if sz < 0 or sz >= zs:  # the same for the whole block
                    continue
                kz = geo[0, 7] + tz * geo[0, 8]
                cuda.syncthreads()
                for i in range(tid, cn * nplane, nthr):
                    cc = i // nplane
                    r = i - cc * nplane
                    ey = r // EX
                    yy = sy0 + ey
                    xx = sx0 + r - ey * EX
                    v = ZERO
                    if yy >= 0 and yy < ys and xx >= 0 and xx < xs:
                        v = src[n, g * S + c0 + cc, sz, yy, xx]
                    sm[i] = v
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
                        if swap:
                            v = w[g * S + c0 + cc, d, kz, ky, kx]
                        else:
                            v = w[g * D + d, c0 + cc, kz, ky, kx]
                    sm[xs_size + i] = v
                cuda.syncthreads()
                for cc in range(cn):
                    base = cc * nplane + ly * ssy * EX + lx * ssx
                    wb = xs_size + cc * cwt
                    for ty in range(tyn):
                        rowb = base + ty * tsty * EX
                        for tx in range(txn):
                            p = rowb + tx * tstx
                            for j in range(RX):
                                xv[j] = sm[p + j * bx * ssx]
                            wo = wb + ty * txn + tx
                            for co in range(COT):
                                wv = sm[wo + co * wt]
                                for j in range(RX):
                                    acc[co, j] += wv * xv[j]
        my = my0 + ly
        if my >= myn:
            return
        dz = geo[0, 1] + geo[0, 2] * mz
        dy = geo[1, 1] + geo[1, 2] * my
        for co in range(COT):
            d = dc0 + co
            if d < D:
                bv = ZERO
                if has_bias:
                    bv = bias[g * D + d]
                for j in range(RX):
                    mx = mx0 + lx + j * bx
                    if mx < mxn:
                        dst[n, g * D + d, dz, dy, geo[2, 1] + geo[2, 2] * mx] = acc[co, j] + bv

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
        mzn = geo[0, 0]
        myn = geo[1, 0]
        mxn = geo[2, 0]
        zs = src.shape[2]
        ys = src.shape[3]
        xs = src.shape[4]
        nch = dst.shape[1]
        total = dst.shape[0] * nch * mzn * myn * mxn
        for i in range(cuda.grid(1), total, cuda.gridsize(1)):
            mx = i % mxn
            r = i // mxn
            my = r % myn
            r //= myn
            mz = r % mzn
            r //= mzn
            o = r % nch
            n = r // nch
            g = o // D
            d = o - g * D
            acc = ZERO
            for s in range(S):
                for tz in range(geo[0, 4]):
                    z = geo[0, 3] * mz + geo[0, 5] + tz * geo[0, 6]
                    if z < 0 or z >= zs:
                        continue
                    kz = geo[0, 7] + tz * geo[0, 8]
                    for ty in range(geo[1, 4]):
                        y = geo[1, 3] * my + geo[1, 5] + ty * geo[1, 6]
                        if y < 0 or y >= ys:
                            continue
                        ky = geo[1, 7] + ty * geo[1, 8]
                        for tx in range(geo[2, 4]):
                            x = geo[2, 3] * mx + geo[2, 5] + tx * geo[2, 6]
                            if x < 0 or x >= xs:
                                continue
                            kx = geo[2, 7] + tx * geo[2, 8]
                            if swap:
                                wv = w[g * S + s, d, kz, ky, kx]
                            else:
                                wv = w[o, s, kz, ky, kx]
                            acc += wv * src[n, g * S + s, z, y, x]
            if has_bias:
                acc += bias[o]
            dst[n, o, geo[0, 1] + geo[0, 2] * mz, geo[1, 1] + geo[1, 2] * my,
                geo[2, 1] + geo[2, 2] * mx] = acc

    return gather_naive


def make_wgrad(dtype):
    """Weight-gradient implicit GEMM, one split of the positions per ``blockIdx.z``.

    ``part[split, g*D + d, col]``, ``col = s*Kz*Ky*Kx + (kz*Ky + ky)*Kx + kx``, is the sum
    over the split's positions of ``gy[n, g*D + d, z, y, x] * src[n, g*S + s, taps]``.
    ``geo`` is the forward geometry; ``prm``: ``G, D, S, p_chunk, ndt, Kz, Ky, Kx``.
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
        mzn = geo[0, 0]
        myn = geo[1, 0]
        mxn = geo[2, 0]
        tzn = geo[0, 4]
        tyn = geo[1, 4]
        txn = geo[2, 4]
        sm = cuda.shared.array(0, nbt)
        acc = cuda.local.array((RW, RW), nbt)
        av = cuda.local.array(RW, nbt)
        bv = cuda.local.array(RW, nbt)
        bx = cuda.blockDim.x
        by = cuda.blockDim.y
        lx = cuda.threadIdx.x
        ly = cuda.threadIdx.y
        tid = ly * bx + lx
        nthr = bx * by
        td = by * RW
        tc = bx * RW
        rd = td + 1  # row strides of the staged tiles (+1: no bank conflicts)
        rc = tc + 1
        c0 = cuda.blockIdx.x * tc
        g = cuda.blockIdx.y // ndt
        d0 = (cuda.blockIdx.y - g * ndt) * td
        ktot = tzn * tyn * txn
        ncol = S * ktot
        npos = gy.shape[0] * mzn * myn * mxn
        p_lo = cuda.blockIdx.z * p_chunk
        p_hi = min(npos, p_lo + p_chunk)
        zs = src.shape[2]
        ys = src.shape[3]
        xs = src.shape[4]
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
                    mx = p % mxn
                    r = p // mxn
                    my = r % myn
                    r //= myn
                    mz = r % mzn
                    v = gy[r // mzn, g * D + d, mz, my, mx]
                sm[pp * rd + dd] = v
            for i in range(tid, KP * tc, nthr):
                cc = i // KP
                pp = i - cc * KP
                p = pb + pp
                col = c0 + cc
                v = ZERO
                if p < p_hi and col < ncol:
                    s = col // ktot
                    t = col - s * ktot
                    tz = t // (tyn * txn)
                    t -= tz * tyn * txn
                    ty = t // txn
                    tx = t - ty * txn
                    mx = p % mxn
                    r = p // mxn
                    my = r % myn
                    r //= myn
                    mz = r % mzn
                    n = r // mzn
                    z = geo[0, 3] * mz + geo[0, 5] + tz * geo[0, 6]
                    y = geo[1, 3] * my + geo[1, 5] + ty * geo[1, 6]
                    x = geo[2, 3] * mx + geo[2, 5] + tx * geo[2, 6]
                    if z >= 0 and z < zs and y >= 0 and y < ys and x >= 0 and x < xs:
                        v = src[n, g * S + s, z, y, x]
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
        for i in range(RW):
            d = d0 + ly + by * i
            if d < D:
                for j in range(RW):
                    col = c0 + lx + bx * j
                    if col < ncol:
                        s = col // ktot
                        t = col - s * ktot
                        tz = t // (tyn * txn)
                        t -= tz * tyn * txn
                        ty = t // txn
                        tx = t - ty * txn
                        kz = geo[0, 7] + tz * geo[0, 8]
                        ky = geo[1, 7] + ty * geo[1, 8]
                        kx = geo[2, 7] + tx * geo[2, 8]
                        out = s * prm[5] * ky_n * kx_n + (kz * ky_n + ky) * kx_n + kx
                        part[split, g * D + d, out] = acc[i, j]

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
        sz = dst.shape[2]
        sy = dst.shape[3]
        sx = dst.shape[4]
        nc = dst.shape[1]
        total = dst.shape[0] * nc * sz * sy * sx
        for i in range(cuda.grid(1), total, cuda.gridsize(1)):
            x = i % sx
            r = i // sx
            y = r % sy
            r //= sy
            z = r % sz
            r //= sz
            c = r % nc
            n = r // nc
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
        sz = dst.shape[2]
        sy = dst.shape[3]
        sx = dst.shape[4]
        nc = dst.shape[1]
        total = dst.shape[0] * nc * sz * sy * sx
        for i in range(cuda.grid(1), total, cuda.gridsize(1)):
            x = i % sx
            r = i // sx
            y = r % sy
            r //= sy
            z = r % sz
            r //= sz
            c = r % nc
            n = r // nc
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
        sz = dst.shape[2]
        sy = dst.shape[3]
        sx = dst.shape[4]
        nc = dst.shape[1]
        total = dst.shape[0] * nc * sz * sy * sx
        for i in range(cuda.grid(1), total, cuda.gridsize(1)):
            x = i % sx
            r = i // sx
            y = r % sy
            r //= sy
            z = r % sz
            r //= sz
            c = r % nc
            n = r // nc
            dst[n, c, z, y, x] = t(src[n, c, z, y, x])

    return copy5


# ------------------------------------------------------------- locally connected layers


def make_local_fwd(dtype):
    """Unshared / tiled conv forward, one thread per output. ``w`` (P, C_out, C_in*K),
    stack ``((z mod Tz)*Ty + y mod Ty)*Tx + x mod Tx``; ``bias`` (C_out, B) with ``B`` 1
    (tiled) or the positions (unshared). ``prm``: ``Tz, Ty, Tx, s(3), r(3), lo(3), K(3),
    has_bias``."""
    _, ZERO, _, _, _, _ = _consts(dtype)

    def local_fwd(src, w, bias, dst, prm):
        oz = dst.shape[2]
        oy = dst.shape[3]
        ox = dst.shape[4]
        co_n = dst.shape[1]
        ci_n = src.shape[1]
        zs = src.shape[2]
        ys = src.shape[3]
        xs = src.shape[4]
        kz_n = prm[12]
        ky_n = prm[13]
        kx_n = prm[14]
        ktot = kz_n * ky_n * kx_n
        total = dst.shape[0] * co_n * oz * oy * ox
        for i in range(cuda.grid(1), total, cuda.gridsize(1)):
            mx = i % ox
            r = i // ox
            my = r % oy
            r //= oy
            mz = r % oz
            r //= oz
            o = r % co_n
            n = r // co_n
            st = ((mz % prm[0]) * prm[1] + my % prm[1]) * prm[2] + mx % prm[2]
            acc = ZERO
            for c in range(ci_n):
                for kz in range(kz_n):
                    z = prm[3] * mz + prm[6] * kz - prm[9]
                    if z < 0 or z >= zs:
                        continue
                    for ky in range(ky_n):
                        y = prm[4] * my + prm[7] * ky - prm[10]
                        if y < 0 or y >= ys:
                            continue
                        for kx in range(kx_n):
                            x = prm[5] * mx + prm[8] * kx - prm[11]
                            if x < 0 or x >= xs:
                                continue
                            acc += (w[st, o, c * ktot + (kz * ky_n + ky) * kx_n + kx]
                                    * src[n, c, z, y, x])
            if prm[15]:
                if bias.shape[1] == 1:
                    acc += bias[o, 0]
                else:
                    acc += bias[o, (mz * oy + my) * ox + mx]
            dst[n, o, mz, my, mx] = acc

    return local_fwd


def make_local_igrad(dtype):
    """Unshared / tiled conv input gradient, one thread per element of ``gx`` (the input
    grid, or the padded grid with ``lo = 0``): a gather over the taps that reach it."""
    _, ZERO, _, _, _, _ = _consts(dtype)

    def local_igrad(gy, w, gx, prm):
        oz = gy.shape[2]
        oy = gy.shape[3]
        ox = gy.shape[4]
        co_n = gy.shape[1]
        ci_n = gx.shape[1]
        zs = gx.shape[2]
        ys = gx.shape[3]
        xs = gx.shape[4]
        kz_n = prm[12]
        ky_n = prm[13]
        kx_n = prm[14]
        ktot = kz_n * ky_n * kx_n
        total = gx.shape[0] * ci_n * zs * ys * xs
        for i in range(cuda.grid(1), total, cuda.gridsize(1)):
            x = i % xs
            r = i // xs
            y = r % ys
            r //= ys
            z = r % zs
            r //= zs
            c = r % ci_n
            n = r // ci_n
            acc = ZERO
            for kz in range(kz_n):
                qz = z + prm[9] - prm[6] * kz
                if qz < 0 or qz % prm[3] != 0 or qz // prm[3] >= oz:
                    continue
                mz = qz // prm[3]
                for ky in range(ky_n):
                    qy = y + prm[10] - prm[7] * ky
                    if qy < 0 or qy % prm[4] != 0 or qy // prm[4] >= oy:
                        continue
                    my = qy // prm[4]
                    for kx in range(kx_n):
                        qx = x + prm[11] - prm[8] * kx
                        if qx < 0 or qx % prm[5] != 0 or qx // prm[5] >= ox:
                            continue
                        mx = qx // prm[5]
                        st = ((mz % prm[0]) * prm[1] + my % prm[1]) * prm[2] + mx % prm[2]
                        col = c * ktot + (kz * ky_n + ky) * kx_n + kx
                        for o in range(co_n):
                            acc += w[st, o, col] * gy[n, o, mz, my, mx]
            gx[n, c, z, y, x] = acc

    return local_igrad


def make_local_wgrad(dtype):
    """Unshared / tiled conv weight gradient, one thread per weight element: the sum over
    the batch and the positions that use its stack (fixed order, no atomics)."""
    _, ZERO, _, _, _, _ = _consts(dtype)

    def local_wgrad(src, gy, gw, prm):
        oz = gy.shape[2]
        oy = gy.shape[3]
        ox = gy.shape[4]
        co_n = gy.shape[1]
        zs = src.shape[2]
        ys = src.shape[3]
        xs = src.shape[4]
        kz_n = prm[12]
        ky_n = prm[13]
        kx_n = prm[14]
        ktot = kz_n * ky_n * kx_n
        ncol = gw.shape[2]
        total = gw.shape[0] * co_n * ncol
        for i in range(cuda.grid(1), total, cuda.gridsize(1)):
            col = i % ncol
            r = i // ncol
            o = r % co_n
            st = r // co_n
            c = col // ktot
            t = col - c * ktot
            kz = t // (ky_n * kx_n)
            t -= kz * ky_n * kx_n
            ky = t // kx_n
            kx = t - ky * kx_n
            px = st % prm[2]
            r = st // prm[2]
            py = r % prm[1]
            pz = r // prm[1]
            acc = ZERO
            for n in range(gy.shape[0]):
                for mz in range(pz, oz, prm[0]):
                    z = prm[3] * mz + prm[6] * kz - prm[9]
                    if z < 0 or z >= zs:
                        continue
                    for my in range(py, oy, prm[1]):
                        y = prm[4] * my + prm[7] * ky - prm[10]
                        if y < 0 or y >= ys:
                            continue
                        for mx in range(px, ox, prm[2]):
                            x = prm[5] * mx + prm[8] * kx - prm[11]
                            if x < 0 or x >= xs:
                                continue
                            acc += gy[n, o, mz, my, mx] * src[n, c, z, y, x]
            gw[st, o, col] = acc

    return local_wgrad


# ----------------------------------------------------------------------------- pooling


def make_pool_fwd(dtype):
    """Windowed pooling, one thread per output. ``win`` (3, 6) per axis ``I, O, k, s, d,
    p``; ``inv`` (3, Omax) per-axis reciprocal divisors (average pooling); ``pp`` = p,
    ``rp`` = 1/p (L^p). MAX writes the flat winner index into ``idx`` when ``want``."""
    _, ZERO, ONE, _, _, NEG_INF = _consts(dtype)

    def pool_fwd(x, y, idx, win, inv, mode, want, pp, rp):
        zs = x.shape[2]
        ys = x.shape[3]
        xs = x.shape[4]
        oz = y.shape[2]
        oy = y.shape[3]
        ox = y.shape[4]
        nc = y.shape[1]
        total = y.shape[0] * nc * oz * oy * ox
        for i in range(cuda.grid(1), total, cuda.gridsize(1)):
            mx = i % ox
            r = i // ox
            my = r % oy
            r //= oy
            mz = r % oz
            r //= oz
            c = r % nc
            n = r // nc
            z0 = mz * win[0, 3] - win[0, 5]
            y0 = my * win[1, 3] - win[1, 5]
            x0 = mx * win[2, 3] - win[2, 5]
            best = NEG_INF
            bi = -1
            acc = ZERO
            for tz in range(win[0, 2]):
                z = z0 + tz * win[0, 4]
                if z < 0 or z >= zs:
                    continue
                for ty in range(win[1, 2]):
                    yy = y0 + ty * win[1, 4]
                    if yy < 0 or yy >= ys:
                        continue
                    for tx in range(win[2, 2]):
                        xx = x0 + tx * win[2, 4]
                        if xx < 0 or xx >= xs:
                            continue
                        v = x[n, c, z, yy, xx]
                        if mode == MAX:
                            if v > best or math.isnan(v):
                                best = v
                                bi = (z * ys + yy) * xs + xx
                        elif mode == AVG:
                            acc += v
                        elif mode == LP1:
                            acc += abs(v)
                        elif mode == LP2:
                            acc += v * v
                        else:
                            acc += math.pow(abs(v), pp)
            if mode == MAX:
                y[n, c, mz, my, mx] = best
                if want:
                    idx[n, c, mz, my, mx] = bi
            elif mode == AVG:
                y[n, c, mz, my, mx] = acc * inv[0, mz] * inv[1, my] * inv[2, mx]
            elif mode == LP1:
                y[n, c, mz, my, mx] = acc
            elif mode == LP2:
                y[n, c, mz, my, mx] = math.sqrt(acc)
            else:
                y[n, c, mz, my, mx] = math.pow(acc, rp) if acc > ZERO else ZERO

    return pool_fwd


def make_pool_bwd(dtype):
    """Pooling input gradient, one thread per input element: a gather over the windows
    that cover it (no atomics). AVG: ``g * inv``; MAXIDX: ``g`` of the windows whose
    winner it is (``idx``); L^p: ``sign(x)|x|^(p-1) * sum g / y^(p-1)`` (``y`` the forward
    output, a window with ``y = 0`` gives 0)."""
    _, ZERO, ONE, _, _, _ = _consts(dtype)

    def pool_bwd(g, x, y, idx, gx, win, inv, mode, pm1):
        zs = gx.shape[2]
        ys = gx.shape[3]
        xs = gx.shape[4]
        oz = g.shape[2]
        oy = g.shape[3]
        ox = g.shape[4]
        nc = gx.shape[1]
        total = gx.shape[0] * nc * zs * ys * xs
        for i in range(cuda.grid(1), total, cuda.gridsize(1)):
            xx = i % xs
            r = i // xs
            yy = r % ys
            r //= ys
            z = r % zs
            r //= zs
            c = r % nc
            n = r // nc
            me = (z * ys + yy) * xs + xx
            acc = ZERO
            for tz in range(win[0, 2]):
                qz = z + win[0, 5] - tz * win[0, 4]
                if qz < 0 or qz % win[0, 3] != 0 or qz // win[0, 3] >= oz:
                    continue
                mz = qz // win[0, 3]
                for ty in range(win[1, 2]):
                    qy = yy + win[1, 5] - ty * win[1, 4]
                    if qy < 0 or qy % win[1, 3] != 0 or qy // win[1, 3] >= oy:
                        continue
                    my = qy // win[1, 3]
                    for tx in range(win[2, 2]):
                        qx = xx + win[2, 5] - tx * win[2, 4]
                        if qx < 0 or qx % win[2, 3] != 0 or qx // win[2, 3] >= ox:
                            continue
                        mx = qx // win[2, 3]
                        gv = g[n, c, mz, my, mx]
                        if mode == AVG:
                            acc += gv * inv[0, mz] * inv[1, my] * inv[2, mx]
                        elif mode == MAXIDX:
                            if idx[n, c, mz, my, mx] == me:
                                acc += gv
                        else:
                            yv = y[n, c, mz, my, mx]
                            if yv > ZERO:
                                if mode == LP1:
                                    acc += gv
                                elif mode == LP2:
                                    acc += gv / yv
                                else:
                                    acc += gv / math.pow(yv, pm1)
            if mode == AVG or mode == MAXIDX:
                gx[n, c, z, yy, xx] = acc
            else:
                v = x[n, c, z, yy, xx]
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
                gx[n, c, z, yy, xx] = acc * f

    return pool_bwd


def make_pool_check(dtype):
    """Count the entries of ``idx`` that are not a tap of their own window (or -1 for a
    non-empty window, or not -1 for an empty one) into ``bad[0]``. Validation only,
    never on the forward path: the one kernel with an atomic."""

    def pool_check(idx, win, bad):
        zs = win[0, 0]
        ys = win[1, 0]
        xs = win[2, 0]
        oz = idx.shape[2]
        oy = idx.shape[3]
        ox = idx.shape[4]
        nc = idx.shape[1]
        total = idx.shape[0] * nc * oz * oy * ox
        for i in range(cuda.grid(1), total, cuda.gridsize(1)):
            mx = i % ox
            r = i // ox
            my = r % oy
            r //= oy
            mz = r % oz
            r //= oz
            c = r % nc
            n = r // nc
            empty = False
            for a in range(3):
                m = mz if a == 0 else (my if a == 1 else mx)
                start = m * win[a, 3] - win[a, 5]
                lo = 0
                if start < 0:
                    lo = (-start + win[a, 4] - 1) // win[a, 4]
                hi = (win[a, 0] - 1 - start) // win[a, 4] + 1
                if hi > win[a, 2]:
                    hi = win[a, 2]
                if hi <= lo:
                    empty = True
            v = idx[n, c, mz, my, mx]
            ok = True
            if v == -1:
                ok = empty
            elif empty or v < 0 or v >= zs * ys * xs:
                ok = False
            else:
                e = v % xs
                q = v // xs
                b = q % ys
                q //= ys
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
    "gather8": (make_gather, (8,), "X5 X5 X1 X5 I2 I1"),
    "gather1": (make_gather, (1,), "X5 X5 X1 X5 I2 I1"),
    "gather_naive": (make_gather_naive, (), "X5 X5 X1 X5 I2 I1"),
    "wgrad": (make_wgrad, (), "X5 X5 X3 I2 I1"),
    "sum_split": (make_sum_split, (), "X3 X2"),
    "bias_grad": (make_bias_grad, (), "X3 X1"),
    "sum_rows": (make_sum_rows, (), "X2 X1"),
    "pad5": (make_pad5, (), "X5 X5 I1 I1 I1"),
    "unpad5": (make_unpad5, (), "X5 X5 I1 I1 I1 I1 I1 I1"),
    "copy5": (make_copy5, (), "A5 X5"),
    "local_fwd": (make_local_fwd, (), "X5 X3 X2 X5 I1"),
    "local_igrad": (make_local_igrad, (), "X5 X3 X5 I1"),
    "local_wgrad": (make_local_wgrad, (), "X5 X5 X3 I1"),
    "pool_fwd": (make_pool_fwd, (), "X5 X5 I5 I2 X2 i i f f"),
    "pool_bwd": (make_pool_bwd, (), "X5 X5 X5 I5 X5 I2 X2 i f"),
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


def _simulated() -> bool:
    from numba import config

    return bool(config.ENABLE_CUDASIM)


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
