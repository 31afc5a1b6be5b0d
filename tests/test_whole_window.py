"""On the CPU a small image runs as one window of its own size, not as overlapping tiles: the
network is fully convolutional, and two 256 tiles overlapping by 64 px for a 272x256 image
are twice the work. The cells found agree with the tiled run's."""

from __future__ import annotations

import copy
import itertools
from dataclasses import replace

import numpy as np
import pytest

from app.inference.decode import load_image
from app.inference.pipeline import scale_for, segment_image
from app.inference.preprocess import rescale_image, window_side, window_starts
from app.inference.runner import OnnxSegmenter
from tests.conftest import FIXTURE_BCCD, FIXTURE_BCD
from training.data import load_dataset, median_rbc_diameter

BCCD_RBC_DIAMETER = 104  # BCCD's RBCs at its own magnification (TXL-PBC's boxes' median)


@pytest.fixture(scope="module")
def tiled(segmenter) -> OnnxSegmenter:
    options = replace(segmenter.options, max_window_pixels=0)
    return OnnxSegmenter(segmenter.model_dir, segmenter.metadata, options)


def load_annotations() -> dict:
    return {a.path.name: a for a in load_dataset(FIXTURE_BCD)}


def shapes_run(segmenter: OnnxSegmenter, shapes: list) -> callable:
    def run(batch: np.ndarray) -> np.ndarray:
        shapes.append(batch.shape[:3])
        return segmenter.run_batch(batch)

    return run


@pytest.mark.parametrize("name", ["BloodImage_00001.jpg", "BloodImage_00338.jpg"])
def test_a_640x480_smear_runs_as_one_window_and_finds_the_tiled_cells(segmenter, tiled, name):
    image = load_image(FIXTURE_BCCD / "JPEGImages" / name)
    scale = scale_for(segmenter.metadata.working_rbc_diameter_px, BCCD_RBC_DIAMETER, None)
    shapes: list = []
    whole = segment_image(image, segmenter, scale, run=shapes_run(segmenter, shapes))
    tiled_shapes: list = []
    apart = segment_image(image, tiled, scale, run=shapes_run(tiled, tiled_shapes))
    ((batch, height, width),) = shapes
    assert batch == 1 and (height, width) != (256, 256) and height * width < 2 * 256 * 256
    at_scale = rescale_image(image, scale).shape[:2]
    assert segmenter.network_pixels(*at_scale) == height * width
    assert tiled.network_pixels(*at_scale) == 2 * 256 * 256
    # the work bound is the tiles', whatever runs: the same images are admitted everywhere
    assert segmenter.work_pixels(*at_scale) == tiled.work_pixels(*at_scale) == 2 * 256 * 256
    assert sum(n for n, _, _ in tiled_shapes) == 2 and {s[1:] for s in tiled_shapes} == {(256, 256)}
    for label, count in apart.counts.items():
        assert abs(whole.counts[label] - count) <= max(1, 0.05 * count), label
    assert whole.counts["rbc"] >= 10


def test_windows_are_as_few_and_even_as_the_limit_allows():
    assert window_side(700, 1024, 64, 16) == 700
    assert window_side(2000, 1024, 64, 16) == 720  # three of 720, not 1024 + 1024 + overlap
    starts = window_starts(2000, 720, 64)
    assert len(starts) == 3 and starts[-1] + 720 == 2000
    assert max(b - a for a, b in itertools.pairwise(starts)) <= 720 - 64  # overlap >= 64
    assert window_side(1040, 1024, 64, 16) == 560


def test_a_large_image_runs_in_even_windows_and_finds_the_tiled_cells(segmenter, tiled):
    """Past max_window_pixels, windows of at most that area (not 256 tiles) on the CPU."""
    smear = load_image(FIXTURE_BCD / "images" / "image-2.png")
    mosaic = np.vstack([np.hstack([smear] * 6)] * 6)  # 1536x1536: 1216x1216 padded
    diameter = median_rbc_diameter([load_annotations()["image-2.png"]])
    scale = scale_for(segmenter.metadata.working_rbc_diameter_px, diameter, None)
    shapes: list = []
    whole = segment_image(mosaic, segmenter, scale, run=shapes_run(segmenter, shapes))
    apart = segment_image(mosaic, tiled, scale)
    assert len(shapes) == 4 and len(set(shapes)) == 1  # 2 x 2 windows, one a batch
    _, height, width = shapes[0]
    assert 256 < height * width <= segmenter.options.max_window_pixels
    at_scale = rescale_image(mosaic, scale).shape[:2]
    assert segmenter.network_pixels(*at_scale) == 4 * height * width
    assert segmenter.network_pixels(*at_scale) < 0.75 * tiled.network_pixels(*at_scale)  # 0.69
    assert segmenter.work_pixels(*at_scale) == tiled.work_pixels(*at_scale)
    for label, count in apart.counts.items():
        assert abs(whole.counts[label] - count) <= max(1, 0.03 * count), label
    assert whole.counts["rbc"] >= 300


def test_cuda_and_a_zero_limit_keep_the_tiles(segmenter, tiled):
    assert tiled.window_shape(1040, 1040) == (256, 256)
    assert tiled.network_pixels(1030, 1030) == 36 * 256 * 256  # 6 x 6 tiles
    assert segmenter.window_shape(256, 256) == (256, 256)
    assert segmenter.window_shape(1024, 1024) == (1024, 1024)  # one window
    assert segmenter.window_shape(1040, 1024) != (1040, 1024)  # past max_window_pixels


def test_cuda_keeps_the_model_tile(segmenter):
    """No GPU here: the same segmenter, its device read as CUDA (what window_shape decides on)."""
    on_cuda = copy.copy(segmenter)
    on_cuda.device = "cuda"
    assert on_cuda.window_shape(256, 288) == (256, 256)
    assert on_cuda.network_pixels(194, 258) == 2 * 256 * 256
    assert segmenter.window_shape(256, 288) == (256, 288)
