"""The GPU engine: ``numba.cuda`` kernels behind the public functions.

Nothing here is imported by ``import gridconv``: :mod:`gridconv._dispatch` imports
:mod:`gridconv._cuda.ops` the first time a CUDA array reaches a public function, and only
then is ``numba.cuda`` imported.

- :mod:`gridconv._cuda.kernels`: the kernels, built per dtype (float32 kernels hold float32
  constants only) and compiled lazily for one explicit signature each;
- :mod:`gridconv._cuda.arrays`: device arrays of any kind (Numba, CuPy, PyTorch) in and out,
  casts, contiguous copies, launch geometry;
- :mod:`gridconv._cuda.ops`: the public operations, same names, signatures and checks as the
  CPU functions.
"""
