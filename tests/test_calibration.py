"""The RBC weight on the shipped network and real smears: the counted cells stay the same,
their extent comes to the size of their boxes."""

import numpy as np

from app.inference.postprocess import count_cells, describe_cells, find_instances
from tests.conftest import FIXTURE_BCD, constructed_metadata
from training.data import load_dataset, median_rbc_diameter
from training.metrics import rbc_size_ratios
from training.tune import RBC_WEIGHTS, calibrate_rbc_weight, network_predictions


def test_the_rbc_weight_brings_rbcs_to_their_boxes_size_and_keeps_the_counts(segmenter):
    metadata, layout = segmenter.metadata, segmenter.metadata.layout
    images = load_dataset(FIXTURE_BCD)
    scale = metadata.working_rbc_diameter_px / median_rbc_diameter(images)
    predictions = network_predictions(segmenter, [(images, scale)])
    plain = metadata.counting.model_copy(update={"class_weights": {}})

    def measured(counting):
        ratios, counts = [], []
        for boxes, probs in predictions[0]:
            cells = describe_cells(find_instances(probs, counting, layout), layout)
            ratios += rbc_size_ratios(cells, boxes, *probs.shape[:2])
            counts.append(count_cells(cells, layout))
        return float(np.median(ratios)), counts

    plain_ratio, plain_counts = measured(plain)
    calibrated, ratio = calibrate_rbc_weight(plain, layout, predictions)
    weighted_ratio, weighted_counts = measured(calibrated)
    assert plain_ratio < 0.985  # the network paints RBCs smaller than their boxes
    assert calibrated.class_weights["rbc"] in RBC_WEIGHTS and calibrated.class_weights["rbc"] > 1
    assert abs(weighted_ratio - 1) < abs(plain_ratio - 1) and abs(weighted_ratio - 1) <= 0.02
    assert ratio == weighted_ratio  # one group: the mean of its median is that median
    assert weighted_counts == plain_counts
    # the shipped weight, calibrated on 170 training images of six sources, holds on these
    shipped_ratio, shipped_counts = measured(metadata.counting)
    assert abs(shipped_ratio - 1) <= 0.03 and shipped_counts == plain_counts


def platelets_map(sure: list[tuple[int, int]], unsure: list[tuple[int, int]]) -> np.ndarray:
    """Probabilities of 10 px platelets: sure ones (0.97) and specks (0.6), nothing else."""
    probs = np.zeros((100, 160, 5), np.float32)
    probs[..., 0] = 1
    for (y, x), value in [*((c, 0.97) for c in sure), *((c, 0.6) for c in unsure)]:
        probs[y : y + 10, x : x + 10, :4] = [1 - value, 0, 0, value]
    return probs


def test_the_platelet_score_brings_the_platelets_found_to_those_boxed_where_they_are_boxed():
    from training.data import Box
    from training.tune import tune_platelet_score

    meta = constructed_metadata()
    layout, counting = meta.layout, meta.counting
    boxed = [Box(x, y, x + 10, y + 10, "platelet") for y, x in ((10, 10), (60, 100))]
    group = [(boxed, platelets_map([(10, 10), (60, 100)], [(40, 60)]))]
    # a source without platelet boxes (blood-cell-detection): its specks and cells say nothing
    unboxed = [([], platelets_map([(10, 10)], [(70, 20), (20, 130)]))]
    tuned, tried = tune_platelet_score(counting, layout, [group, unboxed])
    assert tried["0"] == {"predicted": 3, "annotated": 2, "f1": 0.8}  # the speck counts too
    # the lowest score that drops the speck (0.6) and keeps the platelets (0.97)
    assert tuned.platelet_min_score == 0.8 and tried["0.8"] == {
        "predicted": 2,
        "annotated": 2,
        "f1": 1.0,
    }
    cells = describe_cells(find_instances(group[0][1], tuned, layout), layout)
    assert [c.bbox for c in cells] == [(10, 10, 20, 20), (100, 60, 110, 70)]
    # with no speck every score finds the boxed platelets: the lowest stays
    clean = [(boxed, platelets_map([(10, 10), (60, 100)], []))]
    assert tune_platelet_score(counting, layout, [clean])[0].platelet_min_score == 0.0
    # nothing boxed at all, or a model without platelets: the counting stays as it is
    assert tune_platelet_score(counting, layout, [unboxed]) == (counting, {})
    without = constructed_metadata(platelets=False).layout
    assert tune_platelet_score(counting, without, [group]) == (counting, {})
