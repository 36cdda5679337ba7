"""Tap tables: the one description of a convolution that every kernel consumes.

Every operation of the convolution family is computed as a *gather*: for each position
``m`` of a grid (per axis ``m = 0 .. M-1``), a destination element at ``d0 + ds*m`` is the
dot product of a weight stack with the source values at ``ss*m + off[t]`` for the taps
``t`` (source coordinates outside the source are resolved by an index map: zero padding,
or reflect/replicate/circular). This is JAX's ``conv_general_dilated`` in disguise:

* forward conv: ``ss = stride``, ``off[k] = dilation*k - pad_lo``, ``d0 = 0, ds = 1``;
* gradient w.r.t. the input (and so ``conv_transpose``): the output grid is split into
  ``stride`` phases per axis; in phase ``i0`` only the taps with
  ``dilation*k = i0 + pad_lo (mod stride)`` contribute, at ``off = (i0 + pad_lo -
  dilation*k) / stride`` with ``ss = 1`` -- the "stride and dilation exchanged, kernel
  flipped" rule, without multiplying the zeros an input dilation would insert;
* gradient w.r.t. the weight: the forward gather with the output gradient as weights.

The tables are plain NumPy arrays, independent of the device that consumes them.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

_NP_MODE = {"reflect": "reflect", "replicate": "edge", "circular": "wrap"}


@dataclass(frozen=True)
class Axis:
    """One spatial axis of a gather (see the module docstring)."""

    m: int  # number of positions
    d0: int  # destination coordinate of position 0
    ds: int  # destination step
    ss: int  # source step
    off: np.ndarray  # (T,) int64, source offset of each tap, strictly increasing
    kidx: np.ndarray  # (T,) int64, kernel index of each tap
    qlo: int  # source coordinate of map[0]
    map: np.ndarray  # int64 source index of coordinate q = qlo + i, or -1 (a zero)

    @property
    def taps(self) -> int:
        return len(self.off)

    @functools.cached_property  # the axes are cached and asked again on every call
    def consecutive(self) -> bool:
        return self.taps <= 1 or bool(np.all(np.diff(self.off) == 1))


def index_map(size: int, lo: int, hi: int, mode: str) -> np.ndarray:
    """Source index of each padded coordinate ``-lo .. size+hi-1`` (-1 for a zero)."""
    idx = np.arange(size, dtype=np.int64)
    if mode == "zeros":
        return np.pad(idx, (lo, hi), mode="constant", constant_values=-1)
    if mode == "reflect" and size == 1:
        return np.zeros(size + lo + hi, dtype=np.int64)
    return np.pad(idx, (lo, hi), mode=_NP_MODE[mode])


# Tables are built per call from a handful of ints and never written to, so they are
# cached: building them (np.pad for the index map) cost a third of a small conv's time.
@functools.lru_cache(maxsize=1024)
def forward_axis(size, out, k, s, r, lo, hi, mode, *, flip_taps: bool = False) -> Axis:
    """Axis of a forward conv: ``out`` positions over a source of ``size``."""
    ks = np.arange(k, dtype=np.int64)
    return Axis(m=out, d0=0, ds=1, ss=s, off=r * ks - lo,
                kidx=ks[::-1].copy() if flip_taps else ks,
                qlo=-lo, map=index_map(size, lo, hi, mode))


def phase_axes(size, src_size, k, s, r, lo) -> list[Axis]:
    """The ``s`` phase axes of the input gradient (``size`` = conv input size,
    ``src_size`` = conv output size), each with its own taps; empty phases included."""
    return list(_phase_axes(size, src_size, k, s, r, lo))


@functools.lru_cache(maxsize=1024)
def _phase_axes(size, src_size, k, s, r, lo) -> tuple[Axis, ...]:
    axes = []
    for i0 in range(s):
        m = max(0, -(-(size - i0) // s))
        ks = [kk for kk in range(k) if (i0 + lo - r * kk) % s == 0]
        off = np.array([(i0 + lo - r * kk) // s for kk in ks], dtype=np.int64)
        order = np.argsort(off)
        off, kidx = off[order], np.array(ks, dtype=np.int64)[order]
        if len(off):
            qlo = min(int(off[0]), 0)
            qhi = max(int(off[-1]) + m - 1, src_size - 1)
        else:
            qlo, qhi = 0, src_size - 1
        q = np.arange(qlo, qhi + 1, dtype=np.int64)
        amap = np.where((q >= 0) & (q < src_size), q, -1)
        axes.append(Axis(m=m, d0=i0, ds=s, ss=1, off=off, kidx=kidx, qlo=qlo, map=amap))
    return tuple(axes)


@functools.lru_cache(maxsize=1)
def unit_axis() -> Axis:
    """A spatial axis of size 1 (how 1-D and 2-D problems become 3-D ones)."""
    zero = np.zeros(1, dtype=np.int64)
    return Axis(m=1, d0=0, ds=1, ss=1, off=zero, kidx=zero, qlo=0, map=zero.copy())
