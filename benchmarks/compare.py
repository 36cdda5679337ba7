"""Side-by-side timings of gridconv against PyTorch CPU and SciPy, in one run.

Run from the repository root::

    python benchmarks/compare.py                 # full run (a few minutes on 2 cores)
    python benchmarks/compare.py --quick         # fewer repeats, slow SciPy paths skipped
    python benchmarks/compare.py --only 2d       # workloads whose name contains "2d"
    python benchmarks/compare.py --dtype float64 --json out.json
    python benchmarks/compare.py --suites local,pool   # only those tables

Two tables are defined here; the other operation families add theirs from side modules
(``benchmarks/side_local.py``: unshared and tiled convolutions against PyTorch's
``unfold`` + ``einsum`` and per-offset strided convs, with memory;
``side_pool.py``: pooling; ``side_activation.py``: activations), each documented in
its own docstring and runnable alone.

1. Multi-channel convolutions (the workloads of SPEC section 3), gridconv against PyTorch's
   CPU convolutions (oneDNN), forward and forward+backward:

   - gridconv forward is ``gridconv.conv`` (or ``conv_transpose``); forward+backward is that
     call followed by ``gridconv.conv_backward`` (``conv_transpose_backward``) with a fixed
     upstream gradient, returning the gradients of input, weight and bias.
   - torch forward is ``F.conv{1,2,3}d`` (``conv_transpose2d``) under ``torch.no_grad()``;
     forward+backward is the same call on leaf tensors that require grad followed by
     ``y.backward(g)`` with the same upstream gradient ``g``.
   - Every measurement starts with one warm-up call, reported separately as "first call"
     (for gridconv it includes Numba compilation or loading from Numba's on-disk cache),
     followed by up to ``--repeats`` timed calls (``time.perf_counter``), stopping early
     once ``--budget`` seconds are spent and at least ``--min-repeats`` calls are done.
     gridconv's and torch's calls alternate (``measure_pair``), so that the slow spells
     of a shared machine fall on both alike. Times are the median and minimum of those
     calls, in milliseconds.
   - torch is imported with ``OMP_WAIT_POLICY`` unset (``load_torch``): gridconv sets it
     to PASSIVE for its own OpenMP runtime, and torch's bundled one, reading it, ran
     short ops 2-10x slower. Each library runs with its own defaults.
   - ratio = median(gridconv) / median(torch); lower is better.  Targets: forward <= 1.0,
     forward+backward <= 1.2.  Both libraries use the same number of threads
     (``torch.set_num_threads(numba.get_num_threads())``, BLAS/OpenMP pools limited to it
     with threadpoolctl when it is installed), printed in the header.
   - err = max |gridconv - torch| / max |torch| (the output's scale), over the output for
     forward and over the three gradients for backward; both in the working dtype.
     Values above 1e-4 (float32) or 1e-10 (float64) are flagged with "!".

   SciPy has no batched multi-channel convolution, so it appears only in table 2.

2. Single-channel filtering (forward only), gridconv ``conv(x[None, None], w[None, None],
   padding="same")`` against ``scipy.ndimage.correlate(mode="constant")`` and
   ``scipy.signal.correlate(mode="same")`` with ``method`` "auto", "fft" and "direct"; the
   best SciPy median and the variant that won are printed, ratio = gridconv / best SciPy.
   err is gridconv against ``scipy.ndimage.correlate``.  SciPy calls that take longer than
   ``--budget`` are timed once (no compilation there, the warm-up call is the sample), and
   with ``--quick`` "direct" is skipped where it would do more than 2e8 multiply-adds (its
   run time there is tens of seconds; ndimage does the same arithmetic faster).  SciPy's
   filters are single-threaded.

Memory.  ``tracemalloc`` does not see Numba's allocations, so peak memory is measured from
the kernel's resident set: each workload is re-run in a fresh subprocess (with glibc's
mmap threshold pinned at 128 KiB so that large buffers are returned to the OS when freed)
that warms up, resets the peak-RSS counter (``/proc/self/clear_refs``, Linux), calls the
gridconv forward (then backward) once and reads ``VmHWM``.  "extra" is the peak above the
resident set before the call minus the bytes of the returned arrays, i.e. the workspace
the call used; "im2col" is the size of the full patch matrix a naive implementation would
materialise, for scale.  Off non-Linux systems, or with ``--no-memory``, the memory table
is skipped.  The asv suite (``benchmarks/bench_conv.py``) also has ``peakmem_*``
benchmarks that track whole-process peak RSS across commits.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np

torch = None  # imported by load_torch(), only when a comparison runs
F = None


def load_torch() -> bool:
    """Import torch (optional) into the module globals; True when available."""
    global torch, F
    # gridconv sets OMP_WAIT_POLICY=PASSIVE for its own OpenMP runtime when the user has
    # not; torch's bundled libgomp reads the variable when it loads, and passive waiting
    # makes torch's short parallel regions 2-10x slower. Torch is measured with its own
    # defaults: the variable is unset while torch loads.
    hide = "gridconv" in sys.modules and os.environ.get("OMP_WAIT_POLICY") == "PASSIVE"
    saved = os.environ.pop("OMP_WAIT_POLICY") if hide else None
    try:
        import torch as _torch
        import torch.nn.functional as _F
    except ImportError:  # pragma: no cover - depends on the environment
        return False
    finally:
        if saved is not None:
            os.environ["OMP_WAIT_POLICY"] = saved
    torch, F = _torch, _F
    return True


# ----------------------------------------------------------------------------- workloads


@dataclass(frozen=True)
class Workload:
    """One multi-channel convolution: ``x`` is (n, c_in, *size)."""

    name: str
    n: int
    c_in: int
    c_out: int
    size: tuple
    k: int
    stride: int = 1
    padding: object = 0  # as given to gridconv
    torch_padding: int = -1  # as given to torch; -1: same as padding
    groups: int = 1
    transposed: bool = False

    @property
    def rank(self) -> int:
        return len(self.size)

    def gc_params(self) -> dict:
        p = dict(stride=self.stride, padding=self.padding, dilation=1, groups=self.groups)
        if self.transposed:
            p["output_padding"] = 0
        return p

    def torch_params(self) -> dict:
        pad = self.padding if self.torch_padding < 0 else self.torch_padding
        return dict(stride=self.stride, padding=pad, dilation=1, groups=self.groups)

    def weight_shape(self) -> tuple:
        kernel = (self.k,) * self.rank
        if self.transposed:
            return (self.c_in, self.c_out // self.groups, *kernel)
        return (self.c_out, self.c_in // self.groups, *kernel)

    def out_size(self) -> tuple:
        pad = self.padding if self.torch_padding < 0 else self.torch_padding
        if self.transposed:
            return tuple((i - 1) * self.stride - 2 * pad + self.k for i in self.size)
        return tuple((i + 2 * pad - self.k) // self.stride + 1 for i in self.size)

    def im2col_elements(self) -> int:
        """Elements of the full patch matrix (conv) or column matrix (transposed conv)."""
        taps = self.k ** self.rank
        if self.transposed:
            return self.n * self.c_out * taps * int(np.prod(self.size))
        return self.n * self.c_in * taps * int(np.prod(self.out_size()))


WORKLOADS = [
    Workload("1d audio 1->32 L16000 k80 s4", 16, 1, 32, (16000,), 80, stride=4),
    Workload("1d 32->64 L4000 k3 same", 16, 32, 64, (4000,), 3, padding="same",
             torch_padding=1),
    Workload("2d 3->64 64x64 k3", 32, 3, 64, (64, 64), 3, padding=1),
    Workload("2d 64->64 32x32 k3", 32, 64, 64, (32, 32), 3, padding=1),
    Workload("2d 64->128 32x32 k3 s2", 32, 64, 128, (32, 32), 3, stride=2, padding=1),
    Workload("2d depthwise 64 32x32 k3", 32, 64, 64, (32, 32), 3, padding=1, groups=64),
    Workload("2d spectrogram 1->32 128x128 k5", 16, 1, 32, (128, 128), 5, padding=2),
    Workload("3d 1->16 64^3 k3", 2, 1, 16, (64, 64, 64), 3, padding=1),
    Workload("3d 16->32 32^3 k3", 2, 16, 32, (32, 32, 32), 3, padding=1),
    Workload("2d transposed 64->32 16->32 k2 s2", 16, 64, 32, (16, 16), 2, stride=2,
             transposed=True),
]


@dataclass(frozen=True)
class Filter:
    """Single-channel filtering of a ``size`` array with a ``kernel`` array."""

    name: str
    size: tuple
    kernel: tuple


FILTERS = [
    Filter("filter image 2048^2 k5x5", (2048, 2048), (5, 5)),
    Filter("filter image 2048^2 k15x15", (2048, 2048), (15, 15)),
    Filter("filter volume 256^3 k3^3", (256, 256, 256), (3, 3, 3)),
    Filter("filter signal 1e6 k101", (10**6,), (101,)),
]

# Tables: "conv" and "filter" are defined here; the others live in benchmarks/side_<name>.py
# (unshared/tiled convolutions, pooling, activations) with a run() and a print_table().
SIDE_SUITES = ("local", "pool", "activation")
SUITES = ("conv", "filter") + SIDE_SUITES

DIRECT_MAC_LIMIT = 2e8  # --quick skips scipy "direct" above this many multiply-adds


# ----------------------------------------------------------------------------- timing


@dataclass
class Timing:
    first: float  # seconds, the warm-up call
    samples: list = field(default_factory=list)  # seconds

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def min(self) -> float:
        return min(self.samples)

    def as_dict(self) -> dict:
        return {"first_ms": self.first * 1e3, "median_ms": self.median * 1e3,
                "min_ms": self.min * 1e3, "n": len(self.samples)}


@dataclass
class Settings:
    repeats: int
    min_repeats: int
    budget: float


def measure(fn: Callable, cfg: Settings, *, warmup_counts: bool = False):
    """Call ``fn`` once (warm-up, timed as "first"), then time repeated calls.

    With ``warmup_counts`` (for code with no compilation step), a warm-up call longer
    than the budget is used as the only sample.  Returns (Timing, result of warm-up).
    """
    gc.collect()
    t0 = time.perf_counter()
    result = fn()
    timing = Timing(first=time.perf_counter() - t0)
    if warmup_counts and timing.first > cfg.budget:
        timing.samples.append(timing.first)
        return timing, result
    start = time.perf_counter()
    while len(timing.samples) < cfg.repeats:
        t0 = time.perf_counter()
        fn()
        timing.samples.append(time.perf_counter() - t0)
        if len(timing.samples) >= cfg.min_repeats and time.perf_counter() - start > cfg.budget:
            break
    return timing, result


def measure_pair(fa: Callable, fb: Callable, cfg: Settings):
    """:func:`measure` for two calls at once, alternating ``fa, fb, fa, fb, ...``.

    On a shared machine the slow spells (other tenants, frequency changes) then fall on
    both sides alike, instead of on whichever was being timed; the ratio of their medians
    is far steadier than from two separate runs. Returns (Timing a, result a, Timing b,
    result b).
    """
    gc.collect()
    timings, results = [], []
    for fn in (fa, fb):
        t0 = time.perf_counter()
        results.append(fn())
        timings.append(Timing(first=time.perf_counter() - t0))
    start = time.perf_counter()
    while len(timings[0].samples) < cfg.repeats:
        for fn, timing in zip((fa, fb), timings, strict=True):
            t0 = time.perf_counter()
            fn()
            timing.samples.append(time.perf_counter() - t0)
        if (len(timings[0].samples) >= cfg.min_repeats
                and time.perf_counter() - start > 2 * cfg.budget):
            break
    return timings[0], results[0], timings[1], results[1]


def standalone_setup(quick: bool, threads: int | None) -> tuple[Settings, int]:
    """Set-up of a side module run on its own: numba's thread count (``threads`` or its
    default), torch (when importable) on the same count, and the timing settings."""
    import numba

    if threads:
        numba.set_num_threads(threads)
    threads = numba.get_num_threads()
    if load_torch():
        torch.set_num_threads(threads)
    cfg = Settings(repeats=3 if quick else 7, min_repeats=2 if quick else 3,
                   budget=0.5 if quick else 2.0)
    return cfg, threads


def rel_err(a, b) -> float:
    """max |a - b| / max |b| (b is the reference)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    scale = np.max(np.abs(b)) if b.size else 0.0
    diff = np.max(np.abs(a - b)) if b.size else 0.0
    return float(diff / scale) if scale > 0 else float(diff)


def tol_for(dtype) -> float:
    return 1e-4 if np.dtype(dtype) == np.float32 else 1e-10


# ----------------------------------------------------------------------------- workloads run


def make_arrays(w: Workload, dtype, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((w.n, w.c_in, *w.size)).astype(dtype)
    weight = (rng.standard_normal(w.weight_shape()) / np.sqrt(np.prod(w.weight_shape()[1:])))
    weight = weight.astype(dtype)
    bias = rng.standard_normal(w.c_out).astype(dtype)
    g = rng.standard_normal((w.n, w.c_out, *w.out_size())).astype(dtype)
    return x, weight, bias, g


def gridconv_calls(w: Workload, x, weight, bias, g):
    import gridconv

    params = w.gc_params()
    if w.transposed:
        fwd_fn, bwd_fn = gridconv.conv_transpose, gridconv.conv_transpose_backward
    else:
        fwd_fn, bwd_fn = gridconv.conv, gridconv.conv_backward

    def fwd():
        return fwd_fn(x, weight, bias, **params)

    def fwd_bwd():
        y = fwd_fn(x, weight, bias, **params)
        return y, bwd_fn(g, x, weight, bias, **params)

    return fwd, fwd_bwd


def torch_calls(w: Workload, x, weight, bias, g):
    if w.transposed:
        op = getattr(F, f"conv_transpose{w.rank}d")
    else:
        op = getattr(F, f"conv{w.rank}d")
    params = w.torch_params()
    xt, wt, bt, gt = (torch.from_numpy(a) for a in (x, weight, bias, g))
    leaves = [t.clone().requires_grad_(True) for t in (xt, wt, bt)]

    def fwd():
        with torch.no_grad():
            return op(xt, wt, bt, **params)

    def fwd_bwd():
        for t in leaves:
            t.grad = None
        y = op(*leaves, **params)
        y.backward(gt)
        return y, tuple(t.grad for t in leaves)

    return fwd, fwd_bwd


def run_workload(w: Workload, dtype, cfg: Settings) -> dict:
    x, weight, bias, g = make_arrays(w, dtype)
    row: dict = {"name": w.name, "kind": "conv"}
    gc_fwd, gc_fb = gridconv_calls(w, x, weight, bias, g)
    if torch is None:
        t_gc_fwd, y_gc = measure(gc_fwd, cfg)
        t_gc_fb, (_, grads_gc) = measure(gc_fb, cfg)
        row["gridconv_fwd"] = t_gc_fwd.as_dict()
        row["gridconv_fwd_bwd"] = t_gc_fb.as_dict()
        return row
    t_fwd, t_fb = torch_calls(w, x, weight, bias, g)
    t_gc_fwd, y_gc, t_t_fwd, y_t = measure_pair(gc_fwd, t_fwd, cfg)
    t_gc_fb, (_, grads_gc), t_t_fb, (_, grads_t) = measure_pair(gc_fb, t_fb, cfg)
    row["gridconv_fwd"] = t_gc_fwd.as_dict()
    row["gridconv_fwd_bwd"] = t_gc_fb.as_dict()
    row["torch_fwd"] = t_t_fwd.as_dict()
    row["torch_fwd_bwd"] = t_t_fb.as_dict()
    row["ratio_fwd"] = t_gc_fwd.median / t_t_fwd.median
    row["ratio_fwd_bwd"] = t_gc_fb.median / t_t_fb.median
    row["err_fwd"] = rel_err(y_gc, y_t.numpy())
    row["err_bwd"] = max(rel_err(a, b.numpy()) for a, b in zip(grads_gc, grads_t,
                                                                strict=True))
    return row


# ----------------------------------------------------------------------------- filtering


def run_filter(f: Filter, dtype, cfg: Settings, quick: bool) -> dict:
    import scipy.ndimage as ndi
    import scipy.signal as sig

    import gridconv

    rng = np.random.default_rng(1)
    x = rng.standard_normal(f.size).astype(dtype)
    k = rng.standard_normal(f.kernel).astype(dtype)
    x4, k4 = x[None, None], k[None, None]

    def gc_call():
        return gridconv.conv(x4, k4, padding="same")[0, 0]

    row: dict = {"name": f.name, "kind": "filter"}
    t_gc, y_gc = measure(gc_call, cfg)
    row["gridconv_fwd"] = t_gc.as_dict()

    scipy_times: dict = {}
    t_nd, y_nd = measure(lambda: ndi.correlate(x, k, mode="constant", cval=0.0), cfg,
                         warmup_counts=True)
    scipy_times["ndimage.correlate"] = t_nd
    macs = float(np.prod(f.size)) * float(np.prod(f.kernel))
    skipped = []
    for method in ("auto", "fft", "direct"):
        if quick and method == "direct" and macs > DIRECT_MAC_LIMIT:
            skipped.append(f"signal.correlate[{method}]")
            continue
        t, _ = measure(lambda m=method: sig.correlate(x, k, mode="same", method=m), cfg,
                       warmup_counts=True)
        scipy_times[f"signal.correlate[{method}]"] = t
    best = min(scipy_times, key=lambda name: scipy_times[name].median)
    row["scipy"] = {name: t.as_dict() for name, t in scipy_times.items()}
    row["scipy_skipped"] = skipped
    row["scipy_best"] = best
    row["scipy_best_fwd"] = scipy_times[best].as_dict()
    row["ratio_fwd"] = t_gc.median / scipy_times[best].median
    row["err_fwd"] = rel_err(y_gc, y_nd)
    return row


# ----------------------------------------------------------------------------- memory


def _proc_status_kb(key: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")


def workspace_bytes(calls: dict) -> dict:
    """``extra_<label>_bytes`` of each call: its peak resident set above the one before
    it, minus the arrays it returned (run in a fresh process, after a warm-up)."""
    out: dict = {}
    for label, fn in calls.items():
        gc.collect()
        _reset_peak()
        before = _proc_status_kb("VmRSS")
        res = fn()
        peak = _proc_status_kb("VmHWM")
        arrays = res if isinstance(res, tuple) else (res,)
        returned = sum(a.nbytes for a in arrays if a is not None)
        out[f"extra_{label}_bytes"] = max(0, (peak - before) * 1024 - returned)
        del res, arrays
    return out


def memory_worker(name: str, dtype: str, threads: int | None) -> None:
    """Entry point of the memory subprocess: prints one JSON line."""
    import numba

    if threads:
        numba.set_num_threads(threads)
    w = next(w for w in WORKLOADS if w.name == name)
    x, weight, bias, g = make_arrays(w, np.dtype(dtype))
    fwd, _ = gridconv_calls(w, x, weight, bias, g)
    import gridconv

    bwd_fn = gridconv.conv_transpose_backward if w.transposed else gridconv.conv_backward
    params = w.gc_params()

    def bwd():
        return bwd_fn(g, x, weight, bias, **params)

    fwd()
    bwd()  # warm-up: compile or load from cache, start the thread pool
    print(json.dumps(workspace_bytes({"fwd": fwd, "bwd": bwd})))


def memory_supported() -> bool:
    try:
        _reset_peak()
        _proc_status_kb("VmHWM")
        return True
    except OSError:
        return False


def spawn_memory_worker(script: str, name: str, dtype, threads: int | None) -> dict | None:
    """Run ``script --memory-worker name`` in a fresh process (glibc returning freed
    buffers to the OS) and parse its JSON line; None, with its stderr shown, on failure."""
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072", MALLOC_TRIM_THRESHOLD_="131072")
    cmd = [sys.executable, os.path.abspath(script), "--memory-worker", name,
           "--dtype", np.dtype(dtype).name]
    if threads:
        cmd += ["--threads", str(threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        print(f"  memory subprocess failed for {name!r}:\n{proc.stderr[-2000:]}",
              file=sys.stderr)
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_memory(w: Workload, dtype, threads: int | None) -> dict | None:
    data = spawn_memory_worker(__file__, w.name, dtype, threads)
    if data is None:
        return None
    itemsize = np.dtype(dtype).itemsize
    x_shape = (w.n, w.c_in, *w.size)
    data["input_bytes"] = int(np.prod(x_shape)) * itemsize
    data["output_bytes"] = w.n * w.c_out * int(np.prod(w.out_size())) * itemsize
    data["im2col_bytes"] = w.im2col_elements() * itemsize
    return data


# ----------------------------------------------------------------------------- printing


def _ms(t: dict | None) -> str:
    if t is None:
        return "-"
    return f"{t['median_ms']:.1f}/{t['min_ms']:.1f}"


def _ratio(r: float | None, target: float) -> str:
    if r is None:
        return "-"
    return f"{r:.2f}{'' if r <= target else '*'}"


def _err(e: float | None, tol: float) -> str:
    if e is None:
        return "-"
    return f"{e:.1e}{'!' if e > tol else ''}"


def print_conv_table(rows: list, dtype) -> None:
    tol = tol_for(dtype)
    head = (f"{'workload':34} {'gc fwd':>13} {'torch fwd':>13} {'ratio':>6} | "
            f"{'gc fwd+bwd':>13} {'torch fwd+bwd':>13} {'ratio':>6} | "
            f"{'1st fwd':>8} {'1st f+b':>8} | {'err fwd':>8} {'err bwd':>8}")
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['name']:34} {_ms(r['gridconv_fwd']):>13} {_ms(r.get('torch_fwd')):>13} "
              f"{_ratio(r.get('ratio_fwd'), 1.0):>6} | "
              f"{_ms(r['gridconv_fwd_bwd']):>13} {_ms(r.get('torch_fwd_bwd')):>13} "
              f"{_ratio(r.get('ratio_fwd_bwd'), 1.2):>6} | "
              f"{r['gridconv_fwd']['first_ms']:8.0f} {r['gridconv_fwd_bwd']['first_ms']:8.0f} | "
              f"{_err(r.get('err_fwd'), tol):>8} {_err(r.get('err_bwd'), tol):>8}")
    print("times: median/min ms; ratio = gridconv/torch medians (* = misses target: "
          "fwd <= 1.0, fwd+bwd <= 1.2); 1st = first gridconv call ms (compile or cache "
          "load); err = max|gc - torch|/max|torch| (! = above tolerance)")


def print_filter_table(rows: list, dtype) -> None:
    tol = tol_for(dtype)
    head = (f"{'workload':34} {'gc fwd':>13} {'best scipy':>13} {'ratio':>6}  "
            f"{'scipy winner':26} {'1st gc':>8} {'err':>8}  other scipy medians (ms)")
    print(head)
    print("-" * len(head))
    for r in rows:
        others = ", ".join(
            f"{name.replace('signal.correlate', 'signal')}={t['median_ms']:.0f}"
            + ("(1x)" if t["n"] == 1 else "")
            for name, t in r["scipy"].items() if name != r["scipy_best"])
        if r["scipy_skipped"]:
            others += ", skipped: " + ", ".join(r["scipy_skipped"])
        print(f"{r['name']:34} {_ms(r['gridconv_fwd']):>13} {_ms(r['scipy_best_fwd']):>13} "
              f"{_ratio(r['ratio_fwd'], 1.0):>6}  {r['scipy_best']:26} "
              f"{r['gridconv_fwd']['first_ms']:8.0f} {_err(r['err_fwd'], tol):>8}  {others}")
    print("ratio = gridconv / best SciPy median (* = slower than SciPy); err = max|gc - "
          "ndimage|/max|ndimage|; (1x) = timed once (slow call)")


def print_memory_table(rows: list) -> None:
    mb = 1 / 2**20
    head = (f"{'workload':34} {'input MB':>9} {'output MB':>9} {'im2col MB':>9} "
            f"{'extra fwd MB':>12} {'extra bwd MB':>12}")
    print(head)
    print("-" * len(head))
    for r in rows:
        m = r.get("memory")
        if not m:
            continue
        print(f"{r['name']:34} {m['input_bytes'] * mb:9.1f} {m['output_bytes'] * mb:9.1f} "
              f"{m['im2col_bytes'] * mb:9.1f} {m['extra_fwd_bytes'] * mb:12.1f} "
              f"{m['extra_bwd_bytes'] * mb:12.1f}")
    print("extra = peak RSS during one call above the RSS before it, minus the returned "
          "arrays (workspace); im2col = size of a full patch matrix, for scale")


def print_summary(conv_rows: list, filter_rows: list, dtype) -> None:
    tol = tol_for(dtype)
    with_torch = [r for r in conv_rows if "ratio_fwd" in r]
    parts = []
    if with_torch:
        n = len(with_torch)
        ok_f = sum(r["ratio_fwd"] <= 1.0 for r in with_torch)
        ok_b = sum(r["ratio_fwd_bwd"] <= 1.2 for r in with_torch)
        bad = sum(max(r["err_fwd"], r["err_bwd"]) > tol for r in with_torch)
        parts.append(f"vs torch: forward <= 1.0 met {ok_f}/{n}, forward+backward <= 1.2 "
                     f"met {ok_b}/{n}, results within {tol:g} of torch {n - bad}/{n}")
    elif conv_rows:
        parts.append("vs torch: not measured (torch not importable)")
    if filter_rows:
        n = len(filter_rows)
        ok = sum(r["ratio_fwd"] <= 1.0 for r in filter_rows)
        bad = sum(r["err_fwd"] > tol for r in filter_rows)
        parts.append(f"filtering vs best SciPy <= 1.0 met {ok}/{n}, results within "
                     f"{tol:g} of ndimage {n - bad}/{n}")
    print("SUMMARY: " + "; ".join(parts))


# ----------------------------------------------------------------------------- main


def progress(msg: str) -> None:
    """Transient progress line on a terminal; nothing when stderr is redirected."""
    if sys.stderr.isatty():
        print(f"\r\033[K  {msg}", end="", file=sys.stderr, flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    ap.add_argument("--quick", action="store_true",
                    help="fewer repeats, smaller time budget, slow SciPy paths skipped")
    ap.add_argument("--only", default=None, help="substring filter on workload names")
    ap.add_argument("--json", default=None, metavar="PATH", help="save results as JSON")
    ap.add_argument("--repeats", type=int, default=None, help="max timed calls (default 7)")
    ap.add_argument("--budget", type=float, default=None,
                    help="seconds per measurement after which repeats stop (default 2)")
    ap.add_argument("--threads", type=int, default=None,
                    help="thread count for numba and torch (default: numba's default)")
    ap.add_argument("--no-memory", action="store_true", help="skip the memory table")
    ap.add_argument("--no-filters", action="store_true", help="skip the SciPy table")
    ap.add_argument("--suites", default=",".join(SUITES),
                    help=f"comma-separated tables to run, from {','.join(SUITES)} "
                         f"(default: all)")
    ap.add_argument("--memory-worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.memory_worker:
        memory_worker(args.memory_worker, args.dtype, args.threads)
        return 0

    import numba
    import scipy

    load_torch()  # first, so that torch's OpenMP runtime starts with its own defaults

    import gridconv

    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover
        threadpool_limits = None
    if args.threads:
        numba.set_num_threads(args.threads)
    threads = numba.get_num_threads()
    if torch is not None:
        torch.set_num_threads(threads)
    cfg = Settings(repeats=args.repeats or (3 if args.quick else 7),
                   min_repeats=2 if args.quick else 3,
                   budget=args.budget or (0.5 if args.quick else 2.0))
    dtype = np.dtype(args.dtype)

    def selected(name: str) -> bool:
        return args.only is None or args.only.lower() in name.lower()

    suites = [name.strip() for name in args.suites.split(",") if name.strip()]
    unknown = sorted(set(suites) - set(SUITES))
    if unknown:
        ap.error(f"unknown suites {unknown}; choose from {list(SUITES)}")
    workloads = [w for w in WORKLOADS if selected(w.name)] if "conv" in suites else []
    filters = [] if args.no_filters or "filter" not in suites else [
        f for f in FILTERS if selected(f.name)]

    torch_desc = (f"torch {torch.__version__} threads={torch.get_num_threads()}"
                  if torch is not None else "torch not importable")
    print(f"gridconv {gridconv.__version__} | numba {numba.__version__} threads={threads} | "
          f"{torch_desc} | scipy {scipy.__version__} (single-threaded) | numpy "
          f"{np.__version__}")
    print(f"dtype={dtype.name} repeats<={cfg.repeats} (min {cfg.min_repeats}, budget "
          f"{cfg.budget:g}s/measurement) | {platform.machine()} {os.cpu_count()} CPUs | "
          f"python {platform.python_version()}")

    try:
        load = os.getloadavg()[0]
    except OSError:  # pragma: no cover - not on every platform
        load = float("nan")
    print(f"load average (1 min) at start: {load:.2f}"
          + ("  WARNING: the machine is busy, timings will be noisy"
             if load > 0.5 * (os.cpu_count() or 1) else ""))

    limits = threadpool_limits(limits=threads) if threadpool_limits else None
    t_start = time.perf_counter()
    phases: dict = {}
    conv_rows, filter_rows = [], []
    side_rows: dict = {}
    try:
        if workloads:
            print()
            t0 = time.perf_counter()
            for w in workloads:
                progress(f"running {w.name} ...")
                conv_rows.append(run_workload(w, dtype, cfg))
            progress("")
            print_conv_table(conv_rows, dtype)
            phases["conv_s"] = time.perf_counter() - t0
        if filters:
            print()
            t0 = time.perf_counter()
            for f in filters:
                progress(f"running {f.name} ...")
                filter_rows.append(run_filter(f, dtype, cfg, args.quick))
            progress("")
            print_filter_table(filter_rows, dtype)
            phases["filter_s"] = time.perf_counter() - t0
        if workloads and not args.no_memory:
            print()
            t0 = time.perf_counter()
            if memory_supported():
                for w, row in zip(workloads, conv_rows, strict=True):
                    progress(f"memory {w.name} ...")
                    row["memory"] = run_memory(w, dtype, args.threads)
                progress("")
                print_memory_table(conv_rows)
            else:
                print("memory: skipped (needs Linux /proc/self/clear_refs)")
            phases["memory_s"] = time.perf_counter() - t0
        for name in (n for n in SIDE_SUITES if n in suites):
            # the side modules of the other operation families (benchmarks/side_*.py)
            module = importlib.import_module(f"side_{name}")
            t0 = time.perf_counter()
            kwargs = ({"memory": not args.no_memory, "threads": args.threads}
                      if name == "local" else {})
            rows = module.run(cfg, dtype, selected, **kwargs)
            if rows:
                print()
                module.print_table(rows, dtype)
            side_rows[name] = rows
            phases[f"{name}_s"] = time.perf_counter() - t0
    finally:
        if limits is not None:
            limits.restore_original_limits()

    print()
    print_summary(conv_rows, filter_rows, dtype)
    elapsed = time.perf_counter() - t_start
    print(f"total {elapsed:.0f} s (" + ", ".join(
        f"{k[:-2]} {v:.0f} s" for k, v in phases.items()) + ")")

    if args.json:
        meta = {
            "gridconv": gridconv.__version__, "numba": numba.__version__,
            "torch": torch.__version__ if torch is not None else None,
            "scipy": scipy.__version__, "numpy": np.__version__, "threads": threads,
            "dtype": dtype.name, "settings": asdict(cfg), "quick": args.quick,
            "machine": platform.machine(), "cpus": os.cpu_count(),
            "python": platform.python_version(), "platform": platform.platform(),
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "elapsed_s": elapsed,
            "phases_s": phases, "load_average_at_start": load,
        }
        with open(args.json, "w") as fh:
            json.dump({"meta": meta, "conv": conv_rows, "filter": filter_rows, **side_rows}, fh,
                      indent=1)
        print(f"saved {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
