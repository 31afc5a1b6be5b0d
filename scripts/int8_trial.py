"""Does int8 pay on this CPU? Quantise a published model (static QDQ, per channel), then time
it against float32 and score both on the validation split, side by side in one run.

    python scripts/int8_trial.py                       # the shipped model, blood-cell-detection
    python scripts/int8_trial.py --model models/bloodseg/1.1.0 --repeats 30

Prints network ms per 256x256 tile for both (alternated), the speed ratio, the validation
figures of both, and whether int8 passes the accuracy gate (every figure within 0.01 of
float32, as training's export requires of any variant that ships).
"""

from __future__ import annotations

import argparse
import hashlib
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
from app.inference.metadata import Variant, read_metadata, resolve_model_dir  # noqa: E402
from app.inference.preprocess import normalize_image  # noqa: E402
from app.inference.runner import OnnxSegmenter, RunnerOptions  # noqa: E402
from training.data import load_dataset, split_dataset  # noqa: E402
from training.evaluate import evaluate_images  # noqa: E402
from training.optimize import int8_variant, simplify_file  # noqa: E402

GATE = 0.01
INT8_FILE = "model.int8.onnx"
GATED = ("dice_rbc", "dice_wbc", "pixel_accuracy")
GATED_COUNTS = ("f1", "count_mae")


def gated_figures(result: dict) -> dict[str, float]:
    """The validation figures the gate compares."""
    figures = {k: result[k] for k in GATED}
    figures.update({f"vs_ellipses.{k}": result["vs_ellipses"][k] for k in GATED})
    for label in ("rbc", "wbc"):
        figures.update({f"{label}.{k}": result[label][k] for k in GATED_COUNTS})
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(ROOT / "models" / "bloodseg"))
    parser.add_argument(
        "--data", default=str(ROOT.parent / "shared" / "datasets" / "blood-cell-detection")
    )
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()

    source = resolve_model_dir(Path(args.model))
    metadata = read_metadata(source / "model.json")
    root = Path(args.data)
    dataset = load_dataset(root)
    fraction, seed = metadata.training.get("val_fraction", 0.2), metadata.training.get("seed", 7)
    split = {s: split_dataset(root, dataset, s, fraction, seed) for s in ("train", "val")}
    spec = metadata.input.normalization
    calibration = [normalize_image(load_image(a.path), spec)[None] for a in split["train"][:16]]

    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        shutil.copyfile(source / "model.onnx", work / "model.onnx")
        simplify_file(work / "model.onnx", work / "model.onnx")  # quantise the lean graph
        int8_variant(work / "model.onnx", work / INT8_FILE, calibration)
        fp32_meta = metadata.model_copy(update={"variants": []})
        int8_meta = metadata.model_copy(
            update={
                "variants": [
                    Variant(
                        file=INT8_FILE,
                        precision="int8",
                        providers=["CPUExecutionProvider"],
                        sha256=hashlib.sha256((work / INT8_FILE).read_bytes()).hexdigest(),
                    )
                ]
            }
        )
        options = RunnerOptions(providers=("CPUExecutionProvider",))
        runners = {
            "float32": OnnxSegmenter(work, fp32_meta, options),
            "int8": OnnxSegmenter(work, int8_meta, options),
        }
        tile = calibration[0].astype(np.float32)
        times: dict[str, list[float]] = {name: [] for name in runners}
        for runner in runners.values():
            runner.run_batch(tile)
        for _ in range(args.repeats):
            for name, runner in runners.items():
                started = time.perf_counter()
                runner.run_batch(tile)
                times[name].append((time.perf_counter() - started) * 1000)
        scores = {
            name: gated_figures(evaluate_images(runner, split["val"], None))
            for name, runner in runners.items()
        }

    ms = {name: round(statistics.median(values), 1) for name, values in times.items()}
    gaps = {k: round(abs(scores["int8"][k] - scores["float32"][k]), 4) for k in scores["float32"]}
    report = {
        "model": f"{metadata.name} {metadata.version}",
        "val_images": len(split["val"]),
        "network_ms_p50": ms,
        "int8_speedup": round(ms["float32"] / ms["int8"], 3),
        "val": scores,
        "gaps": gaps,
        "int8_passes_gate": all(gap <= GATE for gap in gaps.values()),
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
