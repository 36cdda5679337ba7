"""Chunked operations on Dask: filter arrays larger than memory, locally or on a cluster.

The functional operations of gridconv (``conv``, ``conv_transpose``, ``unshared_conv``,
``tiled_conv``, ``max_pool``, ``avg_pool``, ``lp_pool``, ``global_max_pool``,
``global_avg_pool``) accept a :class:`dask.array.Array` in place of a NumPy array: the
public function routes the call here (see :mod:`gridconv._dispatch`) and the result is a
lazy Dask array. Nothing is computed until ``.compute()``, ``da.store`` or one of the
writers below runs the graph, on Dask's threaded scheduler by default or on a
``dask.distributed`` cluster when a client is active.

How a chunked operation stays exact
-----------------------------------
Each output chunk is one task. Per spatial axis, the task knows which output positions
``[a, b)`` it computes, hence which input coordinates their windows read (the receptive
field: ``stride*i - pad_lo + dilation*k``). It gathers exactly those coordinates from the
input chunks that hold them, however the input is chunked (chunks smaller than the halo
simply contribute to several tasks), and maps coordinates beyond the true edges of the
array through gridconv's own padding map (:func:`gridconv._geometry.index_map`): zeros,
reflect, replicate and circular padding are applied only at the array's edges, with the
values the in-memory operation would use. The task then runs the NumPy operation on its
block with no padding (pooling keeps its own padding rule at true edges and crops the
windows that overlap a block edge). The output chunks start at whole output positions,
so stride and the tiling phase of ``tiled_conv`` (``i mod T``, the weight rolled per
chunk) line up across chunk boundaries, and the result equals the in-memory one up to
the reordering of floating-point sums (often bit for bit).

Cores: Numba threads and Dask workers
-------------------------------------
The kernels are compiled with ``nogil=True``, so Dask's threads run chunks truly in
parallel. Each task sets Numba's thread count for its own thread (Numba's setting is per
thread) so that Dask's concurrency times Numba's threads matches the cores: by default
``NUMBA_NUM_THREADS // concurrent tasks`` (the threaded scheduler's pool size, or a
distributed worker's ``nthreads``), at least 1. Set ``dask.config.set({"gridconv.
numba-threads": n})`` before building the graph to choose ``n`` yourself, for example
with several worker processes per machine. See ``docs/dask.md``.
"""

from __future__ import annotations

import importlib
import math
import operator
import os
import sys
import threading
from bisect import bisect_right
from collections.abc import Callable, Sequence
from itertools import product

import dask
import dask.array as da
import numba
import numpy as np
from dask.base import tokenize
from dask.highlevelgraph import HighLevelGraph

from . import _geometry as geo
from ._params import fail, per_axis, result_dtype

__all__ = [
    "conv", "conv_transpose", "unshared_conv", "tiled_conv", "max_pool", "avg_pool",
    "lp_pool", "global_max_pool", "global_avg_pool", "sliding_window_inference",
    "read_hdf5", "write_hdf5", "filter_hdf5", "transform_hdf5", "read_zarr", "write_zarr",
    "filter_zarr", "numba_threads_per_task", "aligned_chunks", "HDF5Source", "HDF5Target",
]

CONFIG_THREADS = "gridconv.numba-threads"

# The modules themselves (``gridconv.conv`` the attribute is the function).
_conv_mod = importlib.import_module("gridconv.conv")
_local_mod = importlib.import_module("gridconv.local")
_pool_mod = importlib.import_module("gridconv.pool")

# The NumPy implementations (the public functions would route a Dask array back here).
_np_conv = _conv_mod.conv.__wrapped_cpu__
_np_conv_transpose = _conv_mod.conv_transpose.__wrapped_cpu__
_np_unshared = _local_mod.unshared_conv.__wrapped_cpu__
_np_tiled = _local_mod.tiled_conv.__wrapped_cpu__
_np_max_pool = _pool_mod.max_pool.__wrapped_cpu__
_np_avg_pool = _pool_mod.avg_pool.__wrapped_cpu__
_np_lp_pool = _pool_mod.lp_pool.__wrapped_cpu__


# ------------------------------------------------------------------------ helpers ---

def _as_dask(x, op: str, name: str = "x") -> da.Array:
    if isinstance(x, da.Array):
        arr = x
    else:
        try:
            arr = da.asarray(x)
        except Exception as err:  # pragma: no cover - dask's own message is kept
            raise fail(op, f"`{name}` must be array-like, got {type(x).__name__}",
                       TypeError) from err
    if any(math.isnan(c) for cs in arr.chunks for c in cs):
        raise fail(op, f"`{name}` has unknown chunk sizes; call `{name}.compute_chunk_sizes()`"
                       f" first")
    return arr


def _numpy(a, name: str, op: str):
    """A small operand (weight, bias) as NumPy: a Dask one is computed."""
    if a is None:
        return None
    if isinstance(a, da.Array):
        a = a.compute()
    return np.asarray(a)


def _meta(shape, dtype) -> np.ndarray:
    """A zero-stride stand-in of the full shape, for the NumPy argument checks."""
    return np.broadcast_to(np.zeros((), dtype=dtype), tuple(int(s) for s in shape))


def numba_threads_per_task() -> int:
    """Numba threads one task uses, as chosen at run time when no
    ``"gridconv.numba-threads"`` is configured: ``NUMBA_NUM_THREADS`` divided by the
    number of tasks that can run at once in this process (a distributed worker's
    ``nthreads``, the threaded scheduler's pool size, or 1 in the main thread), at
    least 1."""
    total = numba.config.NUMBA_NUM_THREADS
    concurrent = None
    if "distributed" in sys.modules:
        try:
            from distributed import get_worker
            concurrent = get_worker().state.nthreads
        except (ValueError, AttributeError):
            concurrent = None
    if concurrent is None:
        if threading.current_thread() is threading.main_thread():
            concurrent = 1  # the synchronous scheduler
        else:
            concurrent = dask.config.get("num_workers", None) or os.cpu_count() or 1
    return max(1, total // max(1, int(concurrent)))


def _runs(idx: np.ndarray, bounds: Sequence[int]) -> list:
    """Split the source indices of one axis of a block into copies.

    ``idx[p]`` is the source index read at block position ``p`` (-1: a zero). Returns
    ``(chunk, src_slice, dst_slice)`` triples, each a run of consecutive source indices
    (step +1 or -1, as mirrored padding reads) inside one source chunk.
    """
    runs = []
    p, n = 0, len(idx)
    while p < n:
        if idx[p] < 0:
            nz = np.flatnonzero(idx[p:] >= 0)
            if not len(nz):
                break
            p += int(nz[0])
            continue
        i = int(idx[p])
        c = bisect_right(bounds, i) - 1
        lo_c, hi_c = bounds[c], bounds[c + 1]
        length, step = 1, 1
        if p + 1 < n and abs(int(idx[p + 1]) - i) == 1 and lo_c <= idx[p + 1] < hi_c:
            step = int(idx[p + 1]) - i
            most = min(n - p, hi_c - i if step == 1 else i - lo_c + 1)
            expect = i + step * np.arange(most, dtype=np.int64)
            bad = np.flatnonzero(idx[p:p + most] != expect)
            length = int(bad[0]) if len(bad) else most
        s0 = i - lo_c
        if step == 1:
            src = slice(s0, s0 + length)
        else:
            src = slice(s0, s0 - length if s0 - length >= 0 else None, -1)
        runs.append((c, src, slice(p, p + length)))
        p += length
    return runs


class _Plan:
    """What one task does: gather a block from source chunks, then run ``func`` on it.

    A plain class (not a dataclass or tuple), so that Dask treats it as an opaque value.
    """

    __slots__ = ("shape", "dtype", "zero", "copies", "func", "extra", "threads")

    def __init__(self, shape, dtype, zero, copies, func, extra, threads):
        self.shape, self.dtype, self.zero, self.copies = shape, dtype, zero, copies
        self.func, self.extra, self.threads = func, extra, threads

    def gather(self, chunks) -> np.ndarray:
        block = (np.zeros if self.zero else np.empty)(self.shape, dtype=self.dtype)
        for k, src, dst in self.copies:
            block[dst] = chunks[k][src]
        return block


def _with_threads(threads, fn, *args):
    n = threads or numba_threads_per_task()
    old = numba.get_num_threads()
    n = min(n, numba.config.NUMBA_NUM_THREADS)
    if n == old:
        return fn(*args)
    numba.set_num_threads(n)
    try:
        return fn(*args)
    finally:
        numba.set_num_threads(old)


def _execute(plan: _Plan, chunks: list):
    return _with_threads(plan.threads, lambda: plan.func(plan.gather(chunks), plan.extra))


def _configured_threads():
    n = dask.config.get(CONFIG_THREADS, None)
    return None if n is None else max(1, int(n))


class _Source:
    """The chunks of an input array, and the halo slices cut from them so far.

    A task that needs only a thin slab of a neighbouring chunk depends on a small task
    that cuts that slab (shared by every task that needs it), not on the whole chunk: the
    chunk can then be released as soon as its own block and its slabs are taken, which
    keeps the memory to a few chunks however the graph is ordered.
    """

    def __init__(self, x: da.Array):
        self.x = x
        self.bounds = [np.concatenate([[0], np.cumsum(c)]).astype(np.int64).tolist()
                       for c in x.chunks]
        self.halos: dict = {}

    def plan(self, index_lists, key_index: dict, keys: list):
        """Copies that assemble the block whose axis ``a`` reads ``x`` at
        ``index_lists[a]``, as ``(key number, src, dst)``; and whether it has zeros."""
        x = self.x
        per_axis_runs = [_runs(idx, b) for idx, b in zip(index_lists, self.bounds)]
        copies = []
        for combo in product(*per_axis_runs):
            chunk = tuple(r[0] for r in combo)
            src = tuple(r[1] for r in combo)
            key = (x.name, *chunk)
            part = math.prod(r[2].stop - r[2].start for r in combo)
            whole = math.prod(x.chunks[a][c] for a, c in enumerate(chunk))
            if 2 * part <= whole:  # a halo slab: cut it in its own (shared) task
                hkey = f"halo-{x.name}-{tokenize(chunk, src)}"
                self.halos.setdefault(hkey, (operator.getitem, key, src))
                key, src = hkey, (slice(None),) * len(src)
            if key not in key_index:
                key_index[key] = len(keys)
                keys.append(key)
            copies.append((key_index[key], src, tuple(r[2] for r in combo)))
        zero = any(bool((idx < 0).any()) for idx in index_lists)
        return copies, zero


def _build(op: str, x: da.Array, axes, func, extra, dtype, token, n_out: int = 1):
    """A Dask array from one task per output block.

    ``axes[a]`` lists, per output chunk along axis ``a`` of ``x``, ``(size, idx)``: the
    chunk's output size and the source indices of ``x`` its block reads (-1: a zero).
    ``extra(block_index)`` gives the per-block argument of ``func(block, extra)``. With
    ``n_out == 2`` ``func`` returns a pair and two arrays come back (``dtype`` a pair).
    """
    name = f"{op}-{tokenize(x.name, token)}"
    out_chunks = tuple(tuple(int(n) for n, _ in ax) for ax in axes)
    threads = _configured_threads()
    dsk = {}
    pair = f"{name}-pair"
    base = x.dtype
    source = _Source(x)
    for bid in product(*(range(len(ax)) for ax in axes)):
        idx = [axes[a][j][1] for a, j in enumerate(bid)]
        keys: list = []
        copies, zero = source.plan(idx, {}, keys)
        shape = tuple(len(i) for i in idx)
        plan = _Plan(shape, base, zero, copies, func, extra(bid), threads)
        dsk[(pair if n_out > 1 else name, *bid)] = (_execute, plan, keys)
    dsk.update(source.halos)
    ndim = len(axes)
    if n_out == 1:
        graph = HighLevelGraph.from_collections(name, dsk, dependencies=[x])
        return da.Array(graph, name, chunks=out_chunks, dtype=dtype,
                        meta=np.empty((0,) * ndim, dtype=dtype))
    outs = []
    for k, dt in enumerate(dtype):
        oname = f"{name}-{k}"
        layer = dict(dsk)
        for bid in product(*(range(len(ax)) for ax in axes)):
            layer[(oname, *bid)] = (operator.getitem, (pair, *bid), k)
        graph = HighLevelGraph.from_collections(oname, layer, dependencies=[x])
        outs.append(da.Array(graph, oname, chunks=out_chunks, dtype=dt,
                             meta=np.empty((0,) * ndim, dtype=dt)))
    return tuple(outs)


def _bounds(chunks) -> list[int]:
    return np.concatenate([[0], np.cumsum(chunks)]).astype(np.int64).tolist()


def _split(edges: list[int], total: int) -> list[tuple[int, int]]:
    """Output ranges ``[a, b)`` from candidate edges (clipped, deduplicated)."""
    pts = sorted({min(max(int(e), 0), total) for e in edges} | {0, total})
    return [(a, b) for a, b in zip(pts[:-1], pts[1:]) if b > a]


def _passthrough(chunks) -> list:
    """An axis copied chunk for chunk (batch, or channels of pooling)."""
    b = _bounds(chunks)
    return [(hi - lo, np.arange(lo, hi, dtype=np.int64)) for lo, hi in zip(b[:-1], b[1:])]


def _whole(size: int, out_size: int) -> list:
    """An axis gathered whole into every block (the channels of a convolution)."""
    return [(out_size, np.arange(size, dtype=np.int64))]


def _window_axis(chunks, size, out, stride, extent, lo, hi, mode):
    """A conv-like axis: output ``i`` reads padded coordinates ``[s*i, s*i + E)``, mapped
    to the input by the padding map. Returns the axis list and the output ranges."""
    pmap = geo.index_map(size, lo, hi, mode)
    # output i goes with the input chunk holding x[s*i] (for "same", the centre)
    ranges = _split([-(-c // stride) for c in _bounds(chunks)], out)
    axis = [(b - a, pmap[stride * a: stride * (b - 1) + extent]) for a, b in ranges]
    return axis, ranges


# ------------------------------------------------------------- convolutions ---

def _conv_block(block, extra, *, weight, bias, stride, dilation, groups, flip):
    return _np_conv(block, weight, bias, stride=stride, padding=0, dilation=dilation,
                    groups=groups, flip=flip)


def conv(x, weight, bias=None, *, stride=1, padding=0, dilation=1, groups: int = 1,
         padding_mode: str = "zeros", flip: bool = False) -> da.Array:
    """:func:`gridconv.conv` of a Dask array, chunk by chunk with halos.

    Parameters
    ----------
    x : dask.array.Array, shape (N, C_in, *S)
        Chunked along any axes (the channels are gathered whole into every task).
    weight : array, shape (C_out, C_in // groups, *K)
        NumPy (a Dask weight is computed).
    bias : array, shape (C_out,), optional
    stride, padding, dilation, groups, padding_mode, flip
        As in :func:`gridconv.conv`; the padding is applied at the true edges only.

    Returns
    -------
    dask.array.Array, shape (N, C_out, *O)
        Lazy. Output chunks follow the input's chunks (``O`` split where the input is),
        the channel axis in one chunk.
    """
    op = "conv"
    x = _as_dask(x, op)
    weight, bias = _numpy(weight, "weight", op), _numpy(bias, "bias", op)
    spec = _conv_mod._conv_spec(op, _meta(x.shape, x.dtype), weight, bias, stride, padding,
                                dilation, groups, padding_mode, flip)
    bias = _conv_mod._check_bias(op, bias, spec.w_shape[0])
    dtype = result_dtype(op, x=_meta((), x.dtype), weight=weight, bias=bias)
    axes = [_passthrough(x.chunks[0]), _whole(x.shape[1], spec.out_shape[1])]
    for a in range(spec.nd):
        e = spec.dilation[a] * (spec.w_shape[2 + a] - 1) + 1
        axis, _ = _window_axis(x.chunks[2 + a], x.shape[2 + a], spec.out_shape[2 + a],
                               spec.stride[a], e, *spec.pads[a], spec.mode)
        axes.append(axis)
    func = _partial(_conv_block, weight=weight, bias=bias, stride=spec.stride,
                    dilation=spec.dilation, groups=spec.groups, flip=spec.flip)
    token = (op, weight, bias, spec.stride, spec.dilation, spec.pads, spec.mode, spec.groups,
             spec.flip)
    return _build(op, x, axes, func, lambda bid: None, dtype, token)


class _partial:
    """``functools.partial`` for keyword arguments, with a stable, cheap repr."""

    __slots__ = ("fn", "kw")

    def __init__(self, fn, **kw):
        self.fn, self.kw = fn, kw

    def __call__(self, block, extra):
        return self.fn(block, extra, **self.kw)

    def __reduce__(self):
        return (_make_partial, (self.fn, self.kw))


def _make_partial(fn, kw):
    return _partial(fn, **kw)


def _local_block(block, extra, *, unshared, stride, dilation):
    weight, bias = extra
    f = _np_unshared if unshared else _np_tiled
    return f(block, weight, bias, stride=stride, padding=0, dilation=dilation)


def _local(op: str, unshared: bool, x, weight, bias, stride, padding, dilation,
           padding_mode) -> da.Array:
    x = _as_dask(x, op)
    weight, bias = _numpy(weight, "weight", op), _numpy(bias, "bias", op)
    spec = _local_mod._spec(op, unshared, x.shape, weight, bias, stride, padding, dilation,
                            padding_mode)
    dtype = result_dtype(op, x=_meta((), x.dtype), weight=weight, bias=bias)
    nd = spec.nd
    axes = [_passthrough(x.chunks[0]), _whole(x.shape[1], spec.out_shape[1])]
    ranges = []
    for a in range(nd):
        e = spec.dilation[a] * (spec.kernel[a] - 1) + 1
        axis, rng = _window_axis(x.chunks[2 + a], x.shape[2 + a], spec.out_shape[2 + a],
                                 spec.stride[a], e, *spec.pads[a], spec.mode)
        axes.append(axis)
        ranges.append(rng)

    def extra(bid):
        spans = [ranges[a][bid[2 + a]] for a in range(nd)]
        if unshared:  # the block's own kernel stacks and biases
            w = weight[tuple(slice(lo, hi) for lo, hi in spans)]
            b = None if bias is None else bias[(slice(None),) + tuple(
                slice(lo, hi) for lo, hi in spans)]
            return np.ascontiguousarray(w), None if b is None else np.ascontiguousarray(b)
        # tiled: output a + j uses stack (a + j) mod T, so roll the stacks by a
        shifts = [-(lo % t) for (lo, _), t in zip(spans, spec.tiles)]
        w = np.roll(weight, shifts, axis=tuple(range(nd))) if any(shifts) else weight
        return w, bias

    func = _partial(_local_block, unshared=unshared, stride=spec.stride,
                    dilation=spec.dilation)
    token = (op, weight, bias, spec.stride, spec.dilation, spec.pads, spec.mode)
    return _build(op, x, axes, func, extra, dtype, token)


def unshared_conv(x, weight, bias=None, *, stride=1, padding=0, dilation=1,
                  padding_mode: str = "zeros") -> da.Array:
    """:func:`gridconv.unshared_conv` of a Dask array, chunk by chunk.

    Parameters
    ----------
    x : dask.array.Array, shape (N, C_in, *S)
    weight : array, shape (*O, C_out, C_in, *K)
        NumPy; each task receives only the kernel stacks of its output positions.
    bias : array, shape (C_out, *O), optional
    stride, padding, dilation, padding_mode : as in :func:`gridconv.unshared_conv`.

    Returns
    -------
    dask.array.Array, shape (N, C_out, *O)
    """
    return _local("unshared_conv", True, x, weight, bias, stride, padding, dilation,
                  padding_mode)


def tiled_conv(x, weight, bias=None, *, stride=1, padding=0, dilation=1,
               padding_mode: str = "zeros") -> da.Array:
    """:func:`gridconv.tiled_conv` of a Dask array, chunk by chunk.

    Output chunks may start at any position: a chunk starting at output ``a`` runs with
    the stacks rolled by ``a mod T``, so the tiling phase is the global one.

    Parameters
    ----------
    x : dask.array.Array, shape (N, C_in, *S)
    weight : array, shape (*T, C_out, C_in, *K)
    bias : array, shape (C_out,), optional
    stride, padding, dilation, padding_mode : as in :func:`gridconv.tiled_conv`.

    Returns
    -------
    dask.array.Array, shape (N, C_out, *O)
    """
    return _local("tiled_conv", False, x, weight, bias, stride, padding, dilation,
                  padding_mode)


def _transpose_block(block, extra, *, weight, bias, stride, dilation, groups, c_out):
    offsets, sizes = extra
    n = block.shape[0]
    out_shape = (n, c_out, *sizes)
    if min(block.shape[2:]) == 0:  # no input reaches this chunk: the bias alone
        dt = result_dtype("conv_transpose", x=block, weight=weight, bias=bias)
        out = np.zeros(out_shape, dtype=dt)
        if bias is not None:
            out += bias.reshape((1, -1) + (1,) * len(sizes)).astype(dt)
        return out
    full = _np_conv_transpose(block, weight, bias, stride=stride, padding=0,
                              dilation=dilation, groups=groups)
    src, dst, covered = [slice(None)] * 2, [slice(None)] * 2, True
    for t0, size, f in zip(offsets, sizes, full.shape[2:]):
        lo, hi = max(t0, 0), min(t0 + size, f)
        covered &= lo == t0 and hi == t0 + size
        src.append(slice(lo, hi))
        dst.append(slice(lo - t0, hi - t0))
    if covered:
        return np.ascontiguousarray(full[tuple(src)])
    out = np.zeros(out_shape, dtype=full.dtype)
    if bias is not None:
        out += bias.reshape((1, -1) + (1,) * len(sizes)).astype(full.dtype)
    out[tuple(dst)] = full[tuple(src)]
    return out


def conv_transpose(x, weight, bias=None, *, stride=1, padding=0, output_padding=0,
                   dilation=1, groups: int = 1) -> da.Array:
    """:func:`gridconv.conv_transpose` of a Dask array, chunk by chunk.

    Output position ``j`` receives ``x[i]`` through tap ``k`` when ``j = stride*i +
    dilation*k - pad_lo``; each output chunk gathers exactly the inputs that reach it.

    Parameters
    ----------
    x : dask.array.Array, shape (N, C_in, *S)
    weight : array, shape (C_in, C_out // groups, *K)
    bias : array, shape (C_out,), optional
    stride, padding, output_padding, dilation, groups
        As in :func:`gridconv.conv_transpose`.

    Returns
    -------
    dask.array.Array, shape (N, C_out, *O)
        Output chunks start at ``stride`` times the input's chunk starts.
    """
    op = "conv_transpose"
    x = _as_dask(x, op)
    weight, bias = _numpy(weight, "weight", op), _numpy(bias, "bias", op)
    tspec = _conv_mod._transpose_spec(op, _meta(x.shape, x.dtype), weight, stride, padding,
                                      output_padding, dilation, groups)
    bias = _conv_mod._check_bias(op, bias, tspec.out_shape[1])
    dtype = result_dtype(op, x=_meta((), x.dtype), weight=weight, bias=bias)
    spec = tspec.conv
    nd = spec.nd
    axes = [_passthrough(x.chunks[0]), _whole(x.shape[1], tspec.out_shape[1])]
    offsets = []
    for a in range(nd):
        size, out = x.shape[2 + a], tspec.out_shape[2 + a]
        s, r, k, lo = spec.stride[a], spec.dilation[a], weight.shape[2 + a], spec.pads[a][0]
        ranges = _split([s * c - lo for c in _bounds(x.chunks[2 + a])], out)
        axis, offs = [], []
        for c, d in ranges:
            i0 = max(0, -(-(c + lo - r * (k - 1)) // s))
            i1 = min(size, (d - 1 + lo) // s + 1)
            axis.append((d - c, np.arange(i0, max(i0, i1), dtype=np.int64)))
            offs.append(c + lo - s * i0)
        axes.append(axis)
        offsets.append(offs)

    def extra(bid):
        return (tuple(offsets[a][bid[2 + a]] for a in range(nd)),
                tuple(axes[2 + a][bid[2 + a]][0] for a in range(nd)))

    func = _partial(_transpose_block, weight=weight, bias=bias, stride=spec.stride,
                    dilation=spec.dilation, groups=spec.groups, c_out=tspec.out_shape[1])
    token = (op, weight, bias, spec.stride, spec.dilation, spec.pads, tspec.out_shape,
             spec.groups)
    return _build(op, x, axes, func, extra, dtype, token)


# ------------------------------------------------------------------ pooling ---

def _pool_block(block, extra, *, kind, window, stride, padding, dilation, ceil_mode,
                options, in_shape):
    starts, crops = extra
    if kind == "max":
        res = _np_max_pool(block, window, stride, padding, dilation, ceil_mode,
                           return_indices=options["return_indices"])
    elif kind == "avg":
        res = _np_avg_pool(block, window, stride, padding, ceil_mode,
                           options["count_include_pad"])
    else:
        res = _np_lp_pool(block, options["p"], window, stride, padding, ceil_mode)
    sel = (slice(None), slice(None)) + tuple(slice(c0, c0 + n) for c0, n in crops)
    if kind == "max" and options["return_indices"]:
        y, idx = res
        y, idx = y[sel], idx[sel]
        # flat index in the block plane -> flat index in the whole plane
        local = np.unravel_index(idx, block.shape[2:])
        glob = tuple(li + u for li, u in zip(local, starts))
        return (np.ascontiguousarray(y),
                np.ravel_multi_index(glob, in_shape).astype(np.int64))
    return np.ascontiguousarray(res[sel])


def _pool(op: str, kind: str, x, window, stride, padding, dilation, ceil_mode, options):
    x = _as_dask(x, op)
    meta = _meta(x.shape, x.dtype)
    _pool_mod._check_x(op, meta)
    spec = _pool_mod._pool_spec(op, x.shape, window, stride, padding, dilation, ceil_mode)
    dtype = result_dtype(op, x=_meta((), x.dtype))
    axes = [_passthrough(x.chunks[0]), _passthrough(x.chunks[1])]
    extras = []
    for a in range(spec.nd):
        size, out = x.shape[2 + a], spec.out_shape[2 + a]
        k, s, d, p = spec.window[a], spec.stride[a], spec.dilation[a], spec.padding[a]
        e, j0 = d * (k - 1) + 1, -(-p // s)
        ranges = _split([-(-c // s) for c in _bounds(x.chunks[2 + a])], out)
        axis, ext = [], []
        for lo, hi in ranges:
            # start the block j0 windows early (a multiple of the stride, so the block's
            # windows are the global ones) so that its fake left padding only touches
            # cropped windows; at the true edges the padding is the real one.
            u = s * max(0, lo - j0)
            v = min(size, s * (hi - 1) - p + e)
            axis.append((hi - lo, np.arange(u, v, dtype=np.int64)))
            ext.append((u, (lo - u // s, hi - lo)))
        axes.append(axis)
        extras.append(ext)

    def extra(bid):
        e = [extras[a][bid[2 + a]] for a in range(spec.nd)]
        return tuple(u for u, _ in e), tuple(c for _, c in e)

    func = _partial(_pool_block, kind=kind, window=spec.window, stride=spec.stride,
                    padding=spec.padding, dilation=spec.dilation, ceil_mode=spec.ceil_mode,
                    options=options, in_shape=tuple(x.shape[2:]))
    token = (op, spec, sorted(options.items()))
    if kind == "max" and options["return_indices"]:
        return _build(op, x, axes, func, extra, (dtype, np.dtype(np.int64)), token, n_out=2)
    return _build(op, x, axes, func, extra, dtype, token)


def max_pool(x, window, stride=None, padding=0, dilation=1, ceil_mode=False,
             return_indices=False):
    """:func:`gridconv.max_pool` of a Dask array, chunk by chunk.

    Parameters
    ----------
    x : dask.array.Array, shape (N, C, *S)
    window, stride, padding, dilation, ceil_mode : as in :func:`gridconv.max_pool`.
    return_indices : bool
        Also return the winners' flat indices in their ``(n, c)`` plane of the whole ``x``.

    Returns
    -------
    y : dask.array.Array, shape (N, C, *O)
    indices : dask.array.Array of int64, shape (N, C, *O), only with ``return_indices``
    """
    op = "max_pool"
    want = _pool_mod._check_bool(op, return_indices, "return_indices")
    return _pool(op, "max", x, window, stride, padding, dilation, ceil_mode,
                 {"return_indices": want})


def avg_pool(x, window, stride=None, padding=0, ceil_mode=False,
             count_include_pad=True) -> da.Array:
    """:func:`gridconv.avg_pool` of a Dask array, chunk by chunk.

    Parameters
    ----------
    x : dask.array.Array, shape (N, C, *S)
    window, stride, padding, ceil_mode, count_include_pad
        As in :func:`gridconv.avg_pool` (divisors count the padding at true edges only).

    Returns
    -------
    dask.array.Array, shape (N, C, *O)
    """
    op = "avg_pool"
    include = _pool_mod._check_bool(op, count_include_pad, "count_include_pad")
    return _pool(op, "avg", x, window, stride, padding, 1, ceil_mode,
                 {"count_include_pad": include})


def lp_pool(x, p, window, stride=None, padding=0, ceil_mode=False) -> da.Array:
    """:func:`gridconv.lp_pool` of a Dask array, chunk by chunk.

    Parameters
    ----------
    x : dask.array.Array, shape (N, C, *S)
    p : float
    window, stride, padding, ceil_mode : as in :func:`gridconv.lp_pool`.

    Returns
    -------
    dask.array.Array, shape (N, C, *O)
    """
    op = "lp_pool"
    p = _pool_mod._check_p(op, p)
    return _pool(op, "lp", x, window, stride, padding, 1, ceil_mode, {"p": p})


def _global_prep(op: str, x):
    x = _as_dask(x, op)
    _pool_mod._check_x(op, _meta(x.shape, x.dtype))
    dtype = result_dtype(op, x=_meta((), x.dtype))
    return x, dtype, tuple(range(2, x.ndim))


def global_max_pool(x) -> da.Array:
    """:func:`gridconv.global_max_pool` of a Dask array: a tree reduction over chunks.

    Parameters
    ----------
    x : dask.array.Array, shape (N, C, *S)

    Returns
    -------
    dask.array.Array, shape (N, C, 1, ..., 1)
        The maximum of each plane (NaN wins, as in the NumPy path).
    """
    x, dtype, axes = _global_prep("global_max_pool", x)
    return x.astype(dtype).max(axis=axes, keepdims=True)


def global_avg_pool(x) -> da.Array:
    """:func:`gridconv.global_avg_pool` of a Dask array: float64 sums over chunks.

    Parameters
    ----------
    x : dask.array.Array, shape (N, C, *S)

    Returns
    -------
    dask.array.Array, shape (N, C, 1, ..., 1), the input's (promoted) dtype
    """
    x, dtype, axes = _global_prep("global_avg_pool", x)
    return x.astype(np.float64).mean(axis=axes, keepdims=True).astype(dtype)


# ---------------------------------------------------- sliding-window inference ---

_MODEL_LOCK = threading.Lock()


def _tile_starts(size: int, tile: int, step: int) -> list[int]:
    if size <= tile:
        return [0]
    starts = list(range(0, size - tile + 1, step))
    if starts[-1] != size - tile:
        starts.append(size - tile)
    return starts


def _blend_window(kind: str, tile: int, sigma_scale: float) -> np.ndarray:
    if kind == "constant":
        return np.ones(tile)
    centre, sigma = (tile - 1) / 2, max(sigma_scale * tile, 1e-6)
    w = np.exp(-0.5 * ((np.arange(tile) - centre) / sigma) ** 2)
    return np.maximum(w / w.max(), 1e-3)  # never 0: every voxel keeps a weight


def _tile_weight(base: np.ndarray, start: int, size: int, margin: int) -> np.ndarray:
    """1-D blending weights of one tile: ``margin`` voxels dropped at the sides that are
    not the array's edges (where the model lacks context)."""
    w = base.copy()
    if margin:
        if start > 0:
            w[:margin] = 0
        if start + len(base) < size:
            w[len(base) - margin:] = 0
    return w


class _BatchPlan:
    __slots__ = ("tiles", "dtype", "lock", "threads", "tile", "weights")

    def __init__(self, tiles, dtype, lock, threads, tile, weights):
        self.tiles, self.dtype, self.lock = tiles, dtype, lock
        self.threads, self.tile, self.weights = threads, tile, weights


def _run_batch(plan: _BatchPlan, model, chunks: list) -> np.ndarray:
    def go():
        batch = np.stack([p.gather(chunks)[0] for p in plan.tiles]).astype(plan.dtype,
                                                                            copy=False)
        if plan.lock:
            with _MODEL_LOCK:
                y = model(batch)
        else:
            y = model(batch)
        y = np.asarray(y)
        if y.ndim != batch.ndim or y.shape[0] != batch.shape[0] or \
                y.shape[2:] != batch.shape[2:]:
            raise fail("sliding_window_inference",
                       f"`model` must map a batch {batch.shape} to (B, K, *tile) with the "
                       f"same B and tile, got {y.shape}")
        out = np.empty(y.shape, dtype=np.float64)
        for b, w in enumerate(plan.weights):
            out[b] = y[b] * w
        return out
    return _with_threads(plan.threads, go)


class _BlendPlan:
    __slots__ = ("shape", "dtype", "parts")

    def __init__(self, shape, dtype, parts):
        self.shape, self.dtype, self.parts = shape, dtype, parts


def _blend(plan: _BlendPlan, batches: list) -> np.ndarray:
    acc = np.zeros(plan.shape, dtype=np.float64)
    wsum = np.zeros((plan.shape[0], 1) + plan.shape[2:], dtype=np.float64)
    for k, b, n_dst, src, dst, weight in plan.parts:
        part = batches[k][b]
        acc[(n_dst, slice(None)) + dst] += part[(slice(None),) + src]
        wsum[(n_dst, slice(None)) + dst] += weight
    return (acc / wsum).astype(plan.dtype)


def sliding_window_inference(model: Callable, volume, tile, overlap: float = 0.25,
                             batch_size: int = 4, blend: str = "gaussian", *,
                             sigma_scale: float = 0.125, margin=0,
                             out_channels: int | None = None, dtype=np.float32,
                             pad_mode: str = "zeros", chunks=None,
                             lock: bool = True) -> da.Array:
    """Run a model over a large array in overlapping tiles, blended without seams.

    Tiles of size ``tile`` overlap by ``overlap``; they are cut from the (Dask or NumPy)
    array, batched ``batch_size`` at a time through ``model`` by Dask tasks, weighted by
    a blending window (a Gaussian centred on the tile by default, so that a voxel takes
    most from the tiles where it is central) and accumulated into output chunks, each
    divided by its sum of weights. Nothing is computed until the result is.

    Parameters
    ----------
    model : callable
        Maps a NumPy batch ``(B, C, *tile)`` of ``dtype`` to ``(B, K, *tile)`` (a
        gridconv.nn model, or any function). ``model.eval()`` is called first when it
        exists.
    volume : dask or NumPy array, shape (C, *S) or (N, C, *S)
        The spatial rank is ``len(tile)``.
    tile : sequence of int
        Tile size per spatial axis. An axis shorter than its tile gets one tile, padded
        beyond the array's edge with ``pad_mode`` (and cropped afterwards).
    overlap : float in [0, 1)
        Fraction of the tile shared by neighbouring tiles.
    batch_size : int
        Tiles per model call.
    blend : {"gaussian", "constant"}
        The blending window; ``"gaussian"`` has standard deviation ``sigma_scale *
        tile`` per axis.
    margin : int or sequence of int
        Voxels at each tile side (not at the array's edges) given zero weight: with a
        model whose output near the tile border lacks context (a convolution of radius
        ``margin``), the blended result then equals the model applied to the whole
        array. The step between tiles is at most ``tile - 2*margin``.
    out_channels : int, optional
        ``K``; found by running the model once on a zero tile when not given.
    dtype : dtype
        The dtype of the batches given to the model; the result has it too.
    pad_mode : {"zeros", "reflect", "replicate", "circular"}
        Padding of tiles that extend beyond a too-short axis.
    chunks : sequence of int, optional
        Output chunk sizes per spatial axis (default: the input's chunks).
    lock : bool
        Call the model from one thread at a time (a model that keeps activations for a
        backward pass is not re-entrant); its kernels still use every core.

    Returns
    -------
    dask.array.Array, shape (K, *S) or (N, K, *S), dtype ``dtype``
    """
    op = "sliding_window_inference"
    if not callable(model):
        raise fail(op, f"`model` must be callable, got {type(model).__name__}", TypeError)
    try:
        nd = len(tile)
    except TypeError as err:
        raise fail(op, f"`tile` must be a sequence of ints (one per spatial axis), got "
                       f"{tile!r}", TypeError) from err
    tile = per_axis(tuple(tile), nd, "tile", op)
    margins = per_axis(margin, nd, "margin", op, minimum=0)
    if blend not in ("gaussian", "constant"):
        raise fail(op, f"`blend` must be 'gaussian' or 'constant', got {blend!r}")
    if not 0 <= overlap < 1:
        raise fail(op, f"`overlap` must be in [0, 1), got {overlap!r}")
    if any(2 * m >= t for m, t in zip(margins, tile)):
        raise fail(op, f"`margin` {margins} must be less than half the tile {tile}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise fail(op, f"`batch_size` must be a positive int, got {batch_size!r}")
    x = _as_dask(volume, op, "volume")
    if x.ndim not in (nd + 1, nd + 2):
        raise fail(op, f"`volume` must be {nd + 1}-D (C, *S) or {nd + 2}-D (N, C, *S) for a "
                       f"{nd}-D tile, got shape {x.shape}")
    batched = x.ndim == nd + 2
    if not batched:
        x = x[None]
    if pad_mode not in geo._NP_MODE and pad_mode != "zeros":
        raise fail(op, f"`pad_mode` must be one of ('zeros', 'reflect', 'replicate', "
                       f"'circular'), got {pad_mode!r}")
    sizes = x.shape[2:]
    if callable(getattr(model, "eval", None)):
        model.eval()
    dtype = np.dtype(dtype)
    if out_channels is None:
        probe = np.asarray(model(np.zeros((1, x.shape[1]) + tile, dtype=dtype)))
        if probe.ndim != nd + 2 or probe.shape[2:] != tile:
            raise fail(op, f"`model` must map (B, C, *tile) to (B, K, *tile), got "
                           f"{probe.shape} for a tile {tile}")
        out_channels = probe.shape[1]
    steps = [max(1, min(int(round(t * (1 - overlap))), t - 2 * m))
             for t, m in zip(tile, margins)]
    starts = [_tile_starts(s, t, st) for s, t, st in zip(sizes, tile, steps)]
    bases = [_blend_window(blend, t, sigma_scale) for t in tile]
    maps = [geo.index_map(s, 0, max(0, t - s), pad_mode) if s < t else
            np.arange(s, dtype=np.int64) for s, t in zip(sizes, tile)]
    weights1 = [{st: _tile_weight(b, st, s, m) for st in sts}
                for b, sts, s, m in zip(bases, starts, sizes, margins)]
    c_idx = np.arange(x.shape[1], dtype=np.int64)
    threads = _configured_threads()
    token = tokenize(x.name, id(model), tile, overlap, batch_size, blend, sigma_scale,
                     margins, out_channels, dtype, pad_mode, chunks)
    bname, name = f"{op}-batch-{token}", f"{op}-{token}"
    mkey = f"{op}-model-{token}"  # the model is in the graph once, not in every task
    dsk, tiles = {mkey: model}, []
    source = _Source(x)
    for n in range(x.shape[0]):
        tiles += [(n, combo) for combo in product(*starts)]
    where = {}
    for k in range(0, len(tiles), batch_size):
        plans, keys, key_index, ws = [], [], {}, []
        for b, (n, combo) in enumerate(tiles[k:k + batch_size]):
            idx = [np.array([n], dtype=np.int64), c_idx] + [
                mp[st:st + t] for mp, st, t in zip(maps, combo, tile)]
            copies, zero = source.plan(idx, key_index, keys)
            plans.append(_Plan((1, x.shape[1]) + tile, x.dtype, zero, copies, None, None,
                               None))
            w = weights1[0][combo[0]]
            for a in range(1, nd):
                w = np.multiply.outer(w, weights1[a][combo[a]])
            ws.append(w)
            where[(n, combo)] = (k // batch_size, b)
        dsk[(bname, k // batch_size)] = (
            _run_batch, _BatchPlan(plans, dtype, lock, threads, tile, ws), mkey, keys)
    dsk.update(source.halos)
    out_sp = [tuple(c) for c in x.chunks[2:]] if chunks is None else [
        tuple(da.core.normalize_chunks(c, (s,))[0]) for c, s in zip(chunks, sizes)]
    n_bounds = _bounds(x.chunks[0])
    sp_bounds = [_bounds(c) for c in out_sp]
    for bid in product(range(len(x.chunks[0])), *(range(len(c)) for c in out_sp)):
        n0, n1 = n_bounds[bid[0]], n_bounds[bid[0] + 1]
        lo = [sp_bounds[a][bid[1 + a]] for a in range(nd)]
        hi = [sp_bounds[a][bid[1 + a] + 1] for a in range(nd)]
        parts, keys, key_index = [], [], {}
        for n in range(n0, n1):
            for combo in product(*[[st for st in sts if st < h and st + t > lw]
                                   for sts, t, lw, h in zip(starts, tile, lo, hi)]):
                bi, b = where[(n, combo)]
                key = (bname, bi)
                if key not in key_index:
                    key_index[key] = len(keys)
                    keys.append(key)
                src, dst, w = [], [], None
                for a in range(nd):
                    a0, a1 = max(lo[a], combo[a]), min(hi[a], combo[a] + tile[a])
                    src.append(slice(a0 - combo[a], a1 - combo[a]))
                    dst.append(slice(a0 - lo[a], a1 - lo[a]))
                    wa = weights1[a][combo[a]][a0 - combo[a]:a1 - combo[a]]
                    w = wa if w is None else np.multiply.outer(w, wa)
                parts.append((key_index[key], b, slice(n - n0, n - n0 + 1), tuple(src),
                              tuple(dst), w))
        shape = (n1 - n0, out_channels) + tuple(h - lw for lw, h in zip(lo, hi))
        dsk[(name, bid[0], 0, *bid[1:])] = (_blend, _BlendPlan(shape, dtype, parts), keys)
    graph = HighLevelGraph.from_collections(name, dsk, dependencies=[x])
    out = da.Array(graph, name, chunks=(x.chunks[0], (out_channels,)) + tuple(out_sp),
                   dtype=dtype, meta=np.empty((0,) * x.ndim, dtype=dtype))
    return out if batched else out[0]


# ------------------------------------------------------------------- HDF5, zarr ---

_H5_FILES: dict = {}
_H5_LOCK = threading.Lock()


def _h5_open(path: str):
    import h5py

    with _H5_LOCK:
        f = _H5_FILES.get(path)
        if f is None or not f.id.valid:
            f = _H5_FILES[path] = h5py.File(path, "r")
        return f


def _h5_close(path: str) -> None:
    with _H5_LOCK:
        f = _H5_FILES.pop(os.fspath(path), None)
        if f is not None and f.id.valid:
            f.close()


class HDF5Source:
    """A picklable, lazily opened HDF5 dataset to read from (``da.from_array`` source).

    The file is opened read-only once per process, so worker processes of a
    ``dask.distributed`` cluster open it themselves.
    """

    def __init__(self, path, dataset: str):
        import h5py

        self.path, self.dataset = os.fspath(path), dataset
        with h5py.File(self.path, "r") as f:
            d = f[dataset]
            self.shape, self.dtype, self.chunks = d.shape, d.dtype, d.chunks
        self.ndim = len(self.shape)

    def __getitem__(self, sel):
        return _h5_open(self.path)[self.dataset][sel]


class HDF5Target:
    """A picklable HDF5 dataset to write to (``da.store`` target): each write opens the
    file, writes and closes it, so writes from several processes, serialised by a lock,
    never hold it open together."""

    def __init__(self, path, dataset: str):
        self.path, self.dataset = os.fspath(path), dataset

    def __setitem__(self, sel, value):
        import h5py

        with h5py.File(self.path, "r+") as f:
            f[self.dataset][sel] = value


def aligned_chunks(shape, file_chunks, itemsize: int, chunk_mb: float) -> tuple:
    """Dask chunks of about ``chunk_mb`` that are whole multiples of the file's chunks,
    grown along the last axes first (whole rows, then whole planes, ...).

    Slab-shaped chunks keep the frontier of a halo computation small: a task needs its
    own chunk and thin slabs of its neighbours, and with whole planes per chunk those
    neighbours are just the slabs before and after, so a few chunks are in memory at
    any time.
    """
    shape = tuple(int(s) for s in shape)
    base = tuple(int(c) for c in file_chunks) if file_chunks else (1,) * len(shape)
    limit = max(1, int(chunk_mb * 2**20 // itemsize))
    c = [min(b, s) for b, s in zip(base, shape)]
    for a in reversed(range(len(shape))):
        others = math.prod(c) // c[a]
        room = max(1, limit // max(1, others))
        k = max(1, room // c[a])  # whole file chunks along axis a
        c[a] = min(shape[a], c[a] * k)
        if c[a] < shape[a]:
            break
    return tuple(c)


def read_hdf5(path, dataset: str, *, chunk_mb: float = 64.0, chunks=None) -> da.Array:
    """A lazy Dask array over an HDF5 dataset, never loaded whole.

    Parameters
    ----------
    path : str or os.PathLike
    dataset : str
        The dataset's path inside the file.
    chunk_mb : float
        Target size of a Dask chunk. The chunks are whole multiples of the file's own
        chunks (the dataset's ``chunks``), so each HDF5 chunk is read by one task, and
        grow along the last axes first (see :func:`aligned_chunks`).
    chunks : tuple, optional
        Dask chunks to use instead.

    Returns
    -------
    dask.array.Array, the dataset's shape and dtype
    """
    src = HDF5Source(path, dataset)
    if chunks is None:
        chunks = aligned_chunks(src.shape, src.chunks, src.dtype.itemsize, chunk_mb)
    chunks = da.core.normalize_chunks(chunks, src.shape, dtype=src.dtype)
    token = tokenize(src.path, dataset, os.path.getmtime(src.path), chunks)
    return da.from_array(src, chunks=chunks, lock=False, asarray=True, name=f"hdf5-{token}",
                         meta=np.empty((0,) * src.ndim, dtype=src.dtype))


def _client():
    if "distributed" not in sys.modules:
        return None
    from distributed import default_client

    try:
        return default_client()
    except ValueError:
        return None


def _run(delayed, progress: bool) -> None:
    """Compute a store graph with a progress bar: ``distributed.progress`` on a cluster,
    ``dask.diagnostics.ProgressBar`` locally."""
    client = _client()
    if client is not None:
        future = client.compute(delayed)
        if progress:
            from distributed import progress as dprogress

            dprogress(future)
        future.result()
        return
    if progress:
        from dask.diagnostics import ProgressBar

        with ProgressBar():
            delayed.compute()
    else:
        delayed.compute()


def _write_lock(path: str):
    client = _client()
    if client is not None:
        from distributed import Lock

        return Lock(f"gridconv-hdf5-{os.path.abspath(path)}")
    return threading.Lock()


def write_hdf5(array, path, dataset: str, *, compression=None, progress: bool = True,
               overwrite: bool = False, chunks=None) -> None:
    """Compute a Dask array chunk by chunk into an HDF5 dataset (created here).

    Parameters
    ----------
    array : dask.array.Array
    path : str or os.PathLike
        Opened in append mode (created if missing); it must not be a file the graph
        reads from.
    dataset : str
    compression : str, optional
        h5py's ``compression`` (``"gzip"``, ``"lzf"``).
    progress : bool
        Show a progress bar.
    overwrite : bool
        Replace an existing dataset of that name.
    chunks : tuple of int, optional
        The dataset's HDF5 chunks; default: the array's first Dask chunk, halved along
        its longest axis until under 4 MiB.
    """
    import h5py

    op = "write_hdf5"
    array = _as_dask(array, op, "array")
    path = os.fspath(path)
    if chunks is None:
        chunks = _h5_chunks(array)
    with h5py.File(path, "a") as f:
        if dataset in f:
            if not overwrite:
                raise fail(op, f"`dataset` {dataset!r} exists in {path}; pass overwrite=True")
            del f[dataset]
        f.create_dataset(dataset, shape=array.shape, dtype=array.dtype, chunks=chunks,
                         compression=compression)
    _h5_close(path)
    target = HDF5Target(path, dataset)
    _run(da.store(array, target, lock=_write_lock(path), compute=False), progress)


def _h5_chunks(array: da.Array) -> tuple:
    """HDF5 chunks that tile every Dask chunk's start: the largest divisor-friendly block
    (the common chunk size per axis, halved until under 4 MiB)."""
    c = [max(1, int(ch[0])) for ch in array.chunks]
    item = array.dtype.itemsize
    while math.prod(c) * item > 4 * 2**20:
        a = int(np.argmax(c))
        if c[a] == 1:
            break
        c[a] = -(-c[a] // 2)
    return tuple(c)


def transform_hdf5(src, dataset: str, dst, dst_dataset: str | None = None, func=None, *,
                   chunk_mb: float = 64.0, compression=None, progress: bool = True,
                   overwrite: bool = False) -> tuple:
    """Apply ``func`` (Dask array -> Dask array) to an HDF5 dataset, HDF5 to HDF5.

    Parameters
    ----------
    src, dataset : the input file and dataset (read with :func:`read_hdf5`).
    dst, dst_dataset : the output file (a different file) and dataset (default:
        ``dataset``).
    func : callable
        Builds the lazy result from the lazy input, e.g. ``lambda x:
        gridconv.max_pool(x, 2)``.
    chunk_mb, compression, progress, overwrite : see :func:`read_hdf5`, :func:`write_hdf5`.

    Returns
    -------
    tuple : the output dataset's shape.
    """
    op = "transform_hdf5"
    if os.path.abspath(os.fspath(src)) == os.path.abspath(os.fspath(dst)):
        raise fail(op, "`dst` must be a different file from `src` (HDF5 cannot be read and "
                       "written by several processes at once)")
    x = read_hdf5(src, dataset, chunk_mb=chunk_mb)
    y = func(x)
    write_hdf5(y, dst, dst_dataset or dataset, compression=compression, progress=progress,
               overwrite=overwrite)
    _h5_close(os.fspath(src))
    return tuple(y.shape)


def _lifted_conv(op, weight, bias, params):
    """Apply ``conv`` to an array stored as (*S), (C, *S) or (N, C, *S)."""
    weight = _numpy(weight, "weight", op)
    if weight is None or weight.ndim not in (3, 4, 5):
        raise fail(op, f"`weight` must be 3-D, 4-D or 5-D (C_out, C_in, *K), got "
                       f"{None if weight is None else weight.shape}")
    nd = weight.ndim - 2

    def func(x):
        if x.ndim == nd:
            y = conv(x[None, None], weight, bias, **params)
            return y[0, 0] if y.shape[1] == 1 else y[0]
        if x.ndim == nd + 1:
            return conv(x[None], weight, bias, **params)[0]
        if x.ndim == nd + 2:
            return conv(x, weight, bias, **params)
        raise fail(op, f"the dataset must be {nd}-D (*S), {nd + 1}-D (C, *S) or {nd + 2}-D "
                       f"(N, C, *S) for a {nd + 2}-D weight, got shape {x.shape}")
    return func


def filter_hdf5(src, dataset: str, weight, dst, dst_dataset: str | None = None, *,
                bias=None, chunk_mb: float = 64.0, compression=None, progress: bool = True,
                overwrite: bool = False, **params) -> tuple:
    """Filter an HDF5 dataset with :func:`gridconv.conv`, HDF5 to HDF5, chunk by chunk.

    The input is read in Dask chunks aligned with the file's chunks, each output chunk is
    computed from its input region plus halo, and written as soon as it is ready, so the
    memory used is a few chunks, whatever the dataset's size. A progress bar shows
    (``distributed.progress`` when a ``dask.distributed`` client is active, on which the
    work then runs).

    Parameters
    ----------
    src : str or os.PathLike
    dataset : str
        Stored as ``(*S)`` (a volume, filtered as one sample and channel), ``(C, *S)`` or
        ``(N, C, *S)``; the output keeps the layout (``(*O)`` becomes ``(C_out, *O)``
        when ``C_out > 1``).
    weight : array, shape (C_out, C_in // groups, *K)
    dst : str or os.PathLike
        A different file; created if missing.
    dst_dataset : str, optional
        Default: ``dataset``.
    bias : array, shape (C_out,), optional
    chunk_mb, compression, progress, overwrite : see :func:`read_hdf5`, :func:`write_hdf5`.
    **params
        ``stride``, ``padding``, ``dilation``, ``groups``, ``padding_mode``, ``flip`` of
        :func:`gridconv.conv`.

    Returns
    -------
    tuple : the output dataset's shape.
    """
    func = _lifted_conv("filter_hdf5", weight, bias, params)
    return transform_hdf5(src, dataset, dst, dst_dataset, func, chunk_mb=chunk_mb,
                          compression=compression, progress=progress, overwrite=overwrite)


def read_zarr(store, component: str | None = None) -> da.Array:
    """A lazy Dask array over a zarr array (its chunks are the zarr chunks).

    Parameters
    ----------
    store : str, os.PathLike or zarr store
    component : str, optional
        The array's path inside a zarr group.
    """
    return da.from_zarr(os.fspath(store) if isinstance(store, os.PathLike) else store,
                        component=component)


def write_zarr(array, store, component: str | None = None, *, progress: bool = True,
               overwrite: bool = False) -> None:
    """Compute a Dask array chunk by chunk into a zarr array (created with the array's
    chunks, made regular first if needed).

    Parameters
    ----------
    array : dask.array.Array
    store : str, os.PathLike or zarr store
    component : str, optional
    progress, overwrite : bool
    """
    array = _as_dask(array, "write_zarr", "array")
    regular = tuple(max(c) for c in array.chunks)
    if any(len(set(c[:-1])) > 1 or c[-1] > c[0] for c in array.chunks):
        array = array.rechunk(regular)
    store = os.fspath(store) if isinstance(store, os.PathLike) else store
    _run(da.to_zarr(array, store, component=component, overwrite=overwrite, compute=False),
         progress)


def filter_zarr(src, weight, dst, *, component: str | None = None,
                dst_component: str | None = None, bias=None, progress: bool = True,
                overwrite: bool = False, **params) -> tuple:
    """Filter a zarr array with :func:`gridconv.conv`, zarr to zarr, chunk by chunk.

    Parameters
    ----------
    src, dst : str, os.PathLike or zarr store
    weight : array, shape (C_out, C_in // groups, *K)
    component, dst_component : str, optional
        Array paths inside zarr groups.
    bias : array, shape (C_out,), optional
    progress, overwrite : bool
    **params
        As for :func:`filter_hdf5` (layout ``(*S)``, ``(C, *S)`` or ``(N, C, *S)``).

    Returns
    -------
    tuple : the output array's shape.
    """
    func = _lifted_conv("filter_zarr", weight, bias, params)
    y = func(read_zarr(src, component))
    write_zarr(y, dst, dst_component, progress=progress, overwrite=overwrite)
    return tuple(y.shape)

