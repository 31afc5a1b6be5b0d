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
    PERCENTILES,
    PYRAMID_SIGNATURE,
    SIGMAS,
    SIGNATURE,
    SignatureSpec,
    coarse_rbc_diameter,
    estimate_rbc_diameter,
    gaussian_laplace,
    level_plan,
    log_signature,
    percentiles,
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


def test_a_bounded_signature_filters_at_most_its_pixels_per_level():
    assert SIGNATURE.level_pixels > 0
    for height, width in ((480, 640), (575, 575), (1024, 1024), (300, 2000)):
        plans = [level_plan(height, width, sigma, SIGNATURE) for sigma in SIGMAS]
        pixels = [size[0] * size[1] for _, size, _ in plans]
        # rounding each side may add a row and a column
        assert max(pixels) <= SIGNATURE.level_pixels * 1.05, pixels
        assert plans[0][2] < 1 and plans[-1][2] == 1  # the finest levels are cut, not the coarse
        unbounded = [level_plan(height, width, sigma, PYRAMID_SIGNATURE) for sigma in SIGMAS]
        assert all(keep == 1 for _, _, keep in unbounded)
        assert [p[0] for p in plans] == [p[0] for p in unbounded]  # the same shrink


def test_a_bounded_signature_changes_only_the_levels_it_cuts(smears):
    """On a real smear resampled to 563 x 563, the levels read whole are the pyramid's to the
    bit; the cut ones read a central window of the same smear and stay close."""
    image = rescale_image(smears[0][0], 2.2)
    height, width = image.shape[:2]
    cut = np.array([level_plan(height, width, s, SIGNATURE)[2] < 1 for s in SIGMAS])
    assert 0 < cut.sum() < len(SIGMAS)
    bounded = log_signature(image, SIGNATURE)
    whole = log_signature(image, PYRAMID_SIGNATURE)
    assert np.array_equal(bounded[~cut], whole[~cut])
    assert not np.array_equal(bounded[cut], whole[cut])
    np.testing.assert_allclose(bounded[cut], whole[cut], rtol=0.25, atol=0.05)


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


def test_the_signatures_percentiles_are_numpys_to_the_bit(smears):
    """Likewise its percentiles: the same as np.percentile's, bit for bit, on real responses,
    on ties and on every size from a single value up."""
    rng = np.random.default_rng(3)
    green = smears[0][0][..., 1].astype(np.float32)
    samples = [-gaussian_laplace(green, 2.0) * 4.0, green, green[:1, :1], green[:2, :3]]
    samples += [rng.standard_normal(n).astype(np.float32) for n in range(1, 300)]
    samples += [np.round(rng.standard_normal(n), 1) for n in (7, 64, 1001)]  # many ties
    for values in samples:
        assert np.array_equal(percentiles(values), np.percentile(values, PERCENTILES))


def test_each_model_reads_the_signature_its_regressor_was_fitted_on(smears):
    """2.0.0 and 2.1.0 were fitted on the legacy signature and keep it, 2.2.0 on the octave
    pyramid; a regressor fitted since (2.2.1, the shipped one) names the bounded pyramid. They
    differ enough that mixing them up shows, and each model estimates within 15 % on a real
    smear."""
    fitted_on = {"2.1.0": LEGACY_SIGNATURE, "2.2.0": PYRAMID_SIGNATURE, "2.2.1": SIGNATURE}
    assert SignatureSpec.of(None) == LEGACY_SIGNATURE
    assert len({LEGACY_SIGNATURE, PYRAMID_SIGNATURE, SIGNATURE}) == 3
    image, diameter = smears[0]
    assert not np.allclose(log_signature(image), log_signature(image, PYRAMID_SIGNATURE))
    shipped = read_metadata(resolve_model_dir(SHIPPED_MODEL) / "model.json")
    assert SignatureSpec.of(shipped.size_regressor) == SIGNATURE
    for version, spec in fitted_on.items():
        model = read_metadata(ROOT / "models" / "bloodseg" / version / "model.json")
        assert SignatureSpec.of(model.size_regressor) == spec
        assert 0.85 < estimate_rbc_diameter(image, model) / diameter < 1.15
