"""Side-by-side CPU speed of exported models on real 256x256 smears, measured in one run.

    python scripts/benchmark.py models/bloodseg runs/original/export

For each model: GFLOP per 256x256 image (from model.json), ONNX Runtime milliseconds per image
for the network alone (batch 1), and for the whole pipeline (normalise, tile, run, instances).
Models are timed in alternation, so machine noise hits all of them alike; medians are reported
with the ratio to the first model. ONNX Runtime's spinning is off: with it, one session's
threads spin on the cores while the next model runs (2.2.2 measured 44 ms alternated with
spinning, 29 ms without, on the same CPU).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.inference.decode import load_image
from app.inference.metadata import read_metadata, resolve_model_dir
from app.inference.pipeline import segment_image
from app.inference.preprocess import normalize_image
from app.inference.runner import OnnxSegmenter, RunnerOptions

DEFAULT_IMAGES = Path(__file__).resolve().parents[2] / "shared/datasets/blood-cell-detection/images"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "models", nargs="+", help="model dirs (version dir, root with CURRENT, export)"
    )
    parser.add_argument("--images", default=str(DEFAULT_IMAGES))
    parser.add_argument("--count", type=int, default=8, help="images to time")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads")
    args = parser.parse_args()

    paths = sorted(Path(args.images).glob("*.png"))[: args.count]
    images = [load_image(p) for p in paths]
    segmenters = []
    for model in args.models:
        directory = resolve_model_dir(Path(model))
        metadata = read_metadata(directory / "model.json")
        options = RunnerOptions(
            providers=("CPUExecutionProvider",), intra_op_threads=args.threads, spinning=False
        )
        segmenters.append((model, OnnxSegmenter(directory, metadata, options)))

    network = {name: [] for name, _ in segmenters}
    pipeline = {name: [] for name, _ in segmenters}
    for _, segmenter in segmenters:  # warm-up
        segment_image(images[0], segmenter)
    for _ in range(args.repeats):
        for image in images:
            for name, segmenter in segmenters:
                batch = normalize_image(image, segmenter.metadata.input.normalization)[None]
                started = time.perf_counter()
                segmenter.run_batch(batch)
                network[name].append((time.perf_counter() - started) * 1000)
                started = time.perf_counter()
                segment_image(image, segmenter)
                pipeline[name].append((time.perf_counter() - started) * 1000)

    first = segmenters[0][0]
    base_net, base_pipe = statistics.median(network[first]), statistics.median(pipeline[first])
    rows = []
    for name, segmenter in segmenters:
        metrics = segmenter.metadata.metrics
        net, pipe = statistics.median(network[name]), statistics.median(pipeline[name])
        rows.append(
            {
                "model": name,
                "version": segmenter.metadata.version,
                "parameters": metrics.get("parameters"),
                "gflops_256": metrics.get("gflops_256"),
                "onnx_cpu_ms_per_image": round(net, 1),
                "pipeline_cpu_ms_per_image": round(pipe, 1),
                "network_time_vs_first": round(net / base_net, 2),
                "pipeline_time_vs_first": round(pipe / base_pipe, 2),
            }
        )
    print(
        json.dumps(
            {
                "images": len(images),
                "repeats": args.repeats,
                "size": "256x256",
                "threads": args.threads or "ort default",
                "results": rows,
            },
            indent=2,
        )
    )
    for row in rows:
        print(
            f"{row['model']:40s} {row['gflops_256']!s:>7} GFLOP  "
            f"{row['onnx_cpu_ms_per_image']:8.1f} ms "
            f"network  {row['pipeline_cpu_ms_per_image']:8.1f} ms pipeline  "
            f"x{row['network_time_vs_first']} vs first",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
