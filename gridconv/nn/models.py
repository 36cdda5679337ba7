"""Model builders: one call per architecture, the spatial rank a parameter of the blocks.

Every builder returns a :class:`~gridconv.nn.Sequential` made of registered layers (so it
saves and loads), initialised from ``seed``. ``conv_block`` and ``residual_block`` serve
1-D signals, 2-D images and 3-D volumes alike; the named builders only choose widths and
heads:

========================== ===== ==============================================
builder                    rank  input -> output
========================== ===== ==============================================
``m5``                     1     waveform ``(N, C, T)`` -> class logits
``spectrogram_classifier`` 2     spectrogram ``(N, C, F, frames)`` -> logits
``lenet``, ``vgg``         any   image ``(N, C, *S)`` -> logits
``resnet``                 any   image ``(N, C, *S)`` -> logits
``volume_classifier``      3     volume ``(N, C, D, H, W)`` -> logits
``unet``                   2, 3  image/volume -> per-pixel/voxel logits
========================== ===== ==============================================
"""

from __future__ import annotations

import numpy as np

from .._params import fail
from .layers import (
    BatchNorm,
    Conv,
    ConvTranspose,
    Dense,
    Dropout,
    Flatten,
    GlobalAvgPool,
    MaxPool,
    ReLU,
)
from .module import Identity, Module, Parallel, Sequential, SkipConcat

__all__ = ["conv_block", "residual_block", "m5", "spectrogram_classifier", "lenet", "vgg",
           "resnet", "image_classifier", "volume_classifier", "unet"]


def _rng(seed) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def _check(builder: str, ndim: int, in_channels: int, num_classes: int) -> None:
    if ndim not in (1, 2, 3):
        raise fail(builder, f"`ndim` must be 1, 2 or 3, got {ndim!r}")
    if in_channels < 1:
        raise fail(builder, f"`in_channels` must be >= 1, got {in_channels}")
    if num_classes < 1:
        raise fail(builder, f"`num_classes` must be >= 1, got {num_classes}")


def conv_block(ndim: int, in_channels: int, out_channels: int, kernel_size: int = 3, *,
               stride: int = 1, norm: bool = True, rng=None) -> list[Module]:
    """Conv ("same"-style padding ``k // 2``) -> BatchNorm -> ReLU, as a list of layers."""
    layers: list[Module] = [Conv(ndim, in_channels, out_channels, kernel_size, stride=stride,
                                 padding=kernel_size // 2, bias=not norm, rng=rng)]
    if norm:
        layers.append(BatchNorm(out_channels))
    layers.append(ReLU())
    return layers


def residual_block(ndim: int, in_channels: int, out_channels: int, *, stride: int = 1,
                   rng=None) -> Sequential:
    """The basic ResNet block: ``relu(bn(conv(relu(bn(conv(x))))) + shortcut(x))``; the
    shortcut is a strided 1x1 conv + BatchNorm when the shape changes."""
    body = Sequential(
        Conv(ndim, in_channels, out_channels, 3, stride=stride, padding=1, bias=False, rng=rng),
        BatchNorm(out_channels), ReLU(),
        Conv(ndim, out_channels, out_channels, 3, padding=1, bias=False, rng=rng),
        BatchNorm(out_channels))
    if stride != 1 or in_channels != out_channels:
        shortcut: Module = Sequential(
            Conv(ndim, in_channels, out_channels, 1, stride=stride, bias=False, rng=rng),
            BatchNorm(out_channels))
    else:
        shortcut = Identity()
    return Sequential(Parallel(body, shortcut, merge="add"), ReLU())


def _head(features: list[Module], ndim: int, in_channels: int, width: int,
          num_classes: int, input_size, hidden: int | None, dropout: float,
          rng) -> Sequential:
    """Close a feature extractor with global pooling (``input_size`` None) or with flatten
    and dense layers sized by probing the features on ``input_size``."""
    if input_size is None:
        head: list[Module] = [GlobalAvgPool(), Flatten()]
        n_in = width
    else:
        size = (input_size,) * ndim if isinstance(input_size, int) else tuple(input_size)
        if len(size) != ndim:
            raise fail("model", f"`input_size` must have {ndim} entries, got {size}")
        probe = Sequential(*features).eval().forward(np.zeros((1, in_channels, *size),
                                                              np.float32))
        head = [Flatten()]
        n_in = int(np.prod(probe.shape[1:]))
    if hidden:
        head += [Dense(n_in, hidden, rng=rng), ReLU()]
        n_in = hidden
    if dropout:
        head.append(Dropout(dropout))
    head.append(Dense(n_in, num_classes, rng=rng))
    model = Sequential(*features, *head)
    return model.train()


def vgg(ndim: int, in_channels: int, num_classes: int, widths=(16, 32, 64), *,
        convs_per_stage: int = 1, input_size=None, hidden: int | None = None,
        dropout: float = 0.0, seed=0) -> Sequential:
    """VGG-style classifier: per stage ``convs_per_stage`` conv blocks then 2x max pooling.

    With ``input_size`` (the spatial shape) the head flattens the last feature map into
    dense layers (``hidden`` units, then the classes); without it the head is global
    average pooling, so any input size works.
    """
    _check("vgg", ndim, in_channels, num_classes)
    rng = _rng(seed)
    layers: list[Module] = []
    c = in_channels
    for w in widths:
        for _ in range(convs_per_stage):
            layers += conv_block(ndim, c, w, rng=rng)
            c = w
        layers.append(MaxPool(2))
    return _head(layers, ndim, in_channels, c, num_classes, input_size, hidden, dropout,
                 rng)


def lenet(in_channels: int, num_classes: int, input_size=(28, 28), *, seed=0) -> Sequential:
    """LeNet-5 (ReLU, max pooling): conv 5x5 (6) -> pool -> conv 5x5 (16) -> pool -> 120 ->
    84 -> classes. Small inputs (8x8 digits) keep their size through padded convs."""
    _check("lenet", 2, in_channels, num_classes)
    rng = _rng(seed)
    feats: list[Module] = [Conv(2, in_channels, 6, 5, padding=2, rng=rng), ReLU(), MaxPool(2),
                           Conv(2, 6, 16, 5, padding=2, rng=rng), ReLU(), MaxPool(2)]
    model = _head(feats, 2, in_channels, 16, 84, input_size, 120, 0.0, rng)
    return Sequential(*model, ReLU(), Dense(84, num_classes, rng=rng))


def resnet(ndim: int, in_channels: int, num_classes: int, widths=(16, 32, 64), *,
           blocks_per_stage: int = 1, seed=0) -> Sequential:
    """A small ResNet: a conv stem, then per stage ``blocks_per_stage`` basic residual
    blocks (the first of each later stage strided by 2), global average pooling, dense."""
    _check("resnet", ndim, in_channels, num_classes)
    rng = _rng(seed)
    layers = conv_block(ndim, in_channels, widths[0], rng=rng)
    c = widths[0]
    for i, w in enumerate(widths):
        for b in range(blocks_per_stage):
            layers.append(residual_block(ndim, c, w, stride=2 if i > 0 and b == 0 else 1,
                                         rng=rng))
            c = w
    return _head(layers, ndim, in_channels, c, num_classes, None, None, 0.0, rng)


def image_classifier(in_channels: int, num_classes: int, kind: str = "vgg", *,
                     input_size=None, seed=0, **kwargs) -> Sequential:
    """A 2-D image classifier: ``kind`` is "lenet", "vgg" or "resnet"."""
    if kind == "lenet":
        return lenet(in_channels, num_classes, input_size or (28, 28), seed=seed)
    if kind == "vgg":
        return vgg(2, in_channels, num_classes, input_size=input_size, seed=seed, **kwargs)
    if kind == "resnet":
        return resnet(2, in_channels, num_classes, seed=seed, **kwargs)
    raise fail("image_classifier", f"`kind` must be 'lenet', 'vgg' or 'resnet', got {kind!r}")


def m5(num_classes: int, in_channels: int = 1, width: int = 32, *, first_kernel: int = 80,
       first_stride: int = 4, pool: int = 4, seed=0) -> Sequential:
    """M5 waveform classifier (Dai et al., 2017): a wide strided first conv (``first_kernel``
    samples, stride ``first_stride``), then three 3-tap conv blocks, each block followed by
    max pooling by ``pool``; global average pooling and a dense layer.

    Input ``(N, in_channels, T)`` with ``T`` at least about ``first_stride * pool**4``
    samples (1 s at 8 kHz is plenty).
    """
    _check("m5", 1, in_channels, num_classes)
    rng = _rng(seed)
    layers = conv_block(1, in_channels, width, first_kernel, stride=first_stride, rng=rng)
    layers[0] = Conv(1, in_channels, width, first_kernel, stride=first_stride, bias=False,
                     rng=rng)
    layers.append(MaxPool(pool))
    for c_in, c_out in ((width, width), (width, 2 * width), (2 * width, 2 * width)):
        layers += conv_block(1, c_in, c_out, 3, rng=rng)
        layers.append(MaxPool(pool))
    return _head(layers, 1, in_channels, 2 * width, num_classes, None, None, 0.0, rng)


def spectrogram_classifier(num_classes: int, in_channels: int = 1, widths=(16, 32, 64), *,
                           convs_per_stage: int = 1, dropout: float = 0.0,
                           seed=0) -> Sequential:
    """2-D classifier of (log-mel) spectrograms ``(N, C, F, frames)``: VGG-style blocks and
    global average pooling, so clips of any length work."""
    return vgg(2, in_channels, num_classes, widths, convs_per_stage=convs_per_stage,
               dropout=dropout, seed=seed)


def volume_classifier(num_classes: int, in_channels: int = 1, widths=(8, 16, 32), *,
                      seed=0) -> Sequential:
    """3-D classifier of volumes ``(N, C, D, H, W)``: VGG-style 3-D blocks, global pooling."""
    return vgg(3, in_channels, num_classes, widths, seed=seed)


def unet(ndim: int, in_channels: int, num_classes: int, widths=(16, 32, 64), *,
         seed=0) -> Sequential:
    """U-Net (Ronneberger et al., 2015) for 2-D or 3-D segmentation.

    Each level: two conv blocks; then (except at the bottom) a skip connection that
    concatenates the level's features with the upsampled (2x2 transposed conv) output of
    the level below, and two more conv blocks. A 1x1 conv gives per-position class logits
    ``(N, num_classes, *S)``. Spatial sizes must be divisible by ``2**(len(widths) - 1)``.
    """
    _check("unet", ndim, in_channels, num_classes)
    if len(widths) < 1:
        raise fail("unet", "`widths` needs at least one level")
    rng = _rng(seed)
    w = list(widths)

    def level(i: int, c_in: int) -> list[Module]:
        enc = conv_block(ndim, c_in, w[i], rng=rng) + conv_block(ndim, w[i], w[i], rng=rng)
        if i == len(w) - 1:
            return enc
        inner = Sequential(MaxPool(2), *level(i + 1, w[i]),
                           ConvTranspose(ndim, w[i + 1], w[i], 2, stride=2, rng=rng))
        dec = conv_block(ndim, 2 * w[i], w[i], rng=rng) + conv_block(ndim, w[i], w[i], rng=rng)
        return [*enc, SkipConcat(inner), *dec]

    return Sequential(*level(0, in_channels), Conv(ndim, w[0], num_classes, 1, rng=rng))
