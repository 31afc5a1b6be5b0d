"""Does int8 pay on this CPU? Quantise a published model as `training optimize --int8` does,
then time it against float32 and score both per validation source, side by side in one run.

    python scripts/int8_trial.py                       # the shipped model
    python scripts/int8_trial.py --model models/bloodseg/2.2.3 --repeats 30

Prints network ms per 256x256 tile for both (alternated, ONNX Runtime's spinning off so that
one session's idle threads do not slow the other), the speed ratio, both models' validation
figures per source, the largest drop, and whether int8 passes the accuracy gate (every
figure within 0.01 of float32, as training's export requires of any variant that ships).
`parity_on_training_images` compares the two on training images that calibration does not
use (the next --parity-images of each source): the share of pixels whose class differs, and
per class the cells found by one without a twin (box IoU >= 0.5) in the other, and how many
more RBCs int8 counts per image (mean, and mean absolute difference). `--also-float` keeps
more nodes in float32, to find where int8's differences come from:

    python scripts/int8_trial.py --model models/bloodseg/2.2.5 --also-float Conv__558,Conv__562
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.inference.decode import load_image  # noqa: E402
from app.inference.metadata import read_metadata, resolve_model_dir  # noqa: E402
from app.inference.pipeline import scale_for, segment_image  # noqa: E402
from app.inference.runner import OnnxSegmenter, RunnerOptions  # noqa: E402
from training.data import SourceSet  # noqa: E402
from training.metrics import greedy_pairs  # noqa: E402
from training.quantize import (  # noqa: E402
    CALIBRATION_IMAGES_PER_SOURCE,
    GATE,
    calibration_tiles,
    int8_for_cpu,
    int8_segmenter,
    training_sets,
)

CLASSES = ("rbc", "wbc", "platelet")


def parity(runners: dict[str, OnnxSegmenter], sets: list[SourceSet], per_source: int) -> dict:
    """How far int8's cells and pixels are from float32's on the given training images."""
    float32, int8 = runners["float32"], runners["int8"]
    working = float32.metadata.working_rbc_diameter_px
    differ, pixels, unmatched = 0, 0, dict.fromkeys(CLASSES, 0)
    cells = dict.fromkeys(CLASSES, 0)
    rbc_more = []  # int8's RBC count minus float32's, per image
    start = CALIBRATION_IMAGES_PER_SOURCE
    for _, images, diameter in sets:
        scale = scale_for(working, diameter, None)
        for annotated in images[start : start + per_source]:
            image = load_image(annotated.path)
            a, b = (segment_image(image, r, scale, with_class_map=True) for r in (float32, int8))
            differ += int((a.semantic != b.semantic).sum())
            pixels += a.semantic.size
            for label in CLASSES:
                boxes = [[c.bbox for c in s.cells if c.label == label] for s in (a, b)]
                first, second = (np.array(x, dtype=float).reshape(-1, 4) for x in boxes)
                twins = len(greedy_pairs(first, second, 0.5))
                cells[label] += len(first)
                unmatched[label] += len(first) + len(second) - 2 * twins
            rbc_more.append(b.counts["rbc"] - a.counts["rbc"])
    more = np.array(rbc_more or [0])
    return {
        "images_per_source": per_source,
        "pixels_of_another_class": round(differ / max(pixels, 1), 5),
        "float32_cells": cells,
        "cells_without_a_twin": unmatched,
        "int8_rbcs_more_per_image": round(float(more.mean()), 3),
        "rbc_count_difference_per_image": round(float(np.abs(more).mean()), 3),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(ROOT / "models" / "bloodseg"))
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--parity-images", type=int, default=40, help="per source; 0: skip")
    parser.add_argument(
        "--also-float",
        default="",
        help="comma list of nodes to keep in float32 besides the first convolution and the "
        "heads' (a trial: which part of the network int8's differences come from)",
    )
    args = parser.parse_args()

    source = resolve_model_dir(Path(args.model))
    metadata = read_metadata(source / "model.json")
    train_sets, val_sets = training_sets(metadata)
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        shutil.copyfile(source / "model.onnx", work / "model.onnx")
        with contextlib.redirect_stdout(sys.stderr):  # the calibrator prints its progress
            variant, report = int8_for_cpu(
                work,
                metadata,
                train_sets,
                val_sets,
                gate=float("inf"),
                also_float=[n for n in args.also_float.split(",") if n],
            )
        options = RunnerOptions(providers=("CPUExecutionProvider",), spinning=False)
        runners = {
            "float32": OnnxSegmenter(work, metadata.model_copy(update={"variants": []}), options),
            "int8": int8_segmenter(
                work, metadata.model_copy(update={"variants": [variant]}), spinning=False
            ),
        }
        agreement = parity(runners, train_sets, args.parity_images) if args.parity_images else {}
        tile = calibration_tiles(metadata, val_sets[:1])[0]
        times: dict[str, list[float]] = {name: [] for name in runners}
        for runner in runners.values():
            runner.run_batch(tile)
        for _ in range(args.repeats):
            for name, runner in runners.items():
                for _ in range(3):
                    started = time.perf_counter()
                    runner.run_batch(tile)
                    times[name].append((time.perf_counter() - started) * 1000)

    ms = {name: round(statistics.median(values), 1) for name, values in times.items()}
    worst = next(iter(report["largest_drop"].values()))
    print(
        json.dumps(
            {
                "model": f"{metadata.name} {metadata.version}",
                "network_ms_p50": ms,
                "int8_speedup": round(ms["float32"] / ms["int8"], 3),
                **report,
                "parity_on_training_images": agreement,
                "gate": GATE,
                "int8_passes_gate": worst <= GATE,
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
