"""Datasets read in mini-batches, the HDF5 layout they are stored in, and transforms.

The training loop only needs the *dataset protocol*:

* ``len(ds)`` is the number of samples;
* ``ds[idx]``, with ``idx`` a 1-D array of integer sample indices (any order, repeats
  allowed), returns ``(x_batch, y_batch)``: ``x_batch`` of shape
  ``(len(idx), *ds.sample_shape)``, ``y_batch`` of shape ``(len(idx), ...)`` or ``None``
  when the dataset has no labels;
* ``ds.sample_shape`` is the shape of one ``x`` sample (after the transform);
* ``ds.subset(indices)`` is a dataset over those samples: a view, nothing is read.

:class:`ArrayDataset` serves in-memory arrays, :class:`HDF5Dataset` an HDF5 file written
by :func:`write_hdf5` or :class:`HDF5Writer` (a batch reads only its rows: the file
is never loaded whole). A *transform* is any callable applied to the ``x`` batch after it is read:
the stored values are cast to float32 first, and what the transform returns is returned
unchanged (so a transform may choose another dtype). :class:`Spectrogram` is one.

HDF5 layout: the root of the file holds a dataset ``x`` of shape ``(N, *sample_shape)``
and optionally a dataset ``y`` of shape ``(N, *label_shape)`` (class indices, masks...),
both chunked along axis 0 in whole samples and compressed; the root attributes hold
metadata such as ``classes``.
"""

from __future__ import annotations

import copy
import numbers
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import scipy.signal

from ._params import fail

__all__ = [
    "ArrayDataset",
    "HDF5Dataset",
    "HDF5Writer",
    "Rescale",
    "Spectrogram",
    "group_split",
    "hz_to_mel",
    "mel_filterbank",
    "mel_to_hz",
    "precompute",
    "random_split",
    "write_hdf5",
]

Transform = Callable[[np.ndarray], np.ndarray]

#: Target size of one HDF5 chunk when ``chunk_samples`` is not given. Shuffled batches
#: touch one chunk per sample and HDF5 decompresses whole chunks, so chunks are kept small
#: (on Fashion-MNIST 64 KiB compresses as well as 1 MiB, and random batches of 64 read
#: about 7x faster when the chunk cache cannot hold the file).
CHUNK_BYTES = 64 << 10
#: Label datasets up to this size are read once and kept in memory by HDF5Dataset.
LABEL_CACHE_BYTES = 16 << 20


# --------------------------------------------------------------------------- indices


def _as_indices(idx, n: int, op: str, name: str = "idx") -> np.ndarray:
    """Normalise ``idx`` (int array, sequence, slice or boolean mask) to int64 in [0, n)."""
    if isinstance(idx, slice):
        return np.arange(n, dtype=np.int64)[idx]
    arr = np.asarray(idx)
    if arr.dtype == bool:
        if arr.shape != (n,):
            raise fail(op, f"boolean `{name}` must have shape ({n},), got {arr.shape}",
                       IndexError)
        return np.flatnonzero(arr).astype(np.int64)
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    if not np.issubdtype(arr.dtype, np.integer):
        raise fail(op, f"`{name}` must hold integer sample indices, got dtype {arr.dtype}",
                   IndexError)
    if arr.ndim != 1:
        raise fail(op, f"`{name}` must be 1-D, got shape {arr.shape}", IndexError)
    arr = arr.astype(np.int64, copy=False)
    lo, hi = int(arr.min()), int(arr.max())
    if lo < -n or hi >= n:
        bad = lo if lo < -n else hi
        raise fail(op, f"`{name}` holds index {bad}, out of range for {n} samples",
                   IndexError)
    return np.where(arr < 0, arr + n, arr) if lo < 0 else arr


class _Dataset:
    """Indexing, subsets and transforms shared by the datasets (``_rows`` maps the
    dataset's samples to rows of the storage)."""

    _rows: np.ndarray
    transform: Transform | None
    _name = "Dataset"

    def __len__(self) -> int:
        return int(self._rows.shape[0])

    def __getitem__(self, idx) -> tuple[np.ndarray, np.ndarray | None]:
        op = f"{self._name}[idx]"
        if isinstance(idx, numbers.Integral) and not isinstance(idx, bool):
            rows = self._rows[_as_indices(np.array([idx]), len(self), op)]
            x, y = self._batch(rows)
            return x[0], (None if y is None else y[0])
        rows = self._rows[_as_indices(idx, len(self), op)]
        return self._batch(rows)

    def _batch(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        x, y = self._read(rows)
        x = np.asarray(x, dtype=np.float32)
        if self.transform is not None:
            x = self.transform(x)
        return x, y

    def _read(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        raise NotImplementedError

    @property
    def indices(self) -> np.ndarray:
        """Storage rows of this dataset's samples, ``(len(self),)`` int64 (a copy)."""
        return self._rows.copy()

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """Shape of one ``x`` sample as the dataset returns it (after the transform)."""
        stored = self._stored_sample_shape
        if self.transform is None:
            return stored
        shape_fn = getattr(self.transform, "output_shape", None)
        if callable(shape_fn):
            return tuple(int(s) for s in shape_fn(stored))
        if getattr(self, "_shape_cache", None) is None:
            if len(self) == 0:
                raise fail(f"{self._name}.sample_shape",
                           "cannot infer the shape after the transform of an empty dataset")
            self._shape_cache = tuple(self[np.array([0])][0].shape[1:])
        return self._shape_cache

    @property
    def _stored_sample_shape(self) -> tuple[int, ...]:
        raise NotImplementedError

    def _with_rows(self, rows: np.ndarray):
        raise NotImplementedError

    def subset(self, indices) -> _Dataset:
        """A dataset over the samples ``indices`` of this one (a view: nothing is read).

        ``indices`` is a 1-D integer array (any order, repeats allowed) or a boolean
        mask of shape ``(len(self),)``.
        """
        rows = self._rows[_as_indices(indices, len(self), f"{self._name}.subset", "indices")]
        return self._with_rows(rows)

    def labels(self) -> np.ndarray | None:
        """All labels of the dataset, ``(len(self), ...)``, without reading ``x``; None
        when it has none."""
        raise NotImplementedError


# --------------------------------------------------------------------------- in memory


class ArrayDataset(_Dataset):
    """A dataset over in-memory arrays.

    Parameters
    ----------
    x : ndarray, shape (N, *sample_shape)
        Samples, any dtype; each batch is cast to float32 (then transformed).
    y : ndarray, shape (N, ...), optional
        Labels, returned with their own dtype; None for an unlabelled dataset.
    transform : callable, optional
        Applied to each float32 ``x`` batch ``(B, *sample_shape)``; what it returns is
        the batch.

    Examples
    --------
    >>> ds = ArrayDataset(np.arange(12).reshape(6, 2), np.arange(6))
    >>> x, y = ds[np.array([4, 1])]
    >>> x, y
    (array([[8., 9.],
           [2., 3.]], dtype=float32), array([4, 1]))
    """

    _name = "ArrayDataset"

    def __init__(self, x, y=None, transform: Transform | None = None, *,
                 indices=None) -> None:
        x = np.asarray(x)
        if x.ndim < 1:
            raise fail("ArrayDataset", f"`x` must have a sample axis, got shape {x.shape}")
        if y is not None:
            y = np.asarray(y)
            if y.ndim < 1 or y.shape[0] != x.shape[0]:
                raise fail("ArrayDataset", f"`y` must have {x.shape[0]} samples like `x`, "
                           f"got shape {y.shape}")
        if transform is not None and not callable(transform):
            raise fail("ArrayDataset", f"`transform` must be callable, got {transform!r}",
                       TypeError)
        self.x, self.y, self.transform = x, y, transform
        n = x.shape[0]
        self._rows = (np.arange(n, dtype=np.int64) if indices is None
                      else _as_indices(indices, n, "ArrayDataset", "indices"))

    def _read(self, rows):
        return self.x[rows], (None if self.y is None else self.y[rows])

    @property
    def _stored_sample_shape(self):
        return tuple(self.x.shape[1:])

    def _with_rows(self, rows):
        return ArrayDataset(self.x, self.y, self.transform, indices=rows)

    def labels(self):
        return None if self.y is None else self.y[self._rows]

    def __repr__(self) -> str:
        return (f"ArrayDataset({len(self)} samples of {self._stored_sample_shape} "
                f"{self.x.dtype}, labels={'no' if self.y is None else self.y.dtype})")


# --------------------------------------------------------------------------- HDF5


def _decode_attr(value):
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.ndarray) and value.dtype.kind in "OSU":
        return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        return value.item()
    return value


class HDF5Dataset(_Dataset):
    """A dataset over an HDF5 file, read one mini-batch at a time.

    The file is opened on first use (read-only) and re-opened after pickling or in a
    forked/new process: the pickled state holds only the path and indices. A batch reads
    the sorted unique rows (h5py requires increasing indices), each run of consecutive rows
    as one slice, then reorders and repeats them; only the chunks holding those rows are
    decompressed. (One h5py fancy-index read of the same rows measured several times
    slower: h5py builds a hyperslab union per row.) Labels of up to 16 MiB (class
    indices) are read once on first use and kept in memory.

    Parameters
    ----------
    path : str or Path
        The file, as written by :func:`write_hdf5` / :class:`HDF5Writer`.
    x : str
        Name of the sample dataset, shape ``(N, *sample_shape)``.
    y : str or None
        Name of the label dataset, shape ``(N, ...)``; when the file has none (or ``y`` is
        None) batches have ``y_batch = None``.
    transform : callable, optional
        Applied to each float32 ``x`` batch after reading; its result is the batch.
    indices : array of int, optional
        Rows of the file that make up the dataset (default: all).
    cache_bytes : int
        Size of HDF5's chunk cache for this file. Random batches touch many chunks: a
        cache holding most of the (uncompressed) file means each chunk is decompressed
        once rather than once per batch. Default 64 MiB.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    KeyError
        If the file has no dataset ``x``.
    """

    _name = "HDF5Dataset"

    def __init__(self, path: str | os.PathLike, x: str = "x", y: str | None = "y",
                 transform: Transform | None = None, indices=None, *,
                 cache_bytes: int = 64 << 20) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"HDF5Dataset: no file {str(self.path)!r}")
        if transform is not None and not callable(transform):
            raise fail("HDF5Dataset", f"`transform` must be callable, got {transform!r}",
                       TypeError)
        self.x_name, self.transform, self.cache_bytes = x, transform, int(cache_bytes)
        self._file: h5py.File | None = None
        self._pid: int | None = None
        self._shape_cache: tuple[int, ...] | None = None
        self._y_all: np.ndarray | None = None
        self._dsets: dict[str, h5py.Dataset] = {}
        with h5py.File(self.path, "r") as f:  # metadata only: reads open the file lazily
            if x not in f:
                raise KeyError(f"HDF5Dataset: {str(self.path)!r} has no dataset {x!r} "
                               f"(it has {sorted(f.keys())})")
            dx = f[x]
            self._n = int(dx.shape[0])
            self._shape = tuple(int(s) for s in dx.shape[1:])
            self.dtype = dx.dtype
            self.y_name = y if (y is not None and y in f) else None
            if self.y_name is not None and f[self.y_name].shape[0] != self._n:
                raise fail("HDF5Dataset", f"dataset {y!r} has {f[y].shape[0]} rows but "
                           f"{x!r} has {self._n}")
        self._rows = (np.arange(self._n, dtype=np.int64) if indices is None
                      else _as_indices(indices, self._n, "HDF5Dataset", "indices"))

    # file handling -----------------------------------------------------------------

    def _h5(self) -> h5py.File:
        if self._file is None or self._pid != os.getpid() or not self._file.id.valid:
            nslots = 10007  # a prime well above the number of cached chunks
            self._file = h5py.File(self.path, "r", rdcc_nbytes=self.cache_bytes,
                                   rdcc_nslots=nslots)
            self._pid = os.getpid()
            # HDF5's chunk cache lives with the open dataset: keep the datasets open
            self._dsets = {name: self._file[name] for name in (self.x_name, self.y_name)
                           if name is not None}
        return self._file

    def close(self) -> None:
        """Close the file (it is re-opened by the next read)."""
        if self._file is not None and self._pid == os.getpid():
            try:
                self._file.close()
            except Exception:  # noqa: BLE001 -- already closed / interpreter exit
                pass
        self._file = None
        self._dsets = {}

    def __enter__(self) -> HDF5Dataset:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_file"] = None
        state["_pid"] = None
        state["_y_all"] = None
        state["_dsets"] = {}
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)

    # reading -----------------------------------------------------------------------

    @staticmethod
    def _read_rows(dset: h5py.Dataset, rows: np.ndarray) -> np.ndarray:
        """Rows ``rows`` (any order, repeats) of ``dset``: the sorted unique rows are read
        as runs of consecutive rows (one slice each), then reordered."""
        uniq, inverse = np.unique(rows, return_inverse=True)
        out = np.empty((uniq.size, *dset.shape[1:]), dtype=dset.dtype)
        if uniq.size:
            cut = np.flatnonzero(np.diff(uniq) != 1) + 1
            starts, ends = np.r_[0, cut].tolist(), np.r_[cut, uniq.size].tolist()
            for s, e in zip(starts, ends):
                lo = int(uniq[s])
                out[s:e] = dset[lo:lo + (e - s)]
        if uniq.size == rows.size and np.array_equal(uniq, rows):
            return out
        return out[inverse.reshape(-1)]

    def _read(self, rows):
        self._h5()
        x = self._read_rows(self._dsets[self.x_name], rows)
        if self.y_name is None:
            return x, None
        if self._y_all is None:
            dy = self._dsets[self.y_name]
            if dy.size * dy.dtype.itemsize <= LABEL_CACHE_BYTES:
                self._y_all = dy[...]  # small (class indices): read once, kept in memory
        if self._y_all is not None:
            return x, self._y_all[rows]
        return x, self._read_rows(self._dsets[self.y_name], rows)

    def labels(self):
        if self.y_name is None:
            return None
        y = self._y_all if self._y_all is not None else self._h5()[self.y_name][...]
        return y[self._rows]

    @property
    def _stored_sample_shape(self):
        return self._shape

    def _with_rows(self, rows):
        new = copy.copy(self)  # shares the open handle (a closed one is re-opened)
        new._rows = rows
        return new

    @property
    def attrs(self) -> dict[str, Any]:
        """The file's root attributes (strings decoded, string arrays as lists)."""
        return {k: _decode_attr(v) for k, v in self._h5().attrs.items()}

    @property
    def chunk_samples(self) -> int | None:
        """Samples per HDF5 chunk of ``x`` (None for a contiguous dataset)."""
        self._h5()
        chunks = self._dsets[self.x_name].chunks
        return None if chunks is None else int(chunks[0])

    def __repr__(self) -> str:
        return (f"HDF5Dataset({str(self.path)!r}, {len(self)} samples of {self._shape} "
                f"{self.dtype}, labels={self.y_name!r})")


# --------------------------------------------------------------------------- writing


def _chunk_samples(chunk_samples, sample_shape, dtype, op: str) -> int:
    if chunk_samples is None:
        sample_bytes = max(1, int(np.prod(sample_shape, dtype=np.int64)) * np.dtype(dtype).itemsize)
        return max(1, CHUNK_BYTES // sample_bytes)
    if not isinstance(chunk_samples, numbers.Integral) or chunk_samples < 1:
        raise fail(op, f"`chunk_samples` must be a positive int or None, got {chunk_samples!r}")
    return int(chunk_samples)


def _filters(compression, compression_level, op: str) -> dict:
    if compression is None:
        return {}
    if compression not in ("gzip", "lzf"):
        raise fail(op, f"`compression` must be 'gzip', 'lzf' or None, got {compression!r}")
    opts: dict = {"compression": compression, "shuffle": True}
    if compression == "gzip":
        opts["compression_opts"] = 4 if compression_level is None else int(compression_level)
    return opts


def _write_attrs(f: h5py.File, attrs: Mapping[str, Any] | None) -> None:
    for key, value in (attrs or {}).items():
        if isinstance(value, (list, tuple)) and value and all(isinstance(v, str) for v in value):
            f.attrs[key] = np.array(value, dtype=h5py.string_dtype())
        else:
            f.attrs[key] = value


class HDF5Writer:
    """Write a dataset to HDF5 piece by piece (for data converted in parts).

    The datasets are created empty and resizable along axis 0 (``maxshape=(None, ...)``),
    chunked in whole samples and compressed; each :meth:`append` grows them.

    Parameters
    ----------
    path : str or Path
        The file to create (overwritten).
    sample_shape : tuple of int
        Shape of one ``x`` sample.
    dtype : dtype
        Stored dtype of ``x`` (e.g. ``uint8`` images, ``float32`` spectrograms).
    label_dtype : dtype or None
        Stored dtype of ``y``; None writes no labels. Default int64.
    label_shape : tuple of int
        Shape of one label: ``()`` for class indices, ``sample_shape[1:]`` for masks.
    chunk_samples : int, optional
        Samples per chunk; default: as many as fit in about 64 KiB (at least one).
    compression : {"gzip", "lzf", None}
        Compression filter (with the byte-shuffle filter); None stores raw chunks.
    compression_level : int, optional
        gzip level 0-9 (default 4).
    attrs : mapping, optional
        Root attributes, e.g. ``{"classes": ["cat", "dog"]}``.
    x_name, y_name : str
        Dataset names.

    Examples
    --------
    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "parts.h5")
    >>> with HDF5Writer(path, (1, 4), np.float32) as w:
    ...     w.append(np.zeros((3, 1, 4)), np.array([0, 1, 2]))
    ...     w.append(np.ones((2, 1, 4)), np.array([3, 4]))
    >>> len(HDF5Dataset(path))
    5
    """

    def __init__(self, path: str | os.PathLike, sample_shape: Sequence[int], dtype, *,
                 label_dtype=np.int64, label_shape: Sequence[int] = (),
                 chunk_samples: int | None = None, compression: str | None = "gzip",
                 compression_level: int | None = None,
                 attrs: Mapping[str, Any] | None = None, x_name: str = "x",
                 y_name: str = "y") -> None:
        op = "HDF5Writer"
        self.sample_shape = tuple(int(s) for s in sample_shape)
        self.label_shape = tuple(int(s) for s in label_shape)
        dtype = np.dtype(dtype)
        filters = _filters(compression, compression_level, op)
        cx = _chunk_samples(chunk_samples, self.sample_shape, dtype, op)
        self.path = Path(path)
        self._file = h5py.File(self.path, "w")
        try:
            self._x = self._file.create_dataset(
                x_name, shape=(0, *self.sample_shape), maxshape=(None, *self.sample_shape),
                dtype=dtype, chunks=(cx, *self.sample_shape), **filters)
            self._y = None
            if label_dtype is not None:
                ldt = np.dtype(label_dtype)
                cy = (cx if self.label_shape else
                      _chunk_samples(None, self.label_shape, ldt, op))
                self._y = self._file.create_dataset(
                    y_name, shape=(0, *self.label_shape), maxshape=(None, *self.label_shape),
                    dtype=ldt, chunks=(cy, *self.label_shape), **filters)
            _write_attrs(self._file, attrs)
        except Exception:
            self._file.close()
            raise
        self._n = 0

    def __len__(self) -> int:
        return self._n

    def append(self, x_batch, y_batch=None) -> None:
        """Append samples ``(B, *sample_shape)`` and, when the file has labels, their
        labels ``(B, *label_shape)`` (cast to the stored dtypes)."""
        op = "HDF5Writer.append"
        if self._file is None or not self._file.id.valid:
            raise fail(op, "the writer is closed")
        x_batch = np.asarray(x_batch)
        if x_batch.shape[1:] != self.sample_shape:
            raise fail(op, f"`x_batch` must have shape (B, *{self.sample_shape}), "
                       f"got {x_batch.shape}")
        b = x_batch.shape[0]
        if self._y is not None:
            if y_batch is None:
                raise fail(op, "`y_batch` is required: the file was created with labels")
            y_batch = np.asarray(y_batch)
            if y_batch.shape != (b, *self.label_shape):
                raise fail(op, f"`y_batch` must have shape {(b, *self.label_shape)}, "
                           f"got {y_batch.shape}")
        elif y_batch is not None:
            raise fail(op, "`y_batch` given but the writer was created with label_dtype=None")
        n = self._n
        self._x.resize(n + b, axis=0)
        self._x[n:n + b] = x_batch
        if self._y is not None:
            self._y.resize(n + b, axis=0)
            self._y[n:n + b] = y_batch
        self._n = n + b

    @property
    def attrs(self) -> h5py.AttributeManager:
        """The file's root attributes (writable until closed)."""
        return self._file.attrs

    def close(self) -> None:
        """Flush and close the file."""
        if self._file is not None and self._file.id.valid:
            self._file.close()

    def __enter__(self) -> HDF5Writer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def write_hdf5(path: str | os.PathLike, x, y=None, *, chunk_samples: int | None = None,
               compression: str | None = "gzip", compression_level: int | None = None,
               attrs: Mapping[str, Any] | None = None, x_name: str = "x",
               y_name: str = "y") -> Path:
    """Write arrays (and labels) to an HDF5 file in the layout :class:`HDF5Dataset` reads.

    Parameters
    ----------
    path : str or Path
        The file to create (overwritten).
    x : ndarray, shape (N, *sample_shape)
        Samples, stored with their dtype.
    y : ndarray, shape (N, ...), optional
        Labels, stored with their dtype.
    chunk_samples : int, optional
        Samples per chunk (chunks hold whole samples); default: about 64 KiB of
        ``x`` (see :data:`CHUNK_BYTES`).
    compression : {"gzip", "lzf", None}
        Compression filter (with the byte-shuffle filter); default gzip level 4.
    compression_level : int, optional
        gzip level 0-9.
    attrs : mapping, optional
        Root attributes (lists of strings are stored as string arrays).
    x_name, y_name : str
        Dataset names.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    ValueError
        If ``y`` has a different number of samples, or a bad chunking/compression.
    """
    op = "write_hdf5"
    x = np.asarray(x)
    if x.ndim < 1:
        raise fail(op, f"`x` must have a sample axis, got shape {x.shape}")
    if y is not None:
        y = np.asarray(y)
        if y.ndim < 1 or y.shape[0] != x.shape[0]:
            raise fail(op, f"`y` must have {x.shape[0]} samples like `x`, got shape {y.shape}")
    filters = _filters(compression, compression_level, op)
    cx = min(_chunk_samples(chunk_samples, x.shape[1:], x.dtype, op), max(1, x.shape[0]))
    path = Path(path)
    with h5py.File(path, "w") as f:
        f.create_dataset(x_name, data=x, chunks=(cx, *x.shape[1:]), **filters)
        if y is not None:
            cy = cx if y.ndim > 1 else min(_chunk_samples(None, (), y.dtype, op),
                                           max(1, y.shape[0]))
            f.create_dataset(y_name, data=y, chunks=(cy, *y.shape[1:]), **filters)
        _write_attrs(f, attrs)
    return path


def precompute(source, transform: Transform, path: str | os.PathLike, *,
               batch_size: int = 256, dtype=np.float32, compression: str | None = "gzip",
               attrs: Mapping[str, Any] | None = None) -> HDF5Dataset:
    """Apply ``transform`` to every sample of ``source`` and store the result as HDF5.

    Parameters
    ----------
    source : dataset or ndarray
        A dataset (the protocol above; its own transform is applied first) or an array
        ``(N, ...)`` of samples without labels.
    transform : callable
        Applied batch by batch, ``(B, ...) -> (B, *out_shape)``.
    path : str or Path
        The file to create.
    batch_size : int
        Samples per batch.
    dtype : dtype
        Stored dtype of the transformed samples.
    compression : {"gzip", "lzf", None}
        As :func:`write_hdf5`.
    attrs : mapping, optional
        Root attributes; by default those of ``source`` when it is an HDF5Dataset.

    Returns
    -------
    HDF5Dataset
        Over the new file, without transform.
    """
    op = "precompute"
    if not callable(transform):
        raise fail(op, f"`transform` must be callable, got {transform!r}", TypeError)
    if not isinstance(batch_size, numbers.Integral) or batch_size < 1:
        raise fail(op, f"`batch_size` must be a positive int, got {batch_size!r}")
    if isinstance(source, np.ndarray):
        source = ArrayDataset(source)
    if not (hasattr(source, "__len__") and hasattr(source, "__getitem__")):
        raise fail(op, f"`source` must be a dataset or an array, got {type(source).__name__}",
                   TypeError)
    if attrs is None and isinstance(source, HDF5Dataset):
        attrs = source.attrs
    n = len(source)
    writer = None
    try:
        for start in range(0, n, batch_size):
            xb, yb = source[np.arange(start, min(n, start + batch_size))]
            tb = np.asarray(transform(xb))
            if writer is None:
                writer = HDF5Writer(
                    path, tb.shape[1:], dtype,
                    label_dtype=None if yb is None else yb.dtype,
                    label_shape=() if yb is None else yb.shape[1:],
                    compression=compression, attrs=attrs)
            writer.append(tb, yb)
    finally:
        if writer is not None:
            writer.close()
    if writer is None:
        raise fail(op, "`source` is empty")
    return HDF5Dataset(path)


# --------------------------------------------------------------------------- splits


def _fraction(fraction, op: str) -> float:
    if not isinstance(fraction, numbers.Real) or not 0.0 < float(fraction) < 1.0:
        raise fail(op, f"`fraction` (the validation part) must be in (0, 1), got {fraction!r}")
    return float(fraction)


def random_split(ds, fraction: float, *, seed: int = 0):
    """Split a dataset at random into disjoint ``(train, val)`` subsets.

    Parameters
    ----------
    ds : dataset
        Anything with ``__len__`` and ``subset``.
    fraction : float in (0, 1)
        Part of the samples that goes to ``val`` (rounded, at least one sample on each
        side).
    seed : int
        Seed of the permutation.

    Returns
    -------
    train, val : datasets
        ``ds.subset`` of the sorted train and validation indices.
    """
    op = "random_split"
    fraction = _fraction(fraction, op)
    n = len(ds)
    if n < 2:
        raise fail(op, f"`ds` must have at least 2 samples to split, got {n}")
    n_val = min(n - 1, max(1, round(fraction * n)))
    perm = np.random.default_rng(seed).permutation(n)
    return ds.subset(np.sort(perm[n_val:])), ds.subset(np.sort(perm[:n_val]))


def group_split(groups, fraction: float, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Split sample indices so that no group has samples on both sides.

    Whole groups are taken in random order into the validation side until it holds at
    least ``fraction`` of the samples (e.g. the windows cut from one audio file, or the
    recordings of one prompt, stay together).

    Parameters
    ----------
    groups : array-like, shape (N,)
        Group of each sample (ints, strings, anything ``np.unique`` sorts).
    fraction : float in (0, 1)
        Target part of the samples in the validation side.
    seed : int
        Seed of the group order.

    Returns
    -------
    train_idx, val_idx : ndarray of int64
        Sorted sample indices; use ``ds.subset(train_idx)``. Boolean masks are
        ``np.isin(np.arange(N), val_idx)``.

    Raises
    ------
    ValueError
        If there are fewer than two groups or ``fraction`` is outside (0, 1).
    """
    op = "group_split"
    fraction = _fraction(fraction, op)
    groups = np.asarray(groups)
    if groups.ndim != 1:
        raise fail(op, f"`groups` must be 1-D (one group per sample), got shape {groups.shape}")
    uniq, inverse, counts = np.unique(groups, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    if uniq.size < 2:
        raise fail(op, f"`groups` must hold at least 2 distinct groups, got {uniq.size}")
    order = np.random.default_rng(seed).permutation(uniq.size)
    target = fraction * groups.size
    taken = np.cumsum(counts[order])
    # groups in order until the target is reached; at least one, never all
    k = int(np.searchsorted(taken, target, side="left")) + 1
    k = min(max(k, 1), uniq.size - 1)
    is_val = np.zeros(uniq.size, dtype=bool)
    is_val[order[:k]] = True
    mask = is_val[inverse]
    return np.flatnonzero(~mask).astype(np.int64), np.flatnonzero(mask).astype(np.int64)


# --------------------------------------------------------------------------- transforms


class Rescale:
    """Transform ``x * scale + offset`` as float32 (e.g. ``Rescale(1 / 255)`` for bytes).

    A class rather than a lambda so that datasets using it can be pickled.
    """

    def __init__(self, scale: float = 1.0, offset: float = 0.0) -> None:
        self.scale, self.offset = float(scale), float(offset)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        out = np.asarray(x, dtype=np.float32) * np.float32(self.scale)
        if self.offset:
            out += np.float32(self.offset)
        return out

    def output_shape(self, sample_shape: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(sample_shape)

    def __repr__(self) -> str:
        return f"Rescale(scale={self.scale!r}, offset={self.offset!r})"


def hz_to_mel(f, *, htk: bool = True):
    """Frequency in Hz to mel.

    HTK: ``2595 log10(1 + f / 700)``. Slaney (``htk=False``, the Auditory Toolbox's and
    librosa's default): linear ``3 f / 200`` below 1 kHz, logarithmic above
    (``15 + 27 ln(f / 1000) / ln(6.4)``).
    """
    f = np.asarray(f, dtype=np.float64)
    if htk:
        return 2595.0 * np.log10(1.0 + f / 700.0)
    lin = 3.0 * f / 200.0
    logstep = np.log(6.4) / 27.0
    return np.where(f >= 1000.0, 15.0 + np.log(np.maximum(f, 1e-10) / 1000.0) / logstep, lin)


def mel_to_hz(m, *, htk: bool = True):
    """Inverse of :func:`hz_to_mel`."""
    m = np.asarray(m, dtype=np.float64)
    if htk:
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)
    logstep = np.log(6.4) / 27.0
    return np.where(m >= 15.0, 1000.0 * np.exp(logstep * (m - 15.0)), 200.0 * m / 3.0)


def mel_filterbank(sample_rate: float, n_fft: int, n_mels: int, fmin: float = 0.0,
                   fmax: float | None = None, *, htk: bool = True,
                   norm: str | None = None) -> np.ndarray:
    """Triangular mel filterbank mapping an STFT's magnitudes to mel bands.

    ``n_mels + 2`` edge frequencies are spaced evenly on the mel scale between ``fmin``
    and ``fmax``; band ``m`` is a triangle rising from edge ``m`` to 1 at edge ``m + 1``
    and falling to 0 at edge ``m + 2``, evaluated at the FFT bin frequencies
    ``k * sample_rate / n_fft``. Between the first and last centres the (unnormalised)
    triangles sum to one at every bin.

    Parameters
    ----------
    sample_rate : float
        Sampling rate in Hz.
    n_fft : int
        FFT length; the STFT has ``n_fft // 2 + 1`` frequency bins.
    n_mels : int
        Number of bands.
    fmin, fmax : float
        Frequency range in Hz; ``fmax`` defaults to ``sample_rate / 2``.
    htk : bool
        HTK mel formula (default) or Slaney's (see :func:`hz_to_mel`).
    norm : {None, "slaney"}
        None: triangles of height 1. ``"slaney"``: each triangle scaled by
        ``2 / (f[m + 2] - f[m])`` so its area (in Hz) is one.

    Returns
    -------
    ndarray, shape (n_mels, n_fft // 2 + 1), float64
        Apply as ``weights @ magnitude``.
    """
    op = "mel_filterbank"
    if not isinstance(n_fft, numbers.Integral) or n_fft < 2:
        raise fail(op, f"`n_fft` must be an int >= 2, got {n_fft!r}")
    if not isinstance(n_mels, numbers.Integral) or n_mels < 1:
        raise fail(op, f"`n_mels` must be a positive int, got {n_mels!r}")
    if not sample_rate > 0:
        raise fail(op, f"`sample_rate` must be > 0, got {sample_rate!r}")
    fmax = sample_rate / 2.0 if fmax is None else float(fmax)
    if not 0.0 <= fmin < fmax <= sample_rate / 2.0:
        raise fail(op, f"need 0 <= fmin < fmax <= sample_rate / 2 = {sample_rate / 2}, "
                   f"got fmin={fmin!r}, fmax={fmax!r}")
    if norm not in (None, "slaney"):
        raise fail(op, f"`norm` must be None or 'slaney', got {norm!r}")
    freqs = np.fft.rfftfreq(int(n_fft), 1.0 / sample_rate)
    edges = mel_to_hz(np.linspace(hz_to_mel(fmin, htk=htk), hz_to_mel(fmax, htk=htk),
                                  int(n_mels) + 2), htk=htk)
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    up = (freqs[None, :] - lo) / (mid - lo)
    down = (hi - freqs[None, :]) / (hi - mid)
    weights = np.maximum(0.0, np.minimum(up, down))
    if norm == "slaney":
        weights *= 2.0 / (hi - lo)
    empty = ~weights.any(axis=1)
    if empty.any():
        warnings.warn(f"{op}: {int(empty.sum())} of {n_mels} mel bands contain no FFT bin "
                      f"(n_mels={n_mels} is too many for n_fft={n_fft}); they are all zero",
                      stacklevel=2)
    return weights


class Spectrogram:
    """Log-magnitude (mel) spectrogram of waveforms, computed with ``scipy.signal.stft``.

    Frames are Hann-windowed segments of ``n_fft`` samples every ``hop_length`` samples,
    centred (the signal is zero-padded by ``n_fft // 2`` at both ends, SciPy's
    ``boundary="zeros", padded=True``), scaled as SciPy's default (``scaling="spectrum"``:
    a sine of amplitude ``A`` peaks at about ``A / 2``). The magnitude is optionally
    mapped to ``n_mels`` mel bands (:func:`mel_filterbank`), then ``log(eps + .)``.

    Parameters
    ----------
    sample_rate : float
        Sampling rate in Hz.
    n_fft : int
        Segment (and FFT) length; ``n_fft // 2 + 1`` frequency bins.
    hop_length : int, optional
        Samples between frames; default ``n_fft // 2``.
    n_mels : int, optional
        Number of mel bands; None keeps the linear frequency bins.
    fmin, fmax : float
        Mel filterbank range in Hz (``fmax`` defaults to ``sample_rate / 2``).
    log : bool
        Return ``log(eps + magnitude)`` (default) or the magnitude.
    eps : float
        Floor added before the logarithm.

    Call
    ----
    ``spec(x)`` with ``x`` of shape ``(N, T)`` or ``(N, C, T)`` returns float32
    ``(N, C, F, frames)`` (``C = 1`` for 2-D input), ``F = n_mels or n_fft // 2 + 1``
    from low to high frequency. Usable as a dataset ``transform``.

    Examples
    --------
    >>> spec = Spectrogram(8000, n_fft=256, n_mels=40)
    >>> spec(np.zeros((2, 8000), np.float32)).shape
    (2, 1, 40, 64)
    >>> spec.output_shape((1, 8000))
    (1, 40, 64)
    """

    def __init__(self, sample_rate: float, n_fft: int = 256, hop_length: int | None = None,
                 n_mels: int | None = None, fmin: float = 0.0, fmax: float | None = None,
                 log: bool = True, eps: float = 1e-6) -> None:
        op = "Spectrogram"
        if not isinstance(n_fft, numbers.Integral) or n_fft < 2:
            raise fail(op, f"`n_fft` must be an int >= 2, got {n_fft!r}")
        hop = n_fft // 2 if hop_length is None else hop_length
        if not isinstance(hop, numbers.Integral) or not 1 <= hop <= n_fft:
            raise fail(op, f"`hop_length` must be an int in [1, n_fft={n_fft}], got {hop!r}")
        if not eps > 0:
            raise fail(op, f"`eps` must be > 0, got {eps!r}")
        self.sample_rate, self.n_fft, self.hop_length = float(sample_rate), int(n_fft), int(hop)
        self.n_mels, self.fmin, self.fmax = n_mels, float(fmin), fmax
        self.log, self.eps = bool(log), float(eps)
        self.mel = (None if n_mels is None else
                    mel_filterbank(sample_rate, n_fft, n_mels, fmin, fmax).astype(np.float32))

    @property
    def n_freqs(self) -> int:
        """Number of frequency rows ``F``."""
        return self.n_fft // 2 + 1 if self.n_mels is None else int(self.n_mels)

    @property
    def frequencies(self) -> np.ndarray:
        """Frequency of each row in Hz: FFT bin frequencies, or mel band centres."""
        if self.n_mels is None:
            return np.fft.rfftfreq(self.n_fft, 1.0 / self.sample_rate)
        fmax = self.sample_rate / 2 if self.fmax is None else self.fmax
        return mel_to_hz(np.linspace(hz_to_mel(self.fmin), hz_to_mel(fmax),
                                     self.n_mels + 2))[1:-1]

    def n_frames(self, length: int) -> int:
        """Number of frames for a signal of ``length`` samples."""
        half = self.n_fft // 2
        padded = length + 2 * half
        extra = (-(padded - self.n_fft) % self.hop_length) % self.n_fft
        return (padded + extra - self.n_fft) // self.hop_length + 1

    def output_shape(self, sample_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Shape of one transformed sample, from ``(T,)`` or ``(C, T)``."""
        if len(sample_shape) == 1:
            return (1, self.n_freqs, self.n_frames(sample_shape[0]))
        if len(sample_shape) == 2:
            return (sample_shape[0], self.n_freqs, self.n_frames(sample_shape[1]))
        raise fail("Spectrogram.output_shape",
                   f"a waveform sample is (T,) or (C, T), got {tuple(sample_shape)}")

    def __call__(self, x) -> np.ndarray:
        x = np.asarray(x)
        if x.ndim == 2:
            x = x[:, None, :]
        elif x.ndim != 3:
            raise fail("Spectrogram", f"`x` must be (N, T) or (N, C, T) waveforms, got "
                       f"shape {x.shape}")
        if np.iscomplexobj(x):
            raise fail("Spectrogram", "`x` must be real", TypeError)
        if x.shape[-1] < 1:
            raise fail("Spectrogram", f"`x` must hold at least one sample, got shape {x.shape}")
        # SciPy's boundary="zeros" padding done here: scipy shrinks `nperseg` (with a
        # warning) for inputs shorter than it, which would change the number of bins
        half = self.n_fft // 2
        x = np.pad(x.astype(np.float32, copy=False), ((0, 0), (0, 0), (half, half)))
        _, _, z = scipy.signal.stft(x, fs=self.sample_rate, window="hann",
                                    nperseg=self.n_fft, noverlap=self.n_fft - self.hop_length,
                                    boundary=None, padded=True, axis=-1)
        mag = np.abs(z).astype(np.float32)  # (N, C, n_fft//2+1, frames)
        if self.mel is not None:
            mag = np.einsum("mf,ncft->ncmt", self.mel, mag, optimize=True)
        if self.log:
            mag = np.log(mag + np.float32(self.eps))
        return np.ascontiguousarray(mag, dtype=np.float32)

    def __repr__(self) -> str:
        return (f"Spectrogram(sample_rate={self.sample_rate:g}, n_fft={self.n_fft}, "
                f"hop_length={self.hop_length}, n_mels={self.n_mels}, fmin={self.fmin:g}, "
                f"fmax={self.fmax}, log={self.log}, eps={self.eps:g})")
