"""Argument normalisation and validation shared by every operation.

The public functions only normalise their arguments (here) and then call a kernel;
shape rules live in :mod:`gridconv._shapes`. Every error names the operation, the
argument, what is required and what was given.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import numpy as np

PADDING_MODES = ("zeros", "reflect", "replicate", "circular")
PADDING_STRINGS = ("valid", "same", "full")


def fail(op: str, message: str, exc: type[Exception] = ValueError) -> Exception:
    """Build the error every check raises: ``"<op>: <message>"``."""
    return exc(f"{op}: {message}")


def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def per_axis(value, ndim: int, name: str, op: str, *, minimum: int = 1) -> tuple[int, ...]:
    """Normalise an int or a per-axis sequence to a tuple of ``ndim`` ints >= ``minimum``."""
    if _is_int(value):
        values = (int(value),) * ndim
    elif isinstance(value, Sequence) and not isinstance(value, str):
        if len(value) != ndim or not all(_is_int(v) for v in value):
            raise fail(
                op,
                f"`{name}` must be an int or a sequence of {ndim} ints (one per spatial "
                f"axis), got {value!r}",
                TypeError if not all(_is_int(v) for v in value) else ValueError,
            )
        values = tuple(int(v) for v in value)
    else:
        raise fail(op, f"`{name}` must be an int or a sequence of {ndim} ints, got {value!r}",
                   TypeError)
    if any(v < minimum for v in values):
        raise fail(op, f"`{name}` must be >= {minimum} on every axis, got {value!r}")
    return values


def padding_mode(mode, op: str) -> str:
    if mode not in PADDING_MODES:
        raise fail(op, f"`padding_mode` must be one of {PADDING_MODES}, got {mode!r}")
    return mode


def explicit_padding(padding, ndim: int, op: str) -> tuple[tuple[int, int], ...]:
    """Normalise a numeric padding (int, per-axis ints, per-axis (lo, hi) pairs)."""
    if _is_int(padding):
        pairs = ((int(padding), int(padding)),) * ndim
    elif isinstance(padding, Sequence) and not isinstance(padding, str) and len(padding) == ndim:
        pairs = []
        for p in padding:
            if _is_int(p):
                pairs.append((int(p), int(p)))
            elif (isinstance(p, Sequence) and not isinstance(p, str) and len(p) == 2
                  and all(_is_int(v) for v in p)):
                pairs.append((int(p[0]), int(p[1])))
            else:
                raise fail(op, f"`padding` entries must be ints or (lo, hi) pairs of ints, "
                               f"got {padding!r}", TypeError)
        pairs = tuple(pairs)
    else:
        raise fail(op, f"`padding` must be an int, a sequence of {ndim} ints or (lo, hi) "
                       f"pairs, or one of {PADDING_STRINGS}, got {padding!r}", TypeError)
    if any(v < 0 for pair in pairs for v in pair):
        raise fail(op, f"`padding` must be non-negative, got {padding!r}")
    return pairs


def conv_padding(padding, in_sizes, kernel_sizes, stride, dilation, op: str):
    """Resolve any padding form of a forward convolution to per-axis ``(lo, hi)`` pairs.

    ``"same"`` gives an output of ``ceil(I / s)`` and splits the total as TensorFlow
    does (the extra element on the high side); ``"full"`` pads ``r*(K-1)`` both sides.
    """
    ndim = len(in_sizes)
    if isinstance(padding, str):
        if padding == "valid":
            return ((0, 0),) * ndim
        if padding == "full":
            return tuple((r * (k - 1),) * 2 for k, r in zip(kernel_sizes, dilation))
        if padding == "same":
            pairs = []
            for i, k, s, r in zip(in_sizes, kernel_sizes, stride, dilation):
                out = -(-i // s)
                total = max((out - 1) * s + r * (k - 1) + 1 - i, 0)
                pairs.append((total // 2, total - total // 2))
            return tuple(pairs)
        raise fail(op, f"`padding` string must be one of {PADDING_STRINGS}, got {padding!r}")
    return explicit_padding(padding, ndim, op)


def check_circular(op: str, mode: str, sizes, pads) -> None:
    """Circular padding wraps around once: it may not exceed the input size."""
    if mode != "circular":
        return
    for axis, (i, (lo, hi)) in enumerate(zip(sizes, pads)):
        if max(lo, hi) > i:
            raise fail(op, f"circular `padding` ({lo}, {hi}) must not exceed the input "
                           f"size ({i}) on spatial axis {axis}")


_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def as_array(value, name: str, op: str) -> np.ndarray:
    if isinstance(value, np.ndarray):
        return value
    if hasattr(value, "__cuda_array_interface__"):
        raise fail(op, f"`{name}` is a CUDA array; the GPU path is not available for this "
                       f"operation yet, pass a NumPy array", TypeError)
    try:
        return np.asarray(value)
    except Exception as err:  # pragma: no cover - numpy's own message is kept
        raise fail(op, f"`{name}` must be array-like, got {type(value).__name__}",
                   TypeError) from err


def result_dtype(op: str, **arrays) -> np.dtype:
    """The computation dtype: NumPy's promotion of the inputs, restricted to float32/64.

    Integers and booleans promote to float64 (as ``x * 1.0`` would), float16 to
    float32; complex and object arrays are refused.
    """
    present = {k: v for k, v in arrays.items() if v is not None}
    for name, a in present.items():
        if a.dtype.kind not in "biuf":
            raise fail(op, f"`{name}` must hold real numbers (float32 or float64; ints are "
                           f"promoted), got dtype {a.dtype}", TypeError)
    dt = np.result_type(*present.values())
    if dt.kind in "biu":
        return np.dtype(np.float64)
    if dt == np.float16:
        return np.dtype(np.float32)
    if dt not in _FLOATS:  # longdouble
        raise fail(op, f"dtype {dt} is not supported; use float32 or float64", TypeError)
    return dt


def contiguous(a: np.ndarray, dtype) -> np.ndarray:
    """C-contiguous copy in ``dtype`` only when needed (kernels compile one layout).

    Read-only arrays (``np.broadcast_to``, memory maps, frozen inputs) are copied too:
    Numba types them apart, and a copy costs far less than compiling every kernel again.
    """
    out = np.ascontiguousarray(a, dtype=dtype)
    return out if out.flags.writeable else out.copy()


def check_ndim(a: np.ndarray, ndim: int, name: str, op: str, what: str) -> None:
    if a.ndim != ndim:
        raise fail(op, f"`{name}` must be {ndim}-D {what}, got shape {a.shape}")
