"""Cells in the formats other tools read: outlines, QuPath GeoJSON, ImageJ ROIs, CSV rows."""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

import numpy as np
from scipy import ndimage
from skimage.measure import find_contours

from app.inference.metadata import ModelMetadata
from app.inference.postprocess import Cell

CELL_COLUMNS = (
    "id",
    "label",
    "x_min",
    "y_min",
    "x_max",
    "y_max",
    "centroid_x",
    "centroid_y",
    "area",
    "score",
    "diameter",
    "on_border",
)


def cell_outlines(labels: np.ndarray) -> dict[int, np.ndarray]:
    """Each instance's outer contour as a closed (N, 2) array of (x, y) points in continuous image
    coordinates (pixel (r, c) covers x in [c, c+1], y in [r, r+1], as QuPath and ImageJ count)."""
    outlines: dict[int, np.ndarray] = {}
    for index, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None:
            continue
        crop = np.pad(labels[box] == index, 1).astype(np.float32)
        contours = find_contours(crop, 0.5)
        if not contours:
            continue
        longest = max(contours, key=len)
        offset = (box[1].start - 0.5, box[0].start - 0.5)  # the pad, and pixel centres
        points = longest[:, ::-1] + offset
        if not np.array_equal(points[0], points[-1]):
            points = np.vstack([points, points[:1]])
        outlines[index] = points
    return outlines


def cell_row(cell: Cell) -> dict[str, object]:
    """One cell as a flat CSV row (without the image column)."""
    x_min, y_min, x_max, y_max = cell.bbox
    return {
        "id": cell.id,
        "label": cell.label,
        "x_min": x_min,
        "y_min": y_min,
        "x_max": x_max,
        "y_max": y_max,
        "centroid_x": cell.centroid[0],
        "centroid_y": cell.centroid[1],
        "area": cell.area,
        "score": cell.score,
        "diameter": cell.diameter,
        "on_border": cell.on_border,
    }


def geojson(cells: list[Cell], outlines: dict[int, np.ndarray], metadata: ModelMetadata) -> dict:
    """A FeatureCollection as QuPath imports it: one detection polygon per cell, classified by
    its label, with its measurements."""
    colors = {c.name: list(c.color) for c in metadata.classes}
    features = []
    for cell in cells:
        points = outlines.get(cell.id)
        if points is None or len(points) < 4:
            continue
        row = cell_row(cell)
        features.append(
            {
                "type": "Feature",
                "id": f"cell-{cell.id}",
                "geometry": {
                    "type": "Polygon",
                    "coordinates": [points.round(2).tolist()],
                },
                "properties": {
                    "objectType": "detection",
                    "name": f"{cell.label} {cell.id}",
                    "classification": {"name": cell.label, "color": colors[cell.label]},
                    # QuPath's measurements are numbers: on_border as 0 or 1
                    "measurements": {
                        k: int(v) if isinstance(v, bool) else v
                        for k, v in row.items()
                        if k not in {"label", "id"}
                    },
                },
            }
        )
    return {"type": "FeatureCollection", "features": features}


def imagej_rois(collection: dict) -> bytes:
    """A zip of ImageJ polygon ROIs, one per GeoJSON cell, named '<label>-<id>' (Fiji's ROI
    Manager opens it). Built from the GeoJSON, so a remote service's answer serves as well."""
    import roifile  # imported here: only this export needs it

    rois = []
    for feature in collection["features"]:
        ring = np.array(feature["geometry"]["coordinates"][0][:-1], dtype=np.float32)
        label = feature["properties"]["classification"]["name"]
        name = f"{label}-{feature['id'].removeprefix('cell-')}"
        roi = roifile.ImagejRoi.frompoints(ring, name=name)
        roi.roitype = roifile.ROI_TYPE.POLYGON
        rois.append(roi)
    if not rois:
        return _empty_zip()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "cells.zip"
        roifile.roiwrite(path, rois)
        return path.read_bytes()


def _empty_zip() -> bytes:
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w"):
        pass
    return buffer.getvalue()
