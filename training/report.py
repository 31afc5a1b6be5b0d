"""Pictures of a training run: loss curves and sample predictions."""

from __future__ import annotations

import csv
from pathlib import Path

import keras
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from app.inference.metadata import ModelMetadata
from app.inference.postprocess import class_mask, describe_cells, find_instances
from app.inference.preprocess import normalize_image
from app.inference.render import overlay_image
from training.dataset import Example, crop_with_boxes
from training.targets import make_targets


def plot_history(history_csv: Path, out: Path) -> None:
    """Training and validation loss per epoch."""
    with history_csv.open() as handle:
        rows = list(csv.DictReader(handle))
    epochs = [int(r["epoch"]) + 1 for r in rows]
    figure, axis = plt.subplots(figsize=(6, 4))
    for key in ("loss", "val_loss"):
        axis.plot(epochs, [float(r[key]) for r in rows], label=key)
    axis.set_xlabel("epoch")
    axis.set_ylabel("loss")
    axis.legend()
    figure.tight_layout()
    figure.savefig(out, dpi=100)
    plt.close(figure)


def plot_samples(
    model: keras.Model,
    examples: list[Example],
    target_shape: str,
    out: Path,
    metadata: ModelMetadata,
    count: int = 4,
    size: int = 256,
) -> None:
    """Rows of image | target classes | predicted classes | overlay of the counted cells."""
    palette = np.array([c.color for c in metadata.classes], dtype=np.uint8)
    chosen = examples[:count]
    figure, axes = plt.subplots(len(chosen), 4, figsize=(12, 3 * len(chosen)), squeeze=False)
    for row, example in zip(axes, chosen, strict=True):
        image, boxes = crop_with_boxes(example.image, example.boxes, 0, 0, size)
        target = make_targets(boxes, size, size, target_shape, example.rbc_complete).classes
        normalized = normalize_image(example.image, metadata.input.normalization)
        batch = crop_with_boxes(normalized, [], 0, 0, size)[0][None]
        probs = np.asarray(model(batch, training=False))[0]
        instances = find_instances(probs, metadata.counting, metadata.layout)
        cells = describe_cells(instances, metadata.layout)
        panels = [
            image,
            palette[target],
            palette[class_mask(instances)],
            overlay_image(image, instances, cells, metadata),
        ]
        titles = ["image", "target", "prediction", f"{len(cells)} cells"]
        for axis, panel, title in zip(row, panels, titles, strict=True):
            axis.imshow(panel)
            axis.set_title(title)
            axis.axis("off")
    figure.tight_layout()
    figure.savefig(out, dpi=80)
    plt.close(figure)
