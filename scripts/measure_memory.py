"""Peak memory of one /segment request at the service's work limits, for sizing a container.

    python scripts/measure_memory.py

Each case runs in a fresh process: the shipped model loaded on the CPU (its resident memory is
the baseline), then one `segment_upload` with all pictures, as the service runs it, of a real
smear resampled to the case's size and sent with the case's scale: a 40 MP photo (the
BLOODSEG_MAX_PIXELS default) brought down to the work limit, and a 1,000 px image brought up
to it (BLOODSEG_MAX_WORK_PIXELS, 512 tiles). Prints the process's peak resident memory and what
the request added to the baseline. Each of BLOODSEG_WORKERS requests may need that much at once.
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SMEAR = ROOT / "tests" / "data" / "blood-cell-detection" / "images" / "image-2.png"
# (name, side of the square image sent, scale): each just inside the default work limit
CASES = (("40 MP photo, scale 0.66", 6300, 0.66), ("1,000 px image, scale 4.2", 1000, 4.2))

PROBE = r"""
import json, resource, sys
from dataclasses import replace
from pathlib import Path
from app.core.config import Settings
from app.core.model_store import load_model, runner_options
from app.core.segmenting import segment_upload
from app.inference.budget import WorkLimits
from app.inference.metadata import resolve_model_dir

upload, scale = Path(sys.argv[1]).read_bytes(), float(sys.argv[2])
settings = Settings()
options = replace(runner_options(settings), providers=("CPUExecutionProvider",))
model = load_model(resolve_model_dir(Path(settings.model_dir)), options)
limits = WorkLimits(settings.max_pixels, settings.max_work_pixels)
baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
body = segment_upload(
    upload, model, frozenset({"mask", "instances", "overlay"}), limits, scale=scale
).body
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"baseline_mb": round(baseline), "peak_mb": round(peak),
                  "seconds": round(body["timings_ms"]["total"] / 1000, 1),
                  "cells": len(body["cells"])}))
"""


def jpeg_of_side(side: int) -> bytes:
    """The smear resampled to a side x side JPEG (quality 90), as a camera would send it."""
    picture = Image.open(SMEAR).convert("RGB").resize((side, side), Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    picture.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=ROOT, help="the checkout to measure")
    args = parser.parse_args()
    for name, side, scale in CASES:
        with tempfile.NamedTemporaryFile(suffix=".jpg") as upload:
            upload.write(jpeg_of_side(side))
            upload.flush()
            result = subprocess.run(
                [sys.executable, "-c", PROBE, upload.name, str(scale)],
                cwd=args.root,
                capture_output=True,
                text=True,
                check=True,
            )
        figures = json.loads(result.stdout.strip().splitlines()[-1])
        added = figures["peak_mb"] - figures["baseline_mb"]
        print(
            f"{name}: peak {figures['peak_mb']} MB resident, {added} MB over the loaded model "
            f"({figures['baseline_mb']} MB); {figures['seconds']} s, {figures['cells']} cells"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
