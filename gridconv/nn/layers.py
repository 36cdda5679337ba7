"""Layers: the functional operations of gridconv with their parameters and state.

Every layer calls the public operations (``gridconv.conv``, ``gridconv.max_pool``, ...) and
their ``*_backward`` twins, never the kernels. One N-D class per operation with the
spatial rank as its first argument (``Conv(2, 3, 16, 3)``); ``Conv1d``/``Conv2d``/``Conv3d``
and friends are thin aliases. Weights are float32 unless ``dtype`` says otherwise; inputs
are converted to the weights' dtype at the first layer that has weights.

The same layers run on a CUDA device once the model is moved there
(:meth:`~gridconv.nn.Module.to_device`): the public operations dispatch on the array kind,
and the rest of the array maths goes through :mod:`gridconv.nn._backend`.
"""

from __future__ import annotations

import importlib
import math
import numbers

import numpy as np

from .. import activation as act
from .. import local as local_ops
from .. import pool as pool_ops
from .._params import fail
from . import _backend as B
from .init import as_rng, kaiming_normal
from .module import Module, register

# The module, not the function ``gridconv.conv`` that the package exports under its name.
conv_ops = importlib.import_module("gridconv.conv")

__all__ = [
    "Conv", "Conv1d", "Conv2d", "Conv3d", "ConvTranspose", "ConvTranspose1d",
    "ConvTranspose2d", "ConvTranspose3d", "UnsharedConv", "TiledConv", "MaxPool", "AvgPool",
    "LpPool", "GlobalMaxPool", "GlobalAvgPool", "ReLU", "LeakyReLU", "PReLU", "AbsRectify",
    "Sigmoid", "Tanh", "Softmax", "LogSoftmax", "BatchNorm", "Dropout", "Flatten", "Dense",
    "Upsample",
]


def _tuple(name: str, value, nd: int, layer: str, minimum: int = 1) -> tuple:
    """An int or a length-``nd`` sequence of ints as a tuple (for config and checks)."""
    if isinstance(value, numbers.Integral):
        value = (int(value),) * nd
    try:
        value = tuple(int(v) for v in value)
    except TypeError:
        raise TypeError(f"{layer}: `{name}` must be an int or a sequence of {nd} ints, "
                        f"got {value!r}") from None
    if len(value) != nd or min(value) < minimum:
        raise fail(layer, f"`{name}` must be {nd} ints >= {minimum}, got {value}")
    return value


def _jsonable(value):
    """Padding and similar arguments as JSON values (tuples become lists)."""
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.integer):
        return int(value)
    return value


def _check_ndim(layer: str, nd) -> int:
    if nd not in (1, 2, 3):
        raise fail(layer, f"`ndim` (the spatial rank) must be 1, 2 or 3, got {nd!r}")
    return int(nd)


def _check_input(layer: str, x, channels: int, nd: int | None) -> np.ndarray:
    x = B.as_array(x)
    want = "(N, C)" if nd == 0 else f"(N, C, {nd} spatial axes)"
    if nd is not None and x.ndim != nd + 2:
        raise fail(layer, f"input must be {nd + 2}-D {want}, got shape {x.shape}")
    if x.ndim < 2 or x.shape[1] != channels:
        raise fail(layer, f"input has {x.shape[1] if x.ndim > 1 else '?'} channels, the "
                          f"layer expects `in_channels` (={channels}); input shape "
                          f"{tuple(x.shape)}")
    return x


def _accumulate(param, grad) -> None:
    B.add_into(param.grad, grad)


_one_blas_thread = B.one_blas_thread


# ---------------------------------------------------------------- convolutions ---

@register
class Conv(Module):
    """N-D convolution layer (:func:`gridconv.conv`).

    Parameters
    ----------
    ndim : int
        Spatial rank, 1, 2 or 3.
    in_channels, out_channels : int
    kernel_size : int or tuple
    stride, padding, dilation, groups, padding_mode
        As :func:`gridconv.conv`.
    bias : bool
    rng : Generator, int or None
        Weights are He-normal (``std = sqrt(2 / fan_in)``), biases zero.
    dtype : dtype, default float32

    Shapes: ``(N, in_channels, *S) -> (N, out_channels, *O)``.
    """

    op = staticmethod(conv_ops.conv)

    def __init__(self, ndim: int, in_channels: int, out_channels: int, kernel_size, *,
                 stride=1, padding=0, dilation=1, groups: int = 1,
                 padding_mode: str = "zeros", bias: bool = True, rng=None,
                 dtype="float32"):
        super().__init__()
        name = type(self).__name__
        nd = _check_ndim(name, ndim)
        self.ndim, self.in_channels, self.out_channels = nd, int(in_channels), int(out_channels)
        self.kernel_size = _tuple("kernel_size", kernel_size, nd, name)
        if groups < 1 or in_channels % groups or out_channels % groups:
            raise fail(name, f"`in_channels` (={in_channels}) and `out_channels` "
                             f"(={out_channels}) must be divisible by `groups` (={groups})")
        self.groups = int(groups)
        self.kwargs = dict(stride=_jsonable(stride), padding=_jsonable(padding),
                           dilation=_jsonable(dilation), groups=self.groups,
                           padding_mode=padding_mode)
        fan_in = in_channels // groups * math.prod(self.kernel_size)
        shape = (out_channels, in_channels // groups, *self.kernel_size)
        self.weight = self.add_parameter("weight", kaiming_normal(shape, fan_in, rng, dtype))
        self.bias = (self.add_parameter("bias", np.zeros(out_channels, dtype), decay=False)
                     if bias else None)
        self.dtype_name = np.dtype(dtype).name
        self._x = None

    def forward(self, x):
        x = _check_input(type(self).__name__, x, self.in_channels, self.ndim)
        self._expect(x)
        x = B.astype(x, self.weight.value.dtype)
        self._x = x
        b = None if self.bias is None else self.bias.value
        return conv_ops.conv(x, self.weight.value, b, **self.kwargs)

    def backward(self, grad_output, input_grad=True):
        self._expect(grad_output, "gradient")
        x, w = self._x, self.weight.value
        if input_grad:
            gx, gw, gb = conv_ops.conv_backward(
                grad_output, x, w, None if self.bias is None else self.bias.value,
                **self.kwargs)
        else:
            gx = None
            gw = conv_ops.conv_grad_weight(grad_output, x, w.shape, **self.kwargs)
            gb = B.channel_sum(grad_output) if self.bias is not None else None
        _accumulate(self.weight, gw)
        if self.bias is not None:
            _accumulate(self.bias, gb)
        return gx

    def config(self):
        return dict(ndim=self.ndim, in_channels=self.in_channels,
                    out_channels=self.out_channels, kernel_size=list(self.kernel_size),
                    bias=self.bias is not None, dtype=self.dtype_name, **self.kwargs)


@register
class ConvTranspose(Module):
    """N-D transposed convolution layer (:func:`gridconv.conv_transpose`).

    Weight ``(in_channels, out_channels // groups, *K)``; shapes
    ``(N, in_channels, *S) -> (N, out_channels, *O)`` with
    ``O = (S - 1) * stride - 2 * padding + dilation * (K - 1) + output_padding + 1``.
    A ``kernel_size = stride = 2`` layer doubles the spatial size (U-Net upsampling).
    """

    def __init__(self, ndim: int, in_channels: int, out_channels: int, kernel_size, *,
                 stride=1, padding=0, output_padding=0, dilation=1, groups: int = 1,
                 bias: bool = True, rng=None, dtype="float32"):
        super().__init__()
        name = type(self).__name__
        nd = _check_ndim(name, ndim)
        self.ndim, self.in_channels, self.out_channels = nd, int(in_channels), int(out_channels)
        self.kernel_size = _tuple("kernel_size", kernel_size, nd, name)
        if groups < 1 or in_channels % groups or out_channels % groups:
            raise fail(name, f"`in_channels` (={in_channels}) and `out_channels` "
                             f"(={out_channels}) must be divisible by `groups` (={groups})")
        self.kwargs = dict(stride=_jsonable(stride), padding=_jsonable(padding),
                           output_padding=_jsonable(output_padding),
                           dilation=_jsonable(dilation), groups=int(groups))
        # Each output sees about in_channels * prod(K / stride) taps.
        s = _tuple("stride", stride, nd, name)
        fan_in = in_channels // groups * math.prod(k / t for k, t in zip(self.kernel_size, s))
        shape = (in_channels, out_channels // groups, *self.kernel_size)
        self.weight = self.add_parameter("weight", kaiming_normal(shape, fan_in, rng, dtype))
        self.bias = (self.add_parameter("bias", np.zeros(out_channels, dtype), decay=False)
                     if bias else None)
        self.dtype_name = np.dtype(dtype).name

    def forward(self, x):
        x = _check_input(type(self).__name__, x, self.in_channels, self.ndim)
        self._expect(x)
        x = B.astype(x, self.weight.value.dtype)
        self._x = x
        b = None if self.bias is None else self.bias.value
        return conv_ops.conv_transpose(x, self.weight.value, b, **self.kwargs)

    def backward(self, grad_output, input_grad=True):
        self._expect(grad_output, "gradient")
        b = None if self.bias is None else self.bias.value
        gx, gw, gb = conv_ops.conv_transpose_backward(grad_output, self._x, self.weight.value,
                                                      b, **self.kwargs)
        _accumulate(self.weight, gw)
        if self.bias is not None:
            _accumulate(self.bias, gb)
        return gx if input_grad else None

    def config(self):
        return dict(ndim=self.ndim, in_channels=self.in_channels,
                    out_channels=self.out_channels, kernel_size=list(self.kernel_size),
                    bias=self.bias is not None, dtype=self.dtype_name, **self.kwargs)


class _LocalConv(Module):
    """Shared body of the unshared and tiled layers."""

    forward_op = backward_op = None

    def _setup(self, ndim, in_channels, out_channels, kernel_size, stride, padding, dilation,
               padding_mode, dtype):
        name = type(self).__name__
        nd = _check_ndim(name, ndim)
        self.ndim, self.in_channels, self.out_channels = nd, int(in_channels), int(out_channels)
        self.kernel_size = _tuple("kernel_size", kernel_size, nd, name)
        self.kwargs = dict(stride=_jsonable(stride), padding=_jsonable(padding),
                           dilation=_jsonable(dilation), padding_mode=padding_mode)
        self.dtype_name = np.dtype(dtype).name
        return in_channels * math.prod(self.kernel_size)

    def forward(self, x):
        x = _check_input(type(self).__name__, x, self.in_channels, self.ndim)
        self._expect(x)
        x = B.astype(x, self.weight.value.dtype)
        self._x = x
        b = None if self.bias is None else self.bias.value
        return type(self).forward_op(x, self.weight.value, b, **self.kwargs)

    def backward(self, grad_output, input_grad=True):
        self._expect(grad_output, "gradient")
        b = None if self.bias is None else self.bias.value
        gx, gw, gb = type(self).backward_op(grad_output, self._x, self.weight.value, b,
                                            **self.kwargs)
        _accumulate(self.weight, gw)
        if self.bias is not None:
            _accumulate(self.bias, gb)
        return gx if input_grad else None


@register
class UnsharedConv(_LocalConv):
    """Locally connected layer (:func:`gridconv.unshared_conv`): one kernel per position.

    ``input_size`` (the spatial shape the layer will see) fixes the output grid ``O``;
    weight ``(*O, out_channels, in_channels, *K)``, bias ``(out_channels, *O)``.
    """

    forward_op = staticmethod(local_ops.unshared_conv)
    backward_op = staticmethod(local_ops.unshared_conv_backward)

    def __init__(self, ndim: int, in_channels: int, out_channels: int, kernel_size,
                 input_size, *, stride=1, padding=0, dilation=1, padding_mode="zeros",
                 bias: bool = True, rng=None, dtype="float32"):
        super().__init__()
        fan_in = self._setup(ndim, in_channels, out_channels, kernel_size, stride, padding,
                             dilation, padding_mode, dtype)
        self.input_size = _tuple("input_size", input_size, self.ndim, type(self).__name__)
        # The output grid, from the operation's own shape rule on a one-channel probe.
        probe = conv_ops.conv(np.zeros((1, 1, *self.input_size), np.float32),
                              np.zeros((1, 1, *self.kernel_size), np.float32),
                              **self.kwargs)
        self.output_size = probe.shape[2:]
        shape = (*self.output_size, out_channels, in_channels, *self.kernel_size)
        self.weight = self.add_parameter("weight", kaiming_normal(shape, fan_in, rng, dtype))
        self.bias = (self.add_parameter("bias", np.zeros((out_channels, *self.output_size),
                                                         dtype), decay=False)
                     if bias else None)

    def config(self):
        return dict(ndim=self.ndim, in_channels=self.in_channels,
                    out_channels=self.out_channels, kernel_size=list(self.kernel_size),
                    input_size=list(self.input_size), bias=self.bias is not None,
                    dtype=self.dtype_name, **self.kwargs)


@register
class TiledConv(_LocalConv):
    """Tiled convolution layer (:func:`gridconv.tiled_conv`): ``tiles`` kernel stacks per
    axis, output position ``i`` using stack ``i mod tiles``. Weight
    ``(*tiles, out_channels, in_channels, *K)``, bias ``(out_channels,)``."""

    forward_op = staticmethod(local_ops.tiled_conv)
    backward_op = staticmethod(local_ops.tiled_conv_backward)

    def __init__(self, ndim: int, in_channels: int, out_channels: int, kernel_size, tiles, *,
                 stride=1, padding=0, dilation=1, padding_mode="zeros", bias: bool = True,
                 rng=None, dtype="float32"):
        super().__init__()
        fan_in = self._setup(ndim, in_channels, out_channels, kernel_size, stride, padding,
                             dilation, padding_mode, dtype)
        self.tiles = _tuple("tiles", tiles, self.ndim, type(self).__name__)
        shape = (*self.tiles, out_channels, in_channels, *self.kernel_size)
        self.weight = self.add_parameter("weight", kaiming_normal(shape, fan_in, rng, dtype))
        self.bias = (self.add_parameter("bias", np.zeros(out_channels, dtype), decay=False)
                     if bias else None)

    def config(self):
        return dict(ndim=self.ndim, in_channels=self.in_channels,
                    out_channels=self.out_channels, kernel_size=list(self.kernel_size),
                    tiles=list(self.tiles), bias=self.bias is not None,
                    dtype=self.dtype_name, **self.kwargs)


def _ranked(base: type, nd: int) -> type:
    """``Conv2d`` and friends: the N-D class with ``ndim`` fixed (a registered subclass,
    so a saved ``Conv2d`` comes back as a ``Conv2d``)."""

    def __init__(self, *args, **kwargs):
        kwargs.pop("ndim", None)
        base.__init__(self, nd, *args, **kwargs)

    cls = type(f"{base.__name__}{nd}d", (base,), {
        "__init__": __init__,
        "__doc__": f"{base.__name__} with ``ndim={nd}``: "
                   f"``{base.__name__}{nd}d(in_channels, out_channels, ...)``.",
        "config": lambda self: {k: v for k, v in base.config(self).items() if k != "ndim"},
    })
    return register(cls)


Conv1d, Conv2d, Conv3d = (_ranked(Conv, d) for d in (1, 2, 3))
ConvTranspose1d, ConvTranspose2d, ConvTranspose3d = (_ranked(ConvTranspose, d)
                                                     for d in (1, 2, 3))


# ------------------------------------------------------------------------ pooling ---

class _Pool(Module):
    """A pooling operation and its backward with fixed keyword arguments."""

    def __init__(self):
        super().__init__()
        self.kwargs: dict = {}

    def forward(self, x):
        self._x = x
        return type(self).fwd(x, **self.kwargs)

    def backward(self, grad_output, input_grad=True):
        if not input_grad:
            return None
        return type(self).bwd(grad_output, self._x, **self.kwargs)

    def config(self):
        return dict(self.kwargs)


@register
class MaxPool(_Pool):
    """Max pooling (:func:`gridconv.max_pool`); the rank comes from the input."""

    def __init__(self, window, stride=None, padding=0, dilation=1, ceil_mode=False):
        super().__init__()
        self.kwargs = dict(window=_jsonable(window), stride=_jsonable(stride),
                           padding=_jsonable(padding), dilation=_jsonable(dilation),
                           ceil_mode=bool(ceil_mode))

    def forward(self, x):
        self._x = x
        y, self._idx = pool_ops.max_pool(x, return_indices=True, **self.kwargs)
        return y

    def backward(self, grad_output, input_grad=True):
        if not input_grad:
            return None
        return pool_ops.max_pool_backward(grad_output, self._x, indices=self._idx,
                                          **self.kwargs)


@register
class AvgPool(_Pool):
    """Average pooling (:func:`gridconv.avg_pool`)."""

    fwd = staticmethod(pool_ops.avg_pool)
    bwd = staticmethod(pool_ops.avg_pool_backward)

    def __init__(self, window, stride=None, padding=0, ceil_mode=False,
                 count_include_pad=True):
        super().__init__()
        self.kwargs = dict(window=_jsonable(window), stride=_jsonable(stride),
                           padding=_jsonable(padding), ceil_mode=bool(ceil_mode),
                           count_include_pad=bool(count_include_pad))


@register
class LpPool(_Pool):
    """Power-average pooling (:func:`gridconv.lp_pool`); ``p = 2`` is L2-norm pooling."""

    fwd = staticmethod(pool_ops.lp_pool)
    bwd = staticmethod(pool_ops.lp_pool_backward)

    def __init__(self, p, window, stride=None, padding=0, ceil_mode=False):
        super().__init__()
        self.kwargs = dict(p=float(p), window=_jsonable(window), stride=_jsonable(stride),
                           padding=_jsonable(padding), ceil_mode=bool(ceil_mode))


@register
class GlobalMaxPool(_Pool):
    """Maximum over all spatial positions: ``(N, C, *S) -> (N, C, 1, ..., 1)``."""

    fwd = staticmethod(pool_ops.global_max_pool)
    bwd = staticmethod(pool_ops.global_max_pool_backward)


@register
class GlobalAvgPool(_Pool):
    """Mean over all spatial positions: ``(N, C, *S) -> (N, C, 1, ..., 1)``."""

    fwd = staticmethod(pool_ops.global_avg_pool)
    bwd = staticmethod(pool_ops.global_avg_pool_backward)


# -------------------------------------------------------------------- activations ---

class _Activation(Module):
    """An elementwise (or channel-wise) activation; ``uses_output`` backward from ``y``."""

    uses_output = False

    def forward(self, x):
        self._x = x
        y = type(self).fwd(x, **self.kwargs)
        self._y = y if self.uses_output else None
        return y

    def backward(self, grad_output, input_grad=True):
        if not input_grad:
            return None
        if self.uses_output:
            return type(self).bwd(grad_output, None, output=self._y, **self.kwargs)
        return type(self).bwd(grad_output, self._x, **self.kwargs)

    def config(self):
        return dict(self.kwargs)


def _activation(name: str, fwd, bwd, doc: str, uses_output: bool = False, **defaults):
    def __init__(self, **kwargs):
        _Activation.__init__(self)
        unknown = set(kwargs) - set(defaults)
        if unknown:
            raise TypeError(f"{name}: unexpected arguments {sorted(unknown)}")
        self.kwargs = {**defaults, **kwargs}

    cls = type(name, (_Activation,), {"__init__": __init__, "__doc__": doc,
                                       "fwd": staticmethod(fwd), "bwd": staticmethod(bwd),
                                       "uses_output": uses_output})
    return register(cls)


ReLU = _activation("ReLU", act.relu, act.relu_backward, "``max(x, 0)``.")
LeakyReLU = _activation("LeakyReLU", act.leaky_relu, act.leaky_relu_backward,
                        "``x`` if ``x > 0`` else ``negative_slope * x``.", negative_slope=0.01)
AbsRectify = _activation("AbsRectify", act.abs_rectify, act.abs_rectify_backward, "``|x|``.")
Sigmoid = _activation("Sigmoid", act.sigmoid, act.sigmoid_backward,
                      "``1 / (1 + exp(-x))``.", uses_output=True)
Tanh = _activation("Tanh", act.tanh, act.tanh_backward, "``tanh(x)``.", uses_output=True)
Softmax = _activation("Softmax", act.softmax, act.softmax_backward,
                      "Softmax over ``axis`` (the channels by default).", uses_output=True,
                      axis=1)
LogSoftmax = _activation("LogSoftmax", act.log_softmax, act.log_softmax_backward,
                         "Log-softmax over ``axis`` (the channels by default).",
                         uses_output=True, axis=1)


@register
class PReLU(Module):
    """Parametric ReLU with a learnable slope per channel (or one shared slope)."""

    def __init__(self, channels: int = 1, init: float = 0.25, dtype="float32"):
        super().__init__()
        if channels < 1:
            raise fail("PReLU", f"`channels` must be >= 1, got {channels}")
        self.channels, self.init, self.dtype_name = int(channels), float(init), np.dtype(dtype).name
        self.weight = self.add_parameter("weight", np.full(channels, init, dtype), decay=False)

    def forward(self, x):
        self._expect(x)
        self._x = x
        return act.prelu(x, self.weight.value)

    def backward(self, grad_output, input_grad=True):
        self._expect(grad_output, "gradient")
        gx, gw = act.prelu_backward(grad_output, self._x, self.weight.value)
        _accumulate(self.weight, gw)
        return gx if input_grad else None

    def config(self):
        return dict(channels=self.channels, init=self.init, dtype=self.dtype_name)


# ---------------------------------------------------------- normalisation and rest ---

@register
class BatchNorm(Module):
    """Batch normalisation over ``(N, *S)`` per channel, for ``(N, C)`` or ``(N, C, *S)``.

    In training mode it normalises with the batch's mean and (biased) variance and updates
    running estimates ``r = (1 - momentum) * r + momentum * batch`` (unbiased variance, as
    PyTorch); in eval mode it uses the running estimates.
    """

    def __init__(self, channels: int, momentum: float = 0.1, eps: float = 1e-5,
                 affine: bool = True, dtype="float32"):
        super().__init__()
        if channels < 1:
            raise fail("BatchNorm", f"`channels` must be >= 1, got {channels}")
        if not 0 <= momentum <= 1:
            raise fail("BatchNorm", f"`momentum` must be in [0, 1], got {momentum}")
        self.channels, self.momentum, self.eps = int(channels), float(momentum), float(eps)
        self.affine, self.dtype_name = bool(affine), np.dtype(dtype).name
        self.gamma = (self.add_parameter("gamma", np.ones(channels, dtype), decay=False)
                      if affine else None)
        self.beta = (self.add_parameter("beta", np.zeros(channels, dtype), decay=False)
                     if affine else None)
        self.buffers["running_mean"] = np.zeros(channels, dtype)
        self.buffers["running_var"] = np.ones(channels, dtype)

    @staticmethod
    def _view(x):
        n, c = x.shape[0], x.shape[1]
        return B.reshape(x, (n, c, math.prod(x.shape[2:])))

    def forward(self, x):
        x = _check_input("BatchNorm", x, self.channels, None)
        self._expect(x)
        dt = self.buffers["running_mean"].dtype
        x3 = self._view(B.astype(x, dt))
        if self.training and x3.shape[0] * x3.shape[2] < 2:
            raise fail("BatchNorm", f"training needs more than one value per channel, "
                                    f"got input shape {tuple(x.shape)}")
        y, self._xhat, self._inv = B.batchnorm_forward(
            x3, self.gamma.value if self.affine else None,
            self.beta.value if self.affine else None, self.buffers["running_mean"],
            self.buffers["running_var"], self.training, self.momentum, self.eps)
        return B.reshape(y, x.shape)

    def backward(self, grad_output, input_grad=True):
        self._expect(grad_output, "gradient")
        gx, ggamma, gbeta = B.batchnorm_backward(
            self._view(grad_output), self._xhat, self._inv,
            self.gamma.value if self.affine else None, self.training, input_grad)
        if self.affine:
            _accumulate(self.gamma, ggamma)
            _accumulate(self.beta, gbeta)
        return None if gx is None else B.reshape(gx, grad_output.shape)

    def config(self):
        return dict(channels=self.channels, momentum=self.momentum, eps=self.eps,
                    affine=self.affine, dtype=self.dtype_name)


@register
class Dropout(Module):
    """Zero each element with probability ``p`` in training (scaling the rest by
    ``1 / (1 - p)``); the identity in eval mode."""

    def __init__(self, p: float = 0.5, seed: int | None = None):
        super().__init__()
        if not 0 <= p < 1:
            raise fail("Dropout", f"`p` must be in [0, 1), got {p}")
        self.p, self.seed = float(p), seed
        self._rng = as_rng(seed if seed is not None else None)
        self._mask = None

    def forward(self, x):
        if not self.training or self.p == 0:
            self._mask = None
            return x
        y, self._mask = B.dropout(x, self.p, self._rng)
        return y

    def backward(self, grad_output, input_grad=True):
        if not input_grad:
            return None
        return grad_output if self._mask is None else B.multiply(grad_output, self._mask)

    def _moved(self, where):
        self._mask = None

    def config(self):
        return dict(p=self.p, seed=self.seed)


@register
class Flatten(Module):
    """``(N, *rest) -> (N, prod(rest))``."""

    def forward(self, x):
        self._shape = tuple(x.shape)
        return B.flatten2(x)

    def backward(self, grad_output, input_grad=True):
        return B.reshape(grad_output, self._shape) if input_grad else None


@register
class Dense(Module):
    """Fully connected layer ``y = x @ weight.T + bias``: ``(N, in) -> (N, out)``."""

    def __init__(self, in_features: int, out_features: int, *, bias: bool = True, rng=None,
                 dtype="float32"):
        super().__init__()
        if in_features < 1 or out_features < 1:
            raise fail("Dense", f"`in_features` (={in_features}) and `out_features` "
                                f"(={out_features}) must be >= 1")
        self.in_features, self.out_features = int(in_features), int(out_features)
        self.weight = self.add_parameter(
            "weight", kaiming_normal((out_features, in_features), in_features, rng, dtype))
        self.bias = (self.add_parameter("bias", np.zeros(out_features, dtype), decay=False)
                     if bias else None)
        self.dtype_name = np.dtype(dtype).name

    def forward(self, x):
        x = B.as_array(x)
        if x.ndim != 2 or x.shape[1] != self.in_features:
            raise fail("Dense", f"input must be (N, `in_features`={self.in_features}), got "
                                f"shape {tuple(x.shape)}")
        self._expect(x)
        x = B.astype(x, self.weight.value.dtype)
        self._x = x
        return B.matmul(x, self.weight.value, trans_b=True,
                        bias=None if self.bias is None else self.bias.value)

    def backward(self, grad_output, input_grad=True):
        self._expect(grad_output, "gradient")
        # grad_weight += grad_output.T @ x, accumulated in place
        B.matmul(grad_output, self._x, trans_a=True, out=self.weight.grad)
        gx = B.matmul(grad_output, self.weight.value) if input_grad else None
        if self.bias is not None:
            _accumulate(self.bias, B.column_sum(grad_output))
        return gx

    def config(self):
        return dict(in_features=self.in_features, out_features=self.out_features,
                    bias=self.bias is not None, dtype=self.dtype_name)


def _interp_matrix(n_in: int, scale: int, mode: str, dtype) -> np.ndarray:
    """``(n_in * scale, n_in)`` matrix of nearest or linear upsampling along one axis
    (linear with PyTorch's ``align_corners=False`` convention)."""
    n_out = n_in * scale
    a = np.zeros((n_out, n_in), dtype)
    if mode == "nearest":
        a[np.arange(n_out), np.arange(n_out) // scale] = 1
        return a
    src = np.clip((np.arange(n_out) + 0.5) / scale - 0.5, 0, n_in - 1)
    lo = np.floor(src).astype(int)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = src - lo
    np.add.at(a, (np.arange(n_out), lo), 1 - frac)
    np.add.at(a, (np.arange(n_out), hi), frac)
    return a


@register
class Upsample(Module):
    """Upsample every spatial axis by an integer factor, ``"nearest"`` or ``"linear"``
    (bi-/trilinear, ``align_corners=False``); applied axis by axis as a small matrix so the
    backward is its transpose."""

    def __init__(self, scale_factor=2, mode: str = "nearest"):
        super().__init__()
        if mode not in ("nearest", "linear"):
            raise fail("Upsample", f"`mode` must be 'nearest' or 'linear', got {mode!r}")
        self.scale_factor, self.mode = _jsonable(scale_factor), mode
        self._mats: dict = {}

    def _scales(self, nd: int) -> tuple:
        return _tuple("scale_factor", self.scale_factor, nd, "Upsample")

    def _matrix(self, n: int, s: int, dtype):
        key = (n, s, np.dtype(dtype).str)
        if key not in self._mats:
            self._mats[key] = _interp_matrix(n, s, self.mode, dtype)
        return self._mats[key]

    def forward(self, x):
        x = B.as_array(x)
        self._shape = tuple(x.shape)
        scales = self._scales(x.ndim - 2)
        if self.mode == "nearest":
            for ax, s in enumerate(scales, start=2):
                mat = self._matrix(x.shape[ax], s, x.dtype) if B.is_device(x) else None
                x = B.repeat(x, s, ax, mat)
            return x
        for ax, s in enumerate(scales, start=2):
            x = B.apply_axis(x, ax, self._matrix(x.shape[ax], s, x.dtype))
        return B.contiguous(x)

    def backward(self, grad_output, input_grad=True):
        if not input_grad:
            return None
        g = grad_output
        scales = self._scales(g.ndim - 2)
        if self.mode == "nearest" and not B.is_device(g):
            shape = [g.shape[0], g.shape[1]]
            for n, s in zip(self._shape[2:], scales):
                shape += [n, s]
            axes = tuple(range(3, len(shape), 2))
            return g.reshape(shape).sum(axis=axes)
        # the adjoint: the transposed matrices, axis by axis
        for ax, (n, s) in enumerate(zip(self._shape[2:], scales), start=2):
            g = B.apply_axis_adjoint(g, ax, self._matrix(n, s, g.dtype))
        return B.contiguous(g)

    def config(self):
        return dict(scale_factor=self.scale_factor, mode=self.mode)
