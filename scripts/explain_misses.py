"""Why annotated RBCs go unmatched: each validation set's missed RBC boxes sorted by where they
lie (touching the image border or inside it) and what the prediction did there, with each
image's true RBC diameter given, so the estimate plays no part.

- merged: the box's best-overlapping cell matched another box (two cells became one);
- poor overlap: a cell overlaps it, matched to nothing, below the match IoU;
- not found: no cell overlaps it by IoU 0.05.

Unmatched predictions are sorted the same way. What the README's "why blood-cell-detection
still undercounts" comes from:

    python scripts/explain_misses.py --model models/bloodseg/2.2.1 --sets "blood-cell-detection val"
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from evaluate_microscopes import evaluation_sets

from app.inference.decode import load_image
from app.inference.metadata import read_metadata, resolve_model_dir
from app.inference.pipeline import given_scale, segment_image
from app.inference.runner import OnnxSegmenter, RunnerOptions
from training.data import AnnotatedImage, DataError, median_rbc_diameter
from training.metrics import MATCH_IOU, box_iou, class_boxes, greedy_pairs

BORDER_PX = 2  # a box this close to the image's edge is cut by it
OVERLAP = 0.05


def touches_border(box: np.ndarray, width: int, height: int) -> bool:
    return bool(
        box[0] <= BORDER_PX
        or box[1] <= BORDER_PX
        or box[2] >= width - BORDER_PX
        or box[3] >= height - BORDER_PX
    )


def explain_image(
    segmenter: OnnxSegmenter, annotated: AnnotatedImage, misses: Counter, extras: Counter
) -> None:
    """Add one image's missed boxes and unmatched cells, by kind, to the counters."""
    image = load_image(annotated.path)
    diameter = median_rbc_diameter([annotated])
    scale = given_scale(segmenter.metadata, diameter, None).scale
    cells = segment_image(image, segmenter, scale).cells
    predicted, truth = class_boxes(cells, annotated.boxes, "rbc")
    pairs = greedy_pairs(predicted, truth, MATCH_IOU["rbc"])
    matched_p, matched_t = {p for p, _ in pairs}, {t for _, t in pairs}
    iou = box_iou(predicted, truth)
    width, height = annotated.width, annotated.height
    for t in set(range(len(truth))) - matched_t:
        where = "border" if touches_border(truth[t], width, height) else "inside"
        best = int(np.argmax(iou[:, t])) if len(predicted) else -1
        if best < 0 or iou[best, t] < OVERLAP:
            misses[where, "not found"] += 1
        elif best in matched_p:
            misses[where, "merged"] += 1
        else:
            misses[where, "poor overlap"] += 1
    for p in set(range(len(predicted))) - matched_p:
        where = "border" if touches_border(predicted[p], width, height) else "inside"
        overlaps = len(truth) and iou[p].max() >= OVERLAP
        extras[where, "overlaps a box" if overlaps else "no box"] += 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="models/bloodseg")
    parser.add_argument("--sets", default="", help="comma-separated set names (default: all)")
    args = parser.parse_args()
    model_dir = resolve_model_dir(Path(args.model))
    metadata = read_metadata(model_dir / "model.json")
    segmenter = OnnxSegmenter(
        model_dir, metadata, RunnerOptions(providers=("CPUExecutionProvider",))
    )
    wanted = {name for name in args.sets.split(",") if name}
    print(f"bloodseg {metadata.version}, diameter given")
    for name, images, factor in evaluation_sets(0):
        if factor != 1.0 or (wanted and name not in wanted):
            continue
        misses, extras = Counter(), Counter()
        for annotated in images:
            try:
                explain_image(segmenter, annotated, misses, extras)
            except DataError:  # no complete RBC box: no true diameter
                continue
        print(f"\n{name}: {sum(misses.values())} RBC boxes missed, {sum(extras.values())} extra")
        for (where, kind), count in sorted(misses.items()):
            print(f"  missed, {where}, {kind}: {count}")
        for (where, kind), count in sorted(extras.items()):
            print(f"  extra, {where}, {kind}: {count}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
