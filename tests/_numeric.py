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
