"""Activations: the CPU kernels against the plain-NumPy reference, hand examples, finite
differences, extreme values, NaNs, layouts, dtypes, errors and PyTorch."""

from __future__ import annotations

import math

import numba
import numpy as np
import pytest
from _numeric import numerical_gradient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gridconv as gc
from gridconv import reference as ref

SETTINGS = settings(max_examples=80, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
DTYPES = [np.float32, np.float64]

# name -> (forward, backward, reference forward, reference backward, keyword arguments)
ELEMENTWISE = {
    "relu": (gc.relu, gc.relu_backward, ref.relu, ref.relu_backward, {}),
    "leaky_relu": (gc.leaky_relu, gc.leaky_relu_backward, ref.leaky_relu,
                   ref.leaky_relu_backward, {"negative_slope": 0.2}),
    "abs_rectify": (gc.abs_rectify, gc.abs_rectify_backward, ref.abs_rectify,
                    ref.abs_rectify_backward, {}),
    "sigmoid": (gc.sigmoid, gc.sigmoid_backward, ref.sigmoid, ref.sigmoid_backward, {}),
    "tanh": (gc.tanh, gc.tanh_backward, ref.tanh, ref.tanh_backward, {}),
}
SOFTMAX = {
    "softmax": (gc.softmax, gc.softmax_backward, ref.softmax, ref.softmax_backward),
    "log_softmax": (gc.log_softmax, gc.log_softmax_backward, ref.log_softmax,
                    ref.log_softmax_backward),
}


def rel_err(a, b, scale=0.0):
    """max |a - b| relative to the scale of ``b`` (or ``scale``, when larger)."""
    b = np.asarray(b, dtype=np.float64)
    scale = max(np.abs(b).max(initial=0.0), scale, 1e-30)
    return np.abs(np.asarray(a, dtype=np.float64) - b).max(initial=0.0) / scale


def softmax_grad_scale(g, axis):
    """The size of the terms a softmax gradient sums, ``|g|`` summed over the axis: a
    saturated softmax gives a gradient far smaller than them (``y * (g - sum g*y)``
    cancels), and float32 rounding is relative to the terms, not to that result."""
    return float(np.abs(g.astype(np.float64)).sum(axis=axis).max(initial=0.0))


def tol(dtype):
    return 1e-5 if dtype == np.float32 else 1e-12


def f64(*arrays):
    return [a.astype(np.float64) for a in arrays]


# ----------------------------------------------------------------- random problems ---

@st.composite
def arrays(draw, min_ndim=2):
    """``(x, g, dtype)``: ``(N, C, *S)`` with 0 to 3 spatial axes (``min_ndim`` 1 also
    gives 1-D arrays), some exact zeros (the kinks), and an upstream gradient."""
    ndim = draw(st.integers(min_ndim, 5))
    max_size = {1: 9, 2: 6, 3: 5, 4: 4, 5: 3}[ndim]
    shape = tuple(draw(st.integers(1, max_size)) for _ in range(ndim))
    dtype = draw(st.sampled_from(DTYPES))
    rng = np.random.default_rng(draw(st.integers(0, 2**31)))
    x = (rng.standard_normal(shape) * draw(st.sampled_from([0.5, 3.0, 30.0]))).astype(dtype)
    x[rng.random(shape) < 0.1] = 0
    g = rng.standard_normal(shape).astype(dtype)
    return x, g, dtype


@SETTINGS
@given(arrays(min_ndim=1), st.sampled_from(sorted(ELEMENTWISE)))
def test_elementwise_matches_reference(problem, name):
    x, g, dtype = problem
    fwd, bwd, rfwd, rbwd, kw = ELEMENTWISE[name]
    y = fwd(x, **kw)
    assert y.dtype == dtype and y.shape == x.shape
    assert rel_err(y, rfwd(*f64(x), **kw)) < tol(dtype)
    gx = bwd(g, x, **kw)
    assert gx.dtype == dtype and gx.shape == x.shape
    assert rel_err(gx, rbwd(*f64(g, x), **kw)) < tol(dtype)


@SETTINGS
@given(arrays(), st.booleans())
def test_prelu_matches_reference(problem, shared):
    x, g, dtype = problem
    rng = np.random.default_rng(x.size)
    w = rng.uniform(-0.5, 0.5, 1 if shared else x.shape[1]).astype(dtype)
    y = gc.prelu(x, w)
    assert y.dtype == dtype and rel_err(y, ref.prelu(*f64(x, w))) < tol(dtype)
    gx, gw = gc.prelu_backward(g, x, w)
    rgx, rgw = ref.prelu_backward(*f64(g, x, w))
    assert gx.dtype == gw.dtype == dtype and gw.shape == w.shape
    assert rel_err(gx, rgx) < tol(dtype)
    # gw sums g*x over the negative x: relative to the sum of their sizes (cancellation)
    assert rel_err(gw, rgw, np.abs(g * np.minimum(x, 0)).astype(np.float64).sum()) < \
        4 * tol(dtype)


@SETTINGS
@given(arrays(min_ndim=1), st.sampled_from(sorted(SOFTMAX)), st.data())
def test_softmax_matches_reference(problem, name, data):
    x, g, dtype = problem
    fwd, bwd, rfwd, rbwd = SOFTMAX[name]
    axis = data.draw(st.integers(-x.ndim, x.ndim - 1), label="axis")
    y = fwd(x, axis)
    assert y.dtype == dtype and y.shape == x.shape
    assert rel_err(y, rfwd(*f64(x), axis)) < tol(dtype)
    want = rbwd(*f64(g, x), axis)
    gx = bwd(g, x, axis)
    scale = softmax_grad_scale(g, axis)
    assert gx.dtype == dtype and rel_err(gx, want, scale) < 4 * tol(dtype)
    # from the forward output instead of x
    assert rel_err(bwd(g, None, axis, output=y), want, scale) < 4 * tol(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_large_arrays_use_threads_and_match_reference(dtype):
    """Above the serial threshold (2**15 elements) the kernels run on every thread."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 8, 40, 41)).astype(dtype)
    g = rng.standard_normal(x.shape).astype(dtype)
    for fwd, bwd, rfwd, rbwd, kw in ELEMENTWISE.values():
        assert rel_err(fwd(x, **kw), rfwd(*f64(x), **kw)) < tol(dtype)
        assert rel_err(bwd(g, x, **kw), rbwd(*f64(g, x), **kw)) < tol(dtype)
    for fwd, bwd, rfwd, rbwd in SOFTMAX.values():
        for axis in (1, -1, 0):
            assert rel_err(fwd(x, axis), rfwd(*f64(x), axis)) < tol(dtype)
            assert rel_err(bwd(g, x, axis), rbwd(*f64(g, x), axis),
                           softmax_grad_scale(g, axis)) < 4 * tol(dtype)
    w = rng.uniform(0, 0.3, 8).astype(dtype)
    gx, gw = gc.prelu_backward(g, x, w)
    rgx, rgw = ref.prelu_backward(*f64(g, x, w))
    assert rel_err(gc.prelu(x, w), ref.prelu(*f64(x, w))) < tol(dtype)
    assert rel_err(gx, rgx) < tol(dtype) and rel_err(gw, rgw) < 10 * tol(dtype)
    # dense (N, C): softmax over the last axis
    d = rng.standard_normal((4000, 10)).astype(dtype)
    assert rel_err(gc.softmax(d, -1), ref.softmax(d.astype(np.float64), -1)) < tol(dtype)


def test_thread_count_is_restored_after_small_calls():
    before = numba.get_num_threads()
    gc.relu(np.ones((2, 3)))
    gc.softmax(np.ones((2, 3)))
    assert numba.get_num_threads() == before


# -------------------------------------------------------------------- hand examples ---

def test_rectifiers_by_hand():
    x = np.array([[-2.0, -0.5, 0.0, 0.5, 3.0]])
    assert np.array_equal(gc.relu(x), [[0, 0, 0, 0.5, 3]])
    assert np.array_equal(gc.leaky_relu(x, 0.5), [[-1, -0.25, 0, 0.5, 3]])
    assert np.array_equal(gc.leaky_relu(x), [[-0.02, -0.005, 0, 0.5, 3]])
    assert np.array_equal(gc.abs_rectify(x), [[2, 0.5, 0, 0.5, 3]])
    g = np.array([[1.0, 2.0, 3.0, 4.0, 5.0]])
    # kinks as PyTorch: relu'(0) = 0, leaky'(0) = slope, abs'(0) = 0
    assert np.array_equal(gc.relu_backward(g, x), [[0, 0, 0, 4, 5]])
    assert np.array_equal(gc.leaky_relu_backward(g, x, 0.5), [[0.5, 1, 1.5, 4, 5]])
    assert np.array_equal(gc.abs_rectify_backward(g, x), [[-1, -2, 0, 4, 5]])


def test_prelu_by_hand():
    x = np.array([[[-2.0, 1.0], [-4.0, 0.0]],
                  [[3.0, -1.0], [-2.0, 5.0]]])  # (N=2, C=2, L=2)
    w = np.array([0.5, 0.25])
    assert np.array_equal(gc.prelu(x, w), [[[-1, 1], [-1, 0]], [[3, -0.5], [-0.5, 5]]])
    assert np.array_equal(gc.prelu(x, [0.5]), [[[-1, 1], [-2, 0]], [[3, -0.5], [-1, 5]]])
    g = np.ones_like(x)
    gx, gw = gc.prelu_backward(g, x, w)
    # slope where x <= 0 (the kink x == 0 included, as PyTorch)
    assert np.array_equal(gx, [[[0.5, 1], [0.25, 0.25]], [[1, 0.5], [0.25, 1]]])
    # grad_w[c] = sum of min(x, 0) over channel c: -2 - 1 = -3, -4 + 0 - 2 = -6
    assert np.array_equal(gw, [-3, -6])
    _, gw1 = gc.prelu_backward(g, x, [0.5])
    assert np.array_equal(gw1, [-9])
    # dense (N, C)
    assert np.array_equal(gc.prelu([[-1.0, -1.0, 2.0]], [0.1, 0.2, 0.3]), [[-0.1, -0.2, 2]])


def test_squashing_by_hand():
    x = np.array([0.0, math.log(3.0), -math.log(3.0)])
    assert np.allclose(gc.sigmoid(x), [0.5, 0.75, 0.25], rtol=1e-15, atol=0)
    # s' = s (1 - s): 1/4, 3/16, 3/16
    assert np.allclose(gc.sigmoid_backward(np.ones(3), x), [0.25, 0.1875, 0.1875],
                       rtol=1e-15, atol=0)
    t = np.array([0.0, math.log(2.0)])
    # tanh(ln 2) = (2 - 1/2) / (2 + 1/2) = 0.6; tanh' = 1 - 0.36 = 0.64
    assert np.allclose(gc.tanh(t), [0.0, 0.6], rtol=1e-15, atol=1e-300)
    assert np.allclose(gc.tanh_backward(np.ones(2), t), [1.0, 0.64], rtol=1e-15, atol=0)


def test_softmax_by_hand():
    x = np.array([[0.0, math.log(3.0)]])
    assert np.allclose(gc.softmax(x), [[0.25, 0.75]], rtol=1e-15, atol=0)
    assert np.allclose(gc.log_softmax(x), [[math.log(0.25), math.log(0.75)]], rtol=1e-15,
                       atol=0)
    # y = (1/4, 3/4), g = (1, 0): sum g*y = 1/4, grad = y * (g - 1/4) = (3/16, -3/16)
    assert np.allclose(gc.softmax_backward(np.array([[1.0, 0.0]]), x), [[0.1875, -0.1875]],
                       rtol=1e-15, atol=0)
    # log_softmax: g - y * sum(g) = (1, 0) - (1/4, 3/4) = (3/4, -3/4)
    assert np.allclose(gc.log_softmax_backward(np.array([[1.0, 0.0]]), x), [[0.75, -0.75]],
                       rtol=1e-15, atol=0)


def test_softmax_is_per_pixel_over_channels():
    # (N=1, C=2, H=1, W=2): pixel 0 has logits (0, ln 3), pixel 1 has (ln 3, 0)
    x = np.array([[[[0.0, math.log(3.0)]], [[math.log(3.0), 0.0]]]])
    y = gc.softmax(x)
    assert np.allclose(y[0, :, 0, 0], [0.25, 0.75], rtol=1e-15, atol=0)
    assert np.allclose(y[0, :, 0, 1], [0.75, 0.25], rtol=1e-15, atol=0)
    # a single channel: every probability is 1, every log-probability 0
    assert np.array_equal(gc.softmax(np.ones((2, 1, 3, 3, 3))), np.ones((2, 1, 3, 3, 3)))
    assert np.array_equal(gc.log_softmax(np.ones((2, 1, 4))), np.zeros((2, 1, 4)))


# ---------------------------------------------------------------- finite differences ---

def _away_from_kinks(rng, shape):
    return rng.choice([-1.0, 1.0], shape) * (0.2 + np.abs(rng.standard_normal(shape)))


@pytest.mark.parametrize("name", sorted(ELEMENTWISE))
@pytest.mark.parametrize("shape", [(2, 3), (2, 2, 3, 2)])
def test_elementwise_gradients_against_finite_differences(name, shape):
    fwd, bwd, _, _, kw = ELEMENTWISE[name]
    rng = np.random.default_rng(len(name))
    x = _away_from_kinks(rng, shape)
    g = rng.standard_normal(shape)
    num = numerical_gradient(lambda: float(np.sum(fwd(x, **kw) * g)), x)
    assert rel_err(bwd(g, x, **kw), num) < 1e-8


@pytest.mark.parametrize("shared", [False, True])
def test_prelu_gradients_against_finite_differences(shared):
    rng = np.random.default_rng(11)
    x = _away_from_kinks(rng, (2, 3, 2, 2))
    w = rng.uniform(-0.5, 0.5, 1 if shared else 3)
    g = rng.standard_normal(x.shape)

    def loss():
        return float(np.sum(gc.prelu(x, w) * g))

    gx, gw = gc.prelu_backward(g, x, w)
    assert rel_err(gx, numerical_gradient(loss, x)) < 1e-8
    assert rel_err(gw, numerical_gradient(loss, w)) < 1e-8


@pytest.mark.parametrize("name", sorted(SOFTMAX))
@pytest.mark.parametrize("shape, axis", [((3, 4), 1), ((2, 3, 2, 3), 1), ((2, 3, 5), -1),
                                         ((3, 2, 2, 2, 2), 0)])
def test_softmax_gradients_against_finite_differences(name, shape, axis):
    fwd, bwd, _, _ = SOFTMAX[name]
    rng = np.random.default_rng(len(shape) + axis)
    x = 2 * rng.standard_normal(shape)
    g = rng.standard_normal(shape)
    num = numerical_gradient(lambda: float(np.sum(fwd(x, axis) * g)), x)
    assert rel_err(bwd(g, x, axis), num) < 1e-8
    assert rel_err(bwd(g, None, axis, output=fwd(x, axis)), num) < 1e-8


# ------------------------------------------------------------------- extreme values ---

@pytest.mark.parametrize("dtype", DTYPES)
def test_extreme_values_saturate_without_overflow(dtype):
    big = np.array([-1000.0, -100.0, 100.0, 1000.0], dtype=dtype)
    with np.errstate(all="raise"):  # NumPy-side overflow would raise; the kernels do not
        s = gc.sigmoid(big)
        t = gc.tanh(big)
    # e^-100 = 3.7e-44 is below float32's normal range: flushed to 0 (documented); a
    # float64 keeps it; 1 + e^-100 rounds to 1 in both dtypes
    tail = 0.0 if dtype == np.float32 else math.exp(-100)
    assert s.dtype == dtype and np.array_equal(s[[0, 2, 3]], [0, 1, 1])
    assert s[1] == tail or abs(s[1] - tail) < 1e-14 * tail
    assert np.array_equal(t, [-1, -1, 1, 1])
    one = np.ones(2, dtype)
    assert np.array_equal(gc.sigmoid_backward(one, big[[0, 3]]), [0, 0])
    assert np.array_equal(gc.tanh_backward(one, big[[0, 3]]), [0, 0])
    assert np.array_equal(gc.sigmoid_backward(one, None, output=s[[0, 3]]), [0, 0])
    assert np.array_equal(gc.tanh_backward(one, None, output=t[[0, 3]]), [0, 0])

    x = np.array([[1000.0, 0.0, -1000.0], [1000.0, 1000.0, -1000.0]], dtype=dtype)
    y = gc.softmax(x, axis=1)
    assert np.array_equal(y, [[1, 0, 0], [0.5, 0.5, 0]])
    ly = gc.log_softmax(x, axis=1)
    assert np.isfinite(ly).all()
    assert np.allclose(ly[0], [0, -1000, -2000], rtol=1e-6, atol=0)
    assert np.allclose(ly[1], [-math.log(2), -math.log(2), -2000 - math.log(2)], rtol=1e-6)
    g = np.array([[1.0, 2.0, 3.0], [1.0, 0.0, 0.0]], dtype=dtype)
    assert np.isfinite(gc.softmax_backward(g, x)).all()
    # log_softmax: g - y * sum(g) = (1 - 6, 2, 3) and (1 - 0.5, -0.5, 0)
    assert np.allclose(gc.log_softmax_backward(g, x), [[-5, 2, 3], [0.5, -0.5, 0]],
                       rtol=1e-6, atol=0)


def test_tails_keep_relative_precision():
    # sigmoid(-30) = e^-30 / (1 + e^-30), not a difference 1 - something
    x = np.array([-30.0, 30.0, -700.0])
    assert np.allclose(gc.sigmoid(x)[[0, 2]], [math.exp(-30) / (1 + math.exp(-30)),
                                               math.exp(-700)], rtol=1e-14, atol=0)
    # derivatives from x: e/(1+e)^2 and 4e/(1+e)^2, where 1 - s and 1 - t^2 round to 0
    d = gc.sigmoid_backward(np.ones(3), x)
    assert np.allclose(d, [math.exp(-30) / (1 + math.exp(-30)) ** 2] * 2
                       + [math.exp(-700)], rtol=1e-13, atol=0)
    t = np.array([20.0, -20.0])
    assert np.allclose(gc.tanh_backward(np.ones(2), t), 4 * math.exp(-40)
                       / (1 + math.exp(-40)) ** 2, rtol=1e-13, atol=0)
    # float32 too: sigmoid(-80) = 1.8e-35, a normal float32
    x32 = np.array([-80.0], np.float32)
    assert np.allclose(gc.sigmoid(x32), math.exp(-80), rtol=1e-5, atol=0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_infinities(dtype):
    x = np.array([-np.inf, -1.0, np.inf], dtype=dtype)
    one = np.ones(3, dtype)
    assert np.array_equal(gc.relu(x), [0, 0, np.inf])
    assert np.array_equal(gc.sigmoid(x), [0, gc.sigmoid(x)[1], 1])
    assert np.array_equal(gc.tanh(x), [-1, gc.tanh(x)[1], 1])
    assert np.array_equal(gc.sigmoid_backward(one, x)[[0, 2]], [0, 0])
    assert np.array_equal(gc.tanh_backward(one, x)[[0, 2]], [0, 0])
    # -inf logits mask classes out: probability 0, log-probability -inf
    z = np.array([[0.0, -np.inf, 0.0], [-np.inf, 5.0, -np.inf]], dtype=dtype)
    g = np.ones_like(z)
    # along contiguous rows (axis -1) and across rows (axis 0 of the transpose)
    for fwd, bwd in ((lambda f, a: f(a, -1), lambda f, b, a: f(b, a, -1)),
                     (lambda f, a: f(a.T, 0).T, lambda f, b, a: f(b.T, a.T, 0).T)):
        assert np.array_equal(fwd(gc.softmax, z), [[0.5, 0, 0.5], [0, 1, 0]])
        ls = fwd(gc.log_softmax, z)
        assert np.array_equal(ls[0, 1], -np.inf) and np.isclose(ls[0, 0], -math.log(2))
        assert np.array_equal(bwd(gc.softmax_backward, g, z), np.zeros_like(z))
        # g - softmax * sum(g): 1 - 0.5*3 at the kept classes, 1 at the masked ones
        assert np.allclose(bwd(gc.log_softmax_backward, g, z), [[-0.5, 1, -0.5], [1, -2, 1]])


@pytest.mark.parametrize("dtype", DTYPES)
def test_elementwise_relative_accuracy(dtype):
    """Every element within a few ulps of the exact value (computed in long double), from
    |x| = 1e-30 (tanh x ~ x: no cancellation) to the far tails (sigmoid(-x) ~ e^-x)."""
    top = 40.0 if dtype == np.float32 else 350.0
    mag = np.logspace(-30, np.log10(top), 3001)
    x = np.concatenate([-mag[::-1], [0.0], mag]).astype(dtype)
    xl = x.astype(np.longdouble)
    e = np.exp(-np.abs(xl))
    e2 = np.exp(-2 * np.abs(xl))
    one = np.ones_like(x)
    exact = {
        "sigmoid": (gc.sigmoid(x), 1 / (1 + np.exp(-xl))),
        "tanh": (gc.tanh(x), np.tanh(xl)),
        "sigmoid'": (gc.sigmoid_backward(one, x), e / (1 + e) ** 2),
        "tanh'": (gc.tanh_backward(one, x), 4 * e2 / (1 + e2) ** 2),
        "softmax": (gc.softmax(np.stack([x, -x], axis=1), axis=1)[:, 0],
                    1 / (1 + np.exp(-2 * xl))),
    }
    eps = np.finfo(dtype).eps
    for name, (got, want) in exact.items():
        assert got.dtype == dtype
        ulps = np.abs(got.astype(np.longdouble) - want) / np.maximum(np.abs(want), 1e-300)
        assert float(ulps.max()) < 6 * eps, name


# ---------------------------------------------------------------------------- NaNs ---

ALL_FORWARD = [(n, f, kw) for n, (f, _, _, _, kw) in ELEMENTWISE.items()]


@pytest.mark.parametrize("dtype", DTYPES)
def test_nan_propagates_elementwise(dtype):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 3, 4)).astype(dtype)
    x[1, 2, 3] = np.nan
    g = np.ones_like(x)
    g2 = g.copy()
    g2[0, 0, 0] = np.nan
    mask = np.isnan(x)
    for name, (fwd, bwd, _, _, kw) in ELEMENTWISE.items():
        y = fwd(x, **kw)
        assert np.array_equal(np.isnan(y), mask), name
        assert np.array_equal(np.isnan(bwd(g, x, **kw)), mask), name
        both = np.isnan(bwd(g2, x, **kw))
        assert both[1, 2, 3] and both[0, 0, 0] and both.sum() == 2, name
    for bwd, f in ((gc.sigmoid_backward, gc.sigmoid), (gc.tanh_backward, gc.tanh)):
        assert np.array_equal(np.isnan(bwd(g, None, output=f(x))), mask)
    w = np.array([0.1, 0.2, 0.3], dtype)
    assert np.array_equal(np.isnan(gc.prelu(x, w)), mask)
    gx, gw = gc.prelu_backward(g, x, w)
    assert np.array_equal(np.isnan(gx), mask)
    assert np.array_equal(np.isnan(gw), [False, False, True])


@pytest.mark.parametrize("dtype", DTYPES)
def test_nan_propagates_through_softmax_column_only(dtype):
    x = np.random.default_rng(6).standard_normal((2, 4, 3, 5)).astype(dtype)
    x[1, 2, 0, 4] = np.nan
    column = np.zeros(x.shape, bool)
    column[1, :, 0, 4] = True  # the values normalised together with the NaN
    g = np.ones_like(x)
    for fwd, bwd, _, _ in SOFTMAX.values():
        assert np.array_equal(np.isnan(fwd(x)), column)
        assert np.array_equal(np.isnan(bwd(g, x)), column)
    x0 = x.copy()
    x0[1, 2, 0, 4] = 0
    x0[0, 0, 0, 0] = np.nan  # NaN in the first channel (where the max search starts)
    assert np.isnan(gc.softmax(x0)[0, :, 0, 0]).all()
    assert np.isnan(gc.softmax(x0)).sum() == 4


# --------------------------------------------------------- dtypes, layouts, read-only ---

def test_dtype_follows_input_and_ints_promote():
    xi = np.array([[-2, 0, 3]], dtype=np.int32)
    assert gc.relu(xi).dtype == np.float64 and np.array_equal(gc.relu(xi), [[0, 0, 3]])
    assert gc.sigmoid(xi.astype(np.float16)).dtype == np.float32
    assert gc.softmax(xi.astype(np.float32)).dtype == np.float32
    assert gc.relu(np.array([True, False])).dtype == np.float64
    g32 = np.ones((1, 3), np.float32)
    assert gc.tanh_backward(g32, xi.astype(np.float64)).dtype == np.float64
    assert gc.prelu(xi.astype(np.float32), np.ones(3, np.float64)).dtype == np.float64
    gx, gw = gc.prelu_backward(g32, xi.astype(np.float32), np.ones(1, np.float32))
    assert gx.dtype == gw.dtype == np.float32
    # scalars and 1-D arrays work for the elementwise operations
    assert gc.relu(-3.0) == 0 and gc.relu(-3.0).shape == ()
    assert np.array_equal(gc.abs_rectify([-1, 2]), [1.0, 2.0])


@pytest.mark.parametrize("dtype", DTYPES)
def test_non_contiguous_and_fortran_inputs(dtype):
    rng = np.random.default_rng(7)
    base = rng.standard_normal((3, 8, 7, 9)).astype(dtype)
    x = base[:, ::2, :, ::-1]
    g = np.asfortranarray(rng.standard_normal(x.shape).astype(dtype))
    xc, gcont = np.ascontiguousarray(x), np.ascontiguousarray(g)
    for fwd, bwd, _, _, kw in ELEMENTWISE.values():
        assert np.array_equal(fwd(x, **kw), fwd(xc, **kw))
        assert np.array_equal(fwd(np.asfortranarray(x), **kw), fwd(xc, **kw))
        assert np.array_equal(bwd(g, x, **kw), bwd(gcont, xc, **kw))
    for fwd, bwd, _, _ in SOFTMAX.values():
        assert np.array_equal(fwd(x, 1), fwd(xc, 1))
        assert np.array_equal(bwd(g, x, -1), bwd(gcont, xc, -1))
    w = rng.standard_normal(8).astype(dtype)[::2]
    assert np.array_equal(gc.prelu(x, w), gc.prelu(xc, np.ascontiguousarray(w)))
    for a, b in zip(gc.prelu_backward(g, x, w), gc.prelu_backward(gcont, xc, w.copy())):
        assert np.array_equal(a, b)


def test_inputs_are_never_written():
    rng = np.random.default_rng(8)
    x = rng.standard_normal((2, 3, 5))
    g = rng.standard_normal(x.shape)
    w = rng.standard_normal(3)
    keep = [a.copy() for a in (x, g, w)]
    for a in (x, g, w):
        a.flags.writeable = False
    for fwd, bwd, _, _, kw in ELEMENTWISE.values():
        y = fwd(x, **kw)
        assert y.flags.writeable and not np.shares_memory(y, x)
        bwd(g, x, **kw)
    for fwd, bwd, _, _ in SOFTMAX.values():
        y = fwd(x)
        y.flags.writeable = False
        bwd(g, x)
        bwd(g, x, output=y)
    for bwd, f in ((gc.sigmoid_backward, gc.sigmoid), (gc.tanh_backward, gc.tanh)):
        y = f(x)
        y.flags.writeable = False
        bwd(g, x, output=y)
    gc.prelu(x, w)
    gc.prelu_backward(g, x, w)
    for a, k in zip((x, g, w), keep):
        assert np.array_equal(a, k)


def test_empty_arrays():
    x = np.zeros((0, 3, 4))
    assert gc.relu(x).shape == (0, 3, 4)
    assert gc.softmax(x).shape == (0, 3, 4)
    assert gc.log_softmax_backward(x, x, -1).shape == (0, 3, 4)
    gx, gw = gc.prelu_backward(x, x, np.ones(3))
    assert gx.shape == (0, 3, 4) and np.array_equal(gw, np.zeros(3))


# ------------------------------------------------------------------ clear errors ---

X = np.ones((2, 3, 4))


@pytest.mark.parametrize("call, exc, pattern", [
    (lambda: gc.prelu(X, np.ones(2)), ValueError,
     r"prelu: `weight` must have shape \(3,\) .* or \(1,\) .*, got \(2,\)"),
    (lambda: gc.prelu(X, np.ones((3, 1))), ValueError, r"prelu: `weight` must have shape"),
    (lambda: gc.prelu(np.ones(5), np.ones(1)), ValueError,
     r"prelu: `x` must be at least 2-D \(N, C, \*spatial\).*got shape \(5,\)"),
    (lambda: gc.prelu_backward(X, X, np.ones(4)), ValueError,
     r"prelu_backward: `weight` must have shape \(3,\)"),
    (lambda: gc.softmax(X, axis=3), ValueError,
     r"softmax: `axis` must be in \[-3, 2\] for a 3-D `x`, got 3"),
    (lambda: gc.log_softmax(X, axis=-4), ValueError, r"log_softmax: `axis` must be in"),
    (lambda: gc.softmax(np.float64(1.0)), ValueError, r"softmax: `x` must be at least 1-D"),
    (lambda: gc.softmax(X, axis=1.0), TypeError, r"softmax: `axis` must be an int, got 1.0"),
    (lambda: gc.softmax(X, axis=True), TypeError, r"softmax: `axis` must be an int"),
    (lambda: gc.softmax_backward(X, X, axis=5), ValueError, r"softmax_backward: `axis`"),
    (lambda: gc.relu(X.astype(complex)), TypeError,
     r"relu: `x` must hold real numbers .* got dtype complex128"),
    (lambda: gc.softmax(X.astype(np.complex64)), TypeError, r"softmax: `x` must hold real"),
    (lambda: gc.sigmoid(np.array(["a"])), TypeError, r"sigmoid: `x` must hold real"),
    (lambda: gc.prelu(X, np.ones(3, complex)), TypeError, r"prelu: `weight` must hold real"),
    (lambda: gc.tanh_backward(X.astype(complex), X), TypeError,
     r"tanh_backward: `grad_output` must hold real"),
    (lambda: gc.relu_backward(np.ones((2, 3, 5)), X), ValueError,
     r"relu_backward: `grad_output` must have the shape of `x`, \(2, 3, 4\), got \(2, 3, 5\)"),
    (lambda: gc.prelu_backward(np.ones((2, 3)), X, np.ones(3)), ValueError,
     r"prelu_backward: `grad_output` must have the shape of `x`"),
    (lambda: gc.softmax_backward(np.ones((2, 3)), X), ValueError,
     r"softmax_backward: `grad_output` must have the shape of `x`"),
    (lambda: gc.log_softmax_backward(np.ones((2, 3)), None, output=X), ValueError,
     r"log_softmax_backward: `grad_output` must have the shape of `output`"),
    (lambda: gc.sigmoid_backward(X, X, output=np.ones((2, 3))), ValueError,
     r"sigmoid_backward: `output` must have the shape of `x`"),
    (lambda: gc.tanh_backward(X, None), TypeError,
     r"tanh_backward: `x` is required when `output` is not given"),
    (lambda: gc.relu_backward(X, None), TypeError, r"relu_backward: `x` is required"),
    (lambda: gc.leaky_relu(X, negative_slope="0.1"), TypeError,
     r"leaky_relu: `negative_slope` must be a real number, got '0.1'"),
    (lambda: gc.leaky_relu(X, negative_slope=float("nan")), ValueError,
     r"leaky_relu: `negative_slope` must be finite"),
    (lambda: gc.leaky_relu_backward(X, X, negative_slope=None), TypeError,
     r"leaky_relu_backward: `negative_slope`"),
    (lambda: ref.softmax(X, axis=7), ValueError, r"reference.softmax: `axis` must be in"),
    (lambda: ref.prelu(X, np.ones(2)), ValueError, r"reference.prelu: `weight` must have"),
])
def test_bad_input_errors(call, exc, pattern):
    with pytest.raises(exc, match=pattern):
        call()


# ---------------------------------------------------------------------- PyTorch ---

@pytest.mark.parametrize("dtype", DTYPES)
def test_agrees_with_torch(dtype):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = np.random.default_rng(9)
    x = rng.standard_normal((2, 4, 5, 6)).astype(dtype)
    x[rng.random(x.shape) < 0.15] = 0  # the kinks, where conventions differ most
    g = rng.standard_normal(x.shape).astype(dtype)
    w = rng.uniform(0, 0.5, 4).astype(dtype)
    cases = [
        (gc.relu, gc.relu_backward, F.relu, {}),
        (lambda a: gc.leaky_relu(a, 0.1), lambda gg, a: gc.leaky_relu_backward(gg, a, 0.1),
         lambda t: F.leaky_relu(t, 0.1), {}),
        (gc.abs_rectify, gc.abs_rectify_backward, torch.abs, {}),
        (gc.sigmoid, gc.sigmoid_backward, torch.sigmoid, {}),
        (gc.tanh, gc.tanh_backward, torch.tanh, {}),
        (gc.softmax, gc.softmax_backward, lambda t: F.softmax(t, 1), {}),
        (gc.log_softmax, gc.log_softmax_backward, lambda t: F.log_softmax(t, 1), {}),
        (lambda a: gc.softmax(a, -1), lambda gg, a: gc.softmax_backward(gg, a, -1),
         lambda t: F.softmax(t, -1), {}),
    ]
    tl = 1e-6 if dtype == np.float32 else 1e-14
    for fwd, bwd, tf, _ in cases:
        xt = torch.from_numpy(x.copy()).requires_grad_(True)
        yt = tf(xt)
        yt.backward(torch.from_numpy(g))
        assert rel_err(fwd(x), yt.detach().numpy()) < tl
        assert rel_err(bwd(g, x), xt.grad.numpy()) < 4 * tl
    for weight in (w, w[:1]):
        xt = torch.from_numpy(x.copy()).requires_grad_(True)
        wt = torch.from_numpy(weight.copy()).requires_grad_(True)
        yt = F.prelu(xt, wt)
        yt.backward(torch.from_numpy(g))
        gx, gw = gc.prelu_backward(g, x, weight)
        assert rel_err(gc.prelu(x, weight), yt.detach().numpy()) < tl
        assert rel_err(gx, xt.grad.numpy()) < tl
        assert rel_err(gw, wt.grad.numpy()) < 20 * tl
