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


def full_resolution_convolutions(model, size: int) -> dict[str, int]:
    """The kernel size of each convolution whose output is at the input's resolution."""
    return {
        layer.name: layer.kernel_size[0]
        for layer in model.layers
        if type(layer).__name__ == "Conv2D" and layer.output.shape[1] == size
    }


def test_a_patchify_stem_leaves_one_3x3_convolution_at_full_resolution():
    full = build_unet(4, 2, num_classes=4, input_size=32)
    patchify = build_unet(
        4, 2, num_classes=4, input_size=32, level_filters=[4, 6, 12], stem="patchify"
    )
    assert full_resolution_convolutions(full, 32) == {
        "down0_conv1": 3,
        "down0_conv2": 3,
        "up0_conv1": 3,
        "up0_conv2": 3,
        "classes": 1,
        "centre": 1,
    }
    assert full_resolution_convolutions(patchify, 32) == {"up0_conv1": 3, "classes": 1, "centre": 1}
    stem = patchify.get_layer("stem_patchify")
    assert stem.output.shape[1:] == (16, 16, 6)  # into the second level, at its width
    # the last convolution reads the image beside the upsampled features
    assert patchify.get_layer("up0_concat").output.shape[-1] == 4 + 3
    assert patchify.get_layer("bottleneck_conv2").output.shape[1] == 8
    assert patchify.output.shape[1:] == (32, 32, 5)
    assert patchify.name == "unet_4-6-12_d2_patchify"
    assert count_flops(patchify) < count_flops(full)


def test_flops_of_a_free_size_model_follow_its_levels_with_either_stem():
    for stem in ("full", "patchify"):
        free = build_unet(4, 2, num_classes=4, level_filters=[4, 6, 12], stem=stem)
        fixed = build_unet(4, 2, num_classes=4, level_filters=[4, 6, 12], stem=stem, input_size=64)
        assert count_flops(free, 64, 64) == count_flops(fixed)


def test_an_unknown_stem_is_refused():
    with pytest.raises(ValueError, match="stem must be one of"):
        build_unet(4, 2, stem="strided")
