"""The training loop: mini-batches, validation, best model, early stopping, checkpoints.

Datasets follow the protocol of :mod:`gridconv.data`: ``len(ds)``, ``ds[indices] ->
(x, y)`` for a 1-D array of sample indices, ``ds.subset(indices)``. A pair of arrays
``(x, y)`` is accepted anywhere a dataset is and wrapped in an
:class:`~gridconv.data.ArrayDataset`.

On a CUDA device (``device="cuda"``, or a model already moved with ``to_device()``) each
mini-batch is copied to the device once (inputs in the model's dtype, integer labels as
int64), and everything between the layers, the loss gradient and the optimiser step stay
there; only the loss value and the metrics come back. Checkpoints hold NumPy copies.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence

import numpy as np

from .._params import fail
from .._progress import Progress
from . import _backend as B
from . import io
from .losses import METRICS
from .module import Module
from .optim import SGD, Adam, Optimizer


class History:
    """Per-epoch records: ``loss``, ``val_loss``, each metric and ``val_<metric>``,
    ``lr``, ``time`` (seconds) and ``samples_per_s``; indexable like a dict of lists."""

    def __init__(self, records: dict | None = None):
        self.records: dict[str, list] = {k: list(v) for k, v in (records or {}).items()}

    def append(self, **values) -> None:
        n = len(self)
        for k, v in values.items():
            self.records.setdefault(k, [math.nan] * n).append(float(v))
        for v in self.records.values():
            if len(v) == n:
                v.append(math.nan)

    def __len__(self) -> int:
        return max((len(v) for v in self.records.values()), default=0)

    def __getitem__(self, key: str) -> list:
        return self.records[key]

    def __contains__(self, key: str) -> bool:
        return key in self.records

    def as_dict(self) -> dict:
        return {k: list(v) for k, v in self.records.items()}

    @property
    def best_epoch(self) -> int | None:
        """Index of the epoch with the lowest validation loss (or training loss)."""
        key = "val_loss" if "val_loss" in self.records else "loss"
        vals = self.records.get(key, [])
        finite = [(v, i) for i, v in enumerate(vals) if np.isfinite(v)]
        return min(finite)[1] if finite else None

    def __repr__(self) -> str:
        return f"History({len(self)} epochs, keys={sorted(self.records)})"


def _as_dataset(data, op: str, name: str):
    if data is None:
        return None
    if isinstance(data, tuple) and len(data) == 2:
        from ..data import ArrayDataset

        return ArrayDataset(*data)
    if not (hasattr(data, "__len__") and hasattr(data, "__getitem__")):
        raise TypeError(f"{op}: `{name}` must be a dataset (gridconv.data) or an (x, y) "
                        f"pair of arrays, got {type(data).__name__}")
    return data


def _metric_fns(op: str, metrics) -> dict[str, Callable]:
    if isinstance(metrics, dict):
        return dict(metrics)
    out = {}
    for m in metrics or ():
        if callable(m):
            out[getattr(m, "__name__", "metric")] = m
        elif m in METRICS:
            out[m] = METRICS[m]
        else:
            raise fail(op, f"unknown metric {m!r}; use one of {sorted(METRICS)} or a "
                           f"callable(output, target)")
    return out


def _placement(op: str, model: Module, device: str | None) -> str:
    """Where to run: ``device`` (moving the model there) or, when None, where the model
    is."""
    if device is None:
        return model.device
    if device not in (B.CPU, B.CUDA):
        raise fail(op, f"`device` must be None, 'cpu' or 'cuda', got {device!r}")
    if device == B.CUDA:
        model.to_device()
    else:
        model.to_host()
    return device


def _batch_to(where: str, model: Module, x, y=None):
    """A mini-batch moved to ``where`` once: float inputs in the model's dtype, integer
    labels as int64."""
    if where != B.CUDA:
        return x, y
    xa = B.as_array(x)
    x = B.to_device(xa, model.dtype if np.dtype(xa.dtype).kind in "fc" else None)
    if y is not None:
        ya = B.as_array(y)
        y = B.to_device(ya, np.int64 if np.dtype(ya.dtype).kind in "iub" and
                        np.dtype(ya.dtype) != np.bool_ else None)
    return x, y


def _batches(n: int, batch_size: int, rng: np.random.Generator | None):
    order = rng.permutation(n) if rng is not None else np.arange(n)
    for start in range(0, n, batch_size):
        yield order[start:start + batch_size]


def evaluate(model: Module, data, *, loss=None, metrics: Sequence = ("accuracy",),
             batch_size: int = 64, progress: bool = False, device: str | None = None
             ) -> dict:
    """Mean loss and metrics of ``model`` in eval mode over a dataset.

    ``device``: None (where the model is), ``"cpu"`` or ``"cuda"`` (the model is moved
    there). Returns ``{"loss": ..., "<metric>": ...}`` (means over samples,
    batch-weighted).
    """
    op = "evaluate"
    where = _placement(op, model, device)
    ds = _as_dataset(data, op, "data")
    fns = _metric_fns(op, metrics)
    was_training = model.training
    model.eval()
    sums = dict.fromkeys(["loss", *fns], 0.0)
    n = len(ds)
    with Progress(n, "eval", "samples", enabled=progress) as bar:
        for idx in _batches(n, batch_size, None):
            x, y = _batch_to(where, model, *ds[idx])
            out = model.forward(x)
            w = len(idx)
            if loss is not None:
                sums["loss"] += loss(out, y)[0] * w
            for k, f in fns.items():
                sums[k] += f(out, y) * w
            bar.update(w)
    model.train(was_training)
    res = {k: v / max(n, 1) for k, v in sums.items()}
    if loss is None:
        res.pop("loss")
    return res


def predict(model: Module, data, *, batch_size: int = 64, progress: bool = False,
            device: str | None = None) -> np.ndarray:
    """The model's outputs in eval mode for an array ``(N, ...)`` (host or device) or a
    dataset, as one NumPy array.

    ``device``: None (where the model is), ``"cpu"`` or ``"cuda"`` (the model is moved
    there); each batch's output is copied back to the host.
    """
    where = _placement("predict", model, device)
    was_training = model.training
    model.eval()
    if isinstance(data, np.ndarray):
        n = data.shape[0]

        def get(i):
            return data[i]
    elif B.is_device(data):
        n = data.shape[0]

        def get(i):  # device arrays take slices, not index arrays (the order is plain)
            return data[int(i[0]):int(i[-1]) + 1]
    else:
        ds = _as_dataset(data, "predict", "data")
        n = len(ds)

        def get(i):
            return ds[i][0]
    outs = []
    with Progress(n, "predict", "samples", enabled=progress) as bar:
        for idx in _batches(n, batch_size, None):
            x, _ = _batch_to(where, model, get(idx))
            outs.append(B.to_host(model.forward(x)))
            bar.update(len(idx))
    model.train(was_training)
    return np.concatenate(outs) if outs else np.empty((0,))


def fit(model: Module, train, *, loss, optimizer: Optimizer | str = "adam",
        lr: float | None = None, epochs: int = 10, batch_size: int = 32, val=None,
        val_split: float | None = None, metrics: Sequence = ("accuracy",),
        shuffle: bool = True, seed: int = 0, early_stopping: int | None = None,
        restore_best: bool = True, checkpoint: str | os.PathLike | None = None,
        resume: bool = False, lr_schedule: Callable[[int], float] | str | None = None,
        weight_decay: float = 0.0, meta: dict | None = None, progress: bool = True,
        verbose: bool = True, device: str | None = None) -> History:
    """Train ``model`` with mini-batches; returns the :class:`History`.

    Parameters
    ----------
    model : Module
    train : dataset or (x, y)
    loss : callable ``(output, target) -> (value, grad)`` (see :mod:`gridconv.nn.losses`)
    optimizer : Optimizer, "adam" or "sgd"
        A name builds one with ``lr`` (default 1e-3 for Adam, 0.01 for SGD with momentum
        0.9) and ``weight_decay``.
    epochs, batch_size : int
    val : dataset or (x, y), optional
        Validation data; or ``val_split``, a fraction of ``train`` held out (seeded).
    metrics : names ("accuracy", "dice") or callables ``(output, target) -> float``
    shuffle, seed : reshuffle each epoch from ``seed`` (reproducible, also when resumed)
    early_stopping : int, optional
        Stop after this many epochs without a lower validation loss.
    restore_best : bool
        Put the weights of the best epoch (lowest validation loss) back at the end.
    checkpoint : path, optional
        HDF5 file written after every epoch (model, optimiser, history, best weights);
        with ``resume=True`` training continues from it when it exists.
    lr_schedule : callable ``epoch -> lr``, or "cosine" (from ``lr`` to 0 over ``epochs``)
    meta : dict, optional
        Extra JSON-ready information stored in the checkpoint (class names...).
    progress, verbose : bool
        A progress bar per epoch (loss, throughput) and a summary line per epoch.
    device : None, "cpu" or "cuda"
        Where to train: None trains where the model is (see ``Module.to_device``); a
        name moves the model there first (in place; it stays there afterwards). On
        ``"cuda"`` each mini-batch is copied to the device once and everything between
        the layers stays there.
    """
    op = "fit"
    if not isinstance(model, Module):
        raise TypeError(f"{op}: `model` must be a gridconv.nn Module, got "
                        f"{type(model).__name__}")
    where = _placement(op, model, device)
    if epochs < 0 or batch_size < 1:
        raise fail(op, f"`epochs` must be >= 0 and `batch_size` >= 1, got {epochs} and "
                       f"{batch_size}")
    ds = _as_dataset(train, op, "train")
    val_ds = _as_dataset(val, op, "val")
    if val_split is not None:
        if val_ds is not None:
            raise fail(op, "give either `val` or `val_split`, not both")
        if not 0 < val_split < 1:
            raise fail(op, f"`val_split` must be in (0, 1), got {val_split}")
        order = np.random.default_rng(seed).permutation(len(ds))
        n_val = max(1, int(round(val_split * len(ds))))
        val_ds, ds = ds.subset(np.sort(order[:n_val])), ds.subset(np.sort(order[n_val:]))
    if len(ds) == 0:
        raise fail(op, "the training set is empty")
    fns = _metric_fns(op, metrics)

    if isinstance(optimizer, str):
        name = optimizer.lower()
        if name == "adam":
            optimizer = Adam(model, lr=lr or 1e-3, weight_decay=weight_decay)
        elif name == "sgd":
            optimizer = SGD(model, lr=lr or 0.01, momentum=0.9, weight_decay=weight_decay)
        else:
            raise fail(op, f"`optimizer` must be 'adam', 'sgd' or an Optimizer, got {name!r}")
    base_lr = optimizer.lr
    if lr_schedule == "cosine":
        def lr_schedule(epoch):
            return 0.5 * base_lr * (1 + math.cos(math.pi * epoch / max(epochs, 1)))
    elif lr_schedule is not None and not callable(lr_schedule):
        raise fail(op, f"`lr_schedule` must be a callable or 'cosine', got {lr_schedule!r}")

    history, start, best_state, best_loss, stale = History(), 0, None, math.inf, 0
    if resume and checkpoint is not None and os.path.exists(checkpoint):
        ck = io.load_checkpoint(checkpoint)
        model.load_state(ck["model"].state())
        if ck["optimizer_state"] is not None:
            optimizer.load_state(ck["optimizer_state"])
        history = History(ck["history"])
        start = len(history)
        best_state = ck["best_state"]
        key = "val_loss" if "val_loss" in history else "loss"
        finite = [v for v in history.records.get(key, []) if np.isfinite(v)]
        best_loss = min(finite, default=math.inf)
        b = history.best_epoch
        stale = 0 if b is None else start - 1 - b
        if verbose:
            print(f"resumed from {os.fspath(checkpoint)!r} after epoch {start}")

    for epoch in range(start, epochs):
        if lr_schedule is not None:
            optimizer.lr = float(lr_schedule(epoch))
        model.train()
        rng = np.random.default_rng([seed, epoch]) if shuffle else None
        t0 = time.perf_counter()
        sums = dict.fromkeys(["loss", *fns], 0.0)
        seen = 0
        with Progress(len(ds), f"epoch {epoch + 1}/{epochs}", "samples",
                      enabled=progress) as bar:
            for idx in _batches(len(ds), batch_size, rng):
                x, y = _batch_to(where, model, *ds[idx])
                out = model.forward(x)
                value, grad = loss(out, y)
                if not np.isfinite(value):
                    raise FloatingPointError(
                        f"{op}: the loss became {value} at epoch {epoch + 1}; lower the "
                        f"learning rate (now {optimizer.lr:g})")
                optimizer.zero_grad()
                model.backward(grad, input_grad=False)
                optimizer.step()
                w = len(idx)
                seen += w
                sums["loss"] += value * w
                for k, f in fns.items():
                    sums[k] += f(out, y) * w
                bar.update(w, loss=sums["loss"] / seen)
        elapsed = time.perf_counter() - t0
        record = {k: v / seen for k, v in sums.items()}
        record.update(lr=optimizer.lr, time=elapsed, samples_per_s=seen / elapsed)
        if val_ds is not None:
            res = evaluate(model, val_ds, loss=loss, metrics=fns,
                           batch_size=max(batch_size, 64))
            record.update({f"val_{k}": v for k, v in res.items()})
            watched = record["val_loss"]
        else:
            watched = record["loss"]
        history.append(**record)
        if watched < best_loss:
            best_loss, best_state, stale = watched, model.state(), 0
        else:
            stale += 1
        if verbose:
            shown = " ".join(f"{k}={v:.4g}" for k, v in record.items()
                             if k not in ("lr", "time", "samples_per_s"))
            print(f"epoch {epoch + 1}/{epochs}: {shown} ({elapsed:.1f} s, "
                  f"{record['samples_per_s']:.0f} samples/s)", flush=True)
        if checkpoint is not None:
            io.save(checkpoint, model, optimizer=optimizer, history=history,
                    meta={**(meta or {}), "epoch": epoch + 1}, best_state=best_state)
        if early_stopping is not None and stale >= early_stopping:
            if verbose:
                print(f"early stopping: no better validation loss for {stale} epochs")
            break

    if restore_best and best_state is not None:
        model.load_state(best_state)
    model.eval()
    return history
