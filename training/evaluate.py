"""Score a published/exported model on a dataset through the app's own inference pipeline."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from app.inference.decode import load_image
from app.inference.metadata import ModelMetadata
from app.inference.pipeline import scale_for, segment_image
from app.inference.postprocess import Cell
from app.inference.runner import OnnxSegmenter
from training.data import AnnotatedImage, SourceSet
from training.metrics import (
    CLASSES,
    DetectionTally,
    PixelTally,
    match_cells,
    rbc_size_ratios,
    scored_classes,
)
from training.targets import complete_cut_box, make_targets

logger = logging.getLogger(__name__)


class Scorer:
    """Accumulates pixel, count and detection scores over images, for a model's classes.

    Platelets are scored only on images whose platelets are boxed; elsewhere a predicted
    platelet pixel counts as background (an unboxed platelet is background in the reference).
    """

    def __init__(self, names: tuple[str, ...] = ("background", *CLASSES)) -> None:
        self.names = names
        self.rectangles = PixelTally(len(names))
        self.ellipses = PixelTally(len(names))
        self.detection = {name: DetectionTally() for name in names[1:]}
        self.rbc_size_ratios: list[float] = []

    def add(self, annotated: AnnotatedImage, mask: np.ndarray, cells: list[Cell]) -> None:
        height, width = annotated.height, annotated.width
        boxes = list(annotated.boxes)
        count = len(self.names)
        scored = scored_classes(self.names[1:], annotated)
        if "platelet" in self.names and not annotated.platelets_complete:
            mask = np.where(mask == self.names.index("platelet"), 0, mask)
        rectangles = make_targets(boxes, height, width, "rectangles", num_classes=count)
        self.rectangles.add(mask, rectangles.classes)
        completed = [complete_cut_box(b, width, height) for b in boxes]
        ellipses = make_targets(completed, height, width, "ellipses", num_classes=count)
        self.ellipses.add(mask, ellipses.classes)
        for name, match in match_cells(cells, boxes, scored).items():
            self.detection[name].add(match)
        self.rbc_size_ratios += rbc_size_ratios(cells, boxes, height, width)

    def summary(self) -> dict:
        result = {"images": len(self.detection["rbc"].count_errors)}
        result.update(self.rectangles.summary(self.names))
        result["vs_ellipses"] = self.ellipses.summary(self.names)
        for name, tally in self.detection.items():
            if tally.count_errors:
                result[name] = tally.summary()
        if self.rbc_size_ratios:
            # found RBCs' size over their boxes' (metrics.rbc_size_ratios): 1 is unbiased
            result["rbc"]["size_ratio"] = round(float(np.median(self.rbc_size_ratios)), 4)
        return result


def evaluate_images(
    segmenter: OnnxSegmenter, images: list[AnnotatedImage], rbc_diameter_px: float | None
) -> dict:
    """Metrics of the model on annotated images; `rbc_diameter_px` sets their magnification."""
    metadata: ModelMetadata = segmenter.metadata
    scale = scale_for(metadata.working_rbc_diameter_px, rbc_diameter_px, None)
    scorer = Scorer(tuple(c.name for c in metadata.classes))
    inference_ms = []
    for annotated in images:
        segmentation = segment_image(
            load_image(annotated.path), segmenter, scale, with_class_map=True
        )
        inference_ms.append(segmentation.timings_ms["inference"])
        scorer.add(annotated, segmentation.semantic, segmentation.cells)
    result = scorer.summary()
    result["scale"] = round(scale, 4)
    result["mean_inference_ms"] = round(float(np.mean(inference_ms)), 2) if inference_ms else 0.0
    return result


def score_sources(segmenter: OnnxSegmenter, sets: Sequence[SourceSet]) -> dict[str, dict]:
    """`val:<source>` metrics of each validation source at its own median RBC diameter: what
    model.json's metrics hold."""
    return {
        f"val:{source}": evaluate_images(segmenter, list(images), diameter)
        for source, images, diameter in sets
    }
