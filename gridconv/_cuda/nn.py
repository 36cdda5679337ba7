"""CUDA kernels and host wrappers for the array maths of :mod:`gridconv.nn`.

The layers of :mod:`gridconv.nn` call the public operations for convolutions, pooling and
activations; everything else they need (sums, products, batch statistics, the dense
layer's matrix products, channel concatenation, upsampling, dropout masks, losses and
optimiser steps) goes through :mod:`gridconv.nn._backend`, which sends device arrays here.
This module is imported only then, so ``import gridconv.nn`` never imports ``numba.cuda``.

Conventions (those of :mod:`gridconv._cuda.kernels`): every kernel is made by a factory
that closes over the dtype's constants (NumPy scalars, frozen by Numba as constants of
that type), so a float32 kernel computes in float32 and holds no float64 literal; every
kernel has one explicit signature (:data:`SPECS`) and :func:`ptx` compiles it for a compute
capability without a GPU (the tests check float32 PTX for ``.f64``). Results are
deterministic: reductions are fixed-order trees in shared memory, one block per output (or
a fixed number of partial sums reduced in a second launch), never atomics.

The kernels
-----------
``ew``: elementwise ``x + y``, ``a*x + b*y``, ``a*x``, ``x*y``, ``x - y``, fill.
``gemm``: ``C (+)= op(A) @ op(B) (+ bias)``, a tiled shared-memory product: a block owns
a ``BM x BN`` tile of ``C`` (``BM = R * blockDim.y``, ``BN = R * blockDim.x``), stages
``KT``-deep slices of both operands in shared memory with coalesced loads (along the
contiguous axis of each operand, transposed or not) and every thread accumulates ``R x R``
outputs in registers; one writer per output.
``channel_stats``, ``channel_sums``, ``class_sums``, ``block_sum``: one block per
channel (or per partial sum) with a fixed-order tree.
``bn_vec``, ``bn_apply``, ``bn_grad``: batch normalisation around those statistics.
``band_axis``: a banded matrix applied along one axis (nearest and linear upsampling and
their transposes). ``channel_copy``: concatenation and split along the channels.
``dropout``: a counter-based hash mask (no state on the device; :func:`dropout_keep` is
the same hash in NumPy). ``ce_forward``, ``argmax_channels``: softmax cross-entropy and
the arg-max of the metrics. ``sgd``, ``adam``: fused optimiser steps, in place.
"""

from __future__ import annotations

import math
import threading

import numpy as np
from numba import cuda  # a module global: the simulator swaps it in the kernels

from .._params import fail

# ``ew`` operation codes
ADD, AXPBY, SCALE, MUL, SUB, FILL = 0, 1, 2, 3, 4, 5
# Outputs per thread of the GEMM, per side.
R = 4
M32 = 0xFFFFFFFF


def _consts(dtype):
    t = np.dtype(dtype).type
    return t, t(0), t(1), t(2)


def _nbt(dtype):
    from numba import from_dtype

    return from_dtype(np.dtype(dtype))


# ----------------------------------------------------------------------------- factories


def make_ew(dtype):
    """Elementwise over flat arrays; ``op`` one of ADD, AXPBY, SCALE, MUL, SUB, FILL."""

    def ew(x, y, out, a, b, op):
        for i in range(cuda.grid(1), out.shape[0], cuda.gridsize(1)):
            if op == ADD:
                r = x[i] + y[i]
            elif op == AXPBY:
                r = a * x[i] + b * y[i]
            elif op == SCALE:
                r = a * x[i]
            elif op == MUL:
                r = x[i] * y[i]
            elif op == SUB:
                r = x[i] - y[i]
            else:  # FILL
                r = a
            out[i] = r

    return ew


def make_cast(dtype):
    """``dst[i] = src[i]`` converted to ``dtype`` (the source dtype is the caller's)."""
    t = np.dtype(dtype).type

    def cast(src, dst):
        for i in range(cuda.grid(1), dst.shape[0], cuda.gridsize(1)):
            dst[i] = t(src[i])

    return cast


def make_gemm(dtype):
    """``c[m, n] = sum_k A[m, k] B[k, n] (+ bias[n]) (+ c[m, n])`` (see the module doc).

    ``A`` is ``a`` (M, K) or, with ``trans_a``, ``a.T`` for ``a`` (K, M); ``B`` is ``b``
    (K, N) or ``b.T`` for ``b`` (N, K). ``prm``: ``M, N, K, trans_a, trans_b, has_bias,
    accumulate, KT``.
    """
    nbt = _nbt(dtype)
    _, ZERO, _, _ = _consts(dtype)

    def gemm(a, b, bias, c, prm):
        M = prm[0]
        N = prm[1]
        K = prm[2]
        ta = prm[3]
        tb = prm[4]
        has_bias = prm[5]
        accumulate = prm[6]
        KT = prm[7]
        sm = cuda.shared.array(0, nbt)
        acc = cuda.local.array((R, R), nbt)
        ar = cuda.local.array(R, nbt)
        br = cuda.local.array(R, nbt)
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        TX = cuda.blockDim.x
        TY = cuda.blockDim.y
        tid = ty * TX + tx
        nthr = TX * TY
        BM = TY * R
        BN = TX * R
        m0 = cuda.blockIdx.y * BM
        n0 = cuda.blockIdx.x * BN
        boff = KT * BM
        for r in range(R):
            for s in range(R):
                acc[r, s] = ZERO
        for k0 in range(0, K, KT):
            cuda.syncthreads()
            for i in range(tid, KT * BM, nthr):
                if ta:  # a is (K, M): consecutive threads along m
                    kk = i // BM
                    mm = i - kk * BM
                else:  # a is (M, K): consecutive threads along k
                    mm = i // KT
                    kk = i - mm * KT
                gm = m0 + mm
                gk = k0 + kk
                v = ZERO
                if gm < M and gk < K:
                    if ta:
                        v = a[gk, gm]
                    else:
                        v = a[gm, gk]
                sm[kk * BM + mm] = v
            for i in range(tid, KT * BN, nthr):
                if tb:  # b is (N, K): consecutive threads along k
                    nn = i // KT
                    kk = i - nn * KT
                else:  # b is (K, N): consecutive threads along n
                    kk = i // BN
                    nn = i - kk * BN
                gn = n0 + nn
                gk = k0 + kk
                v = ZERO
                if gn < N and gk < K:
                    if tb:
                        v = b[gn, gk]
                    else:
                        v = b[gk, gn]
                sm[boff + kk * BN + nn] = v
            cuda.syncthreads()
            for kk in range(KT):
                for r in range(R):
                    ar[r] = sm[kk * BM + ty + r * TY]
                for s in range(R):
                    br[s] = sm[boff + kk * BN + tx + s * TX]
                for r in range(R):
                    for s in range(R):
                        acc[r, s] += ar[r] * br[s]
        for r in range(R):
            row = m0 + ty + r * TY
            if row < M:
                for s in range(R):
                    col = n0 + tx + s * TX
                    if col < N:
                        v = acc[r, s]
                        if has_bias:
                            v = v + bias[col]
                        if accumulate:
                            v = c[row, col] + v
                        c[row, col] = v

    return gemm


def make_colsum(dtype):
    """``out[j] = sum_i a[i, j]``, rows in order (the dense layer's bias gradient)."""
    _, ZERO, _, _ = _consts(dtype)

    def colsum(a, out):
        for j in range(cuda.grid(1), a.shape[1], cuda.gridsize(1)):
            acc = ZERO
            for i in range(a.shape[0]):
                acc += a[i, j]
            out[j] = acc

    return colsum


def make_channel_stats(dtype):
    """Mean and biased variance per channel of ``x`` (N, C, L), two passes; one block per
    channel, a fixed-order tree (the block size is a power of two)."""
    nbt = _nbt(dtype)
    _, ZERO, _, _ = _consts(dtype)

    def channel_stats(x, mean, var, count):
        sm = cuda.shared.array(0, nbt)
        c = cuda.blockIdx.x
        tid = cuda.threadIdx.x
        nthr = cuda.blockDim.x
        length = x.shape[2]
        total = x.shape[0] * length
        acc = ZERO
        for i in range(tid, total, nthr):
            n = i // length
            acc += x[n, c, i - n * length]
        sm[tid] = acc
        half = nthr // 2
        while half > 0:
            cuda.syncthreads()
            if tid < half:
                sm[tid] += sm[tid + half]
            half //= 2
        cuda.syncthreads()
        m = sm[0] / count
        cuda.syncthreads()
        acc = ZERO
        for i in range(tid, total, nthr):
            n = i // length
            d = x[n, c, i - n * length] - m
            acc += d * d
        sm[tid] = acc
        half = nthr // 2
        while half > 0:
            cuda.syncthreads()
            if tid < half:
                sm[tid] += sm[tid + half]
            half //= 2
        cuda.syncthreads()
        if tid == 0:
            mean[c] = m
            var[c] = sm[0] / count

    return channel_stats


def make_channel_sums(dtype):
    """Per channel of ``a`` (N, C, L): ``sa[c] = sum a`` and, with ``has_b``,
    ``sab[c] = sum a * b``; one block per channel, fixed-order trees."""
    nbt = _nbt(dtype)
    _, ZERO, _, _ = _consts(dtype)

    def channel_sums(a, b, sa, sab, has_b):
        sm = cuda.shared.array(0, nbt)
        c = cuda.blockIdx.x
        tid = cuda.threadIdx.x
        nthr = cuda.blockDim.x
        length = a.shape[2]
        total = a.shape[0] * length
        acc = ZERO
        acc2 = ZERO
        for i in range(tid, total, nthr):
            n = i // length
            v = a[n, c, i - n * length]
            acc += v
            if has_b:
                acc2 += v * b[n, c, i - n * length]
        sm[tid] = acc
        sm[nthr + tid] = acc2
        half = nthr // 2
        while half > 0:
            cuda.syncthreads()
            if tid < half:
                sm[tid] += sm[tid + half]
                sm[nthr + tid] += sm[nthr + tid + half]
            half //= 2
        cuda.syncthreads()
        if tid == 0:
            sa[c] = sm[0]
            if has_b:
                sab[c] = sm[nthr]

    return channel_sums


def make_class_sums(dtype):
    """Per class ``k`` of probabilities ``p`` (N, K, L) and labels ``t`` (N, L):
    ``inter[k] = sum p[t == k]``, ``psum[k] = sum p``, ``tsum[k] = #(t == k)``; one block
    per class, fixed-order trees (soft Dice). Block 0 sets ``bad[0]`` for a label outside
    ``[0, K)``."""
    nbt = _nbt(dtype)
    _, ZERO, ONE, _ = _consts(dtype)

    def class_sums(p, t, inter, psum, tsum, bad):
        sm = cuda.shared.array(0, nbt)
        k = cuda.blockIdx.x
        tid = cuda.threadIdx.x
        nthr = cuda.blockDim.x
        length = p.shape[2]
        total = p.shape[0] * length
        a0 = ZERO
        a1 = ZERO
        a2 = ZERO
        for i in range(tid, total, nthr):
            n = i // length
            j = i - n * length
            v = p[n, k, j]
            a1 += v
            tc = t[n, j]
            if k == 0 and (tc < 0 or tc >= p.shape[1]):
                bad[0] = 1
            if tc == k:
                a0 += v
                a2 += ONE
        sm[tid] = a0
        sm[nthr + tid] = a1
        sm[2 * nthr + tid] = a2
        half = nthr // 2
        while half > 0:
            cuda.syncthreads()
            if tid < half:
                sm[tid] += sm[tid + half]
                sm[nthr + tid] += sm[nthr + tid + half]
                sm[2 * nthr + tid] += sm[2 * nthr + tid + half]
            half //= 2
        cuda.syncthreads()
        if tid == 0:
            inter[k] = sm[0]
            psum[k] = sm[nthr]
            tsum[k] = sm[2 * nthr]

    return class_sums


def make_block_sum(dtype):
    """``part[r, g] = sum of a[r, i]`` over the items ``i`` of block ``g`` (grid
    ``(G, rows)``, grid-stride over the row); a second launch with ``G = 1`` gives the
    totals. Fixed-order trees and a fixed ``G``: deterministic."""
    nbt = _nbt(dtype)
    _, ZERO, _, _ = _consts(dtype)

    def block_sum(a, part):
        sm = cuda.shared.array(0, nbt)
        g = cuda.blockIdx.x
        row = cuda.blockIdx.y
        tid = cuda.threadIdx.x
        nthr = cuda.blockDim.x
        acc = ZERO
        for i in range(g * nthr + tid, a.shape[1], cuda.gridDim.x * nthr):
            acc += a[row, i]
        sm[tid] = acc
        half = nthr // 2
        while half > 0:
            cuda.syncthreads()
            if tid < half:
                sm[tid] += sm[tid + half]
            half //= 2
        cuda.syncthreads()
        if tid == 0:
            part[row, g] = sm[0]

    return block_sum


def make_bn_vec(dtype):
    """Per channel: in training, update the running mean and variance
    (``r = r * keep + mom * batch``, the variance times ``unbias``); ``inv = 1 /
    sqrt(var + eps)``."""
    _, _, ONE, _ = _consts(dtype)

    def bn_vec(mean, var, rmean, rvar, inv, mom, keep, unbias, eps, training):
        for c in range(cuda.grid(1), mean.shape[0], cuda.gridsize(1)):
            if training:
                rmean[c] = rmean[c] * keep + mom * mean[c]
                rvar[c] = rvar[c] * keep + mom * var[c] * unbias
            inv[c] = ONE / math.sqrt(var[c] + eps)

    return bn_vec


def make_bn_apply(dtype):
    """``xhat = (x - mean) * inv``, ``y = xhat * gamma + beta`` (or ``xhat``), per channel,
    over ``(N, C, L)``."""

    def bn_apply(x, mean, inv, gamma, beta, xhat, y, affine):
        length = x.shape[2]
        nc = x.shape[1]
        for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
            q = i // length
            j = i - q * length
            n = q // nc
            c = q - n * nc
            xh = (x[n, c, j] - mean[c]) * inv[c]
            xhat[n, c, j] = xh
            if affine:
                y[n, c, j] = xh * gamma[c] + beta[c]
            else:
                y[n, c, j] = xh

    return bn_apply


def make_bn_grad(dtype):
    """Input gradient of batch normalisation from the channel sums ``sg = sum g`` and
    ``sgx = sum g * xhat``: ``(g' - mean g' - xhat * mean(g' xhat)) * inv`` with ``g' = g *
    gamma`` (training), ``g' * inv`` (eval)."""

    def bn_grad(g, xhat, gamma, sg, sgx, inv, gx, inv_m, affine, training):
        length = g.shape[2]
        nc = g.shape[1]
        for i in range(cuda.grid(1), g.size, cuda.gridsize(1)):
            q = i // length
            j = i - q * length
            n = q // nc
            c = q - n * nc
            gv = g[n, c, j]
            if affine:
                gv = gv * gamma[c]
            if training:
                gm = sg[c] * inv_m
                gxm = sgx[c] * inv_m
                if affine:
                    gm = gamma[c] * gm
                    gxm = gamma[c] * gxm
                gv = gv - gm - xhat[n, c, j] * gxm
            gx[n, c, j] = gv * inv[c]

    return bn_grad


def make_band_axis(dtype):
    """``out[p, i, q] = sum_{lo[i] <= j < hi[i]} mat[i, j] * x[p, j, q]``: a banded
    matrix along the middle axis (upsampling along one spatial axis, or its adjoint)."""
    _, ZERO, _, _ = _consts(dtype)

    def band_axis(x, mat, lo, hi, out):
        ni = out.shape[1]
        nq = out.shape[2]
        for idx in range(cuda.grid(1), out.size, cuda.gridsize(1)):
            r = idx // nq
            q = idx - r * nq
            p = r // ni
            i = r - p * ni
            acc = ZERO
            for j in range(lo[i], hi[i]):
                acc += mat[i, j] * x[p, j, q]
            out[p, i, q] = acc

    return band_axis


def make_channel_copy(dtype):
    """Concatenation (``split = 0``: ``dst[n, off + c, l] = src[n, c, l]``) and split
    (``split = 1``: ``dst[n, c, l] = src[n, off + c, l]``) along the channels."""

    def channel_copy(src, dst, off, split):
        small = dst if split else src
        nc = small.shape[1]
        length = small.shape[2]
        for i in range(cuda.grid(1), small.size, cuda.gridsize(1)):
            q = i // length
            j = i - q * length
            n = q // nc
            c = q - n * nc
            if split:
                dst[n, c, j] = src[n, off + c, j]
            else:
                dst[n, off + c, j] = src[n, c, j]

    return channel_copy


def _mix32(x):
    """Chris Wellons' ``lowbias32`` integer hash on values below 2**32, in int64 arithmetic
    that never overflows (the multiplications split in 16-bit halves): the same code hashes
    NumPy int64 arrays on the host and runs as a device function."""
    x = x ^ (x >> 16)
    x = (x * 0x352D + (((x * 0x7FEB) & 0xFFFF) << 16)) & 0xFFFFFFFF
    x = x ^ (x >> 15)
    x = (x * 0xA68B + (((x * 0x846C) & 0xFFFF) << 16)) & 0xFFFFFFFF
    return x ^ (x >> 16)


def make_dropout(dtype):
    """Keep element ``i`` when the top 24 bits of ``hash(i, seed)`` are ``>= threshold``;
    ``mask = scale`` (kept) or 0, ``y = x * mask``."""
    _, ZERO, _, _ = _consts(dtype)

    def dropout(x, mask, y, s1, s2, threshold, scale):
        for i in range(cuda.grid(1), x.shape[0], cuda.gridsize(1)):
            # _mix32 twice, written out (a kernel builds without a device this way)
            h = (i & 0xFFFFFFFF) ^ s1
            for r in range(2):
                if r == 1:
                    h = h ^ ((i // 4294967296) & 0xFFFFFFFF) ^ s2
                h = h ^ (h >> 16)
                h = (h * 0x352D + (((h * 0x7FEB) & 0xFFFF) << 16)) & 0xFFFFFFFF
                h = h ^ (h >> 15)
                h = (h * 0xA68B + (((h * 0x846C) & 0xFFFF) << 16)) & 0xFFFFFFFF
                h = h ^ (h >> 16)
            m = scale if (h >> 8) >= threshold else ZERO
            mask[i] = m
            y[i] = x[i] * m

    return dropout


def make_ce_forward(dtype):
    """Softmax cross-entropy per position of logits ``x`` (N, K, L) with labels ``t``
    (N, L): ``out[0, i] = -w log p[t]``, ``out[1, i] = w`` (``w = cw[t]`` or 1) and the
    unnormalised gradient ``grad = w (p - onehot(t))``; a label outside ``[0, K)`` sets
    ``bad[0]``."""
    _, ZERO, ONE, _ = _consts(dtype)

    def ce_forward(x, t, cw, grad, out, bad, has_w):
        nk = x.shape[1]
        length = x.shape[2]
        for i in range(cuda.grid(1), x.shape[0] * length, cuda.gridsize(1)):
            n = i // length
            j = i - n * length
            tc = t[n, j]
            if tc < 0 or tc >= nk:
                bad[0] = 1
                out[0, i] = ZERO
                out[1, i] = ZERO
                for k in range(nk):
                    grad[n, k, j] = ZERO
                continue
            m = x[n, 0, j]
            for k in range(1, nk):
                v = x[n, k, j]
                if v > m or v != v:
                    m = v
            s = ZERO
            for k in range(nk):
                s += math.exp(x[n, k, j] - m)
            lse = m + math.log(s)
            w = cw[tc] if has_w else ONE
            out[0, i] = -(w * (x[n, tc, j] - lse))
            out[1, i] = w
            for k in range(nk):
                p = math.exp(x[n, k, j] - lse)
                if k == tc:
                    p -= ONE
                grad[n, k, j] = p * w

    return ce_forward


def make_dice_grad(dtype):
    """``gp[n, k, l] = 2 [t == k] dnum[k] + dden[k]`` (soft Dice, before the softmax)."""
    _, _, _, TWO = _consts(dtype)

    def dice_grad(t, dnum, dden, gp):
        nk = gp.shape[1]
        length = gp.shape[2]
        for i in range(cuda.grid(1), gp.size, cuda.gridsize(1)):
            q = i // length
            j = i - q * length
            n = q // nk
            k = q - n * nk
            if t[n, j] == k:
                gp[n, k, j] = TWO * dnum[k] + dden[k]
            else:
                gp[n, k, j] = dden[k]

    return dice_grad


def make_argmax_channels(dtype):
    """``out[n, l] = argmax_k x[n, k, l]`` (the first maximum; a NaN wins, as NumPy)."""

    def argmax_channels(x, out):
        length = x.shape[2]
        for i in range(cuda.grid(1), x.shape[0] * length, cuda.gridsize(1)):
            n = i // length
            j = i - n * length
            best = x[n, 0, j]
            arg = 0
            if best == best:
                for k in range(1, x.shape[1]):
                    v = x[n, k, j]
                    if v > best or v != v:
                        best = v
                        arg = k
                        if v != v:
                            break
            out[n, j] = arg

    return argmax_channels


def make_sgd(dtype):
    """One SGD step in place: ``g += wd * w`` (when ``wd`` is not 0), ``v = v * mom + g``,
    ``w -= lr * v`` (or ``lr * (g + mom * v)`` with ``nesterov``)."""
    _, ZERO, _, _ = _consts(dtype)

    def sgd(w, g, v, lr, mom, wd, nesterov):
        for i in range(cuda.grid(1), w.shape[0], cuda.gridsize(1)):
            gi = g[i]
            if wd != ZERO:
                gi = gi + wd * w[i]
            vi = v[i] * mom + gi
            v[i] = vi
            if nesterov:
                w[i] = w[i] - lr * (gi + mom * vi)
            else:
                w[i] = w[i] - lr * vi

    return sgd


def make_adam(dtype):
    """One Adam step in place: ``m = m b1 + (1 - b1) g``, ``v = v b2 + (1 - b2) g^2``,
    ``w -= lr_c1 * m / (sqrt(v / c2) + eps)`` (``g += wd * w`` first when ``wd`` is not 0)."""
    _, ZERO, _, _ = _consts(dtype)

    def adam(w, g, m, v, b1, omb1, b2, omb2, lr_c1, c2, eps, wd):
        for i in range(cuda.grid(1), w.shape[0], cuda.gridsize(1)):
            gi = g[i]
            if wd != ZERO:
                gi = gi + wd * w[i]
            mi = m[i] * b1 + omb1 * gi
            vi = v[i] * b2 + omb2 * (gi * gi)
            m[i] = mi
            v[i] = vi
            w[i] = w[i] - lr_c1 * mi / (math.sqrt(vi / c2) + eps)

    return adam


# ------------------------------------------------------------------ registry, compiling

# name: (factory, signature letters); see signature(). ``cast`` is compiled lazily for the
# source's dtype; its listed signature (int64 source) is the one the PTX tests compile.
SPECS = {
    "ew": (make_ew, "X1 X1 X1 f f i"),
    "cast": (make_cast, "I1 X1"),
    "gemm": (make_gemm, "X2 X2 X1 X2 I1"),
    "colsum": (make_colsum, "X2 X1"),
    "channel_stats": (make_channel_stats, "X3 X1 X1 f"),
    "channel_sums": (make_channel_sums, "X3 X3 X1 X1 i"),
    "class_sums": (make_class_sums, "X3 I2 X1 X1 X1 I1"),
    "block_sum": (make_block_sum, "X2 X2"),
    "bn_vec": (make_bn_vec, "X1 X1 X1 X1 X1 f f f f i"),
    "bn_apply": (make_bn_apply, "X3 X1 X1 X1 X1 X3 X3 i"),
    "bn_grad": (make_bn_grad, "X3 X3 X1 X1 X1 X1 X3 f i i"),
    "band_axis": (make_band_axis, "X3 X2 I1 I1 X3"),
    "channel_copy": (make_channel_copy, "X3 X3 i i"),
    "dropout": (make_dropout, "X1 X1 X1 i i i f"),
    "ce_forward": (make_ce_forward, "X3 I2 X1 X3 X2 I1 i"),
    "dice_grad": (make_dice_grad, "I2 X1 X1 X3"),
    "argmax_channels": (make_argmax_channels, "X3 I2"),
    "sgd": (make_sgd, "X1 X1 X1 f f f i"),
    "adam": (make_adam, "X1 X1 X1 X1 f f f f f f f f"),
}


def signature(name: str, dtype):
    """The Numba signature of kernel ``name`` for ``dtype``: ``Xn`` a C-contiguous n-D
    array of the dtype, ``In`` C-contiguous int64, ``i`` an int64 scalar, ``f`` a scalar of
    the dtype."""
    from numba import types

    nbt = _nbt(dtype)
    out = []
    for code in SPECS[name][1].split():
        if code == "i":
            out.append(types.int64)
        elif code == "f":
            out.append(nbt)
        else:
            elem = nbt if code[0] == "X" else types.int64
            out.append(types.Array(elem, int(code[1:]), "C"))
    return types.void(*out)


def simulated() -> bool:
    from numba import config

    return bool(config.ENABLE_CUDASIM)


_CACHE: dict = {}
_LOCK = threading.Lock()


def get(name: str, dtype, src_dtype=None):
    """The compiled kernel ``name`` for ``dtype`` (compiled on first use, then cached);
    ``cast`` is typed lazily by its source (``src_dtype`` only keys the cache)."""
    dt = np.dtype(dtype)
    key = (name, dt, None if src_dtype is None else np.dtype(src_dtype))
    kern = _CACHE.get(key)
    if kern is not None:
        return kern
    with _LOCK:
        kern = _CACHE.get(key)
        if kern is None:
            fn = SPECS[name][0](dt)
            if name == "cast" or simulated():
                kern = cuda.jit(fn)
            else:
                kern = cuda.jit(signature(name, dt))(fn)
            _CACHE[key] = kern
    return kern


def python_function(name: str, dtype):
    """The kernel's Python function (what :func:`ptx` compiles)."""
    return SPECS[name][0](np.dtype(dtype))


def ptx(name: str, dtype, cc=(9, 0)) -> str:
    """PTX of kernel ``name`` for ``dtype`` and compute capability ``cc`` (no GPU needed)."""
    code, _ = cuda.compile_ptx(python_function(name, dtype), signature(name, dtype).args,
                               cc=cc)
    return code


# ------------------------------------------------------------------------- launching


def _threads() -> int:
    return 8 if simulated() else 256


def _grid(total: int) -> tuple[int, int]:
    t = _threads()
    cap = 2 if simulated() else 4096
    return max(1, min(math.ceil(total / t), cap)), t


def _reduce_threads() -> int:
    """Threads of a block reduction (a power of two)."""
    return 4 if simulated() else 256


def _launch(name: str, dtype, total: int, *args) -> None:
    """A grid-stride kernel over ``total`` items (nothing when there are none)."""
    if total <= 0:
        return
    blocks, threads = _grid(total)
    get(name, dtype)[blocks, threads](*args)


def _reduce(name: str, dtype, blocks, shared_rows: int, *args) -> None:
    t = _reduce_threads()
    itemsize = np.dtype(dtype).itemsize
    get(name, dtype)[blocks, t, 0, shared_rows * t * itemsize](*args)


# ---------------------------------------------------------------------- device arrays


def _is_numba(a) -> bool:
    module = type(a).__module__ or ""
    return module.startswith(("numba.cuda", "numba_cuda")) and hasattr(a, "copy_to_host")


def dev(a):
    """``a`` (any CUDA array) as a C-contiguous Numba device array (no copy when it
    already is one)."""
    if not _is_numba(a):
        if getattr(a, "requires_grad", False):
            a = a.detach()
        a = cuda.as_cuda_array(a)
    if a.size > 1 and not a.is_c_contiguous():
        from . import arrays

        a = arrays.operand(a, a.dtype)
    return a


def empty(shape, dtype):
    return cuda.device_array(tuple(int(s) for s in shape), dtype=np.dtype(dtype))


def to_device(a, dtype=None):
    return cuda.to_device(np.ascontiguousarray(a, dtype=dtype))


def flat(a):
    return a.reshape((a.size,))


def view3(a, length: int | None = None):
    """``(N, C, *S)`` as ``(N, C, prod(S))`` (``(N, C)`` as ``(N, C, 1)``)."""
    n, c = a.shape[0], a.shape[1]
    return a.reshape((n, c, a.size // max(n * c, 1) if length is None else length))


_TABLES: dict = {}


def table(values, dtype):
    """A small host table on the device, cached by value (class weights, upsampling
    matrices and their bands)."""
    arr = np.ascontiguousarray(values, dtype=dtype)
    key = (arr.dtype.str, arr.shape, arr.tobytes())
    d = _TABLES.get(key)
    if d is None:
        if len(_TABLES) > 512:
            _TABLES.clear()
        d = cuda.to_device(arr)
        _TABLES[key] = d
    return d


# ------------------------------------------------------------------------- wrappers


def _scalar(dtype, v):
    return np.dtype(dtype).type(v)


def _ew(x, y, out, a, b, op):
    dt = out.dtype
    _launch("ew", dt, out.size, flat(x), flat(y), flat(out), _scalar(dt, a), _scalar(dt, b),
            op)
    return out


def astype(a, dtype):
    a = dev(a)
    dtype = np.dtype(dtype)
    if np.dtype(a.dtype) == dtype:
        return a
    out = empty(a.shape, dtype)
    if a.size:
        blocks, threads = _grid(a.size)
        get("cast", dtype, a.dtype)[blocks, threads](flat(a), flat(out))
    return out


def zeros(shape, dtype):
    out = empty(shape, dtype)
    return fill(out, 0)


def fill(a, value):
    return _ew(a, a, a, value, 0, FILL)


def copy(a):
    a = dev(a)
    return _ew(a, a, empty(a.shape, a.dtype), 1, 0, SCALE) if a.size else empty(a.shape,
                                                                                   a.dtype)


def add(a, b):
    a, b = dev(a), dev(b)
    return _ew(a, b, empty(a.shape, a.dtype), 0, 0, ADD)


def add_into(dst, src):
    """``dst += src`` in place."""
    return _ew(dst, dev(src), dst, 0, 0, ADD)


def subtract(a, b):
    a, b = dev(a), dev(b)
    return _ew(a, b, empty(a.shape, a.dtype), 0, 0, SUB)


def multiply(a, b):
    a, b = dev(a), dev(b)
    return _ew(a, b, empty(a.shape, a.dtype), 0, 0, MUL)


def scale(a, s):
    a = dev(a)
    return _ew(a, a, empty(a.shape, a.dtype), s, 0, SCALE)


def reshape(a, shape):
    return dev(a).reshape(tuple(int(s) for s in shape))


def channel_sums(a3, b3=None):
    """Per channel of ``(N, C, L)``: ``sum a`` and (with ``b3``) ``sum a * b``."""
    dt = a3.dtype
    c = a3.shape[1]
    sa, sab = empty((c,), dt), empty((c,) if b3 is not None else (1,), dt)
    if a3.shape[0] * a3.shape[2] == 0:
        fill(sa, 0)
        fill(sab, 0)
    elif c:
        _reduce("channel_sums", dt, c, 2, a3, a3 if b3 is None else b3, sa, sab,
                int(b3 is not None))
    return (sa, sab) if b3 is not None else sa


def channel_sum(a):
    """``a.sum(axis=(0, 2, ...))``: the bias gradient of a convolution."""
    return channel_sums(view3(dev(a)))


def column_sum(a):
    a = dev(a)
    out = empty((a.shape[1],), a.dtype)
    _launch("colsum", a.dtype, a.shape[1], a, out)
    return out


def _sum_rows(a2):
    """Totals of the rows of ``a2`` (rows, n) as a host float64 array, deterministic."""
    dt = a2.dtype
    rows, n = a2.shape
    t = _reduce_threads()
    g = max(1, min(math.ceil(n / t), 2 if simulated() else 128))
    part = empty((rows, g), dt)
    _reduce("block_sum", dt, (g, rows), 1, a2, part)
    tot = empty((rows, 1), dt)
    _reduce("block_sum", dt, (1, rows), 1, part, tot)
    return tot.copy_to_host()[:, 0]


def matmul(a, b, *, trans_a=False, trans_b=False, bias=None, out=None):
    """``op(a) @ op(b) (+ bias)``, into a new array or added into ``out``."""
    a, b = dev(a), dev(b)
    dt = a.dtype
    m, k = (a.shape[1], a.shape[0]) if trans_a else a.shape
    n = b.shape[0] if trans_b else b.shape[1]
    accumulate = out is not None
    c = out if accumulate else empty((m, n), dt)
    if m == 0 or n == 0:
        return c
    if k == 0:
        if not accumulate:
            fill(c, 0)
        return c
    if simulated():
        tx = ty = 2
        kt = 4
    else:
        tx = ty = 16
        kt = 16
    bm, bn = ty * R, tx * R
    prm = table([m, n, k, int(trans_a), int(trans_b), int(bias is not None),
                 int(accumulate), kt], np.int64)
    shared = kt * (bm + bn) * np.dtype(dt).itemsize
    bias_arr = dev(bias) if bias is not None else table(np.zeros(1), dt)
    grid = (math.ceil(n / bn), math.ceil(m / bm))
    get("gemm", dt)[grid, (tx, ty), 0, shared](a, b, bias_arr, c, prm)
    return c


def concat_channels(parts):
    parts = [dev(p) for p in parts]
    dt = parts[0].dtype
    n, rest = parts[0].shape[0], parts[0].shape[2:]
    total = sum(p.shape[1] for p in parts)
    out = empty((n, total, *rest), dt)
    out3 = view3(out)
    off = 0
    for p in parts:
        if p.size:
            p3 = view3(p, out3.shape[2])
            _launch("channel_copy", dt, p.size, p3, out3, off, 0)
        off += p.shape[1]
    return out


def split_channels(a, sizes):
    """``a`` split along the channels into contiguous pieces of ``sizes`` channels."""
    a = dev(a)
    a3 = view3(a)
    outs, off = [], 0
    for c in sizes:
        o = empty((a.shape[0], c, *a.shape[2:]), a.dtype)
        if o.size:
            _launch("channel_copy", a.dtype, o.size, a3, view3(o, a3.shape[2]), off, 1)
        outs.append(o)
        off += c
    return outs


def _band(mat: np.ndarray):
    nz = mat != 0
    any_ = nz.any(axis=1)
    lo = np.where(any_, nz.argmax(axis=1), 0)
    hi = np.where(any_, mat.shape[1] - nz[:, ::-1].argmax(axis=1), 0)
    return lo, hi


def apply_axis(x, axis: int, mat: np.ndarray):
    """``mat`` (n_out, n_in) applied along ``axis`` of ``x`` (a host matrix, banded)."""
    x = dev(x)
    dt = x.dtype
    shape = tuple(x.shape)
    pre = math.prod(shape[:axis])
    post = math.prod(shape[axis + 1:])
    n_out = mat.shape[0]
    out = empty(shape[:axis] + (n_out,) + shape[axis + 1:], dt)
    lo, hi = _band(mat)
    _launch("band_axis", dt, out.size, x.reshape((pre, shape[axis], post)), table(mat, dt),
            table(lo, np.int64), table(hi, np.int64), out.reshape((pre, n_out, post)))
    return out


def dropout_keep(n: int, s1: int, s2: int, threshold: int) -> np.ndarray:
    """The device's dropout decisions for ``n`` elements, computed in NumPy."""
    i = np.arange(n, dtype=np.int64)
    h = _mix32((i & M32) ^ s1)
    h = _mix32(h ^ ((i // 4294967296) & M32) ^ s2)
    return (h >> 8) >= threshold


def dropout(x, p: float, s1: int, s2: int):
    """``(y, mask)`` with elements dropped with probability ``p`` (hash of index and
    seeds), the kept ones scaled by ``1 / (1 - p)``."""
    x = dev(x)
    dt = x.dtype
    mask = empty(x.shape, dt)
    y = empty(x.shape, dt)
    threshold = int(round(p * (1 << 24)))
    _launch("dropout", dt, x.size, flat(x), flat(mask), flat(y), int(s1), int(s2),
            threshold, dt.type(1 / (1 - p)))
    return y, mask


def batchnorm_forward(x3, gamma, beta, rmean, rvar, training: bool, momentum: float,
                      eps: float):
    x3 = dev(x3)
    dt = np.dtype(rmean.dtype)
    c = x3.shape[1]
    m = x3.shape[0] * x3.shape[2]
    inv = empty((c,), dt)
    if training:
        mean, var = empty((c,), dt), empty((c,), dt)
        _reduce("channel_stats", dt, c, 1, x3, mean, var, dt.type(m))
        mom = dt.type(momentum)
        keep = dt.type(1) - mom
        unbias = dt.type(m / (m - 1))
    else:
        mean, var = rmean, rvar
        mom = keep = unbias = dt.type(0)
    _launch("bn_vec", dt, c, mean, var, rmean, rvar, inv, mom, keep, unbias, dt.type(eps),
            int(training))
    xhat, y = empty(x3.shape, dt), empty(x3.shape, dt)
    affine = gamma is not None
    g = gamma if affine else inv
    b = beta if affine else inv
    _launch("bn_apply", dt, x3.size, x3, mean, inv, g, b, xhat, y, int(affine))
    return y, xhat, inv


def batchnorm_backward(g3, xhat, inv, gamma, training: bool, input_grad: bool):
    g3 = dev(g3)
    dt = np.dtype(xhat.dtype)
    sg, sgx = channel_sums(g3, xhat)
    if not input_grad:
        return None, sgx, sg
    gx = empty(g3.shape, dt)
    m = g3.shape[0] * g3.shape[2]
    affine = gamma is not None
    _launch("bn_grad", dt, g3.size, g3, xhat, gamma if affine else inv, sg, sgx, inv, gx,
            dt.type(1 / m), int(affine), int(training))
    return gx, sgx, sg


def _labels(op: str, target, want: tuple):
    """Labels as a C-contiguous int64 device array of shape ``want``."""
    if tuple(target.shape) != want or np.dtype(target.dtype).kind not in "iu":
        return None  # the caller reports the error with the host checks
    t = dev(target)
    if np.dtype(t.dtype) != np.int64:
        t = cuda.to_device(t.copy_to_host().astype(np.int64))
    return t.reshape((want[0], math.prod(want[1:])))


def cross_entropy(logits, target, class_weights):
    """``(value, grad)``; None when ``target`` is malformed (the caller reports why)."""
    x = dev(logits)
    dt = np.dtype(x.dtype)
    n = x.shape[0]
    t = _labels("CrossEntropy", target, (n, *x.shape[2:]))
    if t is None:
        return None
    x3 = view3(x)
    grad = empty(x.shape, dt)
    per = empty((2, n * x3.shape[2]), dt)
    bad = cuda.to_device(np.zeros(1, np.int64))
    cw = table(np.ones(1) if class_weights is None else class_weights, dt)
    _launch("ce_forward", dt, per.shape[1], x3, t, cw, view3(grad), per, bad,
            int(class_weights is not None))
    if bad.copy_to_host()[0]:
        return None
    nll, total = _sum_rows(per)
    value = float(dt.type(nll) / dt.type(total))
    return value, _ew(grad, grad, grad, dt.type(1) / dt.type(total), 0, SCALE)


def mse(output, target):
    o, t = dev(output), dev(astype(target, output.dtype))
    dt = np.dtype(o.dtype)
    diff = subtract(o, t)
    sq = multiply(diff, diff)
    total = _sum_rows(flat(sq).reshape((1, sq.size)))[0]
    value = float(dt.type(total) / dt.type(diff.size))
    return value, _ew(diff, diff, diff, dt.type(2 / diff.size), 0, SCALE)


def dice_sums(p, target):
    """``(inter, psum, tsum)`` per class as host arrays, and the labels on the device."""
    p = dev(p)
    dt = np.dtype(p.dtype)
    n, k = p.shape[0], p.shape[1]
    t = _labels("Dice", target, (n, *p.shape[2:]))
    if t is None:
        return None
    sums = [empty((k,), dt) for _ in range(3)]
    bad = cuda.to_device(np.zeros(1, np.int64))
    _reduce("class_sums", dt, k, 3, view3(p), t, *sums, bad)
    if bad.copy_to_host()[0]:
        return None
    return tuple(s.copy_to_host() for s in sums), t


def dice_grad(t2, dnum, dden, shape, dtype):
    gp = empty(shape, dtype)
    _launch("dice_grad", dtype, gp.size, t2, table(dnum, dtype), table(dden, dtype),
            view3(gp))
    return gp


def argmax_channels(x):
    """Arg-max over axis 1 of ``(N, K, *S)`` as a host int64 array ``(N, *S)``."""
    x = dev(x)
    n = x.shape[0]
    x3 = view3(x)
    out = empty((n, x3.shape[2]), np.int64)
    _launch("argmax_channels", x.dtype, out.size, x3, out)
    return out.copy_to_host().reshape((n, *x.shape[2:]))


def sgd_step(w, g, v, lr, momentum, weight_decay, nesterov):
    dt = np.dtype(w.dtype)
    _launch("sgd", dt, w.size, flat(w), flat(g), flat(v), dt.type(lr), dt.type(momentum),
            dt.type(weight_decay), int(nesterov))


def adam_step(w, g, m, v, beta1, beta2, lr_c1, c2, eps, weight_decay):
    dt = np.dtype(w.dtype)
    t = dt.type
    _launch("adam", dt, w.size, flat(w), flat(g), flat(m), flat(v), t(beta1),
            t(1 - beta1), t(beta2), t(1 - beta2), t(lr_c1), t(c2), t(eps), t(weight_decay))


def assign(dst, src) -> None:
    """Copy ``src`` (host or device) into the device array ``dst`` in place."""
    if isinstance(src, np.ndarray) or np.isscalar(src):
        host = np.asarray(src, dst.dtype)
        if host.shape != tuple(dst.shape):
            host = np.broadcast_to(host, dst.shape)
        # a fresh C-ordered copy: numba reads zero strides as broadcasting
        dst.copy_to_device(np.array(host, order="C", copy=True))
        return
    src = astype(src, dst.dtype)
    if tuple(src.shape) != tuple(dst.shape):
        raise fail("assign", f"shape {tuple(src.shape)} does not match {tuple(dst.shape)}")
    if dst.size:
        _ew(src, src, dst, 1, 0, SCALE)
