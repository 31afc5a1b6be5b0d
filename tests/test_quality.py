"""The warnings a result carries: each one raised by the situation it names, and only then."""

import numpy as np
import pytest
from PIL import Image

from app.inference.decode import decode_image
from app.inference.magnification import MIN_CONTRAST, green_contrast
from app.inference.metadata import read_metadata, resolve_model_dir
from app.inference.pipeline import ScaleChoice, Segmentation, given_scale
from app.inference.postprocess import Instances, describe_cells
from app.inference.quality import MIN_COLOUR, colour_spread, result_warnings
from tests.conftest import FIXTURE_BCD, SHIPPED_MODEL, encode


@pytest.fixture(scope="module")
def metadata():
    return read_metadata(resolve_model_dir(SHIPPED_MODEL) / "model.json")


def segmentation(mask: np.ndarray, rbc: int, metadata) -> Segmentation:
    """The mask's pixels as one cell, measured as the pipeline measures cells."""
    instances = Instances(mask.astype(np.int32), {1: 1}, {1: 1.0})
    return Segmentation(
        network_instances=instances,
        size=mask.shape,
        cells=describe_cells(instances, metadata.layout),
        counts={"rbc": rbc, "wbc": 0},
    )


def codes(found) -> list[str]:
    return [w.code for w in found]


def smear_mask(cover: float) -> np.ndarray:
    mask = np.zeros((200, 200), dtype=np.uint8)
    mask[: round(200 * cover)] = 1
    return mask


def test_a_plain_smear_at_a_given_scale_has_no_warning(metadata):
    choice = given_scale(metadata, metadata.rbc_diameter_px, None)
    assert (
        codes(result_warnings(segmentation(smear_mask(0.6), 10, metadata), choice, metadata)) == []
    )


def test_mostly_background(metadata):
    choice = given_scale(metadata, metadata.rbc_diameter_px, None)
    found = result_warnings(segmentation(smear_mask(0.01), 0, metadata), choice, metadata)
    assert codes(found) == ["mostly_background"] and "1.0%" in found[0].message


def test_more_rbcs_than_fit_is_unusually_high(metadata):
    choice = given_scale(metadata, metadata.rbc_diameter_px, None)
    fits = 200 * 200 / (np.pi * (metadata.rbc_diameter_px / 2) ** 2)
    assert "count_unusually_high" not in codes(
        result_warnings(segmentation(smear_mask(0.6), int(fits * 0.8), metadata), choice, metadata)
    )
    assert "count_unusually_high" in codes(
        result_warnings(segmentation(smear_mask(0.6), int(fits * 1.5), metadata), choice, metadata)
    )


def test_a_magnification_outside_the_training_range(metadata):
    low, high = metadata.trained_diameter_range_px()
    for diameter in (low * 0.8, high * 1.2):
        choice = given_scale(metadata, diameter, None)
        found = codes(result_warnings(segmentation(smear_mask(0.6), 1, metadata), choice, metadata))
        assert found == ["magnification_out_of_range"]
    inside = given_scale(metadata, (low + high) / 2, None)
    assert (
        codes(result_warnings(segmentation(smear_mask(0.6), 1, metadata), inside, metadata)) == []
    )


def test_an_estimate_the_cells_found_do_not_confirm(metadata):
    diameter = metadata.rbc_diameter_px
    few = ScaleChoice(1.0, diameter, "estimated", measured_px=None)
    found = result_warnings(segmentation(smear_mask(0.6), 5, metadata), few, metadata)
    assert codes(found) == ["scale_low_confidence"] and "too few whole RBCs" in found[0].message
    off = ScaleChoice(1.0, diameter, "estimated", True, measured_px=diameter * 1.3)
    found = result_warnings(segmentation(smear_mask(0.6), 5, metadata), off, metadata)
    assert (
        codes(found) == ["scale_low_confidence"] and f"{diameter * 1.3:.0f} px" in found[0].message
    )
    agreed = ScaleChoice(1.0, diameter, "estimated", measured_px=diameter * 1.05)
    assert (
        codes(result_warnings(segmentation(smear_mask(0.6), 5, metadata), agreed, metadata)) == []
    )


def test_warnings_reach_the_response(client):
    data = (FIXTURE_BCD / "images" / "image-2.png").read_bytes()
    response = client.post(
        "/segment?include=&rbc_diameter=12", files={"image": ("a.png", data, "image/png")}
    )
    body = response.json()
    assert response.status_code == 200
    assert "magnification_out_of_range" in [w["code"] for w in body["warnings"]]
    assert all(w["message"] for w in body["warnings"])


def test_a_blank_frame_is_not_estimated_from_its_noise(client):
    """A frame with nothing on it (empty glass, a closed shutter) has no cells to measure: its
    estimate, read from sensor noise, asked for RBCs of about 9 px, five times the scale and
    25 times the pixels. It is segmented once at the model's own scale, and says why."""
    rng = np.random.default_rng(1)
    glass = np.clip(rng.normal(225, 1.5, (480, 640, 3)), 0, 255).astype(np.uint8)
    assert green_contrast(glass) < MIN_CONTRAST
    smear = (FIXTURE_BCD / "images" / "image-2.png").read_bytes()
    assert green_contrast(decode_image(smear)) > 4 * MIN_CONTRAST
    response = client.post(
        "/segment?include=", files={"image": ("glass.png", encode(Image.fromarray(glass), "PNG"))}
    )
    body = response.json()
    assert response.status_code == 200
    assert (body["scale"], body["scale_source"], body["scale_passes"]) == (1.0, "default", 1)
    assert body["counts"]["rbc"] == 0
    found = {w["code"]: w["message"] for w in body["warnings"]}
    assert "too little to estimate" in found["scale_low_confidence"]
    assert "mostly_background" in found
    plain = client.post("/segment?include=", files={"image": ("s.png", smear)}).json()
    assert plain["scale_source"] == "estimated"


def test_a_greyscale_image_is_said_to_be_one(client):
    """The classes are told apart by their stain: a greyscale copy of a real smear is
    segmented, and the response says what was lost; the colour original says nothing of it."""
    data = (FIXTURE_BCD / "images" / "image-2.png").read_bytes()
    colour = decode_image(data)
    grey = Image.fromarray(colour).convert("L")
    assert colour_spread(colour) > 3 * MIN_COLOUR
    assert colour_spread(np.asarray(grey.convert("RGB"))) == 0.0
    for kind, fmt in (("L", "PNG"), ("RGB", "JPEG")):  # grey as grey, and as JPEG'd RGB
        sent = encode(grey.convert(kind), fmt, **({"quality": 70} if fmt == "JPEG" else {}))
        body = client.post("/segment?include=", files={"image": ("g", sent)}).json()
        found = {w["code"]: w["message"] for w in body["warnings"]}
        assert "platelet F1" in found["greyscale_image"] and body["counts"]["rbc"] > 5
    plain = client.post("/segment?include=", files={"image": ("c.png", data)}).json()
    assert "greyscale_image" not in [w["code"] for w in plain["warnings"]]
