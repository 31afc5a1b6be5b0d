"""Choose the counting thresholds on training images (never validation ones)."""

from __future__ import annotations

import itertools
import logging

import numpy as np

from app.inference.decode import load_image
from app.inference.metadata import Counting, ModelMetadata
from app.inference.pipeline import predict_probs
from app.inference.postprocess import describe_cells, find_instances
from app.inference.runner import OnnxSegmenter
from training.augment import scale_boxes
from training.data import AnnotatedImage
from training.metrics import DetectionTally, match_cells

logger = logging.getLogger(__name__)

# Each range extends past the values chosen so far, so that a choice on a grid edge shows up.
PEAK_THRESHOLDS = (0.02, 0.05, 0.1, 0.2, 0.3)
# as fractions of the training RBC diameter, and of the area of a disc of that diameter
PEAK_DISTANCE_FRACTIONS = (0.1, 0.15, 0.2, 0.25, 0.3)
RBC_MIN_AREA_FRACTIONS = (0.05, 0.1, 0.2)


def candidate_grid(rbc_diameter_px: float) -> tuple[list[float], list[int], list[int]]:
    """Peak thresholds, peak distances and RBC minimum areas to try at this training scale."""
    disc = np.pi * (rbc_diameter_px / 2) ** 2
    distances = sorted({max(2, round(f * rbc_diameter_px)) for f in PEAK_DISTANCE_FRACTIONS})
    areas = sorted({max(4, round(f * disc)) for f in RBC_MIN_AREA_FRACTIONS})
    return list(PEAK_THRESHOLDS), distances, areas


def tune_counting(
    segmenter: OnnxSegmenter, groups: list[tuple[list[AnnotatedImage], float]]
) -> Counting:
    """The RBC peak threshold, peak distance and minimum area with the lowest RBC count MAE,
    averaged over the groups (one per source, each with its scale), so that every microscope
    counts alike (ties: best mean F1).

    The network runs once per image; only the post-processing is repeated per candidate, at
    the network's scale (the boxes are brought to it, instead of each candidate's cells to the
    image's size: IoU does not change with scale).
    """
    metadata: ModelMetadata = segmenter.metadata
    predictions = []
    for images, scale in groups:
        group = []
        for annotated in images:
            probs = predict_probs(load_image(annotated.path), segmenter, scale)
            factor = probs.shape[1] / annotated.width
            group.append((scale_boxes(list(annotated.boxes), factor), probs))
        predictions.append(group)
    best_key, best = None, metadata.counting
    layout = metadata.layout
    grid = itertools.product(*candidate_grid(metadata.working_rbc_diameter_px))
    for threshold, distance, min_area in grid:
        counting = metadata.counting.model_copy(
            update={
                "peak_threshold": threshold,
                "min_peak_distance_px": distance,
                "rbc_min_area_px": min_area,
            }
        )
        summaries = []
        for group in predictions:
            tally = DetectionTally()
            for boxes, probs in group:
                cells = describe_cells(find_instances(probs, counting, layout), layout)
                tally.add(match_cells(cells, boxes, classes=("rbc",))["rbc"])
            summaries.append(tally.summary())
        key = (
            float(np.mean([s["count_mae"] for s in summaries])),
            -float(np.mean([s["f1"] for s in summaries])),
        )
        if best_key is None or key < best_key:
            best_key, best = key, counting
    logger.info(
        "counting tuned on %d training images of %d source(s): peak_threshold %.2f, "
        "min_peak_distance_px %d, rbc_min_area_px %d (mean RBC count MAE %.3f, F1 %.3f)",
        sum(len(images) for images, _ in groups),
        len(groups),
        best.peak_threshold,
        best.min_peak_distance_px,
        best.rbc_min_area_px,
        best_key[0],
        -best_key[1],
    )
    return best
