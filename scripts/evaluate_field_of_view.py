"""Eyepiece photos: validation smears seen through a round field of view, sent with no hint.

Each validation image of each source at its own magnification is made into an eyepiece photo:
black outside the circle inscribed in it ("hard"), or with its outer 15 % of radius darkening
gradually to black ("soft", the falloff of a camera adapter). Both go through the service's
own path (`segment_upload`, no hint), once as it is and once with the field-of-view step
switched off (`BLOODSEG_FIELD_OF_VIEW=false`, what the service did before it), beside the
plain image. RBC counts are scored
against the boxes whose centres lie inside the circle, and counted cells by their centroids,
inside 0.925 of its radius for "soft" (where the falloff has not dimmed the smear much).

Also scans every image of the three datasets for a dark surround (there should be none but
real ones) and times the step on the images that have none.

    python scripts/evaluate_field_of_view.py --out docs/benchmark/field-of-view-2.2.4.json
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from evaluate_microscopes import DATASETS, evaluation_sets  # noqa: E402

from app.core.config import Settings  # noqa: E402
from app.core.model_store import load_model, runner_options  # noqa: E402
from app.core.segmenting import segment_upload  # noqa: E402
from app.inference.budget import WorkLimits  # noqa: E402
from app.inference.decode import load_image  # noqa: E402
from app.inference.field_of_view import within_field_of_view  # noqa: E402
from app.inference.metadata import resolve_model_dir  # noqa: E402

FALLOFF = 0.15
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}


def eyepiece(image: np.ndarray, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """The eyepiece photo of an image and the mask of where its cells are scored."""
    height, width = image.shape[:2]
    rows, cols = np.mgrid[:height, :width]
    radius = min(height, width) / 2
    distance = np.hypot(rows - height / 2, cols - width / 2)
    if mode == "soft":
        light = np.clip((radius - distance) / (FALLOFF * radius), 0, 1)
        photo = (image * light[..., None]).astype(np.uint8)
        return photo, distance <= (1 - FALLOFF / 2) * radius
    photo = image.copy()
    photo[distance > radius] = 0
    return photo, distance <= radius


def png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def score_set(model, limits, images, mode: str) -> dict:
    """RBC count errors inside the field, and the estimate against the plain image's."""
    errors: dict[str, list[int]] = {"plain": [], "before": [], "now": []}
    ratios: dict[str, list[float]] = {"before": [], "now": []}
    warned = {"before": 0, "now": 0}
    covers = []
    for annotated in images:
        image = load_image(annotated.path)
        photo, scored = eyepiece(image, mode)
        truth = sum(
            1
            for b in annotated.boxes
            if b.label == "rbc"
            and scored[int((b.y_min + b.y_max) / 2), int((b.x_min + b.x_max) / 2)]
        )
        runs = {"plain": (image, False), "before": (photo, True), "now": (photo, False)}
        diameters = {}
        for name, (picture, switched_off) in runs.items():
            body = segment_upload(
                png(picture), model, frozenset(), limits, find_field_of_view=not switched_off
            ).body
            found = sum(
                1
                for c in body["cells"]
                if c["label"] == "rbc" and scored[int(c["centroid"][1]), int(c["centroid"][0])]
            )
            errors[name].append(found - truth)
            diameters[name] = body["rbc_diameter_px"]
            if name != "plain":
                warned[name] += any(w["code"] == "scale_low_confidence" for w in body["warnings"])
            if name == "now":
                covers.append(body["field_of_view"])
        for name in ratios:
            ratios[name].append(diameters[name] / diameters["plain"])

    def summary(values: list[int]) -> dict:
        return {
            "count_mae": round(float(np.mean(np.abs(values))), 2),
            "count_bias": round(float(np.mean(values)), 2),
        }

    return {
        "images": len(images),
        "field_of_view_median": round(float(np.median(covers)), 3),
        "rbc_plain": summary(errors["plain"]),
        "rbc_photo_before": summary(errors["before"]),
        "rbc_photo_now": summary(errors["now"]),
        **{
            f"estimate_{name}_vs_plain": {
                "median": round(float(np.median(r)), 3),
                "within_12pct": round(float(np.mean(np.abs(np.array(r) - 1) <= 0.12)), 3),
            }
            for name, r in ratios.items()
        },
        "scale_low_confidence": warned,
    }


def scan(root: Path) -> dict:
    """Every image under root: which have a dark surround, and the step's cost on the rest."""
    found, costs = [], []
    for path in sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES):
        image = load_image(path)
        started = time.perf_counter()
        field = within_field_of_view(image)
        spent = (time.perf_counter() - started) * 1000
        if field.cover < 1:
            found.append({"image": str(path.relative_to(root)), "field_of_view": field.cover})
        else:
            costs.append(spent)
    return {
        "images": len(found) + len(costs),
        "with_a_surround": found,
        "ms_without_one": {
            "median": round(statistics.median(costs), 3),
            "max": round(max(costs), 2),
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(ROOT / "models" / "bloodseg"))
    parser.add_argument("--limit", type=int, default=0, help="images per set (0: all)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    settings = Settings()
    options = replace(runner_options(settings), providers=("CPUExecutionProvider",))
    model = load_model(resolve_model_dir(Path(args.model)), options)
    limits = WorkLimits(settings.max_pixels, settings.max_work_pixels)
    figures: dict = {"model": f"{model.metadata.name} {model.metadata.version}", "sets": {}}
    for name, images, factor in evaluation_sets(args.limit):
        if factor != 1.0:
            continue
        for mode in ("hard", "soft"):
            scored = score_set(model, limits, images, mode)
            figures["sets"][f"{name} {mode}"] = scored
            print(f"{name} {mode}: {json.dumps(scored)}", flush=True)
    figures["scan"] = scan(DATASETS)
    print(json.dumps(figures["scan"]))
    if args.out:
        args.out.write_text(json.dumps(figures, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
