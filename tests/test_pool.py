"""Pooling (max, average, L^p, global) and its gradients: the Numba engine against the
plain-NumPy reference, hand-computed examples, finite differences, and PyTorch."""

from __future__ import annotations

import numpy as np
import pytest
from _numeric import numerical_gradient, rel_err
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gridconv as gc
from gridconv import reference as ref

SETTINGS = settings(max_examples=70, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def tol(dtype):
    return 2e-5 if dtype == np.float32 else 1e-12


def a1(*values):
    """A 1-D signal as an ``(N=1, C=1, L)`` array."""
    return np.array(values, dtype=float).reshape(1, 1, -1)


# ----------------------------------------------------------------- random problems ---

@st.composite
def pool_problems(draw):
    nd = draw(st.integers(1, 3))
    max_size = {1: 13, 2: 8, 3: 6}[nd]
    window = tuple(draw(st.integers(1, 4)) for _ in range(nd))
    stride = tuple(draw(st.integers(1, 3)) for _ in range(nd))
    dilation = tuple(draw(st.integers(1, 2)) for _ in range(nd))
    padding = tuple(draw(st.integers(0, k // 2)) for k in window)
    ceil_mode = draw(st.booleans())
    # at least room for one window on every axis
    sizes = tuple(max(draw(st.integers(1, max_size)), r * (k - 1) + 1 - 2 * p)
                  for k, r, p in zip(window, dilation, padding))
    shape = (draw(st.integers(1, 2)), draw(st.integers(1, 3))) + sizes
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    return shape, dict(window=window, stride=stride, padding=padding,
                       ceil_mode=ceil_mode), dilation, dtype, draw(st.integers(0, 2**31))


@SETTINGS
@given(pool_problems())
def test_max_pool_matches_reference(problem):
    shape, kw, dilation, dtype, seed = problem
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(dtype)
    y, idx = gc.max_pool(x, dilation=dilation, return_indices=True, **kw)
    y_ref, idx_ref = ref.max_pool(x, dilation=dilation, return_indices=True, **kw)
    assert y.dtype == dtype and idx.dtype == np.int64
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(idx, idx_ref)
    np.testing.assert_array_equal(gc.max_pool(x, dilation=dilation, **kw), y_ref)
    g = rng.standard_normal(y.shape).astype(dtype)
    want = ref.max_pool_backward(g, x, dilation=dilation, **kw)
    for got in (gc.max_pool_backward(g, x, dilation=dilation, **kw),
                gc.max_pool_backward(g, x, dilation=dilation, indices=idx, **kw)):
        assert got.dtype == dtype and got.shape == x.shape
        assert rel_err(got, want) < tol(dtype)


@SETTINGS
@given(pool_problems(), st.booleans())
def test_avg_pool_matches_reference(problem, include_pad):
    shape, kw, _, dtype, seed = problem
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(dtype)
    y = gc.avg_pool(x, count_include_pad=include_pad, **kw)
    want = ref.avg_pool(x.astype(np.float64), count_include_pad=include_pad, **kw)
    terms = ref.avg_pool(np.abs(x.astype(np.float64)), count_include_pad=include_pad, **kw)
    assert y.dtype == dtype and y.shape == want.shape
    assert rel_err(y, want, terms) < tol(dtype)
    g = rng.standard_normal(y.shape).astype(dtype)
    gx = gc.avg_pool_backward(g, x, count_include_pad=include_pad, **kw)
    want = ref.avg_pool_backward(g.astype(np.float64), x.astype(np.float64),
                                 count_include_pad=include_pad, **kw)
    terms = ref.avg_pool_backward(np.abs(g.astype(np.float64)), x.astype(np.float64),
                                  count_include_pad=include_pad, **kw)
    assert gx.dtype == dtype and gx.shape == x.shape
    assert rel_err(gx, want, terms) < tol(dtype)


@SETTINGS
@given(pool_problems(), st.sampled_from([1, 1.5, 2, 3]))
def test_lp_pool_matches_reference(problem, p):
    shape, kw, _, dtype, seed = problem
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(dtype)
    y = gc.lp_pool(x, p, **kw)
    want = ref.lp_pool(x.astype(np.float64), p, **kw)
    assert y.dtype == dtype and y.shape == want.shape
    assert rel_err(y, want) < tol(dtype)
    g = rng.standard_normal(y.shape).astype(dtype)
    gx = gc.lp_pool_backward(g, x, p, **kw)
    want = ref.lp_pool_backward(g.astype(np.float64), x.astype(np.float64), p, **kw)
    assert gx.dtype == dtype and gx.shape == x.shape
    assert rel_err(gx, want) < 10 * tol(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(3, 2, 17), (2, 3, 5, 9), (2, 2, 3, 4, 5)])
def test_global_pools_match_reference(shape, dtype):
    rng = np.random.default_rng(len(shape))
    x = rng.standard_normal(shape).astype(dtype)
    kept = shape[:2] + (1,) * (len(shape) - 2)
    g = rng.standard_normal(kept).astype(dtype)
    for fwd, bwd, rfwd, rbwd in (
        (gc.global_max_pool, gc.global_max_pool_backward, ref.global_max_pool,
         ref.global_max_pool_backward),
        (gc.global_avg_pool, gc.global_avg_pool_backward, ref.global_avg_pool,
         ref.global_avg_pool_backward),
    ):
        y = fwd(x)
        assert y.shape == kept and y.dtype == dtype
        assert rel_err(y, rfwd(x.astype(np.float64))) < tol(dtype)
        gx = bwd(g, x)
        assert gx.shape == shape and gx.dtype == dtype
        assert rel_err(gx, rbwd(g.astype(np.float64), x.astype(np.float64))) < tol(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kw", [
    dict(window=2),                                          # the fast path
    dict(window=(3, 2), stride=(2, 2), padding=(1, 0)),      # fast along x only
    dict(window=3, stride=2, padding=1, ceil_mode=True),
    dict(window=(2, 3), stride=1, padding=1),
])
def test_parallel_problems_match_reference(kw, dtype):
    """Large enough for every thread (small problems run on one): no races."""
    rng = np.random.default_rng(9)
    x = rng.standard_normal((3, 8, 37, 41)).astype(dtype)
    y, idx = gc.max_pool(x, return_indices=True, **kw)
    y_ref, idx_ref = ref.max_pool(x, return_indices=True, **kw)
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(idx, idx_ref)
    g = rng.standard_normal(y.shape).astype(dtype)
    x64, g64 = x.astype(np.float64), g.astype(np.float64)
    assert rel_err(gc.max_pool_backward(g, x, indices=idx, **kw),
                   ref.max_pool_backward(g64, x64, **kw)) < tol(dtype)
    for include in (True, False):
        assert rel_err(gc.avg_pool(x, count_include_pad=include, **kw),
                       ref.avg_pool(x64, count_include_pad=include, **kw)) < tol(dtype)
        assert rel_err(gc.avg_pool_backward(g, x, count_include_pad=include, **kw),
                       ref.avg_pool_backward(g64, x64, count_include_pad=include, **kw)
                       ) < tol(dtype)
    assert rel_err(gc.lp_pool(x, 2, **kw), ref.lp_pool(x64, 2, **kw)) < tol(dtype)
    assert rel_err(gc.lp_pool_backward(g, x, 2, **kw),
                   ref.lp_pool_backward(g64, x64, 2, **kw)) < 10 * tol(dtype)
    planes = rng.standard_normal((2, 3, 150, 151)).astype(dtype)  # several chunks
    assert rel_err(gc.global_avg_pool(planes),
                   planes.astype(np.float64).mean(axis=(2, 3), keepdims=True)) < tol(dtype)
    np.testing.assert_array_equal(gc.global_max_pool(planes),
                                  planes.max(axis=(2, 3), keepdims=True))


# -------------------------------------------------------------------- hand examples ---

def test_max_pool_by_hand_1d():
    x = a1(1, 3, 2, 5, 4)
    # windows [1, 3], [2, 5]; the trailing 4 is dropped
    y, idx = gc.max_pool(x, 2, return_indices=True)
    assert y.tolist() == [[[3.0, 5.0]]] and idx.tolist() == [[[1, 3]]]
    # padding 1 (-inf both ends), window 3, stride 2: [-inf,1,3], [3,2,5], [5,4,-inf]
    y, idx = gc.max_pool(x, 3, 2, 1, return_indices=True)
    assert y.tolist() == [[[3.0, 5.0, 5.0]]] and idx.tolist() == [[[1, 3, 3]]]
    # dilation 2, window 2: pairs (x0, x2), (x1, x3), (x2, x4)
    assert gc.max_pool(x, 2, 1, dilation=2).tolist() == [[[2.0, 5.0, 4.0]]]
    # ceil_mode keeps the partial window [4]
    assert gc.max_pool(x, 2, ceil_mode=True).tolist() == [[[3.0, 5.0, 4.0]]]
    # the gradient of each window goes to its winner; x[3] won two windows above
    gx = gc.max_pool_backward(a1(1, 10, 100), x, 3, 2, 1)
    assert gx.tolist() == [[[0.0, 1.0, 0.0, 110.0, 0.0]]]


def test_avg_pool_by_hand_1d():
    x = a1(1, 3, 2, 5, 4)
    assert gc.avg_pool(x, 2).tolist() == [[[2.0, 3.5]]]
    # padding 1, window 3, stride 2: [0,1,3]/3, [3,2,5]/3, [5,4,0]/3
    np.testing.assert_allclose(gc.avg_pool(x, 3, 2, 1), [[[4 / 3, 10 / 3, 3.0]]])
    # the same without counting the padding: [1,3]/2, [3,2,5]/3, [5,4]/2
    np.testing.assert_allclose(gc.avg_pool(x, 3, 2, 1, count_include_pad=False),
                               [[[2.0, 10 / 3, 4.5]]])
    # ceil_mode, window 2, stride 2, padding 1 on 5 samples: windows start at -1, 1, 3;
    # the last covers x[3], x[4] and nothing beyond the padded end -> /2 either way
    np.testing.assert_allclose(gc.avg_pool(x, 2, 2, 1, ceil_mode=True),
                               [[[0.5, 2.5, 4.5]]])
    # ceil_mode window 3 stride 2 on 6 ones, padding 1: the last window starts at x[5]
    # and holds x[5] plus one padded element within the padded bounds -> 1/2
    np.testing.assert_allclose(gc.avg_pool(np.ones((1, 1, 6)), 3, 2, 1, ceil_mode=True),
                               [[[2 / 3, 1.0, 1.0, 0.5]]])
    np.testing.assert_allclose(
        gc.avg_pool(np.ones((1, 1, 6)), 3, 2, 1, ceil_mode=True, count_include_pad=False),
        [[[1.0, 1.0, 1.0, 1.0]]])
    # backward: each window spreads g / divisor over its taps
    np.testing.assert_allclose(gc.avg_pool_backward(a1(3, 6, 9), x, 3, 2, 1),
                               [[[1.0, 3.0, 2.0, 5.0, 3.0]]])


def test_lp_pool_by_hand():
    x = a1(3, -4, 1, 0)
    assert gc.lp_pool(x, 2, 2).tolist() == [[[5.0, 1.0]]]
    assert gc.lp_pool(x, 1, 2).tolist() == [[[7.0, 1.0]]]  # |x| sums
    np.testing.assert_allclose(gc.lp_pool(x, 3, 2), [[[91 ** (1 / 3), 1.0]]])
    # padding adds zeros: windows [0, 3], [-4, 1], [0, 0]
    np.testing.assert_allclose(gc.lp_pool(x, 2, 2, 2, 1), [[[3.0, 17 ** 0.5, 0.0]]])
    # d/dx (x^2 + y^2)^(1/2) = x / norm; 0 for the all-zero window
    np.testing.assert_allclose(gc.lp_pool_backward(np.ones((1, 1, 2)), x, 2, 2),
                               [[[0.6, -0.8, 1.0, 0.0]]])


def test_2d_and_3d_by_hand():
    x = np.arange(16.0).reshape(1, 1, 4, 4)
    assert gc.max_pool(x, 2).tolist() == [[[[5.0, 7.0], [13.0, 15.0]]]]
    assert gc.avg_pool(x, 2).tolist() == [[[[2.5, 4.5], [10.5, 12.5]]]]
    y, idx = gc.max_pool(x, (2, 3), (2, 1), return_indices=True)
    assert y.tolist() == [[[[6.0, 7.0], [14.0, 15.0]]]]
    assert idx.tolist() == [[[[6, 7], [14, 15]]]]
    v = np.arange(27.0).reshape(1, 1, 3, 3, 3)
    # the 2x2x2 cubes: max is the far corner, the mean its centre
    assert gc.max_pool(v, 2, 1).ravel().tolist() == [13.0, 14.0, 16.0, 17.0, 22.0, 23.0,
                                                      25.0, 26.0]
    assert gc.avg_pool(v, 2, 1).ravel().tolist() == [6.5, 7.5, 9.5, 10.5, 15.5, 16.5,
                                                      18.5, 19.5]
    assert gc.global_max_pool(v).tolist() == [[[[[26.0]]]]]
    assert gc.global_avg_pool(v).tolist() == [[[[[13.0]]]]]


def test_global_pools_by_hand():
    x = np.array([[[[1.0, 7.0], [3.0, 2.0]], [[-1.0, -5.0], [0.0, -2.0]]]])
    np.testing.assert_array_equal(gc.global_max_pool(x), [[[[7.0]], [[0.0]]]])
    np.testing.assert_array_equal(gc.global_avg_pool(x), [[[[3.25]], [[-2.0]]]])
    g = np.array([[[[10.0]], [[4.0]]]])
    np.testing.assert_array_equal(gc.global_max_pool_backward(g, x),
                                  [[[[0, 10], [0, 0]], [[0, 0], [4, 0]]]])
    np.testing.assert_array_equal(gc.global_avg_pool_backward(g, x),
                                  [[[[2.5, 2.5], [2.5, 2.5]], [[1, 1], [1, 1]]]])


def test_global_avg_accumulates_float32_in_float64():
    rng = np.random.default_rng(3)
    x = (1000 + rng.standard_normal((1, 2, 64, 64, 64))).astype(np.float32)
    exact = x.astype(np.float64).mean(axis=(2, 3, 4), keepdims=True)
    assert rel_err(gc.global_avg_pool(x), exact) < 1e-7


# ---------------------------------------------------------- finite differences (f64) ---

FD_CASES = [
    ((1, 2, 9), dict(window=3, stride=2, padding=1)),
    ((2, 1, 5, 6), dict(window=(2, 3), stride=(1, 2), padding=(1, 1), ceil_mode=True)),
    ((1, 2, 4, 3, 5), dict(window=2, stride=(2, 1, 2), ceil_mode=True)),
]


def distinct(shape, seed):
    """Values at least 0.1 apart, so a 1e-6 step never changes a max winner."""
    rng = np.random.default_rng(seed)
    return rng.permutation(int(np.prod(shape))).reshape(shape) * 0.1 - 1.0


@pytest.mark.parametrize("shape, kw", FD_CASES)
def test_gradients_against_finite_differences(shape, kw):
    rng = np.random.default_rng(1)
    x = distinct(shape, 2)
    cases = [
        (lambda: gc.max_pool(x, dilation=1, **kw),
         lambda g: gc.max_pool_backward(g, x, **kw)),
        (lambda: gc.avg_pool(x, **kw), lambda g: gc.avg_pool_backward(g, x, **kw)),
        (lambda: gc.avg_pool(x, count_include_pad=False, **kw),
         lambda g: gc.avg_pool_backward(g, x, count_include_pad=False, **kw)),
    ]
    for p in (1, 1.5, 2, 3):
        cases.append((lambda p=p: gc.lp_pool(x, p, **kw),
                      lambda g, p=p: gc.lp_pool_backward(g, x, p, **kw)))
    cases += [(lambda: gc.global_max_pool(x), lambda g: gc.global_max_pool_backward(g, x)),
              (lambda: gc.global_avg_pool(x), lambda g: gc.global_avg_pool_backward(g, x))]
    for fwd, bwd in cases:
        g = rng.standard_normal(fwd().shape)

        def loss(fwd=fwd, g=g):
            return float(np.sum(fwd() * g))

        assert rel_err(bwd(g), numerical_gradient(loss, x)) < 1e-7


def test_max_pool_gradient_with_dilation_against_finite_differences():
    x = distinct((1, 1, 7, 8), 5)
    kw = dict(window=(2, 3), stride=(2, 1), padding=1, dilation=(2, 2))
    g = np.random.default_rng(6).standard_normal(gc.max_pool(x, **kw).shape)
    numeric = numerical_gradient(lambda: float(np.sum(gc.max_pool(x, **kw) * g)), x)
    assert rel_err(gc.max_pool_backward(g, x, **kw), numeric) < 1e-7


def test_lp_gradient_is_zero_where_the_window_norm_is_zero():
    x = a1(0, 0, 3, 4)
    gx = gc.lp_pool_backward(np.ones((1, 1, 2)), x, 2, 2)
    assert np.isfinite(gx).all()
    np.testing.assert_allclose(gx, [[[0.0, 0.0, 0.6, 0.8]]])
    for p in (1, 1.5, 3):
        gx = gc.lp_pool_backward(np.ones((1, 1, 2)), x, p, 2)
        assert np.isfinite(gx).all() and gx[0, 0, :2].tolist() == [0.0, 0.0]


# ------------------------------------------------------------------ PyTorch agreement ---

TORCH_CASES = [
    ((2, 3, 11), dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)),
    ((2, 3, 10), dict(kernel_size=4, stride=3, padding=2, dilation=2)),
    ((2, 2, 7, 9), dict(kernel_size=(3, 2), stride=(2, 3), padding=(1, 1), ceil_mode=True)),
    ((2, 2, 8, 8), dict(kernel_size=2, stride=2)),
    ((1, 2, 5, 6, 7), dict(kernel_size=(2, 3, 3), stride=2, padding=(0, 1, 1),
                           ceil_mode=True)),
    ((1, 2, 6, 5, 7), dict(kernel_size=3, stride=(1, 2, 3), dilation=(1, 2, 1))),
]


def _ours(kw):
    out = dict(window=kw["kernel_size"], stride=kw.get("stride"), padding=kw.get("padding", 0),
               ceil_mode=kw.get("ceil_mode", False))
    return out


@pytest.mark.parametrize("shape, kw", TORCH_CASES)
def test_agrees_with_pytorch(shape, kw):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    nd = len(shape) - 2
    rng = np.random.default_rng(7)
    x = rng.standard_normal(shape)
    xt = torch.tensor(x, requires_grad=True)
    ours = _ours(kw)
    y_t, idx_t = getattr(F, f"max_pool{nd}d")(xt, return_indices=True, **kw)
    y, idx = gc.max_pool(x, dilation=kw.get("dilation", 1), return_indices=True, **ours)
    np.testing.assert_array_equal(y, y_t.detach().numpy())
    np.testing.assert_array_equal(idx, idx_t.numpy())
    g = rng.standard_normal(y.shape)
    y_t.backward(torch.tensor(g))
    gx = gc.max_pool_backward(g, x, dilation=kw.get("dilation", 1), indices=idx, **ours)
    np.testing.assert_allclose(gx, xt.grad.numpy(), rtol=1e-12, atol=1e-12)
    if "dilation" in kw or (nd == 3 and min(shape[2:]) < max(np.broadcast_to(
            kw["kernel_size"], (3,)))):
        return  # no dilation in avg_pool; avg_pool3d refuses inputs smaller than the window
    for include in (True, False):
        xt.grad = None
        y_t = getattr(F, f"avg_pool{nd}d")(xt, count_include_pad=include, **kw)
        y = gc.avg_pool(x, count_include_pad=include, **ours)
        np.testing.assert_allclose(y, y_t.detach().numpy(), rtol=1e-12, atol=1e-12)
        y_t.backward(torch.tensor(g))
        np.testing.assert_allclose(gc.avg_pool_backward(g, x, count_include_pad=include, **ours),
                                   xt.grad.numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("nd", [1, 2, 3])
def test_lp_and_global_pools_agree_with_pytorch(nd):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = np.random.default_rng(8)
    x = rng.standard_normal((2, 3) + (7,) * nd)
    xt = torch.tensor(x, requires_grad=True)
    # PyTorch raises x (not |x|) to the power p: the same for p = 2, or |x| and any p
    for p, data in ((2, x), (3, np.abs(x)), (1.5, np.abs(x))):
        dt = torch.tensor(data, requires_grad=True)
        y_t = getattr(F, f"lp_pool{nd}d")(dt, p, 3, 2)
        np.testing.assert_allclose(gc.lp_pool(data, p, 3, 2), y_t.detach().numpy(),
                                   rtol=1e-10)
        g = rng.standard_normal(y_t.shape)
        y_t.backward(torch.tensor(g))
        np.testing.assert_allclose(gc.lp_pool_backward(g, data, p, 3, 2), dt.grad.numpy(),
                                   rtol=1e-8, atol=1e-12)
    y_t, idx_t = getattr(F, f"adaptive_max_pool{nd}d")(xt, 1, return_indices=True)
    np.testing.assert_array_equal(gc.global_max_pool(x), y_t.detach().numpy())
    g = rng.standard_normal(y_t.shape)
    y_t.backward(torch.tensor(g))
    np.testing.assert_array_equal(gc.global_max_pool_backward(g, x), xt.grad.numpy())
    xt.grad = None
    y_t = getattr(F, f"adaptive_avg_pool{nd}d")(xt, 1)
    np.testing.assert_allclose(gc.global_avg_pool(x), y_t.detach().numpy(), rtol=1e-12)
    y_t.backward(torch.tensor(g))
    np.testing.assert_allclose(gc.global_avg_pool_backward(g, x), xt.grad.numpy(),
                               rtol=1e-12)


def test_ties_and_nans_resolve_as_in_pytorch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(11)
    x = rng.integers(-2, 3, (2, 3, 9, 8)).astype(float)  # many ties
    x.flat[rng.choice(x.size, 25, replace=False)] = np.nan
    y_t, idx_t = torch.nn.functional.max_pool2d(torch.tensor(x), 3, 2, 1,
                                                return_indices=True)
    y, idx = gc.max_pool(x, 3, 2, 1, return_indices=True)
    np.testing.assert_array_equal(idx, idx_t.numpy())
    np.testing.assert_array_equal(y, y_t.numpy())  # NaNs compare equal here
    y_t, idx_t = torch.nn.functional.adaptive_max_pool2d(torch.tensor(x), 1,
                                                         return_indices=True)
    np.testing.assert_array_equal(gc.global_max_pool(x), y_t.numpy())


# ------------------------------------------------------------ ties, NaN, -inf, empty ---

def test_ties_go_to_the_first_tap_in_scan_order():
    x = np.array([[[[1.0, 5.0], [5.0, 1.0]]]])  # row-major: (0, 1) comes before (1, 0)
    y, idx = gc.max_pool(x, 2, return_indices=True)
    assert idx.tolist() == [[[[1]]]]
    gx = gc.max_pool_backward(np.ones((1, 1, 1, 1)), x, 2)
    assert gx.tolist() == [[[[0.0, 1.0], [0.0, 0.0]]]]
    ones = np.ones((1, 1, 3, 4))
    _, idx = gc.max_pool(ones, 2, 1, return_indices=True)
    assert idx.tolist() == [[[[0, 1, 2], [4, 5, 6]]]]  # each window's first tap
    assert gc.max_pool_backward(np.ones((1, 1, 2, 3)), ones, 2, 1).sum() == 6.0
    assert gc.global_max_pool_backward(np.ones((1, 1, 1, 1)), ones).ravel().tolist() == \
        [1.0] + [0.0] * 11


def test_nan_propagates():
    x = a1(1, np.nan, 3, 4, 5, 6)
    y, idx = gc.max_pool(x, 2, return_indices=True)
    assert np.isnan(y[0, 0, 0]) and idx[0, 0, 0] == 1 and y[0, 0, 1:].tolist() == [4, 6]
    # several NaNs in a window: the last one wins (PyTorch's rule)
    _, idx = gc.max_pool(a1(np.nan, 2, np.nan, 1), 4, return_indices=True)
    assert idx.tolist() == [[[2]]]
    gx = gc.max_pool_backward(a1(7, 8, 9), x, 2)
    assert gx.tolist() == [[[0, 7, 0, 8, 0, 9]]]
    for y in (gc.avg_pool(x, 2), gc.lp_pool(x, 2, 2), gc.lp_pool(x, 1.5, 2)):
        assert np.isnan(y[0, 0, 0]) and np.isfinite(y[0, 0, 1:]).all()
    gx = gc.lp_pool_backward(np.ones((1, 1, 3)), x, 2, 2)
    assert np.isnan(gx[0, 0, :2]).all() and np.isfinite(gx[0, 0, 2:]).all()
    assert np.isnan(gc.global_max_pool(x)).all() and np.isnan(gc.global_avg_pool(x)).all()
    x32 = x.astype(np.float32)
    assert np.isnan(gc.max_pool(x32, 2)[0, 0, 0]) and np.isnan(gc.avg_pool(x32, 2)[0, 0, 0])


def test_padding_never_wins_and_empty_windows():
    x = -np.full((1, 1, 4), np.inf)
    y, idx = gc.max_pool(x, 3, 1, 1, return_indices=True)
    # -inf values still have a winner: the window's first tap inside the input
    assert y.tolist() == [[[-np.inf] * 4]] and idx.tolist() == [[[0, 0, 1, 2]]]
    # dilation 3 over 2 samples with padding 1: the window (-1, 2) holds no sample
    x = a1(5, 7)
    y, idx = gc.max_pool(x, 2, 1, 1, dilation=3, return_indices=True)
    assert y.tolist() == [[[-np.inf]]] and idx.tolist() == [[[-1]]]
    gx = gc.max_pool_backward(np.ones((1, 1, 1)), x, 2, 1, 1, dilation=3, indices=idx)
    assert gx.tolist() == [[[0.0, 0.0]]]


# ------------------------------------------------------------- dtypes and layouts ---

def test_dtypes():
    xi = np.arange(12, dtype=np.int32).reshape(1, 1, 12)
    y = gc.max_pool(xi, 3)
    assert y.dtype == np.float64 and y.tolist() == [[[2.0, 5.0, 8.0, 11.0]]]
    assert gc.avg_pool(xi.astype(np.float16), 2).dtype == np.float32
    for f in (lambda a: gc.max_pool(a, 2), lambda a: gc.avg_pool(a, 2),
              lambda a: gc.lp_pool(a, 2, 2), gc.global_max_pool, gc.global_avg_pool):
        assert f(xi.astype(np.float32)).dtype == np.float32
        assert f(xi.astype(np.float64)).dtype == np.float64
    x32 = xi.astype(np.float32)
    g64 = np.ones((1, 1, 6))
    assert gc.avg_pool_backward(g64, x32, 2).dtype == np.float64  # promoted as NumPy does
    assert gc.max_pool_backward(g64.astype(np.float32), x32, 2).dtype == np.float32
    with pytest.raises(TypeError, match="max_pool: `x` must hold real"):
        gc.max_pool(xi.astype(np.complex64), 2)


def test_non_contiguous_and_fortran_inputs():
    rng = np.random.default_rng(12)
    base = rng.standard_normal((2, 6, 11, 13))
    x = base[:, ::2, :, ::-1]
    xc = np.ascontiguousarray(x)
    kw = dict(window=3, stride=2, padding=1)
    for arr in (x, np.asfortranarray(x)):
        np.testing.assert_array_equal(gc.max_pool(arr, **kw), ref.max_pool(xc, **kw))
        assert rel_err(gc.avg_pool(arr, **kw), ref.avg_pool(xc, **kw)) < 1e-12
        assert rel_err(gc.lp_pool(arr, 2, **kw), ref.lp_pool(xc, 2, **kw)) < 1e-12
        g = rng.standard_normal(gc.max_pool(xc, **kw).shape)[..., ::-1]  # a strided g too
        gref = np.ascontiguousarray(g)
        assert rel_err(gc.max_pool_backward(g, arr, **kw),
                       ref.max_pool_backward(gref, xc, **kw)) < 1e-12
        assert rel_err(gc.avg_pool_backward(g, arr, **kw),
                       ref.avg_pool_backward(gref, xc, **kw)) < 1e-12
        assert rel_err(gc.lp_pool_backward(g, arr, 2, **kw),
                       ref.lp_pool_backward(gref, xc, 2, **kw)) < 1e-12
        assert rel_err(gc.global_avg_pool(arr), ref.global_avg_pool(xc)) < 1e-12


def test_inputs_are_never_written():
    rng = np.random.default_rng(13)
    x = rng.standard_normal((2, 3, 8, 9))
    x.flags.writeable = False
    y, idx = gc.max_pool(x, 2, return_indices=True)
    g = np.ones_like(y)
    for a in (g, idx):
        a.flags.writeable = False
    before = x.copy()
    gc.max_pool_backward(g, x, 2, indices=idx)
    gc.max_pool_backward(g, x, 2)
    gc.avg_pool_backward(g, x, 2)
    gc.lp_pool_backward(g, x, 2, 2)
    gc.avg_pool(x, 3, 1, 1)
    gc.lp_pool(x, 3, 2)
    gk = np.ones((2, 3, 1, 1))
    gk.flags.writeable = False
    gc.global_max_pool_backward(gk, x)
    gc.global_avg_pool_backward(gk, x)
    np.testing.assert_array_equal(x, before)
    assert (g == 1).all()


def test_empty_batch_and_channels():
    for shape in [(0, 3, 8), (2, 0, 6, 6)]:
        x = np.ones(shape)
        y, idx = gc.max_pool(x, 2, return_indices=True)
        assert y.shape == idx.shape == shape[:2] + tuple(s // 2 for s in shape[2:])
        assert gc.max_pool_backward(y, x, 2, indices=idx).shape == shape
        assert gc.avg_pool_backward(gc.avg_pool(x, 2), x, 2).shape == shape
        assert gc.global_max_pool(x).shape == shape[:2] + (1,) * (len(shape) - 2)


# ------------------------------------------------------------------ clear errors ---

X = np.ones((1, 2, 6, 6))
G = np.ones((1, 2, 3, 3))


@pytest.mark.parametrize("call, exc, pattern", [
    (lambda: gc.max_pool(np.ones((4, 6)), 2), ValueError,
     r"max_pool: `x` must be 3-D, 4-D or 5-D \(N, C, \*spatial\)"),
    (lambda: gc.avg_pool(np.ones((1, 1, 2, 2, 2, 2)), 2), ValueError,
     r"avg_pool: `x` must be 3-D, 4-D or 5-D"),
    (lambda: gc.max_pool(np.ones((1, 1, 0, 4)), 2), ValueError,
     r"max_pool: `x` must have non-empty spatial axes"),
    (lambda: gc.max_pool(X, 0), ValueError, r"max_pool: `window` must be >= 1"),
    (lambda: gc.max_pool(X, (2, 2, 2)), ValueError, r"max_pool: `window` must be an int or "
                                                    r"a sequence of 2 ints"),
    (lambda: gc.max_pool(X, 2.5), TypeError, r"max_pool: `window` must be an int"),
    (lambda: gc.avg_pool(X, 2, stride=(1, 0)), ValueError, r"avg_pool: `stride` must be >= 1"),
    (lambda: gc.max_pool(X, 2, dilation=0), ValueError, r"max_pool: `dilation` must be >= 1"),
    (lambda: gc.max_pool(X, 2, padding=-1), ValueError, r"max_pool: `padding` must be >= 0"),
    (lambda: gc.max_pool(X, 3, padding=2), ValueError,
     r"max_pool: `padding` must be at most half the window \(window // 2\) on every axis, "
     r"as in PyTorch, got padding \(2, 2\) for window \(3, 3\)"),
    (lambda: gc.avg_pool(X, 2, padding=((1, 1), (0, 0))), TypeError,
     r"avg_pool: `padding` must be an int or a sequence of 2 ints"),
    (lambda: gc.max_pool(X, 7), ValueError,
     r"max_pool: the window \(extent 7 .*\) is larger than the padded input on spatial "
     r"axis 0 \(size 6 \+ 2 \* padding 0 = 6\)"),
    (lambda: gc.max_pool(X, 3, dilation=3), ValueError, r"max_pool: the window \(extent 7"),
    (lambda: gc.max_pool(X, 2, ceil_mode=1), TypeError, r"max_pool: `ceil_mode` must be a bool"),
    (lambda: gc.max_pool(X, 2, return_indices="yes"), TypeError,
     r"max_pool: `return_indices` must be a bool"),
    (lambda: gc.avg_pool(X, 2, count_include_pad=None), TypeError,
     r"avg_pool: `count_include_pad` must be a bool"),
    (lambda: gc.lp_pool(X, 0.5, 2), ValueError, r"lp_pool: `p` must be a finite number >= 1"),
    (lambda: gc.lp_pool(X, np.nan, 2), ValueError, r"lp_pool: `p` must be a finite number"),
    (lambda: gc.lp_pool(X, np.inf, 2), ValueError, r"lp_pool: `p` = inf is not supported"),
    (lambda: gc.lp_pool(X, "2", 2), TypeError, r"lp_pool: `p` must be a real number"),
    (lambda: gc.lp_pool_backward(G, X, True, 2), TypeError,
     r"lp_pool_backward: `p` must be a real number"),
    (lambda: gc.max_pool(X.astype(complex), 2), TypeError, r"max_pool: `x` must hold real"),
    (lambda: gc.max_pool_backward(np.ones((1, 2, 3, 2)), X, 2), ValueError,
     r"max_pool_backward: `grad_output` must have the output's shape \(1, 2, 3, 3\), got "
     r"\(1, 2, 3, 2\)"),
    (lambda: gc.avg_pool_backward(np.ones((1, 2, 2, 2)), X, 2), ValueError,
     r"avg_pool_backward: `grad_output` must have the output's shape"),
    (lambda: gc.lp_pool_backward(np.ones((1, 1, 3, 3)), X, 2, 2), ValueError,
     r"lp_pool_backward: `grad_output` must have the output's shape"),
    (lambda: gc.avg_pool_backward(G.astype(complex), X, 2), TypeError,
     r"avg_pool_backward: `grad_output` must hold real"),
    (lambda: gc.max_pool_backward(G, X, 2, indices=np.zeros((1, 2, 3), int)), ValueError,
     r"max_pool_backward: `indices` must have the output's shape \(1, 2, 3, 3\)"),
    (lambda: gc.max_pool_backward(G, X, 2, indices=np.zeros((1, 2, 3, 3))), TypeError,
     r"max_pool_backward: `indices` must be an integer array"),
    (lambda: gc.max_pool_backward(G, X, 2, indices=np.full((1, 2, 3, 3), 36)), ValueError,
     r"max_pool_backward: `indices` must come from max_pool\(..., return_indices=True\) "
     r"with the same parameters: 18 of 18 entries"),
    (lambda: gc.max_pool_backward(G, X, 2, indices=np.full((1, 2, 3, 3), -1)), ValueError,
     r"max_pool_backward: `indices` must come from max_pool"),
    (lambda: gc.global_max_pool(np.ones(5)), ValueError, r"global_max_pool: `x` must be 3-D"),
    (lambda: gc.global_avg_pool_backward(np.ones((1, 2, 1)), X), ValueError,
     r"global_avg_pool_backward: `grad_output` must have the output's shape "
     r"\(1, 2, 1, 1\)"),
    (lambda: gc.global_max_pool_backward(np.ones((1, 2, 2, 2)), X), ValueError,
     r"global_max_pool_backward: `grad_output` must have the output's shape"),
])
def test_bad_input_errors(call, exc, pattern):
    with pytest.raises(exc, match=pattern):
        call()


def test_reference_checks_arguments_too():
    with pytest.raises(ValueError, match=r"reference.max_pool: `padding` must be at most"):
        ref.max_pool(X, 2, padding=2)
    with pytest.raises(ValueError, match=r"reference.lp_pool: `p` must be a finite"):
        ref.lp_pool(X, 0, 2)
    with pytest.raises(ValueError, match=r"reference.avg_pool_backward: `grad_output`"):
        ref.avg_pool_backward(np.ones((1, 2, 2, 2)), X, 2)


def test_docstring_examples():
    import doctest

    import gridconv.pool
    import gridconv.reference._pool

    for module in (gridconv.pool, gridconv.reference._pool):
        result = doctest.testmod(module, extraglobs={"np": np},
                                 optionflags=doctest.NORMALIZE_WHITESPACE)
        assert result.attempted > 0 and result.failed == 0, module.__name__
