"""Every GPU kernel against gridconv.reference, forward and backward, on tiny shapes.

Run by tests/test_cuda.py in a process of its own, under the CUDA simulator (no GPU) or
on a GPU. Shapes are tiny and odd (they never fill a block, and several blocks are used:
the launch geometry shrinks under the simulator).
"""

from __future__ import annotations

import numpy as np
import pytest
from numba import cuda

import gridconv as gc
from gridconv import reference as ref

RNG = np.random.default_rng(1234)


def rand(*shape, dtype=np.float32):
    return RNG.standard_normal(shape).astype(dtype)


def d(a):
    return None if a is None else cuda.to_device(np.ascontiguousarray(a))


def h(a):
    return gc.to_host(a)


def close(got, want, dtype=np.float32):
    got = h(got)
    assert got.shape == want.shape and got.dtype == np.dtype(dtype), (got.shape, want.shape,
                                                                      got.dtype)
    scale = max(float(np.abs(want).max()), 1e-30)
    tol = 3e-6 if np.dtype(dtype) == np.float32 else 1e-12
    err = float(np.abs(got.astype(np.float64) - want).max()) / scale
    assert err <= tol, f"relative error {err:.3g}"


def both_close(got, want, dtype=np.float32):
    for g_, w_ in zip(got, want):
        if w_ is None:
            assert g_ is None
        else:
            close(g_, w_, dtype)


# ------------------------------------------------------------------------ convolutions

CONV_CASES = [
    # (x shape, weight shape, kwargs)
    ((2, 3, 9), (4, 3, 3), dict()),
    ((1, 2, 11), (3, 2, 4), dict(stride=3, padding="same")),
    ((1, 2, 7), (2, 2, 3), dict(padding="full", dilation=2)),
    ((1, 4, 8), (4, 1, 3), dict(groups=4, padding=1, padding_mode="circular")),
    ((2, 2, 5, 6), (3, 2, 3, 2), dict(padding=((1, 2), (0, 1)))),
    ((1, 2, 7, 5), (5, 2, 3, 3), dict(stride=2, padding=1, dilation=(1, 2))),
    ((1, 2, 6, 7), (3, 2, 2, 3), dict(stride=(2, 3), padding="same", padding_mode="reflect")),
    ((1, 3, 5, 5), (9, 1, 3, 3), dict(groups=3, padding=(1, 2), padding_mode="replicate")),
    ((1, 2, 5, 6), (2, 2, 3, 3), dict(padding="valid", flip=True)),
    ((1, 4, 5, 5), (6, 2, 2, 3), dict(groups=2, stride=2, padding="full", flip=True)),
    ((1, 2, 4, 5, 4), (3, 2, 2, 3, 2), dict(padding=1)),
    ((1, 1, 5, 4, 5), (2, 1, 3, 2, 3), dict(stride=(2, 1, 2), dilation=(1, 2, 1),
                                            padding="same", padding_mode="circular")),
]


@pytest.mark.parametrize("xs, ws, kw", CONV_CASES)
def test_conv_forward_backward(xs, ws, kw):
    x, w, b = rand(*xs), rand(*ws), rand(ws[0])
    y = ref.conv(x, w, b, **kw)
    close(gc.conv(d(x), d(w), d(b), **kw), y)
    g = rand(*y.shape)
    want = ref.conv_backward(g, x, w, b, **kw)
    both_close(gc.conv_backward(d(g), d(x), d(w), d(b), **kw), want)
    close(gc.conv_grad_input(d(g), d(w), x.shape, **kw), want[0])
    close(gc.conv_grad_weight(d(g), d(x), w.shape, **kw), want[1])


@pytest.mark.parametrize("xs, ws, kw", [CONV_CASES[1], CONV_CASES[5], CONV_CASES[7]])
def test_conv_float64(xs, ws, kw):
    x, w = rand(*xs, dtype=np.float64), rand(*ws, dtype=np.float64)
    y = ref.conv(x, w, **kw)
    close(gc.conv(d(x), d(w), **kw), y, np.float64)
    g = rand(*y.shape, dtype=np.float64)
    both_close(gc.conv_backward(d(g), d(x), d(w), **kw), ref.conv_backward(g, x, w, **kw),
               np.float64)


TRANSPOSE_CASES = [
    ((1, 3, 5), (3, 2, 3), dict(stride=2, padding=1, output_padding=1)),
    ((2, 2, 4, 3), (2, 3, 2, 3), dict(stride=(2, 1), dilation=(1, 2), padding=((0, 1), 1))),
    ((1, 4, 3, 4), (4, 1, 3, 2), dict(groups=2, stride=3, output_padding=(2, 0))),
    ((1, 2, 2, 3, 2), (2, 2, 2, 2, 3), dict(stride=2)),
]


@pytest.mark.parametrize("xs, ws, kw", TRANSPOSE_CASES)
def test_conv_transpose(xs, ws, kw):
    groups = kw.get("groups", 1)
    x, w, b = rand(*xs), rand(*ws), rand(ws[1] * groups)
    y = ref.conv_transpose(x, w, b, **kw)
    close(gc.conv_transpose(d(x), d(w), d(b), **kw), y)
    g = rand(*y.shape)
    both_close(gc.conv_transpose_backward(d(g), d(x), d(w), d(b), **kw),
               ref.conv_transpose_backward(g, x, w, b, **kw))


def test_weight_gradient_split_and_deterministic():
    """Enough positions for several splits of the weight-gradient GEMM; two runs are
    bitwise equal (no atomics, fixed-order sums)."""
    x, w = rand(2, 2, 90), rand(3, 2, 5)
    g = rand(2, 3, 86)
    want = ref.conv_grad_weight(g, x, w.shape)
    a = h(gc.conv_grad_weight(d(g), d(x), w.shape))
    b = h(gc.conv_grad_weight(d(g), d(x), w.shape))
    close(a, want)
    assert np.array_equal(a, b)


def test_gather_without_shared_tile(monkeypatch):
    """The fallback for tap sets too large for a shared-memory tile."""
    from gridconv._cuda import ops

    monkeypatch.setattr(ops, "_SHARED_BYTES", 8)
    x, w = rand(1, 2, 6, 5), rand(3, 2, 3, 2)
    kw = dict(stride=2, padding="same", padding_mode="reflect")
    close(gc.conv(d(x), d(w), **kw), ref.conv(x, w, **kw))
    g = rand(*ref.conv(x, w, **kw).shape)
    close(gc.conv_grad_input(d(g), d(w), x.shape, **kw), ref.conv_grad_input(g, w, x.shape,
                                                                             **kw))


# ---------------------------------------------------------------- unshared and tiled

LOCAL_CASES = [
    ((2, 2, 7), 3, 2, dict(stride=2, padding=1)),
    ((1, 2, 5, 4), (2, 3), 3, dict(padding="same", padding_mode="reflect")),
    ((1, 1, 5, 5), 3, 2, dict(dilation=2, padding="full", padding_mode="circular")),
    ((1, 2, 3, 4, 3), 2, 2, dict(stride=(1, 2, 1), padding=((0, 1), 1, 0),
                                 padding_mode="replicate")),
]


@pytest.mark.parametrize("xs, k, cout, kw", LOCAL_CASES)
def test_unshared(xs, k, cout, kw):
    nd = len(xs) - 2
    ks = (k,) * nd if isinstance(k, int) else k
    x = rand(*xs)
    out = gc.conv(np.zeros(xs), np.zeros((1, xs[1]) + ks), **kw).shape[2:]
    w, b = rand(*out, cout, xs[1], *ks), rand(cout, *out)
    y = ref.unshared_conv(x, w, b, **kw)
    close(gc.unshared_conv(d(x), d(w), d(b), **kw), y)
    g = rand(*y.shape)
    both_close(gc.unshared_conv_backward(d(g), d(x), d(w), d(b), **kw),
               ref.unshared_conv_backward(g, x, w, b, **kw))


@pytest.mark.parametrize("xs, k, cout, kw", LOCAL_CASES)
def test_tiled(xs, k, cout, kw):
    nd = len(xs) - 2
    ks = (k,) * nd if isinstance(k, int) else k
    tiles = (2, 3, 1)[:nd]
    x = rand(*xs)
    w, b = rand(*tiles, cout, xs[1], *ks), rand(cout)
    y = ref.tiled_conv(x, w, b, **kw)
    close(gc.tiled_conv(d(x), d(w), d(b), **kw), y)
    g = rand(*y.shape)
    both_close(gc.tiled_conv_backward(d(g), d(x), d(w), d(b), **kw),
               ref.tiled_conv_backward(g, x, w, b, **kw))


# ---------------------------------------------------------------------------- pooling

POOL_CASES = [
    ((2, 2, 9), dict(window=3, stride=2, padding=1)),
    ((1, 2, 5, 7), dict(window=(2, 3), stride=(2, 2), padding=(1, 1), ceil_mode=True)),
    ((1, 1, 4, 5, 3), dict(window=2, stride=1)),
]


@pytest.mark.parametrize("xs, kw", POOL_CASES)
def test_max_pool(xs, kw):
    x = rand(*xs)
    kw = dict(kw, dilation=2) if len(xs) == 3 else kw
    y, idx = ref.max_pool(x, return_indices=True, **kw)
    gy, gidx = gc.max_pool(d(x), return_indices=True, **kw)
    close(gy, y)
    assert np.array_equal(h(gidx), idx)
    g = rand(*y.shape)
    want = ref.max_pool_backward(g, x, **kw)
    close(gc.max_pool_backward(d(g), d(x), **kw), want)
    close(gc.max_pool_backward(d(g), d(x), indices=gidx, **kw), want)


def test_max_pool_nan_and_ties():
    x = np.array([[[1.0, 3.0, 3.0, np.nan, 2.0, np.nan, 0.0]]], np.float32)
    y, idx = gc.max_pool(d(x), 3, 1, return_indices=True)
    wy, widx = ref.max_pool(x, 3, 1, return_indices=True)
    np.testing.assert_array_equal(h(y), wy)
    np.testing.assert_array_equal(h(idx), widx)


def test_max_pool_bad_indices():
    x = rand(1, 1, 6)
    _, idx = ref.max_pool(x, 2, return_indices=True)
    idx[0, 0, 1] = 0  # not in window 1
    with pytest.raises(ValueError, match="max_pool_backward: `indices` must come from"):
        gc.max_pool_backward(d(rand(1, 1, 3)), d(x), 2, indices=d(idx))


@pytest.mark.parametrize("xs, kw", POOL_CASES)
@pytest.mark.parametrize("include", [True, False])
def test_avg_pool(xs, kw, include):
    x = rand(*xs)
    y = ref.avg_pool(x, count_include_pad=include, **kw)
    close(gc.avg_pool(d(x), count_include_pad=include, **kw), y)
    g = rand(*y.shape)
    close(gc.avg_pool_backward(d(g), d(x), count_include_pad=include, **kw),
          ref.avg_pool_backward(g, x, count_include_pad=include, **kw))


@pytest.mark.parametrize("p", [1, 2, 3.5])
@pytest.mark.parametrize("xs, kw", POOL_CASES[:2])
def test_lp_pool(xs, kw, p):
    x = rand(*xs)
    x[..., 0] = 0.0  # zeros (and an all-zero window with padding)
    y = ref.lp_pool(x, p, **kw)
    close(gc.lp_pool(d(x), p, **kw), y)
    g = rand(*y.shape)
    close(gc.lp_pool_backward(d(g), d(x), p, **kw), ref.lp_pool_backward(g, x, p, **kw))


@pytest.mark.parametrize("xs", [(2, 3, 7), (1, 2, 3, 5)])
def test_global_pool(xs):
    x = rand(*xs)
    flat = x.reshape(-1)
    flat[1] = flat[4] = 9.0  # a tie in plane (0, 0): the first wins
    flat[-1] = np.nan
    np.testing.assert_array_equal(h(gc.global_max_pool(d(x))), ref.global_max_pool(x))
    close(gc.global_avg_pool(d(np.nan_to_num(x))), ref.global_avg_pool(np.nan_to_num(x)))
    g = rand(*xs[:2], *(1,) * (len(xs) - 2))
    np.testing.assert_array_equal(h(gc.global_max_pool_backward(d(g), d(x))),
                                  ref.global_max_pool_backward(g, x))
    close(gc.global_avg_pool_backward(d(g), d(x)), ref.global_avg_pool_backward(g, x))


# ------------------------------------------------------------------------ activations

ELEMENTWISE = [("relu", ()), ("leaky_relu", (0.2,)), ("abs_rectify", ()), ("sigmoid", ()),
               ("tanh", ())]


@pytest.mark.parametrize("name, args", ELEMENTWISE)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_elementwise(name, args, dtype):
    x = rand(2, 3, 7, dtype=dtype) * 4
    x[0, 0, :3] = [0.0, 30.0, -30.0]
    g = rand(*x.shape, dtype=dtype)
    close(getattr(gc, name)(d(x), *args), getattr(ref, name)(x, *args), dtype)
    close(getattr(gc, name + "_backward")(d(g), d(x), *args),
          getattr(ref, name + "_backward")(g, x, *args), dtype)
    if name in ("sigmoid", "tanh"):
        y = getattr(ref, name)(x)
        close(getattr(gc, name + "_backward")(d(g), None, output=d(y)),
              getattr(ref, name + "_backward")(g, x), dtype)


@pytest.mark.parametrize("wshape", [(3,), (1,)])
def test_prelu(wshape):
    x, w = rand(2, 3, 5), rand(*wshape)
    g = rand(*x.shape)
    close(gc.prelu(d(x), d(w)), ref.prelu(x, w))
    both_close(gc.prelu_backward(d(g), d(x), d(w)), ref.prelu_backward(g, x, w))


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
@pytest.mark.parametrize("shape, axis", [((2, 4, 3), 1), ((3, 5), -1)])
def test_softmax(name, shape, axis):
    x = rand(*shape) * 3
    g = rand(*shape)
    y = getattr(ref, name)(x, axis)
    close(getattr(gc, name)(d(x), axis), y)
    want = getattr(ref, name + "_backward")(g, x, axis)
    close(getattr(gc, name + "_backward")(d(g), d(x), axis), want)
    close(getattr(gc, name + "_backward")(d(g), None, axis, output=d(y)), want)


# ---------------------------------------------------------- devices, dtypes, errors


def test_to_device_to_host_round_trip():
    x = rand(2, 3, 4)
    dx = gc.to_device(x)
    assert not isinstance(dx, np.ndarray)
    np.testing.assert_array_equal(gc.to_host(dx), x)
    assert gc.to_device(dx) is dx
    assert gc.to_host(x) is x
    assert gc.to_host(None) is None
    assert gc.to_device([1, 2], dtype=np.float32).dtype == np.float32
    a, b = gc.to_host((dx, None))
    np.testing.assert_array_equal(a, x)
    assert b is None


def test_backends():
    info = gc.backends()
    assert info["cpu"]["available"] and info["cpu"]["threads"] >= 1
    assert "threading_layer" in info["cpu"]
    c = info["cuda"]
    assert set(c) >= {"available", "device", "reason", "simulator"}
    assert c["available"] and c["device"]


def test_results_are_device_arrays_and_inputs_untouched():
    x, w = rand(1, 2, 6), rand(2, 2, 3)
    dx, dw = d(x), d(w)
    y = gc.conv(dx, dw)
    assert type(y) is type(dx)
    np.testing.assert_array_equal(h(dx), x)
    np.testing.assert_array_equal(h(dw), w)


def test_mixing_host_and_device_is_an_error():
    x, w = rand(1, 2, 6), rand(2, 2, 3)
    with pytest.raises(TypeError, match="conv: all array arguments must be on the same"):
        gc.conv(d(x), w)
    with pytest.raises(TypeError, match="relu_backward: all array arguments"):
        gc.relu_backward(x, d(x))


def test_dtype_promotion_and_non_contiguous():
    x = RNG.integers(-3, 4, (1, 2, 7)).astype(np.int32)
    w = rand(3, 2, 3)
    y = gc.conv(d(x), d(w))  # int and float32 promote to float64, as NumPy
    close(y, ref.conv(x, w), np.float64)
    big = rand(2, 2, 9, 8)
    sl = d(big)[:, :, 1:8:2, ::3]  # a strided device view
    w2 = rand(2, 2, 2, 2)
    close(gc.conv(sl, d(w2), padding=1), ref.conv(big[:, :, 1:8:2, ::3], w2, padding=1))
    close(gc.relu(d(big)[:, 1]), ref.relu(big[:, 1]))


@pytest.mark.parametrize("call, message", [
    (lambda: gc.conv(d(rand(1, 3, 5)), d(rand(2, 2, 3)), groups=2),
     r"conv: `in_channels` \(=3\) must be divisible by `groups` \(=2\)"),
    (lambda: gc.conv(d(rand(1, 2, 5)), d(rand(2, 2, 3)), stride=0),
     "conv: `stride` must be >= 1"),
    (lambda: gc.conv(d(rand(1, 2, 5)), d(rand(2, 2, 3)), d(rand(3))),
     r"conv: `bias` must have shape \(2,\)"),
    (lambda: gc.conv_backward(d(rand(1, 2, 4)), d(rand(1, 2, 5)), d(rand(2, 2, 3))),
     "conv_backward: `grad_output` must have the output's shape"),
    (lambda: gc.max_pool(d(rand(1, 1, 5)), 2, padding=2),
     "max_pool: `padding` must be at most half the window"),
    (lambda: gc.softmax(d(rand(2, 3)), axis=2), r"softmax: `axis` must be in \[-2, 1\]"),
    (lambda: gc.unshared_conv(d(rand(1, 1, 5)), d(rand(2, 1, 1, 3))),
     "unshared_conv: `weight` holds one kernel stack per output position"),
])
def test_errors_match_the_cpu(call, message):
    with pytest.raises((ValueError, TypeError), match=message):
        call()
