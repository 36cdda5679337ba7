"""Out-of-core filtering: an HDF5 volume larger than a memory cap, HDF5 to HDF5 on Dask.

What it measures, each run in a fresh subprocess so that its peak RSS is its own:

1. ``dask-threads``: :func:`gridconv.dask.filter_hdf5` of a ``--size-gb`` float32 volume
   (default 2 GB) on Dask's threaded scheduler with 1 and with 2 workers (threads); the
   peak RSS of the whole run is checked against ``--cap-mb`` (default 600 MB).
2. ``dask-distributed``: the same on a ``dask.distributed.LocalCluster`` of 1 and 2
   worker processes (one thread each) on loopback; peak RSS of the client and of each
   worker (the cluster's start-up is not timed).
3. ``in-memory`` against ``dask-threads`` on a volume that fits (``--fit-gb``): h5py reads
   the whole dataset, ``gridconv.conv`` filters it with every core, h5py writes it.

Throughput is input megabytes per second of wall time. Each Dask task runs its kernel on
``--numba-threads`` threads (default 1: N workers use N cores, which is what the 1 vs 2
workers scaling measures); the in-memory path uses every core. The filter is a 3x3x3 Gaussian,
``padding="same"``, ``padding_mode="reflect"``. Files go to ``--dir`` (default: a new
temporary directory) and are deleted at the end unless ``--keep``.

    python benchmarks/dask_hdf5.py                     # 2 GB, cap 600 MB (~5 min, 2 cores)
    python benchmarks/dask_hdf5.py --size-gb 0.25 --fit-gb 0.1 --no-distributed   # ~30 s
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.abspath(__file__)
PLANE = (1024, 1024)  # y, x of the volume; z follows from the size
H5_CHUNKS = (8, 128, 128)  # 512 KiB float32 HDF5 chunks


def weight() -> np.ndarray:
    from gridconv import kernels

    return kernels.as_weight(kernels.gaussian(1.0, ndim=3, size=3)).astype(np.float32)


PARAMS = dict(padding="same", padding_mode="reflect")


def make_volume(path: str, size_gb: float, seed: int = 0) -> tuple:
    """Write a float32 volume of about ``size_gb`` GB, 32 planes at a time."""
    import h5py

    z = max(8, round(size_gb * 2**30 / 4 / (PLANE[0] * PLANE[1])))
    shape = (z, *PLANE)
    rng = np.random.default_rng(seed)
    with h5py.File(path, "w") as f:
        d = f.create_dataset("volume", shape=shape, dtype=np.float32,
                             chunks=tuple(min(c, s) for c, s in zip(H5_CHUNKS, shape)))
        for z0 in range(0, z, 32):
            z1 = min(z, z0 + 32)
            d[z0:z1] = rng.standard_normal((z1 - z0, *PLANE), dtype=np.float32)
    return shape


def peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --------------------------------------------------------------------- children ---

def child(args) -> dict:
    import dask
    import h5py

    import gridconv
    import gridconv.dask as gd

    src, dst, mode, n = args.src, args.dst, args.mode, args.workers
    if args.numba_threads:  # Numba threads per Dask task (baked into the graph)
        dask.config.set({gd.CONFIG_THREADS: args.numba_threads})
    with h5py.File(src, "r") as f:
        nbytes = f["volume"].size * 4
    base = peak_rss_mb()
    w = weight()
    if os.path.exists(dst):
        os.remove(dst)
    out = {"mode": mode, "workers": n, "input_mb": nbytes / 2**20, "rss_after_import_mb": base}
    if mode == "in-memory":
        t = time.perf_counter()
        with h5py.File(src, "r") as f:
            vol = f["volume"][...]
        y = gridconv.conv(vol[None, None], w, **PARAMS)[0, 0]
        with h5py.File(dst, "w") as f:
            f.create_dataset("volume", data=y,
                             chunks=tuple(min(c, s) for c, s in zip(H5_CHUNKS, y.shape)))
        out["seconds"] = time.perf_counter() - t
    elif mode == "dask-threads":
        with dask.config.set(scheduler="threads", num_workers=n):
            t = time.perf_counter()
            gd.filter_hdf5(src, "volume", w, dst, chunk_mb=args.chunk_mb, progress=False,
                           **PARAMS)
            out["seconds"] = time.perf_counter() - t
    else:  # dask-distributed
        from distributed import Client, LocalCluster

        with LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                          host="127.0.0.1", dashboard_address=None,
                          silence_logs=40) as cluster, Client(cluster) as client:
            client.run(lambda: __import__("gridconv.dask"))  # imports, kernels: not timed
            t = time.perf_counter()
            gd.filter_hdf5(src, "volume", w, dst, chunk_mb=args.chunk_mb, progress=False,
                           **PARAMS)
            out["seconds"] = time.perf_counter() - t
            rss = client.run(peak_rss_mb)
            out["worker_rss_mb"] = sorted(rss.values())
    out["peak_rss_mb"] = peak_rss_mb()
    out["mb_per_s"] = out["input_mb"] / out["seconds"]
    return out


def run_child(src: str, dst: str, mode: str, workers: int, args) -> dict:
    cmd = [sys.executable, HERE, "--child", "--src", src, "--dst", dst, "--mode", mode,
           "--workers", str(workers), "--chunk-mb", str(args.chunk_mb),
           "--numba-threads", str(args.numba_threads)]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode:
        raise RuntimeError(f"{mode} x{workers} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def verify(src: str, dst: str, planes: int = 6) -> float:
    """Max |difference| between the file written and the in-memory filter of a slab
    (the first planes, so the true-edge padding is checked)."""
    import h5py

    import gridconv

    with h5py.File(src, "r") as f, h5py.File(dst, "r") as g:
        vol = f["volume"][:planes + 1]
        got = g["volume"][:planes]
    ref = gridconv.conv(vol[None, None], weight(), **PARAMS)[0, 0, :planes]
    # plane `planes` of the slab lacks its upper neighbour: compare below it only
    return float(np.abs(got - ref).max())


# ----------------------------------------------------------------------- driver ---

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size-gb", type=float, default=2.0, help="volume size (default 2)")
    ap.add_argument("--fit-gb", type=float, default=0.25,
                    help="size of the in-memory comparison (default 0.25)")
    ap.add_argument("--cap-mb", type=float, default=600.0, help="peak RSS cap (default 600)")
    ap.add_argument("--chunk-mb", type=float, default=8.0, help="Dask chunk size (8)")
    ap.add_argument("--numba-threads", type=int, default=1,
                    help="Numba threads per Dask task (default 1, so that N workers use N "
                         "cores; 0: gridconv's automatic choice)")
    ap.add_argument("--dir", default=None, help="where the files go (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the files")
    ap.add_argument("--no-distributed", action="store_true", help="skip the LocalCluster runs")
    ap.add_argument("--json", default=None, help="write the results here")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--src", help=argparse.SUPPRESS)
    ap.add_argument("--dst", help=argparse.SUPPRESS)
    ap.add_argument("--mode", help=argparse.SUPPRESS)
    ap.add_argument("--workers", type=int, default=1, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return

    import dask
    import numba

    tmp = args.dir or tempfile.mkdtemp(prefix="gridconv-dask-")
    os.makedirs(tmp, exist_ok=True)
    big, fit = os.path.join(tmp, "big.h5"), os.path.join(tmp, "fit.h5")
    out = os.path.join(tmp, "out.h5")
    print(flush=True)
    print(f"gridconv dask/HDF5 benchmark: {os.cpu_count()} cores, numba threads "
          f"{numba.config.NUMBA_NUM_THREADS}, dask {dask.__version__}, files in {tmp}")
    results = []
    try:
        t = time.perf_counter()
        shape = make_volume(big, args.size_gb)
        print(f"Numba threads per Dask task: {args.numba_threads or 'auto'}")
        print(f"wrote {big}: float32 {shape} = {np.prod(shape) * 4 / 2**30:.2f} GiB in "
              f"{time.perf_counter() - t:.1f} s; cap {args.cap_mb:.0f} MB, Dask chunks "
              f"~{args.chunk_mb:g} MB, HDF5 chunks {H5_CHUNKS}")
        runs = [("dask-threads", 1), ("dask-threads", 2)]
        if not args.no_distributed:
            runs += [("dask-distributed", 1), ("dask-distributed", 2)]
        for mode, n in runs:
            r = run_child(big, out, mode, n, args)
            r["max_abs_err"] = verify(big, out)
            r["file"] = "big"
            results.append(r)
            _print(r, args.cap_mb)
        os.remove(big)
        shape = make_volume(fit, args.fit_gb, seed=1)
        print(f"in-memory comparison on float32 {shape} "
              f"({np.prod(shape) * 4 / 2**30:.2f} GiB)")
        for mode, n in [("in-memory", 1), ("dask-threads", 2)]:
            r = run_child(fit, out, mode, n, args)
            r["max_abs_err"] = verify(fit, out)
            r["file"] = "fit"
            results.append(r)
            _print(r, args.cap_mb)
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True) if args.dir is None else [
                os.remove(p) for p in (big, fit, out) if os.path.exists(p)]
    big_runs = {(r["mode"], r["workers"]): r for r in results if r["file"] == "big"}
    for mode in ("dask-threads", "dask-distributed"):
        if (mode, 1) in big_runs and (mode, 2) in big_runs:
            s = big_runs[(mode, 1)]["seconds"] / big_runs[(mode, 2)]["seconds"]
            print(f"scaling {mode}: 2 workers run {s:.2f}x as fast as 1")
    fits = {r["mode"]: r for r in results if r["file"] == "fit"}
    if len(fits) == 2:
        ratio = fits["dask-threads"]["mb_per_s"] / fits["in-memory"]["mb_per_s"]
        print(f"dask-threads (2 workers) throughput = {ratio:.2f}x the in-memory path's")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


def _print(r: dict, cap: float) -> None:
    rss = r["peak_rss_mb"]
    extra = ""
    if "worker_rss_mb" in r:
        extra = f", workers {'/'.join(f'{v:.0f}' for v in r['worker_rss_mb'])} MB"
        rss = max([rss, *r["worker_rss_mb"]])
    ok = "under" if rss < cap else "OVER"
    print(f"  {r['mode']:17s} x{r['workers']}: {r['input_mb']:7.0f} MB in "
          f"{r['seconds']:6.1f} s = {r['mb_per_s']:6.1f} MB/s; peak RSS {r['peak_rss_mb']:.0f}"
          f" MB{extra} ({ok} the {cap:.0f} MB cap; {r['rss_after_import_mb']:.0f} MB after "
          f"imports); max |err| {r['max_abs_err']:.1e}", flush=True)


if __name__ == "__main__":
    main()
