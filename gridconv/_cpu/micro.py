"""A register-blocked microkernel written in LLVM IR: ``mr`` destination channels x ``nv``
vectors of consecutive positions, accumulated in vector registers over a whole reduction.

Numba's auto-vectoriser keeps the direct kernel's accumulators in memory (one load and
one store per multiply-add of a row), and the patch path's dot products end in
horizontal sums. Here the accumulators are ``<lanes x float>`` values that live in
registers for the whole reduction, as in a GEMM microkernel, and each step of the
reduction reads its operand straight from a slab run:

    dest[r*dld + j] = out[r*ld + j] + sum_u w[woff + u*mr + r] * slab[base + uoff[u] + j]

for ``r < mr``, ``j < nv*lanes`` (``out`` is read once at the start, or not at all when
the sums start at the bias, and ``dest`` written once at the end, so a reduction can be
cut into chunks that fit the caches, and its last chunk can write the destination array
itself). A unit ``u`` is one (source channel, tap) pair; ``uoff`` gives where its run of
consecutive positions starts in the slab. ``lanes`` is 8 for float32 and 4 for float64 (256-bit AVX2
registers); the caller keeps ``nv*lanes`` readable elements after every run.
"""

from __future__ import annotations

import llvmlite.ir as ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

# 256-bit vectors: AVX2, the widest these machines have (and twice SSE's width).
VECTOR_BYTES = 32


def _lanes(dtype) -> int:
    return VECTOR_BYTES // (4 if dtype == types.float32 else 8)


def lanes_of(itemsize: int) -> int:
    """Positions per vector for an element size in bytes (Python side)."""
    return VECTOR_BYTES // itemsize


I32 = ir.IntType(32)
I64 = ir.IntType(64)


class _Vec:
    """The LLVM vector type of an array's dtype, and the few operations the intrinsics
    use: unaligned vector loads and stores at an element pointer, splats and FMA."""

    def __init__(self, context, builder, dtype):
        self.builder = builder
        self.dtype = dtype
        self.lanes = _lanes(dtype)
        self.fty = context.get_value_type(dtype)
        self.vty = ir.VectorType(self.fty, self.lanes)
        self.align = 4 if dtype == types.float32 else 8  # unaligned vector accesses

    def load(self, ptr, offset=0):
        b = self.builder
        p = b.gep(ptr, [ir.Constant(I64, offset)]) if isinstance(offset, int) else b.gep(
            ptr, [offset])
        return b.load(b.bitcast(p, self.vty.as_pointer()), align=self.align)

    def store(self, value, ptr, offset=0):
        b = self.builder
        p = b.gep(ptr, [ir.Constant(I64, offset)]) if isinstance(offset, int) else b.gep(
            ptr, [offset])
        b.store(value, b.bitcast(p, self.vty.as_pointer()), align=self.align)

    def splat(self, scalar):
        b = self.builder
        mask = ir.Constant(ir.VectorType(I32, self.lanes), [ir.Constant(I32, 0)] * self.lanes)
        one = b.insert_element(ir.Constant(self.vty, ir.Undefined), scalar,
                               ir.Constant(I32, 0))
        return b.shuffle_vector(one, ir.Constant(self.vty, ir.Undefined), mask)

    def rows(self, ptr, ld, nrow):
        """Pointers to ``nrow`` rows ``ld`` elements apart, from ``ptr``."""
        b = self.builder
        return [b.gep(ptr, [b.mul(ld, ir.Constant(I64, r))]) for r in range(nrow)]

    def accumulators(self, outp, ld, nrow, nv, start=None):
        """An ``nrow x nv`` tile of vector accumulators loaded from ``outp`` (rows ``ld``
        apart): the row pointers and one alloca per vector (LLVM's mem2reg turns the
        allocas into registers). With ``start = (values, first)`` and ``first >= 0``, row
        ``r`` starts at ``values[first + r]`` in every lane instead (nothing is read from
        ``outp``: a reduction's first chunk starts at the bias)."""
        b = self.builder
        rows = self.rows(outp, ld, nrow)
        slots = [[cgutils.alloca_once(b, self.vty) for _ in range(nv)] for _ in range(nrow)]

        def load():
            for r in range(nrow):
                for v in range(nv):
                    b.store(self.load(rows[r], v * self.lanes), slots[r][v])

        if start is None:
            load()
            return rows, slots
        values, first = start
        with b.if_else(b.icmp_signed(">=", first, ir.Constant(I64, 0))) as (fresh, resume):
            with fresh:
                for r in range(nrow):
                    at = b.gep(values, [b.add(first, ir.Constant(I64, r))])
                    value = self.splat(b.load(at))
                    for v in range(nv):
                        b.store(value, slots[r][v])
            with resume:
                load()
        return rows, slots

    def write_back(self, rows, slots):
        """Store an :meth:`accumulators` tile back where it was loaded from."""
        for row, row_slots in zip(rows, slots, strict=True):
            for v, slot in enumerate(row_slots):
                self.store(self.builder.load(slot), row, v * self.lanes)

    def fma_function(self):
        suffix = f"v{self.lanes}{'f32' if self.dtype == types.float32 else 'f64'}"
        return cgutils.get_or_insert_function(
            self.builder.module, ir.FunctionType(self.vty, [self.vty] * 3),
            f"llvm.fma.{suffix}")


def _data(context, builder, aty, value):
    """Pointer to the first element of an array argument."""
    return context.make_array(aty)(context, builder, value).data


def make_micro(mr: int, nv: int):
    """An intrinsic ``micro(out, ld, dest, dld, slab, base, uoff, w, woff, nunit, bias,
    boff)`` for ``mr`` channels x ``nv`` vectors (``mr * nv`` accumulators; 12 keep two
    FMA pipes busy): the sums start at ``out`` (rows ``ld`` apart), or at ``bias[boff +
    r]`` when ``boff >= 0`` (a reduction's first chunk), and end in ``dest`` (rows
    ``dld`` apart; ``out`` itself between chunks, the destination array after the last,
    so that no pass copies them there)."""

    @intrinsic
    def micro(typingctx, out, ld, dest, dld, slab, base, uoff, w, woff, nunit, bias, boff):
        sig = types.void(out, ld, dest, dld, slab, base, uoff, w, woff, nunit, bias, boff)

        def codegen(context, builder, signature, args):
            (out_v, ld_v, dest_v, dld_v, slab_v, base_v, uoff_v, w_v, woff_v, nunit_v,
             bias_v, boff_v) = args
            at = signature.args
            vec = _Vec(context, builder, at[0].dtype)
            outp = _data(context, builder, at[0], out_v)
            slabp = _data(context, builder, at[4], slab_v)
            uoffp = _data(context, builder, at[6], uoff_v)
            wp = _data(context, builder, at[7], w_v)
            fma = vec.fma_function()
            _, slots = vec.accumulators(outp, ld_v, mr, nv, start=(
                _data(context, builder, at[10], bias_v), boff_v))
            rows = vec.rows(_data(context, builder, at[2], dest_v), dld_v, mr)
            with cgutils.for_range(builder, nunit_v) as loop:
                u = loop.index
                run = builder.gep(slabp, [builder.add(base_v, builder.load(
                    builder.gep(uoffp, [u])))])
                wrow = builder.gep(wp, [builder.add(woff_v, builder.mul(
                    u, ir.Constant(I64, mr)))])

                def broadcast(r):
                    return vec.splat(builder.load(builder.gep(wrow, [ir.Constant(I64, r)])))

                def step(r, v, wb, xv):
                    s = slots[r][v]
                    builder.store(builder.call(fma, [wb, xv, builder.load(s)]), s)

                # Keep the fewer operands live (16 ymm registers: the accumulators, the
                # live operands and one streamed one): the vectors when they are fewer
                # than the channels, else the broadcast weights.
                if nv <= mr:
                    xs = [vec.load(run, v * vec.lanes) for v in range(nv)]
                    for r in range(mr):
                        wb = broadcast(r)
                        for v in range(nv):
                            step(r, v, wb, xs[v])
                else:
                    wbs = [broadcast(r) for r in range(mr)]
                    for v in range(nv):
                        xv = vec.load(run, v * vec.lanes)
                        for r in range(mr):
                            step(r, v, wbs[r], xv)
            vec.write_back(rows, slots)
            return context.get_dummy_value()

        return sig, codegen

    return micro


def make_outer(mu: int, nv: int):
    """An intrinsic ``outer(out, ld, slab, uoff, u0, g, goff, ldg, npos, nrow, rstride)``
    for the weight gradient, the transposed product of :func:`make_micro`'s:

        out[j*ld + o] += sum_{q < nrow, p < npos} slab[uoff[u0 + j] + q*rstride + p]
                                                  * g[goff + (q*npos + p)*ldg + o]

    for ``j < mu`` units and ``o < nv*lanes`` destination channels: ``g`` is the output
    gradient laid out positions-major (a row of channels per position), the slab runs
    (``nrow`` rows of ``npos``, ``rstride`` apart) are broadcast one position at a time,
    and the ``mu x nv`` accumulators hold whole channel vectors over all the rows, so no
    horizontal sums are needed however long the reduction."""

    @intrinsic
    def outer(typingctx, out, ld, slab, uoff, u0, g, goff, ldg, npos, nrow, rstride):
        sig = types.void(out, ld, slab, uoff, u0, g, goff, ldg, npos, nrow, rstride)

        def codegen(context, builder, signature, args):
            (out_v, ld_v, slab_v, uoff_v, u0_v, g_v, goff_v, ldg_v, npos_v, nrow_v,
             rstride_v) = args
            at = signature.args
            vec = _Vec(context, builder, at[0].dtype)
            outp = _data(context, builder, at[0], out_v)
            slabp = _data(context, builder, at[2], slab_v)
            uoffp = _data(context, builder, at[3], uoff_v)
            gp = _data(context, builder, at[5], g_v)
            fma = vec.fma_function()
            runs = [builder.gep(slabp, [builder.load(builder.gep(
                uoffp, [builder.add(u0_v, ir.Constant(I64, j))]))]) for j in range(mu)]
            rows, slots = vec.accumulators(outp, ld_v, mu, nv)
            with cgutils.for_range(builder, nrow_v) as rloop:
                q = rloop.index
                shift = builder.mul(q, rstride_v)
                rruns = [builder.gep(r, [shift]) for r in runs]
                grow0 = builder.gep(gp, [builder.add(goff_v, builder.mul(
                    builder.mul(q, npos_v), ldg_v))])
                with cgutils.for_range(builder, npos_v) as loop:
                    p = loop.index
                    grow = builder.gep(grow0, [builder.mul(p, ldg_v)])
                    gs = [vec.load(grow, v * vec.lanes) for v in range(nv)]
                    for j in range(mu):
                        xb = vec.splat(builder.load(builder.gep(rruns[j], [p])))
                        for v in range(nv):
                            s = slots[j][v]
                            builder.store(builder.call(fma, [xb, gs[v], builder.load(s)]),
                                          s)
            vec.write_back(rows, slots)
            return context.get_dummy_value()

        return sig, codegen

    return outer


def _vector_loop(builder, n, lanes, body, scalar):
    """``body(i)`` for ``i = 0, lanes, 2*lanes, ...`` while a whole vector of ``lanes``
    elements is left, then the rest: one more ``body`` at ``n - lanes`` (overlapping the
    previous vector: the caller's body must be idempotent, its destination apart from its
    source) when ``n >= lanes``, else ``scalar(i)`` for each ``i < n``. The rows the
    fills and stores copy are short (16-31 elements for the 32x32 images of a stride-2
    layer), and a scalar tail of up to ``lanes - 1`` elements cost as much as the
    vectors."""
    nvec = builder.sdiv(n, ir.Constant(I64, lanes))
    with cgutils.for_range(builder, nvec) as loop:
        body(builder.mul(loop.index, ir.Constant(I64, lanes)))
    done = builder.mul(nvec, ir.Constant(I64, lanes))
    rest = builder.icmp_signed(">", n, done)
    with builder.if_then(rest):
        with builder.if_else(builder.icmp_signed(">", nvec, ir.Constant(I64, 0))) as (
                overlap, short):
            with overlap:
                body(builder.sub(n, ir.Constant(I64, lanes)))
            with short:
                with cgutils.for_range(builder, n) as loop:
                    scalar(loop.index)


@intrinsic
def copy_run(typingctx, dst, doff, src, soff, n, b):
    """``dst[doff + i] = src[soff + i] + b`` for ``i < n`` (``dst`` and ``src`` apart):
    vectors of ``lanes``, the last one overlapping (see :func:`_vector_loop`), without the
    aliasing checks and loop set-up that Numba's own loop pays on every call (rows here
    are short, so that set-up is most of the cost)."""
    sig = types.void(dst, doff, src, soff, n, b)

    def codegen(context, builder, signature, args):
        dst_v, doff_v, src_v, soff_v, n_v, b_v = args
        at = signature.args
        vec = _Vec(context, builder, at[0].dtype)
        dp = builder.gep(_data(context, builder, at[0], dst_v), [doff_v])
        sp = builder.gep(_data(context, builder, at[2], src_v), [soff_v])
        bv = vec.splat(b_v)

        def body(i):
            vec.store(builder.fadd(vec.load(sp, i), bv), dp, i)

        def scalar(i):
            builder.store(builder.fadd(builder.load(builder.gep(sp, [i])), b_v),
                          builder.gep(dp, [i]))

        _vector_loop(builder, n_v, vec.lanes, body, scalar)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def split2_run(typingctx, dst, d0, d1, src, s, n):
    """``dst[d0 + i] = src[s + 2*i]`` and ``dst[d1 + i] = src[s + 2*i + 1]`` for
    ``i < n`` (``dst`` apart from ``src``, the two phases apart from each other): a row
    split into its two phases (stride 2), two vectors in and a shuffle per ``lanes``
    pairs, the last ones overlapping (see :func:`_vector_loop`)."""
    sig = types.void(dst, d0, d1, src, s, n)

    def codegen(context, builder, signature, args):
        dst_v, d0_v, d1_v, src_v, s_v, n_v = args
        at = signature.args
        vec = _Vec(context, builder, at[0].dtype)
        lanes = vec.lanes
        dp = _data(context, builder, at[0], dst_v)
        p0 = builder.gep(dp, [d0_v])
        p1 = builder.gep(dp, [d1_v])
        sp = builder.gep(_data(context, builder, at[3], src_v), [s_v])
        even = ir.Constant(ir.VectorType(I32, lanes), [ir.Constant(I32, 2 * i)
                                                       for i in range(lanes)])
        odd = ir.Constant(ir.VectorType(I32, lanes), [ir.Constant(I32, 2 * i + 1)
                                                      for i in range(lanes)])

        def body(i):
            src_i = builder.gep(sp, [builder.mul(i, ir.Constant(I64, 2))])
            a = vec.load(src_i)
            b = vec.load(src_i, lanes)
            vec.store(builder.shuffle_vector(a, b, even), p0, i)
            vec.store(builder.shuffle_vector(a, b, odd), p1, i)

        def scalar(i):
            two_i = builder.mul(i, ir.Constant(I64, 2))
            builder.store(builder.load(builder.gep(sp, [two_i])), builder.gep(p0, [i]))
            builder.store(builder.load(builder.gep(sp, [builder.add(two_i, ir.Constant(
                I64, 1))])), builder.gep(p1, [i]))

        _vector_loop(builder, n_v, lanes, body, scalar)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def claim(typingctx, counter):
    """``counter[0] += 1`` atomically; returns the value before. Threads take their next
    tile from a shared counter, so a thread that the machine slows down (a busy
    neighbour on a shared host) delays only its own tiles. Only for kernels whose every
    output belongs to one tile: where per-thread partials are summed (the weight
    gradients), which thread took which tile would change the summation order, and the
    results would differ in their last bits from run to run (a resumed training would
    not retrace the uninterrupted one); those keep the fixed interleave."""
    sig = types.int64(counter)

    def codegen(context, builder, signature, args):
        ptr = _data(context, builder, signature.args[0], args[0])
        return builder.atomic_rmw("add", ptr, ir.Constant(I64, 1), "monotonic")

    return sig, codegen
