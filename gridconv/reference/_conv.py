"""Reference convolutions (``conv``, ``conv_transpose`` and their gradients) and padding."""


from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

import numpy as np

from .._params import conv_padding, explicit_padding, fail, per_axis, result_dtype
from .._params import padding_mode as check_padding_mode
from .._shapes import conv_output_shape, conv_transpose_output_shape

__all__ = [
    "pad",
    "conv",
    "convolve",
    "conv_transpose",
    "conv_grad_input",
    "conv_grad_weight",
    "conv_backward",
    "conv_transpose_backward",
]

Pads = tuple[tuple[int, int], ...]

#: How each padding mode is spelled for :func:`numpy.pad`.
NUMPY_PAD_MODES = {
    "zeros": "constant",
    "reflect": "reflect",
    "replicate": "edge",
    "circular": "wrap",
}


# --------------------------------------------------------------------------------------
# Padding
# --------------------------------------------------------------------------------------


def pad(x: Any, pads: Any, mode: str = "zeros") -> np.ndarray:
    """Pad the spatial axes of a channels-first array.

    Parameters
    ----------
    x : array_like, shape ``(N, C, *S)``
        Input; the two leading axes (batch, channels) are left untouched.
    pads : int, sequence of int, or sequence of ``(lo, hi)`` pairs
        Padding of each of the ``d = x.ndim - 2`` spatial axes: one int for all sides,
        one int per axis (both sides), or one ``(lo, hi)`` pair per axis.
    mode : {"zeros", "reflect", "replicate", "circular"}
        ``"zeros"`` pads with 0, ``"reflect"`` mirrors without repeating the edge
        (NumPy's ``"reflect"``), ``"replicate"`` repeats the edge (NumPy's ``"edge"``),
        ``"circular"`` wraps around (NumPy's ``"wrap"``).

    Returns
    -------
    numpy.ndarray, shape ``(N, C, *(S + lo + hi))``
        A new array; ``x`` is not modified.

    Examples
    --------
    >>> pad([[[1, 2, 3, 4]]], [(2, 2)], "reflect")
    array([[[3, 2, 1, 2, 3, 4, 3, 2]]])
    """
    op = "reference.pad"
    x = np.asarray(x)
    if x.ndim < 3:
        raise fail(op, f"`x` must have shape (N, C, *spatial) with at least one spatial "
                       f"axis, got shape {x.shape}")
    pairs = explicit_padding(pads, x.ndim - 2, op)
    return _pad(x, pairs, check_padding_mode(mode, op))


def _pad(x: np.ndarray, pads: Pads, mode: str) -> np.ndarray:
    """:func:`pad` on already validated arguments."""
    width = [(0, 0), (0, 0), *pads]
    return np.pad(x, width, mode=NUMPY_PAD_MODES[mode])


def _pad_source_indices(size: int, lo: int, hi: int, mode: str) -> np.ndarray:
    """Which input index each position of a padded axis copies (``mode != "zeros"``).

    ``np.pad(np.arange(I), (lo, hi), mode)``: for example ``I = 4``, ``(2, 2)``,
    ``"reflect"`` gives ``[2, 1, 0, 1, 2, 3, 2, 1]``.
    """
    return np.pad(np.arange(size), (lo, hi), mode=NUMPY_PAD_MODES[mode])


def _unpad_gradient(grad_padded: np.ndarray, pads: Pads, mode: str) -> np.ndarray:
    """The adjoint of :func:`_pad`: carry a gradient on ``xpad`` back onto ``x``.

    With zero padding the padded border holds constants, so the gradient of ``x`` is just
    the interior. With the other modes every padded element is a copy of some input
    element, and its gradient is added back onto that element. Padding is separable (each
    axis is padded from the result of the previous one), so the adjoint is taken one axis
    at a time.
    """
    grad = grad_padded
    for axis, (lo, hi) in enumerate(pads, start=2):
        size = grad.shape[axis] - lo - hi
        if mode == "zeros":
            grad = np.take(grad, np.arange(lo, lo + size), axis=axis)
            continue
        source = _pad_source_indices(size, lo, hi, mode)
        # Move the axis to the front, where np.add.at scatters whole slices:
        # out[source[j]] += g[j] for every padded position j.
        g = np.moveaxis(grad, axis, 0)
        out = np.zeros((size, *g.shape[1:]), dtype=grad.dtype)
        np.add.at(out, source, g)
        grad = np.moveaxis(out, 0, axis)
    return grad


# --------------------------------------------------------------------------------------
# Argument checks shared by the operations
# --------------------------------------------------------------------------------------


class ConvGeometry(NamedTuple):
    """Every size a convolution needs, normalised per spatial axis."""

    groups: int
    stride: tuple[int, ...]
    dilation: tuple[int, ...]
    pads: Pads
    kernel_sizes: tuple[int, ...]
    in_sizes: tuple[int, ...]
    out_sizes: tuple[int, ...]


def _check_groups(groups: Any, op: str) -> int:
    if not isinstance(groups, (int, np.integer)) or isinstance(groups, bool):
        raise fail(op, f"`groups` must be a positive int, got {groups!r}", TypeError)
    if groups < 1:
        raise fail(op, f"`groups` must be >= 1, got {groups}")
    return int(groups)


def _check_weight_rank(weight_shape: tuple[int, ...], op: str, layout: str) -> int:
    if len(weight_shape) < 3:
        raise fail(op, f"`weight` must have shape {layout} with at least one spatial axis, "
                       f"got shape {weight_shape}")
    if any(k < 1 for k in weight_shape):
        raise fail(op, f"`weight` must have no empty axis, got shape {weight_shape}")
    return len(weight_shape) - 2


def _check_input_rank(x_shape: tuple[int, ...], d: int, name: str, op: str) -> None:
    if len(x_shape) != d + 2:
        raise fail(op, f"`{name}` must be {d + 2}-D (N, C, *spatial) to match a weight with "
                       f"{d} spatial axes, got shape {x_shape}")


def _check_bias(bias: np.ndarray | None, channels: int, op: str) -> None:
    if bias is not None and bias.shape != (channels,):
        raise fail(op, f"`bias` must have shape ({channels},) (one value per output "
                       f"channel), got shape {bias.shape}")


def _conv_geometry(op: str, x_shape: tuple[int, ...], weight_shape: tuple[int, ...],
                   stride: Any, padding: Any, dilation: Any, groups: Any) -> ConvGeometry:
    """Validate a forward convolution's shapes and parameters."""
    d = _check_weight_rank(weight_shape, op, "(C_out, C_in // groups, *K)")
    _check_input_rank(x_shape, d, "x", op)
    groups = _check_groups(groups, op)
    c_in, c_out, c_per_group = x_shape[1], weight_shape[0], weight_shape[1]
    if c_in % groups:
        raise fail(op, f"`groups` (={groups}) must divide the input channels C_in={c_in}")
    if c_out % groups:
        raise fail(op, f"`groups` (={groups}) must divide the output channels "
                       f"C_out={c_out} (weight.shape[0])")
    if c_per_group * groups != c_in:
        raise fail(op, f"`weight.shape[1]` must be C_in // groups = {c_in} // {groups} = "
                       f"{c_in // groups}, got weight shape {weight_shape}")
    stride = per_axis(stride, d, "stride", op)
    dilation = per_axis(dilation, d, "dilation", op)
    in_sizes, kernel_sizes = tuple(x_shape[2:]), tuple(weight_shape[2:])
    pads = conv_padding(padding, in_sizes, kernel_sizes, stride, dilation, op)
    out_sizes = conv_output_shape(op, in_sizes, kernel_sizes, stride, dilation, pads)
    return ConvGeometry(groups, stride, dilation, pads, kernel_sizes, in_sizes, out_sizes)


def _conv_transpose_geometry(op: str, x_shape: tuple[int, ...], weight_shape: tuple[int, ...],
                             stride: Any, padding: Any, output_padding: Any, dilation: Any,
                             groups: Any) -> ConvGeometry:
    """Validate a transposed convolution's shapes and parameters."""
    d = _check_weight_rank(weight_shape, op, "(C_in, C_out // groups, *K)")
    _check_input_rank(x_shape, d, "x", op)
    groups = _check_groups(groups, op)
    c_in = x_shape[1]
    if weight_shape[0] != c_in:
        raise fail(op, f"`weight.shape[0]` must equal the input channels C_in={c_in}, got "
                       f"weight shape {weight_shape}")
    if c_in % groups:
        raise fail(op, f"`groups` (={groups}) must divide the input channels C_in={c_in}")
    stride = per_axis(stride, d, "stride", op)
    dilation = per_axis(dilation, d, "dilation", op)
    output_padding = per_axis(output_padding, d, "output_padding", op, minimum=0)
    pads = explicit_padding(padding, d, op)
    in_sizes, kernel_sizes = tuple(x_shape[2:]), tuple(weight_shape[2:])
    out_sizes = conv_transpose_output_shape(op, in_sizes, kernel_sizes, stride, dilation,
                                            pads, output_padding)
    return ConvGeometry(groups, stride, dilation, pads, kernel_sizes, in_sizes, out_sizes)


def _array(value: Any, name: str, op: str) -> np.ndarray:
    """Any array-like as an ndarray (no copy when it already is one)."""
    try:
        return np.asarray(value)
    except Exception as err:  # pragma: no cover - numpy's own message is kept
        raise fail(op, f"`{name}` must be array-like, got {type(value).__name__}",
                   TypeError) from err


def _shape(value: Any, name: str, op: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in value)
    except TypeError as err:
        raise fail(op, f"`{name}` must be a sequence of ints, got {value!r}", TypeError) from err


def _check_output_shape(grad_output: np.ndarray, expected: tuple[int, ...], op: str) -> None:
    if grad_output.shape != expected:
        raise fail(op, f"`grad_output` must have the shape of the operation's output, "
                       f"{expected}, got shape {grad_output.shape}")


# --------------------------------------------------------------------------------------
# Building blocks: kernel offsets, strided windows, groups
# --------------------------------------------------------------------------------------


def _kernel_offsets(kernel_sizes: Sequence[int]) -> Iterator[tuple[int, ...]]:
    """Every kernel multi-index ``k``, e.g. ``(0, 0), (0, 1), ..., (K0-1, K1-1)``."""
    return itertools.product(*(range(k) for k in kernel_sizes))


def _window(k: tuple[int, ...], geom: ConvGeometry, count: Sequence[int]) -> tuple:
    """Index of the elements ``s*i + r*k`` for ``i = 0 .. count-1`` on every spatial axis.

    ``a[_window(k, ...)]`` is the strided view of a padded array that kernel offset ``k``
    sees, one element per output position (``count`` per axis).
    """
    spatial = tuple(
        slice(r * kk, r * kk + s * (n - 1) + 1, s)
        for kk, s, r, n in zip(k, geom.stride, geom.dilation, count, strict=True)
    )
    return (slice(None), slice(None), *spatial)


def _split_groups(a: np.ndarray, groups: int, axis: int) -> np.ndarray:
    """Reshape channel axis ``axis`` of size ``C`` into ``(groups, C // groups)``."""
    shape = a.shape
    return a.reshape(*shape[:axis], groups, shape[axis] // groups, *shape[axis + 1:])


def _merge_groups(a: np.ndarray, axis: int) -> np.ndarray:
    """Undo :func:`_split_groups`: merge axes ``axis, axis + 1`` into one channel axis."""
    shape = a.shape
    return a.reshape(*shape[:axis], shape[axis] * shape[axis + 1], *shape[axis + 2:])


def _spatial_flip(weight: np.ndarray) -> np.ndarray:
    """The kernel reversed on every spatial axis (a view)."""
    return np.flip(weight, axis=tuple(range(2, weight.ndim)))


# In every einsum below: n = batch, g = group, c = input channel within its group,
# o = output channel within its group, "..." = the spatial axes (p: flattened into one).


def _correlate(xpad: np.ndarray, weight: np.ndarray, geom: ConvGeometry,
               dtype: np.dtype) -> np.ndarray:
    """``y[n, o, i] = sum_{c, k} w[o, c, k] * xpad[n, g(o)*Cig + c, s*i + r*k]``, no bias.

    ``xpad`` (N, C_in, *padded sizes), ``weight`` (C_out, C_in // groups, *K).
    """
    n, c_out, G = xpad.shape[0], weight.shape[0], geom.groups
    y = np.zeros((n, G, c_out // G, *geom.out_sizes), dtype=dtype)
    w = _split_groups(weight, G, axis=0)  # (G, Cog, Cig, *K)
    for k in _kernel_offsets(geom.kernel_sizes):
        xs = _split_groups(xpad[_window(k, geom, geom.out_sizes)], G, axis=1)  # (N,G,Cig,*O)
        y += np.einsum("ngc...,goc->ngo...", xs, w[(..., *k)])
    return _merge_groups(y, axis=1)


def _scatter(grad_y: np.ndarray, weight: np.ndarray, geom: ConvGeometry,
             padded_sizes: Sequence[int], dtype: np.dtype) -> np.ndarray:
    """The adjoint of :func:`_correlate` with respect to ``xpad``.

    ``gxpad[n, g*Cig + c, s*i + r*k] += sum_o grad_y[n, g*Cog + o, i] * w[g*Cog + o, c, k]``
    for every output position ``i`` and kernel offset ``k``. ``grad_y`` has the layout of
    the correlation's output (N, C_out, *O); the result has shape (N, C_in, *padded_sizes).
    """
    n, G = grad_y.shape[0], geom.groups
    c_in = weight.shape[1] * G
    gxpad = np.zeros((n, c_in, *padded_sizes), dtype=dtype)
    gy = _split_groups(grad_y, G, axis=1)  # (N, G, Cog, *O)
    w = _split_groups(weight, G, axis=0)  # (G, Cog, Cig, *K)
    for k in _kernel_offsets(geom.kernel_sizes):
        contribution = np.einsum("ngo...,goc->ngc...", gy, w[(..., *k)])
        gxpad[_window(k, geom, geom.out_sizes)] += _merge_groups(contribution, axis=1)
    return gxpad


def _correlate_weight_grad(xpad: np.ndarray, grad_y: np.ndarray, geom: ConvGeometry,
                           c_out: int, dtype: np.dtype) -> np.ndarray:
    """``gw[o, c, k] = sum_{n, i} grad_y[n, o, i] * xpad[n, g(o)*Cig + c, s*i + r*k]``.

    The gradient of :func:`_correlate` with respect to its weight, shape
    (C_out, C_in // groups, *K).
    """
    G = geom.groups
    c_per_group = xpad.shape[1] // G
    gw = np.zeros((G, c_out // G, c_per_group, *geom.kernel_sizes), dtype=dtype)
    # The sum runs over the batch and every output position: flatten the spatial axes
    # into one axis p of size prod(O).
    n, p = grad_y.shape[0], int(np.prod(geom.out_sizes))
    gy = grad_y.reshape(n, G, c_out // G, p)  # (N, G, Cog, P)
    for k in _kernel_offsets(geom.kernel_sizes):
        xs = xpad[_window(k, geom, geom.out_sizes)].reshape(n, G, c_per_group, p)  # (N,G,Cig,P)
        gw[(..., *k)] = np.einsum("ngop,ngcp->goc", gy, xs)
    return _merge_groups(gw, axis=0)


def _bias_grad(grad_y: np.ndarray) -> np.ndarray:
    """``gb[o] = sum_{n, i} grad_y[n, o, i]``."""
    return grad_y.sum(axis=(0, *range(2, grad_y.ndim)))


def _add_bias(y: np.ndarray, bias: np.ndarray | None) -> np.ndarray:
    if bias is not None:
        y += bias.reshape(1, -1, *([1] * (y.ndim - 2)))
    return y


# --------------------------------------------------------------------------------------
# Convolution
# --------------------------------------------------------------------------------------


def conv(x: Any, weight: Any, bias: Any = None, *, stride: Any = 1, padding: Any = 0,
         dilation: Any = 1, groups: int = 1, padding_mode: str = "zeros",
         flip: bool = False) -> np.ndarray:
    """N-D convolution (cross-correlation, as in deep learning), from the definition.

    ``y[n, o, i] = b[o] + sum_{c, k} w[o, c, k] * xpad[n, g(o)*C_in/groups + c, s*i + r*k]``
    with ``g(o) = o // (C_out / groups)``.

    Parameters
    ----------
    x : array_like, shape ``(N, C_in, *S)``
        Input with ``d`` spatial axes.
    weight : array_like, shape ``(C_out, C_in // groups, *K)``
        Kernels; ``d = weight.ndim - 2``.
    bias : array_like, shape ``(C_out,)``, optional
        Added to every output position of its channel.
    stride, dilation : int or sequence of d ints
        Step between output positions and between kernel taps (>= 1).
    padding : int, sequence of d ints, sequence of d ``(lo, hi)`` pairs, or str
        ``"valid"`` (none), ``"same"`` (output size ``ceil(I / s)``; the total padding is
        split as TensorFlow does, the extra element on the high side) or ``"full"``
        (``r*(K-1)`` on each side).
    groups : int
        Channels are split into ``groups`` independent convolutions; ``groups == C_in``
        is a depthwise convolution.
    padding_mode : {"zeros", "reflect", "replicate", "circular"}
        What the padding holds; see :func:`pad`.
    flip : bool
        If True, reverse the kernel on every spatial axis first: true convolution.

    Returns
    -------
    numpy.ndarray, shape ``(N, C_out, *O)``
        ``O = floor((I + lo + hi - r*(K-1) - 1) / s) + 1`` per axis, in the promoted dtype
        of the inputs (integers become float64).

    Examples
    --------
    >>> conv([[[1, 2, 3, 4]]], [[[1, 0, -1]]])
    array([[[-2., -2.]]])
    """
    op = "reference.conv"
    x, weight = _array(x, "x", op), _array(weight, "weight", op)
    bias = None if bias is None else _array(bias, "bias", op)
    geom = _conv_geometry(op, x.shape, weight.shape, stride, padding, dilation, groups)
    mode = check_padding_mode(padding_mode, op)
    _check_bias(bias, weight.shape[0], op)
    dtype = result_dtype(op, x=x, weight=weight, bias=bias)

    w = _spatial_flip(weight) if flip else weight
    xpad = _pad(x.astype(dtype, copy=False), geom.pads, mode)
    y = _correlate(xpad, w.astype(dtype, copy=False), geom, dtype)
    return _add_bias(y, None if bias is None else bias.astype(dtype, copy=False))


def convolve(x: Any, weight: Any, bias: Any = None, **kwargs: Any) -> np.ndarray:
    """True N-D convolution: :func:`conv` with ``flip=True`` (the kernel reversed).

    ``y[n, o, i] = b[o] + sum_{c, k} w[o, c, K-1-k] * xpad[n, g(o)*C_in/groups + c, s*i + r*k]``

    Parameters
    ----------
    x : array_like, shape ``(N, C_in, *S)``
    weight : array_like, shape ``(C_out, C_in // groups, *K)``
    bias : array_like, shape ``(C_out,)``, optional
    **kwargs
        ``stride``, ``padding``, ``dilation``, ``groups``, ``padding_mode`` as in
        :func:`conv`.

    Returns
    -------
    numpy.ndarray, shape ``(N, C_out, *O)``

    Examples
    --------
    With ``padding="full"`` a single-channel 1-D call is :func:`numpy.convolve`:

    >>> convolve([[[1, 2, 3]]], [[[1, 1]]], padding="full")
    array([[[1., 3., 5., 3.]]])
    """
    if "flip" in kwargs:
        raise fail("reference.convolve", "`flip` cannot be given: convolve always flips the "
                                         "kernel (use conv for cross-correlation)", TypeError)
    return conv(x, weight, bias, flip=True, **kwargs)


def conv_grad_input(grad_output: Any, weight: Any, input_shape: Sequence[int], *,
                    stride: Any = 1, padding: Any = 0, dilation: Any = 1, groups: int = 1,
                    padding_mode: str = "zeros", flip: bool = False) -> np.ndarray:
    """Gradient of :func:`conv` with respect to its input.

    Every output gradient is scattered back through the kernel onto the padded input,
    ``gxpad[n, g*Cig + c, s*i + r*k] += grad_output[n, o, i] * w[o, c, k]`` (for ``o`` in
    group ``g``), then the padding is undone: with zero padding the border is dropped;
    with the other modes each padded element's gradient is added onto the input element
    it copied.

    Parameters
    ----------
    grad_output : array_like, shape ``(N, C_out, *O)``
        Gradient of a scalar loss with respect to the convolution's output.
    weight : array_like, shape ``(C_out, C_in // groups, *K)``
        The weight passed to :func:`conv`.
    input_shape : sequence of int, ``(N, C_in, *S)``
        Shape of the convolution's input.
    stride, padding, dilation, groups, padding_mode, flip
        As in :func:`conv`.

    Returns
    -------
    numpy.ndarray, shape ``input_shape``
    """
    op = "reference.conv_grad_input"
    grad_output, weight = _array(grad_output, "grad_output", op), _array(weight, "weight", op)
    input_shape = _shape(input_shape, "input_shape", op)
    geom = _conv_geometry(op, input_shape, weight.shape, stride, padding, dilation, groups)
    mode = check_padding_mode(padding_mode, op)
    _check_output_shape(grad_output, (input_shape[0], weight.shape[0], *geom.out_sizes), op)
    dtype = result_dtype(op, grad_output=grad_output, weight=weight)

    w = _spatial_flip(weight) if flip else weight
    padded_sizes = [i + lo + hi
                    for i, (lo, hi) in zip(geom.in_sizes, geom.pads, strict=True)]
    gxpad = _scatter(grad_output.astype(dtype, copy=False), w.astype(dtype, copy=False),
                     geom, padded_sizes, dtype)
    return _unpad_gradient(gxpad, geom.pads, mode)


def conv_grad_weight(grad_output: Any, x: Any, weight_shape: Sequence[int], *,
                     stride: Any = 1, padding: Any = 0, dilation: Any = 1, groups: int = 1,
                     padding_mode: str = "zeros", flip: bool = False) -> np.ndarray:
    """Gradient of :func:`conv` with respect to its weight.

    ``gw[o, c, k] = sum_{n, i} grad_output[n, o, i] * xpad[n, g(o)*C_in/groups + c, s*i + r*k]``:
    the padded input correlated with the output gradient. With ``flip=True`` the result
    is the gradient with respect to the weight as passed (not the flipped one).

    Parameters
    ----------
    grad_output : array_like, shape ``(N, C_out, *O)``
        Gradient of a scalar loss with respect to the convolution's output.
    x : array_like, shape ``(N, C_in, *S)``
        The convolution's input.
    weight_shape : sequence of int, ``(C_out, C_in // groups, *K)``
        Shape of the weight.
    stride, padding, dilation, groups, padding_mode, flip
        As in :func:`conv`.

    Returns
    -------
    numpy.ndarray, shape ``weight_shape``
    """
    op = "reference.conv_grad_weight"
    grad_output, x = _array(grad_output, "grad_output", op), _array(x, "x", op)
    weight_shape = _shape(weight_shape, "weight_shape", op)
    geom = _conv_geometry(op, x.shape, weight_shape, stride, padding, dilation, groups)
    mode = check_padding_mode(padding_mode, op)
    _check_output_shape(grad_output, (x.shape[0], weight_shape[0], *geom.out_sizes), op)
    dtype = result_dtype(op, grad_output=grad_output, x=x)

    xpad = _pad(x.astype(dtype, copy=False), geom.pads, mode)
    gw = _correlate_weight_grad(xpad, grad_output.astype(dtype, copy=False), geom,
                                weight_shape[0], dtype)
    # y depends on w only through flip(w); flipping is its own adjoint.
    return _spatial_flip(gw).copy() if flip else gw


def conv_backward(grad_output: Any, x: Any, weight: Any, bias: Any = None, *,
                  stride: Any = 1, padding: Any = 0, dilation: Any = 1, groups: int = 1,
                  padding_mode: str = "zeros", flip: bool = False
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """All three gradients of :func:`conv`.

    Parameters
    ----------
    grad_output : array_like, shape ``(N, C_out, *O)``
        Gradient of a scalar loss with respect to ``conv(x, weight, bias, ...)``.
    x : array_like, shape ``(N, C_in, *S)``
    weight : array_like, shape ``(C_out, C_in // groups, *K)``
    bias : array_like, shape ``(C_out,)``, optional
        Only its presence matters: it decides whether ``grad_bias`` is computed.
    stride, padding, dilation, groups, padding_mode, flip
        As in :func:`conv`.

    Returns
    -------
    grad_x : numpy.ndarray, shape ``(N, C_in, *S)``
        See :func:`conv_grad_input`.
    grad_weight : numpy.ndarray, shape ``(C_out, C_in // groups, *K)``
        See :func:`conv_grad_weight`.
    grad_bias : numpy.ndarray, shape ``(C_out,)``, or None
        ``sum_{n, i} grad_output[n, o, i]``; None when ``bias`` is None.
    """
    op = "reference.conv_backward"
    grad_output = _array(grad_output, "grad_output", op)
    x, weight = _array(x, "x", op), _array(weight, "weight", op)
    bias = None if bias is None else _array(bias, "bias", op)
    geom = _conv_geometry(op, x.shape, weight.shape, stride, padding, dilation, groups)
    _check_bias(bias, weight.shape[0], op)
    _check_output_shape(grad_output, (x.shape[0], weight.shape[0], *geom.out_sizes), op)
    dtype = result_dtype(op, grad_output=grad_output, x=x, weight=weight, bias=bias)

    gy, x, weight = (a.astype(dtype, copy=False) for a in (grad_output, x, weight))

    params = dict(stride=stride, padding=padding, dilation=dilation, groups=groups,
                  padding_mode=padding_mode, flip=flip)
    grad_x = conv_grad_input(gy, weight, x.shape, **params)
    grad_w = conv_grad_weight(gy, x, weight.shape, **params)
    grad_b = None if bias is None else _bias_grad(gy)
    return grad_x, grad_w, grad_b


# --------------------------------------------------------------------------------------
# Transposed convolution
# --------------------------------------------------------------------------------------


def _transpose_frame(geom: ConvGeometry) -> tuple[list[int], tuple]:
    """The canvas a transposed convolution scatters onto, and where its output lies in it.

    Input element ``i`` and kernel offset ``k`` land at ``s*i + r*k`` on a canvas that
    starts ``lo`` before the output, so the output is ``canvas[lo : lo + O]`` per axis.
    The canvas is large enough for every scattered element and for the whole output
    (``output_padding`` can make the output reach past the last scattered element).
    """
    per_axis_sizes = zip(geom.in_sizes, geom.kernel_sizes, geom.stride, geom.dilation,
                         geom.pads, geom.out_sizes, strict=True)
    sizes = [max((i - 1) * s + r * (k - 1) + 1, lo + o)
             for i, k, s, r, (lo, _), o in per_axis_sizes]
    crop = tuple(slice(lo, lo + o)
                 for (lo, _), o in zip(geom.pads, geom.out_sizes, strict=True))
    return sizes, (slice(None), slice(None), *crop)


def conv_transpose(x: Any, weight: Any, bias: Any = None, *, stride: Any = 1,
                   padding: Any = 0, output_padding: Any = 0, dilation: Any = 1,
                   groups: int = 1) -> np.ndarray:
    """N-D transposed convolution, the adjoint of :func:`conv` with respect to its input.

    Each input element scatters a scaled copy of its kernels into the output:
    ``y[n, g*Cog + o, s*i + r*k - lo] += x[n, g*Cig + c, i] * w[g*Cig + c, o, k]``, for
    every position that lands inside ``[0, O)``, plus ``bias[o]``
    (``Cig = C_in / groups``, ``Cog = C_out / groups``). Shapes follow PyTorch's
    ``conv_transpose1d/2d/3d``.

    Parameters
    ----------
    x : array_like, shape ``(N, C_in, *S)``
    weight : array_like, shape ``(C_in, C_out // groups, *K)``
        Note the order: input channels first, as in PyTorch. This is the layout of the
        weight of the :func:`conv` that this operation is the adjoint of.
    bias : array_like, shape ``(C_out,)``, optional
    stride, dilation : int or sequence of d ints
        Those of the forward convolution (>= 1).
    padding : int, sequence of d ints, or sequence of d ``(lo, hi)`` pairs
        The forward convolution's zero padding; it is cropped off the output.
    output_padding : int or sequence of d ints
        Extra size on the high side of each axis (smaller than stride or dilation),
        which picks one of the input sizes a strided convolution maps to the same size.
    groups : int

    Returns
    -------
    numpy.ndarray, shape ``(N, C_out, *O)``
        ``O = (I-1)*s - lo - hi + r*(K-1) + 1 + output_padding`` per axis.

    Examples
    --------
    >>> conv_transpose([[[1, 2]]], [[[1, 1, 1]]], stride=2)
    array([[[1., 1., 3., 2., 2.]]])
    """
    op = "reference.conv_transpose"
    x, weight = _array(x, "x", op), _array(weight, "weight", op)
    bias = None if bias is None else _array(bias, "bias", op)
    geom = _conv_transpose_geometry(op, x.shape, weight.shape, stride, padding,
                                    output_padding, dilation, groups)
    _check_bias(bias, weight.shape[1] * geom.groups, op)
    dtype = result_dtype(op, x=x, weight=weight, bias=bias)

    # Scattering x through w is exactly the input-gradient scatter of a convolution whose
    # input is the canvas, whose weight is w (C_out_fwd = C_in here) and whose output
    # positions are the elements of x.
    canvas_sizes, crop = _transpose_frame(geom)
    scatter_geom = geom._replace(out_sizes=geom.in_sizes)
    canvas = _scatter(x.astype(dtype, copy=False), weight.astype(dtype, copy=False),
                      scatter_geom, canvas_sizes, dtype)
    y = canvas[crop].copy()
    return _add_bias(y, None if bias is None else bias.astype(dtype, copy=False))


def conv_transpose_backward(grad_output: Any, x: Any, weight: Any, bias: Any = None, *,
                            stride: Any = 1, padding: Any = 0, output_padding: Any = 0,
                            dilation: Any = 1, groups: int = 1
                            ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """All three gradients of :func:`conv_transpose`.

    Put ``grad_output`` back on the canvas the forward pass scattered onto (zero outside
    the output), then gather:

    - ``gx[n, g*Cig + c, i] = sum_{o, k} w[g*Cig + c, o, k] * gcanvas[n, g*Cog + o, s*i + r*k]``
      (a forward convolution of the output gradient),
    - ``gw[g*Cig + c, o, k] = sum_{n, i} x[n, g*Cig + c, i] * gcanvas[n, g*Cog + o, s*i + r*k]``,
    - ``gb[o] = sum_{n, j} grad_output[n, o, j]``.

    Parameters
    ----------
    grad_output : array_like, shape ``(N, C_out, *O)``
        Gradient of a scalar loss with respect to ``conv_transpose(x, weight, ...)``.
    x : array_like, shape ``(N, C_in, *S)``
    weight : array_like, shape ``(C_in, C_out // groups, *K)``
    bias : array_like, shape ``(C_out,)``, optional
        Only its presence matters: it decides whether ``grad_bias`` is computed.
    stride, padding, output_padding, dilation, groups
        As in :func:`conv_transpose`.

    Returns
    -------
    grad_x : numpy.ndarray, shape ``(N, C_in, *S)``
    grad_weight : numpy.ndarray, shape ``(C_in, C_out // groups, *K)``
    grad_bias : numpy.ndarray, shape ``(C_out,)``, or None
    """
    op = "reference.conv_transpose_backward"
    grad_output = _array(grad_output, "grad_output", op)
    x, weight = _array(x, "x", op), _array(weight, "weight", op)
    bias = None if bias is None else _array(bias, "bias", op)
    geom = _conv_transpose_geometry(op, x.shape, weight.shape, stride, padding,
                                    output_padding, dilation, groups)
    c_out = weight.shape[1] * geom.groups
    _check_bias(bias, c_out, op)
    _check_output_shape(grad_output, (x.shape[0], c_out, *geom.out_sizes), op)
    dtype = result_dtype(op, grad_output=grad_output, x=x, weight=weight, bias=bias)
    gy, x, weight = (a.astype(dtype, copy=False) for a in (grad_output, x, weight))

    canvas_sizes, crop = _transpose_frame(geom)
    gcanvas = np.zeros((x.shape[0], c_out, *canvas_sizes), dtype=dtype)
    gcanvas[crop] = gy
    # The forward pass is the input-gradient scatter of a convolution of the canvas
    # (outputs at the positions of x); its gradients are that convolution's forward
    # correlation (for x) and weight gradient (for w).
    gather_geom = geom._replace(out_sizes=geom.in_sizes)
    # Its weight layout (C_in, C_out // groups, *K) is already that of a convolution from
    # the C_out channels of the canvas to the C_in channels of x.
    grad_x = _correlate(gcanvas, weight, gather_geom, dtype)
    grad_w = _correlate_weight_grad(gcanvas, x, gather_geom, x.shape[1], dtype)
    grad_b = None if bias is None else _bias_grad(gy)
    return grad_x, grad_w, grad_b

