"""Network probabilities -> cell instances, class mask, per-cell measurements and counts."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import ndimage
from skimage.feature import peak_local_max
from skimage.measure import regionprops
from skimage.morphology import remove_small_objects
from skimage.segmentation import relabel_sequential, watershed

from app.inference.metadata import ModelMetadata


@dataclass(frozen=True)
class Cell:
    """One segmented cell, in the pixel coordinates of the image it was measured on."""

    id: int
    label: str
    bbox: tuple[int, int, int, int]  # x_min, y_min, x_max, y_max (max exclusive)
    centroid: tuple[float, float]  # x, y
    area: int
    score: float


@dataclass(frozen=True)
class Instances:
    """An instance map (0 background, else instance id) and each instance's class and score."""

    labels: np.ndarray
    classes: dict[int, int]
    scores: dict[int, float]


def class_map(probs: np.ndarray, metadata: ModelMetadata) -> np.ndarray:
    """The network's per-pixel class (argmax over the class channels), before any counting."""
    return probs[..., : len(metadata.classes)].argmax(axis=-1).astype(np.uint8)


def centre_map(probs: np.ndarray, rbc_mask: np.ndarray, metadata: ModelMetadata) -> np.ndarray:
    """Where cell centres are likely: the model's heatmap, or the scaled distance to the edge."""
    if metadata.counting.centre_source == "heatmap":
        return probs[..., metadata.output.channels.index("centre")]
    radius = metadata.rbc_diameter_px / 2
    return np.clip(ndimage.distance_transform_edt(rbc_mask) / radius, 0.0, 1.0)


def find_instances(probs: np.ndarray, metadata: ModelMetadata) -> Instances:
    """Split the per-pixel classes into cells.

    WBCs are large, rare and seldom touch, so each connected WBC region is one cell. RBCs pile
    up and overlap, so each peak of the centre map seeds one RBC, grown by watershed over the
    RBC region; fragments smaller than the minimum area are dropped.
    """
    counting = metadata.counting
    rbc_id, wbc_id = metadata.class_id("rbc"), metadata.class_id("wbc")
    class_probs = probs[..., : len(metadata.classes)]
    classes_at = class_map(probs, metadata)

    wbc_mask = ndimage.binary_fill_holes(
        remove_small_objects(classes_at == wbc_id, max_size=counting.wbc_min_area_px - 1)
    )
    wbc_labels, wbc_count = ndimage.label(wbc_mask)

    rbc_mask = (classes_at == rbc_id) & ~wbc_mask
    centres = centre_map(probs, rbc_mask, metadata)
    peaks = peak_local_max(
        np.where(rbc_mask, centres, 0.0),
        min_distance=counting.min_peak_distance_px,
        threshold_abs=counting.peak_threshold,
        labels=ndimage.label(rbc_mask)[0],
        exclude_border=False,
    )
    markers = np.zeros(rbc_mask.shape, dtype=np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    rbc_labels = watershed(-centres, markers, mask=rbc_mask)
    rbc_labels = remove_small_objects(rbc_labels, max_size=counting.rbc_min_area_px - 1)

    labels = np.where(
        wbc_labels > 0, wbc_labels, np.where(rbc_labels > 0, rbc_labels + wbc_count, 0)
    )
    labels = relabel_sequential(labels.astype(np.int32))[0]
    classes: dict[int, int] = {}
    scores: dict[int, float] = {}
    for region in regionprops(labels):
        class_id = wbc_id if wbc_mask[region.coords[0, 0], region.coords[0, 1]] else rbc_id
        classes[region.label] = class_id
        rows, cols = region.coords[:, 0], region.coords[:, 1]
        scores[region.label] = float(class_probs[rows, cols, class_id].mean())
    return Instances(labels=labels, classes=classes, scores=scores)


def resize_nearest(labels: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest-neighbour resample of a label image to (height, width)."""
    if labels.shape == (height, width):
        return labels
    resized = Image.fromarray(labels.astype(np.int32)).resize(
        (width, height), Image.Resampling.NEAREST
    )
    return np.array(resized).astype(labels.dtype)


def resize_instances(instances: Instances, height: int, width: int) -> Instances:
    """Nearest-neighbour resample of the instance map to another size, dropping vanished cells."""
    if instances.labels.shape == (height, width):
        return instances
    resized = resize_nearest(instances.labels.astype(np.int32), height, width)
    labels, forward, _ = relabel_sequential(resized)
    kept = {int(old): int(forward[old]) for old in np.unique(resized) if old}
    return Instances(
        labels=labels.astype(np.int32),
        classes={new: instances.classes[old] for old, new in kept.items()},
        scores={new: instances.scores[old] for old, new in kept.items()},
    )


def class_mask(instances: Instances) -> np.ndarray:
    """uint8 mask: each instance's pixels carry its class id, the rest is background (0)."""
    lookup = np.zeros(int(instances.labels.max()) + 1, dtype=np.uint8)
    for instance_id, class_id in instances.classes.items():
        lookup[instance_id] = class_id
    return lookup[instances.labels]


def describe_cells(instances: Instances, metadata: ModelMetadata) -> list[Cell]:
    """Per-cell measurements (bbox, centroid, area, score) from an instance map."""
    names = {c.id: c.name for c in metadata.classes}
    cells = []
    for region in regionprops(instances.labels):
        min_row, min_col, max_row, max_col = region.bbox
        row, col = region.centroid
        cells.append(
            Cell(
                id=int(region.label),
                label=names[instances.classes[region.label]],
                bbox=(int(min_col), int(min_row), int(max_col), int(max_row)),
                centroid=(round(float(col), 2), round(float(row), 2)),
                area=int(region.area),
                score=round(instances.scores[region.label], 4),
            )
        )
    return cells


def count_cells(cells: list[Cell], metadata: ModelMetadata) -> dict[str, int]:
    """Number of cells of each foreground class."""
    counts = {c.name: 0 for c in metadata.classes if c.id != 0}
    for cell in cells:
        counts[cell.label] += 1
    return counts
