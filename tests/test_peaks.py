"""region_peaks finds what skimage's peak_local_max with `labels` finds, in the same order."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from skimage.feature import peak_local_max

from app.inference.decode import load_image
from app.inference.metadata import read_metadata
from app.inference.pipeline import predict_probs
from app.inference.postprocess import class_map, fill_holes, region_peaks
from app.inference.runner import OnnxSegmenter, RunnerOptions
from tests.conftest import FIXTURES


def skimage_peaks(image: np.ndarray, regions: np.ndarray, distance: int, threshold: float):
    return peak_local_max(
        image, min_distance=distance, threshold_abs=threshold, labels=regions, exclude_border=False
    )


@pytest.fixture(scope="module")
def centre_maps(shipped_model_dir) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(centre map, RBC mask, WBC mask) of the shipped model on every fixture image, at the
    scale the model works at and at half and 1.5 times it."""
    metadata = read_metadata(shipped_model_dir / "model.json")
    options = RunnerOptions(providers=("CPUExecutionProvider",))
    segmenter = OnnxSegmenter(shipped_model_dir, metadata, options)
    layout = metadata.layout
    paths = sorted(FIXTURES.glob("*/images/*.png")) + sorted(FIXTURES.glob("**/*.jpg"))
    maps = []
    for path in paths:
        image = load_image(path)
        for factor in (0.5, 1.0, 1.5):
            probs = predict_probs(image, segmenter, factor * metadata.working_rbc_diameter_px / 54)
            classes = class_map(probs, layout)
            wbc = fill_holes(classes == layout.class_names.index("wbc"))
            rbc = (classes == layout.class_names.index("rbc")) & ~wbc
            maps.append((probs[..., layout.centre_channel], rbc, wbc))
    assert len(maps) >= 30
    return maps


def test_same_peaks_as_skimage_on_real_centre_maps(centre_maps):
    """The shipped model's centre maps, RBC and WBC regions, at the counting distances used
    and others: every coordinate and its order equal."""
    compared = found = 0
    for centres, rbc, wbc in centre_maps:
        for mask, distances in ((rbc, (14, 8)), (wbc, (34,))):
            image = np.where(mask, centres, 0.0)
            regions = ndimage.label(mask)[0]
            for distance in distances:
                for threshold in (0.15, 0.0):
                    expected = skimage_peaks(image, regions, distance, threshold)
                    got = region_peaks(image, regions, distance, threshold)
                    np.testing.assert_array_equal(got, expected)
                    compared += 1
                    found += len(got)
    assert compared > 200 and found > 1000


def test_same_peaks_as_skimage_on_flat_regions_ties_and_single_pixels():
    """Quantised values make ties and flat regions; sparse masks make one-pixel regions."""
    rng = np.random.default_rng(5)
    for _ in range(80):
        height, width = rng.integers(3, 50, 2)
        regions = ndimage.label(rng.random((height, width)) < rng.uniform(0.15, 0.85))[0]
        levels = int(rng.integers(1, 5))
        image = (np.round(rng.random((height, width)) * levels) * (regions > 0)).astype(np.float32)
        for distance in (1, 2, 4, 9):
            expected = skimage_peaks(image, regions, distance, 0.0)
            np.testing.assert_array_equal(region_peaks(image, regions, distance, 0.0), expected)


def test_a_lower_peak_is_dropped_only_near_a_higher_one_of_its_own_region():
    image = np.zeros((20, 40), dtype=np.float32)
    regions = np.zeros((20, 40), dtype=np.int32)
    regions[2:18, 2:24] = 1
    regions[2:18, 26:38] = 2
    image[10, 5], image[10, 12], image[10, 21] = 0.5, 0.9, 0.4  # 7 and 9 px from the 0.9
    image[10, 28] = 0.3  # another region's, 7 px from region 1's 0.4
    peaks = region_peaks(image, regions, 8, 0.1)
    assert [tuple(p) for p in peaks] == [(10, 12), (10, 21), (10, 28)]


def test_a_plateau_of_candidates_is_spaced_without_pairwise_tables():
    """An untrained network's centre map is nearly flat: every pixel of a plateau is a window
    maximum. Spacing tens of thousands of candidates must stay cheap in memory and time."""
    image = np.ones((200, 200), dtype=np.float32)
    image[5, 7] = 0.5  # not flat, so skimage's flat-region rule does not apply
    regions = np.ones((200, 200), dtype=np.int32)
    regions[:, 100:] = 2
    expected = skimage_peaks(image, regions, 14, 0.15)
    np.testing.assert_array_equal(region_peaks(image, regions, 14, 0.15), expected)
    assert len(expected) > 100
