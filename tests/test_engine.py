"""Each route of the CPU engine (gridconv._cpu.driver) against the plain-NumPy reference.

The property tests in test_conv.py draw small problems; the engine picks its kernels by
shape (register blocks of up to 6 channels, reduction chunks of 128 units, rows
accumulated in the output itself, long strided rows on phase-split slabs, the blocked
weight gradient from 8 channels, the one-pass transposed convolution when kernel ==
stride). These cases are sized to reach each of them, and check with a spy that the
intended kernel ran.
"""

from __future__ import annotations

import numpy as np
import pytest
from _numeric import rel_err

import gridconv as gc
from gridconv import reference as ref
from gridconv._cpu import driver, winograd
from gridconv._cpu import gather as kernels


def tol(dtype):
    return 3e-5 if dtype == np.float32 else 1e-12


@pytest.fixture
def spy(monkeypatch):
    """Names of the engine kernels called while the test runs."""
    called = set()
    for module, name in ((kernels, "gather"), (kernels, "gather_direct"),
                         (kernels, "gather_wrapped"), (kernels, "weight_grad"),
                         (kernels, "weight_grad_direct"), (kernels, "weight_grad_blocked"),
                         (winograd, "gather_winograd")):
        fn = getattr(module, name)

        def wrapper(*args, _fn=fn, _name=name):
            called.add(_name)
            return _fn(*args)

        monkeypatch.setattr(module, name, wrapper)
    return called


# (x shape, weight shape, params, kernels that must run for forward + backward)
CASES = [
    # 13 channels: blocks 5+4+4; 16 x 9 = 144 units: two reduction chunks
    ((2, 16, 9, 21), (13, 16, 3, 3), dict(padding=1), {"gather_direct",
                                                       "weight_grad_blocked"}),
    # x-stride 2 on rows of 50 outputs: phase-split slab rows, not merged
    ((2, 5, 100), (32, 5, 3), dict(stride=2, padding=1), {"gather_direct",
                                                          "weight_grad_blocked"}),
    # 3-D, reflect padding, dilation 2 along x, groups of 10 output channels
    ((1, 4, 4, 5, 40), (20, 2, 3, 3, 3),
     dict(padding=2, dilation=(1, 1, 2), groups=2, padding_mode="reflect"),
     {"gather_direct", "weight_grad_blocked"}),
    # x-stride 2, odd width, circular and reflect padding at both edges of split rows
    ((1, 3, 2, 67), (9, 3, 1, 5), dict(stride=(1, 2), padding=(0, 2),
                                       padding_mode="circular"),
     {"gather_direct", "weight_grad_blocked"}),
    ((2, 2, 3, 70), (8, 2, 3, 4), dict(stride=2, padding=(1, 3), padding_mode="reflect"),
     {"gather_direct", "weight_grad_blocked"}),
    # x-stride 3: the general phase split
    ((1, 2, 100), (10, 2, 4), dict(stride=3, padding=2), {"gather_direct",
                                                          "weight_grad_blocked"}),
    # x-stride 4: the interleaved 4-phase split, edges of both kinds (odd length,
    # padding; reflect padding at both ends of 2-D rows)
    ((1, 2, 103), (8, 2, 9), dict(stride=4, padding=4), {"gather_direct",
                                                         "weight_grad_blocked"}),
    ((1, 2, 3, 150), (8, 2, 3, 7), dict(stride=(1, 4), padding=(1, 3),
                                        padding_mode="reflect"),
     {"gather_direct", "weight_grad_blocked"}),
    # strided rows of 13 outputs (from 12): the direct kernel, a block of 16 per row
    ((2, 6, 9, 27), (12, 6, 3, 3), dict(stride=2), {"gather_direct",
                                                    "weight_grad_blocked"}),
    # short strided rows: the patch path forward; its weight gradient below 7 outputs
    ((2, 6, 16, 16), (12, 6, 3, 3), dict(stride=2, padding=1), {"gather",
                                                                "weight_grad_blocked"}),
    ((2, 6, 10, 10), (12, 6, 3, 3), dict(stride=2, padding=1), {"gather", "weight_grad"}),
    # 7 channels in one block, 200 units in one chunk of 128 and one of 72
    ((1, 8, 30), (7, 8, 25), dict(padding="same"), {"gather_direct"}),
    # rows of 31 (of 63) run one by one: their whole blocks accumulate in the output
    # itself, the last chunk writing it; the partial last block goes through the
    # accumulator tile (13 channels, two chunks; 3 channels, one block)
    ((2, 16, 5, 31), (13, 16, 3, 3), dict(padding=1), {"gather_direct"}),
    ((1, 3, 4, 63), (3, 3, 3, 3), dict(padding=1), {"gather_direct"}),
    # 3-D rows of 32: whole blocks only; the z and y taps that read only zero padding
    # skipped (two unit segments per row at the top and bottom edges)
    ((1, 4, 3, 4, 32), (8, 4, 3, 3, 3), dict(padding=1), {"gather_direct"}),
    # padding wider than the kernel: edge rows and planes read no source value at all
    # and come out as the bias alone (several blocks, one block, 3-D)
    ((1, 8, 4, 20), (8, 8, 3, 3), dict(padding=(4, 1)), {"gather_direct"}),
    ((1, 2, 4, 20), (3, 2, 3, 3), dict(padding=(4, 1)), {"gather_direct"}),
    ((1, 2, 2, 3, 20), (8, 2, 3, 3, 3), dict(padding=(3, 1, 1)), {"gather_direct"}),
    # one source channel per group, rows as long as the source's: unpadded slab rows,
    # the tile one span written in place, the edge columns recomputed. Rows of 60: two
    # tiles per plane (34 + 6 rows), each ending in a partial block.
    ((2, 4, 40, 60), (4, 1, 3, 3), dict(padding=1, groups=4), {"gather_wrapped"}),
    # 3 destination channels per group, dilation 2, uneven y padding, bias-only rows
    ((1, 2, 9, 13), (6, 1, 3, 3), dict(padding=((5, 1), (2, 2)), dilation=2, groups=2),
     {"gather_wrapped"}),
    # taps wider on one side: x padding (2, 0), every tap of column 0 but one outside
    ((1, 3, 5, 7), (3, 1, 1, 3), dict(padding=((0, 0), (2, 0)), groups=3),
     {"gather_wrapped"}),
    # 3-D with z stride 2 (any z step and padding mode: planes are looked up); a filter
    ((2, 2, 5, 6, 7), (2, 1, 3, 3, 3), dict(padding=((1, 1), (1, 1), (1, 1)), groups=2,
                                            stride=(2, 1, 1)), {"gather_wrapped"}),
    ((1, 1, 8, 70), (1, 1, 5, 5), dict(padding="same"), {"gather_wrapped"}),
    # 147 planes: claimed in batches of 2 or more, the last batch partial
    ((3, 49, 6, 8), (49, 1, 3, 3), dict(padding=1, groups=49), {"gather_wrapped"}),
    # Winograd F(4, 3) along x: three consecutive x taps, unit x steps, 8+ channels,
    # 16+ units per phase, rows of 8+. Rows of 21 (a last tile of one output), 13
    # channels in three blocks
    ((2, 16, 9, 21), (13, 16, 3, 3), dict(padding=1), {"gather_winograd"}),
    # rows of 16: the tile's rows stored as one span (vector blocks and a tail)
    ((2, 16, 9, 16), (12, 16, 3, 3), dict(padding=1), {"gather_winograd"}),
    # 1-D rows of 2502: tiles of 1024 outputs along x, the last of 454 (vector blocks
    # and a tail of two outputs); circular padding at both ends
    ((1, 16, 2502), (9, 16, 3), dict(padding="same", padding_mode="circular"),
     {"gather_winograd"}),
    # 3-D, z stride 2, reflect padding, groups; rows of 35 (a last tile of three)
    ((1, 8, 5, 6, 35), (16, 4, 3, 3, 3), dict(stride=(2, 1, 1), padding=1,
                                              padding_mode="reflect", groups=2),
     {"gather_winograd"}),
    # planes and rows of padding alone (the bias), rows of 9
    ((1, 8, 2, 3, 9), (8, 8, 3, 3, 3), dict(padding=(3, 1, 1)), {"gather_winograd"}),
    # no x padding (rows of 28 as one span), y dilation 2, replicate padding along y
    ((2, 8, 7, 30), (10, 8, 3, 3), dict(dilation=(2, 1), padding=((2, 2), (0, 0)),
                                        padding_mode="replicate"), {"gather_winograd"}),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("xs, ws, kw, routes", CASES)
def test_engine_routes_match_reference(xs, ws, kw, routes, dtype, spy, monkeypatch):
    if "gather_winograd" not in routes:
        # the direct kernel's cases: without Winograd's route, which would take some
        monkeypatch.setattr(driver, "_WINO_MIN_OUT", 1 << 60)
    elif dtype == np.float64:
        routes = {"gather_direct"}  # Winograd runs float32 only
    rng = np.random.default_rng(sum(xs) + sum(ws))
    x = rng.standard_normal(xs).astype(dtype)
    w = rng.standard_normal(ws).astype(dtype)
    b = rng.standard_normal(ws[0]).astype(dtype)
    y = gc.conv(x, w, b, **kw)
    x64, w64, b64 = (a.astype(np.float64) for a in (x, w, b))
    expected = ref.conv(x64, w64, b64, **kw)
    assert y.dtype == dtype and rel_err(y, expected) < tol(dtype)
    g = rng.standard_normal(y.shape).astype(dtype)
    grads = gc.conv_backward(g, x, w, b, **kw)
    for got, want in zip(grads, ref.conv_backward(g.astype(np.float64), x64, w64, b64, **kw),
                         strict=True):
        assert got.dtype == dtype and rel_err(got, want) < tol(dtype)
    assert routes <= spy, f"expected {routes}, ran {spy}"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("xs, ws, kw", [
    ((2, 6, 7), (6, 5, 3), dict(stride=3)),
    ((2, 4, 5, 6), (4, 3, 2, 3), dict(stride=(2, 3), groups=2)),
    ((1, 3, 3, 4, 5), (3, 8, 2, 2, 2), dict(stride=2)),
    # x kernel 2: the phase pairs are stored as whole interleaved rows; with groups, and
    # 1-D rows cut into several tiles along x
    ((2, 4, 5, 7), (4, 3, 2, 2), dict(stride=2, groups=2)),
    ((1, 3, 1500), (3, 5, 2), dict(stride=2)),
])
def test_transposed_kernel_equal_to_stride_runs_in_one_pass(xs, ws, kw, dtype, spy,
                                                            monkeypatch):
    """Disjoint taps: one 1x1 gather whose channels are placed at their phases."""

    calls = []
    monkeypatch.setattr(driver, "_disjoint_phases", lambda *a, _f=driver._disjoint_phases:
                        calls.append(1) or _f(*a))
    rng = np.random.default_rng(len(xs))
    x = rng.standard_normal(xs).astype(dtype)
    w = rng.standard_normal(ws).astype(dtype)
    b = rng.standard_normal(ws[1] * kw.get("groups", 1)).astype(dtype)
    y = gc.conv_transpose(x, w, b, **kw)
    expected = ref.conv_transpose(x.astype(np.float64), w.astype(np.float64),
                                  b.astype(np.float64), **kw)
    assert y.dtype == dtype and y.shape == expected.shape
    assert rel_err(y, expected) < tol(dtype)
    assert calls == [1] and spy == {"gather_direct"}


def test_transposed_with_output_padding_takes_the_phase_path(monkeypatch):
    """kernel == stride but an extra output row: not every position has its tap."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 2, 5, 5))
    w = rng.standard_normal((2, 3, 2, 2))
    kw = dict(stride=2, output_padding=1)

    calls = []
    monkeypatch.setattr(driver, "_disjoint_phases", lambda *a: calls.append(1))
    assert rel_err(gc.conv_transpose(x, w, **kw), ref.conv_transpose(x, w, **kw)) < 1e-12
    assert calls == []


def test_wrapped_rows_take_no_value_from_the_neighbouring_row(spy):
    """gather_wrapped's slab rows are not padded, so the taps of an edge column reach
    into the neighbouring row: an infinity there must stay out of the recomputed column
    (a subtraction of its contribution would leave NaN)."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 2, 6, 9))
    x[0, 0, 2, 8] = np.inf  # last column of row 2
    x[0, 1, 3, 0] = -np.inf  # first column of row 3
    w = rng.standard_normal((2, 1, 3, 3))
    y = gc.conv(x, w, padding=1, groups=2)
    with np.errstate(invalid="ignore"):
        expected = ref.conv(x, w, padding=1, groups=2)
    assert "gather_wrapped" in spy
    np.testing.assert_array_equal(np.isfinite(y), np.isfinite(expected))
    finite = np.isfinite(expected)
    assert finite.sum() > 80 and rel_err(y[finite], expected[finite]) < 1e-12


def test_winograd_f23_matches_reference(spy, monkeypatch):
    """F(2, 3) (the kernel's other transform: 4 phases, a third fewer multiply-adds,
    less rounding) on rows with a partial last tile and rows stored as one span."""
    monkeypatch.setattr(driver, "_WINO_MT", 2)
    dtype = np.float32
    rng = np.random.default_rng(11)
    for xs, ws, kw in [((2, 16, 5, 21), (9, 16, 3, 3), dict(padding=1)),
                       ((1, 8, 3, 4, 32), (8, 8, 3, 3, 3), dict(padding=1,
                                                                padding_mode="reflect"))]:
        x = rng.standard_normal(xs).astype(dtype)
        w = rng.standard_normal(ws).astype(dtype)
        b = rng.standard_normal(ws[0]).astype(dtype)
        y = gc.conv(x, w, b, **kw)
        expected = ref.conv(*(a.astype(np.float64) for a in (x, w, b)), **kw)
        assert rel_err(y, expected) < tol(dtype)
    assert spy == {"gather_winograd"}


def test_algorithms_switch_winograd_off_and_back(spy):
    """``gridconv.algorithms(winograd=False)``: the direct sums inside the block (the
    same values up to rounding), Winograd again after it, even when the block raises."""
    rng = np.random.default_rng(13)
    x = rng.standard_normal((1, 16, 4, 20)).astype(np.float32)
    w = rng.standard_normal((8, 16, 3, 3)).astype(np.float32)
    with gc.algorithms(winograd=False):
        direct = gc.conv(x, w, padding=1)
    assert spy == {"gather_direct"}
    assert rel_err(gc.conv(x, w, padding=1), direct) < 1e-5 and "gather_winograd" in spy
    with pytest.raises(RuntimeError), gc.algorithms(winograd=False):
        raise RuntimeError
    assert gc.set_algorithms() == {"winograd": True, "fft": True}


def test_algorithms_switch_fft_off(monkeypatch):
    from gridconv import _fft

    calls = []
    monkeypatch.setattr(_fft, "conv_fft", lambda *a, _f=_fft.conv_fft, **k:
                        calls.append(1) or _f(*a, **k))
    rng = np.random.default_rng(14)
    x = rng.standard_normal((1, 1, 5000))
    w = rng.standard_normal((1, 1, 1001))
    assert _fft.fft_is_faster(x.shape, w.shape, x.shape, ((500, 500),), (1,), 1)
    with gc.algorithms(fft=False):
        y = gc.conv(x, w, padding="same")
    assert calls == []
    assert rel_err(y, ref.conv(x, w, padding="same")) < 1e-12
    gc.conv(x, w, padding="same")
    assert calls == [1]


def test_set_algorithms_refuses_non_booleans():
    with pytest.raises(TypeError, match=r"set_algorithms: `winograd` must be True, False "
                                        r"or None, got 'no'"):
        gc.set_algorithms(winograd="no")
    with pytest.raises(TypeError, match="`fft`"):
        gc.set_algorithms(fft=1)
    assert gc.set_algorithms() == {"winograd": True, "fft": True}


def test_winograd_is_float32_only(spy):
    """float64 takes the direct sums (its users ask for accuracy)."""
    rng = np.random.default_rng(12)
    x = rng.standard_normal((1, 16, 4, 20))
    w = rng.standard_normal((8, 16, 3, 3))
    gc.conv(x, w, padding=1)
    assert spy == {"gather_direct"}
    gc.conv(x.astype(np.float32), w.astype(np.float32), padding=1)
    assert "gather_winograd" in spy


def test_winograd_hand_computed_row(spy):
    """One output row of F(4, 3) against sums written out by hand: 16 channels of the
    row 0..9 scaled by channel, taps (1, 2, 3) everywhere: y[x] = s*(1*x[x-1] + 2*x[x] +
    3*x[x+1]) with zero padding, s = sum of the channel scales."""
    x = np.arange(10, dtype=np.float32)[None, None, :] * np.arange(1, 17, dtype=np.float32
                                                                  )[None, :, None]
    w = np.tile(np.array([1, 2, 3], np.float32), (8, 16, 1))
    y = gc.conv(x, w, padding=1)
    s = 136  # 1 + ... + 16
    row = [2 * 0 + 3 * 1] + [v - 1 + 2 * v + 3 * (v + 1) for v in range(1, 9)] + [8 + 2 * 9]
    np.testing.assert_allclose(y[0, 0], s * np.array(row, np.float32), rtol=1e-6)
    assert np.all(y == y[:, :1]) and spy == {"gather_winograd"}


@pytest.mark.parametrize("where", ["input", "weight"])
def test_winograd_infinities_fall_back_to_direct_sums(where, spy):
    """Winograd's transforms subtract inputs (and weights): an infinity would meet
    another of the opposite sign and give NaN where the direct sums give an infinity.
    Such calls run the direct kernel, and keep its infinities."""
    dtype = np.float32
    rng = np.random.default_rng(5)
    x = rng.standard_normal((1, 8, 4, 21)).astype(dtype)
    w = rng.standard_normal((8, 8, 3, 3)).astype(dtype)
    if where == "input":
        x[0, 3, 2, 10] = np.inf
    else:
        w[2, 1, 1, 1] = -np.inf
    y = gc.conv(x, w, padding=1)
    with np.errstate(invalid="ignore"):
        expected = ref.conv(x.astype(np.float64), w.astype(np.float64), padding=1)
    assert "gather_direct" in spy
    assert ("gather_winograd" in spy) == (where == "input")  # weights are checked first
    np.testing.assert_array_equal(np.isnan(y), np.isnan(expected))
    np.testing.assert_array_equal(np.isposinf(y), np.isposinf(expected))
    assert np.isinf(expected).sum() >= 8
    finite = np.isfinite(expected)
    assert rel_err(y[finite], expected[finite]) < tol(dtype)


def test_winograd_nans_reach_the_outputs_of_direct_sums(spy):
    """A NaN reaches only the outputs whose taps read it. In F(4, 3) an input's products
    cancel (for finite values) in outputs of its tile that do not read it, so a NaN would
    reach them too: such calls run the direct kernel."""
    rng = np.random.default_rng(6)
    x = rng.standard_normal((1, 8, 3, 17)).astype(np.float32)
    x[0, 0, 1, 6] = np.nan
    w = rng.standard_normal((8, 8, 3, 3)).astype(np.float32)
    y = gc.conv(x, w, padding=1)
    expected = ref.conv(x.astype(np.float64), w.astype(np.float64), padding=1)
    assert {"gather_winograd", "gather_direct"} <= spy
    np.testing.assert_array_equal(np.isnan(y), np.isnan(expected))
    assert 0 < np.isnan(expected).sum() < 100


def test_results_are_reproducible_bit_for_bit():
    """Threads deal the forward tiles dynamically, but every output belongs to one tile;
    the weight gradients sum per-thread partials in a fixed deal. Repeated calls (at the
    default two threads) must agree exactly, or a resumed training would not retrace the
    uninterrupted one."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 16, 24, 40)).astype(np.float32)
    w = rng.standard_normal((24, 16, 3, 3)).astype(np.float32)
    g = rng.standard_normal((4, 24, 24, 40)).astype(np.float32)
    first = [gc.conv(x, w, padding=1), *gc.conv_backward(g, x, w, padding=1)[:2]]
    for _ in range(6):
        again = [gc.conv(x, w, padding=1), *gc.conv_backward(g, x, w, padding=1)[:2]]
        for a, b in zip(first, again, strict=True):
            assert np.array_equal(a, b)
