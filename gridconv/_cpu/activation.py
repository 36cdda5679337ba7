"""CPU kernels of the activation functions, and the small drivers that call them.

Two parallel kernels, each serving forward and backward passes so that it compiles once
per dtype:

- :func:`elementwise` (relu, leaky_relu, prelu, abs_rectify, sigmoid, tanh): the array is
  flat and contiguous, cut into chunks of ``_CHUNK`` elements, a contiguous run of
  chunks per thread. The operation is a code branched on *outside* the inner loops, so
  every operation gets its own vectorised loop. leaky_relu and prelu are one operation
  with a slope per run of ``nb`` elements (prelu: a channel's spatial block of the
  ``(N, C, *S)`` array, ``nb = prod(S)``); the slopes' gradient is summed into
  per-thread partials (float64), never shared.
- :func:`softmax` (softmax, log_softmax) over axis 1 of an ``(A, C, B)`` array: a task is
  a block of ``width`` positions along ``B`` of one ``a``; the channel loops are outer
  and every inner loop runs over the contiguous block (for ``(N, C, H, W)``: over
  pixels). With ``B == 1`` (the last axis, dense layers) a task is ``width`` whole
  contiguous rows instead.

Exponentials are computed by :func:`_exp` / :func:`_expm1` below (range reduction, a
polynomial and an exponent assembled from bits): unlike calls of the C library's
``exp``, they vectorise, and they are accurate to about 1 ulp. Derivatives are applied
as products, ``grad_x = grad_output * f'(x)``, so a NaN in either reaches the gradient;
``f'(NaN)`` is NaN.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic

from .options import FASTMATH, PARALLEL

# error_model="numpy": a float division by zero gives inf/NaN instead of a check that
# raises ZeroDivisionError (the check stops loops with a division from vectorising).
JIT = dict(fastmath=FASTMATH, cache=True, nogil=True, error_model="numpy")
# ...and without 'reassoc' wherever the order of operations is chosen for accuracy (the
# range reduction of exp, expm1's s*q + (s - 1), log_softmax's (x - m) - log(s), which
# must not become x - (m + log(s))). Only the reductions along a contiguous row need
# 'reassoc' (to vectorise); they live in helpers of their own.
JIT_ORDERED = dict(JIT, fastmath=FASTMATH - {"reassoc"})

# Elements per task of the elementwise kernel.
_CHUNK = 4096
# Below this many elements a call runs on one thread: waking the pool costs more.
_SERIAL_ELEMENTS = 1 << 15
# Bytes of one softmax block (C x width elements): stays in L2 between the passes.
_BLOCK_BYTES = 64 * 1024

# Operation codes of the elementwise kernel; GRAD + code is the gradient. prelu is LEAKY
# with one slope per channel.
RELU, LEAKY, ABS, SIGMOID, TANH = 0, 1, 2, 3, 4
# Gradient only: the derivative from the forward output instead of the input.
SIGMOID_OUT, TANH_OUT = 5, 6
GRAD = 16
# Modes of the softmax kernel.
FORWARD, BACKWARD_X, BACKWARD_Y = 0, 1, 2


def run(kernel, n: int, *args):
    """Call a parallel kernel with the thread count as its last argument; below
    ``_SERIAL_ELEMENTS`` elements the parallel region is narrowed to one thread."""
    if n >= _SERIAL_ELEMENTS:
        return kernel(*args, numba.get_num_threads())
    before = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        return kernel(*args, 1)
    finally:
        numba.set_num_threads(before)


# ------------------------------------------------------------------ exp and expm1 ---


# Written as intrinsics (LLVM IR emitted at the call site) so that the loops calling them
# vectorise without Numba's costly IR-level inlining. Cody-Waite reduction
# ``x = n ln2 + r``, ``|r| <= ln2 / 2`` (``ln2_hi * n`` is exact), ``q = expm1(r)`` by its
# Taylor polynomial (degree 8 for float32, 14 for float64: truncation below the rounding
# error), ``s = 2**n`` assembled from bits; ``exp(x) = s + s*q``, ``expm1(x) = s*q + (s-1)``
# (``s == 1`` near 0: no cancellation). Accurate to about 1 ulp. Below ``lo`` (where
# exp(x) leaves the normal range) ``exp`` is 0 and ``expm1`` is -1, above ``hi`` both are
# inf, NaN gives NaN. The caller's fastmath flags apply to the emitted instructions; its
# functions have no 'reassoc' (which would undo the reduction's order).

_LN2_HI, _LN2_LO = 0.693359375, -2.12194440054690582767e-4
_LIMITS = {32: (-87.33, 88.0), 64: (-708.39, 709.0)}
_DEGREE = {32: 8, 64: 14}


def _emit_exp(builder, x, expm1: bool):
    fty = x.type
    bits = 32 if isinstance(fty, ir.FloatType) else 64
    rnd = np.float32 if bits == 32 else np.float64

    def const(v):
        return ir.Constant(fty, float(rnd(v)))

    lo, hi = _LIMITS[bits]
    below = builder.fcmp_ordered("<", x, const(lo))
    above = builder.fcmp_ordered(">", x, const(hi))
    xc = builder.select(below, const(lo), builder.select(above, const(hi), x))
    floor = builder.module.declare_intrinsic("llvm.floor", [fty])
    n = builder.call(floor, [builder.fadd(builder.fmul(xc, const(1 / math.log(2))),
                                          const(0.5))])
    n = builder.select(builder.fcmp_unordered("uno", n, n), const(0), n)  # NaN: no fptosi
    r = builder.fsub(builder.fsub(xc, builder.fmul(n, const(_LN2_HI))),
                     builder.fmul(n, const(_LN2_LO)))
    deg = _DEGREE[bits]
    p = const(1 / math.factorial(deg))
    for i in range(deg - 1, 0, -1):  # q = r (1 + r/2 + r^2/6 + ...), Horner
        p = builder.fadd(const(1 / math.factorial(i)), builder.fmul(r, p))
    q = builder.fmul(r, p)
    ity = ir.IntType(bits)
    e = builder.add(builder.fptosi(n, ity), ir.Constant(ity, 127 if bits == 32 else 1023))
    s = builder.bitcast(builder.shl(e, ir.Constant(ity, 23 if bits == 32 else 52)), fty)
    ok = builder.fcmp_ordered(">=", x, const(lo))
    s = builder.select(ok, s, builder.select(below, const(0), x))  # NaN: s = NaN
    s = builder.select(above, const(math.inf), s)
    if expm1:
        return builder.fadd(builder.fmul(s, q), builder.fsub(s, const(1)))
    return builder.fadd(s, builder.fmul(s, q))


@intrinsic
def _exp(typingctx, x):
    """``exp(x)``, vectorisable (see above)."""
    if x not in (types.float32, types.float64):
        return None
    return x(x), lambda context, builder, sig, args: _emit_exp(builder, args[0], False)


@intrinsic
def _expm1(typingctx, x):
    """``exp(x) - 1`` without cancellation near 0, vectorisable (see above)."""
    if x not in (types.float32, types.float64):
        return None
    return x(x), lambda context, builder, sig, args: _emit_exp(builder, args[0], True)


# ------------------------------------------------------------------- elementwise ---


@njit(**JIT_ORDERED)
def _chunk(g, x, out, op, slope, lo, hi):
    """Elements ``lo:hi`` of :func:`elementwise` (all but GRAD + LEAKY), one slope."""
    zero = x.dtype.type(0)
    one = x.dtype.type(1)
    two = x.dtype.type(2)
    four = x.dtype.type(4)
    gs = g[lo:hi]
    xs = x[lo:hi]
    ys = out[lo:hi]
    if op == RELU:
        for i in range(hi - lo):
            v = xs[i]
            ys[i] = zero if v <= zero else v  # NaN <= 0 is False: NaN stays
    elif op == LEAKY:
        for i in range(hi - lo):
            v = xs[i]
            ys[i] = v if v > zero else slope * v
    elif op == ABS:
        for i in range(hi - lo):
            ys[i] = abs(xs[i])
    elif op == SIGMOID:
        # e = exp(-|x|) <= 1 never overflows: 1/(1+e) for x >= 0, e/(1+e) below
        for i in range(hi - lo):
            v = xs[i]
            e = _exp(-abs(v))
            r = one / (one + e)
            ys[i] = r if v >= zero else e * r
    elif op == TANH:
        # tanh|x| = -m / (2 + m) with m = expm1(-2|x|): no cancellation near 0
        for i in range(hi - lo):
            v = xs[i]
            m = _expm1(-two * abs(v))
            t = -m / (two + m)
            ys[i] = t if v > zero else (-t if v < zero else v)  # tanh(0) = 0, NaN stays
    elif op == GRAD + RELU:
        for i in range(hi - lo):
            v = xs[i]
            ys[i] = gs[i] * (one if v > zero else (zero if v <= zero else v))
    elif op == GRAD + ABS:
        for i in range(hi - lo):
            v = xs[i]
            d = one if v > zero else (-one if v < zero else (zero if v == zero else v))
            ys[i] = gs[i] * d
    elif op == GRAD + SIGMOID:
        # s(1 - s) = e / (1 + e)^2 with e = exp(-|x|): no cancellation in the tails
        for i in range(hi - lo):
            e = _exp(-abs(xs[i]))
            p = one + e
            ys[i] = gs[i] * (e / (p * p))
    elif op == GRAD + TANH:
        # 1 - tanh^2 = 4e / (1 + e)^2 with e = exp(-2|x|)
        for i in range(hi - lo):
            e = _exp(-two * abs(xs[i]))
            p = one + e
            ys[i] = gs[i] * (four * e / (p * p))
    elif op == GRAD + SIGMOID_OUT:
        for i in range(hi - lo):
            y = xs[i]
            ys[i] = gs[i] * (y * (one - y))
    else:  # GRAD + TANH_OUT
        for i in range(hi - lo):
            y = xs[i]
            ys[i] = gs[i] * (one - y * y)


@njit(**JIT)
def _leaky_grad_chunk(g, x, out, slope, lo, hi):
    """GRAD + LEAKY on elements ``lo:hi``; returns ``sum g * min(x, 0)`` over them (the
    slope's gradient; a reduction, hence 'reassoc' to vectorise)."""
    zero = x.dtype.type(0)
    one = x.dtype.type(1)
    gs = g[lo:hi]
    xs = x[lo:hi]
    ys = out[lo:hi]
    acc = zero
    for i in range(hi - lo):
        v = xs[i]
        gv = gs[i]
        ys[i] = gv * (one if v > zero else (slope if v <= zero else v))
        acc += gv * (zero if v > zero else v)
    return acc


@njit(**JIT_ORDERED)
def _leaky_rows(g, x, w, out, backward, lo, hi, part):
    """LEAKY or GRAD + LEAKY on elements ``lo:hi`` of a flat ``(A, C)`` array (a dense
    layer's prelu, ``nb == 1``): the slope ``w[c]`` runs along the contiguous rows, so the
    loops vectorise; the backward adds ``g * min(x, 0)`` to ``part[c]``."""
    nc = w.shape[0]
    zero = x.dtype.type(0)
    one = x.dtype.type(1)
    i = lo
    while i < hi:
        c0 = i % nc
        end = min(hi, i + nc - c0)  # to the end of the row at most
        xs = x[i:end]
        ys = out[i:end]
        ws = w[c0:c0 + end - i]
        if backward:
            gs = g[i:end]
            ps = part[c0:c0 + end - i]
            for j in range(end - i):
                v = xs[j]
                gv = gs[j]
                ys[j] = gv * (one if v > zero else (ws[j] if v <= zero else v))
                ps[j] += gv * (zero if v > zero else v)
        else:
            for j in range(end - i):
                v = xs[j]
                ys[j] = v if v > zero else ws[j] * v
        i = end


@njit(parallel=PARALLEL, **JIT_ORDERED)
def elementwise(g, x, w, out, op, nb, nthreads):
    """``out = f(x)`` for a forward code (``g`` unused), ``out = g * f'(x)`` for
    ``GRAD + code``; SIGMOID_OUT and TANH_OUT read the forward output from ``x``.

    All arrays are flat and of one dtype. LEAKY takes its slope from ``w``: the slope
    changes every ``nb`` elements and cycles through ``w.shape[0]`` values (prelu's
    channels; one value and ``nb = x.size`` for leaky_relu). Returns per-thread partials
    (float64, shape (threads, w.shape[0])) of the slopes' gradient ``sum g * min(x, 0)``
    for GRAD + LEAKY, zeros otherwise; the caller sums the first axis.

    (The ``prange`` body only calls serial helpers: Numba's parallel passes then see a
    small loop, which cuts compile time.)
    """
    n = x.shape[0]
    nc = w.shape[0]
    ntask = (n + _CHUNK - 1) // _CHUNK
    nth = max(1, min(nthreads, ntask))
    partial = np.zeros((nth, nc), np.float64)
    by_row = op == LEAKY or op == GRAD + LEAKY
    for th in prange(nth):
        # a contiguous run of chunks per thread: one thread owns partial[th]
        for t in range(th * ntask // nth, (th + 1) * ntask // nth):
            lo = t * _CHUNK
            hi = min(n, lo + _CHUNK)
            if not by_row:
                _chunk(g, x, out, op, w[0], lo, hi)
                continue
            if nb == 1 and nc > 1:  # one slope per element of a row
                _leaky_rows(g, x, w, out, op != LEAKY, lo, hi, partial[th])
                continue
            while lo < hi:  # the runs of one slope inside the chunk
                row = lo // nb
                end = min(hi, (row + 1) * nb)
                c = row % nc
                if op == LEAKY:
                    _chunk(g, x, out, op, w[c], lo, end)
                else:
                    partial[th, c] += _leaky_grad_chunk(g, x, out, w[c], lo, end)
                lo = end
    return partial


# ---------------------------------------------------------------- softmax family ---


@njit(**JIT_ORDERED)
def _block_forward(xa, ya, b0, b1, log, m, s):
    """softmax (or log_softmax) of the columns ``b0:b1`` of the (C, B) slices ``xa`` into
    ``ya``; ``m`` and ``s`` are scratch rows of at least ``b1 - b0`` elements."""
    nc = xa.shape[0]
    w = b1 - b0
    zero = xa.dtype.type(0)
    one = xa.dtype.type(1)
    mm = m[:w]
    ss = s[:w]
    first = xa[0, b0:b1]
    for j in range(w):
        mm[j] = first[j]
        ss[j] = zero
    for c in range(1, nc):
        row = xa[c, b0:b1]
        for j in range(w):
            v = row[j]
            mm[j] = v if v > mm[j] else mm[j]  # a NaN is not the max, but poisons the sum
    if log:
        for c in range(nc):
            row = xa[c, b0:b1]
            for j in range(w):
                ss[j] += _exp(row[j] - mm[j])
        for j in range(w):
            ss[j] = np.log(ss[j])
        for c in range(nc):
            row = xa[c, b0:b1]
            out = ya[c, b0:b1]
            for j in range(w):
                out[j] = (row[j] - mm[j]) - ss[j]
    else:
        for c in range(nc):
            row = xa[c, b0:b1]
            out = ya[c, b0:b1]
            for j in range(w):
                e = _exp(row[j] - mm[j])
                out[j] = e
                ss[j] += e
        for j in range(w):
            ss[j] = one / ss[j]
        for c in range(nc):
            out = ya[c, b0:b1]
            for j in range(w):
                out[j] *= ss[j]


@njit(**JIT_ORDERED)
def _block_backward(ga, ya, da, b0, b1, log, s):
    """Gradient of the columns ``b0:b1`` from the forward output ``ya``:
    softmax ``da = y * (g - sum_c g*y)``, log_softmax ``da = g - exp(y) * sum_c g``.
    ``da`` may be ``ya`` itself (each element is read before it is written)."""
    nc = ga.shape[0]
    w = b1 - b0
    zero = ga.dtype.type(0)
    ss = s[:w]
    for j in range(w):
        ss[j] = zero
    for c in range(nc):
        grow = ga[c, b0:b1]
        if log:
            for j in range(w):
                ss[j] += grow[j]
        else:
            yrow = ya[c, b0:b1]
            for j in range(w):
                ss[j] += grow[j] * yrow[j]
    for c in range(nc):
        grow = ga[c, b0:b1]
        yrow = ya[c, b0:b1]
        drow = da[c, b0:b1]
        if log:
            for j in range(w):
                drow[j] = grow[j] - _exp(yrow[j]) * ss[j]
        else:
            for j in range(w):
                drow[j] = yrow[j] * (grow[j] - ss[j])


@njit(**JIT)
def _row_sum(a, b, use_b):
    """``sum(a)``, or ``sum(a * b)`` when ``use_b`` (vectorised with 'reassoc')."""
    acc = a.dtype.type(0)
    if use_b:
        for c in range(a.shape[0]):
            acc += a[c] * b[c]
    else:
        for c in range(a.shape[0]):
            acc += a[c]
    return acc


@njit(**JIT_ORDERED)
def _row_task(g, src, out, r0, r1, log, mode):
    """Rows ``r0:r1`` of (A, C) arrays: the reductions run along the contiguous rows."""
    one = src.dtype.type(1)
    for a in range(r0, r1):
        yr = src[a]
        dr = out[a]
        if mode != BACKWARD_Y:
            xr = src[a]
            mx = xr[0]
            for c in range(1, xr.shape[0]):
                v = xr[c]
                mx = v if v > mx else mx
            for c in range(xr.shape[0]):  # exp(x - max), kept to be summed
                dr[c] = _exp(xr[c] - mx)
            total = _row_sum(dr, dr, False)
            if log:
                ls = np.log(total)
                for c in range(xr.shape[0]):
                    dr[c] = (xr[c] - mx) - ls
            else:
                inv = one / total
                for c in range(xr.shape[0]):
                    dr[c] *= inv
            yr = out[a]
        if mode != FORWARD:
            gr = g[a]
            if log:
                total = _row_sum(gr, gr, False)
                for c in range(gr.shape[0]):
                    dr[c] = gr[c] - _exp(yr[c]) * total
            else:
                total = _row_sum(gr, yr, True)
                for c in range(gr.shape[0]):
                    dr[c] = yr[c] * (gr[c] - total)


@njit(**JIT_ORDERED)
def _block_task(g, src, out, a, b0, b1, log, mode):
    """The block ``b0:b1`` of ``a`` for :func:`softmax`."""
    s = np.empty(b1 - b0, src.dtype)
    ya = src[a]
    if mode != BACKWARD_Y:
        m = np.empty(b1 - b0, src.dtype)
        _block_forward(src[a], out[a], b0, b1, log, m, s)
        ya = out[a]
    if mode != FORWARD:
        _block_backward(g[a], ya, out[a], b0, b1, log, s)


@njit(parallel=PARALLEL, **JIT_ORDERED)
def softmax(g, src, out, log, mode, width, nthreads):
    """softmax (``log`` False) or log_softmax over axis 1 of (A, C, B) arrays, in tasks
    of ``width`` positions of one ``a`` (of ``width`` rows when ``B == 1``).

    ``mode`` FORWARD: ``out = softmax(src)`` (``g`` unused). BACKWARD_X: the gradient,
    ``src`` is the input (the output is recomputed task by task into ``out``, then
    overwritten there by the gradient). BACKWARD_Y: the gradient, ``src`` is the forward
    output.
    """
    na, nc, nb = src.shape
    rows = nb == 1
    nbb = 1 if rows else (nb + width - 1) // width
    ntask = (na + width - 1) // width if rows else na * nbb
    g2 = g.reshape(na, nc * nb)
    src2 = src.reshape(na, nc * nb)
    out2 = out.reshape(na, nc * nb)
    for t in prange(ntask):
        if rows:
            _row_task(g2, src2, out2, t * width, min(na, (t + 1) * width), log, mode)
        else:
            a = t // nbb
            b0 = (t - a * nbb) * width
            _block_task(g, src, out, a, b0, min(nb, b0 + width), log, mode)


def softmax_width(shape3: tuple, itemsize: int) -> int:
    """Positions (rows when ``B == 1``) per task of an (A, C, B) problem: blocks near
    ``_BLOCK_BYTES`` (at least 16 positions), narrowed until there are a few tasks per
    thread; rows: about ``_CHUNK`` elements per task."""
    na, nc, nb = shape3
    if nb == 1:
        return max(1, _CHUNK // max(nc, 1))
    width = int(min(nb, max(16, _BLOCK_BYTES // (max(nc, 1) * itemsize))))
    want = 4 * numba.get_num_threads()
    while width > 16 and na * -(-nb // width) < want:
        width = max(16, width // 2)
    return max(width, 1)
