"""Targets derived from hand-checked boxes."""

import numpy as np

from training.data import Box
from training.targets import box_region, centre_heatmap, complete_cut_box, make_targets


def test_ellipse_is_inscribed_in_its_box():
    box = Box(10, 20, 30, 30, "rbc")  # 20 wide, 10 high, centre (20, 25)
    region = box_region(box, 50, 50, "ellipses")
    assert region[25, 20] and region[25, 10] and region[25, 29]
    assert not region[20, 10] and not region[29, 29]  # box corners stay background
    assert not region[:20].any() and not region[30:].any() and not region[:, :10].any()
    assert abs(region.sum() - np.pi * 10 * 5) < 12


def test_rectangle_fills_its_box():
    region = box_region(Box(10, 20, 30, 30, "rbc"), 50, 50, "rectangles")
    assert region.sum() == 200 and region[20, 10] and region[29, 29]


def test_wbc_is_drawn_over_rbc():
    boxes = [Box(0, 0, 20, 20, "wbc"), Box(10, 0, 30, 20, "rbc")]
    classes = make_targets(boxes, 20, 40, "ellipses").classes
    assert classes[10, 15] == 2 and classes[10, 25] == 1 and classes[0, 39] == 0


def test_cut_box_grows_past_the_border_it_touches():
    left = complete_cut_box(Box(0, 10, 20, 50, "rbc"), 100, 100)
    assert (left.x_min, left.x_max, left.y_min, left.y_max) == (-20, 20, 10, 50)
    bottom = complete_cut_box(Box(30, 80, 70, 100, "rbc"), 100, 100)
    assert (bottom.y_min, bottom.y_max) == (80, 120)
    inner = Box(30, 30, 50, 70, "rbc")
    assert complete_cut_box(inner, 100, 100) == inner


def test_centre_heatmap_peaks_at_each_box_centre():
    heat = centre_heatmap([Box(0, 0, 40, 40, "rbc"), Box(30, 0, 70, 40, "rbc")], 40, 70)
    assert heat[19:21, 19:21].min() > 0.95 and heat[19:21, 49:51].min() > 0.95
    assert heat[20, 35] < 0.5  # a valley between two overlapping cells keeps them apart
    assert heat.max() <= 1.0


def test_incomplete_rbc_labels_make_unboxed_pixels_ambiguous():
    targets = make_targets([Box(0, 0, 20, 20, "wbc")], 20, 60, "ellipses", rbc_complete=False)
    assert targets.ambiguous[10, 50] and not targets.ambiguous[10, 10]
    assert targets.centre_weight[10, 50] == 0 and targets.centre_weight[10, 10] == 1
    stacked = targets.stacked()  # allowed (bg, rbc, wbc), centre, centre weight
    assert stacked.shape == (20, 60, 5)
    assert list(stacked[10, 10, :3]) == [0, 0, 1] and list(stacked[10, 50, :3]) == [1, 1, 0]
    complete = make_targets([Box(0, 0, 20, 20, "wbc")], 20, 60, "ellipses")
    assert not complete.ambiguous.any()


def test_platelets_are_a_fourth_class_drawn_over_rbcs_and_unlabelled_where_never_boxed():
    boxes = [Box(0, 0, 40, 40, "rbc"), Box(15, 15, 25, 25, "platelet"), Box(50, 0, 90, 40, "wbc")]
    targets = make_targets(boxes, 40, 100, "ellipses", num_classes=4)
    assert targets.classes[20, 20] == 3 and targets.classes[20, 5] == 1
    assert targets.classes[20, 70] == 2 and targets.stacked().shape == (40, 100, 6)
    assert not targets.ambiguous.any()
    three = make_targets(boxes, 40, 100, "ellipses", num_classes=3)  # a 1.x model: no platelets
    assert three.classes[20, 20] == 1 and three.allowed.shape[-1] == 3
    unlabelled = make_targets(
        boxes[:1], 40, 100, "ellipses", platelets_complete=False, num_classes=4
    )
    assert list(unlabelled.allowed[20, 95]) == [True, False, False, True]
    assert list(unlabelled.allowed[20, 20]) == [False, True, False, False]
    assert unlabelled.centre_weight[20, 95] == 1  # RBCs are complete: their centres are known
