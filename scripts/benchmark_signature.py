"""The magnification estimate's signatures side by side: the legacy one (2.0, 2.1) and the one
fitted since 2.2, on the same validation images, interleaved, with the network pass beside.

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
from app.inference.magnification import LEGACY_SIGNATURE, SIGNATURE, log_signature
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
    print(f"bloodseg {metadata.version}; median ms per image")
    print("| set | size | legacy signature | 2.2 signature | ratio | network pass | 2.2 share |")
    print("|---|---|---|---|---|---|---|")
    for name, images, factor in evaluation_sets(args.images):
        legacy, current, network = [], [], []
        for annotated in images:
            image = rescale_image(load_image(annotated.path), factor)
            scale = estimated_scale(image, metadata).scale
            for _ in range(args.repeats):
                legacy.append(timed_ms(log_signature, image, LEGACY_SIGNATURE))
                current.append(timed_ms(log_signature, image, SIGNATURE))
                network.append(timed_ms(predict_probs, image, segmenter, scale))
        old, new, net = (float(np.median(x)) for x in (legacy, current, network))
        print(
            f"| {name} | {image.shape[1]}x{image.shape[0]} | {old:.1f} | {new:.1f} | "
            f"{new / old:.2f} | {net:.1f} | {new / net:.2f} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
