"""Scores of predicted cells and masks against annotated boxes (pure NumPy)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from app.inference.postprocess import Cell
from training.data import AnnotatedImage, Box

# platelets are small: a few pixels off is a large share of their box (the IoU 0.3)
MATCH_IOU = {"rbc": 0.5, "wbc": 0.3, "platelet": 0.3}
CLASSES = ("rbc", "wbc")


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix between (N, 4) and (M, 4) boxes given as x_min, y_min, x_max, y_max."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 2], b[None, :, 2])
    y1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / (area_a[:, None] + area_b[None, :] - inter)


def greedy_pairs(
    predicted: np.ndarray, truth: np.ndarray, threshold: float
) -> list[tuple[int, int]]:
    """(predicted, truth) index pairs of a greedy one-to-one matching, highest IoU first,
    IoU >= threshold."""
    iou = box_iou(predicted, truth)
    pairs = np.argwhere(iou >= threshold)
    order = np.argsort(-iou[pairs[:, 0], pairs[:, 1]], kind="stable")
    used_p, used_t, matched = set(), set(), []
    for p, t in pairs[order]:
        if p not in used_p and t not in used_t:
            used_p.add(p)
            used_t.add(t)
            matched.append((int(p), int(t)))
    return matched


def greedy_match(predicted: np.ndarray, truth: np.ndarray, threshold: float) -> int:
    """True positives of a greedy one-to-one matching, highest IoU first, IoU >= threshold."""
    return len(greedy_pairs(predicted, truth, threshold))


@dataclass(frozen=True)
class ClassMatch:
    """One class of one image: cells found, cells annotated, and how many of them matched."""

    matched: int
    predicted: int
    annotated: int


def scored_classes(names: Sequence[str], annotated: AnnotatedImage) -> list[str]:
    """The classes an image's boxes can score: platelets only where they are boxed."""
    return [n for n in names if n != "platelet" or annotated.platelets_complete]


def class_boxes(
    cells: Sequence[Cell], boxes: Sequence[Box], name: str
) -> tuple[np.ndarray, np.ndarray]:
    """One class's predicted and annotated boxes as (N, 4) and (M, 4) arrays of x_min, y_min,
    x_max, y_max: what box_iou and greedy_pairs take."""
    predicted = np.array([c.bbox for c in cells if c.label == name], float).reshape(-1, 4)
    truth = np.array(
        [(b.x_min, b.y_min, b.x_max, b.y_max) for b in boxes if b.label == name], float
    ).reshape(-1, 4)
    return predicted, truth


def match_cells(
    cells: Sequence[Cell], boxes: Sequence[Box], classes: Sequence[str] = CLASSES
) -> dict[str, ClassMatch]:
    """Match one image's predicted cells to its annotated boxes, class by class: greedy,
    one-to-one, highest IoU first, at least MATCH_IOU of the class (as StarDist's `matching`,
    the thresholds live here). The one matching rule of evaluation, tuning and the service
    evaluator."""
    result = {}
    for name in classes:
        predicted, truth = class_boxes(cells, boxes, name)
        matched = greedy_match(predicted, truth, MATCH_IOU[name])
        result[name] = ClassMatch(matched, len(predicted), len(truth))
    return result


def rbc_size_ratios(
    cells: Sequence[Cell], boxes: Sequence[Box], height: int, width: int
) -> list[float]:
    """For each RBC box clear of the image border (a cut box measures the cut) that a found RBC
    matches: the found RBC's size over the box's, sizes as the mean of width and height."""
    found, truth = class_boxes(cells, boxes, "rbc")
    ratios = []
    for i, j in greedy_pairs(found, truth, MATCH_IOU["rbc"]):
        x0, y0, x1, y1 = truth[j]
        if x0 > 1 and y0 > 1 and x1 < width - 1 and y1 < height - 1:
            size = found[i, 2] - found[i, 0] + found[i, 3] - found[i, 1]
            ratios.append(float(size / (x1 - x0 + y1 - y0)))
    return ratios


@dataclass
class DetectionTally:
    """Running detection and count statistics of one class."""

    tp: int = 0
    predicted: int = 0
    annotated: int = 0
    count_errors: list[int] = field(default_factory=list)

    def add(self, match: ClassMatch) -> None:
        self.tp += match.matched
        self.predicted += match.predicted
        self.annotated += match.annotated
        self.count_errors.append(match.predicted - match.annotated)

    def summary(self) -> dict[str, float]:
        precision = self.tp / self.predicted if self.predicted else 0.0
        recall = self.tp / self.annotated if self.annotated else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        errors = np.array(self.count_errors, dtype=float)
        return {
            "precision": round(precision, 4),
            "recall": round(recall, 4),
            "f1": round(f1, 4),
            "count_mae": round(float(np.abs(errors).mean()), 4) if len(errors) else 0.0,
            "count_bias": round(float(errors.mean()), 4) if len(errors) else 0.0,
            "predicted": self.predicted,
            "annotated": self.annotated,
        }


@dataclass
class PixelTally:
    """Running confusion counts of a class mask against a reference mask."""

    num_classes: int = 3
    confusion: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.confusion = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)

    def add(self, predicted: np.ndarray, reference: np.ndarray) -> None:
        index = reference.astype(np.int64) * self.num_classes + predicted.astype(np.int64)
        self.confusion += np.bincount(index.ravel(), minlength=self.num_classes**2).reshape(
            self.num_classes, self.num_classes
        )

    def summary(self, names: Sequence[str]) -> dict[str, float]:
        c = self.confusion
        result = {"pixel_accuracy": round(float(np.trace(c) / c.sum()), 4)}
        for index, name in enumerate(names):
            if index == 0:
                continue
            tp = c[index, index]
            fp = c[:, index].sum() - tp
            fn = c[index, :].sum() - tp
            result[f"dice_{name}"] = round(float(2 * tp / max(2 * tp + fp + fn, 1)), 4)
            result[f"iou_{name}"] = round(float(tp / max(tp + fp + fn, 1)), 4)
        return result
