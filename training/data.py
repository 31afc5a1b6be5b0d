"""Read box-annotated datasets in any of three layouts: Kaggle CSV, Pascal VOC or YOLO."""

from __future__ import annotations

import csv
import hashlib
import logging
import random
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image

logger = logging.getLogger(__name__)

CLASS_NAMES = ("rbc", "wbc", "platelet")
LABEL_ALIASES = {"platelets": "platelet"}  # BCCD's and TXL-PBC's spelling
BORDER_TOLERANCE_PX = 2.0
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})


class DataError(ValueError):
    """A dataset problem found with --strict (otherwise logged and skipped)."""


@dataclass(frozen=True)
class Box:
    """An annotated cell: corners in pixels (x_max/y_max exclusive) and its class name."""

    x_min: float
    y_min: float
    x_max: float
    y_max: float
    label: str

    @property
    def width(self) -> float:
        return self.x_max - self.x_min

    @property
    def height(self) -> float:
        return self.y_max - self.y_min


@dataclass(frozen=True)
class AnnotatedImage:
    """One image with its boxes. `rbc_complete` / `platelets_complete` are False where
    unboxed RBCs / platelets exist."""

    path: Path
    width: int
    height: int
    boxes: tuple[Box, ...]
    rbc_complete: bool = True
    platelets_complete: bool = True


class _Problems:
    """Collects dataset problems: warn and skip, or raise at once when strict."""

    def __init__(self, strict: bool) -> None:
        self.strict = strict
        self.count = 0

    def report(self, where: str, message: str) -> None:
        self.count += 1
        if self.strict:
            raise DataError(f"{where}: {message}")
        logger.warning("%s: %s (skipped)", where, message)


def _image_size(path: Path) -> tuple[int, int] | None:
    try:
        with Image.open(path) as image:
            return image.size
    except (OSError, SyntaxError):
        return None


def _checked_box(
    coords: list[str] | list[float],
    label: str,
    size: tuple[int, int],
    where: str,
    problems: _Problems,
) -> Box | None:
    """Validate one box: numeric, known label, positive size, inside the image (clipped if near)."""
    name = label.strip().lower()
    name = LABEL_ALIASES.get(name, name)
    if name not in CLASS_NAMES:
        problems.report(where, f"unknown label {label!r}")
        return None
    try:
        x_min, y_min, x_max, y_max = (float(value) for value in coords)
    except ValueError:
        problems.report(where, f"non-numeric coordinates {coords}")
        return None
    if not all(np.isfinite([x_min, y_min, x_max, y_max])) or x_max <= x_min or y_max <= y_min:
        problems.report(where, f"empty or inverted box {coords}")
        return None
    width, height = size
    tol = BORDER_TOLERANCE_PX
    if x_min < -tol or y_min < -tol or x_max > width + tol or y_max > height + tol:
        problems.report(where, f"box {coords} lies outside the {width}x{height} image")
        return None
    return Box(max(x_min, 0.0), max(y_min, 0.0), min(x_max, width), min(y_max, height), name)


def load_kaggle_csv(root: Path, problems: _Problems) -> list[AnnotatedImage]:
    """Layout `images/` + `annotations.csv` (image, xmin, ymin, xmax, ymax, label)."""
    csv_path = root / "annotations.csv"
    boxes: dict[str, list[Box]] = {}
    sizes: dict[str, tuple[int, int] | None] = {}
    with csv_path.open(newline="") as handle:
        for row_number, row in enumerate(csv.DictReader(handle), start=2):
            where = f"{csv_path} row {row_number}"
            name = (row.get("image") or "").strip()
            fields = [row.get(key) for key in ("xmin", "ymin", "xmax", "ymax", "label")]
            if not name or any(value is None for value in fields):
                problems.report(where, "missing columns")
                continue
            if name not in sizes:
                sizes[name] = _image_size(root / "images" / name)
                if sizes[name] is None:
                    problems.report(
                        where, f"image {root / 'images' / name} is missing or unreadable"
                    )
            size = sizes[name]
            if size is None:
                continue
            box = _checked_box(fields[:4], fields[4], size, where, problems)
            boxes.setdefault(name, [])
            if box is not None:
                boxes[name].append(box)
    return [
        AnnotatedImage(root / "images" / name, *sizes[name], tuple(found))
        for name, found in sorted(boxes.items())
        if sizes[name] is not None
    ]


def load_pascal_voc(root: Path, problems: _Problems) -> list[AnnotatedImage]:
    """Layout `JPEGImages/` + `Annotations/*.xml`."""
    images = []
    for xml_path in sorted((root / "Annotations").glob("*.xml")):
        try:
            tree = ET.parse(xml_path).getroot()
        except ET.ParseError as error:
            problems.report(str(xml_path), f"malformed XML ({error})")
            continue
        filename = tree.findtext("filename") or f"{xml_path.stem}.jpg"
        image_path = root / "JPEGImages" / filename
        size = _image_size(image_path)
        if size is None:
            problems.report(str(xml_path), f"image {image_path} is missing or unreadable")
            continue
        found = []
        for index, obj in enumerate(tree.iter("object"), start=1):
            box_node = obj.find("bndbox")
            coords = [
                (box_node.findtext(key) if box_node is not None else None) or ""
                for key in ("xmin", "ymin", "xmax", "ymax")
            ]
            where = f"{xml_path} object {index}"
            box = _checked_box(coords, obj.findtext("name") or "", size, where, problems)
            if box is not None:
                found.append(box)
        images.append(AnnotatedImage(image_path, *size, tuple(found)))
    return images


def yolo_class_names(data_yaml: Path) -> list[str]:
    """Class names by index from a YOLO data.yaml (`names` as a list or an index mapping)."""
    import yaml  # imported here: only the YOLO layout needs it

    names = (yaml.safe_load(data_yaml.read_text()) or {}).get("names")
    if isinstance(names, dict):
        return [str(names[key]) for key in sorted(names)]
    if isinstance(names, list):
        return [str(name) for name in names]
    raise DataError(f"{data_yaml}: no class names")


def load_yolo(root: Path, problems: _Problems) -> list[AnnotatedImage]:
    """Layout `data.yaml` + `images/<split>/` + `labels/<split>/*.txt`, one box per line as
    `class cx cy w h`, normalised to the image size. An image without a label file has no
    cells (YOLO's convention for background images)."""
    names = yolo_class_names(root / "data.yaml")
    images = []
    for image_path in sorted(p for p in (root / "images").rglob("*") if p.is_file()):
        if image_path.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        size = _image_size(image_path)
        if size is None:
            problems.report(str(image_path), "missing or unreadable image")
            continue
        relative = image_path.relative_to(root / "images").with_suffix(".txt")
        label_path = root / "labels" / relative
        lines = label_path.read_text().splitlines() if label_path.is_file() else []
        found = []
        for number, line in enumerate(lines, start=1):
            parts = line.split()
            if not parts:
                continue
            where = f"{label_path} line {number}"
            if len(parts) != 5 or not parts[0].isdigit() or int(parts[0]) >= len(names):
                problems.report(where, f"not 'class cx cy w h' with a known class: {line!r}")
                continue
            try:
                cx, cy, w, h = (float(value) for value in parts[1:])
            except ValueError:
                problems.report(where, f"non-numeric box {parts[1:]}")
                continue
            width, height = size
            corners = [(cx - w / 2) * width, (cy - h / 2) * height]
            corners += [(cx + w / 2) * width, (cy + h / 2) * height]
            box = _checked_box(corners, names[int(parts[0])], size, where, problems)
            if box is not None:
                found.append(box)
        images.append(AnnotatedImage(image_path, *size, tuple(found)))
    return images


LOADERS = {"kaggle": load_kaggle_csv, "voc": load_pascal_voc, "yolo": load_yolo}


def detect_layout(root: Path) -> str:
    """'kaggle', 'voc' or 'yolo', from the files present."""
    if (root / "data.yaml").is_file() and (root / "images").is_dir():
        return "yolo"
    if (root / "annotations.csv").is_file() and (root / "images").is_dir():
        return "kaggle"
    if (root / "Annotations").is_dir() and (root / "JPEGImages").is_dir():
        return "voc"
    raise DataError(
        f"{root}: none of images/ + annotations.csv, JPEGImages/ + Annotations/, "
        "data.yaml + images/ + labels/"
    )


def load_dataset(
    root: Path, strict: bool = False, rbc_complete: bool = True
) -> list[AnnotatedImage]:
    """Load every annotated image of a dataset directory of any layout."""
    problems = _Problems(strict)
    images = LOADERS[detect_layout(root)](root, problems)
    if problems.count:
        logger.warning(
            "%s: %d problem(s) skipped; use --strict to stop on them", root, problems.count
        )
    # a dataset that never boxes a platelet (blood-cell-detection) has them unlabelled
    platelets_complete = any(b.label == "platelet" for i in images for b in i.boxes)
    if not platelets_complete:
        logger.info("%s: no platelet boxes; its platelets count as unlabelled", root)
    return [
        replace(i, rbc_complete=rbc_complete, platelets_complete=platelets_complete) for i in images
    ]


def source_of(root: Path, image: AnnotatedImage, sizes: set[tuple[int, int]]) -> str:
    """Which microscope an image comes from: its dataset, and its image size where the dataset
    mixes sizes (TXL-PBC's sources differ in size: 640x480 BCCD, 575x575 Raabin-WBC, ...)."""
    if len(sizes) <= 1:
        return root.name
    return f"{root.name}:{image.width}x{image.height}"


def published_split(root: Path, split: str) -> set[str] | None:
    """Image stems of a published split, if the dataset has one: VOC's
    `ImageSets/Main/<split>.txt`, or YOLO's `images/<split>/` folder."""
    path = root / "ImageSets" / "Main" / f"{split}.txt"
    if path.is_file():
        return {line.strip() for line in path.read_text().splitlines() if line.strip()}
    folder = root / "images" / split
    if (root / "data.yaml").is_file() and folder.is_dir():
        return {p.stem for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}
    return None


def split_dataset(
    root: Path, images: list[AnnotatedImage], split: str, val_fraction: float, seed: int
) -> list[AnnotatedImage]:
    """The 'train', 'val' or 'all' part: a published split where one exists, else a seeded one."""
    if split == "all":
        return images
    published = published_split(root, split)
    if published is not None:
        return [image for image in images if image.path.stem in published]
    order = sorted(images, key=lambda image: image.path.name)
    random.Random(seed).shuffle(order)
    val_count = max(1, round(len(order) * val_fraction))
    chosen = order[:val_count] if split == "val" else order[val_count:]
    return sorted(chosen, key=lambda image: image.path.name)


# (source name, annotated images, their median RBC diameter in pixels), as training splits them
SourceSet = tuple[str, Sequence[AnnotatedImage], float]


def median_rbc_diameter(images: list[AnnotatedImage]) -> float:
    """Median RBC diameter in pixels, from boxes not cut by the image border."""
    sizes = [
        (box.width + box.height) / 2
        for image in images
        for box in image.boxes
        if box.label == "rbc"
        and box.x_min > BORDER_TOLERANCE_PX
        and box.y_min > BORDER_TOLERANCE_PX
        and box.x_max < image.width - BORDER_TOLERANCE_PX
        and box.y_max < image.height - BORDER_TOLERANCE_PX
    ]
    if not sizes:
        raise DataError("no complete RBC box to measure the cell scale from")
    return float(np.median(sizes))


def fingerprint(root: Path) -> str:
    """sha256 over the names and bytes of a dataset's annotation and image files."""
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()
