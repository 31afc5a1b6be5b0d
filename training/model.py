"""Keras 3 UNet with configurable width, depth and heads."""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import layers

from training.config import STEMS


def conv_block(x, filters: int, batchnorm: bool, name: str):
    """Two 3x3 convolutions with ReLU (and batch normalisation before each ReLU)."""
    for index in (1, 2):
        x = layers.Conv2D(
            filters, 3, padding="same", use_bias=not batchnorm, name=f"{name}_conv{index}"
        )(x)
        if batchnorm:
            x = layers.BatchNormalization(name=f"{name}_bn{index}")(x)
        x = layers.Activation("relu", name=f"{name}_relu{index}")(x)
    return x


def build_unet(
    base_filters: int = 16,
    depth: int = 4,
    num_classes: int = 3,
    centre_head: bool = True,
    batchnorm: bool = True,
    input_size: int | None = None,
    level_filters: Sequence[int] | None = None,
    stem: str = "full",
) -> keras.Model:
    """A UNet: `depth` poolings, filters doubling from `base_filters`, transposed-conv upsampling.

    `level_filters` sets each level's filters instead (depth + 1 of them, the bottleneck's
    last): the full-resolution levels are most of the CPU time, the deep ones most of the
    parameters, so they can be sized apart. The output "probs" holds softmax class
    probabilities, then (with `centre_head`) a sigmoid cell-centre heatmap. Spatial size is
    free (None) unless `input_size` fixes it; it must be a multiple of 2**depth.

    `stem="patchify"` drops the full-resolution convolutions, which are most of the CPU time:
    a 2x2, stride-2 convolution reads the image straight into the second level, and the
    decoder's last level is brought back to full resolution by a transposed convolution and one
    3x3 convolution over it and the image (level 0's width), before the heads.
    """
    if stem not in STEMS:
        raise ValueError(f"stem must be one of {STEMS}, got {stem!r}")
    widths = list(level_filters or [base_filters * 2**level for level in range(depth + 1)])
    if len(widths) != depth + 1:
        raise ValueError(f"level_filters needs depth + 1 = {depth + 1} widths, got {widths}")
    inputs = keras.Input(shape=(input_size, input_size, 3), name="image")
    x = inputs
    first = 0 if stem == "full" else 1  # the first level with a conv block of its own
    if first:
        x = layers.Conv2D(widths[1], 2, strides=2, name="stem_patchify")(x)
    skips = {}
    for level in range(first, depth):
        x = conv_block(x, widths[level], batchnorm, f"down{level}")
        skips[level] = x
        x = layers.MaxPooling2D(name=f"pool{level}")(x)
    x = conv_block(x, widths[depth], batchnorm, "bottleneck")
    for level in reversed(range(first, depth)):
        filters = widths[level]
        x = layers.Conv2DTranspose(filters, 2, strides=2, name=f"up{level}_transpose")(x)
        x = layers.Concatenate(name=f"up{level}_concat")([x, skips[level]])
        x = conv_block(x, filters, batchnorm, f"up{level}")
    if first:
        x = layers.Conv2DTranspose(widths[0], 2, strides=2, name="up0_transpose")(x)
        x = layers.Concatenate(name="up0_concat")([x, inputs])
        x = layers.Conv2D(widths[0], 3, padding="same", use_bias=not batchnorm, name="up0_conv1")(x)
        if batchnorm:
            x = layers.BatchNormalization(name="up0_bn1")(x)
        x = layers.Activation("relu", name="up0_relu1")(x)
    outputs = layers.Conv2D(num_classes, 1, activation="softmax", name="classes")(x)
    if centre_head:
        centre = layers.Conv2D(1, 1, activation="sigmoid", name="centre")(x)
        outputs = layers.Concatenate(name="probs")([outputs, centre])
    else:
        outputs = layers.Identity(name="probs")(outputs)
    shape = "-".join(map(str, widths)) if level_filters else f"f{base_filters}"
    suffix = "" if stem == "full" else f"_{stem}"
    return keras.Model(inputs, outputs, name=f"unet_{shape}_d{depth}{suffix}")


def count_flops(model: keras.Model, height: int = 256, width: int = 256) -> float:
    """Floating-point operations (2 x multiply-adds) of the convolutions for one image."""
    flops = 0.0
    for layer in model.layers:
        if not isinstance(layer, layers.Conv2D | layers.Conv2DTranspose):
            continue
        kernel = layer.kernel.shape
        # kernel: (kh, kw, in, out) for Conv2D; (kh, kw, out, in) for Conv2DTranspose
        macs_per_position = kernel[0] * kernel[1] * kernel[2] * kernel[3]
        out_h, out_w = layer.output.shape[1:3]
        if out_h is None:
            scale = _downsampling(layer.name, model)
            out_h, out_w = height // scale, width // scale
        positions = out_h * out_w
        if isinstance(layer, layers.Conv2DTranspose):
            positions //= layer.strides[0] * layer.strides[1]
        flops += 2.0 * macs_per_position * positions
    return flops


def _downsampling(layer_name: str, model: keras.Model) -> int:
    """Resolution divisor of a layer in a free-size UNet, from its level in the name."""
    prefix = layer_name.split("_")[0]
    if prefix == "bottleneck":
        # a patchify stem halves the resolution as a pooling does
        return 2 ** sum(1 for layer in model.layers if layer.name.startswith(("pool", "stem")))
    if prefix == "stem":
        return 2
    if prefix[:-1] in {"down", "up"} and prefix[-1].isdigit():
        return 2 ** int(prefix[-1])
    return 1
