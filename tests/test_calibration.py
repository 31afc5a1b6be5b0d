"""The RBC weight on the shipped network and real smears: the counted cells stay the same,
their extent comes to the size of their boxes."""

import numpy as np

from app.inference.postprocess import count_cells, describe_cells, find_instances
from tests.conftest import FIXTURE_BCD
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
