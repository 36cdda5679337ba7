"""Losses and metrics.

A loss is a callable ``loss(output, target) -> (value, grad_output)``: the scalar value
(a Python float) and its gradient with respect to ``output``, ready for
``model.backward``. Losses add: ``CrossEntropy() + Dice()`` is their sum.

On a CUDA device (the output a device array) the value is still a Python float and the
gradient a device array; targets may be device arrays or NumPy arrays (copied over).
Metrics take device outputs too (only the arg-max labels come back to the host).
"""

from __future__ import annotations

import numpy as np

from .. import activation as act
from .._params import fail
from . import _backend as B


def _labels(op: str, logits: np.ndarray, target) -> np.ndarray:
    target = np.asarray(target)
    want = (logits.shape[0], *logits.shape[2:])
    if target.shape != want:
        raise fail(op, f"`target` must hold one class index per sample/position, shape "
                       f"{want} for logits {logits.shape}; got {target.shape}")
    if not np.issubdtype(target.dtype, np.integer):
        raise TypeError(f"{op}: `target` must hold integer class indices, got dtype "
                        f"{target.dtype}")
    k = logits.shape[1]
    if target.size and (target.min() < 0 or target.max() >= k):
        raise fail(op, f"`target` classes must be in [0, {k}), got values in "
                       f"[{target.min()}, {target.max()}]")
    return target.astype(np.intp, copy=False)


def _one_hot(target: np.ndarray, k: int, dtype) -> np.ndarray:
    """``(N, *S)`` labels -> ``(N, K, *S)`` one-hot."""
    out = np.zeros((target.shape[0], k, *target.shape[1:]), dtype)
    np.put_along_axis(out, target[:, None], 1, axis=1)
    return out


class Loss:
    """Base class: subclasses define ``__call__(output, target) -> (value, grad)``."""

    def __add__(self, other: Loss) -> Loss:
        return SumLoss(self, other)


def _device_labels(op: str, logits, target):
    """Labels for a loss on device logits: checked on the host when they are NumPy (then
    copied over as int64), on the device otherwise (the host checks run again on a copy
    only to report an error)."""
    if not B.is_device(target):
        return B.to_device(_labels(op, logits, target).astype(np.int64, copy=False))
    return target


def _report_labels(op: str, logits, target):
    """Raise the host's error for malformed labels (the device found them wrong)."""
    _labels(op, np.broadcast_to(np.float32(0), tuple(logits.shape)), B.to_host(target))
    raise fail(op, "`target` holds class indices outside the range of classes")


class SumLoss(Loss):
    """The sum of several losses (and of their gradients)."""

    def __init__(self, *losses: Loss):
        self.losses = losses

    def __call__(self, output, target):
        total, grad = 0.0, None
        for loss in self.losses:
            v, g = loss(output, target)
            total += v
            grad = g if grad is None else B.add(grad, g)
        return total, grad

    def __repr__(self):
        return " + ".join(map(repr, self.losses))


class CrossEntropy(Loss):
    """Softmax cross-entropy on logits ``(N, K)`` or per pixel/voxel ``(N, K, *S)``.

    ``target`` holds class indices ``(N,)`` or ``(N, *S)``. With ``class_weights`` ``w``
    the loss is ``sum_i w[t_i] * -log p_i[t_i] / sum_i w[t_i]`` (PyTorch's weighted mean),
    so rare classes (small organs) count more.
    """

    def __init__(self, class_weights=None):
        self.class_weights = None if class_weights is None else np.asarray(class_weights,
                                                                           np.float64)

    def __call__(self, logits, target):
        op = "CrossEntropy"
        if B.is_device(logits):
            return self._device(op, logits, target)
        logits = np.asarray(logits)
        target = _labels(op, logits, target)
        logp = act.log_softmax(logits, axis=1)
        picked = np.take_along_axis(logp, target[:, None], axis=1)[:, 0]
        if self.class_weights is None:
            w = np.ones(target.shape, logits.dtype)
        else:
            if self.class_weights.shape != (logits.shape[1],):
                raise fail(op, f"`class_weights` must have one weight per class "
                               f"({logits.shape[1]}), got shape {self.class_weights.shape}")
            w = self.class_weights[target].astype(logits.dtype)
        total = w.sum()
        value = float(-(w * picked).sum() / total)
        grad = np.exp(logp)
        np.put_along_axis(grad, target[:, None],
                          np.take_along_axis(grad, target[:, None], axis=1) - 1, axis=1)
        grad *= (w / total)[:, None]
        return value, grad.astype(logits.dtype, copy=False)

    def _device(self, op, logits, target):
        cw = self.class_weights
        if cw is not None and cw.shape != (logits.shape[1],):
            raise fail(op, f"`class_weights` must have one weight per class "
                           f"({logits.shape[1]}), got shape {cw.shape}")
        res = B.cuda().cross_entropy(logits, _device_labels(op, logits, target), cw)
        if res is None:
            _report_labels(op, logits, target)
        return res

    def __repr__(self):
        return "CrossEntropy()"


class MSE(Loss):
    """Mean squared error ``mean((output - target)^2)`` over all elements."""

    def __call__(self, output, target):
        if B.is_device(output):
            if tuple(target.shape) != tuple(output.shape):
                raise fail("MSE", f"`target` shape {tuple(target.shape)} must equal the "
                                  f"output's {tuple(output.shape)}")
            return B.cuda().mse(output, B.to_device(target, output.dtype))
        output = np.asarray(output)
        target = np.asarray(target, output.dtype)
        if target.shape != output.shape:
            raise fail("MSE", f"`target` shape {target.shape} must equal the output's "
                              f"{output.shape}")
        diff = output - target
        return float((diff * diff).mean()), (2 / diff.size) * diff

    def __repr__(self):
        return "MSE()"


class Dice(Loss):
    """Soft Dice loss for segmentation on logits ``(N, K, *S)`` and labels ``(N, *S)``.

    ``1 - mean_k (2 sum p_k t_k + eps) / (sum p_k + sum t_k + eps)`` with ``p =
    softmax(logits)`` and ``t`` one-hot, sums over the batch and positions; classes from
    ``first_class`` on (1 leaves the background out).
    """

    def __init__(self, first_class: int = 1, eps: float = 1.0):
        self.first_class, self.eps = int(first_class), float(eps)

    def __call__(self, logits, target):
        op = "Dice"
        device = B.is_device(logits)
        logits = B.as_array(logits)
        if logits.ndim < 3:
            raise fail(op, f"logits must be (N, K, *S) with spatial axes, got "
                           f"{tuple(logits.shape)}")
        if device:
            target = _device_labels(op, logits, target)
        else:
            target = _labels(op, logits, target)
        k = logits.shape[1]
        if not 0 <= self.first_class < k:
            raise fail(op, f"`first_class` (={self.first_class}) must be below the number "
                           f"of classes ({k})")
        p = act.softmax(logits, axis=1)
        if device:
            res = B.cuda().dice_sums(p, target)
            if res is None:
                _report_labels(op, logits, target)
            (inter, psum, tsum), t2 = res
            denom = psum + tsum + self.eps
        else:
            t = _one_hot(target, k, logits.dtype)
            axes = (0, *range(2, logits.ndim))
            inter = (p * t).sum(axis=axes)
            denom = p.sum(axis=axes) + t.sum(axis=axes) + self.eps
        num = 2 * inter + self.eps
        sel = slice(self.first_class, None)
        m = k - self.first_class
        value = 1 - float((num[sel] / denom[sel]).mean())
        # d/dp of -mean(num/denom): -(2 t denom - num) / denom^2 / m, per class.
        dnum = np.zeros(k, logits.dtype)
        dden = np.zeros(k, logits.dtype)
        dnum[sel] = -1 / (m * denom[sel])
        dden[sel] = num[sel] / (m * denom[sel] ** 2)
        if device:
            gp = B.cuda().dice_grad(t2, dnum, dden, logits.shape, logits.dtype)
        else:
            shape = (1, k) + (1,) * (logits.ndim - 2)
            gp = (2 * t * dnum.reshape(shape) + dden.reshape(shape)).astype(logits.dtype)
        grad = act.softmax_backward(gp, None, axis=1, output=p)
        return value, grad

    def __repr__(self):
        return f"Dice(first_class={self.first_class})"


# ------------------------------------------------------------------------ metrics ---

def _argmax(output) -> np.ndarray:
    """Arg-max over the classes (axis 1), as host labels (computed where ``output`` is)."""
    if B.is_device(output):
        return B.cuda().argmax_channels(output)
    return np.argmax(output, axis=1)


def accuracy(output: np.ndarray, target: np.ndarray) -> float:
    """Fraction of samples (or positions) whose arg-max class equals the target (host or
    device arrays)."""
    return float((_argmax(output) == B.to_host(B.as_array(target))).mean())


def dice_scores(pred: np.ndarray, target: np.ndarray, num_classes: int) -> np.ndarray:
    """Hard Dice per class ``2 |P & T| / (|P| + |T|)`` between label maps (NaN for a class
    absent from both)."""
    pred, target = B.to_host(B.as_array(pred)), B.to_host(B.as_array(target))
    out = np.full(num_classes, np.nan)
    for c in range(num_classes):
        p, t = pred == c, target == c
        s = p.sum() + t.sum()
        if s:
            out[c] = 2 * np.logical_and(p, t).sum() / s
    return out


def mean_dice(output: np.ndarray, target: np.ndarray) -> float:
    """Mean hard Dice over the foreground classes (1..K-1) of logits ``(N, K, *S)``."""
    k = output.shape[1]
    d = dice_scores(_argmax(output), target, k)[1:]
    return float(np.nanmean(d)) if np.isfinite(d).any() else float("nan")


METRICS = {"accuracy": accuracy, "dice": mean_dice}
