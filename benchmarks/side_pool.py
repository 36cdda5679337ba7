"""Side-by-side timings of gridconv's pooling against PyTorch CPU, in one run.

A side module of ``benchmarks/compare.py`` (``run(cfg, dtype, selected)`` and
``print_table(rows, dtype)``); it also runs alone, from the repository root::

    python benchmarks/side_pool.py            # full run
    python benchmarks/side_pool.py --quick    # fewer repeats
    python benchmarks/side_pool.py --only 3d --dtype float64

Workloads: max, average and L2 (``lp_pool`` with p = 2) pooling, window 2 and stride 2,
on ``N=32, C=64, 64x64`` images and on ``N=2, C=16, 64^3`` volumes.

- gridconv forward is ``max_pool`` / ``avg_pool`` / ``lp_pool``; forward+backward is the
  forward call followed by the backward function with a fixed upstream gradient (for max
  pooling, ``max_pool(..., return_indices=True)`` then ``max_pool_backward(...,
  indices=...)``, as a layer would do).
- torch forward is ``F.max_pool{2,3}d`` / ``F.avg_pool{2,3}d`` / ``F.lp_pool{2,3}d``
  (``norm_type=2``) under ``torch.no_grad()``; forward+backward is the same call on a
  leaf tensor that requires grad, then ``y.backward(g)``.
- Each workload first times gridconv's very first calls (the "1st" column: compilation
  or loading from Numba's cache), then runs ``WARMUP_ROUNDS`` untimed rounds of all its
  calls, both libraries interleaved (fresh memory is slow to fault in on some virtual
  machines). Times are then medians (and minima) over repeated calls after one more
  warm-up call (see ``compare.measure``); ratio = gridconv / torch, lower is better;
  target: forward + backward <= 1.0. Both libraries use the same number of threads.
- err = max |gridconv - torch| / max |torch| over the output (forward) and the input
  gradient (backward).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass

import numpy as np

try:  # benchmarks/ is on sys.path (compare.py or this file run as scripts)
    import compare
    from compare import Settings, load_torch, measure, rel_err, tol_for
except ModuleNotFoundError:  # imported as benchmarks.side_pool (asv's discovery)
    from . import compare
    from .compare import Settings, load_torch, measure, rel_err, tol_for

TARGET = 1.0  # forward + backward, gridconv / torch
# Untimed rounds of every call of a workload (both libraries, interleaved) before timing:
# on virtual machines that hand freed memory back to the host, the first touches of
# fresh output buffers are slow for several calls (the first workload of a process paid
# up to 3x here), which would bias whichever library is timed first.
WARMUP_ROUNDS = 3


@dataclass(frozen=True)
class PoolWorkload:
    name: str
    kind: str  # "max", "avg" or "lp2"
    n: int
    c: int
    size: tuple
    window: int = 2
    stride: int = 2

    @property
    def rank(self) -> int:
        return len(self.size)

    def out_size(self) -> tuple:
        return tuple((i - self.window) // self.stride + 1 for i in self.size)


_IMAGES = dict(n=32, c=64, size=(64, 64))
_VOLUMES = dict(n=2, c=16, size=(64, 64, 64))

WORKLOADS = [
    PoolWorkload("max 2d 2x2 s2 32x64x64^2", "max", **_IMAGES),
    PoolWorkload("max 3d 2^3 s2 2x16x64^3", "max", **_VOLUMES),
    PoolWorkload("avg 2d 2x2 s2 32x64x64^2", "avg", **_IMAGES),
    PoolWorkload("avg 3d 2^3 s2 2x16x64^3", "avg", **_VOLUMES),
    PoolWorkload("L2 2d 2x2 s2 32x64x64^2", "lp2", **_IMAGES),
    PoolWorkload("L2 3d 2^3 s2 2x16x64^3", "lp2", **_VOLUMES),
]


def make_arrays(w: PoolWorkload, dtype, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((w.n, w.c, *w.size)).astype(dtype)
    g = rng.standard_normal((w.n, w.c, *w.out_size())).astype(dtype)
    return x, g


def gridconv_calls(w: PoolWorkload, x, g):
    import gridconv

    k, s = w.window, w.stride
    if w.kind == "max":
        def fwd():
            return gridconv.max_pool(x, k, s)

        def fwd_bwd():
            y, idx = gridconv.max_pool(x, k, s, return_indices=True)
            return y, gridconv.max_pool_backward(g, x, k, s, indices=idx)
    elif w.kind == "avg":
        def fwd():
            return gridconv.avg_pool(x, k, s)

        def fwd_bwd():
            return gridconv.avg_pool(x, k, s), gridconv.avg_pool_backward(g, x, k, s)
    else:
        def fwd():
            return gridconv.lp_pool(x, 2, k, s)

        def fwd_bwd():
            return gridconv.lp_pool(x, 2, k, s), gridconv.lp_pool_backward(g, x, 2, k, s)
    return fwd, fwd_bwd


def torch_calls(w: PoolWorkload, x, g):
    torch, F = compare.torch, compare.F
    k, s, d = w.window, w.stride, w.rank
    if w.kind == "max":
        op = getattr(F, f"max_pool{d}d")

        def call(t):
            return op(t, k, s)
    elif w.kind == "avg":
        op = getattr(F, f"avg_pool{d}d")

        def call(t):
            return op(t, k, s)
    else:
        op = getattr(F, f"lp_pool{d}d")

        def call(t):
            return op(t, 2, k, s)
    xt, gt = torch.from_numpy(x), torch.from_numpy(g)
    leaf = xt.clone().requires_grad_(True)

    def fwd():
        with torch.no_grad():
            return call(xt)

    def fwd_bwd():
        leaf.grad = None
        y = call(leaf)
        y.backward(gt)
        return y, leaf.grad

    return fwd, fwd_bwd


def _first_ms(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1e3


def run_workload(w: PoolWorkload, dtype, cfg: Settings) -> dict:
    x, g = make_arrays(w, dtype)
    row: dict = {"name": w.name, "kind": "pool"}
    gc_fwd, gc_fb = gridconv_calls(w, x, g)
    calls = [gc_fwd, gc_fb]
    first = {"fwd": _first_ms(gc_fwd), "fwd_bwd": _first_ms(gc_fb)}  # compile or cache
    if compare.torch is not None:
        tc_fwd, tc_fb = torch_calls(w, x, g)
        calls += [tc_fwd, tc_fb]
    for _ in range(WARMUP_ROUNDS):  # both libraries, interleaved, untimed
        for fn in calls:
            fn()
    t_fwd, y_gc = measure(gc_fwd, cfg)
    t_fb, (_, gx_gc) = measure(gc_fb, cfg)
    row["gridconv_fwd"] = dict(t_fwd.as_dict(), first_ms=first["fwd"])
    row["gridconv_fwd_bwd"] = dict(t_fb.as_dict(), first_ms=first["fwd_bwd"])
    if compare.torch is not None:
        tt_fwd, y_t = measure(tc_fwd, cfg)
        tt_fb, (_, gx_t) = measure(tc_fb, cfg)
        row["torch_fwd"] = tt_fwd.as_dict()
        row["torch_fwd_bwd"] = tt_fb.as_dict()
        row["ratio_fwd"] = t_fwd.median / tt_fwd.median
        row["ratio_fwd_bwd"] = t_fb.median / tt_fb.median
        row["err_fwd"] = rel_err(y_gc, y_t.numpy())
        row["err_bwd"] = rel_err(gx_gc, gx_t.detach().numpy())
    return row


def run(cfg: Settings, dtype, selected) -> list:
    """Time every selected pooling workload; torch columns only when torch is importable.

    ``load_torch()`` is called here too: when compare.py runs as ``__main__``, the
    ``compare`` module imported above is a second copy whose ``torch`` is still unset.
    Its thread count is the caller's (one torch per process).
    """
    load_torch()
    return [run_workload(w, np.dtype(dtype), cfg) for w in WORKLOADS if selected(w.name)]


def _ms(t: dict | None) -> str:
    return "-" if t is None else f"{t['median_ms']:.1f}/{t['min_ms']:.1f}"


def _ratio(r: float | None, target: float | None = None) -> str:
    if r is None:
        return "-"
    return f"{r:.2f}{'*' if target is not None and r > target else ''}"


def _err(e: float | None, tol: float) -> str:
    return "-" if e is None else f"{e:.1e}{'!' if e > tol else ''}"


def print_table(rows: list, dtype) -> None:
    tol = tol_for(dtype)
    head = (f"{'pooling workload':28} {'gc fwd':>11} {'torch fwd':>11} {'ratio':>6} | "
            f"{'gc fwd+bwd':>11} {'torch f+b':>11} {'ratio':>6} | {'1st f+b':>8} | "
            f"{'err fwd':>8} {'err bwd':>8}")
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['name']:28} {_ms(r['gridconv_fwd']):>11} {_ms(r.get('torch_fwd')):>11} "
              f"{_ratio(r.get('ratio_fwd')):>6} | {_ms(r['gridconv_fwd_bwd']):>11} "
              f"{_ms(r.get('torch_fwd_bwd')):>11} {_ratio(r.get('ratio_fwd_bwd'), TARGET):>6} | "
              f"{r['gridconv_fwd_bwd']['first_ms']:8.0f} | "
              f"{_err(r.get('err_fwd'), tol):>8} {_err(r.get('err_bwd'), tol):>8}")
    timed = [r for r in rows if "ratio_fwd_bwd" in r]
    met = sum(r["ratio_fwd_bwd"] <= TARGET for r in timed)
    print(f"times: median/min ms; ratio = gridconv/torch medians (* = misses the target "
          f"fwd+bwd <= {TARGET:g}); 1st = first gridconv fwd+bwd call ms (compile or "
          f"cache load); err = max|gc - torch|/max|torch| (! = above {tol:g})")
    if timed:
        print(f"pooling: forward+backward <= {TARGET:g} x torch met {met}/{len(timed)}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    ap.add_argument("--quick", action="store_true", help="fewer repeats, smaller budget")
    ap.add_argument("--only", default=None, help="substring filter on workload names")
    ap.add_argument("--threads", type=int, default=None,
                    help="thread count for numba and torch (default: numba's default)")
    args = ap.parse_args(argv)

    import numba

    cfg, threads = compare.standalone_setup(args.quick, args.threads)
    dtype = np.dtype(args.dtype)
    torch_desc = (f"torch {compare.torch.__version__} threads="
                  f"{compare.torch.get_num_threads()}" if compare.torch is not None
                  else "torch not importable")
    print(f"numba {numba.__version__} threads={threads} | {torch_desc} | dtype={dtype.name} "
          f"| {os.cpu_count()} CPUs")

    def selected(name: str) -> bool:
        return args.only is None or args.only.lower() in name.lower()

    rows = run(cfg, dtype, selected)
    print_table(rows, dtype)
    return 0


if __name__ == "__main__":
    sys.exit(main())
