"""The GPU engine, tested without a GPU.

* The kernels run under Numba's CUDA simulator: ``tests/cuda`` in a pytest process of its
  own with ``NUMBA_ENABLE_CUDASIM=1`` (the variable must be set before ``numba.cuda`` is
  imported, so it cannot share this process), against the reference, forward and
  backward. That process starts with this module's first test and runs while this one
  compiles PTX (the two take about as long); the module's last test collects it. With a
  GPU present, the same tests also run for real.
* Every kernel is compiled to PTX for compute capabilities 7.0 and 9.0 with
  ``numba.cuda.compile_ptx`` (no GPU needed); a float32 kernel must not contain a single
  float64 instruction.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
F64 = re.compile(r"\.f64\b")


def _start_suite(env_extra: dict) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    env.update(env_extra)
    return subprocess.Popen(
        [sys.executable, "-m", "pytest", str(ROOT / "tests" / "cuda"), "-p", "no:cacheprovider"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish_suite(proc: subprocess.Popen) -> None:
    try:
        out, err = proc.communicate(timeout=1800)
    finally:
        if proc.poll() is None:
            proc.kill()
    # (exit status 5 would mean that no test was collected)
    assert proc.returncode == 0, out[-20000:] + err[-5000:]


_SIMULATOR = "test_kernels_under_the_cuda_simulator"
_BACKGROUND: dict = {}


@pytest.fixture(scope="module", autouse=True)
def _simulator_in_the_background(request):
    """Start the simulator suite (a process of its own) with this module's first test,
    so that it runs while this process compiles PTX; ``test_kernels_under_the_cuda_
    simulator``, the module's last test, waits for it and checks its result."""
    wanted = any(item.name == _SIMULATOR for item in request.session.items)
    try:
        import numba.cuda  # noqa: F401
    except ImportError:
        wanted = False
    if wanted:
        _BACKGROUND["proc"] = _start_suite({"NUMBA_ENABLE_CUDASIM": "1"})
    yield
    proc = _BACKGROUND.pop("proc", None)
    if proc is not None and proc.poll() is None:  # the test did not run (-x, a failure)
        proc.kill()
        proc.communicate()


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
    _finish_suite(_start_suite({"GRIDCONV_CUDA_TESTS": "1"}))


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
    """Last in the module: the suite started in the background by the fixture above."""
    pytest.importorskip("numba.cuda")
    proc = _BACKGROUND.pop("proc", None) or _start_suite({"NUMBA_ENABLE_CUDASIM": "1"})
    _finish_suite(proc)
