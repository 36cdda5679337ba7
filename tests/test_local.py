"""unshared_conv and tiled_conv against the reference, the identities that tie them to conv,
finite differences, hand examples and bad input."""

from __future__ import annotations

import numpy as np
import pytest
from _numeric import numerical_gradient, rel_err
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gridconv as gc
from gridconv import local
from gridconv import reference as ref
from gridconv._params import conv_padding

MODES = ["zeros", "reflect", "replicate", "circular"]
SETTINGS = settings(max_examples=50, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def tol(dtype):
    return 2e-5 if np.dtype(dtype) == np.float32 else 1e-12


def output_size(xshape, kshape, kw):
    """Output spatial size, from conv (whose output rule the local convolutions share)."""
    return gc.conv(np.zeros(xshape), np.zeros((1, xshape[1]) + kshape), **kw).shape[2:]


@st.composite
def problems(draw):
    """(xshape, kernel, c_out, kw, dtype, seed) of a valid locally connected conv."""
    nd = draw(st.integers(1, 3))
    cin, cout, n = draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(1, 2))
    max_size = {1: 12, 2: 7, 3: 5}[nd]
    ks = tuple(draw(st.integers(1, 3)) for _ in range(nd))
    stride = tuple(draw(st.integers(1, 3)) for _ in range(nd))
    dilation = tuple(draw(st.integers(1, 2)) for _ in range(nd))
    sizes = tuple(draw(st.integers(1, max_size)) for _ in range(nd))
    mode = draw(st.sampled_from(MODES))
    form = draw(st.sampled_from(["int", "pairs", "valid", "same", "full"]))
    if form == "int":
        padding = draw(st.integers(0, 2))
    elif form == "pairs":
        padding = tuple((draw(st.integers(0, 2)), draw(st.integers(0, 2))) for _ in range(nd))
    else:
        padding = form
    pads = conv_padding(padding, sizes, ks, stride, dilation, "test")
    sizes = tuple(max(i, r * (k - 1) + 1 - lo - hi, 1)
                  for i, k, r, (lo, hi) in zip(sizes, ks, dilation, pads))
    pads = conv_padding(padding, sizes, ks, stride, dilation, "test")
    if mode == "circular":
        sizes = tuple(max(i, lo, hi) for i, (lo, hi) in zip(sizes, pads))
    kw = dict(stride=stride, padding=padding, dilation=dilation, padding_mode=mode)
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    return (n, cin) + sizes, ks, cout, kw, dtype, draw(st.integers(0, 2**31))


def check_against_reference(fn, fn_bwd, ref_fn, ref_bwd, x, w, b, kw, dtype):
    def f64(*arrays, op=np.asarray):
        return [None if a is None else op(a.astype(np.float64)) for a in arrays]

    y = fn(x, w, b, **kw)
    yr = ref_fn(*f64(x, w, b), **kw)
    assert y.dtype == dtype and y.shape == yr.shape
    assert rel_err(y, yr, ref_fn(*f64(x, w, b, op=np.abs), **kw)) < tol(dtype)
    g = np.random.default_rng(1).standard_normal(y.shape).astype(dtype)
    grads = fn_bwd(g, x, w, b, **kw)
    grads_r = ref_bwd(*f64(g, x, w, b), **kw)
    terms = ref_bwd(*f64(g, x, w, b, op=np.abs), **kw)
    for got, want, t in zip(grads, grads_r, terms):
        if want is None:
            assert got is None
            continue
        assert got.dtype == dtype and got.shape == want.shape
        assert rel_err(got, want, t) < tol(dtype)


@SETTINGS
@given(problems(), st.booleans())
def test_unshared_matches_reference(problem, use_bias):
    xshape, ks, cout, kw, dtype, seed = problem
    out = output_size(xshape, ks, kw)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(xshape).astype(dtype)
    w = rng.standard_normal(out + (cout, xshape[1]) + ks).astype(dtype)
    b = rng.standard_normal((cout,) + out).astype(dtype) if use_bias else None
    check_against_reference(gc.unshared_conv, gc.unshared_conv_backward, ref.unshared_conv,
                            ref.unshared_conv_backward, x, w, b, kw, dtype)


@SETTINGS
@given(problems(), st.booleans(), st.data())
def test_tiled_matches_reference(problem, use_bias, data):
    xshape, ks, cout, kw, dtype, seed = problem
    tiles = tuple(data.draw(st.integers(1, 4)) for _ in ks)  # also T > O (unused stacks)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(xshape).astype(dtype)
    w = rng.standard_normal(tiles + (cout, xshape[1]) + ks).astype(dtype)
    b = rng.standard_normal(cout).astype(dtype) if use_bias else None
    check_against_reference(gc.tiled_conv, gc.tiled_conv_backward, ref.tiled_conv,
                            ref.tiled_conv_backward, x, w, b, kw, dtype)


@pytest.fixture
def per_position_kernels(monkeypatch):
    """Route tiled_conv to the per-position kernels (used beyond ``_MAX_STACKS`` stacks)."""
    monkeypatch.setattr(local, "_MAX_STACKS", 0)


@pytest.mark.parametrize("nd", [1, 2, 3])
@pytest.mark.parametrize("mode", ["zeros", "reflect"])
def test_tiled_per_position_kernels(per_position_kernels, nd, mode):
    rng = np.random.default_rng(nd)
    sizes = {1: (13,), 2: (7, 8), 3: (5, 6, 5)}[nd]
    ks = (3,) * nd
    x = rng.standard_normal((2, 3) + sizes)
    for tiles in [(1,) * nd, (2,) * nd, (3,) + (2,) * (nd - 1)]:
        w = rng.standard_normal(tiles + (2, 3) + ks)
        b = rng.standard_normal(2)
        kw = dict(stride=2 if nd == 1 else 1, padding=1, padding_mode=mode)
        check_against_reference(gc.tiled_conv, gc.tiled_conv_backward, ref.tiled_conv,
                                ref.tiled_conv_backward, x, w, b, kw, np.float64)


@pytest.mark.parametrize("use_engine", [True, False])
@pytest.mark.parametrize("tiles", [(1, 1), (2, 3), (6, 6), (18, 18)])
def test_multithreaded_sizes(monkeypatch, use_engine, tiles):
    """Problems large enough to run on every thread: stacks owned per task (many) or
    summed from per-thread partials (few), colour passes of the input gradient."""
    if not use_engine:
        monkeypatch.setattr(local, "_MAX_STACKS", 0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 8, 20, 20))
    w = rng.standard_normal(tiles + (8, 8, 3, 3))
    g = rng.standard_normal((4, 8, 18, 18))
    y = gc.tiled_conv(x, w)
    assert rel_err(y, ref.tiled_conv(x, w)) < 1e-12
    for got, want in zip(gc.tiled_conv_backward(g, x, w), ref.tiled_conv_backward(g, x, w)):
        if want is not None:
            assert rel_err(got, want) < 1e-12


# ------------------------------------------------------------------------ identities ---

@pytest.mark.parametrize("nd", [1, 2, 3])
def test_tiled_with_one_stack_is_conv(nd):
    rng = np.random.default_rng(10 + nd)
    sizes = {1: (17,), 2: (9, 8), 3: (6, 5, 7)}[nd]
    x = rng.standard_normal((2, 3) + sizes)
    wc = rng.standard_normal((4, 3) + (3,) * nd)
    b = rng.standard_normal(4)
    kw = dict(stride=2, padding="same", dilation=1, padding_mode="replicate")
    y = gc.conv(x, wc, b, **kw)
    wt = wc[(None,) * nd]  # T = (1, ..., 1)
    np.testing.assert_allclose(gc.tiled_conv(x, wt, b, **kw), y, rtol=1e-12, atol=1e-12)
    g = rng.standard_normal(y.shape)
    gx, gw, gb = gc.conv_backward(g, x, wc, b, **kw)
    tx, tw, tb = gc.tiled_conv_backward(g, x, wt, b, **kw)
    np.testing.assert_allclose(tx, gx, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(tw[(0,) * nd], gw, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(tb, gb, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("nd", [1, 2, 3])
def test_tiled_with_a_stack_per_position_is_unshared(nd):
    rng = np.random.default_rng(20 + nd)
    sizes = {1: (11,), 2: (6, 7), 3: (5, 4, 5)}[nd]
    x = rng.standard_normal((2, 2) + sizes)
    kw = dict(stride=1, padding=1, dilation=2, padding_mode="reflect")
    out = output_size(x.shape, (2,) * nd, kw)
    w = rng.standard_normal(out + (3, 2) + (2,) * nd)
    b = rng.standard_normal(3)
    b_full = np.broadcast_to(b.reshape((3,) + (1,) * nd), (3,) + out)
    y = gc.unshared_conv(x, w, b_full, **kw)
    np.testing.assert_allclose(gc.tiled_conv(x, w, b, **kw), y, rtol=1e-12, atol=1e-12)
    g = rng.standard_normal(y.shape)
    ux, uw, ub = gc.unshared_conv_backward(g, x, w, b_full, **kw)
    tx, tw, tb = gc.tiled_conv_backward(g, x, w, b, **kw)
    np.testing.assert_allclose(tx, ux, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(tw, uw, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(tb, ub.sum(axis=tuple(range(1, nd + 1))), rtol=1e-12)


@pytest.mark.parametrize("nd", [1, 2, 3])
def test_unshared_with_one_weight_everywhere_is_conv(nd):
    rng = np.random.default_rng(30 + nd)
    sizes = {1: (15,), 2: (8, 9), 3: (5, 6, 6)}[nd]
    x = rng.standard_normal((3, 2) + sizes)
    wc = rng.standard_normal((4, 2) + (3,) * nd)
    b = rng.standard_normal(4)
    kw = dict(stride=(2,) * nd, padding=2, dilation=1, padding_mode="circular")
    y = gc.conv(x, wc, b, **kw)
    out = y.shape[2:]
    w = np.broadcast_to(wc, out + wc.shape)  # read-only, non-contiguous: fine as input
    b_full = np.broadcast_to(b.reshape((4,) + (1,) * nd), (4,) + out)
    np.testing.assert_allclose(gc.unshared_conv(x, w, b_full, **kw), y, rtol=1e-12,
                               atol=1e-12)
    g = rng.standard_normal(y.shape)
    gx, gw, gb = gc.conv_backward(g, x, wc, b, **kw)
    ux, uw, ub = gc.unshared_conv_backward(g, x, w, b_full, **kw)
    np.testing.assert_allclose(ux, gx, rtol=1e-12, atol=1e-12)
    # the shared weight's gradient is the sum of the per-position ones
    np.testing.assert_allclose(uw.sum(axis=tuple(range(nd))), gw, rtol=1e-11, atol=1e-11)
    np.testing.assert_allclose(ub.sum(axis=tuple(range(1, nd + 1))), gb, rtol=1e-12)


# ---------------------------------------------------------------- finite differences ---

@pytest.mark.parametrize("op", ["unshared", "tiled"])
@pytest.mark.parametrize("mode", ["zeros", "reflect", "circular"])
def test_gradients_match_finite_differences(op, mode):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 2, 6, 5))
    kw = dict(stride=(2, 1), padding=(1, (2, 1)), dilation=(1, 2), padding_mode=mode)
    out = output_size(x.shape, (3, 2), kw)
    if op == "unshared":
        fwd, bwd = gc.unshared_conv, gc.unshared_conv_backward
        w = rng.standard_normal(out + (2, 2, 3, 2))
        b = rng.standard_normal((2,) + out)
    else:
        fwd, bwd = gc.tiled_conv, gc.tiled_conv_backward
        w = rng.standard_normal((2, 3, 2, 2, 3, 2))
        b = rng.standard_normal(2)
    g = rng.standard_normal((2, 2) + out)

    def loss():
        return float(np.sum(fwd(x, w, b, **kw) * g))

    gx, gw, gb = bwd(g, x, w, b, **kw)
    for arr, grad in ((x, gx), (w, gw), (b, gb)):
        np.testing.assert_allclose(grad, numerical_gradient(loss, arr), rtol=1e-6, atol=1e-7)


# ------------------------------------------------------------------------ hand examples ---

def test_unshared_hand_example():
    # two output positions of a length-4 signal, kernel 2: position 0 sums its window,
    # position 1 takes the difference, with biases 10 and 20
    x = np.array([[[1.0, 2.0, 4.0, 8.0]]])
    w = np.array([[[[1.0, 1.0]]], [[[0.0, 0.0]]], [[[-1.0, 1.0]]]])  # (O=3, 1, 1, K=2)
    b = np.array([[10.0, 20.0, 30.0]])
    y = gc.unshared_conv(x, w, b)
    np.testing.assert_array_equal(y, [[[1 + 2 + 10, 0 + 20, -4 + 8 + 30]]])
    gx, gw, gb = gc.unshared_conv_backward(np.ones((1, 1, 3)), x, w, b)
    np.testing.assert_array_equal(gx, [[[1.0, 1.0, -1.0, 1.0]]])
    np.testing.assert_array_equal(gw[:, 0, 0], [[1, 2], [2, 4], [4, 8]])
    np.testing.assert_array_equal(gb, [[1.0, 1.0, 1.0]])


def test_tiled_hand_example():
    # a 2x2 checkerboard of 1x1 kernels (T = 2 per axis) applied to ones
    x = np.ones((1, 1, 3, 4))
    w = np.array([[1.0, 2.0], [3.0, 4.0]]).reshape(2, 2, 1, 1, 1, 1)
    y = gc.tiled_conv(x, w, np.array([0.5]))
    np.testing.assert_array_equal(y[0, 0], [[1.5, 2.5, 1.5, 2.5], [3.5, 4.5, 3.5, 4.5],
                                            [1.5, 2.5, 1.5, 2.5]])
    _, gw, _ = gc.tiled_conv_backward(np.ones((1, 1, 3, 4)), x, w)
    # stack (a, b) serves the positions with row = a, col = b (mod 2): 4, 4, 2, 2 of them
    np.testing.assert_array_equal(gw.reshape(2, 2), [[4, 4], [2, 2]])


# ------------------------------------------------------------- dtypes, layouts, NaNs ---

def test_integer_input_promotes_and_layouts_are_respected():
    rng = np.random.default_rng(3)
    x = rng.integers(-3, 4, size=(2, 3, 9, 8))
    w = rng.standard_normal((2, 2, 2, 3, 3, 3))
    y = gc.tiled_conv(x, w)
    assert y.dtype == np.float64
    np.testing.assert_allclose(y, ref.tiled_conv(x.astype(float), w), rtol=1e-12)
    xf = np.asfortranarray(x.astype(np.float32))
    xs = np.ascontiguousarray(x.astype(np.float32))
    wf = w.astype(np.float32)[..., ::-1, :].copy()[..., ::-1, :]  # non-contiguous view
    np.testing.assert_allclose(gc.tiled_conv(xf, wf), gc.tiled_conv(xs, wf.copy()),
                               rtol=1e-6)
    for arr in (x, w):
        arr.flags.writeable = False
    gc.tiled_conv_backward(np.ones(y.shape), x, w)  # read-only inputs: no write attempted


def test_nan_propagates_to_the_positions_that_read_it():
    x = np.zeros((1, 1, 7))
    x[0, 0, 3] = np.nan
    w = np.ones((5, 1, 1, 3))
    y = gc.unshared_conv(x, w)
    np.testing.assert_array_equal(np.isnan(y[0, 0]), [False, True, True, True, False])
    gx, gw, _ = gc.unshared_conv_backward(np.ones((1, 1, 5)), x, w)
    assert np.isnan(gw[1:4]).any() and not np.isnan(gw[0]).any()
    assert not np.isnan(gx).any()


# ---------------------------------------------------------------------------- errors ---

@pytest.mark.parametrize("call, exc, match", [
    (lambda: gc.unshared_conv(np.ones((1, 1, 5)), np.ones((3, 1, 1))), ValueError,
     r"unshared_conv: `weight` must be 4-D, 6-D or 8-D"),
    (lambda: gc.unshared_conv(np.ones((1, 1, 5)), np.ones((4, 1, 1, 3))), ValueError,
     r"leading axes must be the output size \(3,\), got \(4,\)"),
    (lambda: gc.tiled_conv(np.ones((1, 2, 5)), np.ones((2, 1, 3, 3))), ValueError,
     r"tiled_conv: `x` has 2 input channels but `weight`"),
    (lambda: gc.tiled_conv(np.ones((1, 1, 5, 5)), np.ones((2, 1, 1, 3))), ValueError,
     r"`x` must be 3-D"),
    (lambda: gc.tiled_conv(np.ones((1, 1, 5)), np.ones((2, 1, 1, 3)), np.ones(2)), ValueError,
     r"`bias` must have shape \(1,\)"),
    (lambda: gc.unshared_conv(np.ones((1, 1, 5)), np.ones((3, 2, 1, 3)), np.ones(2)),
     ValueError, r"`bias` must have shape \(2, 3\) \(one value per output channel and "
                 r"position\)"),
    (lambda: gc.tiled_conv(np.ones((1, 1, 5)), np.ones((2, 1, 1, 3)), stride=0), ValueError,
     r"`stride` must be >= 1"),
    (lambda: gc.tiled_conv(np.ones((1, 1, 5)), np.ones((2, 1, 1, 3)), padding=-1), ValueError,
     r"`padding` must be non-negative"),
    (lambda: gc.tiled_conv(np.ones((1, 1, 5)), np.ones((2, 1, 1, 3)), padding_mode="wrap"),
     ValueError, r"`padding_mode` must be one of"),
    (lambda: gc.tiled_conv(np.ones((1, 1, 2)), np.ones((2, 1, 1, 3)), padding=3,
                           padding_mode="circular"), ValueError,
     r"circular `padding` \(3, 3\) must not exceed the input size \(2\)"),
    (lambda: gc.tiled_conv(np.ones((1, 1, 2)), np.ones((2, 1, 1, 3))), ValueError,
     r"tiled_conv: .*kernel"),
    (lambda: gc.tiled_conv(np.ones((1, 1, 5), complex), np.ones((2, 1, 1, 3))), TypeError,
     r"`x` must hold real numbers"),
    (lambda: gc.tiled_conv(np.ones((1, 1, 5)), np.ones((0, 1, 1, 3))), ValueError,
     r"no empty axis"),
    (lambda: gc.unshared_conv_backward(np.ones((1, 1, 4)), np.ones((1, 1, 5)),
                                       np.ones((3, 1, 1, 3))), ValueError,
     r"unshared_conv_backward: `grad_output` must have the output's shape \(1, 1, 3\)"),
])
def test_bad_input_is_refused_clearly(call, exc, match):
    with pytest.raises(exc, match=match):
        call()
