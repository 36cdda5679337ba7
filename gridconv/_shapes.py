"""Shape rules of the convolution family, apart from any kernel."""

from __future__ import annotations

from ._params import fail


def conv_output_size(size: int, kernel: int, stride: int, dilation: int, lo: int, hi: int) -> int:
    """``floor((I + lo + hi - r*(K-1) - 1) / s) + 1``, or <= 0 when the kernel does not fit."""
    return (size + lo + hi - dilation * (kernel - 1) - 1) // stride + 1


def conv_output_shape(op, in_sizes, kernel_sizes, stride, dilation, pads):
    out = []
    for axis, (i, k, s, r, (lo, hi)) in enumerate(
        zip(in_sizes, kernel_sizes, stride, dilation, pads)
    ):
        if i + lo + hi < r * (k - 1) + 1:
            raise fail(
                op,
                f"the dilated kernel (extent {r * (k - 1) + 1} = dilation {r} * (size {k} - 1)"
                f" + 1) is larger than the padded input on spatial axis {axis} "
                f"(size {i} + padding {lo}+{hi} = {i + lo + hi})",
            )
        out.append(conv_output_size(i, k, s, r, lo, hi))
    return tuple(out)


def conv_transpose_output_shape(op, in_sizes, kernel_sizes, stride, dilation, pads,
                                output_padding):
    """PyTorch's rule: ``(I-1)*s - lo - hi + r*(K-1) + 1 + output_padding``."""
    out = []
    for axis, (i, k, s, r, (lo, hi), op_) in enumerate(
        zip(in_sizes, kernel_sizes, stride, dilation, pads, output_padding)
    ):
        if op_ >= max(s, r):
            raise fail(op, f"`output_padding` (={op_}) must be smaller than stride (={s}) or "
                           f"dilation (={r}) on spatial axis {axis}")
        size = (i - 1) * s - lo - hi + r * (k - 1) + 1 + op_
        if size <= 0:
            raise fail(op, f"the output size on spatial axis {axis} would be {size}; reduce "
                           f"`padding` (={lo}, {hi})")
        out.append(size)
    return tuple(out)
