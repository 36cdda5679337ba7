"""Start-up cost of gridconv: import time and first-call latency, in fresh processes.

Run from the repository root::

    python benchmarks/startup.py               # empty cache, then warm cache (2 processes)
    python benchmarks/startup.py --runs 3      # one cold process and two warm ones
    python benchmarks/startup.py --cache-dir default   # use the normal Numba cache

Each run is a fresh ``python`` subprocess that times, with ``time.perf_counter``:

- ``import numpy``, then ``import numba``, then ``import gridconv`` (each on top of the
  previous, so the gridconv figure is gridconv's own import cost);
- the first call of a small 2-D float32 ``gridconv.conv`` (x (2, 3, 32, 32), w (8, 3, 3, 3),
  padding 1), which compiles the kernels or loads them from Numba's on-disk cache, and a
  second call of the same (the steady-state cost, for reference);
- then, in the same process, the first call of other specialisations: 1-D and 3-D float32
  conv, 2-D float64 conv, and 2-D float32 ``conv_backward``.  A small figure here means the
  specialisation was already compiled (shared kernels) or came from the cache.

By default all runs share a fresh, empty ``NUMBA_CACHE_DIR`` (a temporary directory,
removed afterwards), so process 1 shows the cold compile and process 2 shows what the
on-disk cache buys; the repository's own cache is not touched.  ``--cache-dir default``
leaves ``NUMBA_CACHE_DIR`` alone (whatever the user's setup gives); ``--cache-dir PATH``
uses PATH.  The number and size of the cache index/data files (``*.nbi``/``*.nbc``) written
are printed as a measure of how many specialisations get compiled.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

CHILD = r"""
import json, time
t0 = time.perf_counter()
import numpy as np
t1 = time.perf_counter()
import numba
t2 = time.perf_counter()
import gridconv
t3 = time.perf_counter()
res = {"import numpy": t1 - t0, "import numba": t2 - t1, "import gridconv": t3 - t2}
rng = np.random.default_rng(0)

def timed(label, fn):
    t = time.perf_counter()
    fn()
    res[label] = time.perf_counter() - t

x2 = rng.standard_normal((2, 3, 32, 32)).astype(np.float32)
w2 = rng.standard_normal((8, 3, 3, 3)).astype(np.float32)
timed("first conv 2-D float32", lambda: gridconv.conv(x2, w2, padding=1))
timed("second conv 2-D float32", lambda: gridconv.conv(x2, w2, padding=1))
x1 = rng.standard_normal((2, 3, 64)).astype(np.float32)
w1 = rng.standard_normal((8, 3, 3)).astype(np.float32)
timed("first conv 1-D float32", lambda: gridconv.conv(x1, w1, padding=1))
x3 = rng.standard_normal((2, 3, 8, 8, 8)).astype(np.float32)
w3 = rng.standard_normal((8, 3, 3, 3, 3)).astype(np.float32)
timed("first conv 3-D float32", lambda: gridconv.conv(x3, w3, padding=1))
timed("first conv 2-D float64",
      lambda: gridconv.conv(x2.astype(np.float64), w2.astype(np.float64), padding=1))
g2 = np.ones((2, 8, 32, 32), np.float32)
timed("first conv_backward 2-D float32",
      lambda: gridconv.conv_backward(g2, x2, w2, None, padding=1))
res["threads"] = numba.get_num_threads()
print("RESULT " + json.dumps(res))
"""

ROWS = [
    "import numpy", "import numba", "import gridconv",
    "first conv 2-D float32", "second conv 2-D float32",
    "first conv 1-D float32", "first conv 3-D float32", "first conv 2-D float64",
    "first conv_backward 2-D float32",
]


def cache_files(path: str) -> tuple[int, int, int]:
    """(index files, data files, total bytes) of Numba cache files under ``path``."""
    nbi = nbc = size = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            if name.endswith(".nbi"):
                nbi += 1
            elif name.endswith(".nbc"):
                nbc += 1
            else:
                continue
            size += os.path.getsize(os.path.join(root, name))
    return nbi, nbc, size


def run_child(env: dict) -> dict:
    proc = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True,
                          env=env, check=False)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        raise SystemExit(f"child process failed with status {proc.returncode}")
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=2, help="number of fresh processes (2)")
    ap.add_argument("--cache-dir", default=None,
                    help="'default' for the normal Numba cache, a path, or (default) a "
                         "fresh temporary directory")
    ap.add_argument("--json", default=None, metavar="PATH", help="save results as JSON")
    args = ap.parse_args(argv)

    env = dict(os.environ)
    tmp = None
    if args.cache_dir is None:
        tmp = tempfile.mkdtemp(prefix="gridconv-numba-cache-")
        env["NUMBA_CACHE_DIR"] = tmp
        where = f"fresh temporary NUMBA_CACHE_DIR={tmp}"
    elif args.cache_dir == "default":
        where = "NUMBA_CACHE_DIR=" + env.get("NUMBA_CACHE_DIR", "(unset: next to the sources)")
    else:
        env["NUMBA_CACHE_DIR"] = os.path.abspath(args.cache_dir)
        where = f"NUMBA_CACHE_DIR={env['NUMBA_CACHE_DIR']}"
    print(f"python {sys.version.split()[0]} | {where}")

    results = []
    try:
        for _ in range(args.runs):
            res = run_child(env)
            if tmp is not None:
                res["cache files"] = cache_files(tmp)
            results.append(res)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)

    labels = [f"process {i + 1}" for i in range(args.runs)]
    if tmp is not None:
        labels[0] += " (cold)"
        labels[1:] = [lab + " (cached)" for lab in labels[1:]]
    width = max(len(r) for r in ROWS)
    print(f"{'ms':{width}} " + " ".join(f"{lab:>20}" for lab in labels))
    for row in ROWS:
        print(f"{row:{width}} " + " ".join(f"{r[row] * 1e3:20.1f}" for r in results))
    total = [sum(r[row] for row in ROWS if row != "second conv 2-D float32") for r in results]
    print(f"{'total (all but second call)':{width}} " + " ".join(f"{t * 1e3:20.1f}"
                                                                 for t in total))
    print(f"numba threads: {results[0]['threads']}")
    if tmp is not None:
        for lab, r in zip(labels, results, strict=True):
            nbi, nbc, size = r["cache files"]
            print(f"cache after {lab}: {nbi} index (.nbi) / {nbc} data (.nbc) files, "
                  f"{size / 2**20:.1f} MB")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"cache": where, "runs": results}, fh, indent=1)
        print(f"saved {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
