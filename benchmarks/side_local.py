"""Side-by-side timings of unshared and tiled convolutions against PyTorch formulations.

Part of ``benchmarks/compare.py`` (which runs it as its "local" table), also runnable
alone from the repository root::

    python benchmarks/side_local.py [--quick] [--only 2d] [--dtype float64] [--no-memory]

PyTorch has no unshared or tiled convolution; these are the formulations users write:

- unshared: ``F.unfold`` (2-D; ``Tensor.unfold`` per axis in 1-D and 3-D) + ``einsum``
  with the per-position weights (the whole patch matrix is materialised);
- tiled: (a) one strided ``conv`` per tile offset ``p``, on ``x`` shifted by
  ``stride * p`` with stride ``stride * T``, written into the positions ``p + T*j`` of
  the output, and (b) the weight gathered per position (``w[i mod T]``) then unfold +
  einsum as for unshared. The faster of the two is the reference ("best torch").

gridconv forward+backward is the forward call followed by ``*_backward`` (gradients of
input, weight and bias); torch forward+backward is the forward on leaf tensors that
require grad followed by ``y.backward(g)``. ratio = gridconv / best torch (lower is
better). Targets (issue 3): unshared forward+backward <= 0.5, tiled <= 1.0.

Memory: each workload is re-run in a subprocess that reads the peak resident set around
one gridconv forward, then one backward call (see ``compare.py``); "extra" is the peak
above the resident set before the call minus the returned arrays. The target is extra
<= one output's size plus a per-thread tile; "unfold" is the patch matrix the PyTorch
route materialises, for scale.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass

import numpy as np

try:  # benchmarks/ is on sys.path: compare.py, or this file run as a script
    import compare
    from compare import (
        Settings,
        load_torch,
        measure,
        rel_err,
        tol_for,
    )
except ImportError:  # imported as benchmarks.side_local (asv discovers every module)
    from . import compare
    from .compare import (
        Settings,
        load_torch,
        measure,
        rel_err,
        tol_for,
    )


@dataclass(frozen=True)
class LocalWorkload:
    name: str
    op: str  # "unshared" or "tiled"
    n: int
    c_in: int
    c_out: int
    size: tuple
    k: int
    tiles: int = 1

    @property
    def rank(self) -> int:
        return len(self.size)

    def out_size(self) -> tuple:
        return tuple(s - self.k + 1 for s in self.size)  # valid padding, stride 1

    def weight_shape(self) -> tuple:
        lead = self.out_size() if self.op == "unshared" else (self.tiles,) * self.rank
        return lead + (self.c_out, self.c_in) + (self.k,) * self.rank

    def bias_shape(self) -> tuple:
        return (self.c_out,) + self.out_size() if self.op == "unshared" else (self.c_out,)

    def unfold_elements(self) -> int:
        return self.n * self.c_in * self.k ** self.rank * int(np.prod(self.out_size()))


WORKLOADS = [
    LocalWorkload("unshared 1d 16->16 L256 k3", "unshared", 16, 16, 16, (256,), 3),
    LocalWorkload("unshared 2d 16->16 32x32 k3", "unshared", 16, 16, 16, (32, 32), 3),
    LocalWorkload("unshared 3d 8->8 12^3 k3", "unshared", 4, 8, 8, (12, 12, 12), 3),
    LocalWorkload("tiled 1d 16->16 L1024 k3 T2", "tiled", 16, 16, 16, (1024,), 3, 2),
    LocalWorkload("tiled 2d 16->16 32x32 k3 T2", "tiled", 16, 16, 16, (32, 32), 3, 2),
    LocalWorkload("tiled 3d 8->8 16^3 k3 T2", "tiled", 4, 8, 8, (16, 16, 16), 3, 2),
]


def make_arrays(w: LocalWorkload, dtype, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((w.n, w.c_in, *w.size)).astype(dtype)
    fan_in = w.c_in * w.k ** w.rank
    weight = (rng.standard_normal(w.weight_shape()) / np.sqrt(fan_in)).astype(dtype)
    bias = rng.standard_normal(w.bias_shape()).astype(dtype)
    g = rng.standard_normal((w.n, w.c_out, *w.out_size())).astype(dtype)
    return x, weight, bias, g


def gridconv_calls(w: LocalWorkload, x, weight, bias, g):
    import gridconv

    fwd_fn = gridconv.unshared_conv if w.op == "unshared" else gridconv.tiled_conv
    bwd_fn = (gridconv.unshared_conv_backward if w.op == "unshared"
              else gridconv.tiled_conv_backward)

    def fwd():
        return fwd_fn(x, weight, bias)

    def bwd():
        return bwd_fn(g, x, weight, bias)

    def fwd_bwd():
        return fwd(), bwd()

    return fwd, bwd, fwd_bwd


# ------------------------------------------------------------------------- torch routes


def _patches(x, w: LocalWorkload):
    """(N, C*K, P) patch matrix: F.unfold in 2-D, Tensor.unfold per axis otherwise."""
    F = compare.F
    if w.rank == 2:
        return F.unfold(x, w.k)
    p = x
    for axis in range(2, 2 + w.rank):
        p = p.unfold(axis, w.k, 1)  # (N, C, *O, *K), a view
    perm = (0, 1) + tuple(range(2 + w.rank, 2 + 2 * w.rank)) + tuple(range(2, 2 + w.rank))
    return p.permute(perm).reshape(w.n, w.c_in * w.k ** w.rank, -1)


def _unfold_einsum(x, wpos, bias, w: LocalWorkload):
    """y[n, o, l] = sum_r patches[n, r, l] * wpos[l, o, r] (+ bias)."""
    torch = compare.torch
    npos = int(np.prod(w.out_size()))
    y = torch.einsum("nrl,lor->nol", _patches(x, w), wpos.reshape(npos, w.c_out, -1))
    y = y.reshape((w.n, w.c_out) + w.out_size())
    if bias.dim() == 1:
        return y + bias.reshape((1, -1) + (1,) * w.rank)
    return y + bias


def _gathered_weights(weight, w: LocalWorkload):
    """w[i mod T] for every output position i: (*O, C_out, C_in, *K)."""
    torch = compare.torch
    idx = [torch.arange(o) % w.tiles for o in w.out_size()]
    grids = torch.meshgrid(*idx, indexing="ij")
    return weight[grids]


def _per_offset_convs(x, weight, bias, w: LocalWorkload):
    """One strided conv per tile offset, written into the positions p + T*j."""
    conv = getattr(compare.F, f"conv{w.rank}d")
    t = w.tiles
    y = x.new_empty((w.n, w.c_out) + w.out_size())
    for p in np.ndindex(*(t,) * w.rank):
        xs = x[(slice(None), slice(None)) + tuple(slice(q, None) for q in p)]
        dst = (slice(None), slice(None)) + tuple(slice(q, None, t) for q in p)
        y[dst] = conv(xs, weight[p], bias, stride=t)
    return y


def torch_routes(w: LocalWorkload) -> dict:
    if w.op == "unshared":
        return {"unfold+einsum": lambda x, wt, b: _unfold_einsum(x, wt, b, w)}
    return {
        "conv per offset": lambda x, wt, b: _per_offset_convs(x, wt, b, w),
        "gather+unfold+einsum": lambda x, wt, b: _unfold_einsum(
            x, _gathered_weights(wt, w), b, w),
    }


def torch_calls(route, x, weight, bias, g):
    torch = compare.torch
    xt, wt, bt, gt = (torch.from_numpy(a) for a in (x, weight, bias, g))
    leaves = [t.clone().requires_grad_(True) for t in (xt, wt, bt)]

    def fwd():
        with torch.no_grad():
            return route(xt, wt, bt)

    def fwd_bwd():
        for t in leaves:
            t.grad = None
        y = route(*leaves)
        y.backward(gt)
        return y, tuple(t.grad for t in leaves)

    return fwd, fwd_bwd


# ------------------------------------------------------------------------------- running


def run_workload(w: LocalWorkload, dtype, cfg: Settings) -> dict:
    x, weight, bias, g = make_arrays(w, dtype)
    row: dict = {"name": w.name, "kind": w.op}
    fwd, _, fwd_bwd = gridconv_calls(w, x, weight, bias, g)
    t_fwd, y_gc = measure(fwd, cfg)
    t_fb, (_, grads_gc) = measure(fwd_bwd, cfg)
    row["gridconv_fwd"], row["gridconv_fwd_bwd"] = t_fwd.as_dict(), t_fb.as_dict()
    if compare.torch is None:
        return row
    best = None
    for label, route in torch_routes(w).items():
        tf, tfb = torch_calls(route, x, weight, bias, g)
        tt_fwd, y_t = measure(tf, cfg)
        tt_fb, (_, grads_t) = measure(tfb, cfg)
        row[f"torch[{label}]_fwd"] = tt_fwd.as_dict()
        row[f"torch[{label}]_fwd_bwd"] = tt_fb.as_dict()
        err = max([rel_err(y_gc, y_t.numpy())] + [
            rel_err(a, b.numpy()) for a, b in zip(grads_gc, grads_t, strict=True)])
        row[f"err[{label}]"] = err
        if best is None or tt_fb.median < best[2].median:
            best = (label, tt_fwd, tt_fb)
    label, tt_fwd, tt_fb = best
    row["torch_best"] = label
    row["torch_fwd"], row["torch_fwd_bwd"] = tt_fwd.as_dict(), tt_fb.as_dict()
    row["ratio_fwd"] = t_fwd.median / tt_fwd.median
    row["ratio_fwd_bwd"] = t_fb.median / tt_fb.median
    row["err"] = max(v for k, v in row.items() if k.startswith("err["))
    return row


def memory_worker(name: str, dtype: str, threads: int | None) -> None:
    import numba

    if threads:
        numba.set_num_threads(threads)
    w = next(w for w in WORKLOADS if w.name == name)
    x, weight, bias, g = make_arrays(w, np.dtype(dtype))
    fwd, bwd, _ = gridconv_calls(w, x, weight, bias, g)
    fwd()
    bwd()  # warm-up
    print(json.dumps(compare.workspace_bytes({"fwd": fwd, "bwd": bwd})))


def run_memory(w: LocalWorkload, dtype, threads: int | None) -> dict | None:
    data = compare.spawn_memory_worker(__file__, w.name, dtype, threads)
    if data is None:
        return None
    itemsize = np.dtype(dtype).itemsize
    data["output_bytes"] = w.n * w.c_out * int(np.prod(w.out_size())) * itemsize
    data["unfold_bytes"] = w.unfold_elements() * itemsize
    return data


def run(cfg: Settings, dtype, selected, *, memory: bool = True,
        threads: int | None = None) -> list[dict]:
    load_torch()  # into this module's view of compare (idempotent)
    rows = []
    for w in WORKLOADS:
        if not selected(w.name):
            continue
        compare.progress(f"running {w.name} ...")
        row = run_workload(w, dtype, cfg)
        if memory and compare.memory_supported():
            compare.progress(f"memory of {w.name} ...")
            row["memory"] = run_memory(w, dtype, threads)
        rows.append(row)
    compare.progress("")
    return rows


def print_table(rows: list, dtype) -> None:
    tol = tol_for(dtype)
    print("Unshared and tiled convolutions, gridconv vs the best PyTorch formulation "
          "(median ms; ratio = gridconv / torch, lower is better; targets fwd+bwd: "
          "unshared <= 0.5, tiled <= 1.0)")
    head = (f"{'workload':30s} {'gc fwd':>8s} {'gc f+b':>8s} {'torch fwd':>9s} "
            f"{'torch f+b':>9s} {'ratio fwd':>9s} {'ratio f+b':>9s} {'err':>8s}  best torch")
    print(head)
    print("-" * len(head))
    def ms(r, key):
        return f"{r[key]['median_ms']:.2f}" if key in r else "-"

    for r in rows:
        ratio_fb = r.get("ratio_fwd_bwd")
        target = 0.5 if r["kind"] == "unshared" else 1.0
        flag = "" if ratio_fb is None or ratio_fb <= target else " !"
        err = r.get("err")
        print(f"{r['name']:30s} {ms(r, 'gridconv_fwd'):>8s} {ms(r, 'gridconv_fwd_bwd'):>8s} "
              f"{ms(r, 'torch_fwd'):>9s} {ms(r, 'torch_fwd_bwd'):>9s} "
              f"{r.get('ratio_fwd', float('nan')):9.2f} "
              f"{(ratio_fb if ratio_fb is not None else float('nan')):9.2f}{flag:2s}"
              f"{'' if err is None else f'{err:8.1e}'}{' !' if err and err > tol else ''}"
              f"  {r.get('torch_best', '-')}")
    mem = [r for r in rows if r.get("memory")]
    if mem:
        print()
        print("Extra memory of gridconv (MB): peak above the resident set, minus the "
              "returned arrays; target <= output + a per-thread tile")
        print(f"{'workload':30s} {'fwd':>8s} {'bwd':>8s} {'output':>8s} {'unfold':>8s}")
        for r in mem:
            m = r["memory"]
            print(f"{r['name']:30s} {m['extra_fwd_bytes'] / 1e6:8.2f} "
                  f"{m['extra_bwd_bytes'] / 1e6:8.2f} {m['output_bytes'] / 1e6:8.2f} "
                  f"{m['unfold_bytes'] / 1e6:8.2f}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", default=None)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--json", default=None, metavar="PATH")
    ap.add_argument("--memory-worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.memory_worker:
        memory_worker(args.memory_worker, args.dtype, args.threads)
        return 0
    import numba

    cfg, _ = compare.standalone_setup(args.quick, args.threads)
    dtype = np.dtype(args.dtype)
    print(f"threads={numba.get_num_threads()} dtype={dtype.name} load={os.getloadavg()[0]:.2f}")
    rows = run(cfg, dtype, lambda name: args.only is None or args.only.lower() in name.lower(),
               memory=not args.no_memory, threads=args.threads)
    print_table(rows, dtype)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
