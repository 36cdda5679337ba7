"""Pooling: max, average and L^p pooling over windows, global pooling, and their gradients.

The functions here only validate and normalise arguments, compute the window geometry
once per axis (small tables, cached), lift 1-D and 2-D problems to 3-D ones with unit
axes, and call the kernels of :mod:`gridconv._cpu.pool`. Shapes and padding follow
PyTorch's ``max_pool{1,2,3}d`` / ``avg_pool{1,2,3}d`` exactly, ``ceil_mode`` included.
"""

from __future__ import annotations

import functools
import math
import numbers
from dataclasses import dataclass

import numba
import numpy as np
import numpy.typing  # noqa: F401  (np.typing for the annotations)

from ._cpu import pool as kernels
from ._dispatch import dispatch
from ._params import as_array, contiguous, fail, per_axis, result_dtype

ArrayLike = np.typing.ArrayLike

__all__ = [
    "max_pool", "avg_pool", "lp_pool", "global_max_pool", "global_avg_pool",
    "max_pool_backward", "avg_pool_backward", "lp_pool_backward",
    "global_max_pool_backward", "global_avg_pool_backward",
]

# Below this many element visits a call runs on one thread: waking a second thread costs
# more than the work.
_SERIAL_WORK = 1 << 16
# Elements per task of the global reductions.
_CHUNK = 1 << 14

_DOC_PARAMS = """\
    window : int or tuple of int
        Window size per spatial axis (>= 1).
    stride : int, tuple of int, or None
        Step between windows per spatial axis (>= 1); ``None`` means ``window``.
    padding : int or tuple of int
        Implicit padding on both sides of each spatial axis (>= 0, at most
        ``window // 2``, as in PyTorch).
    ceil_mode : bool
        Round the number of windows up instead of down: a last, partial window is kept
        when it starts inside the input or the left padding."""


def _doc(func):
    func.__doc__ = func.__doc__.replace("{params}", _DOC_PARAMS)
    return func


# ------------------------------------------------------------------- argument checks ---

def _check_x(op: str, x: np.ndarray, name: str = "x") -> int:
    if x.ndim not in (3, 4, 5):
        raise fail(op, f"`{name}` must be 3-D, 4-D or 5-D (N, C, *spatial) for 1, 2 or 3 "
                       f"spatial axes, got shape {x.shape}")
    if min(x.shape[2:]) < 1:
        raise fail(op, f"`{name}` must have non-empty spatial axes, got shape {x.shape}")
    return x.ndim - 2


def _check_bool(op: str, value, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise fail(op, f"`{name}` must be a bool, got {value!r}", TypeError)
    return bool(value)


def _check_p(op: str, p) -> float:
    if isinstance(p, (bool, np.bool_)) or not isinstance(p, numbers.Real):
        raise fail(op, f"`p` must be a real number >= 1, got {p!r}", TypeError)
    p = float(p)
    if math.isinf(p) and p > 0:
        raise fail(op, "`p` = inf is not supported; use max_pool(np.abs(x), ...) for the "
                       "L^inf norm")
    if not p >= 1:  # also refuses NaN
        raise fail(op, f"`p` must be a finite number >= 1, got {p!r}")
    return p


def _output_size(op: str, axis: int, size: int, k: int, s: int, d: int, p: int,
                 ceil_mode: bool) -> int:
    """PyTorch's rule: ``floor((I + 2p - d(k-1) - 1 [+ s - 1 with ceil_mode]) / s) + 1``,
    and with ``ceil_mode`` the last window must start inside the input or left padding."""
    extent = d * (k - 1) + 1
    out = (size + 2 * p - extent + (s - 1 if ceil_mode else 0)) // s + 1
    if ceil_mode and (out - 1) * s >= size + p:
        out -= 1
    if out < 1:
        raise fail(op, f"the window (extent {extent} = dilation {d} * (size {k} - 1) + 1) is "
                       f"larger than the padded input on spatial axis {axis} (size {size} + "
                       f"2 * padding {p} = {size + 2 * p})")
    return out


@dataclass(frozen=True)
class _PoolSpec:
    """A validated windowed pooling: everything but the arrays."""

    nd: int
    window: tuple
    stride: tuple
    padding: tuple
    dilation: tuple
    ceil_mode: bool
    in_shape: tuple  # (N, C, *S)
    out_shape: tuple  # (N, C, *O)

    def lifted(self, shape: tuple) -> tuple:
        """(N, C, *S) -> (N, C, 1.., *S) with 3 spatial axes."""
        return tuple(shape[:2]) + (1,) * (3 - self.nd) + tuple(shape[2:])

    def axes(self) -> tuple:
        """Per-axis (I, O, k, s, d, p) of the lifted 3-D problem (unit axes first)."""
        unit = ((1, 1, 1, 1, 1, 0),) * (3 - self.nd)
        return unit + tuple(zip(self.in_shape[2:], self.out_shape[2:], self.window,
                                self.stride, self.dilation, self.padding))

    @property
    def visits(self) -> int:
        """Element visits of one pass (the work measure that picks one or all threads)."""
        return math.prod(self.out_shape) * math.prod(self.window)


def _pool_spec(op: str, shape: tuple, window, stride, padding, dilation,
               ceil_mode) -> _PoolSpec:
    nd = len(shape) - 2
    win = per_axis(window, nd, "window", op)
    st = win if stride is None else per_axis(stride, nd, "stride", op)
    dl = per_axis(dilation, nd, "dilation", op)
    pad = per_axis(padding, nd, "padding", op, minimum=0)
    if any(p > k // 2 for p, k in zip(pad, win)):
        raise fail(op, f"`padding` must be at most half the window (window // 2) on every "
                       f"axis, as in PyTorch, got padding {pad} for window {win}")
    ceil = _check_bool(op, ceil_mode, "ceil_mode")
    out = tuple(_output_size(op, a, i, k, s, d, p, ceil)
                for a, (i, k, s, d, p) in enumerate(zip(shape[2:], win, st, dl, pad)))
    return _PoolSpec(nd, win, st, pad, dl, ceil, tuple(shape), tuple(shape[:2]) + out)


def _check_grad(op: str, grad_output: np.ndarray, out_shape: tuple) -> None:
    if grad_output.shape != tuple(out_shape):
        raise fail(op, f"`grad_output` must have the output's shape {tuple(out_shape)}, got "
                       f"{grad_output.shape}")


# ------------------------------------------------------------------ window geometry ---

def _readonly(*arrays):
    for a in arrays:
        a.flags.writeable = False
    return arrays


@functools.lru_cache(maxsize=256)
def _axis_table(size: int, out: int, k: int, s: int, d: int, p: int):
    """Per-window ``(start, lo, hi)``: window ``o`` reads input ``start + t*d`` for taps
    ``lo <= t < hi`` (the taps inside the input), and the two divisors of average
    pooling: taps within the padded bounds (``count_include_pad``) and inside the input."""
    start = np.arange(out, dtype=np.int64) * s - p
    lo = np.maximum(0, (-start + d - 1) // d)
    hi = np.clip((size - 1 - start) // d + 1, 0, k)
    incl = np.minimum(k, size + p - start)  # PyTorch: min(start + k, I + p) - start
    excl = np.maximum(hi - lo, 0)
    return _readonly(np.stack([start, lo, hi]), incl, excl)


@functools.lru_cache(maxsize=256)
def _axis_cover(size: int, out: int, k: int, s: int, d: int, p: int):
    """CSR lists of the windows covering each input index: ``cov[ptr[i]:ptr[i+1]]``."""
    o = np.repeat(np.arange(out, dtype=np.int64), k)
    pos = o * s - p + np.tile(np.arange(k, dtype=np.int64), out) * d
    keep = (pos >= 0) & (pos < size)
    pos, o = pos[keep], o[keep]
    order = np.argsort(pos, kind="stable")
    ptr = np.zeros(size + 1, dtype=np.int64)
    np.cumsum(np.bincount(pos, minlength=size), out=ptr[1:])
    return _readonly(ptr, np.ascontiguousarray(o[order]))


def _tables(spec: _PoolSpec):
    """The kernels' geometry: ``tab`` (3, 3, Omax) per-window tables of every axis,
    ``dil`` (3,), and ``xg = (padding, stride, window, dilation, L, direct)`` of the x
    axis, ``L`` being the length of one stride phase of a padded row (room for every
    window) and ``direct`` whether every window is 2 adjacent taps at stride 2 inside the
    row (the kernels' fast path)."""
    axes = spec.axes()
    width = max(a[1] for a in axes)
    tab = np.zeros((3, 3, width), dtype=np.int64)
    for a, geom in enumerate(axes):
        t = _axis_table(*geom)[0]
        tab[a, :, :t.shape[1]] = t
    dil = np.array([a[4] for a in axes], dtype=np.int64)
    size, out, k, s, d, p = axes[2]
    padded = max(p + size, (out - 1) * s + (k - 1) * d + 1)
    direct = k == 2 and s == 2 and d == 1 and p == 0 and 2 * out <= size
    xg = np.array([p, s, k, d, -(-padded // s), direct], dtype=np.int64)
    return tab, dil, xg


def _inverse_divisors(spec: _PoolSpec, include_pad: bool | None, dtype) -> np.ndarray:
    """(3, Omax) reciprocals of the per-axis divisors (ones when ``include_pad`` is None)."""
    axes = spec.axes()
    inv = np.ones((3, max(a[1] for a in axes)), dtype=np.float64)
    if include_pad is not None:
        for a, geom in enumerate(axes):
            _, incl, excl = _axis_table(*geom)
            div = incl if include_pad else excl
            inv[a, :div.shape[0]] = 1.0 / div
    return inv.astype(dtype)


def _covers(spec: _PoolSpec):
    z, y = spec.axes()[:2]
    return _axis_cover(*z) + _axis_cover(*y)


def _empty_windows(spec: _PoolSpec) -> int:
    """Windows with no tap inside the input (possible only with dilation > input size):
    their max is -inf and their index -1."""
    nonempty = spec.out_shape[0] * spec.out_shape[1]
    for geom in spec.axes():
        t = _axis_table(*geom)[0]
        nonempty *= int(np.count_nonzero(t[1] < t[2]))
    return math.prod(spec.out_shape) - nonempty


def _launch(kernel, work: int, *args, threads: bool = True):
    """Call a parallel kernel (with the thread count as its last argument when
    ``threads``); small problems run on one thread."""
    if work >= _SERIAL_WORK:
        return kernel(*args, *((numba.get_num_threads(),) if threads else ()))
    before = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        return kernel(*args, *((1,) if threads else ()))
    finally:
        numba.set_num_threads(before)


def _operand(a: np.ndarray, dtype) -> np.ndarray:
    """A C-contiguous array in ``dtype`` for a kernel. Read-only arrays are copied (never
    written either way): numba types them apart, and each kernel is compiled once per
    dtype only for writeable arrays."""
    a = contiguous(a, dtype)
    return a if a.flags.writeable else a.copy()


def _dummy(dtype) -> np.ndarray:
    return np.zeros((1, 1, 1, 1, 1), dtype=dtype)


def _forward(spec: _PoolSpec, x5: np.ndarray, mode: int, *, want_idx: bool = False,
             inv: np.ndarray | None = None, p: float = 1.0, g5: np.ndarray | None = None):
    """Run ``kernels.pool_forward``; returns (out, idx or None) with the caller's shapes."""
    dtype, t = x5.dtype, x5.dtype.type
    out = np.empty(spec.lifted(spec.out_shape), dtype=dtype)
    idx = np.empty(out.shape, dtype=np.int64) if want_idx else _dummy(np.int64)
    inv = _inverse_divisors(spec, None, dtype) if inv is None else inv
    _launch(kernels.pool_forward, spec.visits, x5, out, idx,
            _dummy(dtype) if g5 is None else g5, mode, want_idx, g5 is not None,
            *_tables(spec), inv, t(p), t(1.0 / p), t(1.0 - p))
    return out.reshape(spec.out_shape), idx.reshape(spec.out_shape) if want_idx else None


def _gather(spec: _PoolSpec, g5: np.ndarray, mode: int, *, inv: np.ndarray | None = None,
            x5: np.ndarray | None = None, p: float = 1.0) -> np.ndarray:
    """Run ``kernels.pool_gather`` (average / L^p backward); grad_x in the caller's shape."""
    dtype = g5.dtype
    gi = np.empty(spec.lifted(spec.in_shape), dtype=dtype)
    inv = _inverse_divisors(spec, None, dtype) if inv is None else inv
    tab, _, xg = _tables(spec)
    _launch(kernels.pool_gather, spec.visits, g5, gi, _dummy(dtype) if x5 is None else x5,
            mode, x5 is not None, tab, xg, inv, *_covers(spec), dtype.type(p - 1.0))
    return gi.reshape(spec.in_shape)


def _scatter(g: np.ndarray, idx: np.ndarray, x_shape: tuple, dtype) -> tuple:
    """Run ``kernels.max_scatter``: each window's gradient to its winner, per (n, c)
    plane. Returns (grad_x in ``x_shape``, number of -1 indices, number out of range)."""
    nplane = x_shape[0] * x_shape[1]
    g2 = _operand(g, dtype).reshape(nplane, -1) if nplane else np.empty((0, 1), dtype)
    idx2 = _operand(idx, np.int64).reshape(g2.shape)
    gi = np.empty((nplane, math.prod(x_shape[2:])), dtype=dtype)
    counts = _launch(kernels.max_scatter, gi.size, g2, idx2, gi, threads=False)
    empty, bad = counts.sum(axis=0) if nplane else (0, 0)
    return gi.reshape(x_shape), int(empty), int(bad)


# ----------------------------------------------------------------------- max pooling ---

def _max_forward(x5: np.ndarray, spec: _PoolSpec, want_idx: bool):
    return _forward(spec, x5, kernels.MAX, want_idx=want_idx)


@_doc
@dispatch
def max_pool(x: ArrayLike, window, stride=None, padding=0, dilation=1, ceil_mode=False,
             return_indices=False):
    """Max pooling over windows of 1, 2 or 3 spatial axes.

    ``y[n, c, i] = max over taps k of x[n, c, stride*i - padding + dilation*k]``, the taps
    outside the input being skipped (padding holds -inf and never wins).

    Parameters
    ----------
    x : array, shape (N, C, *S)
        Input; the spatial rank (1, 2 or 3) is ``x.ndim - 2``.
{params}
    dilation : int or tuple of int
        Spacing between window taps (>= 1).
    return_indices : bool
        Also return the winners' positions.

    Returns
    -------
    y : ndarray, shape (N, C, *O), the input's (promoted) dtype
        ``O = floor((I + 2*padding - dilation*(window-1) - 1) / stride) + 1`` per axis
        (``ceil`` with ``ceil_mode``, see above).
    indices : ndarray of int64, shape (N, C, *O), only with ``return_indices``
        Flat index of each winner in its ``(n, c)`` plane of ``x`` (``numpy.ravel``
        order of ``S``), as PyTorch returns. Ties go to the first tap in the window's
        row-major scan order; a NaN wins (the last NaN if several, as in PyTorch).

    Examples
    --------
    >>> import numpy as np, gridconv
    >>> gridconv.max_pool(np.array([[[1., 3., 2., 5., 4.]]]), 2)
    array([[[3., 5.]]])
    """
    op = "max_pool"
    x = as_array(x, "x", op)
    _check_x(op, x)
    spec = _pool_spec(op, x.shape, window, stride, padding, dilation, ceil_mode)
    want = _check_bool(op, return_indices, "return_indices")
    dtype = result_dtype(op, x=x)
    y, idx = _max_forward(_operand(x, dtype).reshape(spec.lifted(x.shape)), spec, want)
    return (y, idx) if want else y


@_doc
@dispatch
def max_pool_backward(grad_output: ArrayLike, x: ArrayLike, window, stride=None, padding=0,
                      dilation=1, ceil_mode=False, indices: ArrayLike | None = None):
    """Gradient of :func:`max_pool` with respect to ``x``.

    Each window's gradient goes to its winner; an input element that wins several
    windows gets the sum. With ``indices`` (from ``max_pool(..., return_indices=True)``
    with the same parameters) the winners are not searched again.

    Parameters
    ----------
    grad_output : array, shape (N, C, *O)
        Gradient of the loss with respect to the pooled output.
    x : array, shape (N, C, *S)
        The forward input.
{params}
    dilation : int or tuple of int
        Spacing between window taps (>= 1).
    indices : int array, shape (N, C, *O), optional
        The winners returned by the forward pass. Each must point into its own window;
        otherwise a ``ValueError`` is raised.

    Returns
    -------
    grad_x : ndarray, shape (N, C, *S)

    Examples
    --------
    >>> import numpy as np, gridconv
    >>> x = np.array([[[1., 3., 2., 5., 4.]]])
    >>> gridconv.max_pool_backward(np.array([[[10., 20.]]]), x, 2)
    array([[[ 0., 10.,  0., 20.,  0.]]])
    """
    op = "max_pool_backward"
    x, g = as_array(x, "x", op), as_array(grad_output, "grad_output", op)
    _check_x(op, x)
    spec = _pool_spec(op, x.shape, window, stride, padding, dilation, ceil_mode)
    _check_grad(op, g, spec.out_shape)
    dtype = result_dtype(op, grad_output=g, x=x)
    if indices is None:
        _, idx = _max_forward(_operand(x, dtype).reshape(spec.lifted(x.shape)), spec, True)
    else:
        idx = as_array(indices, "indices", op)
        if idx.dtype.kind not in "iu":
            raise fail(op, f"`indices` must be an integer array (from max_pool(..., "
                           f"return_indices=True)), got dtype {idx.dtype}", TypeError)
        if idx.shape != spec.out_shape:
            raise fail(op, f"`indices` must have the output's shape {spec.out_shape}, got "
                           f"{idx.shape}")
    gi, empty, bad = _scatter(g, idx, x.shape, dtype)
    if indices is not None and (bad or empty != _empty_windows(spec)):
        wrong = bad if bad else abs(empty - _empty_windows(spec))
        raise fail(op, f"`indices` must come from max_pool(..., return_indices=True) with "
                       f"the same parameters: {wrong} of {g.size} entries are outside the "
                       f"plane or mark a non-empty window as empty (-1)")
    return gi


# --------------------------------------------------------------------- average pooling ---

@_doc
@dispatch
def avg_pool(x: ArrayLike, window, stride=None, padding=0, ceil_mode=False,
             count_include_pad=True):
    """Average pooling over windows of 1, 2 or 3 spatial axes.

    ``y[n, c, i] = sum over taps k of xpad[n, c, stride*i + k] / divisor(i)``, with zero
    padding. The divisor is the number of taps within the padded bounds
    (``count_include_pad=True``, the part of a ``ceil_mode`` window beyond them is not
    counted) or inside the input (``False``), exactly as in PyTorch.

    Parameters
    ----------
    x : array, shape (N, C, *S)
        Input; the spatial rank (1, 2 or 3) is ``x.ndim - 2``.
{params}
    count_include_pad : bool
        Count the padding in the divisor.

    Returns
    -------
    y : ndarray, shape (N, C, *O), the input's (promoted) dtype

    Examples
    --------
    >>> import numpy as np, gridconv
    >>> gridconv.avg_pool(np.array([[[1., 3., 2., 5., 4.]]]), 2)
    array([[[2. , 3.5]]])
    """
    op = "avg_pool"
    x = as_array(x, "x", op)
    _check_x(op, x)
    spec = _pool_spec(op, x.shape, window, stride, padding, 1, ceil_mode)
    include = _check_bool(op, count_include_pad, "count_include_pad")
    dtype = result_dtype(op, x=x)
    x5 = _operand(x, dtype).reshape(spec.lifted(x.shape))
    return _forward(spec, x5, kernels.SUM_X, inv=_inverse_divisors(spec, include, dtype))[0]


@_doc
@dispatch
def avg_pool_backward(grad_output: ArrayLike, x: ArrayLike, window, stride=None, padding=0,
                      ceil_mode=False, count_include_pad=True):
    """Gradient of :func:`avg_pool` with respect to ``x``.

    ``grad_x[n, c, j] = sum over the windows i covering j of grad_output[n, c, i] /
    divisor(i)``. ``x`` is used for its shape and dtype only.

    Parameters
    ----------
    grad_output : array, shape (N, C, *O)
    x : array, shape (N, C, *S)
{params}
    count_include_pad : bool

    Returns
    -------
    grad_x : ndarray, shape (N, C, *S)

    Examples
    --------
    >>> import numpy as np, gridconv
    >>> gridconv.avg_pool_backward(np.array([[[2., 4.]]]), np.zeros((1, 1, 5)), 2)
    array([[[1., 1., 2., 2., 0.]]])
    """
    op = "avg_pool_backward"
    x, g = as_array(x, "x", op), as_array(grad_output, "grad_output", op)
    _check_x(op, x)
    spec = _pool_spec(op, x.shape, window, stride, padding, 1, ceil_mode)
    include = _check_bool(op, count_include_pad, "count_include_pad")
    _check_grad(op, g, spec.out_shape)
    dtype = result_dtype(op, grad_output=g, x=x)
    g5 = _operand(g, dtype).reshape(spec.lifted(spec.out_shape))
    return _gather(spec, g5, kernels.SUM_X, inv=_inverse_divisors(spec, include, dtype))


# ---------------------------------------------------------------------- L^p pooling ---

def _lp_mode(p: float) -> int:
    if p == 2.0:
        return kernels.SUM_SQUARE
    return kernels.SUM_ABS if p == 1.0 else kernels.SUM_POW


@_doc
@dispatch
def lp_pool(x: ArrayLike, p, window, stride=None, padding=0, ceil_mode=False):
    """L^p pooling: the p-norm of each window, ``(sum over taps of |x|^p) ^ (1/p)``.

    ``p = 2`` is L2-norm pooling, ``p = 1`` sums absolute values. Padding holds zeros
    (it adds nothing). Unlike PyTorch's ``lp_pool``, which raises ``x`` (not ``|x|``) to
    the power ``p``, has no padding, and rescales ``ceil_mode``'s partial windows, this
    is the norm of the values inside each window; the two agree for even ``p`` or
    nonnegative ``x`` without padding or partial windows.

    Parameters
    ----------
    x : array, shape (N, C, *S)
    p : float
        The norm's order, finite and >= 1 (``p = inf`` is refused: it is
        ``max_pool(np.abs(x), ...)``).
{params}

    Returns
    -------
    y : ndarray, shape (N, C, *O), the input's (promoted) dtype

    Examples
    --------
    >>> import numpy as np, gridconv
    >>> gridconv.lp_pool(np.array([[[3., -4., 1., 0.]]]), 2, 2)
    array([[[5., 1.]]])
    """
    op = "lp_pool"
    x = as_array(x, "x", op)
    p = _check_p(op, p)
    _check_x(op, x)
    spec = _pool_spec(op, x.shape, window, stride, padding, 1, ceil_mode)
    dtype = result_dtype(op, x=x)
    x5 = _operand(x, dtype).reshape(spec.lifted(x.shape))
    return _forward(spec, x5, _lp_mode(p), p=p)[0]


@_doc
@dispatch
def lp_pool_backward(grad_output: ArrayLike, x: ArrayLike, p, window, stride=None, padding=0,
                     ceil_mode=False):
    """Gradient of :func:`lp_pool` with respect to ``x``.

    ``dy/dx = sign(x) |x|^(p-1) / y^(p-1)`` for each window ``y`` containing ``x``,
    summed over the windows. Where a window's norm is 0 (all its values are 0) its
    gradient is defined as 0, so the result stays finite. For ``p = 1`` the gradient at
    ``x = 0`` is 0.

    Parameters
    ----------
    grad_output : array, shape (N, C, *O)
    x : array, shape (N, C, *S)
    p : float
{params}

    Returns
    -------
    grad_x : ndarray, shape (N, C, *S)

    Examples
    --------
    >>> import numpy as np, gridconv
    >>> gridconv.lp_pool_backward(np.ones((1, 1, 2)), np.array([[[3., -4., 0., 0.]]]), 2, 2)
    array([[[ 0.6, -0.8,  0. ,  0. ]]])
    """
    op = "lp_pool_backward"
    x, g = as_array(x, "x", op), as_array(grad_output, "grad_output", op)
    p = _check_p(op, p)
    _check_x(op, x)
    spec = _pool_spec(op, x.shape, window, stride, padding, 1, ceil_mode)
    _check_grad(op, g, spec.out_shape)
    dtype = result_dtype(op, grad_output=g, x=x)
    x5 = _operand(x, dtype).reshape(spec.lifted(x.shape))
    g5 = _operand(g, dtype).reshape(spec.lifted(spec.out_shape))
    mode = _lp_mode(p)
    h, _ = _forward(spec, x5, mode, p=p, g5=g5)  # the window factor g * y^(1-p)
    return _gather(spec, h.reshape(g5.shape), mode, x5=x5, p=p)


# -------------------------------------------------------------------- global pooling ---

def _planes(x: np.ndarray, dtype) -> np.ndarray:
    """(N, C, *S) -> C-contiguous (N*C, prod S) in the computation dtype."""
    return _operand(x, dtype).reshape(x.shape[0] * x.shape[1], math.prod(x.shape[2:]))


def _chunks(size: int) -> int:
    return -(-size // _CHUNK)


def _global_argmax(planes: np.ndarray):
    """Max (NaN wins) and its flat index per plane: chunks in parallel, then the chunks
    combined in order with the scan's own rule, which gives the winner of one scan."""
    nplane, size = planes.shape
    vals = np.empty((nplane, _chunks(size)), dtype=planes.dtype)
    idx = np.empty(vals.shape, dtype=np.int64)
    _launch(kernels.global_reduce, planes.size, planes, vals, idx, np.empty((0, 0)), True,
            _CHUNK, threads=False)
    out, out_idx = vals[:, 0].copy(), idx[:, 0].copy()
    for ch in range(1, vals.shape[1]):
        v = vals[:, ch]
        take = (v > out) | np.isnan(v)
        out[take], out_idx[take] = v[take], idx[take, ch]
    return out, out_idx


def _kept(x_shape: tuple) -> tuple:
    return tuple(x_shape[:2]) + (1,) * (len(x_shape) - 2)


@dispatch
def global_max_pool(x: ArrayLike):
    """Global max pooling: the maximum of each ``(n, c)`` plane.

    The same as ``max_pool(x, x.shape[2:])``: ties go to the first element in ``numpy.ravel``
    order, a NaN wins (the last NaN if several, as in PyTorch).

    Parameters
    ----------
    x : array, shape (N, C, *S)

    Returns
    -------
    y : ndarray, shape (N, C, 1, ..., 1)
        The spatial axes are kept with size 1, as PyTorch's ``adaptive_max_pool`` to 1.

    Examples
    --------
    >>> import numpy as np, gridconv
    >>> gridconv.global_max_pool(np.array([[[[1., 7.], [3., 2.]]]]))
    array([[[[7.]]]])
    """
    op = "global_max_pool"
    x = as_array(x, "x", op)
    _check_x(op, x)
    dtype = result_dtype(op, x=x)
    out, _ = _global_argmax(_planes(x, dtype))
    return out.reshape(_kept(x.shape))


@dispatch
def global_avg_pool(x: ArrayLike):
    """Global average pooling: the mean of each ``(n, c)`` plane.

    The sums are accumulated in float64 (then rounded to the input's dtype), so large
    float32 planes keep full precision.

    Parameters
    ----------
    x : array, shape (N, C, *S)

    Returns
    -------
    y : ndarray, shape (N, C, 1, ..., 1)

    Examples
    --------
    >>> import numpy as np, gridconv
    >>> gridconv.global_avg_pool(np.arange(8.).reshape(1, 2, 4))
    array([[[1.5],
            [5.5]]])
    """
    op = "global_avg_pool"
    x = as_array(x, "x", op)
    _check_x(op, x)
    dtype = result_dtype(op, x=x)
    planes = _planes(x, dtype)
    nplane, size = planes.shape
    sums = np.empty((nplane, _chunks(size)), dtype=np.float64)
    _launch(kernels.global_reduce, planes.size, planes, np.empty((0, 0), dtype=dtype),
            np.empty((0, 0), dtype=np.int64), sums, False, _CHUNK, threads=False)
    return (sums.sum(axis=1) / size).astype(dtype).reshape(_kept(x.shape))


def _global_backward_args(op: str, grad_output, x):
    x, g = as_array(x, "x", op), as_array(grad_output, "grad_output", op)
    _check_x(op, x)
    _check_grad(op, g, _kept(x.shape))
    return x, g, result_dtype(op, grad_output=g, x=x)


@dispatch
def global_max_pool_backward(grad_output: ArrayLike, x: ArrayLike):
    """Gradient of :func:`global_max_pool`: each plane's gradient goes to its winner.

    Parameters
    ----------
    grad_output : array, shape (N, C, 1, ..., 1)
    x : array, shape (N, C, *S)

    Returns
    -------
    grad_x : ndarray, shape (N, C, *S)

    Examples
    --------
    >>> import numpy as np, gridconv
    >>> gridconv.global_max_pool_backward(np.array([[[5.]]]), np.array([[[1., 7., 3.]]]))
    array([[[0., 5., 0.]]])
    """
    op = "global_max_pool_backward"
    x, g, dtype = _global_backward_args(op, grad_output, x)
    _, idx = _global_argmax(_planes(x, dtype))
    return _scatter(g, idx, x.shape, dtype)[0]


@dispatch
def global_avg_pool_backward(grad_output: ArrayLike, x: ArrayLike):
    """Gradient of :func:`global_avg_pool`: ``grad_output / (number of elements per
    plane)`` on every element. ``x`` is used for its shape and dtype only.

    Parameters
    ----------
    grad_output : array, shape (N, C, 1, ..., 1)
    x : array, shape (N, C, *S)

    Returns
    -------
    grad_x : ndarray, shape (N, C, *S)

    Examples
    --------
    >>> import numpy as np, gridconv
    >>> gridconv.global_avg_pool_backward(np.array([[[6.]]]), np.zeros((1, 1, 3)))
    array([[[2., 2., 2.]]])
    """
    op = "global_avg_pool_backward"
    x, g, dtype = _global_backward_args(op, grad_output, x)
    nplane = x.shape[0] * x.shape[1]
    size = math.prod(x.shape[2:])
    gi = np.empty((nplane, size), dtype=dtype)
    gi[...] = (np.asarray(g, dtype=np.float64).reshape(nplane, 1) / size).astype(dtype)
    return gi.reshape(x.shape)
