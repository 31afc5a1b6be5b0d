"""On the CPU a small image runs as one window of its own size, not as overlapping tiles: the
network is fully convolutional, and two 256 tiles overlapping by 64 px for a 272x256 image
are twice the work. The cells found agree with the tiled run's."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from app.inference.decode import load_image
from app.inference.pipeline import scale_for, segment_image
from app.inference.preprocess import rescale_image
from app.inference.runner import OnnxSegmenter
from tests.conftest import FIXTURE_BCCD

BCCD_RBC_DIAMETER = 104  # BCCD's RBCs at its own magnification (TXL-PBC's boxes' median)


@pytest.fixture(scope="module")
def tiled(segmenter) -> OnnxSegmenter:
    options = replace(segmenter.options, max_window_pixels=0)
    return OnnxSegmenter(segmenter.model_dir, segmenter.metadata, options)


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
    # the work bound counts what runs: the window, not two tiles
    at_scale = rescale_image(image, scale).shape[:2]
    assert segmenter.work_pixels(*at_scale) == height * width
    assert tiled.work_pixels(*at_scale) == 2 * 256 * 256
    assert sum(n for n, _, _ in tiled_shapes) == 2 and {s[1:] for s in tiled_shapes} == {(256, 256)}
    for label, count in apart.counts.items():
        assert abs(whole.counts[label] - count) <= max(1, 0.05 * count), label
    assert whole.counts["rbc"] >= 10


def test_a_large_image_still_runs_as_tiles(segmenter):
    """Past max_window_pixels (and always on CUDA) the windows are the model's tiles."""
    assert not segmenter.whole_window(1040, 1024)  # over 1024 x 1024
    assert segmenter.whole_window(256, 256) and segmenter.whole_window(1024, 1024)
    assert segmenter.work_pixels(1030, 1030) == 36 * 256 * 256  # 6 x 6 tiles
