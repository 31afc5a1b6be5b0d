"""Matching and pixel scores on hand-checked inputs."""

import numpy as np

from app.inference.postprocess import Cell
from training.data import Box
from training.metrics import (
    ClassMatch,
    DetectionTally,
    PixelTally,
    box_iou,
    greedy_match,
    greedy_pairs,
    match_cells,
)


def test_box_iou_by_hand():
    iou = box_iou(np.array([[0, 0, 10, 10]]), np.array([[5, 0, 15, 10], [20, 20, 30, 30]]))
    assert np.allclose(iou, [[50 / 150, 0.0]])


def test_greedy_matching_is_one_to_one_best_first():
    truth = np.array([[0, 0, 10, 10], [8, 0, 18, 10]])
    predicted = np.array([[1, 0, 11, 10], [0, 0, 10, 10], [50, 50, 60, 60]])
    assert greedy_match(predicted, truth, 0.5) == 1  # both predictions want truth 0
    assert greedy_match(predicted, truth, 0.05) == 2
    # the exact box takes truth 0 first; the shifted one is left truth 1 (IoU 30 / 170)
    assert greedy_pairs(predicted, truth, 0.5) == [(1, 0)]
    assert greedy_pairs(predicted, truth, 0.05) == [(1, 0), (0, 1)]


def cell(label: str, bbox: tuple[int, int, int, int]) -> Cell:
    return Cell(id=0, label=label, bbox=bbox, centroid=(0.0, 0.0), area=1, score=1.0)


def test_match_cells_matches_class_by_class_at_each_class_threshold():
    boxes = [Box(0, 0, 10, 10, "rbc"), Box(100, 100, 140, 140, "wbc"), Box(60, 0, 70, 10, "rbc")]
    cells = [
        cell("rbc", (0, 0, 10, 10)),  # exact
        cell("rbc", (62, 0, 74, 10)),  # IoU 8/14 = 0.57: an RBC match (>= 0.5)
        cell("wbc", (110, 110, 150, 150)),  # IoU 900/2300 = 0.39: a WBC match (>= 0.3)
        cell("wbc", (0, 0, 10, 10)),  # on an RBC's box, but the wrong class
    ]
    matches = match_cells(cells, boxes)
    assert matches["rbc"] == ClassMatch(matched=2, predicted=2, annotated=2)
    assert matches["wbc"] == ClassMatch(matched=1, predicted=2, annotated=1)
    looser = [cell("rbc", (0, 0, 10, 16))]  # IoU 100/160 = 0.625 as RBC, but not 10x24
    assert match_cells(looser, boxes)["rbc"].matched == 1
    assert match_cells([cell("rbc", (0, 0, 10, 24))], boxes)["rbc"].matched == 0  # 0.42


def test_detection_summary():
    tally = DetectionTally()
    tally.add(ClassMatch(matched=1, predicted=2, annotated=1))
    tally.add(ClassMatch(matched=0, predicted=0, annotated=1))
    s = tally.summary()
    assert (s["precision"], s["recall"], s["f1"]) == (0.5, 0.5, 0.5)
    assert s["count_mae"] == 1.0 and s["count_bias"] == 0.0


def test_pixel_scores():
    tally = PixelTally()
    reference = np.array([[0, 1, 1, 2]])
    tally.add(np.array([[0, 1, 0, 2]]), reference)
    s = tally.summary(["background", "rbc", "wbc"])
    assert s["pixel_accuracy"] == 0.75
    assert s["dice_rbc"] == round(2 / 3, 4) and s["dice_wbc"] == 1.0
