"""Pictures: training curves, learned first-layer kernels, saliency maps (PNG files).

matplotlib is an optional extra (``gridconv[examples]``); it is imported here only, with
the non-interactive Agg backend.
"""

from __future__ import annotations

import math
import os

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_history(history, path: str | os.PathLike, title: str = "") -> None:
    """Loss (left) and metrics (right) per epoch, training and validation."""
    plt = _plt()
    h = history.as_dict() if hasattr(history, "as_dict") else dict(history)
    metrics = [k for k in h if k not in ("loss", "val_loss", "lr", "time", "samples_per_s")
               and not k.startswith("val_")]
    fig, axes = plt.subplots(1, 1 + bool(metrics), figsize=(5 + 4 * bool(metrics), 3.6),
                             squeeze=False)
    epochs = np.arange(1, len(h.get("loss", [])) + 1)
    ax = axes[0, 0]
    for key, style in (("loss", "-o"), ("val_loss", "--s")):
        if key in h:
            ax.plot(epochs, h[key], style, label=key.replace("_", " "))
    ax.set(xlabel="epoch", ylabel="loss", title=title or "loss")
    ax.legend()
    if metrics:
        ax = axes[0, 1]
        for m in metrics:
            ax.plot(epochs, h[m], "-o", label=m)
            if f"val_{m}" in h:
                ax.plot(epochs, h[f"val_{m}"], "--s", label=f"val {m}")
        ax.set(xlabel="epoch", title="metrics")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_kernels(weight: np.ndarray, path: str | os.PathLike, max_kernels: int = 64,
                 title: str = "learned kernels") -> None:
    """The first layer's kernels: curves for 1-D, images for 2-D (input channel 0, or RGB
    for 3 input channels), the middle slice for 3-D."""
    plt = _plt()
    w = np.asarray(weight)
    nd = w.ndim - 2
    n = min(w.shape[0], max_kernels)
    cols = min(n, 8)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.3 * cols, 1.3 * rows + 0.4),
                             squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if i >= n:
            continue
        k = w[i]
        if nd == 1:
            ax.set_axis_on()
            ax.plot(k[0], lw=0.8)
            ax.set_xticks([])
            ax.set_yticks([])
            continue
        if nd == 3:
            k = k[:, k.shape[1] // 2]
        if k.shape[0] == 3:
            img = np.moveaxis(k, 0, -1)
            img = (img - img.min()) / (np.ptp(img) or 1)
            ax.imshow(img, interpolation="nearest")
        else:
            lim = np.abs(k[0]).max() or 1
            ax.imshow(k[0], cmap="RdBu_r", vmin=-lim, vmax=lim, interpolation="nearest")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_saliency(images: np.ndarray, cams: np.ndarray, path: str | os.PathLike,
                  titles=None, title: str = "Grad-CAM") -> None:
    """Each image (2-D, or the middle slice of 3-D, channel 0) with its Grad-CAM map over
    it; 1-D signals are drawn as curves with the map as a shaded band."""
    plt = _plt()
    images, cams = np.asarray(images), np.asarray(cams)
    n = len(images)
    cols = min(n, 6)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 2.3 * rows + 0.4),
                             squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if i >= n:
            continue
        img, cam = images[i][0], cams[i]
        if img.ndim == 3:
            img, cam = img[img.shape[0] // 2], cam[cam.shape[0] // 2]
        if img.ndim == 1:
            ax.set_axis_on()
            t = np.arange(img.size)
            ax.plot(t, img, lw=0.5, color="k")
            ax.fill_between(t, img.min(), img.max(), where=cam > 0.5, color="r", alpha=0.3)
            ax.set_yticks([])
        else:
            ax.imshow(img, cmap="gray")
            ax.imshow(cam, cmap="jet", alpha=0.45, vmin=0, vmax=1)
        if titles is not None:
            ax.set_title(str(titles[i]), fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_segmentation(images: np.ndarray, truth: np.ndarray, pred: np.ndarray,
                      path: str | os.PathLike, class_names=None, titles=None,
                      title: str = "segmentation") -> None:
    """Rows of (image, true labels, predicted labels) for 2-D slices ``(R, H, W)``, the
    labels drawn over the image in one colour per class (0 transparent)."""
    plt = _plt()
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    images, truth, pred = np.asarray(images), np.asarray(truth), np.asarray(pred)
    k = int(max(truth.max(), pred.max())) + 1
    colours = plt.get_cmap("tab10")(np.arange(10))[:max(k, 2)]
    colours[0, 3] = 0  # background: see-through
    cmap = ListedColormap(colours)
    rows = len(images)
    fig, axes = plt.subplots(rows, 3, figsize=(8.4, 2.8 * rows + 0.6), squeeze=False)
    for r in range(rows):
        for c, (lab, name) in enumerate(((None, "image"), (truth[r], "truth"),
                                         (pred[r], "prediction"))):
            ax = axes[r, c]
            ax.imshow(images[r], cmap="gray")
            if lab is not None:
                ax.imshow(np.ma.masked_equal(lab, 0), cmap=cmap, vmin=0, vmax=len(colours) - 1,
                          alpha=0.55, interpolation="nearest")
            ax.set_axis_off()
            ax.set_title(name if titles is None else f"{titles[r]}: {name}", fontsize=8)
    if class_names is not None:
        handles = [Patch(color=colours[i], label=n) for i, n in enumerate(class_names)
                   if 0 < i < len(colours)]
        fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 6),
                   fontsize=8)
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
