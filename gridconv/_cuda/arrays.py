"""Device arrays in and out of the GPU engine, and launch geometry.

Inputs of any CUDA kind (Numba device arrays, CuPy arrays, PyTorch CUDA tensors: anything
with ``__cuda_array_interface__``; the simulator's arrays under ``NUMBA_ENABLE_CUDASIM``)
are viewed as Numba device arrays without a copy; results go back as the caller's kind
(CuPy in, CuPy out; PyTorch in, PyTorch out; Numba otherwise), again without a copy.
"""

from __future__ import annotations

import math

import numpy as np

from .._params import fail, result_dtype
from . import kernels as K


def cuda():
    from numba import cuda as _cuda

    return _cuda


def simulated() -> bool:
    from numba import config

    return bool(config.ENABLE_CUDASIM)


# ------------------------------------------------------------------------ kinds, wrapping


def _is_numba(a) -> bool:
    module = type(a).__module__ or ""
    return module.startswith(("numba.cuda", "numba_cuda")) and hasattr(a, "copy_to_host")


def kind(a) -> str:
    """``"cupy"``, ``"torch"`` or ``"numba"``: how results are handed back."""
    module = type(a).__module__ or ""
    if module.startswith("cupy"):
        return "cupy"
    if module.startswith("torch"):
        return "torch"
    return "numba"


def caller_kind(*arrays) -> str:
    for a in arrays:
        if a is not None and not isinstance(a, (np.ndarray, np.generic)):
            return kind(a)
    return "numba"


def dev(a, name: str, op: str):
    """``a`` as a Numba device array (no copy), or None."""
    if a is None:
        return None
    if _is_numba(a):
        return a
    if kind(a) == "torch" and getattr(a, "requires_grad", False):
        a = a.detach()
    if hasattr(a, "__cuda_array_interface__"):
        return cuda().as_cuda_array(a)
    raise fail(op, f"`{name}` must be a CUDA array like the other arguments, got "
                   f"{type(a).__name__}", TypeError)


def wrap(result, how: str):
    """Hand a result (array, None, or a tuple of them) back as the caller's kind."""
    if isinstance(result, tuple):
        return tuple(wrap(r, how) for r in result)
    if result is None or how == "numba":
        return result
    if how == "cupy":
        import cupy

        return cupy.asarray(result)
    import torch

    return torch.as_tensor(result, device="cuda")


# --------------------------------------------------------------------- dtypes, operands


def dtype_of(op: str, **arrays) -> np.dtype:
    """:func:`gridconv._params.result_dtype` from the arrays' dtypes."""
    return result_dtype(op, **{k: None if v is None else np.empty(0, v.dtype)
                               for k, v in arrays.items()})


def check_real(op: str, a, name: str) -> None:
    if np.dtype(a.dtype).kind not in "biuf":
        raise fail(op, f"`{name}` must hold real numbers, got dtype {a.dtype}", TypeError)


def empty(shape, dtype):
    return cuda().device_array(tuple(int(s) for s in shape), dtype=np.dtype(dtype))


def _contiguous(a) -> bool:
    return bool(a.is_c_contiguous()) or a.size <= 1


def _view5(a):
    """A 5-D view of a device array of rank <= 5 (unit axes in front), any layout."""
    shape = (1,) * (5 - a.ndim) + tuple(a.shape)
    if _contiguous(a):
        return a.reshape(shape)
    item = np.dtype(a.dtype).itemsize
    lead = (a.strides[0] if a.ndim else item,) * (5 - a.ndim)
    strides = lead + tuple(a.strides)
    if simulated():
        from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray

        return FakeCUDAArray(np.lib.stride_tricks.as_strided(a._ary, shape, strides))
    from numba.cuda.cudadrv.devicearray import DeviceNDArray

    return DeviceNDArray(shape, strides, np.dtype(a.dtype), gpu_data=a.gpu_data)


def operand(a, dtype, op: str = "", name: str = ""):
    """``a`` C-contiguous in ``dtype``: ``a`` itself when it already is (no copy; the
    kernels never write their inputs), else a copy made on the device."""
    dtype = np.dtype(dtype)
    if np.dtype(a.dtype) == dtype and _contiguous(a):
        return a
    if a.ndim > 5 and not _contiguous(a):
        raise fail(op, f"`{name}` is a non-contiguous CUDA array of {a.ndim} dimensions; "
                       f"pass a contiguous one", TypeError)
    out = empty(a.shape, dtype)
    if a.size:
        src = _view5(a) if a.ndim <= 5 else a.reshape((1, 1, 1, 1, a.size))
        dst = out.reshape((1,) * (5 - out.ndim) + tuple(out.shape)) if out.ndim <= 5 \
            else out.reshape((1, 1, 1, 1, a.size))
        blocks, threads = grid1(a.size)
        K.get("copy5", dtype)[blocks, threads](src, dst)
    return out


_TABLES: dict = {}


def table(values, dtype=np.int64):
    """A small host table on the device (cached: the same geometry is uploaded once)."""
    arr = np.ascontiguousarray(values, dtype=dtype)
    key = (arr.dtype.str, arr.shape, arr.tobytes())
    d = _TABLES.get(key)
    if d is None:
        if len(_TABLES) > 1024:
            _TABLES.clear()
        d = cuda().to_device(arr)
        _TABLES[key] = d
    return d


def dummy(dtype, ndim: int = 1):
    return table(np.zeros((1,) * ndim), dtype)


# ------------------------------------------------------------------------ launch sizes


def threads1() -> int:
    return 16 if simulated() else 256


def grid1(total: int) -> tuple[int, int]:
    """(blocks, threads) of a grid-stride launch over ``total`` items."""
    t = threads1()
    cap = 3 if simulated() else 65535
    return max(1, min(math.ceil(total / t), cap)), t


def reduce_threads() -> int:
    """Threads of a block reduction (a power of two)."""
    return 8 if simulated() else 256


def launch1(name: str, dtype, total: int, *args) -> None:
    """Launch a grid-stride kernel over ``total`` items (nothing when there are none)."""
    if total <= 0:
        return
    blocks, threads = grid1(total)
    K.get(name, dtype)[blocks, threads](*args)
