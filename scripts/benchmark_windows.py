"""Windows against overlapping tiles, side by side in one run (BLOODSEG_MAX_WINDOW_PIXELS).

    python scripts/benchmark_windows.py --images 8 --repeats 4 \
        --out docs/benchmark/windows-2.2.4.json

The images: the first --images validation images of each source; mosaics of 2 x 2 BCCD
images (1280x960, a camera frame's field); one of 4 x 4 (2560x1920, one window at the
working scale); one of 6 x 6 blood-cell-detection images (1536x1536, past one window: four).
Each goes through the service's own path (`segment_upload`, all pictures, the image's true RBC
diameter given so that both runs segment at the same scale), alternated --repeats times, in
turn first, ONNX Runtime's spinning off, between the shipped model with tiles only
(max_window_pixels 0, as before) and with its default (on the CPU one window up to 1024 x 1024
pixels at the working scale, even windows of at most that past it). Prints per set the
network ms and the whole request's ms (medians) for both, their ratio, the work in pixels,
and the cells the two found (per class, summed over the images). What matters is an image's
extent in RBC diameters: resampled, it comes back to one size at the working scale.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from evaluate_field_of_view import png  # noqa: E402
from evaluate_microscopes import evaluation_sets  # noqa: E402

from app.core.config import Settings  # noqa: E402
from app.core.model_store import load_model, runner_options  # noqa: E402
from app.core.segmenting import segment_upload  # noqa: E402
from app.inference.budget import WorkLimits  # noqa: E402
from app.inference.decode import load_image  # noqa: E402
from app.inference.metadata import resolve_model_dir  # noqa: E402
from app.inference.preprocess import rescale_image  # noqa: E402
from training.data import DataError, median_rbc_diameter  # noqa: E402


def mosaics(images: list, side: int = 2, count: int = 0) -> list:
    """Images of one size tiled side x side, taken in turn (the first one's boxes stand for
    the mosaic's RBC diameter: the same microscope); `count` mosaics, or as many as the
    images make without repeating one."""
    count = count or len(images) // (side * side)
    tiled = []
    for first in range(0, count * side * side, side * side):
        group = [images[(first + i) % len(images)][1] for i in range(side * side)]
        rows = [np.hstack(group[r * side : (r + 1) * side]) for r in range(side)]
        tiled.append((images[first % len(images)][0], np.vstack(rows)))
    return tiled


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=6, help="images per set")
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    settings = Settings()
    # spinning off: one session's idle threads spinning would slow the other's run after it
    options = replace(runner_options(settings), providers=("CPUExecutionProvider",), spinning=False)
    directory = resolve_model_dir(Path(settings.model_dir))
    models = {
        "tiles": load_model(directory, replace(options, max_window_pixels=0)),
        "window": load_model(directory, options),
    }
    limits = WorkLimits(settings.max_pixels, settings.max_work_pixels)
    report: dict = {"model": models["window"].metadata.version, "sets": {}}
    sets = [
        (name, [(a, load_image(a.path)) for a in images])
        for name, images, factor in evaluation_sets(args.images)
        if factor == 1.0
    ]
    bccd = dict(sets)["txl-pbc:640x480 val"]
    sets.append(("BCCD 2x2 mosaics, 1280x960", mosaics(bccd)))
    # past one window: 4 x 4 BCCD (2560x1920, about 1130x850 at the working scale, one
    # window) and 6 x 6 blood-cell-detection (1536x1536, about 1300 px: four windows)
    sets.append(("BCCD 4x4 mosaic, 2560x1920", mosaics(bccd, 4, 1)))
    bcd = dict(sets)["blood-cell-detection val"]
    sets.append(("blood-cell-detection 6x6 mosaic, 1536x1536", mosaics(bcd, 6, 1)))
    for name, images in sets:
        times = {k: {"network": [], "request": []} for k in models}
        cells = {k: {} for k in models}
        shapes = set()
        for annotated, image in images:
            try:
                diameter = median_rbc_diameter([annotated])
            except DataError:
                continue
            data = png(image)
            for repeat in range(args.repeats):
                order = list(models.items())
                for kind, model in order if repeat % 2 == 0 else order[::-1]:
                    body = segment_upload(
                        data,
                        model,
                        frozenset({"mask", "instances", "overlay"}),
                        limits,
                        rbc_diameter=diameter,
                    ).body
                    times[kind]["network"].append(body["timings_ms"]["inference"])
                    times[kind]["request"].append(body["timings_ms"]["total"])
                    if repeat == 0:
                        for label, count in body["counts"].items():
                            cells[kind][label] = cells[kind].get(label, 0) + count
            scaled = rescale_image(
                image, models["window"].metadata.working_rbc_diameter_px / diameter
            )
            segmenter = models["window"].segmenter
            shapes.add(
                f"{segmenter.network_pixels(*scaled.shape[:2])} px of work (tiles: "
                f"{models['tiles'].segmenter.network_pixels(*scaled.shape[:2])})"
            )
        medians = {
            k: {s: round(statistics.median(v), 1) for s, v in t.items()} for k, t in times.items()
        }
        row = {
            "images": len(images),
            "ms": medians,
            "window_over_tiles": {
                s: round(medians["window"][s] / medians["tiles"][s], 3)
                for s in ("network", "request")
            },
            "work": sorted(shapes),
            "cells": cells,
        }
        report["sets"][name] = row
        print(name, json.dumps(row), flush=True)
    if args.out:
        args.out.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
