"""Training targets derived from boxes: inscribed ellipses (or rectangles) and centre heatmaps."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from training.data import BORDER_TOLERANCE_PX, Box

CLASS_IDS = {"rbc": 1, "wbc": 2, "platelet": 3}
DRAW_ORDER = ("rbc", "platelet", "wbc")  # later classes are drawn over earlier ones
CENTRE_SIGMA_FRACTION = 0.3  # heatmap sigma as a fraction of each semi-axis
TargetShape = Literal["ellipses", "rectangles"]


@dataclass(frozen=True)
class Targets:
    """Per-pixel targets of one image or crop.

    `allowed` (H, W, classes) marks the classes a pixel may be: one class where it is known,
    several where the dataset leaves some cells unboxed (an unboxed pixel may be background or
    an RBC, or background or a platelet). `centre_weight` is 0 where the centre target is unknown.
    """

    classes: np.ndarray
    allowed: np.ndarray
    centre: np.ndarray
    centre_weight: np.ndarray

    @property
    def ambiguous(self) -> np.ndarray:
        """Pixels whose class is one of several."""
        return self.allowed.sum(axis=-1) > 1

    def stacked(self) -> np.ndarray:
        """(H, W, classes + 2) float32 y_true: allowed classes, centre, centre weight."""
        extra = np.stack([self.centre, self.centre_weight], axis=-1)
        return np.concatenate([self.allowed, extra], axis=-1).astype(np.float32)


def complete_cut_box(box: Box, width: int, height: int) -> Box:
    """Extend a box cut by the image border to the cell's likely full size.

    Cells are round, so a side cut short takes the length of the longer side, growing
    outward past the border; the ellipse and centre then fall where the real cell is.
    """
    diameter = max(box.width, box.height)
    x_min, y_min, x_max, y_max = box.x_min, box.y_min, box.x_max, box.y_max
    tol = BORDER_TOLERANCE_PX
    if box.width < diameter:
        if x_min <= tol:
            x_min = x_max - diameter
        elif x_max >= width - tol:
            x_max = x_min + diameter
    if box.height < diameter:
        if y_min <= tol:
            y_min = y_max - diameter
        elif y_max >= height - tol:
            y_max = y_min + diameter
    return Box(x_min, y_min, x_max, y_max, box.label)


def _box_window(box: Box, height: int, width: int, margin: float = 0.0) -> tuple[slice, slice]:
    rows = slice(
        max(0, int(np.floor(box.y_min - margin))), min(height, int(np.ceil(box.y_max + margin)))
    )
    cols = slice(
        max(0, int(np.floor(box.x_min - margin))), min(width, int(np.ceil(box.x_max + margin)))
    )
    return rows, cols


def _normalised_offsets(box: Box, rows: slice, cols: slice) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre offsets from the box centre, in units of the semi-axes."""
    ys = (np.arange(rows.start, rows.stop) + 0.5 - (box.y_min + box.y_max) / 2) / (box.height / 2)
    xs = (np.arange(cols.start, cols.stop) + 0.5 - (box.x_min + box.x_max) / 2) / (box.width / 2)
    return ys[:, None], xs[None, :]


def box_region(box: Box, height: int, width: int, shape: TargetShape) -> np.ndarray:
    """Boolean (H, W) mask of the ellipse inscribed in the box, or of the box itself."""
    mask = np.zeros((height, width), dtype=bool)
    rows, cols = _box_window(box, height, width)
    if rows.start >= rows.stop or cols.start >= cols.stop:
        return mask
    if shape == "rectangles":
        mask[rows, cols] = True
    else:
        ys, xs = _normalised_offsets(box, rows, cols)
        mask[rows, cols] = ys**2 + xs**2 <= 1.0
    return mask


def centre_heatmap(boxes: list[Box], height: int, width: int) -> np.ndarray:
    """Max over cells of an elliptic Gaussian at each box centre (sigma = 0.3 x semi-axis)."""
    heat = np.zeros((height, width), dtype=np.float32)
    for box in boxes:
        margin = max(box.width, box.height) * 0.5
        rows, cols = _box_window(box, height, width, margin)
        if rows.start >= rows.stop or cols.start >= cols.stop:
            continue
        ys, xs = _normalised_offsets(box, rows, cols)
        gauss = np.exp(-(ys**2 + xs**2) / (2 * CENTRE_SIGMA_FRACTION**2)).astype(np.float32)
        np.maximum(heat[rows, cols], gauss, out=heat[rows, cols])
    return heat


def make_targets(
    boxes: list[Box],
    height: int,
    width: int,
    shape: TargetShape,
    rbc_complete: bool = True,
    platelets_complete: bool = True,
    num_classes: int = 3,
) -> Targets:
    """Rasterise boxes (already completed and in this image's coordinates) into targets.

    `num_classes` counts background: 3 (RBC, WBC) or 4 (and platelets); boxes of classes the
    model lacks are left out. Platelets are drawn over RBCs, WBCs over both. Pixels outside every
    box may also be an unboxed RBC (or platelet) where those boxes are incomplete; an unboxed RBC
    would also have a centre, so there the centre target is unknown.
    """
    kept = [b for b in boxes if CLASS_IDS[b.label] < num_classes]
    classes = np.zeros((height, width), dtype=np.uint8)
    labelled = np.zeros((height, width), dtype=bool)
    for label in DRAW_ORDER:
        for box in kept:
            if box.label == label:
                region = box_region(box, height, width, shape)
                classes[region] = CLASS_IDS[label]
                labelled |= region
    if shape == "rectangles":
        centre = np.zeros((height, width), dtype=np.float32)
    else:
        centre = centre_heatmap(kept, height, width)
    allowed = np.eye(num_classes, dtype=bool)[classes]
    if not rbc_complete:
        allowed[~labelled, CLASS_IDS["rbc"]] = True
    if not platelets_complete and num_classes > CLASS_IDS["platelet"]:
        allowed[~labelled, CLASS_IDS["platelet"]] = True
    known = np.ones((height, width), dtype=bool) if rbc_complete else labelled
    return Targets(
        classes=classes,
        allowed=allowed,
        centre=centre,
        centre_weight=known.astype(np.float32),
    )
