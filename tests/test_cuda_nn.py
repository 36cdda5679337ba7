"""The kernels of gridconv.nn on the GPU (gridconv._cuda.nn), checked without a GPU.

Their results are tested under the CUDA simulator by ``tests/cuda/test_gpu_nn.py`` (run
by ``tests/test_cuda.py`` in a process of its own). Here every kernel is compiled to PTX
for compute capabilities 7.0 and 9.0 with ``numba.cuda.compile_ptx`` (no GPU needed): a
float32 kernel must not hold a single float64 instruction, and the float64 builds must
(positive controls, so that the check is not vacuous).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
F64 = re.compile(r"\.f64\b")


def _kernels():
    from gridconv._cuda import nn

    return nn


def _names():
    try:
        return list(_kernels().SPECS)
    except ImportError:  # numba-cuda not installed: the tests below skip
        return ["gemm"]


@pytest.mark.parametrize("cc", [(7, 0), (9, 0)], ids=["sm70", "sm90"])
@pytest.mark.parametrize("name", _names())
def test_float32_ptx_has_no_float64(name, cc):
    pytest.importorskip("numba.cuda")
    code = _kernels().ptx(name, "float32", cc)
    assert ".entry" in code
    lines = [ln.strip() for ln in code.splitlines() if F64.search(ln)]
    assert not lines, f"{name} (float32, sm_{cc[0]}{cc[1]}) has float64 PTX: {lines[:5]}"


@pytest.mark.parametrize("name", ["ew", "gemm", "channel_stats", "bn_vec", "ce_forward",
                                  "adam", "sgd", "band_axis", "dropout"])
def test_float64_kernels_compute_in_float64(name):
    pytest.importorskip("numba.cuda")
    code = _kernels().ptx(name, "float64", (9, 0))
    assert ".entry" in code and F64.search(code)


def test_gemm_ptx_stages_tiles_in_shared_memory_without_atomics():
    pytest.importorskip("numba.cuda")
    code = _kernels().ptx("gemm", "float32", (9, 0))
    assert "ld.shared.f32" in code and "st.shared.f32" in code
    assert "bar.sync" in code
    for name in _kernels().SPECS:
        assert "atom." not in _kernels().ptx(name, "float32", (9, 0)), name


def test_dropout_hash_is_the_same_in_numpy():
    """The device's mask hash evaluated on the host: pure integer arithmetic without
    overflow, roughly uniform."""
    pytest.importorskip("numba.cuda")
    keep = _kernels().dropout_keep(100_000, 12345, 678, int(0.3 * (1 << 24)))
    assert abs(keep.mean() - 0.7) < 0.01
    x = np.arange(2**32 - 8, 2**32, dtype=np.int64)
    assert (_kernels()._mix32(x) < 2**32).all() and (_kernels()._mix32(x) >= 0).all()


def test_import_gridconv_nn_does_not_import_numba_cuda():
    code = ("import sys, numpy as np, gridconv, gridconv.nn as nn; "
            "m = nn.Sequential(nn.Conv1d(1, 2, 3), nn.BatchNorm(2), nn.Flatten(), "
            "nn.Dense(4, 2)); o = nn.SGD(m); v, g = nn.CrossEntropy()(m(np.ones((2, 1, 4), "
            "np.float32)), np.array([0, 1])); m.backward(g); o.step(); "
            "print(m.device, 'numba.cuda' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, timeout=600)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "cpu False"
