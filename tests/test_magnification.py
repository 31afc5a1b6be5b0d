"""The magnification estimate: its signature on real smears, and the estimate with the shipped
model's size regressor on real images resampled to other magnifications."""

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from app.inference.decode import load_image
from app.inference.magnification import (
    COARSE_MAX_SIDE,
    LEGACY_SIGNATURE,
    SIGNATURE,
    SignatureSpec,
    coarse_rbc_diameter,
    estimate_rbc_diameter,
    gaussian_laplace,
    log_signature,
)
from app.inference.metadata import read_metadata, resolve_model_dir
from app.inference.preprocess import rescale_image
from tests.conftest import FIXTURE_BCD, ROOT, SHIPPED_MODEL
from training.data import load_dataset, median_rbc_diameter


@pytest.fixture(scope="module")
def metadata():
    return read_metadata(resolve_model_dir(SHIPPED_MODEL) / "model.json")


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


def test_the_estimate_finds_the_rbc_size_at_other_magnifications(metadata, smears):
    assert metadata.size_regressor is not None
    ratios = []
    for image, diameter in smears:
        for factor in (0.6, 1.0, 1.6, 2.2):
            estimate = estimate_rbc_diameter(rescale_image(image, factor), metadata)
            ratios.append(estimate / (diameter * factor))
    ratios = np.array(ratios)
    assert abs(np.median(ratios) - 1) < 0.1, ratios.round(2)
    assert np.mean(np.abs(ratios - 1) <= 0.25) >= 0.8, ratios.round(2)


def test_a_huge_image_costs_the_estimate_no_more_than_a_window(smears):
    image, _ = smears[0]
    huge = np.tile(image, (12, 12, 1))  # 3072 x 3072 of real smear
    window = huge[:COARSE_MAX_SIDE, :COARSE_MAX_SIDE]
    np.testing.assert_allclose(log_signature(huge), log_signature(window), rtol=0.05, atol=0.02)


def test_a_model_without_a_size_regressor_still_estimates(smears):
    image, diameter = smears[0]
    coarse = coarse_rbc_diameter(image, None)
    assert 0.6 < coarse / diameter < 1.6
    small = np.array(Image.fromarray(image).resize((32, 32)))
    assert coarse_rbc_diameter(small, None) > 0


def test_the_signatures_laplacian_is_scipys_to_the_bit(smears):
    """The size regressor was fitted on ndimage.gaussian_laplace: the cached-kernel version
    the signature uses must give the very same numbers, at every sigma it meets."""
    green = smears[0][0][..., 1].astype(np.float32)
    for sigma in (1.5, 1.4999999999999998, 2.0, 3.7):
        assert np.array_equal(
            gaussian_laplace(green, sigma), ndimage.gaussian_laplace(green, sigma)
        )


def test_each_model_reads_the_signature_its_regressor_was_fitted_on(metadata, smears):
    """2.0.0 and 2.1.0 were fitted on the legacy signature and keep it; a regressor fitted since
    names its own (the octave pyramid), and the two differ enough that mixing them up shows."""
    older = read_metadata(ROOT / "models" / "bloodseg" / "2.1.0" / "model.json")
    assert SignatureSpec.of(older.size_regressor) == LEGACY_SIGNATURE
    assert SignatureSpec.of(None) == LEGACY_SIGNATURE
    assert SignatureSpec.of(metadata.size_regressor) == SIGNATURE != LEGACY_SIGNATURE
    image, diameter = smears[0]
    legacy, octaves = log_signature(image), log_signature(image, SIGNATURE)
    assert legacy.shape == octaves.shape and not np.allclose(legacy, octaves)
    for model in (older, metadata):
        assert 0.85 < estimate_rbc_diameter(image, model) / diameter < 1.15
