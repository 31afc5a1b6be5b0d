"""QuPath GeoJSON and ImageJ ROIs of real segmented cells, read back and checked."""

import io
import tempfile
import zipfile
from pathlib import Path

import pytest
import roifile
from shapely.geometry import Polygon, shape

from app.core.model_store import load_model
from app.core.segmenting import segment_upload
from app.inference.budget import WorkLimits
from app.inference.exports import imagej_rois
from app.inference.runner import RunnerOptions
from tests.conftest import fixture_image

LIMITS = WorkLimits(max_pixels=40_000_000, max_work_pixels=1 << 25)


@pytest.fixture(scope="module")
def result(shipped_model_dir):
    model = load_model(shipped_model_dir, RunnerOptions(providers=("CPUExecutionProvider",)))
    return segment_upload(fixture_image(), model, frozenset({"geojson"}), LIMITS)


def test_geojson_holds_one_valid_polygon_per_cell_with_its_area(result):
    collection = result.body["geojson"]
    cells = {c["id"]: c for c in result.body["cells"]}
    assert collection["type"] == "FeatureCollection"
    assert len(collection["features"]) == len(cells) > 10
    for feature in collection["features"]:
        cell = cells[int(feature["id"].removeprefix("cell-"))]
        polygon = shape(feature["geometry"])
        assert polygon.is_valid and feature["properties"]["objectType"] == "detection"
        assert feature["properties"]["classification"]["name"] == cell["label"]
        measurements = feature["properties"]["measurements"]
        assert measurements["area"] == cell["area"]
        assert measurements["diameter"] == cell["diameter"]
        # QuPath reads numbers only
        assert all(type(v) in (int, float) for v in measurements.values())
        assert measurements["on_border"] == int(cell["on_border"])
        # the outline runs through pixel edges' midpoints: close to the pixel count
        assert polygon.area == pytest.approx(cell["area"], rel=0.15)
        x_min, y_min, x_max, y_max = polygon.bounds
        bbox = cell["bbox"]
        assert (
            bbox[0] <= x_min + 1 and x_max <= bbox[2] and bbox[1] <= y_min + 1 and y_max <= bbox[3]
        )


def test_imagej_rois_round_trip(result):
    data = result_rois(result)
    assert zipfile.ZipFile(io.BytesIO(data)).namelist()
    rois = read_rois(data)
    cells = {f"{c['label']}-{c['id']}": c for c in result.body["cells"]}
    assert sorted(r.name for r in rois) == sorted(cells)
    for roi in rois:
        assert roi.roitype == roifile.ROI_TYPE.POLYGON
        area = Polygon(roi.coordinates()).area
        assert area == pytest.approx(cells[roi.name]["area"], rel=0.15)


def result_rois(result) -> bytes:
    return imagej_rois(result.body["geojson"])


def read_rois(data: bytes) -> list:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "cells.zip"
        path.write_bytes(data)
        return roifile.roiread(path)


def test_segment_serves_geojson_on_request(client):
    image = {"image": ("a.png", fixture_image())}
    body = client.post("/segment?include=geojson", files=image).json()
    assert body["geojson"]["features"] and body["mask"] is None
    whole = client.post("/segment", files=image, headers={"Accept": "application/geo+json"})
    assert whole.headers["content-type"] == "application/geo+json"
    assert whole.json() == body["geojson"]
    assert client.post("/segment?include=geo", files=image).status_code == 422
