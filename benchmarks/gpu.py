"""GPU timings: gridconv's numba.cuda kernels against PyTorch/cuDNN, side by side.

Run from the repository root on a machine with an NVIDIA GPU, PyTorch built with CUDA and
``gridconv[cuda]`` installed::

    python benchmarks/gpu.py [--quick] [--only 2d] [--suites conv,local,pool] [--json out.json]

The workloads are those of ``benchmarks/compare.py`` (convolutions),
``benchmarks/side_local.py`` (unshared and tiled convolutions, against the best PyTorch
formulation: ``unfold`` + ``einsum`` for unshared; for tiled the faster of one strided
conv per tile offset and the weights gathered per position then ``unfold`` + ``einsum``)
and ``benchmarks/side_pool.py`` (max, average and L2 pooling against ``F.*_pool*d``), at
the same precision on both sides: float32 with TF32 disabled in PyTorch
(``torch.backends.cudnn.allow_tf32 = False``, ``torch.backends.cuda.matmul.allow_tf32 =
False``), cuDNN's autotuner on. The
arrays are PyTorch CUDA tensors handed to gridconv directly (``__cuda_array_interface__``,
no copy; the results come back as tensors).

Times are medians of ``--repeat`` calls, each followed by a device synchronisation, after
warm-up calls (which include gridconv's compilation). ratio = gridconv / PyTorch (lower is
better). Targets (issue 6): forward+backward within 1.5x of cuDNN for the standard
convolutions; faster than every PyTorch formulation (ratio < 1) for unshared and tiled.
GFLOP/s counts 2 flops per multiply-add (forward + input gradient + weight gradient for
forward+backward) and is compared with the GPU's float32 peak (SMs x FP32 lanes x 2 x
clock). Pooling does about one operation per element read, so its column is the memory
throughput instead (GB/s of the arrays read and written, forward+backward).

Without a GPU (or without PyTorch's CUDA build) the script says why and exits with status 0:
it is ready to run, there is just nothing to time.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

# FP32 lanes per SM by compute capability (NVIDIA's programming guide).
_LANES = {(6, 0): 64, (6, 1): 128, (7, 0): 64, (7, 2): 64, (7, 5): 64, (8, 0): 64,
          (8, 6): 128, (8, 7): 128, (8, 9): 128, (9, 0): 128, (10, 0): 128, (12, 0): 128}


def gpu_peak_gflops() -> tuple[str, float | None]:
    """(device name, float32 peak GFLOP/s or None when unknown)."""
    from numba import cuda

    dev = cuda.get_current_device()
    name = dev.name.decode() if isinstance(dev.name, bytes) else str(dev.name)
    lanes = _LANES.get(tuple(dev.compute_capability))
    if lanes is None:
        return name, None
    ghz = dev.CLOCK_RATE / 1e6  # kHz
    return name, dev.MULTIPROCESSOR_COUNT * lanes * 2 * ghz


def why_not_runnable() -> str | None:
    import gridconv

    info = gridconv.backends()["cuda"]
    if info["simulator"]:
        return "NUMBA_ENABLE_CUDASIM=1 is set: the simulator is not timed"
    if not info["available"]:
        return f"no CUDA device for numba: {info['reason']}"
    try:
        import torch
    except ImportError:
        return "PyTorch is not installed"
    if not torch.cuda.is_available():
        return f"PyTorch {torch.__version__} has no CUDA device (a CPU-only build?)"
    return None


def timed(fn, repeat: int, warmup: int) -> float:
    """Median seconds of ``fn`` followed by a device synchronisation."""
    import torch

    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def rel_err(a, b) -> float:
    a = a.detach().double().cpu().numpy()
    b = b.detach().double().cpu().numpy()
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


# ------------------------------------------------------------------------ convolutions


def conv_flops(w) -> float:
    """Multiply-adds x 2 of one forward pass of a compare.Workload."""
    taps = w.k ** w.rank
    if w.transposed:
        return 2.0 * w.n * w.c_in * float(np.prod(w.size)) * (w.c_out // w.groups) * taps
    return 2.0 * w.n * w.c_out * float(np.prod(w.out_size())) * (w.c_in // w.groups) * taps


def run_conv(w, cfg) -> dict:
    import compare
    import torch
    import torch.nn.functional as F

    import gridconv

    x, weight, bias, g = compare.make_arrays(w, np.float32)
    dev = torch.device("cuda")
    xt, wt, bt, gt = (torch.from_numpy(np.ascontiguousarray(a)).to(dev)
                      for a in (x, weight, bias, g))
    params = w.gc_params()
    tfn = getattr(F, f"conv_transpose{w.rank}d" if w.transposed else f"conv{w.rank}d")
    tparams = w.torch_params()
    if w.transposed:
        tparams["output_padding"] = 0
    gfwd = gridconv.conv_transpose if w.transposed else gridconv.conv
    gbwd = gridconv.conv_transpose_backward if w.transposed else gridconv.conv_backward
    leaves = [t.clone().requires_grad_(True) for t in (xt, wt, bt)]

    def g_fwd():
        return gfwd(xt, wt, bt, **params)

    def g_fwd_bwd():
        return g_fwd(), gbwd(gt, xt, wt, bt, **params)

    def t_fwd():
        with torch.no_grad():
            return tfn(xt, wt, bt, **tparams)

    def t_fwd_bwd():
        for t in leaves:
            t.grad = None
        y = tfn(*leaves, **tparams)
        y.backward(gt)
        return y

    y_g, (gx, gw, gb) = g_fwd_bwd()
    y_t = t_fwd_bwd()
    err = max(rel_err(y_g, y_t), rel_err(gx, leaves[0].grad), rel_err(gw, leaves[1].grad),
              rel_err(gb, leaves[2].grad))
    res = {"name": w.name, "err": err}
    for key, fn in (("gc_fwd", g_fwd), ("torch_fwd", t_fwd), ("gc_fwd_bwd", g_fwd_bwd),
                    ("torch_fwd_bwd", t_fwd_bwd)):
        res[key] = timed(fn, cfg.repeat, cfg.warmup)
    flops = conv_flops(w)
    res["gflops_fwd"] = flops / res["gc_fwd"] / 1e9
    res["gflops_fwd_bwd"] = 3 * flops / res["gc_fwd_bwd"] / 1e9
    return res


# ---------------------------------------------------------------- unshared and tiled


def run_local(w, cfg) -> dict:
    import compare
    import side_local
    import torch

    import gridconv

    compare.load_torch()
    x, weight, bias, g = side_local.make_arrays(w, np.float32)
    dev = torch.device("cuda")
    xt, wt, bt, gt = (torch.from_numpy(np.ascontiguousarray(a)).to(dev)
                      for a in (x, weight, bias, g))
    fwd = gridconv.unshared_conv if w.op == "unshared" else gridconv.tiled_conv
    bwd = gridconv.unshared_conv_backward if w.op == "unshared" else \
        gridconv.tiled_conv_backward

    def g_fwd():
        return fwd(xt, wt, bt)

    def g_fwd_bwd():
        return g_fwd(), bwd(gt, xt, wt, bt)

    res = {"name": w.name, "gc_fwd": timed(g_fwd, cfg.repeat, cfg.warmup),
           "gc_fwd_bwd": timed(g_fwd_bwd, cfg.repeat, cfg.warmup)}
    y_g, (gx, gw, gb) = g_fwd_bwd()
    best, errs = None, []
    for route_name, route in side_local.torch_routes(w).items():
        leaves = [t.clone().requires_grad_(True) for t in (xt, wt, bt)]

        def t_fwd(route=route):
            with torch.no_grad():
                return route(xt, wt, bt)

        def t_fwd_bwd(route=route, leaves=leaves):
            for t in leaves:
                t.grad = None
            y = route(*leaves)
            y.backward(gt)
            return y

        y_t = t_fwd_bwd()
        errs.append(max(rel_err(y_g, y_t), rel_err(gx, leaves[0].grad),
                        rel_err(gw, leaves[1].grad), rel_err(gb, leaves[2].grad)))
        t = {"route": route_name, "torch_fwd": timed(t_fwd, cfg.repeat, cfg.warmup),
             "torch_fwd_bwd": timed(t_fwd_bwd, cfg.repeat, cfg.warmup)}
        if best is None or t["torch_fwd_bwd"] < best["torch_fwd_bwd"]:
            best = t
    res.update(best)
    res["err"] = max(errs)
    macs = w.n * w.c_out * float(np.prod(w.out_size())) * w.c_in * w.k ** w.rank
    res["gflops_fwd"] = 2 * macs / res["gc_fwd"] / 1e9
    res["gflops_fwd_bwd"] = 6 * macs / res["gc_fwd_bwd"] / 1e9
    return res


# ---------------------------------------------------------------------------- pooling


def run_pool(w, cfg) -> dict:
    import side_pool
    import torch
    import torch.nn.functional as F

    import gridconv

    x, g = side_pool.make_arrays(w, np.float32)
    dev = torch.device("cuda")
    xt, gt = (torch.from_numpy(np.ascontiguousarray(a)).to(dev) for a in (x, g))
    k, s, d = w.window, w.stride, w.rank
    if w.kind == "max":
        def g_fwd():
            return gridconv.max_pool(xt, k, s)

        def g_fwd_bwd():
            y, idx = gridconv.max_pool(xt, k, s, return_indices=True)
            return y, gridconv.max_pool_backward(gt, xt, k, s, indices=idx)

        def t_call(t):
            return getattr(F, f"max_pool{d}d")(t, k, s)
    elif w.kind == "avg":
        def g_fwd():
            return gridconv.avg_pool(xt, k, s)

        def g_fwd_bwd():
            return g_fwd(), gridconv.avg_pool_backward(gt, xt, k, s)

        def t_call(t):
            return getattr(F, f"avg_pool{d}d")(t, k, s)
    else:
        def g_fwd():
            return gridconv.lp_pool(xt, 2, k, s)

        def g_fwd_bwd():
            return g_fwd(), gridconv.lp_pool_backward(gt, xt, 2, k, s)

        def t_call(t):
            return getattr(F, f"lp_pool{d}d")(t, 2, k, s)

    leaf = xt.clone().requires_grad_(True)

    def t_fwd():
        with torch.no_grad():
            return t_call(xt)

    def t_fwd_bwd():
        leaf.grad = None
        y = t_call(leaf)
        y.backward(gt)
        return y

    y_g, gx = g_fwd_bwd()
    y_t = t_fwd_bwd()
    res = {"name": w.name, "err": max(rel_err(y_g, y_t), rel_err(gx, leaf.grad))}
    for key, fn in (("gc_fwd", g_fwd), ("torch_fwd", t_fwd), ("gc_fwd_bwd", g_fwd_bwd),
                    ("torch_fwd_bwd", t_fwd_bwd)):
        res[key] = timed(fn, cfg.repeat, cfg.warmup)
    # bytes: forward reads x, writes y; backward reads g (and x, y or the indices) and
    # writes grad_x: about 2*|x| + 2*|y| + |x| + 2*|y| elements for forward+backward
    nx, ny = x.size, g.size
    res["gbs_fwd"] = 4.0 * (nx + ny) / res["gc_fwd"] / 1e9
    res["gbs_fwd_bwd"] = 4.0 * (3 * nx + 4 * ny) / res["gc_fwd_bwd"] / 1e9
    return res


# ---------------------------------------------------------------------------- report


def print_table(title: str, rows: list, target: float, peak: float | None,
                rate: str = "gflops", unit: str = "GFLOP/s") -> None:
    """One suite's rows; ``rate`` the key prefix of the throughput column (GFLOP/s against
    the float32 peak, or GB/s for pooling)."""
    print(f"\n{title}")
    head = (f"{'workload':44s} {'gc fwd':>9s} {'torch':>9s} {'ratio':>6s} {'gc f+b':>9s} "
            f"{'torch':>9s} {'ratio':>6s} {unit:>8s} {'%peak':>6s} {'rel err':>8s}")
    print(head)
    print("-" * len(head))
    for r in rows:
        rf = r["gc_fwd"] / r["torch_fwd"]
        rb = r["gc_fwd_bwd"] / r["torch_fwd_bwd"]
        flag = "" if rb <= target else " (missed)"
        thr = r[f"{rate}_fwd_bwd"]
        pk = f"{100 * thr / peak:5.1f}%" if peak and rate == "gflops" else "   n/a"
        route = f" [{r['route']}]" if "route" in r else ""
        print(f"{(r['name'] + route)[:44]:44s} {1e3 * r['gc_fwd']:8.3f}m "
              f"{1e3 * r['torch_fwd']:8.3f}m {rf:6.2f} {1e3 * r['gc_fwd_bwd']:8.3f}m "
              f"{1e3 * r['torch_fwd_bwd']:8.3f}m {rb:6.2f} {thr:8.0f} {pk:>6s} "
              f"{r['err']:8.1e}{flag}")
    print(f"target: forward+backward ratio <= {target}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats")
    ap.add_argument("--only", default="", help="run the workloads whose name contains this")
    ap.add_argument("--suites", default="conv,local,pool",
                    help="comma-separated: conv, local, pool")
    ap.add_argument("--repeat", type=int, default=0)
    ap.add_argument("--json", default="", help="also write the results to this file")
    args = ap.parse_args(argv)
    reason = why_not_runnable()
    if reason:
        print(f"benchmarks/gpu.py: nothing to time ({reason}).")
        return 0
    import torch

    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.benchmark = True

    class Cfg:
        repeat = args.repeat or (5 if args.quick else 25)
        warmup = 2 if args.quick else 5

    import compare
    import side_local
    import side_pool

    name, peak = gpu_peak_gflops()
    print(f"device: {name}; float32 peak {peak:.0f} GFLOP/s" if peak else f"device: {name}")
    print(f"torch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}, TF32 off")
    suites = set(args.suites.split(","))
    out = {"device": name, "peak_gflops": peak}
    if "conv" in suites:
        rows = [run_conv(w, Cfg) for w in compare.WORKLOADS if args.only in w.name]
        print_table("convolutions (float32) vs cuDNN", rows, 1.5, peak)
        out["conv"] = rows
    if "local" in suites:
        rows = [run_local(w, Cfg) for w in side_local.WORKLOADS if args.only in w.name]
        print_table("unshared / tiled (float32) vs the best PyTorch formulation", rows, 1.0,
                    peak)
        out["local"] = rows
    if "pool" in suites:
        rows = [run_pool(w, Cfg) for w in side_pool.WORKLOADS if args.only in w.name]
        print_table("pooling (float32) vs PyTorch", rows, 1.0, peak, "gbs", "GB/s")
        out["pool"] = rows
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
