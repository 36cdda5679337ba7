"""Reference activation functions and their gradients, from the textbook formulas.

Every forward function is one NumPy expression; every backward function multiplies
``grad_output`` by the analytic derivative (``f'`` at the kinks as PyTorch:
``relu'(0) = 0``, ``abs'(0) = 0``, the negative slope at ``x == 0`` for leaky_relu and
prelu). A NaN input gives NaN in the output and in the gradient. The argument checks and
their messages are the engine's (:mod:`gridconv.activation`), prefixed ``reference.``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._params import result_dtype
from ..activation import _check_axis, _check_prelu, _check_same_shape, _check_slope

__all__ = [
    "relu", "relu_backward", "leaky_relu", "leaky_relu_backward", "prelu", "prelu_backward",
    "abs_rectify", "abs_rectify_backward", "sigmoid", "sigmoid_backward", "tanh",
    "tanh_backward", "softmax", "softmax_backward", "log_softmax", "log_softmax_backward",
]


def _array(op: str, x: Any) -> np.ndarray:
    """``x`` as an array in its computation dtype (ints -> float64, float16 -> float32)."""
    x = np.asarray(x)
    return x.astype(result_dtype(op, x=x), copy=False)


def _pair(op: str, grad_output: Any, x: Any) -> tuple[np.ndarray, np.ndarray]:
    g, x = np.asarray(grad_output), np.asarray(x)
    _check_same_shape(op, g, "grad_output", x.shape, "x")
    dt = result_dtype(op, grad_output=g, x=x)
    return g.astype(dt, copy=False), x.astype(dt, copy=False)


def _nan_where_nan(derivative: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The derivative with ``f'(NaN) = NaN`` (comparisons alone would give 0 or 1)."""
    return np.where(np.isnan(x), np.nan, derivative)


def _channel_shape(x: np.ndarray, weight: np.ndarray) -> tuple[int, ...]:
    """``weight`` broadcast along axis 1 of ``x``: ``(1, C, 1, ..., 1)``."""
    return (1, weight.shape[0]) + (1,) * (x.ndim - 2)


# --------------------------------------------------------------------------------------
# Rectifiers
# --------------------------------------------------------------------------------------


def relu(x: Any) -> np.ndarray:
    """``max(x, 0)``."""
    x = _array("reference.relu", x)
    return np.maximum(x, 0)


def relu_backward(grad_output: Any, x: Any) -> np.ndarray:
    """``grad_output * [x > 0]``."""
    g, x = _pair("reference.relu_backward", grad_output, x)
    return g * _nan_where_nan((x > 0).astype(x.dtype), x)


def leaky_relu(x: Any, negative_slope: float = 0.01) -> np.ndarray:
    """``x`` where ``x > 0``, else ``negative_slope * x``."""
    op = "reference.leaky_relu"
    slope = _check_slope(op, negative_slope)
    x = _array(op, x)
    return np.where(x > 0, x, x * x.dtype.type(slope))


def leaky_relu_backward(grad_output: Any, x: Any, negative_slope: float = 0.01) -> np.ndarray:
    """``grad_output * (1 if x > 0 else negative_slope)``."""
    op = "reference.leaky_relu_backward"
    slope = _check_slope(op, negative_slope)
    g, x = _pair(op, grad_output, x)
    return g * _nan_where_nan(np.where(x > 0, 1, slope).astype(x.dtype), x)


def prelu(x: Any, weight: Any) -> np.ndarray:
    """``x`` where ``x > 0``, else ``weight[c] * x`` with ``c`` the index on axis 1."""
    op = "reference.prelu"
    x, weight = np.asarray(x), np.asarray(weight)
    _check_prelu(op, x, weight)
    dt = result_dtype(op, x=x, weight=weight)
    x, weight = x.astype(dt, copy=False), weight.astype(dt, copy=False)
    return np.where(x > 0, x, weight.reshape(_channel_shape(x, weight)) * x)


def prelu_backward(grad_output: Any, x: Any, weight: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(grad_output * (1 if x > 0 else weight[c]), sum of grad_output * min(x, 0)``
    over every axis but 1, or over all axes for a ``(1,)`` weight)."""
    op = "reference.prelu_backward"
    x, weight = np.asarray(x), np.asarray(weight)
    _check_prelu(op, x, weight)
    g = np.asarray(grad_output)
    _check_same_shape(op, g, "grad_output", x.shape, "x")
    dt = result_dtype(op, grad_output=g, x=x, weight=weight)
    g, x, weight = (a.astype(dt, copy=False) for a in (g, x, weight))
    w = weight.reshape(_channel_shape(x, weight))
    grad_x = g * _nan_where_nan(np.where(x > 0, 1, w), x)
    contribution = g * np.minimum(x, 0)
    if weight.shape[0] == 1:
        grad_weight = contribution.sum().reshape(1)
    else:
        grad_weight = contribution.sum(axis=tuple(a for a in range(x.ndim) if a != 1))
    return grad_x, grad_weight.astype(dt)


def abs_rectify(x: Any) -> np.ndarray:
    """``|x|``."""
    return np.abs(_array("reference.abs_rectify", x))


def abs_rectify_backward(grad_output: Any, x: Any) -> np.ndarray:
    """``grad_output * sign(x)`` (``sign(0) = 0``)."""
    g, x = _pair("reference.abs_rectify_backward", grad_output, x)
    return g * np.sign(x)


# --------------------------------------------------------------------------------------
# Squashing functions
# --------------------------------------------------------------------------------------


def sigmoid(x: Any) -> np.ndarray:
    """``1 / (1 + exp(-x))``, written ``exp(-log(1 + exp(-x)))`` with
    :func:`numpy.logaddexp` so that no intermediate overflows."""
    x = _array("reference.sigmoid", x)
    return np.exp(-np.logaddexp(0, -x))


def sigmoid_backward(grad_output: Any, x: Any) -> np.ndarray:
    """``grad_output * s * (1 - s)`` with ``s = sigmoid(x)``, and ``1 - s`` written as
    ``sigmoid(-x)`` (no cancellation for large ``x``)."""
    g, x = _pair("reference.sigmoid_backward", grad_output, x)
    return g * sigmoid(x) * sigmoid(-x)


def tanh(x: Any) -> np.ndarray:
    """``tanh(x)``."""
    return np.tanh(_array("reference.tanh", x))


def tanh_backward(grad_output: Any, x: Any) -> np.ndarray:
    """``grad_output * (1 - tanh(x)^2)``, written ``1 / cosh(x)^2`` (no cancellation for
    large ``|x|``; ``cosh`` overflows to ``inf`` beyond ``|x| ~ 710``, giving 0)."""
    g, x = _pair("reference.tanh_backward", grad_output, x)
    with np.errstate(over="ignore"):
        return g / np.cosh(x) ** 2


# --------------------------------------------------------------------------------------
# Softmax
# --------------------------------------------------------------------------------------


def softmax(x: Any, axis: int = 1) -> np.ndarray:
    """``exp(x - m) / sum(exp(x - m), axis)`` with ``m = max(x, axis)``."""
    op = "reference.softmax"
    x = _array(op, x)
    axis = _check_axis(op, axis, x.ndim)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def log_softmax(x: Any, axis: int = 1) -> np.ndarray:
    """``x - m - log(sum(exp(x - m), axis))`` with ``m = max(x, axis)`` (log-sum-exp)."""
    op = "reference.log_softmax"
    x = _array(op, x)
    axis = _check_axis(op, axis, x.ndim)
    shifted = x - x.max(axis=axis, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))


def softmax_backward(grad_output: Any, x: Any, axis: int = 1) -> np.ndarray:
    """``y * (grad_output - sum(grad_output * y, axis))`` with ``y = softmax(x, axis)``:
    the Jacobian ``dy_i/dx_j = y_i (delta_ij - y_j)`` applied to ``grad_output``."""
    op = "reference.softmax_backward"
    g, x = _pair(op, grad_output, x)
    axis = _check_axis(op, axis, x.ndim)
    y = softmax(x, axis)
    return y * (g - (g * y).sum(axis=axis, keepdims=True))


def log_softmax_backward(grad_output: Any, x: Any, axis: int = 1) -> np.ndarray:
    """``grad_output - softmax(x) * sum(grad_output, axis)``: the Jacobian
    ``d log y_i / dx_j = delta_ij - y_j`` applied to ``grad_output``."""
    op = "reference.log_softmax_backward"
    g, x = _pair(op, grad_output, x)
    axis = _check_axis(op, axis, x.ndim)
    return g - softmax(x, axis) * g.sum(axis=axis, keepdims=True)
