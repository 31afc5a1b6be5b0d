"""The data a model is trained on, by source: every dataset loaded and split, each source (a
dataset, or one image size of a dataset that mixes microscopes) with its median RBC diameter.
No examples are prepared here, so scoring and calibrating a published model on its own data
is quick (train.load_splits prepares them)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from training.config import TrainConfig
from training.data import (
    AnnotatedImage,
    SourceSet,
    fingerprint,
    load_dataset,
    median_rbc_diameter,
    source_of,
    split_dataset,
)

logger = logging.getLogger(__name__)

# training images per source that the RBC weight and the counting thresholds are chosen on
TUNE_IMAGES_PER_SOURCE = 32


@dataclass(frozen=True)
class SourceSplit:
    """One source's training and validation images and their median RBC box diameter."""

    source: str
    train: list[AnnotatedImage]
    val: list[AnnotatedImage]
    rbc_diameter_px: float


@dataclass(frozen=True)
class DataSplits:
    """Every source's split, the training cell scale, and what model.json records of the data."""

    sources: list[SourceSplit]
    rbc_diameter_px: float
    datasets: list[dict]

    @property
    def val_sets(self) -> list[SourceSet]:
        """(source, validation images, diameter) of each source with validation images."""
        return [(s.source, s.val, s.rbc_diameter_px) for s in self.sources if s.val]

    @property
    def tune_sets(self) -> list[SourceSet]:
        """(source, training images, diameter) of each source."""
        return [(s.source, s.train, s.rbc_diameter_px) for s in self.sources]


def by_source(root: Path, images: list[AnnotatedImage]) -> dict[str, list[AnnotatedImage]]:
    """The images grouped by source (data.source_of)."""
    sizes = {(i.width, i.height) for i in images}
    groups: dict[str, list[AnnotatedImage]] = {}
    for image in images:
        groups.setdefault(source_of(root, image, sizes), []).append(image)
    return groups


def split_sources(config: TrainConfig) -> DataSplits:
    """Load every dataset, split it, and measure each source's median RBC diameter (the
    training scale is the first dataset's unless the config sets one)."""
    roots = [(Path(p), True) for p in config.data] + [
        (Path(p), False) for p in config.partial_rbc_data
    ]
    loaded = [(root, load_dataset(root, config.strict, complete)) for root, complete in roots]
    train_diameter = config.train_rbc_diameter_px or median_rbc_diameter(loaded[0][1])
    splits, datasets = [], []
    for root, images in loaded:
        parts = {
            s: split_dataset(root, images, s, config.val_fraction, config.seed)
            for s in ("train", "val")
        }
        if config.max_images:
            parts = {s: items[: config.max_images] for s, items in parts.items()}
        sources = []
        for source, members in by_source(root, images).items():
            diameter = median_rbc_diameter(members)
            in_source = set(members)
            chosen = {s: [i for i in items if i in in_source] for s, items in parts.items()}
            splits.append(SourceSplit(source, chosen["train"], chosen["val"], diameter))
            sources.append(
                {
                    "source": source,
                    "rbc_diameter_px": round(diameter, 2),
                    "train_images": len(chosen["train"]),
                    "val_images": len(chosen["val"]),
                }
            )
            logger.info(
                "%s: %d train / %d val images, scale x%.3f",
                source,
                len(chosen["train"]),
                len(chosen["val"]),
                train_diameter / diameter,
            )
        record = {
            "path": str(root),
            "fingerprint": fingerprint(root),
            "rbc_complete": images[0].rbc_complete if images else True,
            "platelets_complete": images[0].platelets_complete if images else True,
            "rbc_diameter_px": round(median_rbc_diameter(images), 2),
            "train_images": len(parts["train"]),
            "val_images": len(parts["val"]),
        }
        if len(sources) > 1:
            record["sources"] = sources
        datasets.append(record)
    return DataSplits(splits, train_diameter, datasets)


def complete_sources(tune_sets: list[SourceSet]) -> list[SourceSet]:
    """The sources whose RBCs are all boxed: the only ones to count (or measure) against."""
    return [s for s in tune_sets if s[1] and s[1][0].rbc_complete]


def tuning_groups(
    sources: list[SourceSet], working_rbc_diameter_px: float
) -> tuple[list[tuple[list[AnnotatedImage], float]], str]:
    """The first TUNE_IMAGES_PER_SOURCE training images of each source with the scale that
    brings them to the working diameter (tune.network_predictions' groups), and a line
    saying which they are, for model.json."""
    groups = [
        (list(images[:TUNE_IMAGES_PER_SOURCE]), working_rbc_diameter_px / diameter)
        for _, images, diameter in sources
    ]
    described = ", ".join(
        f"{source} train split ({len(group)} images)"
        for (source, _, _), (group, _) in zip(sources, groups, strict=True)
    )
    return groups, described
