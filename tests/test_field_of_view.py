"""An eyepiece photo's dark surround: found, painted as empty glass, and counted around."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app.inference.decode import load_image
from app.inference.field_of_view import (
    FALLOFF_PX,
    GROW_SHARE,
    dark_surround,
    within_field_of_view,
)
from tests.conftest import FIXTURES as DATA
from tests.conftest import encode, make_client, wait_ready

SMEARS = sorted(p for p in DATA.rglob("*") if p.suffix in {".png", ".jpg"})
PBC = DATA / "txl-pbc" / "images" / "train" / "56857a29-a8bd-5b72-93f7-7057c6e7e92a.jpg"


def in_circle(image: np.ndarray, radius_share: float = 1.0) -> np.ndarray:
    """The pixels inside the circle inscribed in the image (scaled by `radius_share`)."""
    height, width = image.shape[:2]
    rows, cols = np.mgrid[:height, :width]
    radius = radius_share * min(height, width) / 2
    return (rows - height / 2) ** 2 + (cols - width / 2) ** 2 <= radius**2


def eyepiece(image: np.ndarray, falloff: float = 0.0) -> np.ndarray:
    """The image as seen through an eyepiece: black outside the inscribed circle, and with
    `falloff` its outer share of the radius darkening gradually to black."""
    height, width = image.shape[:2]
    rows, cols = np.mgrid[:height, :width]
    radius = min(height, width) / 2
    distance = np.hypot(rows - height / 2, cols - width / 2)
    light = np.clip((radius - distance) / (falloff * radius), 0, 1) if falloff else None
    out = image.copy()
    if light is not None:
        out = (image * light[..., None]).astype(np.uint8)
    out[distance > radius] = 0
    return out


@pytest.mark.parametrize("path", SMEARS, ids=lambda p: p.name)
def test_a_smear_without_a_surround_is_read_as_it_is(path: Path):
    image = load_image(path)
    assert dark_surround(image) is None
    field = within_field_of_view(image)
    assert field.image is image and field.cover == 1.0


def test_the_black_outside_a_round_field_is_painted_as_empty_glass():
    image = load_image(PBC)
    field = within_field_of_view(eyepiece(image))
    outside = ~in_circle(image)
    surround = dark_surround(eyepiece(image))
    assert surround is not None
    assert surround[outside].all()  # every black pixel
    # and inside the circle only its edge (the widening by FALLOFF_PX), never the smear
    assert not surround[in_circle(image, 1 - 3 * FALLOFF_PX / 180)].any()
    assert field.cover == pytest.approx(1 - surround.mean())
    assert 0.7 < field.cover < np.pi / 4
    # the paint is one light colour, the plasma's: lighter in green than most of the smear
    painted = field.image[outside]
    assert (painted == painted[0]).all()
    assert painted[0, 1] > np.percentile(image[..., 1], 50)
    kept = ~surround
    np.testing.assert_array_equal(field.image[kept], image[kept])


def test_the_darkening_towards_the_edge_goes_with_the_surround():
    image = load_image(PBC)
    dimmed = eyepiece(image, falloff=0.15)
    surround = dark_surround(dimmed)
    assert surround is not None
    bright = np.percentile(image.max(axis=2), 90)
    # the ring dimmed below GROW_SHARE of the bright level is left out with the black
    ring = in_circle(image) & ~in_circle(image, 0.85) & (dimmed.max(axis=2) < GROW_SHARE * bright)
    assert ring.any() and surround[ring].all()
    assert not surround[in_circle(image, 0.8)].any()


def test_a_small_dark_corner_is_left_alone():
    image = load_image(PBC)
    marked = image.copy()
    marked[:10, :10] = 0  # 100 px: under the 2 % a surround must cover
    assert dark_surround(marked) is None


def segment(client, image: np.ndarray, **params) -> dict:
    files = {"image": ("smear.png", encode(Image.fromarray(image), "PNG"), "image/png")}
    response = client.post("/segment", files=files, params={"include": "", **params})
    assert response.status_code == 200, response.text
    return response.json()


def rbcs_inside(body: dict, inside: np.ndarray) -> int:
    return sum(
        1
        for cell in body["cells"]
        if cell["label"] == "rbc" and inside[int(cell["centroid"][1]), int(cell["centroid"][0])]
    )


def test_an_eyepiece_photo_is_counted_like_the_smear_it_shows(client):
    image = load_image(PBC)
    inside = in_circle(image, 0.95)  # cells cut by the circle may go either way
    plain = segment(client, image)
    photo = segment(client, eyepiece(image))
    assert plain["field_of_view"] == 1.0
    assert 0.7 < photo["field_of_view"] < np.pi / 4
    assert photo["scale_source"] == "estimated"
    # without the surround left out, the black circle's edge reads as cells several times
    # larger than these, and most RBCs go uncounted
    assert photo["rbc_diameter_px"] == pytest.approx(plain["rbc_diameter_px"], rel=0.15)
    expected = rbcs_inside(plain, inside)
    assert expected >= 8
    assert abs(rbcs_inside(photo, inside) - expected) <= max(2, 0.2 * expected)
    assert not [w for w in photo["warnings"] if w["code"] == "scale_low_confidence"]
    # no cell in the painted surround
    outside = ~in_circle(image, 1.02)
    assert not any(outside[int(c["centroid"][1]), int(c["centroid"][0])] for c in photo["cells"])


def test_the_picture_shows_the_photo_and_its_headers_the_field(client):
    photo = eyepiece(load_image(PBC))
    files = {"image": ("smear.png", encode(Image.fromarray(photo), "PNG"), "image/png")}
    response = client.post("/segment", files=files, headers={"Accept": "image/png"})
    assert response.status_code == 200
    assert 0.7 < float(response.headers["X-Field-Of-View"]) < np.pi / 4
    overlay = np.asarray(Image.open(io.BytesIO(response.content)).convert("RGB"))
    corner = overlay[:5, :5]
    assert (corner == 0).all()  # the overlay is drawn on the photo as sent, surround and all


def test_the_estimate_reads_the_field_mirrored_into_its_window_and_no_black():
    image = np.asarray(Image.fromarray(load_image(PBC)).resize((1500, 1400)))
    field = within_field_of_view(eyepiece(image))
    # the magnification estimate reads at most a central 1,024 px window: only that is filled
    assert field.for_estimate.shape == (1024, 1024, 3)
    # every pixel comes from the field: none is as dark as the surround
    surround = dark_surround(eyepiece(image))
    darkest_in_field = image.max(axis=2)[~surround].min()
    assert field.for_estimate.max(axis=2).min() >= darkest_in_field
    assert field.image.shape == image.shape


def test_the_step_can_be_switched_off():
    with make_client(field_of_view=False) as switched_off:
        wait_ready(switched_off)
        body = segment(switched_off, eyepiece(load_image(PBC)))
    assert body["field_of_view"] == 1.0


def test_a_large_photo_is_searched_on_a_sample_and_painted_in_full():
    image = np.asarray(Image.fromarray(load_image(PBC)).resize((2400, 2400)))  # step 3
    photo = eyepiece(image)
    field = within_field_of_view(photo)
    black = ~in_circle(image)
    painted = field.image[black]
    assert (painted == painted[0]).all() and painted[0, 1] > 100  # every black pixel
    # the sampled edge is at most a few pixels wider than the full-size search's
    full = dark_surround(photo)
    assert full is not None and (1 - field.cover) >= full.mean()
    assert (1 - field.cover) - full.mean() < 0.01
