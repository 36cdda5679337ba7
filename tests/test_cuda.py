"""The GPU engine, tested without a GPU.

* The kernels run under Numba's CUDA simulator: ``tests/cuda`` in a pytest process of its
  own with ``NUMBA_ENABLE_CUDASIM=1`` (the variable must be set before ``numba.cuda`` is
  imported, so it cannot share this process), against the reference, forward and
  backward. That process starts with the session (``tests/conftest.py``) and runs beside
  the CPU tests; ``test_kernels_under_the_cuda_simulator`` collects it. With a GPU
  present, the same tests also run for real.
* Every kernel is compiled to PTX for compute capabilities 7.0 and 9.0 with
  ``numba.cuda.compile_ptx`` (no GPU needed); a float32 kernel must not contain a single
  float64 instruction.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from _simulator import BACKGROUND, ROOT, finish_suite, start_suite

F64 = re.compile(r"\.f64\b")


def _real_gpu() -> bool:
    code = "from numba import cuda; print(cuda.is_available())"
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    try:
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                             text=True, timeout=300)
    except Exception:
        return False
    return out.stdout.strip().endswith("True")


def test_kernels_on_a_gpu():
    pytest.importorskip("numba.cuda")
    if not _real_gpu():
        pytest.skip("no CUDA GPU on this machine")
    finish_suite(start_suite({"GRIDCONV_CUDA_TESTS": "1"}))


# ------------------------------------------------------------------------------ PTX

def _kernels():
    from gridconv._cuda import kernels

    return kernels


def _names():
    try:
        return list(_kernels().SPECS)
    except ImportError:  # numba-cuda not installed: the tests below skip
        return ["gather8"]


@pytest.mark.parametrize("cc", [(7, 0), (9, 0)], ids=["sm70", "sm90"])
@pytest.mark.parametrize("name", _names())
def test_float32_ptx_has_no_float64(name, cc):
    pytest.importorskip("numba.cuda")
    code = _kernels().ptx(name, "float32", cc)
    assert ".entry" in code
    lines = [ln.strip() for ln in code.splitlines() if F64.search(ln)]
    assert not lines, f"{name} (float32, sm_{cc[0]}{cc[1]}) has float64 PTX: {lines[:5]}"


@pytest.mark.parametrize("name", ["gather8", "local8", "wgrad", "elementwise", "softmax",
                                  "pool_fwd", "pool_bwd"])
def test_float64_kernels_compute_in_float64(name):
    """The float64 versions compile and really compute in float64 (so the check above is
    not vacuous); the simulator tests run float64 through the other kernels."""
    pytest.importorskip("numba.cuda")
    code = _kernels().ptx(name, "float64", (9, 0))
    assert ".entry" in code and F64.search(code)


def test_import_gridconv_does_not_import_numba_cuda():
    code = ("import sys, numpy as np, gridconv; gridconv.conv(np.ones((1, 1, 4)), "
            "np.ones((1, 1, 2))); gridconv.backends; "
            "print('numba.cuda' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, timeout=600)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_kernels_under_the_cuda_simulator():
    """The suite started in the background with the session (see tests/conftest.py)."""
    pytest.importorskip("numba.cuda")
    proc = BACKGROUND.pop("proc", None) or start_suite({"NUMBA_ENABLE_CUDASIM": "1"})
    finish_suite(proc)
