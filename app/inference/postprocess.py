"""Network probabilities -> cell instances, class mask, per-cell measurements and counts."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import ndimage
from skimage.feature import peak_local_max
from skimage.morphology import remove_small_objects
from skimage.segmentation import watershed

from app.inference.metadata import ChannelLayout, Counting

# how many pixel rings class weights may widen a cell by (widen_cells): at the working scale
# the RBCs' calibrated weight moves their edge by one or two pixels
WIDEN_STEPS = 4


@dataclass(frozen=True)
class Cell:
    """One segmented cell, in the pixel coordinates of the image it was measured on."""

    id: int
    label: str
    bbox: tuple[int, int, int, int]  # x_min, y_min, x_max, y_max (max exclusive)
    centroid: tuple[float, float]  # x, y
    area: int
    score: float
    # the cell's size as boxes are annotated (box_size of its box, pixels)
    diameter: float = 0.0
    # the cell reaches the image border: its area and diameter measure the visible part only
    on_border: bool = False


def box_size(bbox: tuple[int, int, int, int]) -> float:
    """A box's size as boxes are annotated: the mean of its width and height."""
    x_min, y_min, x_max, y_max = bbox
    return (x_max - x_min + y_max - y_min) / 2


def touches_border(bbox: tuple[int, int, int, int], height: int, width: int) -> bool:
    """Whether a box (max exclusive) reaches the border of an image of this size."""
    x_min, y_min, x_max, y_max = bbox
    return x_min == 0 or y_min == 0 or x_max == width or y_max == height


@dataclass(frozen=True)
class Instances:
    """An instance map (0 background, else instance id) and each instance's class and score;
    `counted` is the map before class weights widened its cells (None: not widened), the one
    the scale is measured on."""

    labels: np.ndarray
    classes: dict[int, int]
    scores: dict[int, float]
    counted: np.ndarray | None = None


def class_map(
    probs: np.ndarray, layout: ChannelLayout, class_weights: Mapping[str, float] | None = None
) -> np.ndarray:
    """The per-pixel class, before any counting: the argmax over the class channels. With
    `class_weights` (Counting.class_weights), a background pixel goes to the class whose
    probability times its weight beats background's, if one does (weighted_classes)."""
    plain = probs[..., : len(layout.class_names)].argmax(axis=-1).astype(np.uint8)
    return weighted_classes(probs, plain, layout, class_weights) if class_weights else plain


def weighted_classes(
    probs: np.ndarray,
    plain: np.ndarray,
    layout: ChannelLayout,
    class_weights: Mapping[str, float],
) -> np.ndarray:
    """The plain class map `plain` with each background pixel given to the class whose
    probability times its weight beats background's, if one does."""
    classes = probs[..., : len(layout.class_names)]
    weighted = [
        (class_id, weight)
        for class_id, name in enumerate(layout.class_names)
        if class_id and (weight := class_weights.get(name, 1.0)) != 1.0
    ]
    if not weighted:
        return plain
    result, to_beat = plain.copy(), classes[..., 0]
    for class_id, weight in weighted:
        score = classes[..., class_id] * classes.dtype.type(weight)
        wins = (plain == 0) & (score > to_beat)
        result[wins] = class_id
        to_beat = np.where(wins, score, to_beat)
    return result


def centre_map(
    probs: np.ndarray, rbc_mask: np.ndarray, counting: Counting, layout: ChannelLayout
) -> np.ndarray:
    """Where cell centres are likely: the model's heatmap, or the scaled distance to the edge."""
    if counting.centre_source == "heatmap":
        return probs[..., layout.centre_channel]
    radius = layout.rbc_diameter_px / 2
    return np.clip(ndimage.distance_transform_edt(rbc_mask) / radius, 0.0, 1.0)


def regions_reaching(mask: np.ndarray, seeds: np.ndarray | None = None) -> np.ndarray:
    """The connected regions of `mask` that reach the image border, or, given a boolean
    `seeds`, that hold one of its pixels (one labelling, then a look-up per pixel)."""
    labels, count = ndimage.label(mask)
    if seeds is None:
        reached = np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])
    else:
        reached = labels[seeds]
    keep = np.zeros(count + 1, dtype=bool)
    keep[reached] = True
    keep[0] = False  # outside the mask
    return keep[labels]


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """The mask with its holes filled: background regions that do not reach the border
    (what ndimage.binary_fill_holes gives, from one labelling instead of repeated dilations)."""
    return mask | ~regions_reaching(~mask)


def inner_boundaries(labels: np.ndarray) -> np.ndarray:
    """Pixels of an instance with a 4-neighbour of another value (skimage's
    find_boundaries(mode="inner"), from four shifted comparisons)."""
    edges = np.zeros(labels.shape, dtype=bool)
    vertical = labels[1:] != labels[:-1]
    horizontal = labels[:, 1:] != labels[:, :-1]
    edges[1:] |= vertical
    edges[:-1] |= vertical
    edges[:, 1:] |= horizontal
    edges[:, :-1] |= horizontal
    return edges & (labels > 0)


def relabel_sequential(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Labels renumbered 1..n in order of their old ids (0 stays 0), and the old-to-new
    lookup (0 where an id is absent): skimage's relabel_sequential, from one bincount instead
    of sorting the pixels' values (labels are small non-negative ints here)."""
    present = np.bincount(labels.ravel()) > 0
    present[0] = False
    forward = (np.cumsum(present) * present).astype(labels.dtype)
    return np.take(forward, labels), forward


def drop_small_labels(labels: np.ndarray, min_area: int) -> np.ndarray:
    """Labels with every id covering fewer than `min_area` pixels set to 0: skimage's
    remove_small_objects on a label map, which warns on a map of one label (a smear with one
    RBC region) as if it were a mistake."""
    small = np.bincount(labels.ravel()) < min_area
    small[0] = False
    return np.where(small[labels], 0, labels)


def region_peaks(
    image: np.ndarray, regions: np.ndarray, min_distance: int, threshold: float
) -> np.ndarray:
    """skimage's `peak_local_max(image, min_distance, threshold_abs=threshold, labels=regions,
    exclude_border=False)`: the same peaks in the same order, in half the time. skimage spaces
    each region's peaks with a k-d tree of its own, which on a smear's dozens of regions with
    a few peaks each cost more than finding them; here its candidates (every window maximum,
    highest first per region) are spaced by one greedy pass."""
    size = 2 * min_distance + 1
    candidates = peak_local_max(
        image,
        min_distance=1,  # no spacing by skimage; the footprint keeps the window's size
        footprint=np.ones((size, size), dtype=bool),
        threshold_abs=threshold,
        labels=regions,
        exclude_border=False,
    )
    if min_distance <= 1 or len(candidates) < 2:
        return candidates
    return candidates[_spaced(candidates, regions, min_distance)]


def _spaced(candidates: np.ndarray, regions: np.ndarray, distance: int) -> np.ndarray:
    """Which candidates to keep, taken in order: one closer than `distance` in both directions
    to a kept one of its own region is dropped (skimage's ensure_spacing, Chebyshev norm). A
    kept peak marks the pixels of its region within that distance, so each candidate costs one
    look-up, however many there are (a flat map makes every pixel one)."""
    blocked = np.zeros(regions.shape, dtype=bool)
    keep = np.zeros(len(candidates), dtype=bool)
    reach = distance - 1
    for index, (row, col) in enumerate(candidates.tolist()):
        if blocked[row, col]:
            continue
        keep[index] = True
        rows = slice(max(row - reach, 0), row + reach + 1)
        cols = slice(max(col - reach, 0), col + reach + 1)
        blocked[rows, cols] |= regions[rows, cols] == regions[row, col]
    return keep


def _peak_instances(
    mask: np.ndarray, centres: np.ndarray, min_distance: int, threshold: float, min_area: int
) -> np.ndarray:
    """One instance per peak of the centre map inside `mask`, grown by watershed over the
    mask; fragments smaller than `min_area` are dropped. Ids are 1..n."""
    peaks = region_peaks(
        np.where(mask, centres, 0.0), ndimage.label(mask)[0], min_distance, threshold
    )
    markers = np.zeros(mask.shape, dtype=np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    labels = watershed(-centres, markers, mask=mask)
    labels = drop_small_labels(labels, min_area)
    return relabel_sequential(labels)[0]


def _split_wbcs(wbc_mask: np.ndarray, centres: np.ndarray, counting: Counting) -> np.ndarray:
    """WBC instances: each WBC region split at its centre peaks; a region with no peak above
    the threshold (a faint heatmap) stays one cell, so no WBC is ever lost to splitting."""
    labels = np.zeros(wbc_mask.shape, dtype=np.int32)
    if not wbc_mask.any():
        return labels
    # all of the work within the WBCs' bounding box: nothing outside it joins or splits them
    box = ndimage.find_objects(wbc_mask.astype(np.int8))[0]
    labels[box] = _split_wbc_regions(wbc_mask[box], centres[box], counting)
    return labels


def _split_wbc_regions(wbc_mask: np.ndarray, centres: np.ndarray, counting: Counting) -> np.ndarray:
    """_split_wbcs on a map that holds every WBC pixel."""
    regions, _ = ndimage.label(wbc_mask)
    split = _peak_instances(
        wbc_mask,
        centres,
        counting.wbc_min_peak_distance_px,
        counting.peak_threshold,
        # a piece of a real WBC split off is a fraction of the minimum WBC area
        max(1, counting.wbc_min_area_px // 2),
    )
    unsplit = np.setdiff1d(np.unique(regions[wbc_mask]), np.unique(regions[split > 0]))
    whole = np.isin(regions, unsplit) & wbc_mask
    labels = split.copy()
    labels[whole] = relabel_sequential(np.where(whole, regions, 0))[0][whole] + split.max()
    # pixels of a split region that watershed left out (small fragments) join the nearest cell
    orphans = wbc_mask & (labels == 0)
    if orphans.any() and labels.max():
        nearest = ndimage.distance_transform_edt(labels == 0, return_indices=True)[1]
        labels[orphans] = labels[nearest[0][orphans], nearest[1][orphans]]
    return labels


def find_instances(probs: np.ndarray, counting: Counting, layout: ChannelLayout) -> Instances:
    """Split the per-pixel classes into cells, with the thresholds in `counting`.

    RBCs pile up and overlap, so each peak of the centre map seeds one RBC, grown by watershed
    over the RBC region; fragments smaller than the minimum area are dropped. WBCs are one per
    connected region (`wbc_components_rbc_peaks`), or split at centre peaks far enough apart
    that one lobed nucleus stays one cell (`cell_peaks`); a WBC's holes are its own, unless they
    are platelet. Platelets are connected regions.
    """
    names = layout.class_names
    rbc_id, wbc_id = names.index("rbc"), names.index("wbc")
    platelet_id = names.index("platelet") if "platelet" in names else None
    class_probs = probs[..., : len(names)]
    classes_at = class_map(probs, layout)

    wbc_mask = fill_holes(
        remove_small_objects(classes_at == wbc_id, max_size=counting.wbc_min_area_px - 1)
    )
    if platelet_id is not None:
        # a platelet on a WBC's edge can be ringed by WBC pixels: it is not a hole of the WBC
        wbc_mask &= classes_at != platelet_id
    rbc_mask = (classes_at == rbc_id) & ~wbc_mask
    centres = centre_map(probs, rbc_mask, counting, layout)
    if counting.method == "cell_peaks" and layout.centre_channel is not None:
        wbc_labels = _split_wbcs(wbc_mask, centres, counting)
    else:
        wbc_labels = ndimage.label(wbc_mask)[0]
    rbc_labels = _peak_instances(
        rbc_mask,
        centres,
        counting.min_peak_distance_px,
        counting.peak_threshold,
        counting.rbc_min_area_px,
    )
    platelet_labels = np.zeros_like(rbc_labels)
    if platelet_id is not None:
        platelet_mask = remove_small_objects(
            (classes_at == platelet_id) & ~wbc_mask, max_size=counting.platelet_min_area_px - 1
        )
        platelet_labels = ndimage.label(platelet_mask)[0]

    # WBCs take ids 1..w, RBCs the next ones, platelets the last: an id alone tells the class
    labels = np.zeros(rbc_labels.shape, dtype=np.int32)
    classes: dict[int, int] = {}
    offset = 0
    for class_id, layer in (
        (wbc_id, wbc_labels),
        (rbc_id, rbc_labels),
        (platelet_id, platelet_labels),
    ):
        found = int(layer.max())
        if not found:
            continue
        free = (labels == 0) & (layer > 0)
        labels[free] = layer[free] + offset
        classes.update({offset + i: class_id for i in range(1, found + 1)})
        offset += found
    labels, forward = relabel_sequential(labels)
    classes = {int(forward[old]): cid for old, cid in classes.items() if forward[old]}
    count = int(labels.max())
    own_class = class_mask(Instances(labels, classes, {}))
    own_class_prob = np.take_along_axis(class_probs, own_class[..., None], axis=-1)[..., 0]
    sums = np.bincount(labels.ravel(), weights=own_class_prob.ravel(), minlength=count + 1)
    areas = np.bincount(labels.ravel(), minlength=count + 1)
    means = sums[1:] / np.maximum(areas[1:], 1)
    scores = {i: float(mean) for i, mean in enumerate(means, start=1)}
    if platelet_id is not None and counting.platelet_min_score > 0:
        labels, classes, scores = drop_unsure(
            labels, classes, scores, platelet_id, counting.platelet_min_score
        )
    labels = labels.astype(np.int32)
    if all(weight == 1.0 for weight in counting.class_weights.values()):
        return Instances(labels=labels, classes=classes, scores=scores)
    extent = weighted_classes(probs, classes_at, layout, counting.class_weights)
    widened = widen_cells(labels, classes, extent, classes_at)
    return Instances(labels=widened, classes=classes, scores=scores, counted=labels)


def drop_unsure(
    labels: np.ndarray,
    classes: dict[int, int],
    scores: dict[int, float],
    class_id: int,
    min_score: float,
) -> tuple[np.ndarray, dict[int, int], dict[int, float]]:
    """The instances of `class_id` that score under `min_score` set to background, the others
    renumbered 1..n in their order, with their classes and scores."""
    unsure = [i for i, c in classes.items() if c == class_id and scores[i] < min_score]
    if not unsure:
        return labels, classes, scores
    gone = np.zeros(int(labels.max()) + 1, dtype=bool)
    gone[unsure] = True
    labels, forward = relabel_sequential(np.where(gone[labels], 0, labels))
    kept = {old: int(forward[old]) for old in classes if not gone[old]}
    return (
        labels,
        {new: classes[old] for old, new in kept.items()},
        {new: scores[old] for old, new in kept.items()},
    )


def widen_cells(
    labels: np.ndarray, classes: dict[int, int], extent: np.ndarray, plain: np.ndarray
) -> np.ndarray:
    """The instance map with each cell grown into the background pixels (of the `plain` class
    map) next to it that the weighted class map `extent` gives to its class, one pixel ring at a
    time, at most WIDEN_STEPS rings; a ring pixel takes the highest id among its 8 neighbours
    (between two cells: either). No cell is added or removed."""
    class_of = np.zeros(int(labels.max()) + 1, dtype=np.uint8)
    class_of[list(classes)] = list(classes.values())
    # the work is on the few claimable pixels, through a zero frame: no bounds to check
    widened = np.pad(labels, 1)
    flat, width = widened.ravel(), widened.shape[1]
    claimable = np.flatnonzero(np.pad((extent != plain) & (labels == 0), 1))
    wanted = np.pad(extent, 1).ravel()[claimable]
    offsets = (-width - 1, -width, -width + 1, -1, 1, width - 1, width, width + 1)
    for _ in range(WIDEN_STEPS):
        grown = np.max([flat[claimable + offset] for offset in offsets], axis=0)
        taken = (grown > 0) & (class_of[grown] == wanted)
        if not taken.any():
            break
        flat[claimable[taken]] = grown[taken]
        claimable, wanted = claimable[~taken], wanted[~taken]
    return widened[1:-1, 1:-1]


def rbc_centre_peak(probs: np.ndarray, instances: Instances, layout: ChannelLayout) -> float | None:
    """The mean over RBC instances of the centre map's highest value inside each: how sure the
    network is of where its RBCs are. None without a centre channel or without RBCs."""
    if layout.centre_channel is None or "rbc" not in layout.class_names:
        return None
    rbc = layout.class_names.index("rbc")
    ids = {i for i, c in instances.classes.items() if c == rbc}
    if not ids:
        return None
    centres, labels = probs[..., layout.centre_channel], instances.labels
    # each cell within its bounding box: a quarter of ndimage.maximum's time with an index list
    peaks = [
        centres[box][labels[box] == i].max()
        for i, box in enumerate(ndimage.find_objects(labels), start=1)
        if i in ids and box is not None
    ]
    return float(np.mean(np.array(peaks, dtype=centres.dtype)))


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
    labels, forward = relabel_sequential(resized)
    kept = {int(old): int(forward[old]) for old in np.flatnonzero(forward)}
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
    return np.take(lookup, instances.labels)


def nearest_sources(size_in: int, size_out: int) -> np.ndarray:
    """The source index of each output index when resize_nearest takes an axis of `size_in`
    pixels to `size_out` (Pillow's nearest-neighbour resampling is separable and monotonic)."""
    ramp = np.arange(size_in, dtype=np.int32)[None, :]
    resized = Image.fromarray(ramp).resize((size_out, 1), Image.Resampling.NEAREST)
    return np.asarray(resized)[0].astype(np.intp)


def describe_cells(
    instances: Instances, layout: ChannelLayout, size: tuple[int, int] | None = None
) -> list[Cell]:
    """Per-cell measurements (bbox, centroid, area, score, diameter, whether the image border
    cuts it) from an instance map, in one pass over the cells' pixels rather than
    one per cell.

    With `size` (height, width), the cells are those of resize_instances(instances, *size),
    ids included, measured on the map as it is: each of its pixels weighs as many image
    pixels as it becomes, so nothing of the image's size is built.
    """
    names = layout.class_names
    labels = instances.labels
    height, width = size or labels.shape
    renumber = (height, width) != labels.shape
    rows = nearest_sources(labels.shape[0], height)
    cols = nearest_sources(labels.shape[1], width)
    row_weight = np.bincount(rows, minlength=labels.shape[0])
    col_weight = np.bincount(cols, minlength=labels.shape[1])
    row_sum = np.bincount(rows, weights=np.arange(height), minlength=labels.shape[0])
    col_sum = np.bincount(cols, weights=np.arange(width), minlength=labels.shape[1])
    shown = labels * ((row_weight > 0)[:, None] & (col_weight > 0)[None, :])
    r, c = np.nonzero(shown)
    ids = shown[r, c]
    count = int(labels.max()) if labels.size else 0
    areas = np.bincount(ids, weights=row_weight[r] * col_weight[c], minlength=count + 1)
    row_sums = np.bincount(ids, weights=row_sum[r] * col_weight[c], minlength=count + 1)
    col_sums = np.bincount(ids, weights=col_sum[c] * row_weight[r], minlength=count + 1)
    cells = []
    for old_id, bbox in cell_boxes(labels, (height, width)).items():
        area = int(areas[old_id])
        cells.append(
            Cell(
                id=len(cells) + 1 if renumber else old_id,
                label=names[instances.classes[old_id]],
                bbox=bbox,
                centroid=(
                    round(float(col_sums[old_id] / area), 2),
                    round(float(row_sums[old_id] / area), 2),
                ),
                area=area,
                score=round(instances.scores[old_id], 4),
                diameter=box_size(bbox),
                on_border=touches_border(bbox, height, width),
            )
        )
    return cells


def cell_boxes(labels: np.ndarray, size: tuple[int, int]) -> dict[int, tuple[int, int, int, int]]:
    """Each instance's box (x_min, y_min, x_max, y_max, max exclusive) on
    resize_nearest(labels, *size), by id in id order, from the map as it is: the first image
    row (column) of the first map row (column) it spans, and one past the last of its last.
    Instances that vanish in the resize are left out."""
    height, width = size
    rows = nearest_sources(labels.shape[0], height)
    cols = nearest_sources(labels.shape[1], width)
    shown_rows = np.bincount(rows, minlength=labels.shape[0]) > 0
    shown_cols = np.bincount(cols, minlength=labels.shape[1]) > 0
    shown = labels * (shown_rows[:, None] & shown_cols[None, :])
    # the first output row (col) each source row (col) becomes, and one past its last
    first_row = np.searchsorted(rows, np.arange(labels.shape[0]))
    end_row = np.searchsorted(rows, np.arange(labels.shape[0]), side="right")
    first_col = np.searchsorted(cols, np.arange(labels.shape[1]))
    end_col = np.searchsorted(cols, np.arange(labels.shape[1]), side="right")
    return {
        old_id: (
            int(first_col[box[1].start]),
            int(first_row[box[0].start]),
            int(end_col[box[1].stop - 1]),
            int(end_row[box[0].stop - 1]),
        )
        for old_id, box in enumerate(ndimage.find_objects(shown), start=1)
        if box is not None
    }


def count_cells(cells: list[Cell], layout: ChannelLayout) -> dict[str, int]:
    """Number of cells of each foreground class."""
    counts = dict.fromkeys(layout.class_names[1:], 0)
    for cell in cells:
        counts[cell.label] += 1
    return counts


# RBCs clear of the border needed for a size distribution worth reporting
MIN_SIZED_RBCS = 5


def rbc_sizes(cells: list[Cell]) -> dict[str, float] | None:
    """The size distribution of the RBCs the image border does not cut: how many, their
    median diameter (Cell.diameter, pixels) and its coefficient of variation (the spread a blood
    count reports as RDW-CV, here by diameter rather than volume). None with fewer than
    MIN_SIZED_RBCS of them."""
    diameters = np.array([c.diameter for c in cells if c.label == "rbc" and not c.on_border])
    if len(diameters) < MIN_SIZED_RBCS:
        return None
    return {
        "cells": len(diameters),
        "median_diameter_px": round(float(np.median(diameters)), 2),
        "diameter_cv": round(float(diameters.std() / diameters.mean()), 4),
    }
