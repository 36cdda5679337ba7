"""Session set-up shared by the test modules."""

from __future__ import annotations

import pytest
from _simulator import BACKGROUND, SIMULATOR_TEST, cuda_importable, start_suite


@pytest.fixture(scope="session", autouse=True)
def _cuda_simulator_in_the_background(request):
    """Start the CUDA simulator suite (a process of its own, about 3 minutes on one core)
    with the session's first test, so that it runs while this process compiles and runs
    the CPU tests; ``test_cuda.test_kernels_under_the_cuda_simulator`` waits for it and
    checks its result. Nothing starts when that test is not selected."""
    if any(item.name == SIMULATOR_TEST for item in request.session.items) and cuda_importable():
        BACKGROUND["proc"] = start_suite({"NUMBA_ENABLE_CUDASIM": "1"})
    yield
    proc = BACKGROUND.pop("proc", None)
    if proc is not None and proc.poll() is None:  # the test did not run (-x, a failure)
        proc.kill()
        proc.communicate()
