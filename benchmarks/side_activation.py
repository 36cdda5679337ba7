"""Side-by-side timings of gridconv's activation functions against PyTorch CPU, in one run.

A side module of ``benchmarks/compare.py`` (``run(cfg, dtype, selected)`` and
``print_table(rows, dtype)``); it also runs alone, from the repository root::

    python benchmarks/side_activation.py            # full run
    python benchmarks/side_activation.py --quick    # fewer repeats
    python benchmarks/side_activation.py --only softmax --dtype float64

Workloads: every activation on an ``N=32, C=64, 64x64`` feature map (8.4 M elements,
32 MiB in float32), softmax / log_softmax over the channels per voxel of a
``N=2, C=8, 64^3`` volume (segmentation), and log_softmax over the classes of a dense
``(4096, 1000)`` batch of logits.

- gridconv forward is the function (``relu``, ``softmax(x, axis)``, ...); forward+backward
  is the forward call followed by its ``*_backward`` with a fixed upstream gradient, passing
  ``output=`` where the function takes it (sigmoid, tanh, softmax, log_softmax), as a layer
  that keeps its output would; prelu's backward returns the input and weight gradients.
- torch forward is ``torch.relu`` / ``F.leaky_relu`` / ``F.prelu`` / ``torch.abs`` /
  ``torch.sigmoid`` / ``torch.tanh`` / ``F.softmax`` / ``F.log_softmax`` under
  ``torch.no_grad()``; forward+backward is the same call on leaf tensors that require grad,
  then ``y.backward(g)``.
- Times are medians (and minima) over repeated calls after one warm-up call (see
  ``compare.measure``); ratio = gridconv / torch, lower is better (no target: parity is the
  aim). Both libraries use the same number of threads. These operations are memory-bound:
  every call allocates and first-touches its result, in both libraries.
- err = max |gridconv - torch| / max |torch| over the output (forward) and the gradients
  (backward; for prelu the larger of the input and weight gradients' errors).
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass, field

import numpy as np

try:  # benchmarks/ is on sys.path: compare.py, or this file run as a script
    import compare
    from compare import Settings, load_torch, measure, rel_err, tol_for
except ImportError:  # imported as benchmarks.side_activation (asv discovers every module)
    from . import compare
    from .compare import Settings, load_torch, measure, rel_err, tol_for


@dataclass(frozen=True)
class ActivationWorkload:
    name: str
    op: str  # a gridconv function name
    shape: tuple
    kwargs: dict = field(default_factory=dict)  # keyword arguments of the forward call


_MAP = (32, 64, 64, 64)  # (N, C, H, W)
_VOLUME = (2, 8, 64, 64, 64)  # (N, classes, D, H, W)
_DENSE = (4096, 1000)  # (N, classes)

WORKLOADS = [
    ActivationWorkload("relu 32x64x64^2", "relu", _MAP),
    ActivationWorkload("leaky_relu 32x64x64^2", "leaky_relu", _MAP, {"negative_slope": 0.1}),
    ActivationWorkload("prelu 32x64x64^2", "prelu", _MAP),
    ActivationWorkload("abs_rectify 32x64x64^2", "abs_rectify", _MAP),
    ActivationWorkload("sigmoid 32x64x64^2", "sigmoid", _MAP),
    ActivationWorkload("tanh 32x64x64^2", "tanh", _MAP),
    ActivationWorkload("softmax C 32x64x64^2", "softmax", _MAP, {"axis": 1}),
    ActivationWorkload("log_softmax C 32x64x64^2", "log_softmax", _MAP, {"axis": 1}),
    ActivationWorkload("softmax voxels 2x8x64^3", "softmax", _VOLUME, {"axis": 1}),
    ActivationWorkload("log_softmax dense 4096x1000", "log_softmax", _DENSE, {"axis": -1}),
]

_WITH_OUTPUT = {"sigmoid", "tanh", "softmax", "log_softmax"}


def make_arrays(w: ActivationWorkload, dtype, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(w.shape).astype(dtype)
    g = rng.standard_normal(w.shape).astype(dtype)
    weight = rng.uniform(0.05, 0.3, w.shape[1]).astype(dtype)  # prelu only
    return x, g, weight


def gridconv_calls(w: ActivationWorkload, x, g, weight):
    import gridconv

    fwd_fn = getattr(gridconv, w.op)
    bwd_fn = getattr(gridconv, w.op + "_backward")
    kw = w.kwargs
    if w.op == "prelu":
        def fwd():
            return fwd_fn(x, weight)

        def fwd_bwd():
            return fwd_fn(x, weight), bwd_fn(g, x, weight)
    elif w.op in _WITH_OUTPUT:
        def fwd():
            return fwd_fn(x, **kw)

        def fwd_bwd():
            y = fwd_fn(x, **kw)
            return y, (bwd_fn(g, x, **kw, output=y),)
    else:
        def fwd():
            return fwd_fn(x, **kw)

        def fwd_bwd():
            return fwd_fn(x, **kw), (bwd_fn(g, x, **kw),)
    return fwd, fwd_bwd


def _torch_op(w: ActivationWorkload):
    torch, F = compare.torch, compare.F
    if w.op == "relu":
        return torch.relu
    if w.op == "leaky_relu":
        return lambda t: F.leaky_relu(t, w.kwargs["negative_slope"])
    if w.op == "abs_rectify":
        return torch.abs
    if w.op == "sigmoid":
        return torch.sigmoid
    if w.op == "tanh":
        return torch.tanh
    if w.op == "softmax":
        return lambda t: F.softmax(t, dim=w.kwargs["axis"])
    if w.op == "log_softmax":
        return lambda t: F.log_softmax(t, dim=w.kwargs["axis"])
    raise ValueError(w.op)


def torch_calls(w: ActivationWorkload, x, g, weight):
    torch, F = compare.torch, compare.F
    xt, gt, wt = torch.from_numpy(x), torch.from_numpy(g), torch.from_numpy(weight)
    if w.op == "prelu":
        leaves = [xt.clone().requires_grad_(True), wt.clone().requires_grad_(True)]

        def call(*ts):
            return F.prelu(*ts)

        args = (xt, wt)
    else:
        leaves = [xt.clone().requires_grad_(True)]
        call = _torch_op(w)
        args = (xt,)

    def fwd():
        with torch.no_grad():
            return call(*args)

    def fwd_bwd():
        for t in leaves:
            t.grad = None
        y = call(*leaves)
        y.backward(gt)
        return y, tuple(t.grad for t in leaves)

    return fwd, fwd_bwd


def run_workload(w: ActivationWorkload, dtype, cfg: Settings) -> dict:
    x, g, weight = make_arrays(w, dtype)
    row: dict = {"name": w.name, "kind": "activation"}
    gc_fwd, gc_fb = gridconv_calls(w, x, g, weight)
    t_fwd, y_gc = measure(gc_fwd, cfg)
    t_fb, (_, grads_gc) = measure(gc_fb, cfg)
    row["gridconv_fwd"] = t_fwd.as_dict()
    row["gridconv_fwd_bwd"] = t_fb.as_dict()
    if compare.torch is not None:
        tc_fwd, tc_fb = torch_calls(w, x, g, weight)
        tt_fwd, y_t = measure(tc_fwd, cfg)
        tt_fb, (_, grads_t) = measure(tc_fb, cfg)
        row["torch_fwd"] = tt_fwd.as_dict()
        row["torch_fwd_bwd"] = tt_fb.as_dict()
        row["ratio_fwd"] = t_fwd.median / tt_fwd.median
        row["ratio_fwd_bwd"] = t_fb.median / tt_fb.median
        row["err_fwd"] = rel_err(y_gc, y_t.numpy())
        row["err_bwd"] = max(rel_err(a, b.detach().numpy()) for a, b in zip(grads_gc, grads_t,
                                                                             strict=True))
    return row


def run(cfg: Settings, dtype, selected) -> list:
    """Time every selected activation workload; torch columns only when torch imports.

    ``load_torch()`` is called here too: when compare.py runs as ``__main__``, the
    ``compare`` module imported above is a second copy whose ``torch`` is still unset.
    """
    load_torch()
    return [run_workload(w, np.dtype(dtype), cfg) for w in WORKLOADS if selected(w.name)]


def _ms(t: dict | None) -> str:
    return "-" if t is None else f"{t['median_ms']:.1f}/{t['min_ms']:.1f}"


def _ratio(r: float | None) -> str:
    return "-" if r is None else f"{r:.2f}"


def _err(e: float | None, tol: float) -> str:
    return "-" if e is None else f"{e:.1e}{'!' if e > tol else ''}"


def print_table(rows: list, dtype) -> None:
    tol = tol_for(dtype)
    head = (f"{'activation workload':28} {'gc fwd':>11} {'torch fwd':>11} {'ratio':>6} | "
            f"{'gc fwd+bwd':>11} {'torch f+b':>11} {'ratio':>6} | {'1st f+b':>8} | "
            f"{'err fwd':>8} {'err bwd':>8}")
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['name']:28} {_ms(r['gridconv_fwd']):>11} {_ms(r.get('torch_fwd')):>11} "
              f"{_ratio(r.get('ratio_fwd')):>6} | {_ms(r['gridconv_fwd_bwd']):>11} "
              f"{_ms(r.get('torch_fwd_bwd')):>11} {_ratio(r.get('ratio_fwd_bwd')):>6} | "
              f"{r['gridconv_fwd_bwd']['first_ms']:8.0f} | "
              f"{_err(r.get('err_fwd'), tol):>8} {_err(r.get('err_bwd'), tol):>8}")
    print(f"times: median/min ms; ratio = gridconv/torch medians (lower is better; no "
          f"target); 1st = first gridconv fwd+bwd call ms (compile or cache load, after "
          f"the forward's warm-up); err = max|gc - torch|/max|torch| (! = above {tol:g})")
    timed = [r for r in rows if "ratio_fwd_bwd" in r]
    if timed:
        gm_f = float(np.exp(np.mean(np.log([r["ratio_fwd"] for r in timed]))))
        gm_b = float(np.exp(np.mean(np.log([r["ratio_fwd_bwd"] for r in timed]))))
        print(f"activations: geometric mean ratio forward {gm_f:.2f}, forward+backward "
              f"{gm_b:.2f} over {len(timed)} workloads")


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
    try:
        load = f"{os.getloadavg()[0]:.2f}"
    except OSError:  # pragma: no cover - not on every platform
        load = "?"
    print(f"numba {numba.__version__} threads={threads} | {torch_desc} | dtype={dtype.name} "
          f"| {os.cpu_count()} CPUs | load average {load}")

    def selected(name: str) -> bool:
        return args.only is None or args.only.lower() in name.lower()

    rows = run(cfg, dtype, selected)
    print_table(rows, dtype)
    return 0


if __name__ == "__main__":
    sys.exit(main())
