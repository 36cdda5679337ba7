"""The GPU tests run only in a process of their own (see tests/test_cuda.py): under
Numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``, which must be set before ``numba.cuda``
is imported) or on a real GPU (``GRIDCONV_CUDA_TESTS=1``). A plain ``pytest`` run does
not collect them."""

import os

if not (os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"
        or os.environ.get("GRIDCONV_CUDA_TESTS") == "1"):
    collect_ignore_glob = ["test_*.py"]
