"""The GPU test suite (``tests/cuda``) in a pytest process of its own: under Numba's CUDA
simulator (``NUMBA_ENABLE_CUDASIM=1`` must be set before ``numba.cuda`` is imported, so
it cannot share the main process) or on a real GPU.

``tests/conftest.py`` starts the simulator run when the session starts, so that it runs
beside the rest of the suite (it is single-threaded, as the kernels' first compilations
are); ``test_cuda.test_kernels_under_the_cuda_simulator`` collects it."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# the test that collects the simulator run; BACKGROUND holds the running process until then
SIMULATOR_TEST = "test_kernels_under_the_cuda_simulator"
BACKGROUND: dict = {}


def cuda_importable() -> bool:
    """Whether numba.cuda is installed (found, not imported: importing it costs 0.7 s
    and the main process has no use for it before the PTX tests)."""
    try:
        return importlib.util.find_spec("numba.cuda") is not None
    except ImportError:
        return False


def start_suite(env_extra: dict) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    env.update(env_extra)
    return subprocess.Popen(
        [sys.executable, "-m", "pytest", str(ROOT / "tests" / "cuda"), "-p", "no:cacheprovider"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish_suite(proc: subprocess.Popen) -> None:
    try:
        out, err = proc.communicate(timeout=1800)
    finally:
        if proc.poll() is None:
            proc.kill()
    # (exit status 5 would mean that no test was collected)
    assert proc.returncode == 0, out[-20000:] + err[-5000:]
