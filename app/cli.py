"""The `bloodseg` command: segment many images into CSVs and exports, or serve the API.

bloodseg segment IMAGES... --out DIR [--url URL] [--format csv,geojson,rois,overlay]
bloodseg serve
"""

from __future__ import annotations

import argparse
import csv
import glob
import json
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from tqdm import tqdm

from app.inference.exports import CELL_COLUMNS, imagej_rois

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".webp"})
FORMATS = ("csv", "geojson", "rois", "overlay")

Segment = Callable[[bytes, set[str]], dict]


def find_images(paths: list[str]) -> list[Path]:
    """Files, folders (their images) and glob patterns, in order, without repeats."""
    found: list[Path] = []
    for item in paths:
        path = Path(item)
        if path.is_dir():
            found += sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        elif path.exists():
            found.append(path)
        else:
            found += sorted(Path(p) for p in glob.glob(item, recursive=True) if Path(p).is_file())
    unique: dict[Path, Path] = {}
    for path in found:
        unique.setdefault(path.resolve(), path)
    return list(unique.values())


def output_names(images: list[Path]) -> dict[Path, str]:
    """A file-system-safe output name per image: its file name, made unique."""
    names: dict[Path, str] = {}
    taken: set[str] = set()
    for image in images:
        name, index = image.name, 1
        while name in taken:
            index += 1
            name = f"{image.stem}-{index}{image.suffix}"
        taken.add(name)
        names[image] = name
    return names


def in_process_segmenter(args: argparse.Namespace) -> tuple[Segment, float]:
    """Segment with the model loaded here (BLOODSEG_* settings, or --model)."""
    from app.core.config import get_settings
    from app.core.model_store import load_model, runner_options
    from app.core.segmenting import segment_upload
    from app.inference.budget import WorkLimits
    from app.inference.metadata import resolve_model_dir

    settings = get_settings()
    model_dir = Path(args.model) if args.model else settings.model_dir
    model = load_model(resolve_model_dir(model_dir).resolve(), runner_options(settings))
    limits = WorkLimits(settings.max_pixels, settings.max_work_pixels)

    def segment(data: bytes, parts: set[str]) -> dict:
        result = segment_upload(
            data,
            model,
            frozenset(parts),
            limits,
            args.scale,
            args.rbc_diameter,
            embed=False,
            auto_scale=settings.auto_scale,
            find_field_of_view=settings.field_of_view,
        )
        return {**result.body, "pngs": result.pngs}

    return segment, model.metadata.working_rbc_diameter_px


def remote_segmenter(args: argparse.Namespace) -> tuple[Segment, float]:
    """Segment by POSTing to a running service."""
    import base64

    import httpx

    client = httpx.Client(base_url=args.url, timeout=300)
    described = client.get("/model").raise_for_status().json()
    diameter = described.get("working_rbc_diameter_px", described["rbc_diameter_px"])
    params = {k: v for k, v in (("scale", args.scale), ("rbc_diameter", args.rbc_diameter)) if v}

    def segment(data: bytes, parts: set[str]) -> dict:
        response = client.post(
            "/segment",
            params={**params, "include": ",".join(sorted(parts))},
            files={"image": ("image", data)},
        )
        if response.status_code != 200:
            try:
                message = response.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = response.text[:200]
            raise RuntimeError(f"{response.status_code}: {message}")
        body = response.json()
        body["pngs"] = {k: base64.b64decode(body[k]) for k in ("overlay",) if body.get(k)}
        return body

    return segment, diameter


def process(image: Path, name: str, out: Path, formats: set[str], segment: Segment) -> dict:
    """Segment one image, write its exports, and keep its result JSON for the CSVs."""
    parts = ({"overlay"} if "overlay" in formats else set()) | (
        {"geojson"} if formats & {"geojson", "rois"} else set()
    )
    body = segment(image.read_bytes(), parts)
    if "overlay" in formats:
        (out / "overlays" / f"{name}.png").write_bytes(body["pngs"]["overlay"])
    if "geojson" in formats:
        (out / "geojson" / f"{name}.geojson").write_text(json.dumps(body["geojson"]))
    if "rois" in formats:
        (out / "rois" / f"{name}.zip").write_bytes(imagej_rois(body["geojson"]))
    record = {
        "image": str(image),
        "counts": body["counts"],
        "cells": body["cells"],
        "scale": body["scale"],
        "rbc_diameter_px": body["rbc_diameter_px"],
        "scale_source": body["scale_source"],
        "rbc_sizes": body["rbc_sizes"],
        "field_of_view": body["field_of_view"],
        "warnings": body["warnings"],
    }
    (out / "results" / f"{name}.json").write_text(json.dumps(record))
    return record


def finished(out: Path, name: str, formats: set[str]) -> bool:
    """Whether an earlier run already wrote everything this one would for the image."""
    wanted = [out / "results" / f"{name}.json"]
    wanted += [out / "overlays" / f"{name}.png"] if "overlay" in formats else []
    wanted += [out / "geojson" / f"{name}.geojson"] if "geojson" in formats else []
    wanted += [out / "rois" / f"{name}.zip"] if "rois" in formats else []
    return all(p.is_file() for p in wanted)


# summary.csv's columns after the image and its counts
SUMMARY_COLUMNS = (
    "scale",
    "rbc_diameter_px",
    "scale_source",
    "rbc_median_diameter_px",
    "rbc_diameter_cv",
    "field_of_view",
    "warnings",
    "error",
)


def write_tables(out: Path, records: list[dict], working_diameter: float) -> None:
    """summary.csv (one row per image) and cells.csv (one row per cell)."""
    classes = list(dict.fromkeys(k for r in records for k in r.get("counts", {})))
    with (out / "summary.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", *classes, *SUMMARY_COLUMNS])
        for record in records:
            if record.get("error"):
                blanks = [""] * (len(classes) + len(SUMMARY_COLUMNS) - 1)
                writer.writerow([record["image"], *blanks, record["error"]])
                continue
            scale = record["scale"]
            # results an earlier version wrote (a resumed run) may lack the RBC sizes
            sizes = record.get("rbc_sizes") or {}
            writer.writerow(
                [
                    record["image"],
                    *[record["counts"].get(c, 0) for c in classes],
                    scale,
                    record.get("rbc_diameter_px", round(working_diameter / scale, 2)),
                    record.get("scale_source", ""),
                    sizes.get("median_diameter_px", ""),
                    sizes.get("diameter_cv", ""),
                    record.get("field_of_view", ""),
                    "; ".join(w["code"] for w in record["warnings"]),
                    "",
                ]
            )
    with (out / "cells.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", *CELL_COLUMNS])
        for record in records:
            for cell in record.get("cells", []):
                x_min, y_min, x_max, y_max = cell["bbox"]
                writer.writerow(
                    [
                        record["image"],
                        cell["id"],
                        cell["label"],
                        x_min,
                        y_min,
                        x_max,
                        y_max,
                        *cell["centroid"],
                        cell["area"],
                        cell["score"],
                        # results an earlier version wrote (a resumed run) lack these
                        cell.get("diameter", ""),
                        cell.get("on_border", ""),
                    ]
                )


def run_segment(args: argparse.Namespace) -> int:
    formats = {f.strip() for f in args.format.split(",") if f.strip()}
    if formats - set(FORMATS):
        print(f"unknown --format {sorted(formats - set(FORMATS))}; choose from {FORMATS}")
        return 2
    images = find_images(args.paths)
    if not images:
        print("no images found in " + " ".join(args.paths), file=sys.stderr)
        return 2
    out: Path = args.out
    folders = {"results": "csv", "overlays": "overlay", "geojson": "geojson", "rois": "rois"}
    for folder, fmt in folders.items():
        if fmt == "csv" or fmt in formats:
            (out / folder).mkdir(parents=True, exist_ok=True)
    segment, working_diameter = (remote_segmenter if args.url else in_process_segmenter)(args)
    names = output_names(images)
    records: dict[Path, dict] = {}
    todo = []
    for image in images:
        if not args.force and finished(out, names[image], formats):
            records[image] = json.loads((out / "results" / f"{names[image]}.json").read_text())
        else:
            todo.append(image)
    failures = 0
    with ThreadPoolExecutor(max_workers=args.workers) as pool:
        futures = {
            pool.submit(process, image, names[image], out, formats, segment): image
            for image in todo
        }
        bar = tqdm(as_completed(futures), total=len(todo), unit="image", file=sys.stderr)
        for future in bar:
            image = futures[future]
            try:
                records[image] = future.result()
            except Exception as error:  # one unreadable image must not stop the batch
                failures += 1
                records[image] = {"image": str(image), "error": str(error)}
                tqdm.write(f"failed: {image}: {error}", file=sys.stderr)
    write_tables(out, [records[image] for image in images], working_diameter)
    skipped = len(images) - len(todo)
    print(
        f"{len(images)} images: {len(todo) - failures} segmented, {skipped} already done, "
        f"{failures} failed -> {out / 'summary.csv'}, {out / 'cells.csv'}",
        file=sys.stderr,
    )
    return 1 if failures else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bloodseg", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    segment = sub.add_parser("segment", help="segment images into CSVs and exports")
    segment.add_argument("paths", nargs="+", help="image files, folders or glob patterns")
    segment.add_argument("--out", type=Path, required=True, help="output folder")
    segment.add_argument("--url", help="send to this running service instead of running here")
    segment.add_argument("--model", help="model dir when running here (default: shipped)")
    size = segment.add_mutually_exclusive_group()
    size.add_argument("--rbc-diameter", type=float, help="RBC diameter in the images' pixels")
    size.add_argument("--scale", type=float, help="resample the images by this factor first")
    segment.add_argument("--workers", type=int, default=1, help="images in parallel")
    segment.add_argument(
        "--format", default="csv", help=f"comma list of {','.join(FORMATS)} (CSVs always)"
    )
    segment.add_argument("--force", action="store_true", help="redo images already done")
    sub.add_parser("serve", help="serve the API (python -m app.serve; BLOODSEG_* settings)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `bloodseg` console script."""
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        from app.serve import main as serve

        serve()
        return 0
    return run_segment(args)


if __name__ == "__main__":
    raise SystemExit(main())
