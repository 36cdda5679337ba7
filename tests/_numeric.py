"""Helpers shared by the test modules."""

import numpy as np


def numerical_gradient(f, a, eps=1e-6):
    """Central differences of the scalar function ``f`` at every element of ``a``
    (``a`` is perturbed in place and restored)."""
    grad = np.zeros_like(a)
    for idx in np.ndindex(a.shape):
        old = a[idx]
        a[idx] = old + eps
        up = f()
        a[idx] = old - eps
        down = f()
        a[idx] = old
        grad[idx] = (up - down) / (2 * eps)
    return grad


def rel_err(a, b, terms=None):
    """``max|a - b|`` relative to ``max|b|``, or to the largest sum of absolute terms
    ``terms`` (the same operation on the inputs' absolute values). A rounded sum is off by
    a few ulps of its terms, not of its value: with cancellation (a bias gradient that
    sums 60 terms of size 1 to 6e-4) an error relative to ``b`` would fail a correct
    kernel. Empty arrays agree."""
    if not np.size(b):
        return 0.0
    scale = max(np.abs(b if terms is None else terms).max(), 1e-30)
    return np.abs(np.asarray(a, np.float64) - b).max() / scale
