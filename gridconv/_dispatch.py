"""Route a public operation to the backend that owns its arrays.

NumPy arrays run on the CPU kernels (the function's own body). A Dask array anywhere in the
call sends it to :mod:`gridconv.dask`; a CUDA device array (anything exposing
``__cuda_array_interface__``, or a simulator device array) sends it to the GPU backend
:mod:`gridconv._cuda.ops`. The backend module is imported only then, so ``import gridconv``
never pays for Dask or ``numba.cuda``. A backend implements an operation by defining a
function of the same name and signature; the public function's argument checks are the
backend's to repeat (they share the helpers in :mod:`gridconv._params`).
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from typing import TypeVar

import numpy as np

F = TypeVar("F", bound=Callable)

BACKEND_MODULES = {"dask": "gridconv.dask", "cuda": "gridconv._cuda.ops"}

# Types that can never select a backend: checked first so the NumPy path stays cheap.
_PLAIN = (np.ndarray, np.generic, int, float, bool, str, tuple, list, type(None))


def array_kind(a) -> str | None:
    """``"dask"``, ``"cuda"``, ``"numpy"`` or None (not an array) for one argument."""
    if isinstance(a, np.ndarray):
        return "numpy"
    if isinstance(a, _PLAIN):
        return None
    module = type(a).__module__ or ""
    if module.startswith("dask"):
        return "dask"
    try:
        if hasattr(a, "__cuda_array_interface__"):
            return "cuda"
    except RuntimeError:  # a PyTorch CUDA tensor that requires grad refuses the interface
        return "cuda" if getattr(a, "is_cuda", False) else None
    if "cuda" in module and hasattr(a, "copy_to_host"):  # the simulator's device arrays
        return "cuda"
    return None


def call_kind(op: str, args, kwargs) -> str:
    """The backend for one call; mixing host and device arrays is a ``TypeError``."""
    kinds = set()
    for a in (*args, *kwargs.values()):
        if not isinstance(a, _PLAIN) or isinstance(a, np.ndarray):
            kind = array_kind(a)
            if kind is not None:
                kinds.add(kind)
    if "cuda" in kinds:
        if kinds != {"cuda"}:
            given = ", ".join(sorted(kinds))
            raise TypeError(
                f"{op}: all array arguments must be on the same device; got a mix of "
                f"{given} arrays (move them with gridconv.to_device or gridconv.to_host)")
        return "cuda"
    if "dask" in kinds:
        return "dask"
    return "numpy"


def dispatch(func: F) -> F:
    """Decorate a public operation so non-NumPy arrays go to their backend."""
    name = func.__name__

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        kind = call_kind(name, args, kwargs)
        if kind == "numpy":
            return func(*args, **kwargs)
        module = importlib.import_module(BACKEND_MODULES[kind])
        impl = getattr(module, name, None)
        if impl is None:
            raise NotImplementedError(f"{name}: no {kind} implementation")
        return impl(*args, **kwargs)

    wrapper.__wrapped_cpu__ = func  # the NumPy implementation, for backends that reuse it
    return wrapper  # type: ignore[return-value]
