"""A register-blocked microkernel written in LLVM IR: ``mr`` destination channels x ``nv``
vectors of consecutive positions, accumulated in vector registers over a whole reduction.

Numba's auto-vectoriser keeps the direct kernel's accumulators in memory (one load and
one store per multiply-add of a row), and the patch path's dot products end in
horizontal sums. Here the accumulators are ``<lanes x float>`` values that live in
registers for the whole reduction, as in a GEMM microkernel, and each step of the
reduction reads its operand straight from a slab run:

    out[r*ld + j] += sum_u w[woff + u*mr + r] * slab[base + uoff[u] + j]

for ``r < mr``, ``j < nv*lanes`` (``out`` is read once at the start and written once at
the end, so a reduction can be cut into chunks that fit the caches). A unit
``u`` is one (source channel, tap) pair; ``uoff`` gives where its run of consecutive
positions starts in the slab. ``lanes`` is 8 for float32 and 4 for float64 (256-bit AVX2
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


def make_micro(mr: int, nv: int):
    """An intrinsic ``micro(out, ld, slab, base, uoff, w, woff, nunit)`` for ``mr``
    channels x ``nv`` vectors (``mr * nv`` accumulators; 12 keep two FMA pipes busy)."""

    @intrinsic
    def micro(typingctx, out, ld, slab, base, uoff, w, woff, nunit):
        sig = types.void(out, ld, slab, base, uoff, w, woff, nunit)

        def codegen(context, builder, signature, args):
            out_v, ld_v, slab_v, base_v, uoff_v, w_v, woff_v, nunit_v = args
            aty = signature.args[0]
            fty = context.get_value_type(aty.dtype)
            lanes = _lanes(aty.dtype)
            vty = ir.VectorType(fty, lanes)
            vptr = vty.as_pointer()
            align = 4 if aty.dtype == types.float32 else 8  # unaligned vector accesses
            i32 = ir.IntType(32)
            i64 = ir.IntType(64)
            outp = context.make_array(aty)(context, builder, out_v).data
            slabp = context.make_array(signature.args[2])(context, builder, slab_v).data
            uoffp = context.make_array(signature.args[4])(context, builder, uoff_v).data
            wp = context.make_array(signature.args[5])(context, builder, w_v).data
            fma = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(vty, [vty, vty, vty]),
                f"llvm.fma.v{lanes}{'f32' if aty.dtype == types.float32 else 'f64'}")
            bmask = ir.Constant(ir.VectorType(i32, lanes), [ir.Constant(i32, 0)] * lanes)
            # carried accumulators as allocas: LLVM's mem2reg turns them into registers
            slots = [[cgutils.alloca_once(builder, vty) for _ in range(nv)]
                     for _ in range(mr)]
            for r in range(mr):
                orow = builder.gep(outp, [builder.mul(ld_v, ir.Constant(i64, r))])
                for v in range(nv):
                    p = builder.bitcast(builder.gep(orow, [ir.Constant(i64, v * lanes)]),
                                        vptr)
                    builder.store(builder.load(p, align=align), slots[r][v])
            with cgutils.for_range(builder, nunit_v) as loop:
                u = loop.index
                off = builder.add(base_v, builder.load(builder.gep(uoffp, [u])))
                run = builder.gep(slabp, [off])
                wrow = builder.gep(wp, [builder.add(woff_v, builder.mul(
                    u, ir.Constant(i64, mr)))])

                def vector(v):
                    p = builder.bitcast(builder.gep(run, [ir.Constant(i64, v * lanes)]), vptr)
                    return builder.load(p, align=align)

                def broadcast(r):
                    ws = builder.load(builder.gep(wrow, [ir.Constant(i64, r)]))
                    return builder.shuffle_vector(
                        builder.insert_element(ir.Constant(vty, ir.Undefined), ws,
                                               ir.Constant(i32, 0)),
                        ir.Constant(vty, ir.Undefined), bmask)

                def step(r, v, wb, xv):
                    s = slots[r][v]
                    builder.store(builder.call(fma, [wb, xv, builder.load(s)]), s)

                # Keep the fewer operands live (16 ymm registers: the accumulators, the
                # live operands and one streamed one): the vectors when they are fewer
                # than the channels, else the broadcast weights.
                if nv <= mr:
                    xs = [vector(v) for v in range(nv)]
                    for r in range(mr):
                        wb = broadcast(r)
                        for v in range(nv):
                            step(r, v, wb, xs[v])
                else:
                    wbs = [broadcast(r) for r in range(mr)]
                    for v in range(nv):
                        xv = vector(v)
                        for r in range(mr):
                            step(r, v, wbs[r], xv)
            for r in range(mr):
                orow = builder.gep(outp, [builder.mul(ld_v, ir.Constant(i64, r))])
                for v in range(nv):
                    p = builder.bitcast(builder.gep(orow, [ir.Constant(i64, v * lanes)]),
                                        vptr)
                    builder.store(builder.load(slots[r][v]), p, align=align)
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
            aty = signature.args[0]
            fty = context.get_value_type(aty.dtype)
            lanes = _lanes(aty.dtype)
            vty = ir.VectorType(fty, lanes)
            vptr = vty.as_pointer()
            align = 4 if aty.dtype == types.float32 else 8
            i32 = ir.IntType(32)
            i64 = ir.IntType(64)
            outp = context.make_array(aty)(context, builder, out_v).data
            slabp = context.make_array(signature.args[2])(context, builder, slab_v).data
            uoffp = context.make_array(signature.args[3])(context, builder, uoff_v).data
            gp = context.make_array(signature.args[5])(context, builder, g_v).data
            fma = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(vty, [vty, vty, vty]),
                f"llvm.fma.v{lanes}{'f32' if aty.dtype == types.float32 else 'f64'}")
            bmask = ir.Constant(ir.VectorType(i32, lanes), [ir.Constant(i32, 0)] * lanes)
            runs = [builder.gep(slabp, [builder.load(builder.gep(
                uoffp, [builder.add(u0_v, ir.Constant(i64, j))]))]) for j in range(mu)]
            slots = [[cgutils.alloca_once(builder, vty) for _ in range(nv)]
                     for _ in range(mu)]

            def out_ptr(j, v):
                row = builder.gep(outp, [builder.mul(ld_v, ir.Constant(i64, j))])
                return builder.bitcast(builder.gep(row, [ir.Constant(i64, v * lanes)]), vptr)

            for j in range(mu):
                for v in range(nv):
                    builder.store(builder.load(out_ptr(j, v), align=align), slots[j][v])
            with cgutils.for_range(builder, nrow_v) as rows:
                q = rows.index
                shift = builder.mul(q, rstride_v)
                rruns = [builder.gep(r, [shift]) for r in runs]
                grow0 = builder.gep(gp, [builder.add(goff_v, builder.mul(
                    builder.mul(q, npos_v), ldg_v))])
                with cgutils.for_range(builder, npos_v) as loop:
                    p = loop.index
                    grow = builder.gep(grow0, [builder.mul(p, ldg_v)])
                    gs = [builder.load(builder.bitcast(builder.gep(
                        grow, [ir.Constant(i64, v * lanes)]), vptr), align=align)
                        for v in range(nv)]
                    for j in range(mu):
                        xs = builder.load(builder.gep(rruns[j], [p]))
                        xb = builder.shuffle_vector(
                            builder.insert_element(ir.Constant(vty, ir.Undefined), xs,
                                                   ir.Constant(i32, 0)),
                            ir.Constant(vty, ir.Undefined), bmask)
                        for v in range(nv):
                            s = slots[j][v]
                            builder.store(builder.call(fma, [xb, gs[v], builder.load(s)]),
                                          s)
            for j in range(mu):
                for v in range(nv):
                    builder.store(builder.load(slots[j][v]), out_ptr(j, v), align=align)
            return context.get_dummy_value()

        return sig, codegen

    return outer


@intrinsic
def copy_run(typingctx, dst, doff, src, soff, n, b):
    """``dst[doff + i] = src[soff + i] + b`` for ``i < n``: vectors of ``lanes`` then a
    scalar tail, without the aliasing checks and loop set-up that Numba's own loop pays
    on every call (rows here are short, so that set-up is most of the cost)."""
    sig = types.void(dst, doff, src, soff, n, b)

    def codegen(context, builder, signature, args):
        dst_v, doff_v, src_v, soff_v, n_v, b_v = args
        aty = signature.args[0]
        fty = context.get_value_type(aty.dtype)
        lanes = _lanes(aty.dtype)
        vty = ir.VectorType(fty, lanes)
        vptr = vty.as_pointer()
        align = 4 if aty.dtype == types.float32 else 8
        i32 = ir.IntType(32)
        i64 = ir.IntType(64)
        dp = builder.gep(context.make_array(aty)(context, builder, dst_v).data, [doff_v])
        sp = builder.gep(context.make_array(signature.args[2])(context, builder, src_v).data,
                         [soff_v])
        bmask = ir.Constant(ir.VectorType(i32, lanes), [ir.Constant(i32, 0)] * lanes)
        bv = builder.shuffle_vector(
            builder.insert_element(ir.Constant(vty, ir.Undefined), b_v, ir.Constant(i32, 0)),
            ir.Constant(vty, ir.Undefined), bmask)
        nvec = builder.sdiv(n_v, ir.Constant(i64, lanes))
        with cgutils.for_range(builder, nvec) as loop:
            i = builder.mul(loop.index, ir.Constant(i64, lanes))
            v = builder.load(builder.bitcast(builder.gep(sp, [i]), vptr), align=align)
            builder.store(builder.fadd(v, bv), builder.bitcast(builder.gep(dp, [i]), vptr),
                          align=align)
        done = builder.mul(nvec, ir.Constant(i64, lanes))
        with cgutils.for_range(builder, builder.sub(n_v, done)) as loop:
            i = builder.add(done, loop.index)
            builder.store(builder.fadd(builder.load(builder.gep(sp, [i])), b_v),
                          builder.gep(dp, [i]))
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def split2_run(typingctx, dst, d0, d1, src, s, n):
    """``dst[d0 + i] = src[s + 2*i]`` and ``dst[d1 + i] = src[s + 2*i + 1]`` for
    ``i < n``: a row split into its two phases (stride 2), two vectors in and a shuffle
    per ``lanes`` pairs, then a scalar tail."""
    sig = types.void(dst, d0, d1, src, s, n)

    def codegen(context, builder, signature, args):
        dst_v, d0_v, d1_v, src_v, s_v, n_v = args
        aty = signature.args[0]
        fty = context.get_value_type(aty.dtype)
        lanes = _lanes(aty.dtype)
        vty = ir.VectorType(fty, lanes)
        vptr = vty.as_pointer()
        align = 4 if aty.dtype == types.float32 else 8
        i32 = ir.IntType(32)
        i64 = ir.IntType(64)
        dp = context.make_array(aty)(context, builder, dst_v).data
        p0 = builder.gep(dp, [d0_v])
        p1 = builder.gep(dp, [d1_v])
        sp = builder.gep(context.make_array(signature.args[3])(context, builder, src_v).data,
                         [s_v])
        even = ir.Constant(ir.VectorType(i32, lanes), [ir.Constant(i32, 2 * i)
                                                       for i in range(lanes)])
        odd = ir.Constant(ir.VectorType(i32, lanes), [ir.Constant(i32, 2 * i + 1)
                                                      for i in range(lanes)])
        nvec = builder.sdiv(n_v, ir.Constant(i64, lanes))
        with cgutils.for_range(builder, nvec) as loop:
            i = builder.mul(loop.index, ir.Constant(i64, lanes))
            src_i = builder.gep(sp, [builder.mul(i, ir.Constant(i64, 2))])
            a = builder.load(builder.bitcast(src_i, vptr), align=align)
            b = builder.load(builder.bitcast(builder.gep(src_i, [ir.Constant(i64, lanes)]),
                                             vptr), align=align)
            builder.store(builder.shuffle_vector(a, b, even),
                          builder.bitcast(builder.gep(p0, [i]), vptr), align=align)
            builder.store(builder.shuffle_vector(a, b, odd),
                          builder.bitcast(builder.gep(p1, [i]), vptr), align=align)
        done = builder.mul(nvec, ir.Constant(i64, lanes))
        with cgutils.for_range(builder, builder.sub(n_v, done)) as loop:
            i = builder.add(done, loop.index)
            two_i = builder.mul(i, ir.Constant(i64, 2))
            builder.store(builder.load(builder.gep(sp, [two_i])), builder.gep(p0, [i]))
            builder.store(builder.load(builder.gep(sp, [builder.add(two_i, ir.Constant(
                i64, 1))])), builder.gep(p1, [i]))
        return context.get_dummy_value()

    return sig, codegen
