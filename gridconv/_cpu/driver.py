"""Drivers of the CPU engine: turn tap tables into kernel arguments and size the tiles.

Arrays arrive here 5-D (``(N, C, Z, Y, X)``), C-contiguous, float32 or float64; the
public layer (:mod:`gridconv.conv`) has already validated and lifted them.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools

import numba
import numpy as np

from .. import _algorithms
from .._geometry import Axis, forward_axis, phase_axes
from . import gather as k
from . import winograd as wk

# Bytes of patches per thread: with the slab and output tile this stays near the 512 KB L2.
_PATCH_BYTES = 160 * 1024
# Below this many multiply-adds a call runs on one thread: waking (and, on a loaded
# machine, waiting for) a second thread costs more than the work.
_SERIAL_WORK = 1 << 18


# The direct kernel (register blocks over slab runs, see ``gather.gather_direct``) runs
# every convolution whose output rows merge into long runs or are themselves at least
# ``_DIRECT_MIN_ROW`` long (per kernel stack along x): its blocks are 16 positions wide
# (float32), so shorter rows waste part of each block. Measured on 64 -> 128 channels
# at stride 2 (rows of 8-16 outputs): the direct kernel was 0.77-0.86x the patch path's
# time from 13 outputs, 0.97x at 12, 1.0x at 11 and 1.3-1.5x at 8-9. Few destination
# channels per group (``_DIRECT_MAX_OUT``) also go there: the patch path pads them to 2.
_DIRECT_MAX_OUT = 2
_DIRECT_MIN_ROW = 12
# Positions per direct tile with 4 or more destination channels (their accumulator rows
# stay in L2 while the reduction runs in chunks).
_DIRECT_SPAN = 512
# Destination channels per group from which the weight gradient runs on register blocks
# of channel vectors (fewer would leave most of each 16-channel block empty), and the
# rows (outputs along x) it needs where they do not merge: measured at stride 2 on 64 ->
# 128 and 256 -> 256 channels, 0.66-0.90x the patch path's time from 7 outputs, 1.03x at
# 6, 1.35x at 4.
_BLOCKED_MIN_OUT = 8
_BLOCKED_MIN_ROW = 7
# Units (channel x tap) per chunk of the direct kernel's reduction (see gather_direct).
_DIRECT_CHUNK = 128


def _run(kernel, work: int, *args):
    """Call a parallel kernel with the thread count as its last argument; small problems
    get one thread, and the parallel region itself is narrowed to that thread."""
    if work >= _SERIAL_WORK:
        return kernel(*args, numba.get_num_threads())
    before = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        return kernel(*args, 1)
    finally:
        numba.set_num_threads(before)


def _round_up(v: int, m: int) -> int:
    return -(-v // m) * m


def _by_identity(cache: dict, objs: tuple, extra: tuple, build):
    """``build()``, cached by the identity of ``objs`` (and the values ``extra``). The
    driver's inputs come from lru caches, the same objects call after call, and comparing
    or converting them cost microseconds of every call; the objects are kept in the entry,
    so that their ids are not reused while it lives."""
    key = (*map(id, objs), *extra)
    hit = cache.get(key)
    if hit is not None and all(h is o for h, o in zip(hit[0], objs, strict=True)):
        return hit[1]
    value = build()
    if len(cache) > 1024:
        cache.clear()
    cache[key] = (tuple(objs), value)
    return value


def _tables(axes: list[Axis]):
    """The kernels' per-axis tables of ``axes`` (left writeable: Numba would type
    read-only arrays apart and compile every kernel again; no kernel writes them)."""
    return _by_identity(_TABLES, tuple(axes), (), lambda: _build_tables(axes))


def _build_tables(axes: list[Axis]):
    i64 = np.int64
    m = np.array([a.m for a in axes], dtype=i64)
    d0 = np.array([a.d0 for a in axes], dtype=i64)
    ds = np.array([a.ds for a in axes], dtype=i64)
    ss = np.array([a.ss for a in axes], dtype=i64)
    qlo = np.array([a.qlo for a in axes], dtype=i64)
    offs = tuple(np.ascontiguousarray(a.off, dtype=i64) for a in axes)
    maps = tuple(np.ascontiguousarray(a.map, dtype=i64) for a in axes)
    return m, d0, ds, ss, qlo, offs, maps


_TABLES: dict = {}


def _positions(axes: list[Axis]) -> int:
    """Grid positions of a gather (a Python int: np.prod costs microseconds)."""
    return axes[0].m * axes[1].m * axes[2].m


def _tile(m, rpad: int, itemsize: int, outer_tasks: int) -> tuple[int, int]:
    """Rows x cols of a tile: patches near ``_PATCH_BYTES``, and enough tiles to keep
    every thread busy (at least 4 per thread when the problem allows)."""
    target = min(max(_PATCH_BYTES // (rpad * itemsize), 16), 4096)
    cols = int(min(m[2], target))
    rows = int(max(1, min(m[1], target // cols)))
    want = 4 * numba.get_num_threads()

    def ntiles(r, c):
        return outer_tasks * int(m[0]) * -(-int(m[1]) // r) * -(-int(m[2]) // c)

    while ntiles(rows, cols) < want and (rows > 1 or cols > 8):
        if rows > 1:
            rows = -(-rows // 2)
        else:
            cols = -(-cols // 2)
    return rows, cols


def _direct_span(m, od: int, cs: int, ssx: int) -> int:
    """Positions per tile of ``gather_direct``: ``_DIRECT_SPAN`` from 4 destination
    channels, 2048 below. The single rows of 1-D tiles take up to 64K elements of slab
    (``cs*ssx`` per position) and accumulator (``od``) together: about 1800 positions
    for the audio front end (1 -> 32 channels, stride 4), 3-4% faster than 512 (measured;
    but 9-12% slower for 32 -> 64 channels at stride 2, whose slab and accumulator then
    overflow L2)."""
    if od < 4:
        return 2048
    if m[0] == 1 and m[1] == 1:
        return min(max(65536 // (cs * ssx + od), _DIRECT_SPAN), 2048)
    return _DIRECT_SPAN


def _direct_tile(m, outer_tasks: int, limit: int = 2048) -> tuple[int, int]:
    """Tiles of whole rows (up to ``limit`` positions) for the direct kernels."""
    cols = int(min(m[2], limit))
    rows = int(max(1, min(m[1], limit // cols)))
    want = 4 * numba.get_num_threads()
    while outer_tasks * int(m[0]) * -(-int(m[1]) // rows) * -(-int(m[2]) // cols) < want and (
            rows > 1 or cols > 64):
        if rows > 1:
            rows = -(-rows // 2)
        else:
            cols = -(-cols // 2)
    return rows, cols


# _zero_padded's answers by map (the comparison cost as much as a small depthwise call's
# kernel)
_ZERO_PADDED: dict = {}


def _zero_padded(a: Axis, size: int) -> bool:
    """Whether ``a`` reads zeros outside a source of ``size`` (and nothing else)."""
    def answer():
        q = a.qlo + np.arange(a.map.shape[0])
        return bool(np.array_equal(a.map, np.where((q >= 0) & (q < size), q, -1)))

    return _by_identity(_ZERO_PADDED, (a.map,), (a.qlo, size), answer)


def _wraps(src: np.ndarray, stacks: int, cs: int, od: int, axes: list[Axis], place) -> bool:
    """Whether :func:`gather.gather_wrapped` runs this gather: one stack, one source
    channel and at most 6 destination channels per group, rows of 2-D or 3-D outputs as
    long as the source rows, unit steps and zero padding along y and x."""
    ay, ax = axes[1], axes[2]
    return (place is None and stacks == 1 and cs == 1 and od <= 6
            and ay.m > 1 and ax.m == src.shape[4]
            and all(a.ss == 1 and a.ds == 1 and a.d0 == 0 for a in (ay, ax))
            and _zero_padded(ay, src.shape[3]) and _zero_padded(ax, src.shape[4]))


# Winograd along x (see winograd.py): from this many destination channels, units per
# phase (source channels x z taps x y taps) and outputs per row (fewer leave the
# transforms' cost uncovered: at 9 units or on 4x4 images the direct kernel is as fast
# or faster), over tiles of up to this many outputs.
_WINO_MIN_OUT = 8
_WINO_MIN_UNITS = 16
_WINO_MIN_ROW = 8
_WINO_SPAN = 1024
_WINO_ACC = 96 * 1024
# Outputs per tile of F(mt, 3).
_WINO_MT = 4


def _winograd(src, stacks: int, cs: int, od: int, axes: list[Axis], place) -> bool:
    """Whether :func:`winograd.gather_winograd` runs this gather: float32 (float64 is
    asked for accuracy, which the direct sums serve best; and it would compile another
    20 s), three consecutive x taps, unit steps along x and unit source steps along y,
    enough channels."""
    az, ay, ax = axes
    return (_algorithms.enabled("winograd") and src.dtype == np.float32
            and place is None and stacks == 1
            and ax.taps == 3 and ax.consecutive and ax.ss == 1 and ax.ds == 1
            and ay.ss == 1 and od >= _WINO_MIN_OUT and ax.m >= _WINO_MIN_ROW
            and cs * az.taps * ay.taps >= _WINO_MIN_UNITS)


def _wino_span(od: int, mt: int) -> int:
    """Outputs per Winograd tile: ``_WINO_SPAN``, fewer where the accumulator (``mt + 2``
    phases x ``od`` channels x ``span / mt`` tiles) would pass 96K elements (384 KB in
    float32, within the 512 KB L2 with the slab; from 64 destination channels)."""
    return int(max(8 * mt, min(_WINO_SPAN, _WINO_ACC // ((mt + 2) * od) * mt)))


def _even_chunk(nunit: int, limit: int) -> int:
    """Units per chunk: at most ``limit``, in chunks of near-equal size."""
    return -(-nunit // -(-nunit // limit)) if nunit else 1


def pack_weight(w6: np.ndarray, axes: list[Axis]) -> np.ndarray:
    """(G, D, S, Kz, Ky, Kx) -> (G, Dpad, Rpad): rows per destination channel, the
    reduction laid out (tz, ty, tx, s) in tap order, zero-padded to the 2x8 blocking."""
    g, d, s = w6.shape[:3]
    taps = w6[:, :, :, axes[0].kidx][:, :, :, :, axes[1].kidx][:, :, :, :, :, axes[2].kidx]
    mat = taps.transpose(0, 1, 3, 4, 5, 2).reshape(g, d, -1)
    r = mat.shape[2]
    out = np.zeros((g, _round_up(d, 2), _round_up(r, 8)), dtype=w6.dtype)
    out[:, :d, :r] = mat
    return out


@functools.lru_cache(maxsize=256)
def _block_order(d: int, s: int, kshape: tuple, kz: tuple, ky: tuple, kx: tuple) -> np.ndarray:
    """Where each packed weight of :func:`pack_blocks` comes from in a flattened
    ``(D, S, Kz, Ky, Kx)`` weight row (cached: it depends on the geometry only)."""
    nk = kshape[0] * kshape[1] * kshape[2]
    # unit u = (z tap, y tap, channel, x tap) as gather._unit_offsets orders them; the
    # source index of (o, u)
    kz, ky, kx = (np.asarray(v) for v in (kz, ky, kx))
    src = (np.arange(d)[:, None, None, None, None] * s * nk
           + (kz[:, None, None, None] * kshape[1] + ky[None, :, None, None]) * kshape[2]
           + np.arange(s)[None, None, :, None] * nk + kx[None, None, None, :])
    src = src.reshape(d, -1)
    u = src.shape[1]
    order = np.empty(d * u, dtype=np.int64)
    nblk = -(-d // 6)
    for blk in range(nblk):
        o0, mr = k._channel_block(blk, nblk, d)
        order[o0 * u: (o0 + mr) * u] = src[o0: o0 + mr].T.ravel()
    order.setflags(write=False)
    return order


def pack_blocks(w7: np.ndarray, axes: list[Axis]) -> np.ndarray:
    """(P, G, D, S, Kz, Ky, Kx) weights -> (P, G, D*U): the ``U = S*Tz*Ty*Tx`` units
    (z tap, y tap, channel, x tap, the taps of ``axes``) of the destination channels in the
    near-equal blocks of at most 6 of ``gather._channel_block``, each laid out (U, mr),
    the order in which ``gather_direct``'s register blocks read them. One gather through
    a cached index: the weights are copied once."""
    p, g, d, s = w7.shape[:4]
    order = _block_order(d, s, w7.shape[4:], *(tuple(a.kidx.tolist()) for a in axes))
    return np.take(w7.reshape(p, g, -1), order, axis=2)


def gather(src: np.ndarray, w6: np.ndarray, bias, dst: np.ndarray, axes: list[Axis],
           tiles=None, place=None) -> None:
    """Run the gather kernel for one set of tap tables, writing ``dst`` in place.

    ``w6`` is (G, D, S, Kz, Ky, Kx); with ``tiles`` (stacks per axis) it has a leading axis
    of ``prod(tiles)`` stacks, periodic over the positions (see ``gather.gather``).
    ``place`` (G*D, 4) sends the computed channels elsewhere (see ``gather_direct``); it
    needs rows that merge (unit source steps, no stacks).
    """
    if any(a.m == 0 for a in axes):
        return
    m, d0, ds, ss, qlo, offs, maps = _tables(axes)
    b = np.empty(0, dtype=src.dtype) if bias is None else bias
    if tiles is not None and np.prod(tiles) == 1:
        w6, tiles = w6[0], None  # one stack: a plain convolution
    periodic = tiles is not None
    w7 = w6 if periodic else w6[None]
    tiles = (1, 1, 1) if tiles is None else tiles
    flat = axes[1].ss == 1 and axes[2].ss == 1
    od = w7.shape[2]
    # The direct kernel runs a tile's rows as one long span when output rows map to
    # consecutive slab rows of one stack; otherwise row by row (phases of a stride or of
    # the stacks along x are split into contiguous runs).
    merged = flat and tiles[1] == 1 and tiles[2] == 1
    long_rows = axes[2].m // tiles[2] >= _DIRECT_MIN_ROW
    if (_winograd(src, w7.shape[0], w7.shape[3], od, axes, place)
            and _gather_winograd(src, w7, b, dst, axes, m, d0, ds, ss, qlo, offs, maps)):
        return
    if _wraps(src, w7.shape[0], w7.shape[3], od, axes, place):
        taps = pack_blocks(w7, axes)
        # whole rows (the kernel's tiles span x)
        rows = _direct_tile(m, src.shape[0] * w7.shape[1])[0]
        work = src.shape[0] * _positions(axes) * taps[0].size
        _run(k.gather_wrapped, work, src, np.ascontiguousarray(taps), b, dst, m,
             axes[0].d0, axes[0].ds, axes[0].ss, *offs, maps[0], qlo, rows)
        return
    if od <= _DIRECT_MAX_OUT or merged or long_rows:
        taps = pack_blocks(w7, axes)
        rows, cols = _direct_tile(m, src.shape[0] * w7.shape[1],
                                  _direct_span(m, od, w7.shape[3], axes[2].ss))
        work = src.shape[0] * _positions(axes) * taps[0].size
        where = np.empty((0, 4), np.int64) if place is None else place
        _run(k.gather_direct, work, src, np.ascontiguousarray(taps), b, dst, m, d0, ds, ss,
             *offs, *maps, qlo, np.asarray(tiles, np.int64), rows, cols, _DIRECT_CHUNK, where)
        return
    assert place is None, "placed channels need the direct kernel"
    wmat = np.stack([pack_weight(w, axes) for w in w7])
    rows, cols = _tile(m, wmat.shape[3], src.itemsize, src.shape[0] * wmat.shape[1])
    work = src.shape[0] * _positions(axes) * wmat[0].size
    _run(k.gather, work, src, wmat, b, dst, m, d0, ds, ss, *offs, *maps, qlo,
         axes[2].consecutive, np.asarray(tiles, np.int64), rows, cols)


def _gather_winograd(src, w7, b, dst, axes, m, d0, ds, ss, qlo, offs, maps) -> bool:
    """Run :func:`winograd.gather_winograd`; False (``dst`` to be overwritten) when the
    weights or a transformed input are not finite (the direct kernel then runs)."""
    if not np.isfinite(w7).all():
        return False
    mt = _WINO_MT
    g, d, s = w7.shape[1:4]
    taps = w7[0][..., axes[2].kidx]  # (G, D, S, Kz', Ky', 3), x taps in offset order
    u = wk.transform_weights(taps, mt)  # (nph, G, D, S, Kz', Ky')
    order = _block_order(d, s, u.shape[4:] + (1,), tuple(axes[0].kidx.tolist()),
                         tuple(axes[1].kidx.tolist()), (0,))
    wpk = np.ascontiguousarray(np.take(u.reshape(u.shape[0], g, -1), order, axis=2))
    nunit = s * axes[0].taps * axes[1].taps
    rows, cols = _direct_tile(m, src.shape[0] * g, _wino_span(d, mt))
    work = src.shape[0] * _positions(axes) * g * d * nunit * 3
    bad = _run(wk.gather_winograd, work, src, wpk, b, dst, m, d0, ds, ss, *offs,
               *maps, qlo, rows, cols, _even_chunk(nunit, _DIRECT_CHUNK))
    return not bad.any()


def input_grad(gout: np.ndarray, w6: np.ndarray, bias, dst: np.ndarray, geom) -> None:
    """Fill ``dst`` (the conv input's shape) with the transposed gather of ``gout``.

    ``geom`` is per axis ``(size, src_size, K, stride, dilation, pad_lo)``; ``w6`` is
    (G, D, S, K...) with D the destination (conv input) channels per group.
    """
    if all(k == s and r == 1 and lo == 0 and size == src_size * s
           for size, src_size, k, s, r, lo in geom) and any(g[2] > 1 for g in geom):
        _disjoint_phases(gout, w6, bias, dst, [g[2] for g in geom])
        return
    per_axis = [phase_axes(*g) for g in geom]
    phases = list(itertools.product(*per_axis))
    if any(a.taps == 0 for axes in phases for a in axes if a.m > 0):
        if bias is None:
            dst[...] = 0
        else:
            dst[...] = bias.reshape(1, -1, 1, 1, 1)
    for axes in phases:
        if all(a.taps > 0 for a in axes):
            gather(gout, w6, bias, dst, list(axes))


def _disjoint_phases(src: np.ndarray, w6: np.ndarray, bias, dst: np.ndarray, taps) -> None:
    """The transposed gather when every kernel equals its stride (the usual learned 2x
    upsampling): each destination position takes exactly one tap, so every phase reads
    the same source, and one 1x1 gather to D*Kz*Ky*Kx channels, each placed at its phase
    (``place``), replaces one slab and one pass per phase."""
    g, d, s = w6.shape[:3]
    nph = taps[0] * taps[1] * taps[2]
    # (G, D, S, Kz, Ky, Kx) -> (G, D*P, S, 1, 1, 1), computed channel (g, d, a, b, e)
    w1 = np.ascontiguousarray(w6.transpose(0, 1, 3, 4, 5, 2)).reshape(g, d * nph, s, 1, 1, 1)
    b1 = None if bias is None else np.repeat(bias, nph)
    place, axes = _phase_places(g * d, tuple(taps), src.shape[2:])
    gather(src, w1, b1, dst, list(axes), place=place)


@functools.lru_cache(maxsize=64)
def _phase_places(channels: int, taps: tuple, sizes: tuple):
    """:func:`_disjoint_phases`' ``place`` table (computed channel (c, a, b, e) goes to
    channel c at phase (a, b, e)) and its 1x1 axes with destination steps ``taps``;
    cached, as they depend on the shapes only. (The kernels never write ``place``; it
    stays writable, as a read-only array would compile a second specialisation.)"""
    nph = taps[0] * taps[1] * taps[2]
    ph = np.indices(taps).reshape(3, -1).T  # (P, 3): (a, b, e)
    place = np.ascontiguousarray(np.concatenate(
        [np.repeat(np.arange(channels), nph)[:, None], np.tile(ph, (channels, 1))], axis=1),
        dtype=np.int64)
    axes = tuple(dataclasses.replace(forward_axis(n, n, 1, 1, 1, 0, 0, "zeros"), ds=kk)
                 for n, kk in zip(sizes, taps, strict=True))
    return place, axes


def weight_grad(src: np.ndarray, gout: np.ndarray, groups: int, axes: list[Axis],
                tiles=None) -> np.ndarray:
    """(G, D, S, Tz, Ty, Tx): sum over samples and positions of gout x patches(src); with
    ``tiles``, (P, G, D, S, Tz, Ty, Tx), one gradient per periodic stack."""
    d = gout.shape[1] // groups
    s = src.shape[1] // groups
    t = [a.taps for a in axes]
    m, _, _, ss, qlo, offs, maps = _tables(axes)
    flat = axes[1].ss == 1 and axes[2].ss == 1
    periodic = tiles is not None
    if periodic and np.prod(tiles) == 1:
        return weight_grad(src, gout, groups, axes)[None]
    tiles = (1, 1, 1) if tiles is None else tiles
    lanes = 32 // src.itemsize
    if not periodic and d >= _BLOCKED_MIN_OUT and (flat or axes[2].m >= _BLOCKED_MIN_ROW):
        # register blocks of units x channel vectors (see gather.weight_grad_blocked)
        odp = _round_up(d, 2 * lanes)
        rows, cols = _direct_tile(m, src.shape[0] * groups, _DIRECT_SPAN)
        work = src.shape[0] * groups * _positions(axes) * odp * s * t[0] * t[1] * t[2]
        part = _run(k.weight_grad_blocked, work, src, gout, m, ss, *offs, *maps, qlo, rows,
                    cols, groups, odp)
        total = part.sum(axis=0)[:, :, :d]  # (G, U, D), units (tz, ty, s, tx)
        total = total.reshape(groups, t[0], t[1], s, t[2], d)
        return np.ascontiguousarray(total.transpose(0, 5, 3, 1, 2, 4))
    if not periodic and ((d == 1 and s == 1) or (flat and (d == 1 or s == 1))):
        # a single output or input channel: dot products of contiguous slab runs
        rows, cols = _direct_tile(m, src.shape[0] * groups)
        work = src.shape[0] * groups * _positions(axes) * d * s * t[0] * t[1] * t[2]
        part = _run(k.weight_grad_direct, work, src, gout, m, ss, *offs, *maps, qlo, rows,
                    cols, groups)
        return part.sum(axis=0)
    r = t[0] * t[1] * t[2] * s
    opad, rpad = _round_up(d, 2), _round_up(r, 8)
    rows, cols = _tile(m, rpad, src.itemsize, src.shape[0] * groups)
    work = src.shape[0] * groups * _positions(axes) * opad * rpad
    part = _run(k.weight_grad, work, src, gout, m, ss, *offs, *maps, qlo, axes[2].consecutive,
                np.asarray(tiles, np.int64), rows, cols, groups, opad, rpad)
    total = part.sum(axis=0)[:, :, :d, :r]
    total = total.reshape(-1, groups, d, t[0], t[1], t[2], s).transpose(0, 1, 2, 6, 3, 4, 5)
    return total if periodic else total[0]


def bias_grad(gout: np.ndarray) -> np.ndarray:
    return k.bias_grad(gout.reshape(gout.shape[0], gout.shape[1], -1))


def pad_adjoint(gpad: np.ndarray, out_shape, maps) -> np.ndarray:
    out = np.zeros(out_shape, dtype=gpad.dtype)
    k.pad_adjoint(gpad, out, *maps)
    return out
