"""Moving arrays between the host and a CUDA device, and what backends are available.

``numba.cuda`` is imported only when one of these functions needs it, so ``import
gridconv`` stays fast and works on machines without CUDA.
"""

from __future__ import annotations

import numpy as np

__all__ = ["to_device", "to_host", "backends"]


def _cuda():
    from numba import cuda

    return cuda


def _is_device(a) -> bool:
    if isinstance(a, np.ndarray):
        return False
    module = type(a).__module__ or ""
    try:
        if hasattr(a, "__cuda_array_interface__"):
            return True
    except RuntimeError:  # a PyTorch tensor that requires grad
        return True
    return "cuda" in module and hasattr(a, "copy_to_host")


def to_device(a, dtype=None):
    """Copy a host array to the current CUDA device (a Numba device array).

    Parameters
    ----------
    a : array_like or device array
        A NumPy array (or anything :func:`numpy.asarray` accepts). A device array (Numba,
        CuPy, PyTorch CUDA) is returned as it is.
    dtype : dtype, optional
        Convert on the host first (for example ``np.float32``).

    Returns
    -------
    numba.cuda.cudadrv.devicearray.DeviceNDArray
        C-contiguous, with ``a``'s values. Pass it to any gridconv operation: the
        computation runs on the GPU and the results are device arrays.

    Examples
    --------
    >>> import numpy as np, gridconv                                 # doctest: +SKIP
    >>> x = gridconv.to_device(np.ones((1, 1, 8, 8), np.float32))    # doctest: +SKIP
    >>> w = gridconv.to_device(np.ones((1, 1, 3, 3), np.float32))    # doctest: +SKIP
    >>> gridconv.to_host(gridconv.conv(x, w)).shape                  # doctest: +SKIP
    (1, 1, 6, 6)
    """
    if _is_device(a):
        return a
    host = np.ascontiguousarray(a, dtype=dtype)
    return _cuda().to_device(host)


def to_host(a):
    """Copy a device array (Numba, CuPy or PyTorch CUDA) to a NumPy array.

    NumPy arrays come back as they are; ``None`` stays ``None``; a tuple or list (the
    results of a ``*_backward`` function) is converted element by element into a tuple.
    """
    if a is None or isinstance(a, np.ndarray):
        return a
    if isinstance(a, (tuple, list)):
        return tuple(to_host(v) for v in a)
    module = type(a).__module__ or ""
    if module.startswith("torch"):
        return a.detach().cpu().numpy()
    if module.startswith("cupy"):
        return a.get()
    if hasattr(a, "copy_to_host"):
        return a.copy_to_host()
    if _is_device(a):
        return _cuda().as_cuda_array(a).copy_to_host()
    return np.asarray(a)


def _cpu_info() -> dict:
    import numba

    try:
        layer = numba.threading_layer()
    except ValueError:  # no parallel function has run yet: the configured choice
        layer = f"not chosen yet (NUMBA_THREADING_LAYER={numba.config.THREADING_LAYER})"
    return {"available": True, "threads": numba.get_num_threads(), "threading_layer": layer}


def _cuda_info() -> dict:
    info: dict = {"available": False, "device": None, "compute_capability": None,
                  "simulator": False, "reason": None}
    try:
        from numba import config

        cuda = _cuda()
    except Exception as err:  # numba-cuda missing or broken
        info["reason"] = (f"numba.cuda cannot be imported ({type(err).__name__}: {err}); "
                          f"install the extra: pip install 'gridconv[cuda]'")
        return info
    info["simulator"] = bool(config.ENABLE_CUDASIM)
    try:
        if not cuda.is_available():
            info["reason"] = "no CUDA driver or GPU found (numba.cuda.is_available() is False)"
            return info
        dev = cuda.get_current_device()
        name = getattr(dev, "name", None)
        if name is None:  # the simulator's device has no name
            name = "Numba CUDA simulator" if info["simulator"] else "unknown CUDA device"
        name = name.decode() if isinstance(name, bytes) else str(name)
        info.update(available=True, device=name,
                    compute_capability=tuple(getattr(dev, "compute_capability", ()) or ()))
    except Exception as err:
        info["reason"] = f"{type(err).__name__}: {err}"
    return info


def backends() -> dict:
    """Which backends can run here.

    Returns
    -------
    dict
        ``{"cpu": {"available", "threads", "threading_layer"}, "cuda": {"available",
        "device", "compute_capability", "simulator", "reason"}}``: the CPU engine's Numba
        thread count and threading layer; the CUDA device's name and compute capability,
        or ``reason``, why there is none (``simulator`` is True under
        ``NUMBA_ENABLE_CUDASIM=1``, where the "device" is Numba's simulator).
    """
    return {"cpu": _cpu_info(), "cuda": _cuda_info()}
