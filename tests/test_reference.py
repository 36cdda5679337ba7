"""Tests of the plain-NumPy reference (:mod:`gridconv.reference`).

The examples use small integer arrays whose expected outputs are worked out by hand in
the comments; nothing here is computed by the code under test. On top of those: the
adjoint identity between conv and conv_transpose, gradients against central finite
differences, and output shapes that PyTorch gives for the same arguments.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from _numeric import numerical_gradient

from gridconv import reference as ref


def a1(*values):
    """A 1-D signal as an ``(N=1, C=1, L)`` array."""
    return np.array(values, dtype=float).reshape(1, 1, -1)


def k1(*values):
    """A 1-D kernel as a ``(C_out=1, C_in=1, K)`` weight."""
    return np.array(values, dtype=float).reshape(1, 1, -1)


def flat(y):
    return np.asarray(y).ravel().tolist()


# --------------------------------------------------------------------------------------
# Hand-computed 1-D examples
# --------------------------------------------------------------------------------------


def test_conv1d_basic():
    # y[i] = x[i]*1 + x[i+1]*0 + x[i+2]*(-1): [1-3, 2-4]
    y = ref.conv(a1(1, 2, 3, 4), k1(1, 0, -1))
    assert y.shape == (1, 1, 2)
    assert flat(y) == [-2, -2]


def test_conv1d_asymmetric_kernel_and_flip():
    x, w = a1(1, 2, 3, 4), k1(1, 2, 3)
    # Cross-correlation: [1*1 + 2*2 + 3*3, 2*1 + 3*2 + 4*3] = [14, 20]
    assert flat(ref.conv(x, w)) == [14, 20]
    # True convolution uses the reversed kernel [3, 2, 1]:
    # [1*3 + 2*2 + 3*1, 2*3 + 3*2 + 4*1] = [10, 16]   (= np.convolve(..., "valid"))
    assert flat(ref.conv(x, w, flip=True)) == [10, 16]
    assert flat(ref.convolve(x, w)) == [10, 16]


def test_conv1d_stride_2():
    # O = floor((7 - 3) / 2) + 1 = 3; windows start at 0, 2, 4:
    # [1+2+3, 3+4+5, 5+6+7] = [6, 12, 18]
    y = ref.conv(a1(1, 2, 3, 4, 5, 6, 7), k1(1, 1, 1), stride=2)
    assert flat(y) == [6, 12, 18]
    # I = 8 gives the same O = floor(5/2) + 1 = 3 (the last element is never reached)
    y = ref.conv(a1(1, 2, 3, 4, 5, 6, 7, 8), k1(1, 1, 1), stride=2)
    assert flat(y) == [6, 12, 18]


def test_conv1d_dilation_2():
    # Taps at i, i+2, i+4; O = 7 - 2*(3-1) = 3:
    # i=0: 1*1 + 2*3 + 3*5 = 22;  i=1: 2 + 2*4 + 3*6 = 28;  i=2: 3 + 2*5 + 3*7 = 34
    y = ref.conv(a1(1, 2, 3, 4, 5, 6, 7), k1(1, 2, 3), dilation=2)
    assert flat(y) == [22, 28, 34]


def test_conv1d_stride_and_dilation():
    # Taps at 2i and 2i+2; O = floor((7 - 2 - 1)/2) + 1 = 3: [1-3, 3-5, 5-7]
    y = ref.conv(a1(1, 2, 3, 4, 5, 6, 7), k1(1, -1), stride=2, dilation=2)
    assert flat(y) == [-2, -2, -2]


def test_conv1d_integer_padding_and_bias():
    # Zero padding 1 each side: xpad = [0, 1, 2, 3, 0]; kernel [1, 1]; O = 4
    # [0+1, 1+2, 2+3, 3+0] + 10 = [11, 13, 15, 13]
    y = ref.conv(a1(1, 2, 3), k1(1, 1), np.array([10.0]), padding=1)
    assert flat(y) == [11, 13, 15, 13]


def test_conv1d_asymmetric_padding_pairs():
    # (lo, hi) = (2, 0): xpad = [0, 0, 1, 2, 3]; kernel [1, 1, 1]: [1, 3, 6]
    y = ref.conv(a1(1, 2, 3), k1(1, 1, 1), padding=[(2, 0)])
    assert flat(y) == [1, 3, 6]


def test_same_padding_stride_2_odd_input():
    # I=5, K=3, s=2: O = ceil(5/2) = 3; total = (3-1)*2 + 3 - 5 = 2 -> (1, 1)
    # xpad = [0, 1, 2, 3, 4, 5, 0]; windows at 0, 2, 4: [0+1+2, 2+3+4, 4+5+0]
    y = ref.conv(a1(1, 2, 3, 4, 5), k1(1, 1, 1), stride=2, padding="same")
    assert y.shape == (1, 1, 3)
    assert flat(y) == [3, 9, 9]


def test_same_padding_stride_2_even_input_extra_on_high_side():
    # I=6, K=3, s=2: O = 3; total = 2*2 + 3 - 6 = 1 -> (0, 1) (TensorFlow: extra on high)
    # xpad = [1, 2, 3, 4, 5, 6, 0]: [1+2+3, 3+4+5, 5+6+0]
    y = ref.conv(a1(1, 2, 3, 4, 5, 6), k1(1, 1, 1), stride=2, padding="same")
    assert flat(y) == [6, 12, 11]
    # With a one-hot kernel picking the first tap, the output is xpad[0], xpad[2], xpad[4]:
    # no padding on the low side means xpad[0] = x[0] = 1.
    y = ref.conv(a1(1, 2, 3, 4, 5, 6), k1(1, 0, 0), stride=2, padding="same")
    assert flat(y) == [1, 3, 5]


def test_same_padding_even_kernel():
    # I=5, K=4, s=1: total = 4 - 1 = 3 -> (1, 2); xpad = [0, 1, 2, 3, 4, 5, 0, 0]
    # sums of 4: [0+1+2+3, 1+2+3+4, 2+3+4+5, 3+4+5+0, 4+5+0+0] = [6, 10, 14, 12, 9]
    y = ref.conv(a1(1, 2, 3, 4, 5), k1(1, 1, 1, 1), padding="same")
    assert flat(y) == [6, 10, 14, 12, 9]


def test_same_padding_with_dilation():
    # I=4, K=2, r=2: extent 3, total = 2 -> (1, 1); xpad = [0, 1, 2, 3, 4, 0]
    # y[i] = xpad[i] + xpad[i+2]: [0+2, 1+3, 2+4, 3+0]
    y = ref.conv(a1(1, 2, 3, 4), k1(1, 1), padding="same", dilation=2)
    assert flat(y) == [2, 4, 6, 3]


def test_valid_and_full_padding():
    x, w = a1(1, 2, 3), k1(1, 2)
    # valid: [1*1 + 2*2, 2*1 + 3*2] = [5, 8]
    assert flat(ref.conv(x, w, padding="valid")) == [5, 8]
    # full pads K-1 = 1 each side: xpad = [0, 1, 2, 3, 0]:
    # [0*1 + 1*2, 1*1 + 2*2, 2*1 + 3*2, 3*1 + 0*2] = [2, 5, 8, 3]
    assert flat(ref.conv(x, w, padding="full")) == [2, 5, 8, 3]
    # full convolution (flipped) is np.convolve(x, w, "full") = [1, 4, 7, 6]
    assert flat(ref.convolve(x, w, padding="full")) == [1, 4, 7, 6]


@pytest.mark.parametrize(
    ("mode", "padded"),
    [
        ("zeros", [0, 0, 1, 2, 3, 4, 0, 0]),
        ("reflect", [3, 2, 1, 2, 3, 4, 3, 2]),  # mirror, edge not repeated
        ("replicate", [1, 1, 1, 2, 3, 4, 4, 4]),  # edge repeated
        ("circular", [3, 4, 1, 2, 3, 4, 1, 2]),  # wrap around
    ],
)
def test_padding_modes_with_identity_kernel(mode, padded):
    x = a1(1, 2, 3, 4)
    assert flat(ref.pad(x, [(2, 2)], mode)) == padded
    # A one-tap kernel [1] shows the padded signal itself.
    assert flat(ref.conv(x, k1(1), padding=2, padding_mode=mode)) == padded


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("zeros", [3, 6, 9, 7]),  # xpad = [0, 1, 2, 3, 4, 0]
        ("reflect", [5, 6, 9, 10]),  # xpad = [2, 1, 2, 3, 4, 3]
        ("replicate", [4, 6, 9, 11]),  # xpad = [1, 1, 2, 3, 4, 4]
        ("circular", [7, 6, 9, 8]),  # xpad = [4, 1, 2, 3, 4, 1]
    ],
)
def test_padding_modes_box_filter(mode, expected):
    # Sums of 3 consecutive elements of xpad.
    y = ref.conv(a1(1, 2, 3, 4), k1(1, 1, 1), padding=1, padding_mode=mode)
    assert flat(y) == expected


def test_pad_2d_leaves_batch_and_channels_alone():
    x = np.array([[1, 2], [3, 4]]).reshape(1, 1, 2, 2)
    p = ref.pad(x, [(1, 0), (0, 1)], "replicate")
    # rows: repeat the first row on top; columns: repeat the last column on the right
    assert p.shape == (1, 1, 3, 3)
    assert p[0, 0].tolist() == [[1, 2, 2], [1, 2, 2], [3, 4, 4]]
    assert ref.pad(np.ones((2, 3, 4)), 1).shape == (2, 3, 6)


# --------------------------------------------------------------------------------------
# Hand-computed 2-D examples
# --------------------------------------------------------------------------------------

X4 = np.arange(1, 17, dtype=float).reshape(1, 1, 4, 4)  # rows [1..4], [5..8], ...


def test_conv2d_3x3_corner_kernel_and_flip():
    # w picks the top-left (weight 1) and bottom-right (weight 2) taps:
    # y[i, j] = x[i, j] + 2 * x[i+2, j+2]
    w = np.array([[1, 0, 0], [0, 0, 0], [0, 0, 2]], dtype=float).reshape(1, 1, 3, 3)
    y = ref.conv(X4, w)
    assert y.shape == (1, 1, 2, 2)
    # [[1 + 2*11, 2 + 2*12], [5 + 2*15, 6 + 2*16]]
    assert y[0, 0].tolist() == [[23, 26], [35, 38]]
    # flipped on both axes: y[i, j] = 2 * x[i, j] + x[i+2, j+2]
    assert ref.conv(X4, w, flip=True)[0, 0].tolist() == [[13, 16], [25, 28]]


def test_conv2d_flip_reverses_each_axis_separately():
    # A kernel asymmetric along columns only: [[1, 2]] -> flipped [[2, 1]].
    w = np.array([[1, 2]], dtype=float).reshape(1, 1, 1, 2)
    x = np.array([[1, 2, 3]], dtype=float).reshape(1, 1, 1, 3)
    assert flat(ref.conv(x, w)) == [1 + 4, 2 + 6]
    assert flat(ref.conv(x, w, flip=True)) == [2 + 2, 4 + 3]


def test_conv2d_laplacian_zero_padding():
    x = np.array([[1, 2, 3], [4, 5, 6], [7, 8, 9]], dtype=float).reshape(1, 1, 3, 3)
    w = np.array([[0, 1, 0], [1, -4, 1], [0, 1, 0]], dtype=float).reshape(1, 1, 3, 3)
    # up + down + left + right - 4 * centre, with zeros outside, e.g.
    # (0,0): 0 + 4 + 0 + 2 - 4 = 2;   (1,1): 2 + 8 + 4 + 6 - 20 = 0;
    # (2,2): 6 + 0 + 8 + 0 - 36 = -22
    expected = [[2, 1, -4], [-3, 0, -7], [-16, -11, -22]]
    assert ref.conv(x, w, padding=1)[0, 0].tolist() == expected
    assert ref.conv(x, w, padding="same")[0, 0].tolist() == expected


def test_conv2d_stride_per_axis():
    # 1x1 kernel, stride (2, 3): rows 0, 2 and columns 0, 3 of X4
    w = np.ones((1, 1, 1, 1))
    y = ref.conv(X4, w, stride=(2, 3))
    assert y[0, 0].tolist() == [[1, 4], [9, 12]]


def test_multichannel_1x1_with_bias():
    # C_in = 2, C_out = 1: y = 2 * x0 - 1 * x1 + 5
    x = np.array([[[1, 2, 3], [10, 20, 30]]], dtype=float)
    w = np.array([[[2], [-1]]], dtype=float)
    y = ref.conv(x, w, np.array([5.0]))
    assert flat(y) == [2 - 10 + 5, 4 - 20 + 5, 6 - 30 + 5]


def test_multiple_outputs_and_batch():
    # Two samples, C_out = 2 kernels [1, 1] and [1, -1]
    x = np.array([[[1, 2, 4]], [[0, 3, 9]]], dtype=float)
    w = np.array([[[1, 1]], [[1, -1]]], dtype=float)
    y = ref.conv(x, w)
    assert y.shape == (2, 2, 2)
    assert y[0].tolist() == [[3, 6], [-1, -2]]
    assert y[1].tolist() == [[3, 12], [-3, -6]]


@pytest.mark.parametrize(
    ("mode", "scipy_mode"),
    [("zeros", "constant"), ("reflect", "mirror"), ("replicate", "nearest"),
     ("circular", "wrap")],
)
def test_single_channel_3d_agrees_with_scipy_ndimage(mode, scipy_mode):
    # An independent implementation: scipy.ndimage.correlate centres an odd kernel, which
    # is padding="same" at stride 1; its mode names differ from ours.
    from scipy import ndimage

    rng = np.random.default_rng(11)
    x = rng.standard_normal((1, 1, 6, 7, 5))
    w = rng.standard_normal((1, 1, 3, 3, 3))
    expected = ndimage.correlate(x[0, 0], w[0, 0], mode=scipy_mode)
    y = ref.conv(x, w, padding="same", padding_mode=mode)
    np.testing.assert_allclose(y[0, 0], expected, rtol=1e-12, atol=1e-12)


def test_full_convolution_agrees_with_scipy_signal():
    from scipy import signal

    rng = np.random.default_rng(12)
    x = rng.standard_normal((1, 1, 6, 5))
    w = rng.standard_normal((1, 1, 3, 4))
    expected = signal.convolve(x[0, 0], w[0, 0], mode="full", method="direct")
    np.testing.assert_allclose(ref.convolve(x, w, padding="full")[0, 0], expected,
                               rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------------------
# Groups
# --------------------------------------------------------------------------------------


def test_groups_2():
    # C_in = 4, C_out = 2, groups = 2: output 0 sees channels 0, 1; output 1 sees 2, 3.
    x = np.array([[[1, 2], [3, 4], [5, 6], [7, 8]]], dtype=float)
    w = np.array([[[1], [1]], [[1], [-1]]], dtype=float)  # (2, 4 // 2, 1)
    y = ref.conv(x, w, groups=2)
    # out0 = x0 + x1 = [4, 6];  out1 = x2 - x3 = [-2, -2]
    assert y[0].tolist() == [[4, 6], [-2, -2]]


def test_groups_several_outputs_per_group():
    # C_in = 2, C_out = 4, groups = 2: g(o) = o // 2, so outputs 0, 1 read channel 0
    # and outputs 2, 3 read channel 1.
    x = np.array([[[1, 2], [10, 20]]], dtype=float)
    w = np.array([1, 2, 3, 4], dtype=float).reshape(4, 1, 1)
    y = ref.conv(x, w, groups=2)
    assert y[0].tolist() == [[1, 2], [2, 4], [30, 60], [40, 80]]


def test_depthwise():
    # groups = C_in = 2, one kernel of size 2 per channel: [1, 1] and [1, -1]
    x = np.array([[[1, 2, 3], [4, 5, 7]]], dtype=float)
    w = np.array([[[1, 1]], [[1, -1]]], dtype=float)  # (2, 1, 2)
    y = ref.conv(x, w, groups=2)
    assert y[0].tolist() == [[3, 5], [-1, -2]]


# --------------------------------------------------------------------------------------
# Transposed convolution
# --------------------------------------------------------------------------------------


def test_conv_transpose_stride_2_output_padding_1():
    # y[2i + k] += x[i] * w[k], O = (3-1)*2 + (3-1) + 1 + 1 = 8
    #   i=0 (x=1): positions 0, 1, 2 += 1, 2, 3
    #   i=1 (x=2): positions 2, 3, 4 += 2, 4, 6
    #   i=2 (x=3): positions 4, 5, 6 += 3, 6, 9
    # position 7 exists only through output_padding and receives nothing.
    x, w = a1(1, 2, 3), k1(1, 2, 3)
    y = ref.conv_transpose(x, w, stride=2, output_padding=1)
    assert y.shape == (1, 1, 8)
    assert flat(y) == [1, 2, 5, 4, 9, 6, 9, 0]
    # Without output_padding the last position is dropped (O = 7).
    assert flat(ref.conv_transpose(x, w, stride=2)) == [1, 2, 5, 4, 9, 6, 9]


def test_conv_transpose_padding_crops_and_bias():
    x, w = a1(1, 2, 3), k1(1, 2, 3)
    # padding 1 crops one element at each end of the 7-long result: O = 4 - 2 + 3 = 5
    y = ref.conv_transpose(x, w, stride=2, padding=1)
    assert flat(y) == [2, 5, 4, 9, 6]
    # ... and output_padding 1 takes back one at the high end: O = 6
    y = ref.conv_transpose(x, w, np.array([10.0]), stride=2, padding=1, output_padding=1)
    assert flat(y) == [12, 15, 14, 19, 16, 19]


def test_conv_transpose_dilation():
    # y[i + 2k] += x[i] * w[k], O = (2-1) + 2*(2-1) + 1 = 4
    #   i=0: pos 0 += 1*1, pos 2 += 1*2;  i=1: pos 1 += 2*1, pos 3 += 2*2
    y = ref.conv_transpose(a1(1, 2), k1(1, 2), dilation=2)
    assert flat(y) == [1, 2, 2, 4]


def test_conv_transpose_channels_and_groups():
    # weight (C_in=2, C_out//groups=1, K=2), groups=2: channel c scatters only into c.
    x = np.array([[[1, 2], [3, 4]]], dtype=float)
    w = np.array([[[1, 1]], [[1, -1]]], dtype=float)
    y = ref.conv_transpose(x, w, groups=2)
    # ch0: [1, 1+2, 2] = [1, 3, 2];  ch1: [3, -3+4, -4] = [3, 1, -4]
    assert y[0].tolist() == [[1, 3, 2], [3, 1, -4]]
    # groups=1, weight (C_in=2, C_out=1, 2): both channels add into the one output.
    w1 = np.array([[[1, 1]], [[1, -1]]], dtype=float)
    y1 = ref.conv_transpose(x, w1)
    assert y1.shape == (1, 1, 3)
    assert flat(y1) == [1 + 3, 3 + 1, 2 - 4]


def test_conv_transpose_2d_stride_2():
    # A single 1 at (0, 0) and a 2 at (1, 1) of a 2x2 input, kernel 2x2 [[1, 2], [3, 4]],
    # stride 2: each input element places its own copy of the kernel, no overlap.
    x = np.array([[1, 0], [0, 2]], dtype=float).reshape(1, 1, 2, 2)
    w = np.array([[1, 2], [3, 4]], dtype=float).reshape(1, 1, 2, 2)
    y = ref.conv_transpose(x, w, stride=2)
    assert y[0, 0].tolist() == [
        [1, 2, 0, 0],
        [3, 4, 0, 0],
        [0, 0, 2, 4],
        [0, 0, 6, 8],
    ]


# --------------------------------------------------------------------------------------
# Output shapes: what PyTorch gives for the same arguments (hard-coded)
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("x_shape", "w_shape", "kwargs", "torch_shape"),
    [
        # nn.Conv2d(3, 8, 3, stride=2, padding=1) on 32x32 -> 16x16
        ((1, 3, 32, 32), (8, 3, 3, 3), dict(stride=2, padding=1), (1, 8, 16, 16)),
        # nn.Conv2d(1, 6, 5) on 32x32 (LeNet-5) -> 28x28
        ((1, 1, 32, 32), (6, 1, 5, 5), {}, (1, 6, 28, 28)),
        # nn.Conv2d(3, 64, 7, stride=2, padding=3) on 224x224 (ResNet stem) -> 112x112
        ((1, 3, 224, 224), (64, 3, 7, 7), dict(stride=2, padding=3), (1, 64, 112, 112)),
        # nn.Conv1d(1, 4, 5, stride=3, padding=2, dilation=2) on 100 -> 32
        ((2, 1, 100), (4, 1, 5), dict(stride=3, padding=2, dilation=2), (2, 4, 32)),
        # nn.Conv1d(1, 128, 80, stride=16) on 8000 samples (M5 first layer) -> 496
        ((1, 1, 8000), (128, 1, 80), dict(stride=16), (1, 128, 496)),
        # nn.Conv3d(2, 4, 3, stride=(1, 2, 2), padding=(1, 0, 1)) on 8x9x10 -> 8x4x5
        ((1, 2, 8, 9, 10), (4, 2, 3, 3, 3), dict(stride=(1, 2, 2), padding=(1, 0, 1)),
         (1, 4, 8, 4, 5)),
        # nn.Conv2d(1, 1, 3, padding="same", dilation=2) on 7x7 -> 7x7
        ((1, 1, 7, 7), (1, 1, 3, 3), dict(padding="same", dilation=2), (1, 1, 7, 7)),
        # nn.Conv2d(4, 4, 3, groups=4, padding=1) (depthwise) on 5x6 -> 5x6
        ((2, 4, 5, 6), (4, 1, 3, 3), dict(groups=4, padding=1), (2, 4, 5, 6)),
    ],
)
def test_conv_output_shape_matches_torch(x_shape, w_shape, kwargs, torch_shape):
    y = ref.conv(np.zeros(x_shape), np.zeros(w_shape), **kwargs)
    assert y.shape == torch_shape


@pytest.mark.parametrize(
    ("x_shape", "w_shape", "kwargs", "torch_shape"),
    [
        # nn.ConvTranspose2d(4, 2, 4, stride=2, padding=1) on 16x16 -> 32x32 (DCGAN)
        ((1, 4, 16, 16), (4, 2, 4, 4), dict(stride=2, padding=1), (1, 2, 32, 32)),
        # nn.ConvTranspose2d(8, 4, 2, stride=2) on 10x12 (U-Net up-conv) -> 20x24
        ((1, 8, 10, 12), (8, 4, 2, 2), dict(stride=2), (1, 4, 20, 24)),
        # nn.ConvTranspose1d(2, 3, 3, stride=2, padding=1, output_padding=1) on 10 -> 20
        ((1, 2, 10), (2, 3, 3), dict(stride=2, padding=1, output_padding=1), (1, 3, 20)),
        # nn.ConvTranspose3d(2, 2, 3, stride=(2, 1, 3), padding=(1, 0, 1),
        #                    output_padding=(1, 0, 2), dilation=(1, 2, 1)) on 4x5x3
        ((1, 2, 4, 5, 3), (2, 2, 3, 3, 3),
         dict(stride=(2, 1, 3), padding=(1, 0, 1), output_padding=(1, 0, 2),
              dilation=(1, 2, 1)),
         (1, 2, 8, 9, 9)),
        # nn.ConvTranspose2d(4, 6, 3, groups=2) on 5x5 -> 7x7 (weight (4, 3, 3, 3))
        ((1, 4, 5, 5), (4, 3, 3, 3), dict(groups=2), (1, 6, 7, 7)),
    ],
)
def test_conv_transpose_output_shape_matches_torch(x_shape, w_shape, kwargs, torch_shape):
    y = ref.conv_transpose(np.zeros(x_shape), np.zeros(w_shape), **kwargs)
    assert y.shape == torch_shape


# --------------------------------------------------------------------------------------
# Adjoint identity: <conv(x, w), y> == <x, conv_transpose(y, w)>
# --------------------------------------------------------------------------------------

ADJOINT_CASES = [
    # (x shape, w shape, stride, padding as (lo, hi) pairs, dilation, groups)
    ((2, 3, 11), (4, 3, 3), 1, [(0, 0)], 1, 1),
    ((2, 4, 12), (6, 2, 3), 2, [(1, 2)], 1, 2),
    ((1, 2, 13), (2, 1, 4), 3, [(2, 0)], 2, 2),
    ((1, 3, 9), (3, 1, 2), 2, [(0, 1)], 3, 3),
    ((2, 2, 7, 8), (3, 2, 3, 2), (2, 1), [(1, 1), (0, 2)], (1, 2), 1),
    ((1, 4, 9, 7), (4, 2, 3, 3), (3, 2), [(2, 1), (1, 1)], (2, 1), 2),
    ((1, 2, 5, 6, 7), (2, 1, 2, 3, 2), (1, 2, 3), [(1, 0), (1, 1), (0, 2)], (2, 1, 1), 2),
    ((2, 1, 4, 5, 4), (2, 1, 3, 1, 2), 2, [(1, 1), (0, 0), (1, 2)], 1, 1),
]


@pytest.mark.parametrize(("x_shape", "w_shape", "stride", "pads", "dilation", "groups"),
                         ADJOINT_CASES)
def test_conv_transpose_is_adjoint_of_conv(x_shape, w_shape, stride, pads, dilation, groups):
    rng = np.random.default_rng(31 * sum(x_shape) + sum(w_shape))
    x = rng.standard_normal(x_shape)
    w = rng.standard_normal(w_shape)
    y = ref.conv(x, w, stride=stride, padding=pads, dilation=dilation, groups=groups)
    v = rng.standard_normal(y.shape)

    d = len(x_shape) - 2
    s = (stride,) * d if isinstance(stride, int) else stride
    r = (dilation,) * d if isinstance(dilation, int) else dilation
    # output_padding recovers the exact input size (it is < s by construction)
    output_padding = tuple(
        i - ((o - 1) * si - lo - hi + ri * (k - 1) + 1)
        for i, o, si, ri, k, (lo, hi) in zip(x_shape[2:], y.shape[2:], s, r, w_shape[2:],
                                             pads, strict=True)
    )
    xt = ref.conv_transpose(v, w, stride=stride, padding=pads, dilation=dilation,
                            groups=groups, output_padding=output_padding)
    assert xt.shape == x.shape
    np.testing.assert_allclose(np.vdot(y, v), np.vdot(x, xt), rtol=1e-12)
    # conv_transpose is also conv's input gradient (zero padding)
    gx = ref.conv_grad_input(v, w, x.shape, stride=stride, padding=pads, dilation=dilation,
                             groups=groups)
    np.testing.assert_allclose(gx, xt, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
def test_grad_input_is_adjoint_for_padding_modes(mode):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 2, 6, 5))
    w = rng.standard_normal((3, 2, 3, 2))
    kw = dict(stride=(2, 1), padding=[(2, 1), (1, 3)], dilation=(1, 2), padding_mode=mode)
    y = ref.conv(x, w, **kw)
    v = rng.standard_normal(y.shape)
    gx = ref.conv_grad_input(v, w, x.shape, **kw)
    np.testing.assert_allclose(np.vdot(y, v), np.vdot(x, gx), rtol=1e-12)


# --------------------------------------------------------------------------------------
# Gradients against central finite differences (float64)
# --------------------------------------------------------------------------------------


CONV_GRAD_CASES = [
    # (x shape, w shape, conv keyword arguments)
    ((2, 2, 7), (3, 2, 3), dict(stride=2, padding=1)),
    ((1, 2, 6), (2, 1, 3), dict(padding=[(2, 1)], padding_mode="reflect", groups=2)),
    ((2, 1, 5), (2, 1, 2), dict(padding=(3,), padding_mode="circular", dilation=2)),
    ((1, 2, 7), (2, 2, 3), dict(padding="same", stride=2, padding_mode="replicate")),
    ((1, 2, 6), (2, 2, 3), dict(padding=1, flip=True, stride=2)),
    ((1, 2, 4, 5), (2, 1, 3, 2),
     dict(padding=[(1, 2), (1, 0)], padding_mode="circular", groups=2, flip=True)),
    ((1, 1, 5, 4), (2, 1, 2, 3), dict(padding="same", padding_mode="reflect",
                                      dilation=(2, 1), stride=(1, 2))),
    ((1, 2, 3, 4, 3), (2, 2, 2, 2, 2), dict(padding=1, stride=(1, 2, 1))),
]


@pytest.mark.parametrize(("x_shape", "w_shape", "kwargs"), CONV_GRAD_CASES)
def test_conv_backward_matches_finite_differences(x_shape, w_shape, kwargs):
    rng = np.random.default_rng(len(x_shape) * 100 + sum(w_shape))
    x = rng.standard_normal(x_shape)
    w = rng.standard_normal(w_shape)
    b = rng.standard_normal(w_shape[0])
    g = rng.standard_normal(ref.conv(x, w, b, **kwargs).shape)

    def loss():
        return float(np.sum(ref.conv(x, w, b, **kwargs) * g))

    gx, gw, gb = ref.conv_backward(g, x, w, b, **kwargs)
    np.testing.assert_allclose(gx, numerical_gradient(loss, x), rtol=1e-7, atol=1e-8)
    np.testing.assert_allclose(gw, numerical_gradient(loss, w), rtol=1e-7, atol=1e-8)
    np.testing.assert_allclose(gb, numerical_gradient(loss, b), rtol=1e-7, atol=1e-8)
    # The separate entry points agree with conv_backward.
    np.testing.assert_array_equal(ref.conv_grad_input(g, w, x.shape, **kwargs), gx)
    np.testing.assert_array_equal(ref.conv_grad_weight(g, x, w.shape, **kwargs), gw)


CONV_TRANSPOSE_GRAD_CASES = [
    ((2, 2, 4), (2, 3, 3), dict(stride=2, output_padding=1)),
    ((1, 4, 5), (4, 1, 2), dict(stride=3, padding=[(1, 2)], dilation=2, groups=2,
                                output_padding=1)),
    ((1, 2, 3, 3), (2, 2, 3, 2), dict(stride=(2, 1), padding=(1, 0), dilation=(1, 2))),
    ((1, 2, 2, 3, 2), (2, 1, 2, 2, 2), dict(stride=2, padding=1, groups=2,
                                            output_padding=(1, 0, 1))),
]


@pytest.mark.parametrize(("x_shape", "w_shape", "kwargs"), CONV_TRANSPOSE_GRAD_CASES)
def test_conv_transpose_backward_matches_finite_differences(x_shape, w_shape, kwargs):
    rng = np.random.default_rng(sum(x_shape) + 10 * sum(w_shape))
    x = rng.standard_normal(x_shape)
    w = rng.standard_normal(w_shape)
    groups = kwargs.get("groups", 1)
    b = rng.standard_normal(w_shape[1] * groups)
    g = rng.standard_normal(ref.conv_transpose(x, w, b, **kwargs).shape)

    def loss():
        return float(np.sum(ref.conv_transpose(x, w, b, **kwargs) * g))

    gx, gw, gb = ref.conv_transpose_backward(g, x, w, b, **kwargs)
    np.testing.assert_allclose(gx, numerical_gradient(loss, x), rtol=1e-7, atol=1e-8)
    np.testing.assert_allclose(gw, numerical_gradient(loss, w), rtol=1e-7, atol=1e-8)
    np.testing.assert_allclose(gb, numerical_gradient(loss, b), rtol=1e-7, atol=1e-8)


def test_backward_without_bias_returns_none():
    x, w = np.ones((1, 1, 4)), np.ones((1, 1, 2))
    assert ref.conv_backward(np.ones((1, 1, 3)), x, w)[2] is None
    assert ref.conv_transpose_backward(np.ones((1, 1, 5)), x, w)[2] is None


def test_hand_computed_gradients():
    # y = conv([1, 2, 3, 4], [1, 2]) = [x0 + 2x1, x1 + 2x2, x2 + 2x3]; with g = [1, 1, 1]:
    # dL/dx = [1, 1+2, 1+2, 2] = [1, 3, 3, 2];  dL/dw = [x0+x1+x2, x1+x2+x3] = [6, 9]
    gx, gw, gb = ref.conv_backward(a1(1, 1, 1), a1(1, 2, 3, 4), k1(1, 2), np.zeros(1))
    assert flat(gx) == [1, 3, 3, 2]
    assert flat(gw) == [6, 9]
    assert flat(gb) == [3]
    # flip=True: y = [2x0 + x1, 2x1 + x2, 2x2 + x3]; dL/dw is w.r.t. the kernel as
    # passed, w = [1, 2]: dy/dw0 sums x1..x3 = 9, dy/dw1 sums x0..x2 = 6
    gx, gw, _ = ref.conv_backward(a1(1, 1, 1), a1(1, 2, 3, 4), k1(1, 2), flip=True)
    assert flat(gx) == [2, 3, 3, 1]
    assert flat(gw) == [9, 6]
    # reflect padding (1, 1): xpad = [x1, x0, x1, x2, x3, x2], kernel [1, 1], g = 1:
    # uses of xpad: [1, 2, 2, 2, 2, 1] -> x0: 2, x1: 1 + 2 = 3, x2: 2 + 1 = 3, x3: 2
    gx = ref.conv_grad_input(a1(1, 1, 1, 1, 1), k1(1, 1), (1, 1, 4), padding=1,
                             padding_mode="reflect")
    assert flat(gx) == [2, 3, 3, 2]


# --------------------------------------------------------------------------------------
# dtypes, caller's arrays, validation
# --------------------------------------------------------------------------------------


def test_dtypes():
    xi = np.array([[[1, 2, 3, 4]]])  # int64
    wi = np.array([[[1, 0, -1]]], dtype=np.int32)
    y = ref.conv(xi, wi)
    assert y.dtype == np.float64 and flat(y) == [-2, -2]
    x32, w32 = xi.astype(np.float32), wi.astype(np.float32)
    assert ref.conv(x32, w32).dtype == np.float32
    assert ref.conv_transpose(x32, w32).dtype == np.float32
    assert all(g.dtype == np.float32
               for g in ref.conv_backward(np.ones((1, 1, 2), np.float32), x32, w32,
                                          np.zeros(1, np.float32)))
    assert ref.conv(x32, w32.astype(np.float64)).dtype == np.float64
    assert ref.conv(x32, w32, np.zeros(1)).dtype == np.float64


def test_never_writes_into_inputs_and_accepts_strided_views():
    rng = np.random.default_rng(3)
    base = rng.standard_normal((2, 3, 10, 8))
    x = base[:, :, ::2, ::-1]  # non-contiguous view
    xf = np.asfortranarray(x)
    w = rng.standard_normal((4, 3, 2, 3))
    b = rng.standard_normal(4)
    for a in (base, xf, w, b):
        a.flags.writeable = False
    expected = ref.conv(np.ascontiguousarray(x), w, b, padding=1, padding_mode="reflect")
    np.testing.assert_array_equal(ref.conv(x, w, b, padding=1, padding_mode="reflect"),
                                  expected)
    np.testing.assert_array_equal(ref.conv(xf, w, b, padding=1, padding_mode="reflect"),
                                  expected)
    g = np.ones_like(expected)
    g.flags.writeable = False
    ref.conv_backward(g, x, w, b, padding=1, padding_mode="circular", flip=True)
    v = rng.standard_normal((2, 4, 5, 8))
    v.flags.writeable = False
    yt = ref.conv_transpose(v, w, b[:3], padding=1)
    ref.conv_transpose_backward(np.ones_like(yt), v, w, b[:3], padding=1)


def test_nan_propagates():
    y = ref.conv(a1(1, np.nan, 3, 4), k1(1, 1))
    assert np.isnan(y[0, 0, :2]).all() and y[0, 0, 2] == 7


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: ref.conv(np.ones((1, 3, 5)), np.ones((2, 2, 3))), "weight.shape\\[1\\]"),
        (lambda: ref.conv(np.ones((1, 4, 5)), np.ones((3, 2, 3)), groups=2), "C_out=3"),
        (lambda: ref.conv(np.ones((1, 3, 5)), np.ones((2, 1, 3)), groups=2), "C_in=3"),
        (lambda: ref.conv(np.ones((1, 1, 5)), np.ones((1, 1, 3)), groups=0), "groups"),
        (lambda: ref.conv(np.ones((1, 1, 5, 5)), np.ones((1, 1, 3))), "`x` must be 3-D"),
        (lambda: ref.conv(np.ones((1, 5)), np.ones((1, 5))), "`weight` must have shape"),
        (lambda: ref.conv(np.ones((1, 1, 2)), np.ones((1, 1, 3))), "larger than the padded"),
        (lambda: ref.conv(np.ones((1, 1, 5)), np.ones((1, 1, 3)), stride=0), "stride"),
        (lambda: ref.conv(np.ones((1, 1, 5)), np.ones((1, 1, 3)), dilation=0), "dilation"),
        (lambda: ref.conv(np.ones((1, 1, 5)), np.ones((1, 1, 3)), padding=-1), "padding"),
        (lambda: ref.conv(np.ones((1, 1, 5)), np.ones((1, 1, 3)), padding="half"), "padding"),
        (lambda: ref.conv(np.ones((1, 1, 5)), np.ones((1, 1, 3)), padding_mode="mirror"),
         "padding_mode"),
        (lambda: ref.conv(np.ones((1, 1, 5)), np.ones((1, 1, 3)), np.ones(2)), "bias"),
        (lambda: ref.conv_transpose(np.ones((1, 2, 5)), np.ones((3, 1, 3))), "weight.shape"),
        (lambda: ref.conv_transpose(np.ones((1, 3, 5)), np.ones((3, 1, 3)), groups=2),
         "C_in=3"),
        (lambda: ref.conv_transpose(np.ones((1, 1, 5)), np.ones((1, 1, 3)), output_padding=1),
         "output_padding"),
        (lambda: ref.conv_backward(np.ones((1, 1, 4)), np.ones((1, 1, 5)), np.ones((1, 1, 3))),
         "grad_output"),
        (lambda: ref.pad(np.ones((1, 1, 5)), 1, "mirror"), "padding_mode"),
    ],
)
def test_validation_errors_name_operation_and_argument(call, match):
    with pytest.raises(ValueError, match=match) as info:
        call()
    assert str(info.value).startswith("reference.")


def test_type_errors():
    with pytest.raises(TypeError, match="groups"):
        ref.conv(np.ones((1, 1, 5)), np.ones((1, 1, 3)), groups=1.5)
    with pytest.raises(TypeError, match="padding"):
        ref.conv_transpose(np.ones((1, 1, 5)), np.ones((1, 1, 3)), padding="same")
    with pytest.raises(TypeError, match="dtype"):
        ref.conv(np.ones((1, 1, 5), dtype=complex), np.ones((1, 1, 3)))
    with pytest.raises(TypeError, match="flip"):
        ref.convolve(np.ones((1, 1, 5)), np.ones((1, 1, 3)), flip=False)


def test_every_kernel_offset_is_visited():
    # A guard on the loop structure: a kernel of all ones over an all-ones input counts
    # the taps, K0 * K1 * K2, times C_in = 2.
    for shape in itertools.product([1, 2], [2, 3], [3, 4]):
        y = ref.conv(np.ones((1, 2, 5, 5, 5)), np.ones((1, 2, *shape)))
        assert np.all(y == 2 * np.prod(shape))
