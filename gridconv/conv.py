"""Public convolution API: ``conv``, ``conv_transpose`` and their gradients.

The functions here only normalise arguments (see :mod:`gridconv._params`), lift 1-D and
2-D problems to 3-D ones with unit axes, and call the engine of :mod:`gridconv._cpu`.
Every gradient is computed by the engine's kernels: the input gradient is the gather
kernel with the roles of stride and dilation exchanged (one call per stride phase), the
weight gradient is its twin that accumulates patches against the output gradient.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing  # noqa: F401  (np.typing for the annotations)

from . import _algorithms, _fft
from . import _geometry as geo
from ._cpu import driver
from ._dispatch import dispatch
from ._params import (
    as_array,
    check_circular,
    check_ndim,
    contiguous,
    conv_padding,
    explicit_padding,
    fail,
    padding_mode,
    per_axis,
    result_dtype,
)
from ._shapes import conv_output_shape, conv_transpose_output_shape

ArrayLike = np.typing.ArrayLike

_DOC_PARAMS = """\
    stride : int or tuple of int
        Step between output positions, per spatial axis (>= 1).
    padding : int, tuple, tuple of (lo, hi) pairs, or {"valid", "same", "full"}
        Padding of the input per spatial axis. ``"same"`` gives ``ceil(I / stride)``
        outputs, the total split as TensorFlow does (extra on the high side);
        ``"full"`` pads ``dilation * (K - 1)`` on both sides.
    dilation : int or tuple of int
        Spacing between kernel taps (>= 1).
    groups : int
        Input and output channels are split into ``groups`` independent groups;
        ``groups == C_in`` is a depthwise convolution.
    padding_mode : {"zeros", "reflect", "replicate", "circular"}
        Values outside the input: zeros, mirrored without repeating the edge (NumPy's
        ``reflect``), the edge repeated, or wrapped around."""


def _doc(func):
    func.__doc__ = func.__doc__.replace("{params}", _DOC_PARAMS)
    return func


@dataclass(frozen=True)
class _ConvSpec:
    """A validated convolution: everything but the arrays."""

    nd: int
    groups: int
    stride: tuple
    dilation: tuple
    pads: tuple  # per-axis (lo, hi)
    mode: str
    flip: bool
    in_shape: tuple  # (N, C_in, *S)
    w_shape: tuple  # (C_out, C_in // groups, *K)
    out_shape: tuple  # (N, C_out, *O)
    dtype: np.dtype


def _lift(shape: tuple, nd: int) -> tuple:
    """(N, C, *S) -> (N, C, 1.., *S) with 3 spatial axes."""
    return tuple(shape[:2]) + (1,) * (3 - nd) + tuple(shape[2:])


def _lift3(values: tuple, fill, nd: int) -> tuple:
    return (fill,) * (3 - nd) + tuple(values)


def _check_weight(op: str, weight: np.ndarray, what: str) -> int:
    if weight.ndim not in (3, 4, 5):
        raise fail(op, f"`weight` must be 3-D, 4-D or 5-D {what} for 1, 2 or 3 spatial axes, "
                       f"got shape {weight.shape}")
    if min(weight.shape) < 1:
        raise fail(op, f"`weight` must have no empty axis, got shape {weight.shape}")
    return weight.ndim - 2


def _check_groups(op: str, groups, c_in: int, c_out: int) -> int:
    if isinstance(groups, bool) or not isinstance(groups, (int, np.integer)):
        raise fail(op, f"`groups` must be an int, got {groups!r}", TypeError)
    if groups < 1:
        raise fail(op, f"`groups` must be >= 1, got {groups}")
    if c_in % groups:
        raise fail(op, f"`in_channels` (={c_in}) must be divisible by `groups` (={groups})")
    if c_out % groups:
        raise fail(op, f"`out_channels` (={c_out}) must be divisible by `groups` (={groups})")
    return int(groups)


def _check_bias(op: str, bias, channels: int):
    if bias is None:
        return None
    bias = as_array(bias, "bias", op)
    if bias.shape != (channels,):
        raise fail(op, f"`bias` must have shape ({channels},) (one value per output channel), "
                       f"got {bias.shape}")
    return bias


def _conv_spec(op, x, weight, bias, stride, padding, dilation, groups, padding_mode_,
               flip, *, in_shape=None, nd_required=None) -> _ConvSpec:
    nd = _check_weight(op, weight, "(C_out, C_in // groups, *K)")
    if nd_required is not None and nd != nd_required:
        raise fail(op, f"`weight` must be {nd_required + 2}-D (C_out, C_in // groups, *K) for "
                       f"{nd_required} spatial axes, got shape {weight.shape}")
    shape = tuple(in_shape) if in_shape is not None else x.shape
    if len(shape) != nd + 2:
        raise fail(op, f"`x` must be {nd + 2}-D (N, C_in, *spatial) to match the "
                       f"{nd + 2}-D weight, got shape {shape}")
    if min(shape[1:]) < 1:
        raise fail(op, f"`x` must have channels and non-empty spatial axes, got shape {shape}")
    c_out, c_per_group = weight.shape[:2]
    g = _check_groups(op, groups, shape[1], c_out)
    if shape[1] != c_per_group * g:
        raise fail(op, f"`x` has {shape[1]} input channels but `weight` expects "
                       f"{c_per_group * g} (weight.shape[1]={c_per_group} x groups={g})")
    if not isinstance(flip, (bool, np.bool_)):
        raise fail(op, f"`flip` must be a bool, got {flip!r}", TypeError)
    st = per_axis(stride, nd, "stride", op)
    dl = per_axis(dilation, nd, "dilation", op)
    ks = weight.shape[2:]
    pads = conv_padding(padding, shape[2:], ks, st, dl, op)
    mode = padding_mode(padding_mode_, op)
    out = conv_output_shape(op, shape[2:], ks, st, dl, pads)
    check_circular(op, mode, shape[2:], pads)
    return _ConvSpec(nd, g, st, dl, pads, mode, bool(flip), shape, weight.shape,
                     (shape[0], c_out) + out, None)


def _forward_axes(spec: _ConvSpec, sizes=None) -> list:
    sizes = sizes if sizes is not None else spec.in_shape[2:]
    axes = [geo.forward_axis(i, o, k, s, r, lo, hi, spec.mode)
            for i, o, k, s, r, (lo, hi) in zip(sizes, spec.out_shape[2:], spec.w_shape[2:],
                                               spec.stride, spec.dilation, spec.pads)]
    return [geo.unit_axis()] * (3 - spec.nd) + axes


def _w6(weight: np.ndarray, groups: int, nd: int, *, swap: bool) -> np.ndarray:
    """(G*A, B, *K) -> (G, A, B, Kz, Ky, Kx), or (G, B, A, ...) when ``swap``."""
    w = weight.reshape((groups, weight.shape[0] // groups, weight.shape[1])
                       + _lift3(weight.shape[2:], 1, nd))
    return w.swapaxes(1, 2) if swap else w


def _prepare(dtype, **arrays):
    """Contiguous copies in the computation dtype (never the caller's buffer mutated)."""
    return [None if a is None else contiguous(a, dtype) for a in arrays.values()]


def _flip(weight: np.ndarray, nd: int) -> np.ndarray:
    return weight[(slice(None), slice(None)) + (slice(None, None, -1),) * nd]


# --------------------------------------------------------------------------- forward ---

def _finite(a: np.ndarray) -> bool:
    """Whether every element is finite (a sum: no temporary the size of ``a``; a sum
    that overflows answers False, which only costs the faster path)."""
    return bool(np.isfinite(a.sum()))


def _conv_forward(x, weight, bias, spec: _ConvSpec) -> np.ndarray:
    w = _flip(weight, spec.nd) if spec.flip else weight
    # The FFT mixes every input into every output: one infinity or NaN would turn the
    # whole result into NaN. Such inputs take the direct sums.
    if (_algorithms.enabled("fft")
            and _fft.fft_is_faster(spec.in_shape, spec.w_shape, spec.out_shape, spec.pads,
                                   spec.dilation, spec.groups)
            and _finite(w) and _finite(x)):
        return _fft.conv_fft(x, w, bias, stride=spec.stride, pads=spec.pads,
                             dilation=spec.dilation, groups=spec.groups, mode=spec.mode)
    x5 = x.reshape(_lift(x.shape, spec.nd))
    out = np.empty(_lift(spec.out_shape, spec.nd), dtype=x.dtype)
    w6 = _w6(np.ascontiguousarray(w), spec.groups, spec.nd, swap=False)
    driver.gather(x5, w6, bias, out, _forward_axes(spec))
    return out.reshape(spec.out_shape)


@_doc
@dispatch
def conv(x: ArrayLike, weight: ArrayLike, bias: ArrayLike | None = None, *, stride=1,
         padding=0, dilation=1, groups: int = 1, padding_mode: str = "zeros",
         flip: bool = False) -> np.ndarray:
    """N-dimensional convolution (cross-correlation, as in deep learning).

    ``y[n, o, i] = bias[o] + sum_{c, k} weight[o, c, k] * xpad[n, g(o)*C_in/groups + c,
    stride*i + dilation*k]`` over multi-indices ``i``, ``k``.

    Parameters
    ----------
    x : array, shape (N, C_in, *S)
        Input; the spatial rank (1, 2 or 3) is ``weight.ndim - 2``.
    weight : array, shape (C_out, C_in // groups, *K)
    bias : array, shape (C_out,), optional
{params}
    flip : bool
        ``True`` reverses the kernel on every spatial axis: a true convolution.

    Returns
    -------
    y : ndarray, shape (N, C_out, *O), the input's (promoted) dtype
        ``O = floor((I + lo + hi - dilation*(K-1) - 1) / stride) + 1`` per axis.

    Examples
    --------
    >>> import numpy as np, gridconv
    >>> x = np.arange(5.0).reshape(1, 1, 5)
    >>> gridconv.conv(x, np.array([[[1.0, 0.0, -1.0]]]))
    array([[[-2., -2., -2.]]])
    """
    op = "conv"
    x, weight = as_array(x, "x", op), as_array(weight, "weight", op)
    spec = _conv_spec(op, x, weight, bias, stride, padding, dilation, groups, padding_mode,
                      flip)
    bias = _check_bias(op, bias, spec.w_shape[0])
    dtype = result_dtype(op, x=x, weight=weight, bias=bias)
    x, weight, bias = _prepare(dtype, x=x, weight=weight, bias=bias)
    return _conv_forward(x, weight, bias, spec)


def _ranked(nd: int):
    def f(x, weight, bias=None, **kwargs):
        op = f"conv{nd}d"
        # Keep a Dask or device weight as it is, so that ``conv`` routes it.
        w = weight if hasattr(weight, "ndim") else as_array(weight, "weight", op)
        if w.ndim != nd + 2:
            raise fail(op, f"`weight` must be {nd + 2}-D (C_out, C_in // groups, *K) for "
                           f"{nd} spatial axes, got shape {tuple(w.shape)}")
        return conv(x, w, bias, **kwargs)

    f.__name__ = f.__qualname__ = f"conv{nd}d"
    f.__doc__ = (f"{nd}-D convolution: :func:`conv` with the weight's rank checked "
                 f"(``weight`` is {nd + 2}-D).")
    return f


conv1d = _ranked(1)
conv2d = _ranked(2)
conv3d = _ranked(3)


def convolve(x: ArrayLike, weight: ArrayLike, bias: ArrayLike | None = None,
             **kwargs) -> np.ndarray:
    """True convolution (the kernel reversed on every spatial axis): ``conv(..., flip=True)``."""
    return conv(x, weight, bias, flip=True, **kwargs)


# -------------------------------------------------------------------------- backward ---

def _input_grad(gout, weight, spec: _ConvSpec) -> np.ndarray:
    """Gradient w.r.t. the conv input (zero padding in the engine; other modes fold the
    padded-grid gradient back onto the source)."""
    nd, g = spec.nd, spec.groups
    w = _flip(weight, nd) if spec.flip else weight
    w6 = np.ascontiguousarray(_w6(w, g, nd, swap=True))
    gout5 = np.ascontiguousarray(gout, dtype=spec.dtype).reshape(_lift(gout.shape, nd))
    sizes = spec.in_shape[2:]
    if spec.mode == "zeros":
        geom_sizes, los = sizes, [lo for lo, _ in spec.pads]
    else:  # gradient over the padded grid, then folded back
        geom_sizes = tuple(i + lo + hi for i, (lo, hi) in zip(sizes, spec.pads))
        los = [0] * nd
    geom = [(1, 1, 1, 1, 1, 0)] * (3 - nd) + [
        (i, o, k, s, r, lo) for i, o, k, s, r, lo in
        zip(geom_sizes, spec.out_shape[2:], spec.w_shape[2:], spec.stride, spec.dilation, los)]
    shape5 = _lift(spec.in_shape[:2] + tuple(geom_sizes), nd)
    dst = np.empty(shape5, dtype=spec.dtype)
    driver.input_grad(gout5, w6, None, dst, geom)
    if spec.mode != "zeros":
        maps = [np.zeros(1, np.int64)] * (3 - nd) + [
            geo.index_map(i, lo, hi, spec.mode) for i, (lo, hi) in zip(sizes, spec.pads)]
        dst = driver.pad_adjoint(dst, _lift(spec.in_shape, nd), maps)
    return dst.reshape(spec.in_shape)


def _weight_grad(gout, x, spec: _ConvSpec) -> np.ndarray:
    nd = spec.nd
    x5 = x.reshape(_lift(x.shape, nd))
    g5 = np.ascontiguousarray(gout, dtype=spec.dtype).reshape(_lift(gout.shape, nd))
    gw = driver.weight_grad(x5, g5, spec.groups, _forward_axes(spec))
    gw = gw.reshape(spec.w_shape)
    return np.ascontiguousarray(_flip(gw, nd)) if spec.flip else gw


def _check_gout(op: str, gout, shape, dtype) -> np.ndarray:
    gout = as_array(gout, "grad_output", op)
    if tuple(gout.shape) != tuple(shape):
        raise fail(op, f"`grad_output` must have the output's shape {tuple(shape)}, "
                       f"got {gout.shape}")
    if gout.dtype.kind not in "biuf":
        raise fail(op, f"`grad_output` must hold real numbers, got dtype {gout.dtype}",
                   TypeError)
    return contiguous(gout, dtype)


@_doc
@dispatch
def conv_backward(grad_output: ArrayLike, x: ArrayLike, weight: ArrayLike,
                  bias: ArrayLike | None = None, *, stride=1, padding=0, dilation=1,
                  groups: int = 1, padding_mode: str = "zeros", flip: bool = False):
    """Gradients of :func:`conv` with respect to its inputs.

    Parameters
    ----------
    grad_output : array, shape (N, C_out, *O)
        Gradient of the loss with respect to ``conv(x, weight, bias, ...)``.
    x, weight, bias : the inputs of the forward call.
{params}
    flip : bool
        As in :func:`conv`.

    Returns
    -------
    grad_x : ndarray, shape of ``x``
    grad_weight : ndarray, shape of ``weight``
    grad_bias : ndarray of shape (C_out,), or None when ``bias`` is None
    """
    op = "conv_backward"
    x, weight = as_array(x, "x", op), as_array(weight, "weight", op)
    spec = _conv_spec(op, x, weight, bias, stride, padding, dilation, groups, padding_mode,
                      flip)
    bias = _check_bias(op, bias, spec.w_shape[0])
    dtype = result_dtype(op, x=x, weight=weight, bias=bias)
    spec = _with_dtype(spec, dtype)
    gout = _check_gout(op, grad_output, spec.out_shape, dtype)
    x, weight = _prepare(dtype, x=x, weight=weight)
    gx = _input_grad(gout, weight, spec)
    gw = _weight_grad(gout, x, spec)
    gb = None if bias is None else driver.bias_grad(_lift_arr(gout, spec.nd))
    return gx, gw, gb


def _with_dtype(spec: _ConvSpec, dtype) -> _ConvSpec:
    return _ConvSpec(**{**spec.__dict__, "dtype": np.dtype(dtype)})


def _lift_arr(a: np.ndarray, nd: int) -> np.ndarray:
    return a.reshape(_lift(a.shape, nd))


def _shape_arg(op: str, shape, name: str, ndim: int) -> tuple:
    try:
        shape = tuple(int(s) for s in shape)
    except TypeError as err:
        raise fail(op, f"`{name}` must be a sequence of ints, got {shape!r}", TypeError) from err
    if len(shape) != ndim:
        raise fail(op, f"`{name}` must have {ndim} entries, got {shape}")
    return shape


@_doc
@dispatch
def conv_grad_input(grad_output: ArrayLike, weight: ArrayLike, input_shape, *, stride=1,
                    padding=0, dilation=1, groups: int = 1, padding_mode: str = "zeros",
                    flip: bool = False) -> np.ndarray:
    """Gradient of :func:`conv` with respect to its input ``x`` of shape ``input_shape``.

    Parameters
    ----------
    grad_output : array, shape (N, C_out, *O)
    weight : array, shape (C_out, C_in // groups, *K)
    input_shape : tuple
        ``x.shape`` of the forward call, ``(N, C_in, *S)``.
{params}
    flip : bool
        As in :func:`conv`.

    Returns
    -------
    grad_x : ndarray, shape ``input_shape``
    """
    op = "conv_grad_input"
    weight = as_array(weight, "weight", op)
    input_shape = _shape_arg(op, input_shape, "input_shape", weight.ndim)
    spec = _conv_spec(op, None, weight, None, stride, padding, dilation, groups, padding_mode,
                      flip, in_shape=input_shape)
    gout = as_array(grad_output, "grad_output", op)
    dtype = result_dtype(op, grad_output=gout, weight=weight)
    spec = _with_dtype(spec, dtype)
    gout = _check_gout(op, gout, spec.out_shape, dtype)
    (weight,) = _prepare(dtype, weight=weight)
    return _input_grad(gout, weight, spec)


@_doc
@dispatch
def conv_grad_weight(grad_output: ArrayLike, x: ArrayLike, weight_shape, *, stride=1,
                     padding=0, dilation=1, groups: int = 1, padding_mode: str = "zeros",
                     flip: bool = False) -> np.ndarray:
    """Gradient of :func:`conv` with respect to its weight of shape ``weight_shape``.

    Parameters
    ----------
    grad_output : array, shape (N, C_out, *O)
    x : array, shape (N, C_in, *S)
    weight_shape : tuple
        ``(C_out, C_in // groups, *K)``.
{params}
    flip : bool
        As in :func:`conv`.

    Returns
    -------
    grad_weight : ndarray, shape ``weight_shape``
    """
    op = "conv_grad_weight"
    x = as_array(x, "x", op)
    weight_shape = _shape_arg(op, weight_shape, "weight_shape", x.ndim)
    probe = np.broadcast_to(np.zeros((), dtype=x.dtype), weight_shape)
    spec = _conv_spec(op, x, probe, None, stride, padding, dilation, groups, padding_mode,
                      flip)
    gout = as_array(grad_output, "grad_output", op)
    dtype = result_dtype(op, grad_output=gout, x=x)
    spec = _with_dtype(spec, dtype)
    gout = _check_gout(op, gout, spec.out_shape, dtype)
    (x,) = _prepare(dtype, x=x)
    return _weight_grad(gout, x, spec)


# ------------------------------------------------------------------------ transposed ---

@dataclass(frozen=True)
class _TransposeSpec:
    conv: _ConvSpec  # the convolution whose input-adjoint this is (out <-> in)
    out_shape: tuple


def _transpose_spec(op, x, weight, stride, padding, output_padding, dilation, groups):
    nd = _check_weight(op, weight, "(C_in, C_out // groups, *K)")
    check_ndim(x, nd + 2, "x", op, "(N, C_in, *spatial) to match the weight")
    if min(x.shape[1:]) < 1:
        raise fail(op, f"`x` must have channels and non-empty spatial axes, got {x.shape}")
    c_in, c_out_g = weight.shape[:2]
    if x.shape[1] != c_in:
        raise fail(op, f"`x` has {x.shape[1]} input channels but `weight` expects {c_in} "
                       f"(weight.shape[0])")
    g = _check_groups(op, groups, c_in, c_out_g * groups)
    st = per_axis(stride, nd, "stride", op)
    dl = per_axis(dilation, nd, "dilation", op)
    if isinstance(padding, str):
        raise fail(op, f"`padding` must be an int, per-axis ints or (lo, hi) pairs (strings "
                       f"are for conv), got {padding!r}", TypeError)
    pads = explicit_padding(padding, nd, op)
    outp = per_axis(output_padding, nd, "output_padding", op, minimum=0)
    out_sp = conv_transpose_output_shape(op, x.shape[2:], weight.shape[2:], st, dl, pads, outp)
    out_shape = (x.shape[0], c_out_g * g) + out_sp
    cspec = _ConvSpec(nd, g, st, dl, pads, "zeros", False, out_shape, weight.shape,
                      tuple(x.shape), None)
    return _TransposeSpec(cspec, out_shape)


@dispatch
def conv_transpose(x: ArrayLike, weight: ArrayLike, bias: ArrayLike | None = None, *,
                   stride=1, padding=0, output_padding=0, dilation=1,
                   groups: int = 1) -> np.ndarray:
    """Transposed convolution: the adjoint of :func:`conv` with respect to its input.

    The learnable upsampling of U-Net decoders; shapes as PyTorch's
    ``conv_transpose{1,2,3}d``.

    Parameters
    ----------
    x : array, shape (N, C_in, *S)
    weight : array, shape (C_in, C_out // groups, *K)
    bias : array, shape (C_out,), optional
    stride, dilation : int or tuple of int
    padding : int, tuple of int, or tuple of (lo, hi) pairs
        As in PyTorch: the full transposed output is cropped by ``lo`` and ``hi`` on each
        axis (the padding of the convolution this is the adjoint of).
    output_padding : int or tuple of int
        Extra size on the high side (smaller than stride or dilation), to pick one of the
        input sizes that a strided conv maps to the same output size.
    groups : int

    Returns
    -------
    y : ndarray, shape (N, C_out, *O)
        ``O = (I - 1)*stride - lo - hi + dilation*(K - 1) + 1 + output_padding``.
    """
    op = "conv_transpose"
    x, weight = as_array(x, "x", op), as_array(weight, "weight", op)
    tspec = _transpose_spec(op, x, weight, stride, padding, output_padding, dilation, groups)
    bias = _check_bias(op, bias, tspec.out_shape[1])
    dtype = result_dtype(op, x=x, weight=weight, bias=bias)
    x, weight, bias = _prepare(dtype, x=x, weight=weight, bias=bias)
    spec = _with_dtype(tspec.conv, dtype)
    nd, g = spec.nd, spec.groups
    # conv_transpose(x, w) is conv's input gradient with x as the output gradient; the
    # conv weight (C_in, C_out/g, K) read as (G, D=C_out/g, S=C_in/g, K).
    w6 = np.ascontiguousarray(_w6(weight, g, nd, swap=True))
    geom = [(1, 1, 1, 1, 1, 0)] * (3 - nd) + [
        (i, o, k, s, r, lo) for i, o, k, s, r, (lo, _) in
        zip(spec.in_shape[2:], x.shape[2:], weight.shape[2:], spec.stride, spec.dilation,
            spec.pads)]
    dst = np.empty(_lift(tspec.out_shape, nd), dtype=dtype)
    driver.input_grad(_lift_arr(x, nd), w6, bias, dst, geom)
    return dst.reshape(tspec.out_shape)


@dispatch
def conv_transpose_backward(grad_output: ArrayLike, x: ArrayLike, weight: ArrayLike,
                            bias: ArrayLike | None = None, *, stride=1, padding=0,
                            output_padding=0, dilation=1, groups: int = 1):
    """Gradients of :func:`conv_transpose`: ``(grad_x, grad_weight, grad_bias)``.

    ``grad_x`` is :func:`conv` of ``grad_output`` with the same weight; ``grad_weight``
    is the weight-gradient kernel with the roles of ``x`` and ``grad_output`` swapped.
    ``grad_bias`` is None when ``bias`` is None.
    """
    op = "conv_transpose_backward"
    x, weight = as_array(x, "x", op), as_array(weight, "weight", op)
    tspec = _transpose_spec(op, x, weight, stride, padding, output_padding, dilation, groups)
    bias = _check_bias(op, bias, tspec.out_shape[1])
    dtype = result_dtype(op, x=x, weight=weight, bias=bias)
    gout = _check_gout(op, grad_output, tspec.out_shape, dtype)
    x, weight = _prepare(dtype, x=x, weight=weight)
    spec = _with_dtype(tspec.conv, dtype)  # conv: in_shape = gout's, out_shape = x's
    nd = spec.nd
    # grad_x: the forward conv of grad_output (same weight, as (C_in, C_out/g, K) = conv's
    # (C_out', C_in'/g, K) with C_out' = C_in).
    gx = _conv_forward(gout, weight, None, spec)
    # grad_w[c, o, k] = sum x[n, c, i] gout[n, o, s*i + r*k - lo]: weight gradient of the
    # conv from gout (input) to x (output).
    g6 = driver.weight_grad(_lift_arr(gout, nd), _lift_arr(x, nd), spec.groups,
                            _forward_axes(spec))
    gw = np.ascontiguousarray(g6).reshape(weight.shape)
    gb = None if bias is None else driver.bias_grad(_lift_arr(gout, nd))
    return gx, gw, gb
