"""The UNet builder: widths doubling from the base, or set per level."""

import pytest

from training.model import build_unet, count_flops


def conv_widths(model) -> dict[str, int]:
    return {layer.name: layer.filters for layer in model.layers if layer.name.endswith("_conv2")}


def test_levels_double_from_the_base_unless_each_is_given():
    doubling = build_unet(4, 2, num_classes=4)
    assert conv_widths(doubling) == {
        "down0_conv2": 4,
        "down1_conv2": 8,
        "bottleneck_conv2": 16,
        "up1_conv2": 8,
        "up0_conv2": 4,
    }
    given = build_unet(4, 2, num_classes=4, level_filters=[4, 12, 24])
    assert conv_widths(given) == {
        "down0_conv2": 4,
        "down1_conv2": 12,
        "bottleneck_conv2": 24,
        "up1_conv2": 12,
        "up0_conv2": 4,
    }
    assert given.name == "unet_4-12-24_d2" and doubling.name == "unet_f4_d2"
    # the same full-resolution level, more work below it
    assert count_flops(given) > count_flops(doubling)
    assert given.output.shape[-1] == 5  # four classes and the centre heatmap


def test_level_filters_must_name_every_level_and_the_bottleneck():
    with pytest.raises(ValueError, match="depth \\+ 1 = 3 widths"):
        build_unet(4, 2, level_filters=[4, 8])
