"""The CPU engine against the plain-NumPy reference, finite differences and hand examples."""

from __future__ import annotations

import numpy as np
import pytest
from _numeric import numerical_gradient, rel_err
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gridconv as gc
from gridconv import reference as ref

MODES = ["zeros", "reflect", "replicate", "circular"]
SETTINGS = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _abs(*arrays):
    return [None if a is None else np.abs(a.astype(np.float64)) for a in arrays]


# ----------------------------------------------------------------- random problems ---

@st.composite
def conv_problems(draw, transpose=False):
    nd = draw(st.integers(1, 3))
    groups = draw(st.integers(1, 3))
    cin = groups * draw(st.integers(1, 3))
    cout = groups * draw(st.integers(1, 3))
    n = draw(st.integers(1, 2))
    max_size = {1: 12, 2: 7, 3: 5}[nd]
    ks = tuple(draw(st.integers(1, 3)) for _ in range(nd))
    stride = tuple(draw(st.integers(1, 3)) for _ in range(nd))
    dilation = tuple(draw(st.integers(1, 2)) for _ in range(nd))
    sizes = tuple(draw(st.integers(1, max_size)) for _ in range(nd))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    use_bias = draw(st.booleans())
    seed = draw(st.integers(0, 2**31))
    if transpose:
        pads = tuple((draw(st.integers(0, 2)),) * 2 for _ in range(nd))
        # keep the output non-empty: (I-1)*s + r*(K-1) + 1 - 2*pad >= 1
        pads = tuple((min(lo, ((i - 1) * s + r * (k - 1)) // 2),) * 2
                     for (lo, _), i, k, s, r in zip(pads, sizes, ks, stride, dilation))
        outp = tuple(draw(st.integers(0, max(s, r) - 1)) for s, r in zip(stride, dilation))
        kw = dict(stride=stride, padding=pads, output_padding=outp, dilation=dilation,
                  groups=groups)
        xshape = (n, cin) + sizes
        wshape = (cin, cout // groups) + ks
        return xshape, wshape, cout if use_bias else None, kw, dtype, seed
    mode = draw(st.sampled_from(MODES))
    form = draw(st.sampled_from(["int", "tuple", "pairs", "valid", "same", "full"]))
    if form == "int":
        padding = draw(st.integers(0, 2))
    elif form == "tuple":
        padding = tuple(draw(st.integers(0, 2)) for _ in range(nd))
    elif form == "pairs":
        padding = tuple((draw(st.integers(0, 2)), draw(st.integers(0, 2))) for _ in range(nd))
    else:
        padding = form
    # Make the (padded) input large enough for the dilated kernel.
    from gridconv._params import conv_padding
    pads = conv_padding(padding, sizes, ks, stride, dilation, "test")
    sizes = tuple(max(i, r * (k - 1) + 1 - lo - hi, 1)
                  for i, k, r, (lo, hi) in zip(sizes, ks, dilation, pads))
    pads = conv_padding(padding, sizes, ks, stride, dilation, "test")
    if mode == "circular":
        sizes = tuple(max(i, lo, hi) for i, (lo, hi) in zip(sizes, pads))
    flip = draw(st.booleans())
    kw = dict(stride=stride, padding=padding, dilation=dilation, groups=groups,
              padding_mode=mode, flip=flip)
    return (n, cin) + sizes, (cout, cin // groups) + ks, cout if use_bias else None, kw, \
        dtype, seed


def make(xshape, wshape, nbias, dtype, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(xshape).astype(dtype)
    w = rng.standard_normal(wshape).astype(dtype)
    b = None if nbias is None else rng.standard_normal(nbias).astype(dtype)
    return rng, x, w, b


def tol(dtype):
    return 2e-5 if dtype == np.float32 else 1e-12


@SETTINGS
@given(conv_problems())
def test_conv_matches_reference(problem):
    xshape, wshape, nbias, kw, dtype, seed = problem
    rng, x, w, b = make(xshape, wshape, nbias, dtype, seed)
    y = gc.conv(x, w, b, **kw)
    expected = ref.conv(x.astype(np.float64), w.astype(np.float64),
                        None if b is None else b.astype(np.float64), **kw)
    assert y.dtype == dtype and y.shape == expected.shape
    assert rel_err(y, expected, ref.conv(*_abs(x, w, b), **kw)) < tol(dtype)


@SETTINGS
@given(conv_problems())
def test_conv_backward_matches_reference(problem):
    xshape, wshape, nbias, kw, dtype, seed = problem
    rng, x, w, b = make(xshape, wshape, nbias, dtype, seed)
    y = ref.conv(x, w, b, **kw)
    g = rng.standard_normal(y.shape).astype(dtype)
    got = gc.conv_backward(g, x, w, b, **kw)
    f64 = [None if a is None else a.astype(np.float64) for a in (g, x, w, b)]
    want = ref.conv_backward(*f64, **kw)
    terms = ref.conv_backward(*_abs(g, x, w, b), **kw)
    for a, e, t in zip(got, want, terms):
        if e is None:
            assert a is None
            continue
        assert a.dtype == dtype and a.shape == e.shape
        assert rel_err(a, e, t) < 4 * tol(dtype)
    assert rel_err(gc.conv_grad_input(g, w, x.shape, **kw), want[0],
                        terms[0]) < 4 * tol(dtype)
    assert rel_err(gc.conv_grad_weight(g, x, w.shape, **kw), want[1],
                        terms[1]) < 4 * tol(dtype)


@SETTINGS
@given(conv_problems(transpose=True))
def test_conv_transpose_and_backward_match_reference(problem):
    xshape, wshape, nbias, kw, dtype, seed = problem
    rng, x, w, b = make(xshape, wshape, nbias, dtype, seed)
    y = gc.conv_transpose(x, w, b, **kw)
    f64 = [None if a is None else a.astype(np.float64) for a in (x, w, b)]
    expected = ref.conv_transpose(*f64, **kw)
    assert y.dtype == dtype and y.shape == expected.shape
    assert rel_err(y, expected, ref.conv_transpose(*_abs(x, w, b), **kw)) < tol(dtype)
    g = rng.standard_normal(y.shape).astype(dtype)
    got = gc.conv_transpose_backward(g, x, w, b, **kw)
    want = ref.conv_transpose_backward(g.astype(np.float64), *f64, **kw)
    terms = ref.conv_transpose_backward(*_abs(g, x, w, b), **kw)
    for a, e, t in zip(got, want, terms):
        if e is None:
            assert a is None
        else:
            assert a.shape == e.shape and rel_err(a, e, t) < 4 * tol(dtype)


# ---------------------------------------------------------- gradients, adjointness ---

FD_CASES = [
    ((2, 2, 7), (3, 2, 3), dict(stride=2, padding=1, dilation=1)),
    ((1, 4, 9), (4, 2, 2), dict(stride=1, padding="same", dilation=2, groups=2)),
    ((1, 2, 5, 6), (2, 2, 3, 2), dict(stride=(2, 1), padding=((1, 0), (2, 1)),
                                      padding_mode="reflect")),
    ((1, 2, 5, 5), (4, 1, 3, 3), dict(stride=2, padding="same", groups=2,
                                      padding_mode="circular", flip=True)),
    ((1, 1, 4, 4, 3), (2, 1, 2, 3, 2), dict(stride=(1, 2, 1), padding=1,
                                            padding_mode="replicate")),
]


@pytest.mark.parametrize("xs, ws, kw", FD_CASES)
def test_conv_gradients_against_finite_differences(xs, ws, kw):
    rng = np.random.default_rng(1)
    x, w = rng.standard_normal(xs), rng.standard_normal(ws)
    b = rng.standard_normal(ws[0])
    g = rng.standard_normal(gc.conv(x, w, b, **kw).shape)

    def loss():
        return float(np.sum(gc.conv(x, w, b, **kw) * g))

    gx, gw, gb = gc.conv_backward(g, x, w, b, **kw)
    for analytic, arr in ((gx, x), (gw, w), (gb, b)):
        assert rel_err(analytic, numerical_gradient(loss, arr)) < 1e-7


@pytest.mark.parametrize("xs, ws, kw", [
    ((2, 2, 4), (2, 3, 3), dict(stride=2, padding=1, output_padding=1)),
    ((1, 4, 3, 3), (4, 1, 2, 3), dict(stride=(2, 3), padding=(0, 1), dilation=(2, 1),
                                      groups=2)),
    ((1, 2, 2, 3, 2), (2, 1, 2, 2, 2), dict(stride=2)),
])
def test_conv_transpose_gradients_against_finite_differences(xs, ws, kw):
    rng = np.random.default_rng(2)
    x, w = rng.standard_normal(xs), rng.standard_normal(ws)
    b = rng.standard_normal(ws[1] * kw.get("groups", 1))
    g = rng.standard_normal(gc.conv_transpose(x, w, b, **kw).shape)

    def loss():
        return float(np.sum(gc.conv_transpose(x, w, b, **kw) * g))

    grads = gc.conv_transpose_backward(g, x, w, b, **kw)
    for analytic, arr in zip(grads, (x, w, b)):
        assert rel_err(analytic, numerical_gradient(loss, arr)) < 1e-7


@pytest.mark.parametrize("nd", [1, 2, 3])
@pytest.mark.parametrize("stride, dilation, groups", [(1, 1, 1), (2, 1, 2), (3, 2, 1)])
def test_conv_and_conv_transpose_are_adjoint(nd, stride, dilation, groups):
    rng = np.random.default_rng(nd * 10 + stride)
    x = rng.standard_normal((2, 2 * groups) + (7,) * nd)
    w = rng.standard_normal((3 * groups, 2) + (3,) * nd)
    kw = dict(stride=stride, padding=1, dilation=dilation, groups=groups)
    y = gc.conv(x, w, **kw)
    v = rng.standard_normal(y.shape)
    # output_padding picks x's size among those that conv maps to y's size
    extra = (7 + 2 - dilation * 2 - 1) % stride
    back = gc.conv_transpose(v, w, **kw, output_padding=extra)
    assert back.shape == x.shape
    lhs = np.vdot(y, v)
    rhs = np.vdot(x, back)
    assert abs(lhs - rhs) < 1e-10 * max(1.0, abs(lhs))


# -------------------------------------------------------------------- hand examples ---

def test_hand_example_1d():
    x = np.array([[[1.0, 2.0, 3.0, 4.0]]])
    w = np.array([[[1.0, 0.0, -1.0]]])
    assert np.array_equal(gc.conv(x, w), [[[-2.0, -2.0]]])
    assert np.array_equal(gc.convolve(x, w), [[[2.0, 2.0]]])
    # zero padding 1, stride 2: windows [0,1,2], [2,3,4] -> 0-2, 2-4
    assert np.array_equal(gc.conv(x, w, padding=1, stride=2), [[[-2.0, -2.0]]])
    # reflect padding: [2,1,2,3,4,3] -> [0, -2, -2, 0]
    assert np.array_equal(gc.conv(x, w, padding=1, padding_mode="reflect"),
                          [[[0.0, -2.0, -2.0, 0.0]]])


def test_hand_example_2d_bias_groups():
    x = np.arange(2 * 3 * 3, dtype=np.float64).reshape(1, 2, 3, 3)
    w = np.ones((2, 1, 2, 2))
    y = gc.conv(x, w, np.array([10.0, 20.0]), groups=2)
    # channel 0: windows of [[0,1,2],[3,4,5],[6,7,8]]; channel 1 is +9 per element
    assert np.array_equal(y[0, 0], [[18.0, 22.0], [30.0, 34.0]])
    # channel 1 holds 9..17: window sums 44, 48, 56, 60, plus its bias 20
    assert np.array_equal(y[0, 1], [[64.0, 68.0], [76.0, 80.0]])


def test_hand_example_transpose_stride2():
    x = np.array([[[1.0, 2.0]]])
    w = np.array([[[1.0, 10.0, 100.0]]])
    # each input scatters a copy of w at 2*i: [1,10,100,0,0] + [0,0,2,20,200]
    assert np.array_equal(gc.conv_transpose(x, w, stride=2), [[[1.0, 10.0, 102.0, 20.0,
                                                                200.0]]])
    assert gc.conv_transpose(x, w, stride=2, output_padding=1).shape == (1, 1, 6)


def test_same_padding_with_stride():
    x = np.ones((1, 1, 10, 7))
    w = np.ones((1, 1, 3, 4))
    y = gc.conv(x, w, padding="same", stride=(3, 2))
    assert y.shape == (1, 1, 4, 4)  # ceil(10/3), ceil(7/2)


# ------------------------------------------------------------- dtypes and layouts ---

def test_dtype_follows_input_and_ints_promote():
    xi = np.arange(10, dtype=np.int32).reshape(1, 1, 10)
    w32 = np.ones((1, 1, 3), np.float32)
    assert gc.conv(xi.astype(np.float32), w32).dtype == np.float32
    y = gc.conv(xi, np.ones((1, 1, 3), np.int64))
    assert y.dtype == np.float64 and np.array_equal(y[0, 0], [3, 6, 9, 12, 15, 18, 21, 24])
    assert gc.conv(xi.astype(np.float32), w32.astype(np.float64)).dtype == np.float64
    assert gc.conv(xi.astype(np.float16), w32).dtype == np.float32
    with pytest.raises(TypeError, match="conv.*`x`.*complex"):
        gc.conv(xi.astype(np.complex64), w32)


def test_non_contiguous_and_fortran_inputs():
    rng = np.random.default_rng(3)
    base = rng.standard_normal((2, 6, 9, 11))
    x = base[:, ::2, :, ::-1]
    w = np.asfortranarray(rng.standard_normal((4, 3, 3, 2)))
    expected = ref.conv(np.ascontiguousarray(x), np.ascontiguousarray(w), padding=1)
    assert rel_err(gc.conv(x, w, padding=1), expected) < 1e-12
    xf = np.asfortranarray(x)
    assert rel_err(gc.conv(xf, w, padding=1), expected) < 1e-12


def test_inputs_are_never_written():
    rng = np.random.default_rng(4)
    x, w, b = rng.standard_normal((1, 2, 6, 6)), rng.standard_normal((2, 2, 3, 3)), \
        rng.standard_normal(2)
    for a in (x, w, b):
        a.flags.writeable = False
    y = gc.conv(x, w, b, padding="same", padding_mode="reflect")
    g = np.ones_like(y)
    g.flags.writeable = False
    gc.conv_backward(g, x, w, b, padding="same", padding_mode="reflect")
    gc.conv_transpose(x, w, b)


def test_nan_propagates():
    x = np.ones((1, 1, 8, 8))
    x[0, 0, 3, 3] = np.nan
    y = gc.conv(x, np.ones((1, 1, 3, 3)), padding=1)
    assert np.isnan(y[0, 0, 2:5, 2:5]).all()
    assert np.isfinite(y[0, 0, :2]).all() and np.isfinite(y[0, 0, 5:]).all()
    gx, gw, _ = gc.conv_backward(np.ones_like(y), x, np.ones((1, 1, 3, 3)), padding=1)
    assert np.isnan(gw).all() and np.isfinite(gx).all()


def test_float32_large_problem_accuracy():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 16, 20, 20)).astype(np.float32)
    w = rng.standard_normal((8, 16, 3, 3)).astype(np.float32)
    expected = ref.conv(x.astype(np.float64), w.astype(np.float64), padding=1)
    assert rel_err(gc.conv(x, w, padding=1), expected) < 1e-5


def test_ranked_aliases():
    x = np.ones((1, 1, 5, 5))
    w = np.ones((1, 1, 3, 3))
    assert np.array_equal(gc.conv2d(x, w), gc.conv(x, w))
    with pytest.raises(ValueError, match="conv1d.*`weight` must be 3-D"):
        gc.conv1d(x, w)
    with pytest.raises(ValueError, match="conv3d"):
        gc.conv3d(x, w)


# ------------------------------------------------------------------ clear errors ---

X2 = np.ones((1, 4, 6, 6))
W2 = np.ones((2, 4, 3, 3))


@pytest.mark.parametrize("call, exc, pattern", [
    (lambda: gc.conv(np.ones((4, 6, 6)), W2), ValueError, r"conv: `x` must be 4-D"),
    (lambda: gc.conv(X2, np.ones((2, 4))), ValueError, r"conv: `weight` must be 3-D, 4-D"),
    (lambda: gc.conv(np.ones((1, 3, 6, 6)), W2), ValueError,
     r"conv: `x` has 3 input channels but `weight` expects 4"),
    (lambda: gc.conv(X2, np.ones((2, 1, 3, 3)), groups=3), ValueError,
     r"`in_channels` \(=4\) must be divisible by `groups` \(=3\)"),
    (lambda: gc.conv(X2, np.ones((3, 2, 3, 3)), groups=2), ValueError,
     r"`out_channels` \(=3\) must be divisible by `groups` \(=2\)"),
    (lambda: gc.conv(X2, np.ones((2, 4, 9, 3))), ValueError,
     r"conv: the dilated kernel .* larger than the padded input on spatial axis 0"),
    (lambda: gc.conv(X2, W2, stride=0), ValueError, r"conv: `stride` must be >= 1"),
    (lambda: gc.conv(X2, W2, dilation=(1, -1)), ValueError, r"conv: `dilation` must be >= 1"),
    (lambda: gc.conv(X2, W2, padding=-1), ValueError, r"conv: `padding` must be non-negative"),
    (lambda: gc.conv(X2, W2, padding="sometimes"), ValueError, r"`padding` string must be"),
    (lambda: gc.conv(X2, W2, padding=(1, 2, 3)), TypeError, r"conv: `padding` must be"),
    (lambda: gc.conv(X2, W2, padding_mode="mirror"), ValueError,
     r"conv: `padding_mode` must be one of"),
    (lambda: gc.conv(X2, W2, stride=1.5), TypeError, r"conv: `stride` must be an int"),
    (lambda: gc.conv(X2, W2, groups=1.0), TypeError, r"conv: `groups` must be an int"),
    (lambda: gc.conv(X2, W2, np.ones(3)), ValueError, r"conv: `bias` must have shape \(2,\)"),
    (lambda: gc.conv(X2, W2, padding=7, padding_mode="circular"), ValueError,
     r"circular `padding`"),
    (lambda: gc.conv(X2.astype(complex), W2), TypeError, r"conv: `x` must hold real"),
    (lambda: gc.conv(X2, W2, flip="yes"), TypeError, r"conv: `flip` must be a bool"),
    (lambda: gc.conv_backward(np.ones((1, 2, 5, 5)), X2, W2), ValueError,
     r"conv_backward: `grad_output` must have the output's shape \(1, 2, 4, 4\)"),
    (lambda: gc.conv_grad_input(np.ones((1, 2, 4, 4)), W2, (1, 4, 6)), ValueError,
     r"conv_grad_input: `input_shape` must have 4 entries"),
    (lambda: gc.conv_transpose(np.ones((1, 3, 4, 4)), W2), ValueError,
     r"conv_transpose: `x` has 3 input channels but `weight` expects 2"),
    (lambda: gc.conv_transpose(np.ones((1, 2, 4, 4)), np.ones((2, 1, 3, 3)), stride=2,
                               output_padding=2), ValueError,
     r"conv_transpose: `output_padding` \(=2\) must be smaller than stride"),
    (lambda: gc.conv_transpose(np.ones((1, 2, 4, 4)), np.ones((2, 1, 3, 3)),
                               padding="same"), TypeError, r"conv_transpose: `padding`"),
])
def test_bad_input_errors(call, exc, pattern):
    with pytest.raises(exc, match=pattern):
        call()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fft_path_matches_reference(mode, dtype):
    from gridconv import _fft
    rng = np.random.default_rng(7)
    cases = [
        ((2, 4, 300), (6, 2, 41), dict(stride=(3,), padding=((40, 21),), dilation=(2,),
                                       groups=2)),
        ((1, 2, 40, 33), (3, 2, 9, 7), dict(stride=(1, 2), padding=((4, 4), (3, 3)),
                                            dilation=(1, 1), groups=1)),
        ((1, 1, 12, 10, 9), (1, 1, 5, 4, 3), dict(stride=(1, 1, 1),
                                                  padding=((2, 2), (1, 2), (1, 1)),
                                                  dilation=(1, 2, 1), groups=1)),
    ]
    for xs, ws, kw in cases:
        x = rng.standard_normal(xs).astype(dtype)
        w = rng.standard_normal(ws).astype(dtype)
        b = rng.standard_normal(ws[0]).astype(dtype)
        fkw = {**kw, "pads": kw["padding"]}
        del fkw["padding"]
        y = _fft.conv_fft(x, w, b, mode=mode, **fkw)
        expected = ref.conv(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64),
                            padding_mode=mode, **kw)
        assert y.dtype == dtype and y.shape == expected.shape
        assert rel_err(y, expected) < (5e-6 if dtype == np.float32 else 1e-12)


@pytest.mark.parametrize("bad", [np.inf, np.nan])
def test_fft_path_leaves_non_finite_inputs_to_the_direct_sums(bad):
    """An FFT spreads one infinity or NaN over the whole output; the definition puts it
    only where the taps read it. Such inputs take the direct kernel."""
    rng = np.random.default_rng(9)
    x = rng.standard_normal((1, 1, 5000))
    x[0, 0, 2500] = bad
    w = rng.standard_normal((1, 1, 1001))
    from gridconv import _fft
    assert _fft.fft_is_faster(x.shape, w.shape, x.shape, ((500, 500),), (1,), 1)
    y = gc.conv(x, w, padding="same")
    with np.errstate(invalid="ignore"):
        expected = ref.conv(x, w, padding="same")
    np.testing.assert_array_equal(np.isnan(y), np.isnan(expected))
    np.testing.assert_array_equal(np.isinf(y), np.isinf(expected))
    finite = np.isfinite(expected)
    assert 3000 < finite.sum() < 4500
    assert rel_err(y[finite], expected[finite]) < 1e-12


def test_fft_path_is_chosen_for_large_kernels_only():
    from gridconv import _fft
    # 10^5 samples and a 4001-tap FIR filter: the FFT wins by far
    assert _fft.fft_is_faster((1, 1, 100000), (1, 1, 4001), (1, 1, 100000),
                              ((2000, 2000),), (1,), 1)
    # a 3x3 kernel never goes to the FFT
    assert not _fft.fft_is_faster((1, 1, 2048, 2048), (1, 1, 3, 3), (1, 1, 2048, 2048),
                                  ((1, 1), (1, 1)), (1, 1), 1)
    rng = np.random.default_rng(8)
    x = rng.standard_normal((1, 1, 20000))
    w = rng.standard_normal((1, 1, 2001))
    y = gc.conv(x, w, padding="same", padding_mode="reflect")
    xp = np.pad(x[0, 0], (1000, 1000), mode="reflect")
    expected = np.correlate(xp, w[0, 0], mode="valid")
    assert rel_err(y[0, 0], expected) < 1e-12
