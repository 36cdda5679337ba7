"""Locally connected convolutions on the CPU: position-dependent weights.

One family of kernels serves both ``unshared_conv`` (a kernel stack per output position)
and ``tiled_conv`` (``T`` stacks cycling over the output positions): output position
``i`` (per axis) uses stack ``i mod T``, and unshared is the case ``T == O``. Problems are
3-D (1-D and 2-D callers add unit axes) and described by the tap tables of
:mod:`gridconv._geometry` (source step, tap offsets, padding index maps).

The weight is ``w[t, o, r]``: stack ``t``, output channel ``o``, reduction index
``r = (c, kz, ky, kx)`` (the caller's ``(C_out, C_in, *K)`` stack, flattened, no copy).
For one output position and a block of samples, the *patch* ``P[n, r]`` holds the
source values the position reads, in the same ``r`` order. Then

* forward:         ``y[n, o] = P[n, :] . w[t, o, :]``                (:func:`_dots`)
* input gradient:  ``dP[n, :] = sum_o g[n, o] w[t, o, :]``, scattered back (adjoint of
  the patch fill)                                                      (:func:`_combine`)
* weight gradient: ``dw[t, o, :] += sum_n g[n, o] P[n, :]``             (:func:`_combine`)

so every inner loop runs over the contiguous reduction axis ``r``. Patches live in
per-thread buffers of one position (no patch matrix for the batch is ever built).

Races: the forward pass gives each output position to one task. The weight gradient
gives each stack to one task when there are enough stacks (unshared), and otherwise sums
per-thread partials of the (small) tiled weight. The input gradient scatters patches
whose source regions overlap; the positions are cut into blocks at least one receptive
field long per axis and run in up to 8 colour passes (blocks of even, then odd, index per
axis), so that no two blocks of a pass touch the same source element.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .gather import JIT, _lookup
from .micro import claim
from .options import PARALLEL


@njit(inline="always")
def _unravel(p, m):
    ix = p % m[2]
    t = p // m[2]
    return t // m[1], t % m[1], ix


@njit(inline="always")
def _stack(iz, iy, ix, t):
    return ((iz % t[0]) * t[1] + iy % t[1]) * t[2] + ix % t[2]


@njit(inline="always")
def _taps(i, s, off, amap, qlo, idx):
    """Source index of each tap of position ``i`` on one axis (-1 for a zero)."""
    for a in range(off.shape[0]):
        idx[a] = _lookup(amap, qlo, s * i + off[a])


@njit(**JIT)
def _patch_offsets(dims, zi, yi, xi, off):
    """Flat offset in one sample, ``(C, Z, Y, X)`` = ``dims``, of every reduction index
    ``r = (c, kz, ky, kx)`` of a position with source indices ``zi, yi, xi`` (-1 where
    any of them is -1, a zero). Computed once per position, used for every sample."""
    tz, ty, tx = zi.shape[0], yi.shape[0], xi.shape[0]
    plane = dims[1] * dims[2] * dims[3]
    r = 0
    for c in range(dims[0]):
        for a in range(tz):
            for b in range(ty):
                valid = zi[a] >= 0 and yi[b] >= 0
                row = c * plane + (zi[a] * dims[2] + yi[b]) * dims[3]
                for e in range(tx):
                    off[r] = row + xi[e] if valid and xi[e] >= 0 else -1
                    r += 1


@njit(**JIT)
def _fill_patch(x2, n0, nb, off, patch):
    """``patch[n, r] = x2[n0 + n, off[r]]`` (0 where ``off[r] < 0``): a branch-free gather."""
    zero = x2.dtype.type(0)
    for n in range(nb):
        xn = x2[n0 + n]
        prow = patch[n]
        for r in range(off.shape[0]):
            o = off[r]
            v = xn[max(o, 0)]
            prow[r] = v if o >= 0 else zero


@njit(**JIT)
def _scatter_patch(gx2, n0, nb, off, dpatch):
    """Adjoint of :func:`_fill_patch`: ``gx2[n0 + n, off[r]] += dpatch[n, r]``. The offsets
    of one position are distinct (one-to-one maps), so the adds never collide."""
    for n in range(nb):
        gn = gx2[n0 + n]
        prow = dpatch[n]
        for r in range(off.shape[0]):
            o = off[r]
            if o >= 0:
                gn[o] += prow[r]


@njit(**JIT)
def _dots(a, b, out, na):
    """``out[i, j] = a[i, :] . b[j, :]`` for ``i < na``: 4 x 2 register blocks.

    Edge blocks repeat the last row or column; their duplicate stores write the very
    value already computed, so no remainder loops are needed.
    """
    zero = a.dtype.type(0)
    nb, r = b.shape
    for i in range(0, na, 4):
        i1 = min(i + 1, na - 1)
        i2 = min(i + 2, na - 1)
        i3 = min(i + 3, na - 1)
        a0 = a[i]
        a1 = a[i1]
        a2 = a[i2]
        a3 = a[i3]
        for j in range(0, nb, 2):
            j1 = min(j + 1, nb - 1)
            b0 = b[j]
            b1 = b[j1]
            s00 = zero
            s10 = zero
            s20 = zero
            s30 = zero
            s01 = zero
            s11 = zero
            s21 = zero
            s31 = zero
            for k in range(r):
                u = b0[k]
                v = b1[k]
                s00 += a0[k] * u
                s10 += a1[k] * u
                s20 += a2[k] * u
                s30 += a3[k] * u
                s01 += a0[k] * v
                s11 += a1[k] * v
                s21 += a2[k] * v
                s31 += a3[k] * v
            out[i, j] = s00
            out[i1, j] = s10
            out[i2, j] = s20
            out[i3, j] = s30
            out[i, j1] = s01
            out[i1, j1] = s11
            out[i2, j1] = s21
            out[i3, j1] = s31


@njit(**JIT)
def _combine(g, b, out, na, accumulate):
    """``out[i, :] (+)= sum_j g[i, j] * b[j, :]`` for ``i < na``: 2 rows x 4 terms."""
    nb, r = b.shape
    zero = b.dtype.type(0)
    if not accumulate:
        for i in range(na):
            orow = out[i]
            for k in range(r):
                orow[k] = zero
    for i in range(0, na, 2):
        pair = i + 1 < na
        o0 = out[i]
        o1 = out[i + 1] if pair else out[i]
        j = 0
        while j + 4 <= nb:
            b0 = b[j]
            b1 = b[j + 1]
            b2 = b[j + 2]
            b3 = b[j + 3]
            g00, g01, g02, g03 = g[i, j], g[i, j + 1], g[i, j + 2], g[i, j + 3]
            if pair:
                g10, g11, g12, g13 = g[i + 1, j], g[i + 1, j + 1], g[i + 1, j + 2], g[i + 1, j + 3]
                for k in range(r):
                    u0 = b0[k]
                    u1 = b1[k]
                    u2 = b2[k]
                    u3 = b3[k]
                    o0[k] += g00 * u0 + g01 * u1 + g02 * u2 + g03 * u3
                    o1[k] += g10 * u0 + g11 * u1 + g12 * u2 + g13 * u3
            else:
                for k in range(r):
                    o0[k] += g00 * b0[k] + g01 * b1[k] + g02 * b2[k] + g03 * b3[k]
            j += 4
        while j < nb:
            bj = b[j]
            g0 = g[i, j]
            if pair:
                g1 = g[i + 1, j]
                for k in range(r):
                    o0[k] += g0 * bj[k]
                    o1[k] += g1 * bj[k]
            else:
                for k in range(r):
                    o0[k] += g0 * bj[k]
            j += 1


# ----------------------------------------------------------------------------- forward


@njit(parallel=PARALLEL, **JIT)
def forward(x2, dims, w, bias, out, m, t, ss, offz, offy, offx, mapz, mapy, mapx, qlo, nblk,
            chunk, nthreads):
    """``out[n, o, i] = bias[o, i or 0] + P_i[n, :] . w[stack(i), o, :]``.

    x2 : (N, C*Iz*Iy*Ix), the input with ``dims = (C, Iz, Iy, Ix)``; w : (Tz*Ty*Tx, C_out, R);
    bias : (C_out, 1 or Oz*Oy*Ox), or
    (0, 1) for none; out : (N, C_out, Oz, Oy, Ox). m, t, ss, qlo : int64[3]. Tasks are
    runs of ``chunk`` positions; samples go through the patch ``nblk`` at a time.
    """
    nsamp = x2.shape[0]
    cout, r = w.shape[1], w.shape[2]
    npos = m[0] * m[1] * m[2]
    ntask = (npos + chunk - 1) // chunk
    nth = max(1, min(nthreads, ntask))
    has_bias = bias.shape[0] > 0
    per_pos = bias.shape[1] > 1
    counter = np.zeros(1, np.int64)  # the next tile (see micro.claim)
    for _th in prange(nth):
        patch = np.empty((nblk, r), x2.dtype)
        res = np.empty((nblk, cout), x2.dtype)
        off = np.empty(r, np.int64)
        zi = np.empty(offz.shape[0], np.int64)
        yi = np.empty(offy.shape[0], np.int64)
        xi = np.empty(offx.shape[0], np.int64)
        for _ in range(ntask):
            task = claim(counter)
            if task >= ntask:
                break
            for p in range(task * chunk, min(npos, (task + 1) * chunk)):
                iz, iy, ix = _unravel(p, m)
                _taps(iz, ss[0], offz, mapz, qlo[0], zi)
                _taps(iy, ss[1], offy, mapy, qlo[1], yi)
                _taps(ix, ss[2], offx, mapx, qlo[2], xi)
                _patch_offsets(dims, zi, yi, xi, off)
                wt = w[_stack(iz, iy, ix, t)]
                for n0 in range(0, nsamp, nblk):
                    nb = min(nblk, nsamp - n0)
                    _fill_patch(x2, n0, nb, off, patch)
                    _dots(patch, wt, res, nb)
                    for o in range(cout):
                        b = x2.dtype.type(0)
                        if has_bias:
                            b = bias[o, p] if per_pos else bias[o, 0]
                        for n in range(nb):
                            out[n0 + n, o, iz, iy, ix] = res[n, o] + b


# ----------------------------------------------------------------------- input gradient


@njit(parallel=PARALLEL, **JIT)
def input_grad(g, w, gx2, dims, m, t, ss, offz, offy, offx, mapz, mapy, mapx, qlo, blk, nblk,
               nthreads):
    """``gx[n, :, taps(i)] += sum_o g[n, o, i] w[stack(i), o, :]`` for every position.

    ``gx2`` (N, C*Iz*Iy*Ix), with ``dims = (C, Iz, Iy, Ix)``, must be zeroed by the
    caller, and the maps must send distinct coordinates to
    distinct elements (zero padding, or the padded grid itself). ``blk`` : int64[3],
    positions per block and axis, each at least one receptive field (over the stride).
    """
    nsamp = g.shape[0]
    cout, r = w.shape[1], w.shape[2]
    nbz = (m[0] + blk[0] - 1) // blk[0]
    nby = (m[1] + blk[1] - 1) // blk[1]
    nbx = (m[2] + blk[2] - 1) // blk[2]
    nchunk = (nsamp + nblk - 1) // nblk
    for colour in range(8):
        cz = colour >> 2
        cy = (colour >> 1) & 1
        cx = colour & 1
        if (cz and nbz < 2) or (cy and nby < 2) or (cx and nbx < 2):
            continue
        kz = (nbz - cz + 1) // 2
        ky = (nby - cy + 1) // 2
        kx = (nbx - cx + 1) // 2
        ntask = kz * ky * kx * nchunk
        nth = max(1, min(nthreads, ntask))
        counter = np.zeros(1, np.int64)  # the next tile (see micro.claim)
        for _th in prange(nth):
            gi = np.empty((nblk, cout), g.dtype)
            dpatch = np.empty((nblk, r), g.dtype)
            off = np.empty(r, np.int64)
            zi = np.empty(offz.shape[0], np.int64)
            yi = np.empty(offy.shape[0], np.int64)
            xi = np.empty(offx.shape[0], np.int64)
            for _ in range(ntask):
                task = claim(counter)
                if task >= ntask:
                    break
                chunk = task % nchunk
                rest = task // nchunk
                bx = cx + 2 * (rest % kx)
                rest //= kx
                by = cy + 2 * (rest % ky)
                bz = cz + 2 * (rest // ky)
                n0 = chunk * nblk
                nb = min(nblk, nsamp - n0)
                for iz in range(bz * blk[0], min(m[0], (bz + 1) * blk[0])):
                    _taps(iz, ss[0], offz, mapz, qlo[0], zi)
                    for iy in range(by * blk[1], min(m[1], (by + 1) * blk[1])):
                        _taps(iy, ss[1], offy, mapy, qlo[1], yi)
                        for ix in range(bx * blk[2], min(m[2], (bx + 1) * blk[2])):
                            _taps(ix, ss[2], offx, mapx, qlo[2], xi)
                            _patch_offsets(dims, zi, yi, xi, off)
                            for n in range(nb):
                                for o in range(cout):
                                    gi[n, o] = g[n0 + n, o, iz, iy, ix]
                            _combine(gi, w[_stack(iz, iy, ix, t)], dpatch, nb, False)
                            _scatter_patch(gx2, n0, nb, off, dpatch)


# ---------------------------------------------------------------------- weight gradient


@njit(inline="always")
def _task_positions(task, owned, chunk, m, t):
    """First position (per axis), count, and x/y extents of a weight-gradient task."""
    first = np.zeros(3, np.int64)
    if owned:
        first[2] = task % t[2]
        first[1] = (task // t[2]) % t[1]
        first[0] = task // (t[2] * t[1])
        lz = max(0, (m[0] - first[0] + t[0] - 1) // t[0])
        ly = max(0, (m[1] - first[1] + t[1] - 1) // t[1])
        lx = max(0, (m[2] - first[2] + t[2] - 1) // t[2])
        return first, lz * ly * lx, lx, ly
    npos = m[0] * m[1] * m[2]
    return first, min(npos, (task + 1) * chunk) - task * chunk, 1, 1


@njit(parallel=PARALLEL, **JIT)
def weight_grad(x2, dims, g, part, m, t, ss, offz, offy, offx, mapz, mapy, mapx, qlo, owned,
                nblk, chunk, nthreads):
    """``part[slot, stack(i), o, :] += sum_n g[n, o, i] P_i[n, :]`` over all positions.

    ``owned``: one task per stack (``part`` has one slot, the gradient itself); otherwise
    tasks are runs of ``chunk`` positions and each thread sums into its own slot (the
    caller adds the slots). ``part`` must be zeroed by the caller.
    """
    nsamp = x2.shape[0]
    cout, r = part.shape[2], part.shape[3]
    npos = m[0] * m[1] * m[2]
    nstack = t[0] * t[1] * t[2]
    ntask = nstack if owned else (npos + chunk - 1) // chunk
    nth = max(1, min(nthreads, ntask))
    for th in prange(nth):
        patch = np.empty((nblk, r), x2.dtype)
        gt = np.empty((cout, nblk), x2.dtype)
        off = np.empty(r, np.int64)
        zi = np.empty(offz.shape[0], np.int64)
        yi = np.empty(offy.shape[0], np.int64)
        xi = np.empty(offx.shape[0], np.int64)
        for task in range(th, ntask, nth):
            first, count, lx, ly = _task_positions(task, owned, chunk, m, t)
            for q in range(count):
                if owned:
                    # the positions of stack `task`: first + T*j on every axis
                    ix = first[2] + t[2] * (q % lx)
                    iy = first[1] + t[1] * ((q // lx) % ly)
                    iz = first[0] + t[0] * (q // (lx * ly))
                    acc = part[0, task]
                else:
                    iz, iy, ix = _unravel(task * chunk + q, m)
                    acc = part[th, _stack(iz, iy, ix, t)]
                _taps(iz, ss[0], offz, mapz, qlo[0], zi)
                _taps(iy, ss[1], offy, mapy, qlo[1], yi)
                _taps(ix, ss[2], offx, mapx, qlo[2], xi)
                _patch_offsets(dims, zi, yi, xi, off)
                for n0 in range(0, nsamp, nblk):
                    nb = min(nblk, nsamp - n0)
                    _fill_patch(x2, n0, nb, off, patch)
                    for o in range(cout):
                        for n in range(nb):
                            gt[o, n] = g[n0 + n, o, iz, iy, ix]
                    _combine(gt[:, :nb], patch[:nb], acc, cout, True)


# ------------------------------------------------------------------------------ drivers
# Arrays arrive 5-D and C-contiguous in the computation dtype, the weight as
# (stacks, C_out, R); ``axes`` are the three tap tables, ``t`` the stacks per axis.

_PATCH_BYTES = 64 * 1024  # one position's patch (a block of samples) stays in L1/L2


def _tables(axes):
    i64 = np.int64
    m = np.array([a.m for a in axes], dtype=i64)
    ss = np.array([a.ss for a in axes], dtype=i64)
    qlo = np.array([a.qlo for a in axes], dtype=i64)
    return (m, ss, *(np.ascontiguousarray(a.off, i64) for a in axes),
            *(np.ascontiguousarray(a.map, i64) for a in axes), qlo)


def _dims(a: np.ndarray) -> np.ndarray:
    """(C, Z, Y, X) of a 5-D array, for the flat offsets of the patch gathers."""
    return np.array(a.shape[1:], dtype=np.int64)


def _samples_per_block(nsamp: int, r: int, itemsize: int) -> int:
    return int(max(1, min(nsamp, _PATCH_BYTES // (r * itemsize))))


def _chunk(npos: int, nthreads: int) -> int:
    """Positions per task: at least 8 tasks per thread where the problem allows."""
    return max(1, npos // (8 * nthreads))


def run_forward(x, w, bias, out, axes, t, nthreads: int) -> None:
    m, ss, oz, oy, ox, mz, my, mx, qlo = _tables(axes)
    nblk = _samples_per_block(x.shape[0], w.shape[2], x.itemsize)
    forward(x.reshape(x.shape[0], -1), _dims(x), w, bias, out, m, np.asarray(t, np.int64), ss,
            oz, oy, ox, mz, my, mx, qlo, nblk, _chunk(int(np.prod(m)), nthreads), nthreads)


def run_input_grad(g, w, gx, axes, t, nthreads: int) -> None:
    """``gx`` zeroed, over coordinates the maps send one-to-one (see input_grad)."""
    m, ss, oz, oy, ox, mz, my, mx, qlo = _tables(axes)
    # blocks of positions whose source regions span at least one receptive field
    blk = np.array([max(1, -(-(int(a.off[-1] - a.off[0]) + 1) // a.ss)) for a in axes],
                   dtype=np.int64)
    nblk = _samples_per_block(g.shape[0], w.shape[2], g.itemsize)
    # whole rows per block when the other axes give every thread work: the positions (and
    # their weights) are then visited in memory order
    outer = -(-int(m[0]) // int(blk[0])) * -(-int(m[1]) // int(blk[1]))
    if -(-outer // 4) * -(-g.shape[0] // nblk) >= 2 * nthreads:
        blk[2] = m[2]
    input_grad(g, w, gx.reshape(gx.shape[0], -1), _dims(gx), m, np.asarray(t, np.int64), ss,
               oz, oy, ox, mz, my, mx, qlo, blk, nblk, nthreads)


def run_weight_grad(x, g, wshape, axes, t, nthreads: int) -> np.ndarray:
    """(stacks, C_out, R): owned stacks when there are enough of them to share out,
    otherwise per-thread partials of the (then small) weight, summed here."""
    m, ss, oz, oy, ox, mz, my, mx, qlo = _tables(axes)
    nstack = wshape[0]
    owned = nstack >= 4 * nthreads
    slots = 1 if owned else nthreads
    part = np.zeros((slots,) + tuple(wshape), dtype=x.dtype)
    nblk = _samples_per_block(x.shape[0], wshape[2], x.itemsize)
    weight_grad(x.reshape(x.shape[0], -1), _dims(x), g, part, m, np.asarray(t, np.int64), ss,
                oz, oy, ox, mz, my, mx, qlo, owned, nblk, _chunk(int(np.prod(m)), nthreads),
                nthreads)
    return part[0] if owned else part.sum(axis=0)
