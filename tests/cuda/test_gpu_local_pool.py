"""The tiled GPU kernels of unshared and tiled convolutions and of pooling, against
gridconv.reference, on tiny shapes that never fill a block (and, under the simulator,
need several blocks): every padding form and mode, strides, dilations, both dtypes,
batches and channel counts that leave partial sample / channel tiles, periods longer
than the output, the fallbacks for tiles too large for shared memory, and determinism.

Run by tests/test_cuda.py in a process of its own (see tests/cuda/conftest.py).
"""

from __future__ import annotations

import numpy as np
import pytest
from test_gpu_ops import both_close as all_close  # tests/cuda is on sys.path
from test_gpu_ops import close, d

import gridconv as gc
from gridconv import reference as ref
from gridconv._cuda import kernels as K
from gridconv._cuda import ops

RNG = np.random.default_rng(4321)


def rand(*shape, dtype=np.float32):
    return RNG.standard_normal(shape).astype(dtype)


@pytest.fixture
def launched(monkeypatch):
    """The names of the kernels launched (through kernels.get) during a test."""
    names = []
    real = K.get

    def spy(name, dtype):
        names.append(name)
        return real(name, dtype)

    monkeypatch.setattr(K, "get", spy)
    return names


def out_size(xs, ks, kw):
    return gc.conv(np.zeros(xs), np.zeros((1, xs[1]) + ks), **kw).shape[2:]


# -------------------------------------------------------------------------- unshared

# (x shape, kernel, c_out, kwargs): odd sizes; batches of 1, 3 and 5 against the 4
# samples per thread; 1, 5 and 9 output channels against the 8 per thread
UNSHARED = [
    ((3, 2, 9), 2, 5, dict(stride=2, padding=((1, 2),))),
    ((1, 3, 6, 7), (3, 2), 9, dict(stride=(2, 1), dilation=(1, 2), padding="same",
                                   padding_mode="replicate")),
    ((5, 1, 5, 4), 3, 1, dict(padding="valid")),
    ((1, 2, 4, 5), 2, 3, dict(padding=((0, 1), (2, 0)), padding_mode="circular")),
    ((1, 1, 2, 3, 4), (2, 1, 3), 2, dict(stride=(1, 1, 2), padding="full",
                                         padding_mode="reflect")),
]


@pytest.mark.parametrize("xs, k, cout, kw", UNSHARED)
def test_unshared_forward_backward(xs, k, cout, kw, launched):
    nd = len(xs) - 2
    ks = (k,) * nd if isinstance(k, int) else k
    out = out_size(xs, ks, kw)
    x, w, b = rand(*xs), rand(*out, cout, xs[1], *ks), rand(cout, *out)
    y = ref.unshared_conv(x, w, b, **kw)
    close(gc.unshared_conv(d(x), d(w), d(b), **kw), y)
    g = rand(*y.shape)
    all_close(gc.unshared_conv_backward(d(g), d(x), d(w), d(b), **kw),
              ref.unshared_conv_backward(g, x, w, b, **kw))
    # the per-position gather on prepacked weights, the GEMM weight gradient
    assert {"pack", "wgrad"} <= set(launched)
    assert any(n.startswith("local") for n in launched)
    assert not any(n.startswith("gather") for n in launched)


def test_unshared_float64_and_deterministic():
    xs, ks, kw = (2, 1, 6, 5), (3, 2), dict(stride=(1, 2), padding=1, dilation=(2, 1))
    out = out_size(xs, ks, kw)
    x, w = rand(*xs, dtype=np.float64), rand(*out, 3, 1, *ks, dtype=np.float64)
    y = ref.unshared_conv(x, w, **kw)
    close(gc.unshared_conv(d(x), d(w), **kw), y, np.float64)
    g = rand(*y.shape, dtype=np.float64)
    want = ref.unshared_conv_backward(g, x, w, **kw)
    a = gc.to_host(gc.unshared_conv_backward(d(g), d(x), d(w), **kw))
    all_close(a, want, np.float64)
    b = gc.to_host(gc.unshared_conv_backward(d(g), d(x), d(w), **kw))
    assert all(np.array_equal(p, q) for p, q in zip(a[:2], b[:2]))  # bitwise


# ----------------------------------------------------------------------------- tiled

# (x shape, kernel, tiles, c_out, kwargs): periods that do not divide the output, one
# longer than the output, strides, dilations, every padding form and mode
TILED = [
    ((2, 2, 11), 3, (3,), 5, dict(stride=2, padding="same", padding_mode="reflect")),
    ((1, 1, 5, 6), (2, 3), (2, 9), 4, dict(dilation=(2, 1), padding=((1, 0), 2))),
    ((3, 1, 5, 5), 2, (4, 3), 1, dict(stride=(1, 2), padding="full",
                                      padding_mode="circular")),
    ((1, 1, 3, 3, 4), (2, 1, 3), (2, 1, 2), 2, dict(padding=(1, 0, 1),
                                                    padding_mode="replicate")),
]


@pytest.mark.parametrize("route", ["gather", "local"])
@pytest.mark.parametrize("xs, k, tiles, cout, kw", TILED)
def test_tiled_forward_backward(xs, k, tiles, cout, kw, route, monkeypatch, launched):
    """Both routes: the conv gather with periodic weight stacks (few stacks) and the
    per-position kernel (many stacks, forced here)."""
    if route == "local":
        monkeypatch.setattr(ops, "_MAX_STACKS", 0)
    nd = len(xs) - 2
    ks = (k,) * nd if isinstance(k, int) else k
    x, w, b = rand(*xs), rand(*tiles, cout, xs[1], *ks), rand(cout)
    y = ref.tiled_conv(x, w, b, **kw)
    close(gc.tiled_conv(d(x), d(w), d(b), **kw), y)
    g = rand(*y.shape)
    all_close(gc.tiled_conv_backward(d(g), d(x), d(w), d(b), **kw),
              ref.tiled_conv_backward(g, x, w, b, **kw))
    gathers = any(n.startswith("gather") for n in launched)
    locals_ = any(n.startswith("local") for n in launched)
    assert (gathers, locals_) == ((True, False) if route == "gather" else (False, True))


def test_tiled_float64():
    xs, ks, tiles, kw = (1, 2, 6, 5), (3, 2), (2, 2), dict(stride=(2, 1), padding="same")
    x, w, b = (rand(*xs, dtype=np.float64), rand(*tiles, 2, 2, *ks, dtype=np.float64),
               rand(2, dtype=np.float64))
    y = ref.tiled_conv(x, w, b, **kw)
    close(gc.tiled_conv(d(x), d(w), d(b), **kw), y, np.float64)
    g = rand(*y.shape, dtype=np.float64)
    all_close(gc.tiled_conv_backward(d(g), d(x), d(w), d(b), **kw),
              ref.tiled_conv_backward(g, x, w, b, **kw), np.float64)


def test_local_kernels_without_shared_tile(monkeypatch):
    """Tap sets too large for a shared-memory tile: direct reads (both tiled routes)."""
    monkeypatch.setattr(ops, "_SHARED_BYTES", 8)
    x, kw = rand(2, 2, 6, 5), dict(stride=2, padding=1, padding_mode="reflect")
    w = rand(2, 2, 3, 2, 3, 2)
    y = ref.tiled_conv(x, w, **kw)
    g = rand(*y.shape)
    want = ref.tiled_conv_backward(g, x, w, **kw)
    for stacks in (64, 0):
        monkeypatch.setattr(ops, "_MAX_STACKS", stacks)
        close(gc.tiled_conv(d(x), d(w), **kw), y)
        all_close(gc.tiled_conv_backward(d(g), d(x), d(w), **kw), want)


# --------------------------------------------------------------------------- pooling

# (x shape, kwargs): overlapping windows, gaps between windows (stride > window),
# dilation, padding, ceil mode, 1-D to 3-D
POOLS = [
    ((2, 3, 10), dict(window=2, stride=3, padding=1)),
    ((1, 2, 7, 9), dict(window=(3, 2), stride=(2, 1), padding=(1, 1), ceil_mode=True)),
    ((1, 1, 5, 4, 7), dict(window=(2, 3, 2), stride=(1, 2, 3), padding=(1, 1, 0))),
]


def ties(*shape, dtype=np.float32):
    """Small integers: ties in most windows (the first tap must win)."""
    return RNG.integers(-2, 3, shape).astype(dtype)


@pytest.mark.parametrize("xs, kw", POOLS)
def test_max_pool_ties_dilation(xs, kw):
    x = ties(*xs)
    kw = dict(kw, dilation=2 if len(xs) < 5 else 1)
    y, idx = ref.max_pool(x, return_indices=True, **kw)
    gy, gidx = gc.max_pool(d(x), return_indices=True, **kw)
    close(gy, y)
    np.testing.assert_array_equal(gc.to_host(gidx), idx)
    g = rand(*y.shape)
    want = ref.max_pool_backward(g, x, **kw)
    close(gc.max_pool_backward(d(g), d(x), **kw), want)
    close(gc.max_pool_backward(d(g), d(x), indices=gidx, **kw), want)


@pytest.mark.parametrize("xs, kw", POOLS)
def test_avg_lp_pool(xs, kw):
    x = rand(*xs)
    x[..., :2] = 0.0  # all-zero L^p windows
    y = ref.avg_pool(x, count_include_pad=False, **kw)
    close(gc.avg_pool(d(x), count_include_pad=False, **kw), y)
    g = rand(*y.shape)
    close(gc.avg_pool_backward(d(g), d(x), count_include_pad=False, **kw),
          ref.avg_pool_backward(g, x, count_include_pad=False, **kw))
    p = 3.0 if len(xs) == 5 else 2
    y = ref.lp_pool(x, p, **kw)
    close(gc.lp_pool(d(x), p, **kw), y)
    close(gc.lp_pool_backward(d(g), d(x), p, **kw), ref.lp_pool_backward(g, x, p, **kw))


def test_pool_float64():
    x, kw = rand(1, 2, 5, 6, dtype=np.float64), dict(window=(2, 3), stride=(1, 2), padding=1)
    g = rand(1, 2, 6, 3, dtype=np.float64)
    close(gc.max_pool(d(x), **kw), ref.max_pool(x, **kw), np.float64)
    close(gc.max_pool_backward(d(g), d(x), **kw), ref.max_pool_backward(g, x, **kw), np.float64)
    close(gc.avg_pool(d(x), **kw), ref.avg_pool(x, **kw), np.float64)
    close(gc.avg_pool_backward(d(g), d(x), **kw), ref.avg_pool_backward(g, x, **kw),
          np.float64)
    close(gc.lp_pool_backward(d(g), d(x), 1, **kw), ref.lp_pool_backward(g, x, 1, **kw),
          np.float64)


def test_pool_without_shared_tile(monkeypatch, launched):
    """Windows too large for a shared-memory tile: direct reads, same results."""
    monkeypatch.setattr(ops, "_SHARED_BYTES", 8)
    x, kw = ties(1, 2, 6, 7), dict(window=3, stride=2, padding=1)
    y, idx = ref.max_pool(x, return_indices=True, **kw)
    gy, gidx = gc.max_pool(d(x), return_indices=True, **kw)
    close(gy, y)
    np.testing.assert_array_equal(gc.to_host(gidx), idx)
    g = rand(*y.shape)
    close(gc.max_pool_backward(d(g), d(x), indices=gidx, **kw),
          ref.max_pool_backward(g, x, **kw))
    close(gc.avg_pool_backward(d(g), d(x), **kw), ref.avg_pool_backward(g, x, **kw))
    close(gc.lp_pool_backward(d(g), d(x), 2.5, **kw), ref.lp_pool_backward(g, x, 2.5, **kw))
    assert {"pool_fwd", "pool_bwd"} <= set(launched)


def test_max_pool_backward_is_deterministic():
    x, kw = ties(1, 2, 6, 5), dict(window=3, stride=1, padding=1)
    g = rand(1, 2, 6, 5)
    a = gc.to_host(gc.max_pool_backward(d(g), d(x), **kw))
    b = gc.to_host(gc.max_pool_backward(d(g), d(x), **kw))
    assert np.array_equal(a, b)
    close(a, ref.max_pool_backward(g, x, **kw))
