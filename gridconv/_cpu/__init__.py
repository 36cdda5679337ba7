"""CPU kernels (Numba ``njit(parallel=True)``) and the thin drivers that size their tiles."""
