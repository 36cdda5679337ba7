"""Pooling kernels (max, average, L^p, global), forward and backward side by side.

Windowed kernels work on 3-D problems, ``(N, C, Z, Y, X)`` C-contiguous arrays (1-D and
2-D callers add unit axes, so each kernel compiles once per dtype), read through flat
views. The geometry arrives as small tables computed once by :mod:`gridconv.pool`:

``tab[a, 0, o]``, ``tab[a, 1, o]``, ``tab[a, 2, o]`` (axes ``a`` = z, y)
    window ``o`` starts at input index ``tab[a, 0, o]`` (``o * stride - padding``, may be
    negative) and its taps ``lo <= k < hi`` land inside the input, tap ``k`` reading
    ``tab[a, 0, o] + k * dil[a]``; padding rows are never visited;
``xg = (pad, s, k, d, L, direct)``
    the x axis: padding, stride, window, dilation, the length of one stride phase
    (below), and whether every window is two adjacent taps at stride 2 inside the row
    (the common geometry, which gets a loop of its own with constant strides);
``zptr, zcov`` / ``yptr, ycov``
    for the average / L^p backward pass, which windows cover each input index on the z
    and y axes (CSR: the windows of input index ``i`` are ``cov[ptr[i]:ptr[i + 1]]``).

Parallel layout.  The forward pass runs tasks of output rows ``(n, c, oz, oy)``, each
writing only its row. The average / L^p backward pass is a gather: tasks of *input* rows
``(n, c, iz, iy)``, each computing its row of the input gradient from every window
covering it. The max backward pass is a scatter of each window's gradient to its
winner, with tasks of whole ``(n, c)`` planes (a plane's windows only touch the
plane). Every element is written by exactly one task, so no pass needs atomics. Each
thread takes a contiguous range of tasks and keeps small row buffers; no temporary
larger than the output is ever made.

Stride phases.  Along x, window ``ox`` reads the padded row at ``u = ox*s + t*d`` (tap
``t``). A row is copied, padded (with -inf for max pooling, 0 otherwise), into the
thread's buffer split by ``u mod s``: phase ``q`` holds ``u = q, q+s, q+2s, ...``. Tap
``t`` of every window of the row is then the contiguous run
``phase[(t*d) mod s][(t*d) div s + ox]``, ``0 <= ox < O``, so each tap is one plain,
vectorisable loop over the row's windows, for any window, stride, dilation and padding:
no bounds logic, no strided or data-dependent access.

Max pooling goes through the window rows ``(kz, ky)`` and, in each, the taps in order,
so every window is scanned in row-major order (ties and NaNs resolve as in PyTorch).
Sums first add up the window rows (a contiguous loop per row), then take the taps of
that one row; their backward sums the shares of the covering window rows, then spreads
them over the taps (through phases, written back into the row).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .options import FASTMATH, PARALLEL

JIT = dict(fastmath=FASTMATH, cache=True, nogil=True)

# What the windowed kernels compute: the max, or a sum of x (average), |x| (p = 1),
# x^2 (p = 2) or |x|^p.
MAX, SUM_X, SUM_ABS, SUM_SQUARE, SUM_POW = 4, 0, 1, 2, 3


@njit(inline="always")
def _row_task(task, nch, nz, ny):
    """(n, c, z, y) of a row task; rows are ordered as in the C-contiguous array."""
    y = task % ny
    t = task // ny
    z = t % nz
    t //= nz
    c = t % nch
    return t // nch, c, z, y


@njit(inline="always")
def _take(v, m):
    """Does tap value ``v`` replace the current winner ``m``? (PyTorch's CPU rule)"""
    return (v > m) | (v != v)


@njit(inline="always")
def _span(q, pad, s, nx, L):
    """Phase ``q`` holds input ``x = j*s + q - pad``: the ``j`` range ``[jlo, jhi)`` inside
    the input."""
    jlo = (pad - q + s - 1) // s if pad > q else 0
    jhi = min(L, (pad + nx - q + s - 1) // s) if pad + nx > q else 0
    return jlo, max(jlo, jhi)


@njit(inline="always")
def _to_phases(row, ph, pad, s, L, fill):
    """The padded row into its stride phases: ``ph[q*L + j] = row[j*s + q - pad]``."""
    nx = row.shape[0]
    for q in range(s):
        dst = ph[q * L: (q + 1) * L]
        jlo, jhi = _span(q, pad, s, nx, L)
        for j in range(jlo):
            dst[j] = fill
        src = row[jlo * s + q - pad:]
        run = dst[jlo:jhi]
        for j in range(jhi - jlo):
            run[j] = src[j * s]
        for j in range(jhi, L):
            dst[j] = fill


@njit(inline="always")
def _from_phases(ph, row, pad, s, L):
    """``row[x] = ph[phase of x]`` for every input ``x`` (the inverse of the copy)."""
    nx = row.shape[0]
    for q in range(s):
        jlo, jhi = _span(q, pad, s, nx, L)
        src = ph[q * L + jlo: q * L + jhi]
        dst = row[jlo * s + q - pad:]
        for j in range(jhi - jlo):
            dst[j * s] = src[j]


@njit(inline="always")
def _tap(t, s, d, L):
    """Offset of tap ``t``'s run in the phases."""
    return ((t * d) % s) * L + (t * d) // s


# The running-max loops live in small jitted functions of their own (not inlined):
# compiled apart, their selects vectorise, which they do not inside the big kernels.

@njit(**JIT)
def _max_direct(row, orow, irow, n, rflat):
    """Running max over the taps ``row[2i]``, ``row[2i+1]`` of windows ``i < n``; the
    winners' flat indices (``rflat`` is the row's) into ``irow``."""
    for i in range(n):
        a = row[2 * i]
        b = row[2 * i + 1]
        m = orow[i]
        mi = irow[i]
        hit = _take(a, m)
        m = a if hit else m
        mi = rflat + 2 * i if hit else mi
        hit = _take(b, m)
        orow[i] = b if hit else m
        irow[i] = rflat + 2 * i + 1 if hit else mi


@njit(**JIT)
def _max_taps(ph, orow, irow, n, s, k, d, L, c0):
    """Running max over every tap of windows ``i < n``, read from the row's phases; tap
    ``t`` of window ``i`` has flat index ``c0 + i*s + t*d``."""
    for t in range(k):
        src = ph[_tap(t, s, d, L):]
        ct = c0 + t * d
        for i in range(n):
            v = src[i]
            m = orow[i]
            hit = _take(v, m)
            orow[i] = v if hit else m
            irow[i] = ct + i * s if hit else irow[i]


# ----------------------------------------------------------------------- forward ---

@njit(**JIT)
def _forward_tasks(x, out, idx, g, mode, want_idx, factor, tab, dil, xg, inv, p, inv_p,
                   one_minus_p, task0, task1, ph, vacc, scratch):
    """The output rows ``task0 <= task < task1`` of :func:`pool_forward`, with one
    thread's buffers: ``ph`` (stride phases of a row), ``vacc`` (a row), ``scratch``
    (the winners' indices when they are not wanted)."""
    nsamp, nch, nz, ny, nx = x.shape
    oz_n, oy_n, ox_n = out.shape[2], out.shape[3], out.shape[4]
    pad, s, k, d, L, direct = xg[0], xg[1], xg[2], xg[3], xg[4], xg[5]
    xf = x.reshape(-1)
    of = out.reshape(-1)
    jf = idx.reshape(-1)
    gf = g.reshape(-1)
    dz, dy = dil[0], dil[1]
    plane = nz * ny * nx
    zero = x.dtype.type(0)
    ninf = x.dtype.type(-np.inf)
    for task in range(task0, task1):
        n, c, oz, oy = _row_task(task, nch, oz_n, oy_n)
        base = (n * nch + c) * plane
        zs, zlo, zhi = tab[0, 0, oz], tab[0, 1, oz], tab[0, 2, oz]
        ys, ylo, yhi = tab[1, 0, oy], tab[1, 1, oy], tab[1, 2, oy]
        orow = of[task * ox_n: (task + 1) * ox_n]
        if mode == MAX:
            irow = jf[task * ox_n: (task + 1) * ox_n] if want_idx else scratch
            # the initial winner: the window's first tap inside the input, or -1
            first = ((zs + zlo * dz) * ny + ys + ylo * dy) * nx
            for ox in range(ox_n):
                orow[ox] = ninf
                t0 = (pad - ox * s + d - 1) // d if ox * s < pad else 0
                x0 = ox * s - pad + t0 * d
                ok = zlo < zhi and ylo < yhi and t0 < k and x0 < nx
                irow[ox] = first + x0 if ok else -1
            for kz in range(zlo, zhi):
                iz = zs + kz * dz
                for ky in range(ylo, yhi):
                    rflat = (iz * ny + ys + ky * dy) * nx
                    row = xf[base + rflat: base + rflat + nx]
                    if direct:
                        _max_direct(row, orow, irow, ox_n, rflat)
                    else:
                        _to_phases(row, ph, pad, s, L, ninf)
                        _max_taps(ph, orow, irow, ox_n, s, k, d, L, rflat - pad)
            continue
        # sums: the window rows first, then the taps along x
        for i in range(nx):
            vacc[i] = zero
        for kz in range(zlo, zhi):
            iz = zs + kz * dz
            for ky in range(ylo, yhi):
                r = base + (iz * ny + ys + ky * dy) * nx
                row = xf[r: r + nx]
                if mode == SUM_X:
                    for i in range(nx):
                        vacc[i] += row[i]
                elif mode == SUM_SQUARE:
                    for i in range(nx):
                        vacc[i] += row[i] * row[i]
                elif mode == SUM_ABS:
                    for i in range(nx):
                        vacc[i] += abs(row[i])
                else:
                    for i in range(nx):
                        vacc[i] += abs(row[i]) ** p
        if direct:
            for i in range(ox_n):
                orow[i] = vacc[2 * i] + vacc[2 * i + 1]
        else:
            _to_phases(vacc, ph, pad, s, L, zero)
            for i in range(ox_n):
                orow[i] = zero
            for t in range(k):
                src = ph[_tap(t, s, d, L):]
                for i in range(ox_n):
                    orow[i] += src[i]
        if mode == SUM_X:
            scale = inv[0, oz] * inv[1, oy]
            invx = inv[2]
            for ox in range(ox_n):
                orow[ox] *= scale * invx[ox]
            continue
        for ox in range(ox_n):
            acc = orow[ox]
            if mode == SUM_SQUARE:
                y = np.sqrt(acc)
            elif mode == SUM_ABS:
                y = acc
            else:
                y = acc ** inv_p
            if factor:  # (no division by y == 0: numba would raise)
                gv = gf[task * ox_n + ox]
                if y == zero:
                    y = zero
                elif mode == SUM_SQUARE:
                    y = gv / y
                elif mode == SUM_ABS:
                    y = gv
                else:
                    y = gv * y ** one_minus_p
            orow[ox] = y


@njit(parallel=PARALLEL, **JIT)
def pool_forward(x, out, idx, g, mode, want_idx, factor, tab, dil, xg, inv, p, inv_p,
                 one_minus_p, nthreads):
    """Windowed pooling, one task per output row.

    ``mode == MAX``: ``out`` = max over each window (padding never wins) and, with
    ``want_idx``, ``idx`` = the winner's flat spatial index in its (n, c) plane. A tap
    replaces the current winner when it is larger or NaN (PyTorch's CPU rule): ties go
    to the first tap in scan order, NaNs to the last NaN. The winner starts as the
    window's first tap inside the input, so a window of -inf values still has an index;
    a window with no tap inside the input (only possible with dilation) gives -inf and
    index -1.

    Other modes: ``out = sum over each window of term(x)`` (padding adds nothing), then

    - ``* inv[0, oz] * inv[1, oy] * inv[2, ox]`` (average pooling, ``mode == SUM_X``: the
      reciprocal divisor factorises over the axes), or
    - ``** (1/p)`` (L^p pooling), and, with ``factor``, the L^p gradient's window
      factor ``g * out^(1-p)`` instead (0 where ``out == 0``).

    ``idx`` (without ``want_idx``) and ``g`` (without ``factor``) may be dummies.
    """
    ntask = out.shape[0] * out.shape[1] * out.shape[2] * out.shape[3]
    nth = max(1, min(nthreads, ntask))
    for th in prange(nth):
        ph = np.empty(xg[1] * xg[4], dtype=x.dtype)
        vacc = np.empty(x.shape[4], dtype=x.dtype)
        scratch = np.empty(out.shape[4], dtype=np.int64)
        _forward_tasks(x, out, idx, g, mode, want_idx, factor, tab, dil, xg, inv, p, inv_p,
                       one_minus_p, th * ntask // nth, (th + 1) * ntask // nth, ph, vacc,
                       scratch)


# ----------------------------------------------------------------------- backward ---

@njit(parallel=PARALLEL, **JIT)
def max_scatter(g, idx, gi):
    """Max pooling's backward, one task per (n, c) plane: ``gi[p] = 0``, then each
    window's gradient ``g[p, o]`` is added at its winner ``idx[p, o]``.

    ``g``, ``idx``: (P, O); ``gi``: (P, S). Indices ``-1`` (windows without a tap inside
    the input) route nothing. Returns, per plane, the number of ``-1`` indices and the
    number of indices outside ``[-1, S)`` (skipped), for the caller to validate.
    """
    nplane, size = gi.shape
    nout = g.shape[1]
    zero = gi.dtype.type(0)
    counts = np.zeros((nplane, 2), dtype=np.int64)
    for pl in prange(nplane):
        plane = gi[pl]
        for i in range(size):
            plane[i] = zero
        grow = g[pl]
        jrow = idx[pl]
        empty = 0
        bad = 0
        for o in range(nout):
            j = jrow[o]
            if 0 <= j < size:  # always, for valid indices: a predictable branch
                plane[j] += grow[o]
            elif j == -1:
                empty += 1
            else:
                bad += 1
        counts[pl, 0] = empty
        counts[pl, 1] = bad
    return counts


@njit(inline="always")
def _lp_factor(xv, mode, p_minus_1, zero, one):
    """``sign(x) |x|^(p-1)``: 0 at x = 0 (also for p = 1), NaN for NaN."""
    if mode == SUM_SQUARE:
        return xv
    f = one if mode == SUM_ABS else abs(xv) ** p_minus_1
    if xv > zero:
        return f
    if xv < zero:
        return -f
    return xv * zero


@njit(**JIT)
def _gather_tasks(g, gi, x, mode, lp, tab, xg, inv, zptr, zcov, yptr, ycov, p_minus_1,
                  task0, task1, ph, share):
    """The input rows ``task0 <= task < task1`` of :func:`pool_gather`, with one
    thread's buffers ``ph`` (stride phases of a row) and ``share`` (an output row)."""
    nsamp, nch, nz, ny, nx = gi.shape
    oz_n, oy_n, ox_n = g.shape[2], g.shape[3], g.shape[4]
    pad, s, k, d, L, direct = xg[0], xg[1], xg[2], xg[3], xg[4], xg[5]
    gf = g.reshape(-1)
    gif = gi.reshape(-1)
    xf = x.reshape(-1)
    zero = gi.dtype.type(0)
    one = gi.dtype.type(1)
    invx = inv[2]
    for task in range(task0, task1):
        n, c, iz, iy = _row_task(task, nch, nz, ny)
        row = gif[task * nx: (task + 1) * nx]
        for i in range(ox_n):
            share[i] = zero
        for a in range(zptr[iz], zptr[iz + 1]):
            oz = zcov[a]
            for b in range(yptr[iy], yptr[iy + 1]):
                oy = ycov[b]
                scale = inv[0, oz] * inv[1, oy]
                o0 = (((n * nch + c) * oz_n + oz) * oy_n + oy) * ox_n
                grow = gf[o0: o0 + ox_n]
                for i in range(ox_n):
                    share[i] += grow[i] * scale * invx[i]
        if direct:
            for i in range(ox_n):
                row[2 * i] = share[i]
                row[2 * i + 1] = share[i]
            for i in range(2 * ox_n, nx):
                row[i] = zero
        else:
            for j in range(s * L):
                ph[j] = zero
            for t in range(k):
                acc = ph[_tap(t, s, d, L):]
                for i in range(ox_n):
                    acc[i] += share[i]
            _from_phases(ph, row, pad, s, L)
        if lp:
            xrow = xf[task * nx: (task + 1) * nx]
            for i in range(nx):
                row[i] *= _lp_factor(xrow[i], mode, p_minus_1, zero, one)


@njit(parallel=PARALLEL, **JIT)
def pool_gather(g, gi, x, mode, lp, tab, xg, inv, zptr, zcov, yptr, ycov, p_minus_1,
                nthreads):
    """Average / L^p pooling's backward as a gather, one task per input row:
    ``gi[n, c, i] = sum over the windows o covering i of g[n, c, o] * inv(o)`` (the
    gradient of average pooling): the task sums the shares of the window rows covering
    its row, then spreads them over the taps. With ``lp`` the row is then multiplied by
    ``sign(x) |x|^(p-1)`` (the gradient of L^p pooling: ``g`` is then ``pool_forward``'s
    window factor and ``inv`` ones; ``x`` is otherwise a dummy).
    """
    ntask = gi.shape[0] * gi.shape[1] * gi.shape[2] * gi.shape[3]
    nth = max(1, min(nthreads, ntask))
    for th in prange(nth):
        ph = np.empty(xg[1] * xg[4], dtype=gi.dtype)
        share = np.empty(g.shape[4], dtype=gi.dtype)
        _gather_tasks(g, gi, x, mode, lp, tab, xg, inv, zptr, zcov, yptr, ycov, p_minus_1,
                      th * ntask // nth, (th + 1) * ntask // nth, ph, share)


# -------------------------------------------------------------------- global pooling ---

@njit(parallel=PARALLEL, **JIT)
def global_reduce(x, vals, idx, sums, want_max, chunk):
    """Planes flattened to ``x`` (P, S), cut into chunks of ``chunk`` elements; one task
    per (plane, chunk): the max (NaN wins, PyTorch's rule) and its flat index into
    ``vals``/``idx`` when ``want_max``, else the float64 sum into ``sums``. The caller
    combines the chunks of each plane."""
    nplane, size = x.shape
    nchunk = (size + chunk - 1) // chunk
    ninf = x.dtype.type(-np.inf)
    for task in prange(nplane * nchunk):
        pl = task // nchunk
        ch = task - pl * nchunk
        lo = ch * chunk
        hi = min(size, lo + chunk)
        seg = x[pl, lo:hi]
        if want_max:
            m = ninf
            mi = 0
            for i in range(hi - lo):
                v = seg[i]
                c = _take(v, m)
                m = v if c else m
                mi = i if c else mi
            vals[pl, ch] = m
            idx[pl, ch] = lo + mi
        else:
            acc = 0.0
            for i in range(hi - lo):
                acc += np.float64(seg[i])
            sums[pl, ch] = acc
