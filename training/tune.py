"""Choose the counting thresholds on training images (never validation ones)."""

from __future__ import annotations

import itertools
import logging

import numpy as np

from app.inference.decode import load_image
from app.inference.metadata import ChannelLayout, Counting
from app.inference.pipeline import predict_probs
from app.inference.postprocess import describe_cells, find_instances
from app.inference.runner import OnnxSegmenter
from training.augment import scale_boxes
from training.data import AnnotatedImage, Box
from training.metrics import DetectionTally, match_cells, rbc_size_ratios

logger = logging.getLogger(__name__)

# Each range extends past the values chosen so far, so that a choice on a grid edge shows up.
PEAK_THRESHOLDS = (0.02, 0.05, 0.1, 0.2, 0.3)
# as fractions of the training RBC diameter, and of the area of a disc of that diameter
PEAK_DISTANCE_FRACTIONS = (0.1, 0.15, 0.2, 0.25, 0.3)
RBC_MIN_AREA_FRACTIONS = (0.05, 0.1, 0.2)
# RBC weights tried by calibrate_rbc_weight: the plain argmax to thrice the RBC probability
RBC_WEIGHTS = (1.0, 1.25, 1.5, 2.0, 2.5, 3.0)
# platelet minimum scores tried by tune_platelet_score (0: every platelet region counts); on
# 2.2.5's training images the real platelets score 0.97 to 0.98 (quartiles), false ones 0.86
# to 0.97
PLATELET_MIN_SCORES = (0.0, 0.8, 0.85, 0.88, 0.9, 0.92, 0.94, 0.96)


def candidate_grid(rbc_diameter_px: float) -> tuple[list[float], list[int], list[int]]:
    """Peak thresholds, peak distances and RBC minimum areas to try at this training scale."""
    disc = np.pi * (rbc_diameter_px / 2) ** 2
    distances = sorted({max(2, round(f * rbc_diameter_px)) for f in PEAK_DISTANCE_FRACTIONS})
    areas = sorted({max(4, round(f * disc)) for f in RBC_MIN_AREA_FRACTIONS})
    return list(PEAK_THRESHOLDS), distances, areas


# A prediction for tuning: one image's boxes at the network's scale and the network's output
Prediction = tuple[list[Box], np.ndarray]


def network_predictions(
    segmenter: OnnxSegmenter, groups: list[tuple[list[AnnotatedImage], float]]
) -> list[list[Prediction]]:
    """Each group's images (one group per source, each with its scale) run through the network
    once, with their boxes brought to the network's scale (IoU does not change with scale), so
    that every candidate of the tuning repeats only the post-processing."""
    predictions = []
    for images, scale in groups:
        group = []
        for annotated in images:
            probs = predict_probs(load_image(annotated.path), segmenter, scale)
            factor = probs.shape[1] / annotated.width
            group.append((scale_boxes(list(annotated.boxes), factor), probs))
        predictions.append(group)
    return predictions


def calibrate_rbc_weight(
    counting: Counting, layout: ChannelLayout, predictions: list[list[Prediction]]
) -> tuple[Counting, float]:
    """`counting` with the RBC weight (Counting.class_weights) of RBC_WEIGHTS under which the
    RBCs found measure their boxes: the median size ratio (rbc_size_ratios), averaged over the
    groups, closest to 1. Returns it and that mean ratio."""
    best: tuple[float, Counting, float] | None = None
    for weight in RBC_WEIGHTS:
        weights = {**counting.class_weights, "rbc": weight}
        if weight == 1.0:
            del weights["rbc"]  # the plain argmax: nothing to widen
        candidate = counting.model_copy(update={"class_weights": weights})
        medians = []
        for group in predictions:
            ratios = []
            for boxes, probs in group:
                cells = describe_cells(find_instances(probs, candidate, layout), layout)
                ratios += rbc_size_ratios(cells, boxes, *probs.shape[:2])
            if ratios:
                medians.append(float(np.median(ratios)))
        ratio = float(np.mean(medians)) if medians else float("nan")
        if medians and (best is None or abs(ratio - 1) < abs(best[0] - 1)):
            best = (ratio, candidate, weight)
    if best is None:  # no RBC box clear of the border was found: nothing to calibrate on
        return counting, float("nan")
    ratio, calibrated, weight = best
    logger.info("RBC weight %.2f: the RBCs found measure %.3f of their boxes", weight, ratio)
    return calibrated, ratio


def tune_counting(
    counting: Counting, layout: ChannelLayout, predictions: list[list[Prediction]]
) -> Counting:
    """`counting` with the RBC peak threshold, peak distance and minimum area of the lowest RBC
    count MAE, averaged over the groups of `predictions` (network_predictions: one per source),
    so that every microscope counts alike (ties: best mean F1)."""
    best_key, best = None, counting
    grid = itertools.product(*candidate_grid(layout.rbc_diameter_px))
    for threshold, distance, min_area in grid:
        candidate = counting.model_copy(
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
                cells = describe_cells(find_instances(probs, candidate, layout), layout)
                tally.add(match_cells(cells, boxes, classes=("rbc",))["rbc"])
            summaries.append(tally.summary())
        key = (
            float(np.mean([s["count_mae"] for s in summaries])),
            -float(np.mean([s["f1"] for s in summaries])),
        )
        if best_key is None or key < best_key:
            best_key, best = key, candidate
    logger.info(
        "counting tuned on %d training images of %d source(s): peak_threshold %.2f, "
        "min_peak_distance_px %d, rbc_min_area_px %d (mean RBC count MAE %.3f, F1 %.3f)",
        sum(len(group) for group in predictions),
        len(predictions),
        best.peak_threshold,
        best.min_peak_distance_px,
        best.rbc_min_area_px,
        best_key[0],
        -best_key[1],
    )
    return best


def tune_platelet_score(
    counting: Counting, layout: ChannelLayout, predictions: list[list[Prediction]]
) -> tuple[Counting, dict[str, dict[str, float]]]:
    """`counting` with the platelet minimum score of PLATELET_MIN_SCORES under which the
    platelets found number closest to the platelets boxed, over every image of the groups
    that box platelets (ties: the better F1, then the lower score), and for each score tried
    the platelets found and their F1. A platelet count is what a blood count reports, so the
    score must not trade it for precision: the best F1 alone asked for 0.96 on 2.2.5's training
    images, which found a tenth fewer platelets than boxed. A model without platelets, or
    predictions without a platelet box, leave the counting as it is. The other cells do not
    depend on the score, so each image is segmented once and its platelets kept by score."""
    if "platelet" not in layout.class_names:
        return counting, {}
    every = counting.model_copy(update={"platelet_min_score": 0.0})
    images = [
        (describe_cells(find_instances(probs, every, layout), layout), boxes)
        for group in predictions
        if any(box.label == "platelet" for boxes, _ in group for box in boxes)
        for boxes, probs in group
    ]
    if not images:
        return counting, {}
    tried, keys = {}, {}
    for score in PLATELET_MIN_SCORES:
        tally = DetectionTally()
        for cells, boxes in images:
            kept = [c for c in cells if c.label != "platelet" or c.score >= score]
            tally.add(match_cells(kept, boxes, classes=("platelet",))["platelet"])
        summary = tally.summary()
        tried[f"{score:g}"] = {k: summary[k] for k in ("predicted", "annotated", "f1")}
        keys[score] = (abs(summary["predicted"] - summary["annotated"]), -summary["f1"])
    best = min(PLATELET_MIN_SCORES, key=keys.get)  # the first of ties: the lower score
    chosen = tried[f"{best:g}"]
    logger.info(
        "platelet minimum score %.2f on %d training images: %d platelets found for %d boxed, "
        "F1 %.3f (every platelet region: %d found, F1 %.3f)",
        best,
        len(images),
        chosen["predicted"],
        chosen["annotated"],
        chosen["f1"],
        tried["0"]["predicted"],
        tried["0"]["f1"],
    )
    return counting.model_copy(update={"platelet_min_score": best}), tried
