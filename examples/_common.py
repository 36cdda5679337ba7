"""What the training scripts share: argument defaults, output folder, pictures."""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from gridconv import nn


def base_parser(description: str, epochs: int, batch_size: int, lr: float,
                out: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--epochs", type=int, default=epochs)
    p.add_argument("--batch-size", type=int, default=batch_size)
    p.add_argument("--lr", type=float, default=lr, help="Adam learning rate (cosine decay)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=out, help="folder for data, model and pictures")
    p.add_argument("--smoke", action="store_true",
                   help="a few samples and one short epoch (the CI smoke test)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def out_dir(path: str) -> Path:
    d = Path(path)
    d.mkdir(parents=True, exist_ok=True)
    return d


def pictures(out: Path, stem: str, model, history, first_conv, images, cams, titles) -> None:
    """Training curves, first-layer kernels and a saliency picture, as PNGs (when
    matplotlib is there)."""
    try:
        from gridconv.nn import plots
    except ImportError:  # pragma: no cover
        return
    try:
        plots.plot_history(history, out / f"{stem}_curves.png", title=stem)
        plots.plot_kernels(first_conv.weight.value, out / f"{stem}_kernels.png")
        plots.plot_saliency(images, cams, out / f"{stem}_gradcam.png", titles=titles)
    except ImportError:
        print("(matplotlib is missing: no pictures)")
        return
    print(f"pictures: {out / (stem + '_curves.png')}, {stem}_kernels.png, "
          f"{stem}_gradcam.png")


def first_conv(model):
    return next(m for m in model.modules() if isinstance(m, (nn.Conv, nn.ConvTranspose)))


def report(out: Path, stem: str, results: dict) -> None:
    """Print the held-out results and keep them as JSON beside the model."""
    (out / f"{stem}_results.json").write_text(json.dumps(results, indent=2, default=float))
    for k, v in results.items():
        print(f"  {k}: {v:.4f}" if isinstance(v, float) else f"  {k}: {v}")


class Timer:
    def __enter__(self):
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.t0


def threads() -> str:
    import numba

    return f"{numba.get_num_threads()} threads ({os.cpu_count()} CPUs)"


def seeded_subset(n: int, k: int, seed: int) -> np.ndarray:
    return np.sort(np.random.default_rng(seed).permutation(n)[:k])
