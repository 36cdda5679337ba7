"""Activation functions and their gradients: relu, leaky_relu, prelu, abs_rectify,
sigmoid, tanh, softmax and log_softmax.

The functions here only validate and normalise their arguments (see
:mod:`gridconv._params`) and call the kernels of :mod:`gridconv._cpu.activation`.
Arrays are channels-first, ``(N, C, *spatial)`` with any spatial rank (``(N, C)`` for
dense layers): the elementwise operations accept any shape, ``prelu`` reads its channels
on axis 1 and ``softmax`` / ``log_softmax`` normalise over ``axis`` (1, the channels, by
default, which is per-pixel / per-voxel classification for images and volumes).

Every ``f`` has ``f_backward(grad_output, *inputs, **same_params)`` returning
``grad_output * f'(x)``: the gradient array itself for one array input, a tuple
``(grad_x, grad_weight)`` for ``prelu``. At the kinks the derivative is PyTorch's:
``relu'(0) = 0``, ``abs'(0) = 0``, and leaky_relu / prelu use the negative slope for
``x <= 0``. The gradient is a product, so a NaN in ``x`` or in ``grad_output`` gives a
NaN at that position (PyTorch selects instead: it gives 0 where ``x < 0`` even when
``grad_output`` is NaN).
"""

from __future__ import annotations

import numbers

import numpy as np
import numpy.typing  # noqa: F401  (np.typing for the annotations)

from ._cpu import activation as k
from ._dispatch import dispatch
from ._params import as_array, contiguous, fail, result_dtype

ArrayLike = np.typing.ArrayLike

__all__ = [
    "relu", "relu_backward", "leaky_relu", "leaky_relu_backward", "prelu", "prelu_backward",
    "abs_rectify", "abs_rectify_backward", "sigmoid", "sigmoid_backward", "tanh",
    "tanh_backward", "softmax", "softmax_backward", "log_softmax", "log_softmax_backward",
]


# ------------------------------------------------------------------ argument checks ---
# (shared with gridconv.reference, whose messages begin with "reference.<name>")


def _check_same_shape(op: str, a: np.ndarray, name: str, expected: tuple, of: str) -> None:
    if a.shape != expected:
        raise fail(op, f"`{name}` must have the shape of `{of}`, {expected}, got {a.shape}")


def _check_slope(op: str, negative_slope) -> float:
    if isinstance(negative_slope, bool) or not isinstance(negative_slope, numbers.Real):
        raise fail(op, f"`negative_slope` must be a real number, got {negative_slope!r}",
                   TypeError)
    if not np.isfinite(negative_slope):
        raise fail(op, f"`negative_slope` must be finite, got {negative_slope!r}")
    return float(negative_slope)


def _check_axis(op: str, axis, ndim: int) -> int:
    if isinstance(axis, bool) or not isinstance(axis, numbers.Integral):
        raise fail(op, f"`axis` must be an int, got {axis!r}", TypeError)
    if ndim == 0:
        raise fail(op, "`x` must be at least 1-D, got a 0-D array")
    if not -ndim <= axis < ndim:
        raise fail(op, f"`axis` must be in [{-ndim}, {ndim - 1}] for a {ndim}-D `x`, "
                       f"got {axis}")
    return int(axis) % ndim


def _check_prelu(op: str, x: np.ndarray, weight: np.ndarray) -> None:
    if x.ndim < 2:
        raise fail(op, f"`x` must be at least 2-D (N, C, *spatial), channels on axis 1, "
                       f"got shape {x.shape}")
    c = x.shape[1]
    if weight.shape not in ((c,), (1,)):
        raise fail(op, f"`weight` must have shape ({c},) (one slope per channel of `x`) or "
                       f"(1,) (one shared slope), got {weight.shape}")


def _grad_arrays(op: str, grad_output, x, output=None, *, need_x: bool = True):
    """grad_output, x (or None) and output (or None) as arrays of one shape; the dtype."""
    g = as_array(grad_output, "grad_output", op)
    if x is None and (need_x or output is None):
        raise fail(op, "`x` is required" + ("" if need_x else " when `output` is not given"),
                   TypeError)
    x = None if x is None else as_array(x, "x", op)
    output = None if output is None else as_array(output, "output", op)
    ref_name, ref = ("x", x) if x is not None else ("output", output)
    _check_same_shape(op, g, "grad_output", ref.shape, ref_name)
    if x is not None and output is not None:
        _check_same_shape(op, output, "output", x.shape, "x")
    return g, x, output, result_dtype(op, grad_output=g, x=x, output=output)


# ------------------------------------------------------------------- elementwise ---


def _kernel_input(a, dt, shape=(-1,)) -> np.ndarray:
    """``a`` as a kernel reads it: C-contiguous in ``dt``, reshaped, as a read-only view
    (so writeable and read-only inputs share one compiled specialisation)."""
    view = contiguous(a, dt).reshape(shape)
    view.flags.writeable = False
    return view


def _slopes(dt, value: float = 0.0) -> np.ndarray:
    return _kernel_input(np.full(1, value, dt), dt)


def _forward(op: str, x, code: int, slope: float = 0.0) -> np.ndarray:
    x = as_array(x, "x", op)
    dt = result_dtype(op, x=x)
    out = np.empty(x.shape, dt)  # (np.ascontiguousarray makes 0-d arrays 1-D)
    if x.size:
        flat = _kernel_input(x, dt)
        k.run(k.elementwise, x.size, flat, flat, _slopes(dt, slope), out.reshape(-1), code,
              x.size)
    return out


def _backward(op: str, grad_output, x, code: int, slope: float = 0.0, output=None,
              out_code: int = -1) -> np.ndarray:
    g, x, output, dt = _grad_arrays(op, grad_output, x, output, need_x=out_code < 0)
    src, code = (x, code) if output is None else (output, out_code)
    out = np.empty(g.shape, dt)
    if g.size:
        k.run(k.elementwise, g.size, _kernel_input(g, dt), _kernel_input(src, dt),
              _slopes(dt, slope), out.reshape(-1), k.GRAD + code, g.size)
    return out


@dispatch
def relu(x: ArrayLike) -> np.ndarray:
    """Rectified linear unit, ``max(x, 0)``, elementwise.

    Parameters
    ----------
    x : array_like, any shape (``(N, C, *spatial)`` in a network)

    Returns
    -------
    numpy.ndarray, the shape of ``x``
        float32 for float32 (and float16) input, float64 otherwise (ints are promoted).
        A NaN stays NaN.
    """
    return _forward("relu", x, k.RELU)


@dispatch
def relu_backward(grad_output: ArrayLike, x: ArrayLike) -> np.ndarray:
    """``grad_output * relu'(x)`` with ``relu'(x) = 1`` for ``x > 0``, 0 for ``x <= 0``
    (0 at the kink, as PyTorch). Both arrays have the same shape."""
    return _backward("relu_backward", grad_output, x, k.RELU)


@dispatch
def leaky_relu(x: ArrayLike, negative_slope: float = 0.01) -> np.ndarray:
    """Leaky ReLU, ``x`` for ``x > 0`` and ``negative_slope * x`` otherwise, elementwise.

    Parameters
    ----------
    x : array_like, any shape
    negative_slope : float
        Slope of the negative part (any finite real; 0 gives ``relu``).

    Returns
    -------
    numpy.ndarray, the shape of ``x``, float32 or float64 as ``x``
    """
    op = "leaky_relu"
    return _forward(op, x, k.LEAKY, _check_slope(op, negative_slope))


@dispatch
def leaky_relu_backward(grad_output: ArrayLike, x: ArrayLike,
                        negative_slope: float = 0.01) -> np.ndarray:
    """``grad_output * leaky_relu'(x)``: 1 for ``x > 0``, ``negative_slope`` for
    ``x <= 0`` (the slope at the kink, as PyTorch)."""
    op = "leaky_relu_backward"
    return _backward(op, grad_output, x, k.LEAKY, _check_slope(op, negative_slope))


@dispatch
def abs_rectify(x: ArrayLike) -> np.ndarray:
    """Absolute-value rectification ``|x|``, elementwise (shape and dtype of ``x``)."""
    return _forward("abs_rectify", x, k.ABS)


@dispatch
def abs_rectify_backward(grad_output: ArrayLike, x: ArrayLike) -> np.ndarray:
    """``grad_output * sign(x)``, with ``sign(0) = 0`` (as PyTorch)."""
    return _backward("abs_rectify_backward", grad_output, x, k.ABS)


@dispatch
def sigmoid(x: ArrayLike) -> np.ndarray:
    """Logistic sigmoid ``1 / (1 + exp(-x))``, elementwise.

    Computed as ``1 / (1 + e)`` for ``x >= 0`` and ``e / (1 + e)`` for ``x < 0`` with
    ``e = exp(-|x|) <= 1``: no overflow for any ``x``; ``sigmoid(1000) == 1`` and
    ``sigmoid(-1000) == 0`` exactly, and the tiny values of the left tail keep their
    relative precision down to the smallest normal number (float32: ``x`` about -87,
    float64: about -708), below which they are flushed to 0.

    Parameters
    ----------
    x : array_like, any shape

    Returns
    -------
    numpy.ndarray, the shape of ``x``, float32 or float64 as ``x``
    """
    return _forward("sigmoid", x, k.SIGMOID)


@dispatch
def sigmoid_backward(grad_output: ArrayLike, x: ArrayLike | None, *,
                     output: ArrayLike | None = None) -> np.ndarray:
    """``grad_output * s * (1 - s)`` with ``s = sigmoid(x)``.

    From ``x`` the derivative is computed as ``e / (1 + e)^2``, ``e = exp(-|x|)``, which
    keeps its relative precision in both tails. When the forward ``output`` (``s``) is
    given, ``s * (1 - s)`` is used instead and ``x`` is not read (it may be None); this
    skips the exponential but rounds tails below about ``eps`` to 0.

    Parameters
    ----------
    grad_output : array_like, the shape of ``x``
        ``dL/dy``.
    x : array_like or None
        The forward input; None when ``output`` is given.
    output : array_like, optional
        The forward result ``sigmoid(x)``.

    Returns
    -------
    numpy.ndarray, the shape of ``grad_output``: ``dL/dx``
    """
    return _backward("sigmoid_backward", grad_output, x, k.SIGMOID, output=output,
                     out_code=k.SIGMOID_OUT)


@dispatch
def tanh(x: ArrayLike) -> np.ndarray:
    """Hyperbolic tangent, elementwise (shape and dtype of ``x``); saturates to exactly
    ``+-1`` for large ``|x|``."""
    return _forward("tanh", x, k.TANH)


@dispatch
def tanh_backward(grad_output: ArrayLike, x: ArrayLike | None, *,
                  output: ArrayLike | None = None) -> np.ndarray:
    """``grad_output * (1 - tanh(x)^2)``.

    From ``x`` the derivative is computed as ``4e / (1 + e)^2``, ``e = exp(-2|x|)``
    (relative precision kept in the tails). When the forward ``output`` (``t``) is
    given, ``1 - t * t`` is used instead and ``x`` is not read (it may be None).

    Parameters
    ----------
    grad_output : array_like, the shape of ``x``
        ``dL/dy``.
    x : array_like or None
        The forward input; None when ``output`` is given.
    output : array_like, optional
        The forward result ``tanh(x)``.

    Returns
    -------
    numpy.ndarray, the shape of ``grad_output``: ``dL/dx``
    """
    return _backward("tanh_backward", grad_output, x, k.TANH, output=output,
                     out_code=k.TANH_OUT)


# ------------------------------------------------------------------------- prelu ---


def _prelu_arrays(op: str, x, weight):
    x = as_array(x, "x", op)
    weight = as_array(weight, "weight", op)
    _check_prelu(op, x, weight)
    return x, weight


def _prelu_rows(x: np.ndarray, weight: np.ndarray) -> int:
    """Elements per run of one slope in the flat array: a channel's spatial block, or
    the whole array for a shared slope."""
    if weight.shape[0] == 1:
        return max(x.size, 1)
    return int(np.prod(x.shape[2:], dtype=np.int64))


@dispatch
def prelu(x: ArrayLike, weight: ArrayLike) -> np.ndarray:
    """Parametric ReLU: ``x`` for ``x > 0``, ``weight[c] * x`` otherwise, ``c`` the channel.

    Parameters
    ----------
    x : array_like, shape ``(N, C, *spatial)`` (at least 2-D; ``(N, C)`` for dense layers)
    weight : array_like, shape ``(C,)`` (one learnable slope per channel) or ``(1,)``
        (one slope shared by all channels), as PyTorch's ``prelu``.

    Returns
    -------
    numpy.ndarray, the shape of ``x``, in the promoted dtype of ``x`` and ``weight``
    """
    op = "prelu"
    x, weight = _prelu_arrays(op, x, weight)
    dt = result_dtype(op, x=x, weight=weight)
    out = np.empty(x.shape, dt)
    if x.size:
        flat = _kernel_input(x, dt)
        k.run(k.elementwise, x.size, flat, flat, _kernel_input(weight, dt), out.reshape(-1),
              k.LEAKY, _prelu_rows(x, weight))
    return out


@dispatch
def prelu_backward(grad_output: ArrayLike, x: ArrayLike,
                   weight: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Gradients of :func:`prelu`: ``(grad_x, grad_weight)``.

    ``grad_x = grad_output * (1 if x > 0 else weight[c])`` (the slope at ``x == 0``, as
    PyTorch) and ``grad_weight[c] = sum of grad_output * min(x, 0)`` over every axis but
    the channels (over everything for a shared ``(1,)`` weight). ``grad_weight`` has the
    weight's shape; both are in the promoted dtype of the three arrays.

    Parameters
    ----------
    grad_output : array_like, the shape of ``x``
        ``dL/dy``.
    x : array_like, shape ``(N, C, *spatial)``
    weight : array_like, shape ``(C,)`` or ``(1,)``

    Returns
    -------
    grad_x : numpy.ndarray, the shape of ``x``
    grad_weight : numpy.ndarray, the shape of ``weight``
        Summed over the batch and every position (per-thread partial sums in float64).
    """
    op = "prelu_backward"
    x, weight = _prelu_arrays(op, x, weight)
    g, x, _, _ = _grad_arrays(op, grad_output, x)
    dt = result_dtype(op, grad_output=g, x=x, weight=weight)
    gx = np.empty(x.shape, dt)
    if not x.size:
        return gx, np.zeros(weight.shape, dt)
    partial = k.run(k.elementwise, x.size, _kernel_input(g, dt), _kernel_input(x, dt),
                    _kernel_input(weight, dt), gx.reshape(-1), k.GRAD + k.LEAKY,
                    _prelu_rows(x, weight))
    return gx, partial.sum(axis=0).astype(dt)


# ---------------------------------------------------------------- softmax family ---


def _view3(shape: tuple, axis: int) -> tuple[int, int, int]:
    """(A, C, B): the axes before ``axis``, ``axis``, the axes after."""
    return (int(np.prod(shape[:axis], dtype=np.int64)), shape[axis],
            int(np.prod(shape[axis + 1:], dtype=np.int64)))


def _run_softmax(shape: tuple, axis: int, dt, log: bool, mode: int, g, src) -> np.ndarray:
    shape3 = _view3(shape, axis)
    src3 = _kernel_input(src, dt, shape3)
    g3 = src3 if g is None else _kernel_input(g, dt, shape3)
    out = np.empty(shape3, dt)
    if out.size:
        k.run(k.softmax, out.size, g3, src3, out, log, mode,
              k.softmax_width(shape3, dt.itemsize))
    return out.reshape(shape)


def _softmax(op: str, x, axis, log: bool) -> np.ndarray:
    x = as_array(x, "x", op)
    ax = _check_axis(op, axis, x.ndim)
    return _run_softmax(x.shape, ax, result_dtype(op, x=x), log, k.FORWARD, None, x)


def _softmax_backward(op: str, grad_output, x, axis, output, log: bool) -> np.ndarray:
    g, x, output, dt = _grad_arrays(op, grad_output, x, output, need_x=False)
    ax = _check_axis(op, axis, g.ndim)
    if output is None:
        return _run_softmax(g.shape, ax, dt, log, k.BACKWARD_X, g, x)
    return _run_softmax(g.shape, ax, dt, log, k.BACKWARD_Y, g, output)


@dispatch
def softmax(x: ArrayLike, axis: int = 1) -> np.ndarray:
    """``exp(x) / sum(exp(x))`` over ``axis`` (the channels by default).

    ``y[..., c, ...] = exp(x[..., c, ...] - m) / sum_j exp(x[..., j, ...] - m)`` with
    ``m`` the maximum over the axis: no overflow for any finite input, and the largest
    entry's exponential is exactly 1. On ``(N, C, H, W)`` or ``(N, C, D, H, W)`` with
    ``axis=1`` this is the per-pixel / per-voxel class distribution.

    Parameters
    ----------
    x : array_like, at least 1-D
    axis : int
        The axis normalised over (negative counts from the end).

    Returns
    -------
    numpy.ndarray, the shape of ``x``, float32 or float64 as ``x``
    """
    return _softmax("softmax", x, axis, False)


@dispatch
def softmax_backward(grad_output: ArrayLike, x: ArrayLike | None, axis: int = 1, *,
                     output: ArrayLike | None = None) -> np.ndarray:
    """``y * (grad_output - sum(grad_output * y, axis))`` with ``y = softmax(x, axis)``.

    When the forward ``output`` ``y`` is given it is used and ``x`` is not read (it may
    be None); otherwise ``y`` is recomputed from ``x``.

    Parameters
    ----------
    grad_output : array_like, the shape of ``x``
        ``dL/dy``.
    x : array_like or None
        The forward input; None when ``output`` is given.
    axis : int
        The axis of the forward call.
    output : array_like, optional
        The forward result ``softmax(x, axis)``.

    Returns
    -------
    numpy.ndarray, the shape of ``grad_output``: ``dL/dx``
    """
    return _softmax_backward("softmax_backward", grad_output, x, axis, output, False)


@dispatch
def log_softmax(x: ArrayLike, axis: int = 1) -> np.ndarray:
    """``log(softmax(x))`` over ``axis``, by log-sum-exp: ``x - m - log(sum exp(x - m))``
    with ``m`` the maximum over the axis; finite for every finite input, even where the
    softmax itself underflows to 0.

    Parameters
    ----------
    x : array_like, at least 1-D
    axis : int
        The axis normalised over (negative counts from the end).

    Returns
    -------
    numpy.ndarray, the shape of ``x``, float32 or float64 as ``x``
    """
    return _softmax("log_softmax", x, axis, True)


@dispatch
def log_softmax_backward(grad_output: ArrayLike, x: ArrayLike | None, axis: int = 1, *,
                         output: ArrayLike | None = None) -> np.ndarray:
    """``grad_output - exp(y) * sum(grad_output, axis)`` with ``y = log_softmax(x, axis)``.

    When the forward ``output`` ``y`` is given it is used and ``x`` is not read (it may
    be None); otherwise ``y`` is recomputed from ``x``.

    Parameters
    ----------
    grad_output : array_like, the shape of ``x``
        ``dL/dy``.
    x : array_like or None
        The forward input; None when ``output`` is given.
    axis : int
        The axis of the forward call.
    output : array_like, optional
        The forward result ``log_softmax(x, axis)``.

    Returns
    -------
    numpy.ndarray, the shape of ``grad_output``: ``dL/dx``
    """
    return _softmax_backward("log_softmax_backward", grad_output, x, axis, output, True)
