"""Score a model the way a new user meets it: validation images of every source, sent with no
hint (the service estimates the magnification), including blood-cell-detection resampled to
other magnifications. Prints a Markdown table and writes JSON.

    python scripts/evaluate_microscopes.py --model models/bloodseg/2.0.0 \
        --out docs/benchmark/microscopes-2.0.0.json

Per set: RBC count MAE and F1, WBC F1, platelet F1 (where platelets are boxed), the share of
images whose estimated RBC diameter is within 12 % of the boxes' median, the estimate's cost
against the network pass that follows it (both timed here, one after the other), and how the
response's measured median RBC diameter (`rbc_sizes`) compares with the boxes' median.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.inference.decode import load_image
from app.inference.metadata import read_metadata, resolve_model_dir
from app.inference.pipeline import (
    REFINE_TOLERANCE,
    agrees,
    estimated_scale,
    given_scale,
    segment_at_estimated_scale,
    segment_image,
)
from app.inference.postprocess import rbc_sizes
from app.inference.preprocess import rescale_image
from app.inference.runner import OnnxSegmenter, RunnerOptions
from training.augment import scale_boxes
from training.data import (
    AnnotatedImage,
    DataError,
    load_dataset,
    median_rbc_diameter,
    source_of,
    split_dataset,
)
from training.metrics import DetectionTally, match_cells, scored_classes

DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
RESAMPLED = (0.6, 1.6, 2.2)
WITHIN = 0.12


def evaluation_sets(limit: int) -> list[tuple[str, list[AnnotatedImage], float]]:
    """(name, images, resampling factor): blood-cell-detection val at native scale and
    resampled, then each TXL-PBC source's val images."""
    bcd_root = DATASETS / "blood-cell-detection"
    bcd = split_dataset(bcd_root, load_dataset(bcd_root), "val", 0.2, 7)
    sets = [("blood-cell-detection val", bcd, 1.0)]
    sets += [(f"blood-cell-detection val x{f:g}", bcd, f) for f in RESAMPLED]
    txl_root = DATASETS / "txl-pbc"
    txl = split_dataset(txl_root, load_dataset(txl_root), "val", 0.2, 7)
    sizes = {(i.width, i.height) for i in txl}
    by_source: dict[str, list[AnnotatedImage]] = {}
    for image in txl:
        by_source.setdefault(source_of(txl_root, image, sizes), []).append(image)
    for source, images in sorted(by_source.items()):
        sets.append((f"{source} val", images, 1.0))
    return [(name, images[:limit] if limit else images, f) for name, images, f in sets]


def score_set(
    segmenter: OnnxSegmenter,
    images: list[AnnotatedImage],
    factor: float,
    mode: str = "estimate",
    tolerance: float = REFINE_TOLERANCE,
    greyscale: bool = False,
) -> dict:
    """Scores of one set. `mode`: "estimate" (no hint: the service estimates), "hint" (the
    true RBC diameter is given) or "as-is" (scale 1: what 1.x answered without a hint).
    `greyscale`: each image is sent as its greyscale copy (Pillow's "L", as RGB).
    """
    metadata = segmenter.metadata
    names = [c.name for c in metadata.classes[1:]]
    tallies = {name: DetectionTally() for name in names}
    within, estimate_ms, network_ms, ratios, warned, refined, passes = [], [], [], [], 0, 0, 0
    measured = []  # the response's median RBC diameter (rbc_sizes) over the boxes' median
    for annotated in images:
        image = rescale_image(load_image(annotated.path), factor)
        if greyscale:
            image = np.asarray(Image.fromarray(image).convert("L").convert("RGB"))
        boxes = scale_boxes(list(annotated.boxes), image.shape[1] / annotated.width)
        try:
            truth = median_rbc_diameter([annotated]) * image.shape[1] / annotated.width
        except DataError:
            truth = None
        started = time.perf_counter()
        if mode == "hint" and truth is not None:
            choice = given_scale(metadata, truth, None)
        elif mode == "as-is":
            choice = given_scale(metadata, None, 1.0)
        else:
            choice = estimated_scale(image, metadata)
        spent = (time.perf_counter() - started) * 1000
        if choice.source == "estimated":
            choice, segmentation = segment_at_estimated_scale(
                image, segmenter, choice, tolerance=tolerance
            )
            refined += choice.refined
            passes += choice.passes
        else:
            segmentation = segment_image(image, segmenter, choice.scale)
        if choice.source == "estimated":
            estimate_ms.append(spent)
            network_ms.append(segmentation.timings_ms["inference"])
            if truth is not None:
                ratios.append(choice.rbc_diameter_px / truth)
                within.append(agrees(choice.rbc_diameter_px, truth, WITHIN))
            warned += not choice.checked
        sizes = rbc_sizes(segmentation.cells)
        if sizes is not None and truth is not None:
            measured.append(sizes["median_diameter_px"] / truth)
        scored = scored_classes(names, annotated)
        for name, match in match_cells(segmentation.cells, boxes, scored).items():
            tallies[name].add(match)
    result = {
        "images": len(images),
        **{name: t.summary() for name, t in tallies.items() if t.count_errors},
    }
    if measured:
        off = np.abs(np.array(measured) - 1)
        result["rbc_sizes"] = {
            "images": len(measured),
            "median_ratio": round(float(np.median(measured)), 3),
            "within_5pct": round(float(np.mean(off <= 0.05)), 3),
            "within_10pct": round(float(np.mean(off <= 0.10)), 3),
        }
    if estimate_ms:
        result["estimate"] = {
            "within_12pct": round(float(np.mean(within)), 3) if within else None,
            "median_ratio": round(float(np.median(ratios)), 3) if ratios else None,
            "low_confidence": warned,
            "refined": refined,
            "network_passes": passes,
            "median_ms": round(float(np.median(estimate_ms)), 1),
            "median_network_ms": round(float(np.median(network_ms)), 1),
            "median_cost_share": round(
                float(np.median(np.array(estimate_ms) / np.array(network_ms))), 3
            ),
        }
    return result


def table(results: dict) -> str:
    """The README's Markdown table."""
    lines = [
        "| set | images | RBC count MAE | RBC F1 | WBC F1 | platelet F1 | "
        "diameter within 12 % | estimate ms (share of network) | scale changed | "
        "network passes |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        est = r.get("estimate") or {}
        platelet = r.get("platelet", {}).get("f1")
        lines.append(
            f"| {name} | {r['images']} | {r['rbc']['count_mae']:.2f} | {r['rbc']['f1']:.3f} | "
            f"{r['wbc']['f1']:.3f} | {'-' if platelet is None else f'{platelet:.3f}'} | "
            f"{est.get('within_12pct', '-')} | "
            f"{est.get('median_ms', '-')} ({est.get('median_cost_share', '-')}) | "
            f"{est.get('refined', '-')} | {est.get('network_passes', '-')} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="models/bloodseg")
    parser.add_argument("--out", help="write the results here as JSON")
    parser.add_argument("--limit", type=int, default=0, help="images per set (0: all)")
    parser.add_argument(
        "--refine-tolerance",
        type=float,
        default=REFINE_TOLERANCE,
        help="segment again when the cells found measure more than this off the estimate",
    )
    parser.add_argument(
        "--mode",
        choices=["estimate", "hint", "as-is"],
        default="estimate",
        help="estimate: no hint (the default); hint: pass each image's true RBC diameter; "
        "as-is: scale 1, what a 1.x service answered without a hint",
    )
    parser.add_argument(
        "--precision",
        choices=["auto", "float32", "int8"],
        default="auto",
        help="which of the model's files runs, as BLOODSEG_PRECISION chooses it",
    )
    parser.add_argument(
        "--greyscale",
        action="store_true",
        help="send each image as its greyscale copy (the greyscale_image warning's figures)",
    )
    args = parser.parse_args()
    model_dir = resolve_model_dir(Path(args.model))
    metadata = read_metadata(model_dir / "model.json")
    options = RunnerOptions(providers=("CPUExecutionProvider",), precision=args.precision)
    segmenter = OnnxSegmenter(model_dir, metadata, options)
    results = {}
    for name, images, factor in evaluation_sets(args.limit):
        results[name] = score_set(
            segmenter, images, factor, args.mode, args.refine_tolerance, args.greyscale
        )
        print(name, json.dumps(results[name]), flush=True)
    print(f"\nbloodseg {metadata.version} ({segmenter.model_file}), mode {args.mode}\n")
    print(table(results))
    if args.out:
        Path(args.out).write_text(
            json.dumps(
                {
                    "model": metadata.version,
                    "model_file": segmenter.model_file,
                    "mode": args.mode,
                    "greyscale": args.greyscale,
                    "sets": results,
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
