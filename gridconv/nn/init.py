"""Initialisation, reproducible from a seed.

Every layer with weights takes ``rng``: a :class:`numpy.random.Generator`, an int seed,
or None for the package-wide generator that :func:`seed` resets. The model builders make
one generator from their ``seed`` argument and hand it to each layer in order, so the same
seed gives the same model.
"""

from __future__ import annotations

import math

import numpy as np

_GLOBAL = np.random.default_rng(0)


def seed(value: int) -> None:
    """Reset the package-wide generator used by layers created with ``rng=None``."""
    global _GLOBAL
    _GLOBAL = np.random.default_rng(value)


def as_rng(rng) -> np.random.Generator:
    """A Generator from a Generator, an int seed, or None (the package-wide one)."""
    if rng is None:
        return _GLOBAL
    if isinstance(rng, np.random.Generator):
        return rng
    return np.random.default_rng(rng)


def kaiming_normal(shape: tuple, fan_in: float, rng=None, dtype=np.float32,
                   gain: float = math.sqrt(2.0)) -> np.ndarray:
    """He et al. (2015) normal initialisation: std ``gain / sqrt(fan_in)`` (ReLU gain)."""
    std = gain / math.sqrt(max(fan_in, 1.0))
    return (as_rng(rng).standard_normal(shape) * std).astype(dtype)


def uniform_fan_in(shape: tuple, fan_in: float, rng=None, dtype=np.float32) -> np.ndarray:
    """Uniform on ``±1/sqrt(fan_in)`` (PyTorch's default for biases)."""
    bound = 1.0 / math.sqrt(max(fan_in, 1.0))
    return as_rng(rng).uniform(-bound, bound, shape).astype(dtype)
