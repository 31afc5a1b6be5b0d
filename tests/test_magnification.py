"""The magnification estimate: its coarse step on real smears, and the whole estimate with the
shipped model on real images resampled to other magnifications."""

import numpy as np
import pytest
from PIL import Image

from app.inference.decode import load_image
from app.inference.magnification import (
    COARSE_MAX_SIDE,
    PROBE_FRACTION,
    coarse_rbc_diameter,
    estimate_rbc_diameter,
    log_signature,
    probe_size,
)
from app.inference.metadata import read_metadata, resolve_model_dir
from app.inference.preprocess import rescale_image
from app.inference.runner import OnnxSegmenter, RunnerOptions
from tests.conftest import FIXTURE_BCD, SHIPPED_MODEL
from training.data import load_dataset, median_rbc_diameter


@pytest.fixture(scope="module")
def segmenter() -> OnnxSegmenter:
    model_dir = resolve_model_dir(SHIPPED_MODEL)
    metadata = read_metadata(model_dir / "model.json")
    return OnnxSegmenter(model_dir, metadata, RunnerOptions(providers=("CPUExecutionProvider",)))


@pytest.fixture(scope="module")
def smears():
    return [(load_image(i.path), median_rbc_diameter([i])) for i in load_dataset(FIXTURE_BCD)]


def test_the_coarse_signature_follows_the_magnification(smears):
    image, _ = smears[0]
    ratios = [
        coarse_rbc_diameter(rescale_image(image, f)) / coarse_rbc_diameter(image) / f
        for f in (0.6, 1.6, 2.2)
    ]
    assert all(0.8 < r < 1.25 for r in ratios), ratios


def test_the_estimate_finds_the_rbc_size_at_other_magnifications(segmenter, smears):
    ratios = []
    for image, diameter in smears:
        for factor in (0.6, 1.0, 1.6, 2.2):
            resampled = rescale_image(image, factor)
            estimate = estimate_rbc_diameter(resampled, segmenter.metadata, segmenter.run_batch)
            ratios.append(estimate.rbc_diameter_px / (diameter * factor))
    ratios = np.array(ratios)
    assert abs(np.median(ratios) - 1) < 0.08, ratios.round(2)
    assert np.mean(np.abs(ratios - 1) <= 0.2) >= 0.8, ratios.round(2)


def test_the_probe_is_a_bounded_share_of_the_full_pass():
    # a 256 x 256 image that the full pass covers with one 256 tile: the probe is 128 x 128
    side = probe_size(256, 256, 1.0, 256, 16)
    assert side * side <= PROBE_FRACTION * 256 * 256 * 1.3
    # a large image: never more than one tile
    assert probe_size(4000, 4000, 1.0, 256, 16) == 256
    # never larger than the image itself once resampled
    assert probe_size(100, 100, 1.0, 256, 16) <= 112


def test_a_huge_image_costs_the_estimate_no_more_than_a_window(segmenter, smears):
    image, _ = smears[0]
    huge = np.tile(image, (12, 12, 1))  # 3072 x 3072 of real smear
    shapes = []

    def run(batch: np.ndarray) -> np.ndarray:
        shapes.append(batch.shape)
        return segmenter.run_batch(batch)

    window = huge[:COARSE_MAX_SIDE, :COARSE_MAX_SIDE]
    assert log_signature(huge).shape == log_signature(window).shape
    estimate_rbc_diameter(huge, segmenter.metadata, run)
    assert len(shapes) == 1 and shapes[0][1] <= segmenter.tile_size


def test_a_model_without_a_size_regressor_still_estimates(smears):
    image, diameter = smears[0]
    coarse = coarse_rbc_diameter(image, None)
    assert 0.6 < coarse / diameter < 1.6
    small = np.array(Image.fromarray(image).resize((128, 128)))
    assert coarse_rbc_diameter(small, None) > 0
