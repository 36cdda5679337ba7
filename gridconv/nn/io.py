"""Saving and loading models and training checkpoints in HDF5.

Layout of a file written by :func:`save`::

    /                   attrs: format, model (JSON configuration), history, meta (JSON)
    /params/<name>      each parameter, by dotted name ("3.0.weight")
    /buffers/<name>     running statistics of BatchNorm
    /optimizer/...      optimiser moments and counters (attrs: class), when given
    /best/params/...    the best weights so far (checkpoints written during training)

:func:`load` rebuilds the model from its configuration alone (no code of the caller's is
needed) and fills in the weights.
"""

from __future__ import annotations

import json
import os

import h5py
import numpy as np

from .._params import fail
from .module import Module, deserialize, serialize

FORMAT = "gridconv.nn/1"


def _write_group(f: h5py.File, prefix: str, state: dict) -> None:
    for key, value in state.items():
        f.create_dataset(f"{prefix}{key}", data=np.asarray(value))


def _read_group(group) -> dict:
    out = {}

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset):
            out[name] = obj[()]

    group.visititems(visit)
    return out


def save(path: str | os.PathLike, model: Module, *, optimizer=None, history=None,
         meta: dict | None = None, best_state: dict | None = None) -> None:
    """Write ``model`` (configuration and weights) to an HDF5 file, atomically.

    A model on a CUDA device is written from NumPy copies of its weights: the file is the
    same as for the model on the host.

    Parameters
    ----------
    path : str or path
    model : Module
    optimizer : Optimizer, optional
        Its moments are stored so that training can resume.
    history : History or dict, optional
    meta : dict, optional
        JSON-ready extras (class names, input shape, epoch...).
    best_state : dict, optional
        ``model.state()`` of the best epoch so far.
    """
    if not isinstance(model, Module):
        raise TypeError(f"save: `model` must be a gridconv.nn Module, got "
                        f"{type(model).__name__}")
    path = os.fspath(path)
    tmp = path + ".tmp"
    with h5py.File(tmp, "w") as f:
        f.attrs["format"] = FORMAT
        f.attrs["model"] = json.dumps(serialize(model))
        f.attrs["meta"] = json.dumps(meta or {})
        if history is not None:
            h = history.as_dict() if hasattr(history, "as_dict") else dict(history)
            f.attrs["history"] = json.dumps(h)
        _write_group(f, "", model.state())
        if optimizer is not None:
            g = f.create_group("optimizer")
            g.attrs["class"] = type(optimizer).__name__
            _write_group(f, "optimizer/", optimizer.state())
        if best_state is not None:
            _write_group(f, "best/", best_state)
    os.replace(tmp, path)  # a crash mid-write never leaves a half-written checkpoint


def _open(path, op: str) -> h5py.File:
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{op}: no such file {path!r}")
    f = h5py.File(path, "r")
    if f.attrs.get("format") != FORMAT:
        f.close()
        raise fail(op, f"{path!r} is not a gridconv.nn model file (format "
                       f"{FORMAT!r} expected)")
    return f


def load(path: str | os.PathLike, *, best: bool = False, device: str | None = None
         ) -> Module:
    """Rebuild a model saved by :func:`save`.

    Parameters
    ----------
    path : str or path
    best : bool
        Take the best weights of a training checkpoint instead of the latest.
    device : None, "cpu" or "cuda"
        ``"cuda"`` moves the model to the CUDA device (:meth:`Module.to_device`); it is
        on the host otherwise.
    """
    if device not in (None, "cpu", "cuda"):
        raise fail("load", f"`device` must be None, 'cpu' or 'cuda', got {device!r}")
    with _open(path, "load") as f:
        model = deserialize(json.loads(f.attrs["model"]))
        if best and "best" in f:
            state = _read_group(f["best"])
        else:
            state = {}
            for top in ("params", "buffers"):
                if top in f:
                    state.update({f"{top}/{k}": v for k, v in _read_group(f[top]).items()})
    model.load_state(state)
    model.eval()
    if device == "cuda":
        model.to_device()
    return model


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Everything in a file: ``model``, ``optimizer_state`` (or None), ``optimizer_class``,
    ``history`` (dict or None), ``meta`` (dict) and ``best_state`` (or None)."""
    model = load(path)
    with _open(path, "load_checkpoint") as f:
        opt = _read_group(f["optimizer"]) if "optimizer" in f else None
        opt_class = f["optimizer"].attrs["class"] if "optimizer" in f else None
        best = _read_group(f["best"]) if "best" in f else None
        history = json.loads(f.attrs["history"]) if "history" in f.attrs else None
        meta = json.loads(f.attrs["meta"])
    return dict(model=model, optimizer_state=opt, optimizer_class=opt_class, history=history,
                meta=meta, best_state=best)
