"""The CPU engine: the gather kernels for forward and input-gradient passes, and their
twins for the weight gradient, side by side.

All work on 3-D problems (1-D and 2-D callers add unit axes, so each kernel compiles
once per dtype) described by the tap tables of :mod:`gridconv._geometry`. Work is cut
into tiles of output positions, dealt to the threads; each output element belongs to
exactly one tile, so the forward pass needs no atomics, and the weight gradients sum
per-thread partials. Every buffer is per thread and sized to the tile, so no patch
matrix for the whole batch is ever built.

* :func:`gather_direct` (the main kernel) copies the region a tile reads into a planar
  slab and runs register blocks (:mod:`gridconv._cpu.micro`) over the slab runs of its
  (channel, tap) units; :func:`weight_grad_blocked` is its twin, the transposed product
  on the same runs.
* :func:`gather` and :func:`weight_grad` (the patch path, for rows too short for the
  16-wide blocks) lay the tile's patches out position-major from a channels-last slab,
  ``P[j, (tz, ty, tx, c)]``, and multiply with a 2x4 block of dot products,
  ``out[o, j] = W[o, :] . P[j, :]``, or accumulate ``dW[o, :] += sum_j G[o, j] P[j, :]``.
* :func:`gather_wrapped`: :func:`gather_direct` for one source channel per group
  (depthwise) with ``same``-length rows: unpadded slab rows, each tile one span written
  in place, the edge columns recomputed.
* :func:`weight_grad_direct`: single-channel weight gradients as long dot products.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .micro import claim, copy_run, make_micro, make_outer, split2_run
from .options import FASTMATH, PARALLEL

JIT = dict(fastmath=FASTMATH, cache=True, nogil=True)


@njit(inline="always")
def _lookup(amap, qlo, q):
    i = q - qlo
    if i < 0 or i >= amap.shape[0]:
        return -1
    return amap[i]


@njit(inline="always")
def _task_grid(nsamp, ng, m, rows, cols, nthreads):
    """Tiles per axis, the number of tiles (tasks), and the threads that share them."""
    nyb = (m[1] + rows - 1) // rows
    nxb = (m[2] + cols - 1) // cols
    ntask = nsamp * ng * m[0] * nyb * nxb
    return nyb, nxb, ntask, max(1, min(nthreads, ntask))


@njit(inline="always")
def _tile_bounds(task, ng, nmz, nyb, nxb, my_all, mx_all, rows, cols):
    xb = task % nxb
    t = task // nxb
    yb = t % nyb
    t //= nyb
    mz = t % nmz
    t //= nmz
    g = t % ng
    n = t // ng
    my0 = yb * rows
    mx0 = xb * cols
    return n, g, mz, my0, min(my_all, my0 + rows), mx0, min(mx_all, mx0 + cols)


@njit(inline="always")
def _region(ix_size, mz, my0, my1, mx0, mx1, ss, offz, offy, offx):
    """The source region a tile reads: its first coordinates (z0, y0, x0), its extent
    (zs, ys, xs), and the interior ``[xa, xb)`` of its x-range (inside the source, so a
    plain copy; the padding map is only consulted outside it)."""
    z0 = ss[0] * mz + offz[0]
    y0 = ss[1] * my0 + offy[0]
    x0 = ss[2] * mx0 + offx[0]
    zs = offz[offz.shape[0] - 1] - offz[0] + 1
    ys = ss[1] * (my1 - 1 - my0) + offy[offy.shape[0] - 1] - offy[0] + 1
    xs = ss[2] * (mx1 - 1 - mx0) + offx[offx.shape[0] - 1] - offx[0] + 1
    xa = min(max(0, -x0), xs)
    xb = max(xa, min(xs, ix_size - x0))
    return z0, y0, x0, zs, ys, xs, xa, xb


@njit(**JIT)
def _fill_slab(src, n, c0, cs, mz, my0, my1, mx0, mx1, ss, offz, offy, offx,
               mapz, mapy, mapx, qlo, slab):
    """Copy the source region a tile reads into ``slab``, channels-last (zs, ys, xs, cs);
    returns (ys, xs)."""
    zero = src.dtype.type(0)
    iz_size, iy_size, ix_size = src.shape[2], src.shape[3], src.shape[4]
    z0, y0, x0, zs, ys, xs, xa, xb = _region(ix_size, mz, my0, my1, mx0, mx1, ss, offz,
                                             offy, offx)
    for zz in range(zs):
        iz = _lookup(mapz, qlo[0], z0 + zz)
        for yy in range(ys):
            iy = _lookup(mapy, qlo[1], y0 + yy)
            base = (zz * ys + yy) * xs * cs
            if iz < 0 or iy < 0 or iz >= iz_size or iy >= iy_size:
                for i in range(xs * cs):
                    slab[base + i] = zero
                continue
            # Eight channels at a time: eight source rows are read in step and each slab
            # position gets eight contiguous values (about twice as fast as a channel at a
            # time, whose writes are all cs apart).
            c8 = cs - cs % 8 if cs >= 8 else 0
            for cb in range(0, c8, 8):
                r0 = src[n, c0 + cb, iz, iy]
                r1 = src[n, c0 + cb + 1, iz, iy]
                r2 = src[n, c0 + cb + 2, iz, iy]
                r3 = src[n, c0 + cb + 3, iz, iy]
                r4 = src[n, c0 + cb + 4, iz, iy]
                r5 = src[n, c0 + cb + 5, iz, iy]
                r6 = src[n, c0 + cb + 6, iz, iy]
                r7 = src[n, c0 + cb + 7, iz, iy]
                for xx in range(xs):
                    d = base + xx * cs + cb
                    if xx >= xa and xx < xb:
                        ix = x0 + xx
                    else:
                        ix = _lookup(mapx, qlo[2], x0 + xx)
                    if ix < 0:
                        for q in range(8):
                            slab[d + q] = zero
                        continue
                    slab[d] = r0[ix]
                    slab[d + 1] = r1[ix]
                    slab[d + 2] = r2[ix]
                    slab[d + 3] = r3[ix]
                    slab[d + 4] = r4[ix]
                    slab[d + 5] = r5[ix]
                    slab[d + 6] = r6[ix]
                    slab[d + 7] = r7[ix]
            for c in range(c8, cs):
                row = src[n, c0 + c, iz, iy]
                for xx in range(xa):
                    ix = _lookup(mapx, qlo[2], x0 + xx)
                    slab[base + xx * cs + c] = row[ix] if ix >= 0 else zero
                if cs == 1:
                    seg = slab[base + xa: base + xb]
                    part = row[x0 + xa: x0 + xb]
                    for i in range(xb - xa):
                        seg[i] = part[i]
                else:
                    for xx in range(xa, xb):
                        slab[base + xx * cs + c] = row[x0 + xx]
                for xx in range(xb, xs):
                    ix = _lookup(mapx, qlo[2], x0 + xx)
                    slab[base + xx * cs + c] = row[ix] if ix >= 0 else zero
    return ys, xs


@njit(**JIT)
def _slab_patches(slab, ys, xs, cs, yr0, ystep, ny, xr0, xstep, nx, ss, offz, offy, offx,
                  xrun, patches, rpad):
    """Position-major patches of the tile positions ``(yr0 + ystep*a, xr0 + xstep*b)``,
    ``a < ny, b < nx``, from a filled slab; returns the number of positions."""
    zero = slab.dtype.type(0)
    npos = ny * nx
    tz, ty, tx = offz.shape[0], offy.shape[0], offx.shape[0]
    run = tx * cs
    for j in range(npos):
        row = j // nx
        yr = yr0 + ystep * row
        xr = xr0 + xstep * (j - row * nx)
        prow = patches[j * rpad: (j + 1) * rpad]
        r = 0
        for a in range(tz):
            zz = offz[a] - offz[0]
            for b in range(ty):
                yy = yr * ss[1] + offy[b] - offy[0]
                base = (zz * ys + yy) * xs
                if xrun:
                    s0 = (base + xr * ss[2]) * cs
                    seg = slab[s0: s0 + run]
                    dst = prow[r: r + run]
                    for i in range(run):
                        dst[i] = seg[i]
                    r += run
                else:
                    for e in range(tx):
                        s0 = (base + xr * ss[2] + offx[e] - offx[0]) * cs
                        seg = slab[s0: s0 + cs]
                        dst = prow[r: r + cs]
                        for i in range(cs):
                            dst[i] = seg[i]
                        r += cs
        for i in range(r, rpad):
            prow[i] = zero
    # Rows up to the next multiple of 4 enter the 2x4 blocks: keep them finite (zero) so a
    # NaN of an earlier tile cannot leak into the weight gradient through 0 * NaN.
    for i in range(npos * rpad, min(patches.shape[0], (npos + 3) // 4 * 4 * rpad)):
        patches[i] = zero
    return npos


@njit(inline="always")
def _subgrid(first, count, step, phase):
    """The tile rows (or columns) ``first .. first+count-1`` whose index is ``phase`` modulo
    ``step``: (offset of the first one in the tile, how many); (count, 0) when none."""
    r0 = (phase - first) % step
    if r0 >= count:
        return count, 0
    return r0, (count - r0 + step - 1) // step


@njit(**JIT)
def _dot_tile(w, patches, out, opad, tpad, rpad):
    """``out[o, j] = w[o, :] . patches[j, :]``: 2 outputs x 4 positions per block."""
    zero = w.dtype.type(0)
    for j in range(0, tpad, 4):
        p0 = patches[j * rpad: (j + 1) * rpad]
        p1 = patches[(j + 1) * rpad: (j + 2) * rpad]
        p2 = patches[(j + 2) * rpad: (j + 3) * rpad]
        p3 = patches[(j + 3) * rpad: (j + 4) * rpad]
        for o in range(0, opad, 2):
            w0 = w[o]
            w1 = w[o + 1]
            a00 = zero
            a01 = zero
            a02 = zero
            a03 = zero
            a10 = zero
            a11 = zero
            a12 = zero
            a13 = zero
            for r in range(rpad):
                u = w0[r]
                v = w1[r]
                a00 += u * p0[r]
                a01 += u * p1[r]
                a02 += u * p2[r]
                a03 += u * p3[r]
                a10 += v * p0[r]
                a11 += v * p1[r]
                a12 += v * p2[r]
                a13 += v * p3[r]
            out[o * tpad + j] = a00
            out[o * tpad + j + 1] = a01
            out[o * tpad + j + 2] = a02
            out[o * tpad + j + 3] = a03
            out[(o + 1) * tpad + j] = a10
            out[(o + 1) * tpad + j + 1] = a11
            out[(o + 1) * tpad + j + 2] = a12
            out[(o + 1) * tpad + j + 3] = a13


@njit(**JIT)
def _outer_tile(g, patches, acc, opad, tpad, rpad):
    """``acc[o, :] += sum_j g[o, j] * patches[j, :]``: 2 outputs x 4 positions per block."""
    for o in range(0, opad, 2):
        a0 = acc[o]
        a1 = acc[o + 1]
        for j in range(0, tpad, 4):
            p0 = patches[j * rpad: (j + 1) * rpad]
            p1 = patches[(j + 1) * rpad: (j + 2) * rpad]
            p2 = patches[(j + 2) * rpad: (j + 3) * rpad]
            p3 = patches[(j + 3) * rpad: (j + 4) * rpad]
            g00 = g[o * tpad + j]
            g01 = g[o * tpad + j + 1]
            g02 = g[o * tpad + j + 2]
            g03 = g[o * tpad + j + 3]
            g10 = g[(o + 1) * tpad + j]
            g11 = g[(o + 1) * tpad + j + 1]
            g12 = g[(o + 1) * tpad + j + 2]
            g13 = g[(o + 1) * tpad + j + 3]
            for r in range(rpad):
                x0 = p0[r]
                x1 = p1[r]
                x2 = p2[r]
                x3 = p3[r]
                a0[r] += g00 * x0 + g01 * x1 + g02 * x2 + g03 * x3
                a1[r] += g10 * x0 + g11 * x1 + g12 * x2 + g13 * x3


@njit(inline="always")
def _store_tile(plane, res, rstride, b, nrows, ncols, y0, ystep, x0, xstep):
    """Write a tile's rows (``res``, row stride ``rstride``) plus ``b`` into a destination
    plane at rows ``y0 + ystep*a`` and columns ``x0 + xstep*i`` (the positions of one
    stride phase or kernel stack, or all of them)."""
    flat = plane.reshape(plane.size)  # C-contiguous: a view
    width = plane.shape[1]
    for yr in range(nrows):
        d = (y0 + ystep * yr) * width + x0
        if xstep == 1:
            copy_run(flat, d, res, yr * rstride, ncols, b)
        else:
            for i in range(ncols):
                flat[d + xstep * i] = res[yr * rstride + i] + b


@njit(inline="always")
def _slab_size(cs, rows, cols, ss, offz, offy, offx):
    zs = offz[offz.shape[0] - 1] - offz[0] + 1
    ys = ss[1] * (rows - 1) + offy[offy.shape[0] - 1] - offy[0] + 1
    xs = ss[2] * (cols - 1) + offx[offx.shape[0] - 1] - offx[0] + 1
    return zs * ys * xs * cs


@njit(parallel=PARALLEL, **JIT)
def gather(src, wmat, bias, dst, m, d0, ds, ss, offz, offy, offx, mapz, mapy, mapx, qlo,
           xrun, t, rows, cols, nthreads):
    """``dst[n, g*od + o, d0 + ds*m] = bias[g*od + o] + wmat[stack(m), g, o] . patches(src)[m]``.

    src : (N, G*cs, Iz, Iy, Ix); wmat : (P, G, opad, rpad) with the reduction axis laid out
    ``(tz, ty, tx, c)`` and zero-padded; bias : (G*od,) or empty; dst : (N, G*od, ...).
    m, d0, ds, ss, qlo, t : int64[3] per-axis tables; rows x cols : the tile, in positions.
    The weights are periodic over the positions: ``stack(m) = ((mz % tz)*ty + my % ty)*tx
    + mx % tx`` with ``P = tz*ty*tx`` stacks (``t = (1, 1, 1)``, one stack, for a
    convolution; a tiled convolution or its input gradient otherwise): one slab per tile,
    then patches, products and stores per stack.
    nthreads : numba.get_num_threads() of the caller (read outside: it is not cacheable).
    """
    ng, opad, rpad = wmat.shape[1], wmat.shape[2], wmat.shape[3]
    nsamp = src.shape[0]
    cs = src.shape[1] // ng
    od = dst.shape[1] // ng
    nyb, nxb, ntask, nth = _task_grid(nsamp, ng, m, rows, cols, nthreads)
    tpad = (rows * cols + 3) // 4 * 4
    nslab = _slab_size(cs, rows, cols, ss, offz, offy, offx)
    has_bias = bias.shape[0] > 0
    counter = np.zeros(1, np.int64)  # the next tile (see micro.claim)
    for _th in prange(nth):
        slab = np.empty(nslab, src.dtype)
        patches = np.zeros(tpad * rpad, src.dtype)
        out = np.empty(opad * tpad, src.dtype)
        for _ in range(ntask):
            task = claim(counter)
            if task >= ntask:
                break
            n, g, mz, my0, my1, mx0, mx1 = _tile_bounds(
                task, ng, m[0], nyb, nxb, m[1], m[2], rows, cols)
            ys, xs = _fill_slab(src, n, g * cs, cs, mz, my0, my1, mx0, mx1, ss, offz, offy,
                                offx, mapz, mapy, mapx, qlo, slab)
            dz = d0[0] + ds[0] * mz
            for sy in range(t[1]):
                yr0, ny = _subgrid(my0, my1 - my0, t[1], sy)
                for sx in range(t[2]):
                    xr0, nx = _subgrid(mx0, mx1 - mx0, t[2], sx)
                    if ny == 0 or nx == 0:
                        continue
                    npos = _slab_patches(slab, ys, xs, cs, yr0, t[1], ny, xr0, t[2], nx, ss,
                                         offz, offy, offx, xrun, patches, rpad)
                    tp = (npos + 3) // 4 * 4
                    stack = ((mz % t[0]) * t[1] + sy) * t[2] + sx
                    _dot_tile(wmat[stack, g], patches, out, opad, tp, rpad)
                    for o in range(od):
                        b = bias[g * od + o] if has_bias else src.dtype.type(0)
                        _store_tile(dst[n, g * od + o, dz], out[o * tp: o * tp + npos], nx, b,
                                    ny, nx, d0[1] + ds[1] * (my0 + yr0), ds[1] * t[1],
                                    d0[2] + ds[2] * (mx0 + xr0), ds[2] * t[2])


@njit(parallel=PARALLEL, **JIT)
def weight_grad(src, gout, m, ss, offz, offy, offx, mapz, mapy, mapx, qlo, xrun, t, rows,
                cols, ng, opad, rpad, nthreads):
    """Per-thread partials of ``dW[stack(m), g, o, :] = sum_{n, m} gout[n, g*od + o, m]
    patches(src)[m]`` (stacks periodic over the positions as in :func:`gather`).

    Returns (nthreads, P, G, opad, rpad); the caller sums the first axis. gout has the
    positions of the forward output (``d0 = 0, ds = 1``).
    """
    nsamp = src.shape[0]
    cs = src.shape[1] // ng
    od = gout.shape[1] // ng
    nyb, nxb, ntask, nth = _task_grid(nsamp, ng, m, rows, cols, nthreads)
    tpad = (rows * cols + 3) // 4 * 4
    nslab = _slab_size(cs, rows, cols, ss, offz, offy, offx)
    partial = np.zeros((nth, t[0] * t[1] * t[2], ng, opad, rpad), src.dtype)
    zero = src.dtype.type(0)
    for th in prange(nth):
        slab = np.empty(nslab, src.dtype)
        patches = np.zeros(tpad * rpad, src.dtype)
        gbuf = np.zeros(opad * tpad, src.dtype)
        for task in range(th, ntask, nth):
            n, g, mz, my0, my1, mx0, mx1 = _tile_bounds(
                task, ng, m[0], nyb, nxb, m[1], m[2], rows, cols)
            ys, xs = _fill_slab(src, n, g * cs, cs, mz, my0, my1, mx0, mx1, ss, offz, offy,
                                offx, mapz, mapy, mapx, qlo, slab)
            for sy in range(t[1]):
                yr0, ny = _subgrid(my0, my1 - my0, t[1], sy)
                for sx in range(t[2]):
                    xr0, nx = _subgrid(mx0, mx1 - mx0, t[2], sx)
                    if ny == 0 or nx == 0:
                        continue
                    npos = _slab_patches(slab, ys, xs, cs, yr0, t[1], ny, xr0, t[2], nx, ss,
                                         offz, offy, offx, xrun, patches, rpad)
                    tp = (npos + 3) // 4 * 4
                    for o in range(opad):
                        gb = gbuf[o * tp: (o + 1) * tp]
                        if o >= od:
                            for i in range(tp):
                                gb[i] = zero
                            continue
                        plane = gout[n, g * od + o, mz]
                        for a in range(ny):
                            grow = plane[my0 + yr0 + t[1] * a]
                            seg = gb[a * nx: (a + 1) * nx]
                            x0 = mx0 + xr0
                            for i in range(nx):
                                seg[i] = grow[x0 + t[2] * i]
                        for i in range(npos, tp):
                            gb[i] = zero
                    stack = ((mz % t[0]) * t[1] + sy) * t[2] + sx
                    _outer_tile(gbuf, patches, partial[th, stack, g], opad, tp, rpad)
    return partial


# ---- the direct kernels: planar slabs, (channel, tap) units read as slab runs ---------

@njit(inline="always")
def _lookups(idx, mapy, mapx, qlo, y0, ys, x0, xs, xa, xb, iy_size):
    """Source row of each slab row (``idx[:ys]``, -1 for a zero) and source column of
    each slab column outside the interior ``[xa, xb)`` (``idx[ys + xx]``; the fills copy
    the interior without a lookup, and 1-D tiles are thousands of columns wide), looked
    up once per tile."""
    for yy in range(ys):
        iy = _lookup(mapy, qlo[1], y0 + yy)
        idx[yy] = iy if iy < iy_size else -1
    for xx in range(xa):
        idx[ys + xx] = _lookup(mapx, qlo[2], x0 + xx)
    for xx in range(xb, xs):
        idx[ys + xx] = _lookup(mapx, qlo[2], x0 + xx)


@njit(inline="always")
def _padded_row(dst, d, flat, r, x0, xs, xa, xb, idx, ys):
    """``dst[d + xx]`` for ``xx < xs``: the padded source row from column ``x0`` (the
    row at ``flat[r:]``), one copy inside ``[xa, xb)``, the edge columns through their
    :func:`_lookups` (``idx[ys + xx]``, -1 for a zero)."""
    zero = dst.dtype.type(0)
    for xx in range(xa):
        ix = idx[ys + xx]
        dst[d + xx] = flat[r + ix] if ix >= 0 else zero
    copy_run(dst, d + xa, flat, r + x0 + xa, xb - xa, zero)
    for xx in range(xb, xs):
        ix = idx[ys + xx]
        dst[d + xx] = flat[r + ix] if ix >= 0 else zero


@njit(inline="always")
def _source_row(src, n, c, iz, iy):
    """Flat offset of row ``(n, c, iz, iy)`` of ``src``, or -1 where the looked-up plane
    or row is zero padding (a lookup of -1, or a plane past the source's end)."""
    if iz < 0 or iy < 0 or iz >= src.shape[2]:
        return -1
    return (((n * src.shape[1] + c) * src.shape[2] + iz) * src.shape[3] + iy) * src.shape[4]


@njit(**JIT)
def _fill_planes(src, n, c0, cs, mz, my0, my1, mx0, mx1, ss, offz, offy, offx, mapz, mapy,
                 mapx, qlo, slab, plane, idx):
    """:func:`_fill_slab` into planar slabs (channel ``c`` at ``slab[c*plane:]``, rows of
    ``xs``). The source rows and the edge columns are looked up once per tile (into
    ``idx``, at least ``ys + xs`` long), not once per channel: rows are short, so the
    per-row work is what costs."""
    zero = src.dtype.type(0)
    iy_size, ix_size = src.shape[3], src.shape[4]
    z0, y0, x0, zs, ys, xs, xa, xb = _region(ix_size, mz, my0, my1, mx0, mx1, ss, offz,
                                             offy, offx)
    _lookups(idx, mapy, mapx, qlo, y0, ys, x0, xs, xa, xb, iy_size)
    flat = src.reshape(src.size)  # C-contiguous: a view
    for c in range(cs):
        for zz in range(zs):
            iz = _lookup(mapz, qlo[0], z0 + zz)
            for yy in range(ys):
                iy = idx[yy]
                d = c * plane + (zz * ys + yy) * xs
                r = _source_row(src, n, c0 + c, iz, iy)
                if r < 0:
                    for i in range(xs):
                        slab[d + i] = zero
                    continue
                _padded_row(slab, d, flat, r, x0, xs, xa, xb, idx, ys)
    return ys, xs


@njit(inline="always")
def _split_extent(xs, step):
    """Length of one phase row when a slab row of ``xs`` is split into ``step`` phases."""
    return (xs + step - 1) // step


@njit(inline="always")
def _split4(slab, d, xq, flat, s, n):
    """``slab[d + q*xq + j] = flat[s + 4*j + q]`` for ``q < 4``, ``j < n``."""
    src = flat[s: s + 4 * n]
    p0 = slab[d: d + n]
    p1 = slab[d + xq: d + xq + n]
    p2 = slab[d + 2 * xq: d + 2 * xq + n]
    p3 = slab[d + 3 * xq: d + 3 * xq + n]
    for j in range(n):
        p0[j] = src[4 * j]
        p1[j] = src[4 * j + 1]
        p2[j] = src[4 * j + 2]
        p3[j] = src[4 * j + 3]


@njit(**JIT)
def _fill_split_planes(src, n, c0, cs, mz, my0, my1, mx0, mx1, ss, offz, offy, offx, mapz,
                       mapy, mapx, qlo, step, slab, plane, idx):
    """Planar slabs whose rows are split into ``step`` phases: element ``x`` of a row goes
    to phase ``x % step`` at ``x // step``, so that outputs ``step`` apart in x (a stride,
    or the positions of one kernel stack) read consecutive elements. Lookups as in
    :func:`_fill_planes`; ``idx`` at least ``ys + 3*xs + 2*step`` long (the edge list of
    steps 2 and 4 follows the lookups). Returns (ys, xs)."""
    zero = src.dtype.type(0)
    iy_size, ix_size = src.shape[3], src.shape[4]
    z0, y0, x0, zs, ys, xs, xa, xb = _region(ix_size, mz, my0, my1, mx0, mx1, ss, offz,
                                             offy, offx)
    xq = _split_extent(xs, step)
    _lookups(idx, mapy, mapx, qlo, y0, ys, x0, xs, xa, xb, iy_size)
    flat = src.reshape(src.size)  # C-contiguous: a view; flat offsets, no row views
    # Steps 2 and 4 (stride 2 or two stacks; the stride 4 of audio front ends) copy the
    # interior, where all the phases of an element group lie inside the source, by vector
    # shuffles (2) or one loop of interleaved accesses that LLVM vectorises (4): phase
    # elements [j0, j1). The others, the same in every row, are listed once per tile
    # after the lookups as (offset in the slab row, source column or -1 for a zero):
    # worked out per row, with their branches and divisions, they cost twice the copy.
    j0 = min((xa + step - 1) // step, xq)
    j1 = max(j0, xb // step)
    e0 = ys + xs
    ne = 0
    if step == 2 or step == 4:
        for q in range(step):
            for j in range(xq - j1 + j0):
                j = j if j < j0 else j + j1 - j0  # outside [j0, j1)
                xx = q + step * j
                if xx >= xs:
                    col = -1
                elif xa <= xx < xb:
                    col = x0 + xx
                else:
                    col = idx[ys + xx]
                idx[e0 + 2 * ne] = q * xq + j
                idx[e0 + 2 * ne + 1] = col
                ne += 1
    for c in range(cs):
        for zz in range(zs):
            iz = _lookup(mapz, qlo[0], z0 + zz)
            for yy in range(ys):
                iy = idx[yy]
                d = c * plane + (zz * ys + yy) * step * xq
                r = _source_row(src, n, c0 + c, iz, iy)
                if r < 0:
                    for i in range(step * xq):
                        slab[d + i] = zero
                    continue
                if step == 2 or step == 4:
                    s0 = r + x0 + step * j0
                    if step == 2:
                        split2_run(slab, d + j0, d + xq + j0, flat, s0, j1 - j0)
                    else:
                        _split4(slab, d + j0, xq, flat, s0, j1 - j0)
                    for e in range(ne):
                        col = idx[e0 + 2 * e + 1]
                        slab[d + idx[e0 + 2 * e]] = flat[r + col] if col >= 0 else zero
                    continue
                for q in range(step):
                    dq = d + q * xq
                    cnt = (xs - q + step - 1) // step
                    # phase elements j with x = q + step*j inside [xa, xb): a plain
                    # strided copy; the map only at the edges
                    ja = min(cnt, max(0, (xa - q + step - 1) // step))
                    jb = max(ja, min(cnt, (xb - q + step - 1) // step))
                    for j in range(ja):
                        ix = idx[ys + q + step * j]
                        slab[dq + j] = flat[r + ix] if ix >= 0 else zero
                    s0 = r + x0 + q
                    for j in range(ja, jb):
                        slab[dq + j] = flat[s0 + step * j]
                    for j in range(jb, cnt):
                        ix = idx[ys + q + step * j]
                        slab[dq + j] = flat[r + ix] if ix >= 0 else zero
                    for j in range(cnt, xq):
                        slab[dq + j] = zero
    return ys, xs


@njit(inline="always")
def _fill_runs(src, n, c0, cs, mz, my0, my1, mx0, mx1, ss, offz, offy, offx, mapz, mapy,
               mapx, qlo, step, slab, plane, idx):
    """The planar slab of the direct kernels: rows split into ``step`` phases when the
    outputs of one stack are ``step > 1`` apart along x. Returns (ys, xs)."""
    if step == 1:
        return _fill_planes(src, n, c0, cs, mz, my0, my1, mx0, mx1, ss, offz, offy, offx,
                            mapz, mapy, mapx, qlo, slab, plane, idx)
    return _fill_split_planes(src, n, c0, cs, mz, my0, my1, mx0, mx1, ss, offz, offy, offx,
                              mapz, mapy, mapx, qlo, step, slab, plane, idx)


@njit(inline="always")
def _unit_offsets(uoff, cs, offz, offy, offx, ys, plane, step, xq, x0):
    """Where each unit's run starts in a :func:`_fill_runs` slab, for the tile's first
    row and first output at slab column ``x0``: units ordered (z tap, y tap, channel, x
    tap), so that the taps of one z or y offset are a contiguous range of units (skipped
    together where they read only padding, see :func:`_tap_range`); slab rows of
    ``step`` phases of ``xq``."""
    u = 0
    for a in range(offz.shape[0]):
        for bb in range(offy.shape[0]):
            yy = (offz[a] - offz[0]) * ys + offy[bb] - offy[0]
            for c in range(cs):
                for e in range(offx.shape[0]):
                    xrel = x0 + offx[e] - offx[0]
                    uoff[u] = c * plane + (yy * step + xrel % step) * xq + xrel // step
                    u += 1


@njit(inline="always")
def _tap_range(rows, first, off):
    """The taps ``[lo, hi)`` of one axis whose slab row ``first + off[t] - off[0]`` holds
    source values: ``rows`` gives each slab row's source row, -1 for zero padding, which
    the units of a tap reading it would only add. Padding lies at the ends, so the taps
    (sorted by offset) that read source rows are one contiguous range."""
    nt = off.shape[0]
    lo = 0
    while lo < nt and rows[first + off[lo] - off[0]] < 0:
        lo += 1
    hi = nt
    while hi > lo and rows[first + off[hi - 1] - off[0]] < 0:
        hi -= 1
    return lo, hi


# (channels, vectors) of the register blocks: 12 accumulators where the channels allow
# (two FMA pipes of 5-cycle latency need about 10 in flight), fewer loads per FMA first.
_MK6, _MK5, _MK4, _MK3, _MK2, _MK1 = (
    make_micro(mr, nv) for mr, nv in ((6, 2), (5, 2), (4, 3), (3, 4), (2, 6), (1, 8)))
_NK4, _NK3, _NK2, _NK1 = (make_micro(mr, 2) for mr in (4, 3, 2, 1))
# The widest block reads this many vectors past a run's start: slabs keep that slack.
_MAX_NV = 8


@njit(inline="always")
def _channel_block(blk, nblk, od):
    """First channel and size of block ``blk`` of ``nblk = ceil(od/6)`` near-equal blocks
    (sizes differ by at most one: 32 = 6+6+5+5+5+5, no starved block of 2)."""
    base = od // nblk
    extra = od % nblk
    return blk * base + min(blk, extra), base + (1 if blk < extra else 0)


@njit(inline="always")
def _block_narrow(mr, out, ld, dest, dld, slab, base, uoff, w, woff, nunit, bias, boff):
    """One block of ``mr`` channels x 2 vectors (any ``mr <= 6``): ``dest[r*dld + j] =
    out[r*ld + j] + sum_u w[woff + u*mr + r] * slab[base + uoff[u] + j]`` (starting at
    ``bias[boff + r]`` instead of ``out`` when ``boff >= 0``, see
    :func:`gridconv._cpu.micro.make_micro`)."""
    if mr == 6:
        _MK6(out, ld, dest, dld, slab, base, uoff, w, woff, nunit, bias, boff)
    elif mr == 5:
        _MK5(out, ld, dest, dld, slab, base, uoff, w, woff, nunit, bias, boff)
    elif mr == 4:
        _NK4(out, ld, dest, dld, slab, base, uoff, w, woff, nunit, bias, boff)
    elif mr == 3:
        _NK3(out, ld, dest, dld, slab, base, uoff, w, woff, nunit, bias, boff)
    elif mr == 2:
        _NK2(out, ld, dest, dld, slab, base, uoff, w, woff, nunit, bias, boff)
    else:
        _NK1(out, ld, dest, dld, slab, base, uoff, w, woff, nunit, bias, boff)


@njit(inline="always")
def _block_width(mr):
    """Vectors per block of :func:`_block_rows` for ``mr`` channels."""
    return (8, 6, 4, 3, 2, 2)[mr - 1]


@njit(inline="always")
def _merge_pays(nrows, rlen, ncols, width):
    """Whether a tile's rows run as one span (its gap columns computed and discarded)
    costs fewer blocks of ``width`` positions than running them one by one (each row's
    last block partly wasted)."""
    merged = ((nrows - 1) * rlen + ncols + width - 1) // width
    return merged < nrows * ((ncols + width - 1) // width)


@njit(inline="always")
def _block_rows(mr, dest, dbase, dld, slab, roff, uoff, w, nunit, p0, p1, bias, boff, lanes):
    """``dest[dbase + r*dld + p] = bias[boff + r] + sum_u w[u*mr + r] * slab[roff +
    uoff[u] + p]`` for ``r < mr`` and ``p0 <= p < p1`` (rounded up to the block's width),
    with the widest block that ``mr`` channels allow, over the whole reduction."""
    if mr == 6:
        for p in range(p0, p1, 2 * lanes):
            o = dest[dbase + p:]
            _MK6(o, dld, o, dld, slab, roff + p, uoff, w, 0, nunit, bias, boff)
    elif mr == 5:
        for p in range(p0, p1, 2 * lanes):
            o = dest[dbase + p:]
            _MK5(o, dld, o, dld, slab, roff + p, uoff, w, 0, nunit, bias, boff)
    elif mr == 4:
        for p in range(p0, p1, 3 * lanes):
            o = dest[dbase + p:]
            _MK4(o, dld, o, dld, slab, roff + p, uoff, w, 0, nunit, bias, boff)
    elif mr == 3:
        for p in range(p0, p1, 4 * lanes):
            o = dest[dbase + p:]
            _MK3(o, dld, o, dld, slab, roff + p, uoff, w, 0, nunit, bias, boff)
    elif mr == 2:
        for p in range(p0, p1, 6 * lanes):
            o = dest[dbase + p:]
            _MK2(o, dld, o, dld, slab, roff + p, uoff, w, 0, nunit, bias, boff)
    else:
        for p in range(p0, p1, 8 * lanes):
            o = dest[dbase + p:]
            _MK1(o, dld, o, dld, slab, roff + p, uoff, w, 0, nunit, bias, boff)


@njit(**JIT)
def _reduce(od, acc, abase, ld, dest, dbase, dld, slab, roff, uoff, w, nunit, useg, chunk,
            p0, p1, bias, boff, lanes):
    """``dest[dbase + o*dld + p] = bias[boff + o] + sum_u w(o, u) * slab[roff + uoff[u] +
    p]`` for the ``od`` channels and positions ``p0 <= p < p1`` (``p0`` a multiple of the
    block width, ``p1`` rounded up to it), over the units of the segments ``useg = (first,
    stride, count, length)``: ``[first + k*stride, first + k*stride + length)`` for ``k <
    count`` (the others read only padding). ``nunit`` is the weights' unit count.

    Near-equal blocks of at most 6 channels run it in chunks of up to ``chunk`` units (with
    ``od <= 6`` and one segment the caller runs :func:`_block_rows` instead: one block of
    all the channels, over the whole reduction). Each block of channels walks all the
    positions before the next block starts, so its chunk of weights (at most 3 KB) stays
    in L1 and the sums go out as 6 sequential streams; position-major (every block of
    channels at a block of positions, then the next) was 12-25% slower on the audio front
    end and the 2-D convolutions of few source channels (measured in one process, the two
    orders alternating), where every step touched all the channel rows. The partial sums
    wait in ``acc`` (at ``abase``, rows ``ld`` apart), and the last chunk writes ``dest``.
    (``dest`` may be ``acc``; when it is the destination array its channel rows may be a
    power of two apart, and its lines, all in one cache set, would not survive from one
    chunk to the next.) Not inlined: the kernel's parallel loop stays smaller (a third
    less compile time for the first call, and 4-9% faster on the 2-D and 3-D convolutions
    of 16-64 channels).
    """
    first, ustride, count, length = useg
    nblk = (od + 5) // 6
    nchunk = (length + chunk - 1) // chunk
    total = max(1, count * nchunk)  # one empty chunk when no unit is left: the bias
    for q in range(total):
        k = q // nchunk if nchunk > 0 else 0
        u0 = first + k * ustride + (q - k * nchunk) * chunk
        ku = min(chunk, first + k * ustride + length - u0) if count > 0 else 0
        uo = uoff[u0:]
        last = q == total - 1
        for blk in range(nblk):
            o0, mr = _channel_block(blk, nblk, od)
            for p in range(p0, p1, 2 * lanes):
                a = acc[abase + o0 * ld + p:]
                d = dest[dbase + o0 * dld + p:] if last else a
                _block_narrow(mr, a, ld, d, dld if last else ld, slab, roff + p, uo, w,
                              o0 * nunit + u0 * mr, ku, bias, boff + o0 if q == 0 else -1)


@njit(parallel=PARALLEL, **JIT)
def gather_direct(src, wpk, bias, dst, m, d0, ds, ss, offz, offy, offx, mapz, mapy, mapx,
                  qlo, t, rows, cols, chunk, place, nthreads):
    """:func:`gather` without patches: every (source channel, tap) is a unit whose slab
    run feeds register blocks of up to 6 destination channels x 16 positions (float32;
    see :mod:`gridconv._cpu.micro`) that accumulate the whole reduction in registers.

    wpk : (P, G, od * nunit) weights of the ``nunit = cs*Tz*Ty*Tx`` units (ordered z tap, y
    tap, channel, x tap; see :func:`_unit_offsets`), packed per block of 6 destination
    channels as (nunit, mr); ``P = t[0]*t[1]*t[2]`` stacks periodic over the positions as in
    :func:`gather`. od is ``dst.shape[1] // G`` unless ``place`` says otherwise; chunk:
    units per chunk of the reduction when od > 6 (their slab runs for a block of positions
    stay in L1 while every block of channels reads them); place: (G*od, 4) int64, where
    computed channel ``j`` goes: destination channel ``place[j, 0]``, its positions shifted
    by ``place[j, 1:]`` per axis (an empty array: channel ``j`` to ``j``, unshifted; the
    one-pass transposed convolution sends its phases to interleaved positions); other
    arguments as :func:`gather`.

    Slabs are planar (one (zs, ys, xs) block per source channel). When consecutive
    outputs of one stack are ``step = ss[2]*t[2] > 1`` apart in the source, the slab rows
    are split into ``step`` phases so that the runs stay contiguous. The units of taps
    that read only zero padding (the edge planes and rows) are skipped.
    """
    ng = wpk.shape[1]
    placed = place.shape[0] > 0
    od = (place.shape[0] if placed else dst.shape[1]) // ng
    cs = src.shape[1] // ng
    nsamp = src.shape[0]
    nyb, nxb, ntask, nth = _task_grid(nsamp, ng, m, rows, cols, nthreads)
    tz, ty, tx = offz.shape[0], offy.shape[0], offx.shape[0]
    step = ss[2] * t[2]
    zs = offz[tz - 1] - offz[0] + 1
    ys_max = ss[1] * (rows - 1) + offy[ty - 1] - offy[0] + 1
    xs_max = ss[2] * (cols - 1) + offx[tx - 1] - offx[0] + 1
    # a split row has step phases of xq elements: up to step - 1 more than xs
    plane = zs * ys_max * step * _split_extent(xs_max, step)
    zero = src.dtype.type(0)
    # the sums start at the bias (see _reduce): one value per computed channel
    start = bias if bias.shape[0] > 0 else np.zeros(ng * od, src.dtype)
    nunit = cs * tz * ty * tx
    lanes = 32 // src.itemsize
    slack = _MAX_NV * lanes
    # Rows of the tile can be run as one long span (the slab's row stride apart, the gap
    # columns discarded) when output rows map to consecutive slab rows of one stack.
    merge = step == 1 and ss[1] == 1 and t[1] == 1
    width = 2 * lanes if od > 6 else _block_width(od) * lanes
    # Rows of consecutive destination positions take their whole blocks in place (the
    # last chunk of the reduction writes ``dst``: no store pass); only the last, partial
    # block of a row goes through ``acc``, as everything does otherwise. Measured: 13-36%
    # faster for tiles of many short rows (2-D, 3-D) where the output is large, and
    # 10-25% for the long rows of 1-D tiles (the audio front end), whose output then
    # streams out while the sums run instead of in a pass after them.
    inplace = not placed and t[2] == 1 and ds[2] == 1
    nz, ny, nx_all = dst.shape[2], dst.shape[3], dst.shape[4]
    dflat = dst.reshape(dst.size)  # C-contiguous: a view
    # Placed channels in pairs that interleave along x (conv_transpose's 2x upsampling,
    # its phases (a, b, e) with e fastest): the pair's destination rows are whole.
    pairs = placed and ds[2] == 2 and t[2] == 1 and od % 2 == 0
    if pairs:
        for j in range(0, place.shape[0], 2):
            if (place[j + 1, 0] != place[j, 0] or place[j + 1, 1] != place[j, 1]
                    or place[j + 1, 2] != place[j, 2] or place[j, 3] != 0
                    or place[j + 1, 3] != 1):
                pairs = False
    counter = np.zeros(1, np.int64)  # the next tile (see micro.claim)
    for _th in prange(nth):
        # zeroed once: the blocks read up to ``slack`` past the last plane
        slab = np.zeros(plane * cs + slack, src.dtype)
        ld = max(plane, cols) + slack
        acc = np.empty(max(od, 6) * ld, src.dtype)
        uoff = np.empty(nunit, np.int64)
        idx = np.empty(ys_max + 3 * xs_max + 2 * step, np.int64)  # see _fill_split_planes
        zidx = np.empty(zs, np.int64)
        for _ in range(ntask):
            task = claim(counter)
            if task >= ntask:
                break
            n, g, mz, my0, my1, mx0, mx1 = _tile_bounds(
                task, ng, m[0], nyb, nxb, m[1], m[2], rows, cols)
            ys, xs = _fill_runs(src, n, g * cs, cs, mz, my0, my1, mx0, mx1, ss, offz, offy,
                                offx, mapz, mapy, mapx, qlo, step, slab, plane, idx)
            xq = _split_extent(xs, step)
            rlen = step * xq  # slab elements per source row
            ncols = mx1 - mx0
            nrows = my1 - my0
            # the z taps that read source planes (not zero padding)
            for zz in range(zs):
                iz = _lookup(mapz, qlo[0], ss[0] * mz + offz[0] + zz)
                zidx[zz] = iz if iz < src.shape[2] else -1
            a_lo, a_hi = _tap_range(zidx, 0, offz)
            for sx in range(t[2]):
                xr0, nx = _subgrid(mx0, ncols, t[2], sx)
                if nx == 0:
                    continue
                # the units' slab offsets for the tile's first row; row yr reads
                # yr*ss[1] source rows further
                _unit_offsets(uoff, cs, offz, offy, offx, ys, plane, step, xq, ss[2] * xr0)
                # Accumulator row yr sits at yr*rlen, as the merged span lays it out,
                # so each channel's tile is stored in one pass. A block's overshoot past
                # a row lands in later rows' parts, which are computed after it.
                one = merge and _merge_pays(nrows, rlen, nx, width)
                full = 0 if one or not inplace else nx // width * width
                for grp in range(1 if one else nrows):
                    yr = 0 if one else grp
                    span = ((nrows - 1) * rlen if one else 0) + nx
                    roff = yr * ss[1] * rlen
                    stack = ((mz % t[0]) * t[1] + (my0 + yr) % t[1]) * t[2] + sx
                    wg = wpk[stack, g]
                    aoff = yr * rlen
                    # units of the taps that read source rows: per z tap, the y taps
                    # [b_lo, b_hi) (all of them for a merged span, which the padding
                    # rows of its first and last rows do not empty)
                    b_lo, b_hi = (0, ty) if one else _tap_range(idx, yr * ss[1], offy)
                    if od <= 6 and a_hi - a_lo > 1:
                        b_lo, b_hi = 0, ty  # one block keeps one segment
                    per_a = ty * cs * tx
                    if a_lo >= a_hi or b_lo >= b_hi:
                        useg = (0, per_a, 0, 0)
                    elif b_lo == 0 and b_hi == ty:
                        useg = (a_lo * per_a, per_a, 1, (a_hi - a_lo) * per_a)
                    else:
                        useg = ((a_lo * ty + b_lo) * cs * tx, per_a, a_hi - a_lo,
                                (b_hi - b_lo) * cs * tx)
                    # the row's whole blocks in place, then the rest through acc
                    drow = (((n * dst.shape[1] + g * od) * nz + d0[0] + ds[0] * mz) * ny
                            + d0[1] + ds[1] * (my0 + yr)) * nx_all + d0[2] + mx0
                    for part in range(2):
                        q0 = 0 if part == 0 else full
                        q1 = full if part == 0 else span
                        if q0 >= q1:
                            continue
                        out = dflat if part == 0 else acc
                        obase = drow if part == 0 else aoff
                        old = nz * ny * nx_all if part == 0 else ld
                        if od <= 6 and useg[2] <= 1:
                            # one block, one pass (no units: the bias alone)
                            u0 = useg[0]
                            _block_rows(od, out, obase, old, slab, roff, uoff[u0:],
                                        wg[u0 * od:], useg[3] if useg[2] == 1 else 0, q0, q1,
                                        start, g * od, lanes)
                        else:
                            _reduce(od, acc, aoff, ld, out, obase, old, slab, roff, uoff, wg,
                                    nunit, useg, chunk, q0, q1, start, g * od, lanes)
                if full == nx:
                    continue
                if pairs:
                    # channels 2i and 2i+1 fill the even and odd columns of the same
                    # rows: written as whole rows, interleaved in vectors (a strided
                    # scalar store of each took 40% of a 2x upsampling's time)
                    x0 = d0[2] + 2 * mx0
                    for o in range(0, od, 2):
                        j = g * od + o
                        dplane = dst[n, place[j, 0], d0[0] + ds[0] * mz + place[j, 1]]
                        for yr in range(nrows):
                            drow = dplane[d0[1] + ds[1] * (my0 + yr) + place[j, 2],
                                          x0: x0 + 2 * nx]
                            a0 = acc[o * ld + yr * rlen: o * ld + yr * rlen + nx]
                            a1 = acc[(o + 1) * ld + yr * rlen: (o + 1) * ld + yr * rlen + nx]
                            for i in range(nx):
                                drow[2 * i] = a0[i]
                                drow[2 * i + 1] = a1[i]
                    continue
                for o in range(od):
                    j = g * od + o
                    dc, sz, sy, sxo = j, 0, 0, 0
                    if placed:
                        dc, sz, sy, sxo = place[j, 0], place[j, 1], place[j, 2], place[j, 3]
                    _store_tile(dst[n, dc, d0[0] + ds[0] * mz + sz],
                                acc[o * ld + full: o * ld + (nrows - 1) * rlen + nx], rlen,
                                zero, nrows, nx - full, d0[1] + ds[1] * my0 + sy, ds[1],
                                d0[2] + ds[2] * (mx0 + xr0 + t[2] * full) + sxo, ds[2] * t[2])


@njit(parallel=PARALLEL, **JIT)
def gather_wrapped(src, wpk, bias, dst, m, d0z, dsz, ssz, offz, offy, offx, mapz, qlo,
                   rows, nthreads):
    """:func:`gather_direct` for one source channel per group (depthwise convolutions and
    single-channel filters) with unit source steps along y and x, zero padding there, and
    output rows as long as the source rows (``same`` along x).

    The slab rows are not padded: they are the source rows themselves, ``Ix`` apart, as
    are the destination rows. So a tile's rows are one contiguous span of both, run as a
    single span of register blocks that write the destination in place (no accumulator,
    no store pass), and the slab is filled by one copy per source plane. A tap that
    reaches past the end of a row reads the neighbouring row instead of zero padding:
    only the edge columns (``-offx[0]`` on the left, ``offx[-1]`` on the right) take such
    taps, and they are recomputed afterwards from their own taps alone (not corrected by
    a subtraction, which would turn an infinite neighbour into a NaN).

    wpk : (1, G, od * nunit) packed as for :func:`gather_direct` (od <= 6: one block);
    m : int64[3] output positions (m[2] == Ix); the destination plane is ``d0z + dsz*mz``
    along z, rows and columns at the output positions themselves; ssz : source step along
    z; offz, offy, offx : tap offsets (offy relative to the output row, zero padding
    outside the source); mapz, qlo[0] : the z lookup (any padding mode); rows : output
    rows per tile.
    """
    ng = wpk.shape[1]
    od = dst.shape[1] // ng
    nsamp, csrc = src.shape[0], src.shape[1]
    iz_size, iy_size, wi = src.shape[2], src.shape[3], src.shape[4]
    nyb, _, ntask, nth = _task_grid(nsamp, ng, m, rows, wi, nthreads)
    tz, ty, tx = offz.shape[0], offy.shape[0], offx.shape[0]
    zs = offz[tz - 1] - offz[0] + 1
    ys_max = rows - 1 + offy[ty - 1] - offy[0] + 1
    lanes = 32 // src.itemsize
    width = _block_width(od) * lanes
    # zeros before the first row (taps left of it) and after the last (taps right of
    # it, and the reads of the last partial block)
    glo = max(0, -offx[0])
    nslab = glo + zs * ys_max * wi + max(0, offx[tx - 1]) + _MAX_NV * lanes
    nunit = tz * ty * tx
    zero = src.dtype.type(0)
    start = bias if bias.shape[0] > 0 else np.zeros(ng * od, src.dtype)
    nz, ny = dst.shape[2], dst.shape[3]
    dld = nz * ny * wi  # one destination channel to the next
    dflat = dst.reshape(dst.size)  # C-contiguous: views
    sflat = src.reshape(src.size)
    # The edge columns and, for each, its units whose taps stay inside the row.
    nleft = min(wi, glo)
    nright = min(wi - nleft, max(0, offx[tx - 1]))
    nedge = nleft + nright
    ecol = np.empty(nedge, np.int64)
    eunits = np.empty((nedge, nunit), np.int64)
    ecount = np.zeros(nedge, np.int64)
    # where each such unit's column run starts in cbuf (see the edge loop below)
    eoff = np.empty((nedge, nunit), np.int64)
    for k in range(nedge):
        x = k if k < nleft else wi - nedge + k
        ecol[k] = x
        for u in range(nunit):
            e = u % tx
            xi = x + offx[e]
            if xi >= 0 and xi < wi:
                eunits[k, ecount[k]] = u
                eoff[k, ecount[k]] = ((e * zs + offz[u // (tx * ty)] - offz[0]) * ys_max
                                      + offy[(u // tx) % ty] - offy[0])
                ecount[k] += 1
    counter = np.zeros(1, np.int64)  # the next batch of tiles (see micro.claim)
    # Tiles here are small (a 32x32 depthwise plane is about a microsecond), and two
    # threads claiming each one kept the counter's cache line moving between the cores:
    # batches of up to 16 tiles made 32x32 depthwise planes 8% faster (measured).
    batch = max(1, min(16, ntask // (nth * 32)))
    for _th in prange(nth):
        slab = np.zeros(nslab, src.dtype)
        acc = np.empty(od * width, src.dtype)
        uoff = np.empty(nunit, np.int64)
        zidx = np.empty(zs, np.int64)
        col = np.empty(rows, src.dtype)
        cbuf = np.empty(tx * zs * ys_max, src.dtype)
        for _ in range(ntask):
            first = claim(counter) * batch
            if first >= ntask:
                break
            for task in range(first, min(first + batch, ntask)):
                # tiles of whole rows: one tile along x
                n, g, mz, my0, my1, _, _ = _tile_bounds(task, ng, m[0], nyb, 1, m[1], wi, rows,
                                                        wi)
                nrows = my1 - my0
                ys = nrows - 1 + offy[ty - 1] - offy[0] + 1
                y0 = my0 + offy[0]
                # source rows [lo, hi) of the slab's ys rows lie inside the source
                lo = min(max(0, -y0), ys)
                hi = max(lo, min(ys, iy_size - y0))
                for zz in range(zs):
                    iz = _lookup(mapz, qlo[0], ssz * mz + offz[0] + zz)
                    zidx[zz] = iz if iz < iz_size else -1
                a_lo, a_hi = _tap_range(zidx, 0, offz)
                for zz in range(offz[a_lo] - offz[0] if a_lo < a_hi else 0,
                                offz[a_hi - 1] - offz[0] + 1 if a_lo < a_hi else 0):
                    base = glo + zz * ys * wi
                    iz = zidx[zz]
                    if iz < 0:
                        for i in range(ys * wi):
                            slab[base + i] = zero
                        continue
                    for i in range(lo * wi):
                        slab[base + i] = zero
                    r = ((n * csrc + g) * iz_size + iz) * iy_size * wi
                    copy_run(slab, base + lo * wi, sflat, r + (y0 + lo) * wi, (hi - lo) * wi,
                             zero)
                    for i in range(hi * wi, ys * wi):
                        slab[base + i] = zero
                u0 = a_lo * ty * tx
                u1 = a_hi * ty * tx if a_lo < a_hi else u0
                for a in range(tz):
                    for b in range(ty):
                        for e in range(tx):
                            uoff[(a * ty + b) * tx + e] = glo + ((offz[a] - offz[0]) * ys
                                                                 + offy[b] - offy[0]) * wi + offx[e]
                wg = wpk[0, g]
                span = nrows * wi
                full = span // width * width
                drow = (((n * dst.shape[1] + g * od) * nz + d0z + dsz * mz) * ny + my0) * wi
                _block_rows(od, dflat, drow, dld, slab, 0, uoff[u0:], wg[u0 * od:], u1 - u0,
                            0, full, start, g * od, lanes)
                if full < span:
                    # the last, partial block through acc (its overshoot must not reach the
                    # next tile's rows)
                    _block_rows(od, acc, -full, width, slab, 0, uoff[u0:], wg[u0 * od:],
                                u1 - u0, full, span, start, g * od, lanes)
                    for o in range(od):
                        copy_run(dflat, drow + o * dld + full, acc, o * width, span - full, zero)
                for k in range(nedge):
                    x = ecol[k]
                    # The slab columns that x's inside taps read, each copied to a run over
                    # the slab rows (cbuf, ys_max apart per plane): the sums below then run
                    # over vectors instead of strided scalars (a quarter of the kernel's time
                    # went to these columns on 32x32 depthwise planes).
                    for e in range(tx):
                        xi = x + offx[e]
                        if xi >= 0 and xi < wi:
                            for zz in range(zs):
                                cb = cbuf[(e * zs + zz) * ys_max:]
                                sb = glo + zz * ys * wi + xi
                                for r in range(ys):
                                    cb[r] = slab[sb + r * wi]
                    for o in range(od):
                        b0 = start[g * od + o]
                        for yr in range(nrows):
                            col[yr] = b0
                        for q in range(ecount[k]):
                            u = eunits[k, q]
                            if u < u0 or u >= u1:
                                continue
                            wv = wg[u * od + o]
                            c0 = eoff[k, q]
                            seg = cbuf[c0: c0 + nrows]
                            cc = col[:nrows]
                            for yr in range(nrows):
                                cc[yr] += wv * seg[yr]
                        d = drow + o * dld + x
                        for yr in range(nrows):
                            dflat[d + yr * wi] = col[yr]


@njit(parallel=PARALLEL, **JIT)
def weight_grad_direct(src, gout, m, ss, offz, offy, offx, mapz, mapy, mapx, qlo, rows, cols,
                       ng, nthreads):
    """:func:`weight_grad` by dot products of slab runs with the output gradient:
    per-thread partials (nthreads, G, od, cs, Tz, Ty, Tx) of
    ``sum gout[n, g*od + o, m] * src[n, g*cs + c, ss*m + off]``."""
    nsamp = src.shape[0]
    cs = src.shape[1] // ng
    od = gout.shape[1] // ng
    nyb, nxb, ntask, nth = _task_grid(nsamp, ng, m, rows, cols, nthreads)
    plane = _slab_size(1, rows, cols, ss, offz, offy, offx)
    tz, ty, tx = offz.shape[0], offy.shape[0], offx.shape[0]
    ys_max = ss[1] * (rows - 1) + offy[ty - 1] - offy[0] + 1
    xs_max = ss[2] * (cols - 1) + offx[tx - 1] - offx[0] + 1
    partial = np.zeros((nth, ng, od, cs, tz, ty, tx), src.dtype)
    sx = ss[2]
    flat = ss[1] == 1 and ss[2] == 1
    zero = src.dtype.type(0)
    for th in prange(nth):
        slab = np.empty(plane * cs, src.dtype)
        gflat = np.empty(max(plane, rows * cols), src.dtype)
        idx = np.empty(ys_max + xs_max, np.int64)
        for task in range(th, ntask, nth):
            n, g, mz, my0, my1, mx0, mx1 = _tile_bounds(
                task, ng, m[0], nyb, nxb, m[1], m[2], rows, cols)
            ys, xs = _fill_planes(src, n, g * cs, cs, mz, my0, my1, mx0, mx1, ss, offz, offy,
                                  offx, mapz, mapy, mapx, qlo, slab, plane, idx)
            ncols = mx1 - mx0
            nrows = my1 - my0
            for o in range(od):
                gplane = gout[n, g * od + o, mz]
                part = partial[th, g, o]
                if flat:
                    # The output gradient laid out with the slab's row stride (zeros in
                    # the gap columns): one long dot product per (channel, tap).
                    span = (nrows - 1) * xs + ncols
                    gf = gflat[:span]
                    for yr in range(nrows):
                        grow = gplane[my0 + yr, mx0: mx1]
                        seg = gf[yr * xs: yr * xs + ncols]
                        for i in range(ncols):
                            seg[i] = grow[i]
                        if yr < nrows - 1:
                            for i in range(yr * xs + ncols, (yr + 1) * xs):
                                gf[i] = zero
                    for c in range(cs):
                        sl = slab[c * plane: (c + 1) * plane]
                        for a in range(tz):
                            for bb in range(ty):
                                base = ((offz[a] - offz[0]) * ys + offy[bb] - offy[0]) * xs
                                for e in range(tx):
                                    seg = sl[base + offx[e] - offx[0]:]
                                    acc = zero
                                    for i in range(span):
                                        acc += gf[i] * seg[i]
                                    part[c, a, bb, e] += acc
                    continue
                for yr in range(nrows):
                    grow = gplane[my0 + yr, mx0: mx1]
                    for c in range(cs):
                        sl = slab[c * plane: (c + 1) * plane]
                        for a in range(tz):
                            zz = offz[a] - offz[0]
                            for bb in range(ty):
                                base = (zz * ys + yr * ss[1] + offy[bb] - offy[0]) * xs
                                for e in range(tx):
                                    start = base + offx[e] - offx[0]
                                    acc = zero
                                    for i in range(ncols):
                                        acc += grow[i] * sl[start + i * sx]
                                    part[c, a, bb, e] += acc
    return partial


_OK6, _OK5, _OK4, _OK3, _OK2, _OK1 = (make_outer(mu, 2) for mu in (6, 5, 4, 3, 2, 1))


@njit(inline="always")
def _outer_block(mu, out, ld, slab, uoff, u0, g, goff, ldg, npos, nrow, rstride):
    """:func:`make_outer`'s block for ``mu <= 6`` units x 2 vectors of channels."""
    if mu == 6:
        _OK6(out, ld, slab, uoff, u0, g, goff, ldg, npos, nrow, rstride)
    elif mu == 5:
        _OK5(out, ld, slab, uoff, u0, g, goff, ldg, npos, nrow, rstride)
    elif mu == 4:
        _OK4(out, ld, slab, uoff, u0, g, goff, ldg, npos, nrow, rstride)
    elif mu == 3:
        _OK3(out, ld, slab, uoff, u0, g, goff, ldg, npos, nrow, rstride)
    elif mu == 2:
        _OK2(out, ld, slab, uoff, u0, g, goff, ldg, npos, nrow, rstride)
    else:
        _OK1(out, ld, slab, uoff, u0, g, goff, ldg, npos, nrow, rstride)


@njit(parallel=PARALLEL, **JIT)
def weight_grad_blocked(src, gout, m, ss, offz, offy, offx, mapz, mapy, mapx, qlo, rows,
                        cols, ng, odp, nthreads):
    """:func:`weight_grad` without patches, for many destination channels: per-thread
    partials (nthreads, G, nunit, odp) of ``sum gout[n, g*od + o, m] * slab run of unit u``
    (units ordered as in :func:`gather_direct`; ``odp``: od rounded up
    to the register block's 2 vectors, the extra columns zero).

    Per tile the output gradient is laid out positions-major (``gt[p, o]``) and blocks
    of up to 6 units x 2 vectors of channels accumulate in registers over all the tile's
    positions (see :func:`gridconv._cpu.micro.make_outer`). Strided rows use phase-split
    slab rows as in :func:`gather_direct`.
    """
    nsamp = src.shape[0]
    cs = src.shape[1] // ng
    od = gout.shape[1] // ng
    nyb, nxb, ntask, nth = _task_grid(nsamp, ng, m, rows, cols, nthreads)
    tz, ty, tx = offz.shape[0], offy.shape[0], offx.shape[0]
    step = ss[2]
    zs = offz[tz - 1] - offz[0] + 1
    ys_max = ss[1] * (rows - 1) + offy[ty - 1] - offy[0] + 1
    xs_max = ss[2] * (cols - 1) + offx[tx - 1] - offx[0] + 1
    plane = zs * ys_max * step * _split_extent(xs_max, step)
    nunit = cs * tz * ty * tx
    lanes = 32 // src.itemsize
    partial = np.zeros((nth, ng, nunit, odp), src.dtype)
    nblk = (nunit + 5) // 6
    for th in prange(nth):
        slab = np.zeros(plane * cs + _MAX_NV * lanes, src.dtype)
        idx = np.empty(ys_max + 3 * xs_max + 2 * step, np.int64)  # see _fill_split_planes
        uoff = np.empty(nunit, np.int64)
        # zeroed once: the padded channel columns stay zero
        gt = np.zeros(max(plane, cols) * odp, src.dtype)
        for task in range(th, ntask, nth):
            n, g, mz, my0, my1, mx0, mx1 = _tile_bounds(
                task, ng, m[0], nyb, nxb, m[1], m[2], rows, cols)
            ys, xs = _fill_runs(src, n, g * cs, cs, mz, my0, my1, mx0, mx1, ss, offz, offy,
                                offx, mapz, mapy, mapx, qlo, step, slab, plane, idx)
            xq = _split_extent(xs, step)
            rlen = step * xq
            ncols = mx1 - mx0
            nrows = my1 - my0
            part = partial[th, g].reshape(nunit * odp)
            # The tile's rows are ``nrows`` runs of ``ncols``, ``ss[1]`` slab rows apart,
            # and gt holds them back to back; the blocks accumulate over the whole tile.
            # (Rows run one by one, not merged into one span: the gap columns between
            # them would be work thrown away.)
            for q in range(nrows):
                for o in range(od):
                    grow = gout[n, g * od + o, mz, my0 + q]
                    for i in range(ncols):
                        gt[(q * ncols + i) * odp + o] = grow[mx0 + i]
            _unit_offsets(uoff, cs, offz, offy, offx, ys, plane, step, xq, 0)
            # the units' runs stay in L1 while every block of channels reads them
            for blk in range(nblk):
                u0, mu = _channel_block(blk, nblk, nunit)
                for o0 in range(0, odp, 2 * lanes):
                    _outer_block(mu, part[u0 * odp + o0:], odp, slab, uoff, u0, gt, o0, odp,
                                 ncols, nrows, ss[1] * rlen)
    return partial


@njit(parallel=PARALLEL, **JIT)
def bias_grad(gout):
    """``db[o] = sum over n and positions of gout[n, o]`` (gout 3-D: (N, O, P))."""
    nsamp, nout, npos = gout.shape
    res = np.zeros(nout, gout.dtype)
    for o in prange(nout):
        acc = gout.dtype.type(0)
        for n in range(nsamp):
            row = gout[n, o]
            for i in range(npos):
                acc += row[i]
        res[o] = acc
    return res


@njit(parallel=PARALLEL, **JIT)
def pad_adjoint(gpad, out, mapz, mapy, mapx):
    """Fold a gradient over the padded grid back onto the source (reflect, replicate,
    circular): ``out[.., mz[a], my[b], mx[c]] += gpad[.., a, b, c]``. Parallel over
    (sample, channel) planes, each owned by one iteration."""
    nsamp, nch = gpad.shape[0], gpad.shape[1]
    for t in prange(nsamp * nch):
        n = t // nch
        c = t - n * nch
        dst = out[n, c]
        src = gpad[n, c]
        for a in range(src.shape[0]):
            for b in range(src.shape[1]):
                row = src[a, b]
                drow = dst[mapz[a], mapy[b]]
                for e in range(src.shape[2]):
                    drow[mapx[e]] += row[e]

