"""A model may be run at another RBC diameter than its training scale
(model.json's inference_rbc_diameter_px); models without it run as they always did."""

import numpy as np
import pytest
from PIL import Image

from app.inference.magnification import estimate_rbc_diameter
from app.inference.metadata import read_metadata, resolve_model_dir
from app.inference.pipeline import estimated_scale, given_scale
from tests.conftest import FIXTURE_BCD, SHIPPED_MODEL
from training.config import TrainConfig
from training.train import build_metadata


@pytest.fixture(scope="module")
def shipped():
    return read_metadata(resolve_model_dir(SHIPPED_MODEL) / "model.json")


def test_a_model_json_without_it_runs_at_its_training_scale():
    older = read_metadata(SHIPPED_MODEL / "2.2.1" / "model.json")
    assert older.inference_rbc_diameter_px is None
    assert older.working_rbc_diameter_px == older.rbc_diameter_px == 40
    choice = given_scale(older, 80.0, None)
    assert choice.scale == pytest.approx(0.5) and choice.rbc_diameter_px == pytest.approx(80)
    assert older.layout.rbc_diameter_px == 40


def test_the_working_diameter_sets_the_resampling_and_the_layout(shipped):
    at_46 = shipped.model_copy(update={"inference_rbc_diameter_px": 46.0})
    at_training = shipped.model_copy(update={"inference_rbc_diameter_px": None})
    given = given_scale(at_46, 92.0, None)
    assert given.scale == pytest.approx(0.5) and given.rbc_diameter_px == pytest.approx(92)
    # a scale the client gives is applied as is; the diameter it implies is at the working scale
    assert given_scale(at_46, None, 0.5).rbc_diameter_px == pytest.approx(92)
    assert given_scale(at_training, None, 0.5).rbc_diameter_px == pytest.approx(
        2 * shipped.rbc_diameter_px
    )
    assert at_46.layout.rbc_diameter_px == 46

    image = np.array(Image.open(FIXTURE_BCD / "images" / "image-2.png").convert("RGB"))
    # the estimate reads the image's own RBC size, whatever scale the network then runs at
    diameter = estimate_rbc_diameter(image, at_46)
    assert diameter == estimate_rbc_diameter(image, at_training)
    assert estimated_scale(image, at_46).scale == pytest.approx(46 / diameter)
    assert estimated_scale(image, at_training).scale == pytest.approx(
        shipped.rbc_diameter_px / diameter
    )


def test_training_writes_the_working_diameter_and_scales_counting_defaults_to_it():
    plain = build_metadata(TrainConfig(train_rbc_diameter_px=40.0), 40.0)
    larger = build_metadata(
        TrainConfig(train_rbc_diameter_px=40.0, inference_rbc_diameter_px=46.0), 40.0
    )
    assert plain.inference_rbc_diameter_px is None
    assert plain.counting.octave_check_peak > plain.counting.octave_check_low_peak > 0
    assert larger.inference_rbc_diameter_px == 46 and larger.rbc_diameter_px == 40
    assert larger.counting.wbc_min_peak_distance_px == round(0.75 * 46)
    assert plain.counting.wbc_min_peak_distance_px == round(0.75 * 40)
    ratio = larger.counting.wbc_min_area_px / plain.counting.wbc_min_area_px
    assert ratio == pytest.approx((46 / 40) ** 2, rel=0.01)
