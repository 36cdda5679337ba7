"""Which of the fast algorithms the CPU convolutions may use: Winograd's F(4, 3) along x
and the FFT. Both are on by default and give the same sums up to rounding (see
``docs/conv.md``, "Algorithms and accuracy"); switched off, every convolution runs the
direct sums."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

_ENABLED = {"winograd": True, "fft": True}


def enabled(name: str) -> bool:
    return _ENABLED[name]


def set_algorithms(*, winograd: bool | None = None, fft: bool | None = None) -> dict:
    """Allow (True) or forbid (False) the fast algorithms of the CPU convolutions, for the
    whole process; ``None`` leaves one as it is.

    Parameters
    ----------
    winograd : bool, optional
        Winograd's F(4, 3) along x for float32 convolutions with three x taps (most 3x3
        and 3x3x3 layers and their input gradients): half the multiply-adds, float32
        results within about 1e-6 of the largest output instead of 1e-7.
    fft : bool, optional
        The FFT for single large kernels, where it is predicted to be faster.

    Returns
    -------
    dict
        The settings before the call, ``{"winograd": bool, "fft": bool}``: pass them back
        as keywords to restore them.

    Examples
    --------
    >>> import gridconv
    >>> before = gridconv.set_algorithms(winograd=False)
    >>> before
    {'winograd': True, 'fft': True}
    >>> gridconv.set_algorithms(**before)["winograd"]
    False
    """
    before = dict(_ENABLED)
    for name, value in (("winograd", winograd), ("fft", fft)):
        if value is None:
            continue
        if not isinstance(value, bool):
            raise TypeError(f"set_algorithms: `{name}` must be True, False or None, "
                            f"got {value!r}")
        _ENABLED[name] = value
    return before


@contextlib.contextmanager
def algorithms(*, winograd: bool | None = None, fft: bool | None = None) -> Iterator[None]:
    """:func:`set_algorithms` for the duration of a ``with`` block, then the settings
    before it again.

    Examples
    --------
    >>> import numpy as np, gridconv
    >>> x = np.ones((1, 16, 8, 8), np.float32)
    >>> w = np.ones((8, 16, 3, 3), np.float32)
    >>> with gridconv.algorithms(winograd=False):   # the direct sums only
    ...     y = gridconv.conv(x, w, padding=1)
    >>> float(y[0, 0, 4, 4])
    144.0
    """
    before = set_algorithms(winograd=winograd, fft=fft)
    try:
        yield
    finally:
        _ENABLED.update(before)
