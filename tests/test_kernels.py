"""Tests of gridconv.kernels against scipy.ndimage (no dependency on gridconv.conv)."""

from __future__ import annotations

import doctest
import itertools

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view
from scipy import ndimage

from gridconv import kernels

RNG = np.random.default_rng(1234)
SHAPES = {1: (23,), 2: (13, 11), 3: (9, 8, 7)}


def _x(ndim: int) -> np.ndarray:
    return RNG.standard_normal(SHAPES[ndim])


def _impulse_response(filt, ndim: int, half: int = 12) -> np.ndarray:
    """The correlation kernel a scipy filter applies, read off its response to a delta.

    ``y[c + j] = sum_k w[k] x[c + j + k - centre]`` with ``x = delta_c`` gives
    ``y[c + j] = w[centre - j]``: the response is the kernel reversed.
    """
    x = np.zeros((2 * half + 1,) * ndim)
    x[(half,) * ndim] = 1.0
    return filt(x)[::-1, ...][(slice(None),) + (slice(None, None, -1),) * (ndim - 1)]


def _crop(a: np.ndarray, shape) -> np.ndarray:
    """The centred ``shape`` window of ``a``."""
    return a[tuple(slice((n - k) // 2, (n - k) // 2 + k) for n, k in zip(a.shape, shape,
                                                                        strict=True))]


def _same_zeros(x: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Cross-correlation with ``padding="same"`` as gridconv defines it (stride 1): zero
    padding, total ``K - 1`` per axis, the extra element on the high side."""
    pads = [((n - 1) // 2, n - 1 - (n - 1) // 2) for n in k.shape]
    xp = np.pad(x, pads)
    win = sliding_window_view(xp, k.shape)
    return np.tensordot(win, k, axes=k.ndim)


# ---------------------------------------------------------------------------------------
# documentation examples
# ---------------------------------------------------------------------------------------


def test_docstring_examples():
    result = doctest.testmod(kernels, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 20
    assert result.failed == 0


# ---------------------------------------------------------------------------------------
# derivative kernels
# ---------------------------------------------------------------------------------------

DERIVATIVES = [(kernels.sobel, ndimage.sobel), (kernels.prewitt, ndimage.prewitt)]


@pytest.mark.parametrize("ours, theirs", DERIVATIVES, ids=["sobel", "prewitt"])
@pytest.mark.parametrize("ndim", [1, 2, 3])
@pytest.mark.parametrize("mode", ["constant", "reflect", "nearest", "wrap", "mirror"])
def test_derivative_matches_scipy(ours, theirs, ndim, mode):
    x = _x(ndim)
    for axis in [*range(ndim), -1]:
        k = ours(axis, ndim)
        expected = theirs(x, axis=axis, mode=mode)
        got = ndimage.correlate(x, k, mode=mode)
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
        # true convolution (gridconv's flip=True) flips the sign
        np.testing.assert_allclose(ndimage.convolve(x, k, mode=mode), -expected,
                                   rtol=1e-12, atol=1e-12)
        # and "same" zero padding is scipy's mode="constant"
        if mode == "constant":
            np.testing.assert_allclose(_same_zeros(x, k), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("ours, theirs", DERIVATIVES, ids=["sobel", "prewitt"])
@pytest.mark.parametrize("ndim", [1, 2, 3])
def test_derivative_is_scipy_impulse_response(ours, theirs, ndim):
    for axis in range(ndim):
        got = _crop(_impulse_response(lambda x, a=axis: theirs(x, a, mode="constant"), ndim),
                    (3,) * ndim)
        np.testing.assert_array_equal(ours(axis, ndim), got)


def test_sobel_prewitt_values():
    np.testing.assert_array_equal(kernels.sobel(0), [[-1, -2, -1], [0, 0, 0], [1, 2, 1]])
    np.testing.assert_array_equal(kernels.sobel(1), [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]])
    np.testing.assert_array_equal(kernels.prewitt(-1), [[-1, 0, 1]] * 3)
    np.testing.assert_array_equal(kernels.sobel(0, 1), [-1, 0, 1])
    k3 = kernels.sobel(2, 3)
    np.testing.assert_array_equal(k3[..., 2], -k3[..., 0])
    np.testing.assert_array_equal(k3[..., 2], np.outer([1, 2, 1], [1, 2, 1]))
    np.testing.assert_array_equal(k3[..., 1], 0)


@pytest.mark.parametrize("func, gain", [(kernels.sobel, 4), (kernels.prewitt, 3)])
@pytest.mark.parametrize("ndim", [1, 2, 3])
def test_derivative_gain_and_normalize(func, gain, ndim):
    grids = np.indices((7,) * ndim, dtype=np.float64)
    for axis in range(ndim):
        # slope 2.5 along `axis` (plus a slope along another axis, which must not leak in)
        ramp = 2.5 * grids[axis] + (0.75 * grids[(axis + 1) % ndim] if ndim > 1 else 0.0)
        raw = ndimage.correlate(ramp, func(axis, ndim), mode="nearest")[(slice(2, -2),) * ndim]
        np.testing.assert_allclose(raw, 2.5 * 2 * gain ** (ndim - 1), rtol=1e-12)
        k = func(axis, ndim, normalize=True)
        assert np.abs(k).sum() == pytest.approx(1.0)
        est = ndimage.correlate(ramp, k, mode="nearest")[(slice(2, -2),) * ndim]
        np.testing.assert_allclose(est, 2.5, rtol=1e-12)


# ---------------------------------------------------------------------------------------
# Laplacian, ridge, sharpen, identity
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("ndim", [1, 2, 3])
@pytest.mark.parametrize("mode", ["constant", "reflect", "wrap"])
def test_laplacian_matches_scipy_laplace(ndim, mode):
    x = _x(ndim)
    got = ndimage.correlate(x, kernels.laplacian(ndim), mode=mode)
    np.testing.assert_allclose(got, ndimage.laplace(x, mode=mode), rtol=1e-12, atol=1e-12)
    if mode == "constant":
        np.testing.assert_allclose(_same_zeros(x, kernels.laplacian(ndim)), got,
                                   rtol=1e-12, atol=1e-12)


def test_laplacian_values():
    np.testing.assert_array_equal(kernels.laplacian(1), [1, -2, 1])
    np.testing.assert_array_equal(kernels.laplacian(2), [[0, 1, 0], [1, -4, 1], [0, 1, 0]])
    k3 = kernels.laplacian(3)
    assert k3[1, 1, 1] == -6 and np.count_nonzero(k3) == 7
    np.testing.assert_array_equal(kernels.laplacian(2, diagonals=True),
                                  [[1, 1, 1], [1, -8, 1], [1, 1, 1]])
    k26 = kernels.laplacian(3, diagonals=True)
    assert k26[1, 1, 1] == -26 and np.count_nonzero(k26 == 1) == 26
    np.testing.assert_array_equal(kernels.laplacian(1, diagonals=True), [1, -2, 1])


@pytest.mark.parametrize("ndim", [1, 2, 3])
def test_laplacian_on_quadratic(ndim):
    # f = sum_i x_i**2 has nabla^2 f = 2 d; the diagonal stencil gives 3**(d-1) times that
    f = (np.indices((7,) * ndim, dtype=np.float64) ** 2).sum(axis=0)
    inner = (slice(1, -1),) * ndim
    axial = ndimage.correlate(f, kernels.laplacian(ndim))[inner]
    np.testing.assert_allclose(axial, 2 * ndim)
    diag = ndimage.correlate(f, kernels.laplacian(ndim, diagonals=True))[inner]
    np.testing.assert_allclose(diag, 3 ** (ndim - 1) * 2 * ndim)


def test_ridge():
    np.testing.assert_array_equal(kernels.ridge(), [[-1, -1, -1], [-1, 8, -1], [-1, -1, -1]])
    np.testing.assert_array_equal(kernels.ridge(axis=0), [[-1, -1, -1], [2, 2, 2],
                                                          [-1, -1, -1]])
    np.testing.assert_array_equal(kernels.ridge(axis=-1), kernels.ridge(axis=0).T)
    for ndim in (1, 2, 3):
        np.testing.assert_array_equal(kernels.ridge(ndim),
                                      -kernels.laplacian(ndim, diagonals=True))
    # a bright line perpendicular to `axis` gives the strongest response on the line
    img = np.zeros((9, 9))
    img[4, :] = 1.0
    resp0 = ndimage.correlate(img, kernels.ridge(axis=0), mode="nearest")
    resp1 = ndimage.correlate(img, kernels.ridge(axis=1), mode="nearest")
    assert np.all(resp0[4] == 6) and np.all(resp0[[3, 5]] == -3)
    np.testing.assert_array_equal(resp1, 0)
    vol = np.zeros((5, 5, 5))
    vol[:, 2, :] = 1.0  # a sheet perpendicular to axis 1
    resp = ndimage.correlate(vol, kernels.ridge(3, axis=1), mode="nearest")
    assert np.all(resp[:, 2, :] == 18)


def test_sharpen():
    np.testing.assert_array_equal(kernels.sharpen(), [[0, -1, 0], [-1, 5, -1], [0, -1, 0]])
    np.testing.assert_array_equal(kernels.sharpen(diagonals=True),
                                  [[-1, -1, -1], [-1, 9, -1], [-1, -1, -1]])
    np.testing.assert_array_equal(kernels.sharpen(3, amount=0.0), kernels.identity(3, 3))
    for ndim in (1, 2, 3):
        x = _x(ndim)
        got = ndimage.correlate(x, kernels.sharpen(ndim, amount=0.7), mode="constant")
        np.testing.assert_allclose(got, x - 0.7 * ndimage.laplace(x, mode="constant"),
                                   rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("size", [1, 3, 5, (3, 1), (1, 3, 5)])
def test_identity(size):
    k = kernels.identity(size)
    ndim = len(size) if isinstance(size, tuple) else 2
    assert k.shape == (size if isinstance(size, tuple) else (size,) * ndim)
    x = RNG.standard_normal((6,) * ndim)
    np.testing.assert_array_equal(ndimage.correlate(x, k, mode="constant"), x)
    np.testing.assert_array_equal(_same_zeros(x, k), x)


# ---------------------------------------------------------------------------------------
# blurs
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("ndim", [1, 2, 3])
@pytest.mark.parametrize("sigma", [0.5, 1.0, 1.7, "per-axis"])
@pytest.mark.parametrize("truncate", [4.0, 2.0, 1.3])
def test_gaussian_matches_gaussian_filter(ndim, sigma, truncate):
    if sigma == "per-axis":
        sigma = (0.8, 1.6, 0.0)[:ndim] if ndim > 1 else (1.2,)
    x = _x(ndim)
    k = kernels.gaussian(sigma, ndim=ndim, truncate=truncate)
    # everywhere with zero padding
    got = ndimage.correlate(x, k, mode="constant")
    expected = ndimage.gaussian_filter(x, sigma, truncate=truncate, mode="constant")
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(_same_zeros(x, k), expected, rtol=1e-12, atol=1e-13)
    # the interior with any boundary mode
    inner = tuple(slice(r, n - r) for r, n in zip(np.array(k.shape) // 2, x.shape,
                                                   strict=True))
    for mode in ("reflect", "nearest", "wrap"):
        np.testing.assert_allclose(
            ndimage.correlate(x, k, mode=mode)[inner],
            ndimage.gaussian_filter(x, sigma, truncate=truncate, mode=mode)[inner],
            rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("sigma, truncate", [(1.0, 4.0), (2.3, 3.0), (0.4, 4.0), (3.0, 1.0)])
def test_gaussian_kernel_is_scipy_impulse_response(sigma, truncate):
    k = kernels.gaussian(sigma, ndim=1, truncate=truncate)
    radius = int(truncate * sigma + 0.5)
    assert k.shape == (2 * radius + 1,)
    ref = _impulse_response(
        lambda x: ndimage.gaussian_filter1d(x, sigma, truncate=truncate, mode="constant"),
        1, half=radius + 3)
    np.testing.assert_allclose(k, _crop(ref, k.shape), rtol=1e-14, atol=1e-16)
    assert np.all(_crop(ref, (k.size + 2,))[[0, -1]] == 0)


def test_gaussian_explicit_size_and_sigma_zero():
    k = kernels.gaussian(1.0, ndim=1, size=3)
    w = np.exp(-0.5 * np.array([1.0, 0.0, 1.0]))
    np.testing.assert_allclose(k, w / w.sum(), rtol=1e-15)
    k = kernels.gaussian(1.0, ndim=1, size=4)  # samples at -1.5, -0.5, 0.5, 1.5
    w = np.exp(-0.5 * np.array([-1.5, -0.5, 0.5, 1.5]) ** 2)
    np.testing.assert_allclose(k, w / w.sum(), rtol=1e-15)
    k = kernels.gaussian((1.0, 2.0), size=(5, 6))
    assert k.shape == (5, 6)
    np.testing.assert_allclose(k, k[::-1, ::-1], rtol=1e-15)  # symmetric
    k = kernels.gaussian((2.0, 0.0))
    assert k.shape == (17, 1)
    k = kernels.gaussian((0.0, 1.0), size=(3, 5))
    np.testing.assert_array_equal(k[[0, 2]], 0)
    k = kernels.gaussian(0.0, ndim=3)
    np.testing.assert_array_equal(k, np.ones((1, 1, 1)))
    x = _x(2)
    np.testing.assert_allclose(ndimage.correlate(x, kernels.gaussian((1.5, 0.0)),
                                                 mode="constant"),
                               ndimage.gaussian_filter(x, (1.5, 0.0), mode="constant"),
                               rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("size", [1, 2, 3, 4, 5, (3, 1), (2, 5), (3, 2, 4)])
def test_box_matches_uniform_filter(size):
    ndim = len(size) if isinstance(size, tuple) else 2
    k = kernels.box(size)
    assert k.shape == (size if isinstance(size, tuple) else (size,) * ndim)
    x = RNG.standard_normal((9,) * ndim)
    for mode in ("constant", "reflect", "nearest"):
        np.testing.assert_allclose(ndimage.correlate(x, k, mode=mode),
                                   ndimage.uniform_filter(x, size, mode=mode),
                                   rtol=1e-12, atol=1e-13)
    # gridconv's "same" zero padding: scipy's origin 0 for odd sizes, -1 for even ones
    origin = [0 if n % 2 else -1 for n in k.shape]
    np.testing.assert_allclose(_same_zeros(x, k),
                               ndimage.correlate(x, k, mode="constant", origin=origin),
                               rtol=1e-12, atol=1e-13)


# ---------------------------------------------------------------------------------------
# sums, shapes, dtypes for every rank
# ---------------------------------------------------------------------------------------


def _all_kernels(ndim: int) -> dict[str, tuple[np.ndarray, float, tuple[int, ...]]]:
    """name -> (kernel, expected sum, expected shape)."""
    three = (3,) * ndim
    out = {
        "identity": (kernels.identity(ndim=ndim), 1.0, three),
        "identity5": (kernels.identity(5, ndim), 1.0, (5,) * ndim),
        "laplacian": (kernels.laplacian(ndim), 0.0, three),
        "laplacian_diag": (kernels.laplacian(ndim, diagonals=True), 0.0, three),
        "ridge": (kernels.ridge(ndim), 0.0, three),
        "sharpen": (kernels.sharpen(ndim, amount=2.5), 1.0, three),
        "sharpen_diag": (kernels.sharpen(ndim, diagonals=True), 1.0, three),
        "box": (kernels.box(4, ndim), 1.0, (4,) * ndim),
        "gaussian": (kernels.gaussian(1.2, ndim), 1.0, (11,) * ndim),
        "gaussian_size": (kernels.gaussian(0.9, ndim, size=4), 1.0, (4,) * ndim),
    }
    for axis in range(ndim):
        out[f"sobel{axis}"] = (kernels.sobel(axis, ndim), 0.0, three)
        out[f"prewitt{axis}"] = (kernels.prewitt(axis, ndim), 0.0, three)
        out[f"ridge{axis}"] = (kernels.ridge(ndim, axis), 0.0, three)
    return out


@pytest.mark.parametrize("ndim", [1, 2, 3, 4])
def test_sums_shapes_dtypes(ndim):
    for name, (k, total, shape) in _all_kernels(ndim).items():
        assert k.shape == shape, name
        assert k.dtype == np.float64, name
        assert k.flags.c_contiguous and k.flags.writeable, name
        assert k.sum() == pytest.approx(total, abs=1e-12), name
    for k, _, _ in _all_kernels(ndim).values():
        k[...] = 7  # each call returns a fresh array: nothing is shared
    for name, (k, total, _) in _all_kernels(ndim).items():
        assert k.sum() == pytest.approx(total, abs=1e-12), name


@pytest.mark.parametrize("dtype", [np.float32, np.float64, "float32"])
def test_dtype_argument(dtype):
    makers = [
        lambda **kw: kernels.identity(**kw),
        lambda **kw: kernels.laplacian(3, **kw),
        lambda **kw: kernels.ridge(2, 1, **kw),
        lambda **kw: kernels.sobel(0, **kw),
        lambda **kw: kernels.prewitt(1, 3, **kw),
        lambda **kw: kernels.sharpen(**kw),
        lambda **kw: kernels.box(3, **kw),
        lambda **kw: kernels.gaussian(1.5, **kw),
    ]
    for make in makers:
        k = make(dtype=dtype)
        assert k.dtype == np.dtype(dtype)
        np.testing.assert_allclose(k, make(), rtol=1e-7)


def test_symmetry_and_antisymmetry():
    for ndim in (1, 2, 3):
        flip = (slice(None, None, -1),) * ndim
        for k in (kernels.laplacian(ndim), kernels.ridge(ndim), kernels.sharpen(ndim),
                  kernels.gaussian(1.0, ndim), kernels.box(3, ndim),
                  *(kernels.ridge(ndim, a) for a in range(ndim))):
            np.testing.assert_array_equal(k, k[flip])  # correlation == convolution
        for a in range(ndim):
            for k in (kernels.sobel(a, ndim), kernels.prewitt(a, ndim)):
                np.testing.assert_array_equal(k[flip], -k)  # flip=True negates


# ---------------------------------------------------------------------------------------
# as_weight
# ---------------------------------------------------------------------------------------


def test_as_weight_shapes_and_contents():
    k = kernels.sobel(0)
    w = kernels.as_weight(k)
    assert w.shape == (1, 1, 3, 3)
    np.testing.assert_array_equal(w[0, 0], k)
    w = kernels.as_weight(k, in_channels=3, depthwise=True)
    assert w.shape == (3, 1, 3, 3)
    assert all(np.array_equal(w[c, 0], k) for c in range(3))
    w = kernels.as_weight(k, in_channels=3, out_channels=6, depthwise=True)
    assert w.shape == (6, 1, 3, 3)
    w = kernels.as_weight(k, in_channels=3)
    assert w.shape == (1, 3, 3, 3)
    w = kernels.as_weight(kernels.box(3, 3), in_channels=2, out_channels=4)
    assert w.shape == (4, 2, 3, 3, 3)
    assert all(np.array_equal(w[o, c], kernels.box(3, 3))
               for o, c in itertools.product(range(4), range(2)))
    assert kernels.as_weight([1, 2, 1]).shape == (1, 1, 3)
    assert kernels.as_weight(np.array([1, 2, 1])).dtype == np.float64
    assert kernels.as_weight(kernels.box(3, dtype=np.float32)).dtype == np.float32


def test_as_weight_copies():
    k = kernels.gaussian(1.0)
    w = kernels.as_weight(k)
    assert w.flags.c_contiguous and w.flags.writeable and not np.shares_memory(w, k)
    w[...] = 0
    assert k.sum() == pytest.approx(1.0)
    kf = np.asfortranarray(kernels.sobel(1, 3))[::1]
    w = kernels.as_weight(kf, in_channels=2, depthwise=True)
    assert w.flags.c_contiguous
    np.testing.assert_array_equal(w[1, 0], kf)


def test_as_weight_depthwise_equals_per_channel_filtering():
    # a numpy reference of a depthwise (groups=C) correlation with zero "same" padding
    x = RNG.standard_normal((3, 8, 9))
    w = kernels.as_weight(kernels.sobel(1), in_channels=3, depthwise=True)
    y = np.stack([_same_zeros(x[c], w[c, 0]) for c in range(3)])
    for c in range(3):
        np.testing.assert_allclose(y[c], ndimage.sobel(x[c], 1, mode="constant"), atol=1e-12)
    # dense: every output channel filters the sum of the input channels
    w = kernels.as_weight(kernels.sobel(1), in_channels=3, out_channels=2)
    y = np.stack([sum(_same_zeros(x[c], w[o, c]) for c in range(3)) for o in range(2)])
    expected = ndimage.sobel(x.sum(axis=0), 1, mode="constant")
    np.testing.assert_allclose(y, np.stack([expected, expected]), atol=1e-12)


# ---------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------

BAD = [
    # ndim
    (lambda: kernels.laplacian(0), ValueError, "laplacian: `ndim`"),
    (lambda: kernels.laplacian(2.0), TypeError, "laplacian: `ndim`"),
    (lambda: kernels.laplacian(True), TypeError, "laplacian: `ndim`"),
    (lambda: kernels.ridge(-1), ValueError, "ridge: `ndim`"),
    (lambda: kernels.sharpen("2"), TypeError, "sharpen: `ndim`"),
    (lambda: kernels.identity(3, 0), ValueError, "identity: `ndim`"),
    (lambda: kernels.box(3, ndim=1.5), TypeError, "box: `ndim`"),
    (lambda: kernels.gaussian(1.0, ndim=0), ValueError, "gaussian: `ndim`"),
    (lambda: kernels.sobel(0, 0), ValueError, "sobel: `ndim`"),
    # axis
    (lambda: kernels.sobel(2), ValueError, "sobel: `axis`"),
    (lambda: kernels.sobel(-3), ValueError, "sobel: `axis`"),
    (lambda: kernels.sobel(0.0), TypeError, "sobel: `axis`"),
    (lambda: kernels.sobel(None), TypeError, "sobel: `axis`"),
    (lambda: kernels.prewitt(3, 3), ValueError, "prewitt: `axis`"),
    (lambda: kernels.ridge(2, axis=5), ValueError, "ridge: `axis`"),
    (lambda: kernels.ridge(2, axis="x"), TypeError, "ridge: `axis`"),
    # sizes
    (lambda: kernels.identity(4), ValueError, "identity: `size`"),
    (lambda: kernels.identity(0), ValueError, "identity: `size`"),
    (lambda: kernels.identity(3.0), TypeError, "identity: `size`"),
    (lambda: kernels.identity((3, 3), 3), ValueError, "identity: `size`"),
    (lambda: kernels.box(0), ValueError, "box: `size`"),
    (lambda: kernels.box(-2), ValueError, "box: `size`"),
    (lambda: kernels.box((3, 0)), ValueError, "box: `size`"),
    (lambda: kernels.box(2.5), TypeError, "box: `size`"),
    (lambda: kernels.box((3, 2.5)), TypeError, "box: `size`"),
    (lambda: kernels.box("3"), TypeError, "box: `size`"),
    (lambda: kernels.box(()), ValueError, "box: per-axis"),
    (lambda: kernels.box((3, 3), ndim=3), ValueError, "box: `size`"),
    # gaussian
    (lambda: kernels.gaussian(-1.0), ValueError, "gaussian: `sigma`"),
    (lambda: kernels.gaussian(np.nan), ValueError, "gaussian: `sigma`"),
    (lambda: kernels.gaussian(np.inf), ValueError, "gaussian: `sigma`"),
    (lambda: kernels.gaussian("1"), TypeError, "gaussian: `sigma`"),
    (lambda: kernels.gaussian(True), TypeError, "gaussian: `sigma`"),
    (lambda: kernels.gaussian((1.0, "a")), TypeError, "gaussian: `sigma`"),
    (lambda: kernels.gaussian((1.0, 2.0), ndim=3), ValueError, "gaussian: `sigma`"),
    (lambda: kernels.gaussian((1.0, 2.0), size=(3, 3, 3)), ValueError, "gaussian: per-axis"),
    (lambda: kernels.gaussian(1.0, truncate=-1.0), ValueError, "gaussian: `truncate`"),
    (lambda: kernels.gaussian(1.0, truncate=np.inf), ValueError, "gaussian: `truncate`"),
    (lambda: kernels.gaussian(1.0, truncate="4"), TypeError, "gaussian: `truncate`"),
    (lambda: kernels.gaussian(1.0, size=0), ValueError, "gaussian: `size`"),
    (lambda: kernels.gaussian(1.0, size=3.0), TypeError, "gaussian: `size`"),
    (lambda: kernels.gaussian((1.0, 0.0), size=4), ValueError, "gaussian: an axis with"),
    # sharpen / flags
    (lambda: kernels.sharpen(amount=-1.0), ValueError, "sharpen: `amount`"),
    (lambda: kernels.sharpen(amount=np.nan), ValueError, "sharpen: `amount`"),
    (lambda: kernels.sharpen(amount="1"), TypeError, "sharpen: `amount`"),
    (lambda: kernels.sharpen(diagonals=1), TypeError, "sharpen: `diagonals`"),
    (lambda: kernels.laplacian(diagonals="yes"), TypeError, "laplacian: `diagonals`"),
    (lambda: kernels.sobel(0, normalize=None), TypeError, "sobel: `normalize`"),
    # dtype
    (lambda: kernels.box(3, dtype=np.int32), TypeError, "box: `dtype`"),
    (lambda: kernels.gaussian(1.0, dtype=np.complex128), TypeError, "gaussian: `dtype`"),
    (lambda: kernels.sobel(0, dtype="not-a-dtype"), TypeError, "sobel: `dtype`"),
    (lambda: kernels.identity(dtype=bool), TypeError, "identity: `dtype`"),
    # as_weight
    (lambda: kernels.as_weight(np.float64(1.0)), ValueError, "as_weight: `kernel`"),
    (lambda: kernels.as_weight(np.zeros((0, 3))), ValueError, "as_weight: `kernel`"),
    (lambda: kernels.as_weight(np.ones(3, complex)), TypeError, "as_weight: `kernel`"),
    (lambda: kernels.as_weight(["a", "b"]), TypeError, "as_weight: `kernel`"),
    (lambda: kernels.as_weight(np.ones(3), in_channels=0), ValueError,
     "as_weight: `in_channels`"),
    (lambda: kernels.as_weight(np.ones(3), in_channels=2.0), TypeError,
     "as_weight: `in_channels`"),
    (lambda: kernels.as_weight(np.ones(3), out_channels=0), ValueError,
     "as_weight: `out_channels`"),
    (lambda: kernels.as_weight(np.ones(3), out_channels="2"), TypeError,
     "as_weight: `out_channels`"),
    (lambda: kernels.as_weight(np.ones(3), in_channels=2, out_channels=3, depthwise=True),
     ValueError, "as_weight: with depthwise=True `out_channels`"),
    (lambda: kernels.as_weight(np.ones(3), depthwise="yes"), TypeError,
     "as_weight: `depthwise`"),
]


@pytest.mark.parametrize("call, exc, message", BAD, ids=[m for _, _, m in BAD])
def test_errors_name_function_and_argument(call, exc, message):
    with pytest.raises(exc) as info:
        call()
    text = str(info.value)
    assert text.startswith("gridconv.kernels."), text
    assert message in text, text
