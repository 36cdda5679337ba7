"""CPU kernels (Numba ``njit`` functions whose ``prange`` loops run in parallel, see
``options.PARALLEL``) and the thin drivers that size their tiles."""
