"""The CPU stages around the network, old code against new, side by side in one run.

    git worktree add /tmp/before <commit>
    python scripts/benchmark_stages.py /tmp/before .

For each checkout, alternated `--rounds` times in fresh processes, on the two images of
benchmark_service.py at the scale the shipped model segments them at: the magnification
estimate's signature, post-processing for counts only, post-processing with the image-size
maps that pictures need, the overlay's drawing, and the PNG encoding of the three pictures.
Prints the median of each and the ratio new / old.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

# runs inside each checkout, with that checkout's code (pipelines before the lazy image-size
# maps returned them already built: touching .mask and .instances is then free)
PROBE = r"""
import json, sys, time
from pathlib import Path
import numpy as np
from app.inference.decode import load_image
from app.inference.magnification import log_signature
from app.inference.metadata import read_metadata, resolve_model_dir
from app.inference.pipeline import predict_probs
from app.inference.render import overlay_image
from app.inference.runner import OnnxSegmenter, RunnerOptions

try:
    from app.inference.png import encode_png
except ImportError:  # before the pictures had their own encoder
    from app.inference.render import png_bytes as encode_png

images, repeats = json.loads(sys.argv[1]), int(sys.argv[2])
directory = resolve_model_dir(Path("models/bloodseg"))
metadata = read_metadata(directory / "model.json")
segmenter = OnnxSegmenter(directory, metadata, RunnerOptions(providers=("CPUExecutionProvider",)))
out = {}
for name, path, rbc_diameter in images:
    image = load_image(Path(path))
    # the scale the model segments at (its working diameter; the training one before 2.2.2)
    scale = getattr(metadata, "working_rbc_diameter_px", metadata.rbc_diameter_px) / rbc_diameter
    probs = predict_probs(image, segmenter, scale)

    def timed(step):
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            step()
            times.append((time.perf_counter() - started) * 1000)
        return float(np.median(times))

    from app.inference import pipeline

    height, width = image.shape[:2]
    # the thresholds and channel layout are passed explicitly since 2.0.0's design pass
    explicit = hasattr(metadata, "layout")
    args = (metadata.counting, metadata.layout) if explicit else (metadata,)
    out[f"{name} estimate"] = timed(lambda: log_signature(image))
    out[f"{name} postprocess, counts"] = timed(
        lambda: pipeline.cells_from_probs(probs, *args, height, width)
    )
    # what segment_image adds since the octave check (2.2.2)
    centre_peak = getattr(pipeline, "rbc_centre_peak", None)
    if centre_peak is not None:
        instances, _ = pipeline.cells_from_probs(probs, *args, height, width)
        out[f"{name} RBC centre peak"] = timed(lambda: centre_peak(probs, instances, args[-1]))

    # the scale check's measurement of the RBCs (since 2.2.4 on the cells before they widen)
    counted = getattr(pipeline, "counted_rbc_diameter", None)
    instances, cells = pipeline.cells_from_probs(probs, *args, height, width)
    if counted is not None:
        out[f"{name} scale check's measurement"] = timed(
            lambda: counted(instances, cells, args[-1], height, width)
        )
    elif hasattr(pipeline, "measured_rbc_diameter"):
        out[f"{name} scale check's measurement"] = timed(
            lambda: pipeline.measured_rbc_diameter(cells, height, width)
        )

    def with_maps():
        instances, cells = pipeline.cells_from_probs(probs, *args, height, width)
        if hasattr(pipeline.Segmentation, "network_instances"):
            segmentation = pipeline.Segmentation(instances, (height, width), cells, {})
            segmentation.mask, segmentation.instances
        else:
            pipeline.class_mask(instances)

    out[f"{name} postprocess + image-size maps"] = timed(with_maps)

    # the three pictures' PNGs (the overlay built once: its drawing is timed on its own)
    segmentation = pipeline.segment_image(image, segmenter, scale)
    pictures = [
        segmentation.mask,
        segmentation.instances.labels.astype(np.uint16),
        overlay_image(image, segmentation.instances, segmentation.cells, metadata),
    ]
    out[f"{name} overlay"] = timed(
        lambda: overlay_image(image, segmentation.instances, segmentation.cells, metadata)
    )
    out[f"{name} encode mask + instances + overlay"] = timed(
        lambda: [encode_png(p) for p in pictures]
    )
print(json.dumps(out))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old", type=Path, help="checkout of the code before")
    parser.add_argument("new", type=Path, help="checkout of the code after")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    datasets = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
    images = [
        # with the RBC diameter (px) 2.2.2 estimates for each (benchmark_service.py's scales)
        ("256x256", str(datasets / "blood-cell-detection/images/image-100.png"), 53.5),
        ("640x480", str(datasets / "bccd/JPEGImages/BloodImage_00000.jpg"), 113.9),
    ]
    runs: dict[str, list[dict]] = {"old": [], "new": []}
    for _ in range(args.rounds):
        for label, root in (("old", args.old), ("new", args.new)):
            done = subprocess.run(
                [sys.executable, "-c", PROBE, json.dumps(images), str(args.repeats)],
                cwd=root.resolve(),
                capture_output=True,
                text=True,
                check=True,
            )
            runs[label].append(json.loads(done.stdout.strip().splitlines()[-1]))
    print(f"{'stage':45s} {'old ms':>8s} {'new ms':>8s} {'new/old':>8s}")
    for stage in runs["old"][0]:
        old = statistics.median(r[stage] for r in runs["old"])
        new = statistics.median(r[stage] for r in runs["new"])
        print(f"{stage:45s} {old:8.1f} {new:8.1f} {new / old:8.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
