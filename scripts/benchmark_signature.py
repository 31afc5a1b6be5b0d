"""The magnification estimate's signatures side by side: the legacy one (2.0, 2.1), 2.2.0's
image pyramid, and the pyramid read through bounded levels (fitted since), on the same
validation images, interleaved, with the network pass beside.

    python scripts/benchmark_signature.py [--model models/bloodseg] [--images 8]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from evaluate_microscopes import evaluation_sets

from app.inference.decode import load_image
from app.inference.magnification import (
    LEGACY_SIGNATURE,
    PYRAMID_SIGNATURE,
    SIGNATURE,
    log_signature,
)
from app.inference.metadata import read_metadata, resolve_model_dir
from app.inference.pipeline import estimated_scale, predict_probs
from app.inference.preprocess import rescale_image
from app.inference.runner import OnnxSegmenter, RunnerOptions


def timed_ms(call, *args) -> float:
    start = time.perf_counter()
    call(*args)
    return (time.perf_counter() - start) * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="models/bloodseg")
    parser.add_argument("--images", type=int, default=8, help="images per set")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    model_dir = resolve_model_dir(Path(args.model))
    metadata = read_metadata(model_dir / "model.json")
    segmenter = OnnxSegmenter(
        model_dir, metadata, RunnerOptions(providers=("CPUExecutionProvider",))
    )
    specs = {"legacy": LEGACY_SIGNATURE, "2.2.0 pyramid": PYRAMID_SIGNATURE, "bounded": SIGNATURE}
    print(f"bloodseg {metadata.version}'s network; median ms per image")
    columns = " | ".join(specs)
    print(f"| set | size | {columns} | bounded / pyramid | network pass | bounded share |")
    print("|---|---|---|---|---|---|---|---|")
    for name, images, factor in evaluation_sets(args.images):
        times: dict[str, list[float]] = {key: [] for key in [*specs, "network"]}
        for annotated in images:
            image = rescale_image(load_image(annotated.path), factor)
            scale = estimated_scale(image, metadata).scale
            for _ in range(args.repeats):
                for key, spec in specs.items():
                    times[key].append(timed_ms(log_signature, image, spec))
                times["network"].append(timed_ms(predict_probs, image, segmenter, scale))
        ms = {key: float(np.median(values)) for key, values in times.items()}
        print(
            f"| {name} | {image.shape[1]}x{image.shape[0]} | "
            + " | ".join(f"{ms[key]:.1f}" for key in specs)
            + f" | {ms['bounded'] / ms['2.2.0 pyramid']:.2f} | {ms['network']:.1f} | "
            f"{ms['bounded'] / ms['network']:.2f} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
