"""gridconv on real data: edges, blurs and derivatives of images, an ECG and a volume.

Everything here runs on data that ships inside installed packages (no downloads):

* 2-D: the ``camera`` and ``astronaut`` photographs of scikit-image;
* 1-D: the ECG recording of PyWavelets (``pywt.data.ecg()``, 1024 samples);
* 3-D: scikit-image's ``lfw_subset()`` (200 small 25 x 25 images) stacked into a
  (200, 25, 25) volume.

Each filter is run with :func:`gridconv.conv` and with the SciPy routine a user would
call today, timed side by side (``time.perf_counter``, one warm-up call, best of a few
runs), and the results are compared; a crop of each is also checked against the
plain-NumPy :mod:`gridconv.reference`. The last part checks one :func:`gridconv.conv_backward`
call against central finite differences.

Usage::

    python examples/filter_demo.py              # print the report
    python examples/filter_demo.py --save out/  # also write PNGs of inputs and results
    python examples/filter_demo.py --dtype float32

The script exits with status 1 if any check fails. The first run compiles the Numba
kernels (cached on disk for later runs).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numba
import numpy as np
import pywt
import scipy
import skimage
import skimage.data
from scipy import ndimage, signal

import gridconv
from gridconv import kernels, reference

# padding_mode -> scipy.ndimage mode (see docs/padding.md)
SCIPY_MODE = {"zeros": "constant", "reflect": "mirror", "replicate": "nearest",
              "circular": "wrap"}

RESULTS: list[dict] = []  # one row of the summary table per comparison


# --------------------------------------------------------------------------- helpers ---

def best_time(func, repeat: int = 5) -> float:
    """Seconds of the fastest of ``repeat`` calls, after one warm-up call."""
    func()
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        func()
        best = min(best, time.perf_counter() - t0)
    return best


def tolerance(expected: np.ndarray, dtype) -> float:
    """Agreement required: ~1e-5 (float32) or ~1e-12 (float64) of the output's scale."""
    rel = 1e-5 if np.dtype(dtype) == np.float32 else 1e-12
    return rel * max(1.0, float(np.abs(expected).max()))


def check(name: str, got: np.ndarray, expected: np.ndarray, dtype) -> bool:
    """Print one line comparing ``got`` with ``expected`` and record it."""
    diff = float(np.abs(np.asarray(got, np.float64) - np.asarray(expected, np.float64)).max())
    tol = tolerance(expected, dtype)
    ok = bool(got.shape == expected.shape and diff <= tol)
    print(f"    check {name:<44s} max|diff| = {diff:.2e}  (tol {tol:.0e})  "
          f"{'PASS' if ok else 'FAIL'}")
    return ok


def compare(task: str, shape, ours, theirs, theirs_name: str, dtype,
            repeat: int = 5) -> np.ndarray:
    """Time ``ours()`` against ``theirs()``, compare the results, add a summary row."""
    y_ours, y_theirs = ours(), theirs()
    t_ours, t_theirs = best_time(ours, repeat), best_time(theirs, repeat)
    diff = float(np.abs(np.asarray(y_ours, np.float64) - np.asarray(y_theirs, np.float64)).max())
    tol = tolerance(y_theirs, dtype)
    ok = bool(y_ours.shape == y_theirs.shape and diff <= tol)
    print(f"  {task}")
    print(f"    shape {shape} -> {y_ours.shape}, {np.dtype(dtype).name}")
    print(f"    gridconv {t_ours * 1e3:9.3f} ms   {theirs_name} {t_theirs * 1e3:9.3f} ms   "
          f"max|diff| = {diff:.2e}  {'PASS' if ok else 'FAIL'}")
    RESULTS.append(dict(task=task, ours=t_ours, theirs=t_theirs, theirs_name=theirs_name,
                        diff=diff, ok=ok))
    return y_ours


def weights(*spatial_kernels: np.ndarray) -> np.ndarray:
    """Stack spatial kernels into a (len, 1, *K) weight: one output channel each."""
    return np.stack(spatial_kernels)[:, None]


# ------------------------------------------------------------------------------ 2-D ---

def demo_2d(dtype, checks: list, images: dict) -> None:
    print("\n(a) 2-D: the camera photograph (512 x 512) and the RGB astronaut")
    cam = skimage.data.camera().astype(dtype) / 255
    x = cam[None, None]  # (N, C, H, W) = (1, 1, 512, 512)
    mode = "reflect"  # mirror at the border (scipy's "mirror")
    same = dict(padding="same", padding_mode=mode)

    # Sobel edge magnitude: both derivatives in one call (2 output channels).
    w_sobel = weights(kernels.sobel(0, dtype=dtype), kernels.sobel(1, dtype=dtype))

    def sobel_gridconv():
        g = gridconv.conv(x, w_sobel, **same)[0]
        return np.hypot(g[0], g[1])

    def sobel_scipy():
        return np.hypot(ndimage.sobel(cam, 0, mode=SCIPY_MODE[mode]),
                        ndimage.sobel(cam, 1, mode=SCIPY_MODE[mode]))

    edges = compare("Sobel edge magnitude (two 3x3 kernels)", x.shape, sobel_gridconv,
                    sobel_scipy, "ndimage.sobel x2", dtype)

    # Gaussian blur, sigma = 2: the 17 x 17 kernel in one pass ...
    sigma = 2.0
    k2 = kernels.gaussian(sigma, dtype=dtype)
    w2 = kernels.as_weight(k2)
    blurred = compare(f"Gaussian blur sigma={sigma:g} ({k2.shape[0]}x{k2.shape[1]} kernel)",
                      x.shape, lambda: gridconv.conv(x, w2, **same)[0, 0],
                      lambda: ndimage.correlate(cam, k2, mode=SCIPY_MODE[mode]),
                      "ndimage.correlate", dtype)
    # ... and separably, a 17 x 1 pass then a 1 x 17 pass.
    wy = kernels.as_weight(kernels.gaussian((sigma, 0), dtype=dtype))
    wx = kernels.as_weight(kernels.gaussian((0, sigma), dtype=dtype))
    compare("Gaussian blur, separable (17x1 then 1x17)", x.shape,
            lambda: gridconv.conv(gridconv.conv(x, wy, **same), wx, **same)[0, 0],
            lambda: ndimage.gaussian_filter(cam, sigma, mode=SCIPY_MODE[mode]),
            "ndimage.gaussian_filter", dtype)

    # The same calls on a crop, against the plain-NumPy reference (float64).
    crop = x[:, :, 200:264, 180:260]
    checks.append(check("Sobel vs gridconv.reference (64x80 crop)",
                        gridconv.conv(crop, w_sobel, **same),
                        reference.conv(crop.astype(np.float64), w_sobel, **same), dtype))
    checks.append(check("Gaussian vs gridconv.reference (64x80 crop)",
                        gridconv.conv(crop, w2, **same),
                        reference.conv(crop.astype(np.float64), w2, **same), dtype))

    # Depthwise blur of an RGB image: groups=3, one kernel per channel.
    rgb = skimage.data.astronaut().astype(dtype) / 255  # (H, W, 3)
    xr = np.ascontiguousarray(rgb.transpose(2, 0, 1))[None]  # (1, 3, H, W)
    wd = kernels.as_weight(kernels.gaussian(1.5, dtype=dtype), in_channels=3, depthwise=True)
    kd = wd[0, 0]
    rgb_blur = compare("depthwise RGB blur, groups=3 (13x13 kernel)", xr.shape,
                       lambda: gridconv.conv(xr, wd, groups=3, **same)[0],
                       lambda: np.stack([ndimage.correlate(rgb[..., c], kd,
                                                           mode=SCIPY_MODE[mode])
                                         for c in range(3)]),
                       "ndimage.correlate x3", dtype)
    print(f"    weight {wd.shape}: the same {kd.shape[0]}x{kd.shape[1]} Gaussian for each "
          f"channel (RGB input transposed to channels-first)")
    images.update(camera=cam, camera_sobel=edges / edges.max(), camera_blur=blurred,
                  astronaut=rgb, astronaut_blur=rgb_blur.transpose(1, 2, 0))


# ------------------------------------------------------------------------------ 1-D ---

def demo_1d(dtype, checks: list, images: dict) -> None:
    ecg = pywt.data.ecg().astype(dtype)  # (1024,)
    print(f"\n(b) 1-D: the ECG of pywt.data.ecg() ({ecg.size} samples)")
    x = ecg[None, None]  # (N, C, L) = (1, 1, 1024)
    mode = "reflect"

    sigma = 3.0
    kg = kernels.gaussian(sigma, ndim=1, dtype=dtype)
    wg = kernels.as_weight(kg)
    smooth = compare(f"Gaussian smoothing sigma={sigma:g} ({kg.size} taps)", x.shape,
                     lambda: gridconv.conv(x, wg, padding="same", padding_mode=mode)[0, 0],
                     lambda: ndimage.correlate1d(ecg, kg, mode=SCIPY_MODE[mode]),
                     "ndimage.correlate1d", dtype, repeat=20)
    # Savitzky-Golay first derivative (window 15, cubic): its "dot" coefficients are a
    # correlation kernel; savgol_filter with mode="mirror" correlates with them.
    ksg = signal.savgol_coeffs(15, 3, deriv=1, use="dot").astype(dtype)
    deriv = compare("Savitzky-Golay derivative (15 taps, cubic)", x.shape,
                    lambda: gridconv.conv(x, kernels.as_weight(ksg), padding="same",
                                          padding_mode=mode)[0, 0],
                    lambda: signal.savgol_filter(ecg, 15, 3, deriv=1, mode="mirror"),
                    "signal.savgol_filter", dtype, repeat=20)
    # Zero padding: "same" with an odd kernel is scipy.signal.correlate(..., "same").
    compare("Gaussian smoothing, zero padding", x.shape,
            lambda: gridconv.conv(x, wg, padding="same")[0, 0],
            lambda: signal.correlate(ecg, kg, mode="same", method="direct"),
            "signal.correlate", dtype, repeat=20)
    checks.append(check("ECG smoothing vs gridconv.reference",
                        gridconv.conv(x, wg, padding="same", padding_mode=mode),
                        reference.conv(x.astype(np.float64), wg, padding="same",
                                       padding_mode=mode), dtype))

    peaks, _ = signal.find_peaks(smooth, prominence=0.5 * np.ptp(smooth))
    print(f"    R peaks of the smoothed ECG at samples {peaks.tolist()}, "
          f"RR intervals {np.diff(peaks).tolist()} samples")
    print(f"    steepest upstroke (derivative max) at sample {int(np.argmax(deriv))}")
    images.update(ecg=ecg, ecg_smooth=smooth, ecg_deriv=deriv)


# ------------------------------------------------------------------------------ 3-D ---

def demo_3d(dtype, checks: list, images: dict) -> None:
    vol = skimage.data.lfw_subset().astype(dtype)  # (200, 25, 25), values in [0, 1]
    print(f"\n(c) 3-D: lfw_subset() stacked into a volume {vol.shape}")
    x = vol[None, None]  # (N, C, D, H, W)
    mode = "replicate"  # repeat the edge (scipy's "nearest")
    same = dict(padding="same", padding_mode=mode)

    k3 = kernels.gaussian(1.0, ndim=3, dtype=dtype)  # 9 x 9 x 9
    w3 = kernels.as_weight(k3)
    smooth = compare(f"3-D Gaussian sigma=1 ({'x'.join(map(str, k3.shape))} kernel)",
                     x.shape, lambda: gridconv.conv(x, w3, **same)[0, 0],
                     lambda: ndimage.correlate(vol, k3, mode=SCIPY_MODE[mode]),
                     "ndimage.correlate", dtype, repeat=3)
    # All three Sobel derivatives in one call: a (3, 1, 3, 3, 3) weight.
    ws = weights(*(kernels.sobel(a, ndim=3, dtype=dtype) for a in range(3)))

    def sobel_gridconv():
        g = gridconv.conv(x, ws, **same)[0]
        return np.sqrt((g * g).sum(axis=0))

    def sobel_scipy():
        g = [ndimage.sobel(vol, a, mode=SCIPY_MODE[mode]) for a in range(3)]
        return np.sqrt(sum(d * d for d in g))

    grad = compare("3-D Sobel gradient magnitude (3x3x3, 3 axes)", x.shape, sobel_gridconv,
                   sobel_scipy, "ndimage.sobel x3", dtype)
    crop = x[:, :, 90:110]
    checks.append(check("3-D Gaussian vs gridconv.reference (20x25x25)",
                        gridconv.conv(crop, w3, **same),
                        reference.conv(crop.astype(np.float64), w3, **same), dtype))
    checks.append(check("3-D Sobel vs gridconv.reference (20x25x25)",
                        gridconv.conv(crop, ws, **same),
                        reference.conv(crop.astype(np.float64), ws, **same), dtype))
    def montage(v):  # slices 96..103 side by side, 4x enlarged
        return np.kron(np.hstack(list(v[96:104])), np.ones((4, 4)))

    images.update(volume=montage(vol), volume_smooth=montage(smooth),
                  volume_sobel=montage(grad / grad.max()))


# ------------------------------------------------------------------------ gradients ---

def demo_gradients(checks: list) -> None:
    print("\n(d) gradients: conv_backward vs central finite differences (float64)")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 2, 7, 6))
    w = rng.standard_normal((3, 2, 3, 3))
    b = rng.standard_normal(3)
    params = dict(stride=2, padding="same", dilation=(1, 2), padding_mode="reflect")
    gy = rng.standard_normal(gridconv.conv(x, w, b, **params).shape)
    print(f"    x {x.shape}, weight {w.shape}, bias {b.shape}, {params}")
    print(f"    loss L = sum(grad_output * conv(x, weight, bias)), grad_output {gy.shape}")

    def loss(xx, ww, bb):
        return float(np.sum(gy * gridconv.conv(xx, ww, bb, **params)))

    gx, gw, gb = gridconv.conv_backward(gy, x, w, b, **params)
    eps = 1e-6

    def numeric(arr: np.ndarray, f) -> np.ndarray:
        out = np.empty_like(arr)
        for idx in np.ndindex(arr.shape):
            saved = arr[idx]
            arr[idx] = saved + eps
            up = f()
            arr[idx] = saved - eps
            down = f()
            arr[idx] = saved
            out[idx] = (up - down) / (2 * eps)
        return out

    def lf():
        return loss(x, w, b)

    numeric_grads = (numeric(x, lf), numeric(w, lf), numeric(b, lf))
    ref = reference.conv_backward(gy, x, w, b, **params)
    for name, got, num, exp in zip(("grad_x", "grad_weight", "grad_bias"), (gx, gw, gb),
                                   numeric_grads, ref, strict=True):
        diff = float(np.abs(got - num).max())
        ok = diff < 1e-6 * max(1.0, float(np.abs(num).max()))
        print(f"    check {name + ' ' + str(got.shape):<24s} vs finite differences: "
              f"max|diff| = {diff:.1e}  {'PASS' if ok else 'FAIL'}")
        checks.append(ok)
        checks.append(check(f"{name} vs reference.conv_backward", got, exp, np.float64))
    print(f"    grad_bias = {np.round(gb, 6).tolist()}")


# ------------------------------------------------------------------------------ I/O ---

def save_images(directory: Path, images: dict) -> None:
    """Write PNGs with Pillow (installed with scikit-image); ECG plot with matplotlib."""
    try:
        from PIL import Image
    except ImportError:
        print("\n--save: Pillow is not installed; no images written")
        return
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, img in images.items():
        if name.startswith("ecg"):
            continue
        a = np.clip(np.asarray(img, np.float64), 0, 1)
        Image.fromarray((a * 255 + 0.5).astype(np.uint8)).save(directory / f"{name}.png")
        written.append(f"{name}.png")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("    (matplotlib is not installed: the ECG plot is skipped)")
    else:
        fig, axes = plt.subplots(2, 1, figsize=(10, 5), sharex=True)
        axes[0].plot(images["ecg"], lw=0.8, label="ECG")
        axes[0].plot(images["ecg_smooth"], lw=1.2, label="Gaussian, sigma=3")
        axes[0].legend()
        axes[1].plot(images["ecg_deriv"], lw=0.8, label="Savitzky-Golay derivative")
        axes[1].legend()
        fig.tight_layout()
        fig.savefig(directory / "ecg.png", dpi=100)
        plt.close(fig)
        written.append("ecg.png")
    print(f"\nwrote {len(written)} images to {directory}: {', '.join(written)}")


# ----------------------------------------------------------------------------- main ---

def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--save", metavar="DIR", type=Path,
                        help="write PNGs of the inputs and filtered images to DIR")
    parser.add_argument("--dtype", choices=("float64", "float32"), default="float64",
                        help="dtype of the filtered data (default float64; float32 compiles "
                             "a second set of kernels on the first run)")
    args = parser.parse_args(argv)

    t_start = time.perf_counter()
    print(f"gridconv {gridconv.__version__} | numpy {np.__version__} | scipy "
          f"{scipy.__version__} | numba {numba.__version__} ({numba.get_num_threads()} "
          f"threads) | scikit-image {skimage.__version__} | PyWavelets {pywt.__version__}")
    print("Times are the best of several runs after one warm-up call; scipy.ndimage is "
          "single-threaded.")

    # Compile (or load from the on-disk cache) the kernels used below, and say how long.
    dtype = np.dtype(args.dtype)
    t0 = time.perf_counter()
    for c_out in (1, 2):  # one channel per group (direct kernel), several (patch kernel)
        gridconv.conv(np.ones((1, 1, 4, 4), dtype), np.ones((c_out, 1, 3, 3), dtype))
    gridconv.conv_backward(np.ones((1, 3, 2, 2)), np.ones((1, 2, 4, 4)),
                           np.ones((3, 2, 3, 3)), np.ones(3), padding_mode="reflect",
                           padding=1, stride=2)
    print(f"kernels compiled or loaded from the cache in {time.perf_counter() - t0:.1f} s")

    checks: list[bool] = []
    images: dict = {}
    demo_2d(dtype, checks, images)
    demo_1d(dtype, checks, images)
    demo_3d(dtype, checks, images)
    demo_gradients(checks)

    checks.extend(r["ok"] for r in RESULTS)
    print("\nSummary (gridconv vs SciPy, same machine, same run)")
    header = f"{'task':<48s} {'gridconv ms':>11s} {'SciPy ms':>10s} {'ratio':>7s} " \
             f"{'max|diff|':>9s}  {'check'}"
    print(header)
    print("-" * len(header))
    for r in RESULTS:
        print(f"{r['task']:<48.48s} {r['ours'] * 1e3:11.3f} {r['theirs'] * 1e3:10.3f} "
              f"{r['theirs'] / r['ours']:6.2f}x {r['diff']:9.1e}  {'PASS' if r['ok'] else 'FAIL'}")
    print("(ratio = SciPy time / gridconv time: above 1 means gridconv is faster)")

    if args.save is not None:
        save_images(args.save, images)

    failed = checks.count(False)
    print(f"\n{len(checks) - failed} of {len(checks)} checks passed in "
          f"{time.perf_counter() - t_start:.1f} s")
    if failed:
        print(f"FAILED: {failed} checks")
        return 1
    print("all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
