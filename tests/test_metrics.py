"""Matching and pixel scores on hand-checked inputs."""

import numpy as np

from training.metrics import DetectionTally, PixelTally, box_iou, greedy_match


def test_box_iou_by_hand():
    iou = box_iou(np.array([[0, 0, 10, 10]]), np.array([[5, 0, 15, 10], [20, 20, 30, 30]]))
    assert np.allclose(iou, [[50 / 150, 0.0]])


def test_greedy_matching_is_one_to_one_best_first():
    truth = np.array([[0, 0, 10, 10], [8, 0, 18, 10]])
    predicted = np.array([[1, 0, 11, 10], [0, 0, 10, 10], [50, 50, 60, 60]])
    assert greedy_match(predicted, truth, 0.5) == 1  # both predictions want truth 0
    assert greedy_match(predicted, truth, 0.05) == 2


def test_detection_summary():
    tally = DetectionTally()
    tally.add(np.array([[0, 0, 10, 10], [40, 40, 50, 50]]), np.array([[0, 0, 10, 10]]), 0.5)
    tally.add(np.zeros((0, 4)), np.array([[0, 0, 10, 10]]), 0.5)
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
