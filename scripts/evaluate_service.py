"""Score a running bloodseg service over HTTP on an annotated dataset dir (either layout).

    python scripts/evaluate_service.py --url http://127.0.0.1:8000 \
        --data ../shared/datasets/blood-cell-detection --split val

Uses the same box matching and count errors as `python -m training evaluate`, so the two agree
on the same images; prints JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.inference.postprocess import Cell
from training.data import load_dataset, median_rbc_diameter, split_dataset
from training.metrics import DetectionTally, match_cells, scored_classes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--data", required=True)
    parser.add_argument("--split", choices=["all", "train", "val"], default="all")
    parser.add_argument(
        "--rbc-diameter",
        default="auto",
        help="RBC diameter of the data in pixels; 'auto' measures it from all the dataset's boxes",
    )
    args = parser.parse_args()

    with httpx.Client(base_url=args.url, timeout=120) as client:
        described = client.get("/model").raise_for_status().json()
        training = described["training"]
        classes = [c["name"] for c in described["classes"][1:]]
        root = Path(args.data)
        dataset = load_dataset(root)
        images = split_dataset(
            root,
            dataset,
            args.split,
            training.get("val_fraction", 0.2),
            training.get("seed", 7),
        )
        diameter = (
            median_rbc_diameter(dataset)
            if args.rbc_diameter == "auto"
            else float(args.rbc_diameter)
        )
        tallies = {name: DetectionTally() for name in classes}
        latencies = []
        for annotated in images:
            started = time.perf_counter()
            response = client.post(
                "/segment",
                params={"include": "", "rbc_diameter": diameter},
                files={"image": (annotated.path.name, annotated.path.read_bytes())},
            )
            latencies.append((time.perf_counter() - started) * 1000)
            response.raise_for_status()
            cells = [Cell(**cell) for cell in response.json()["cells"]]
            scored = scored_classes(classes, annotated)
            for name, match in match_cells(cells, annotated.boxes, scored).items():
                tallies[name].add(match)
    result = {
        "url": args.url,
        "data": str(root),
        "split": args.split,
        "images": len(images),
        "rbc_diameter_px": diameter,
        "mean_request_ms": round(float(np.mean(latencies)), 1),
    }
    result.update({name: t.summary() for name, t in tallies.items() if t.count_errors})
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
