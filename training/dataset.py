"""Batches of (normalised crop, stacked targets) for Keras, with augmentation for training."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import keras
import numpy as np

from app.inference.decode import load_image
from app.inference.metadata import Normalization
from app.inference.preprocess import edge_pad, normalize_image, rescale_image
from training.augment import AugmentConfig, colour, geometric, scale_boxes, shift_boxes
from training.data import AnnotatedImage, Box
from training.targets import TargetShape, complete_cut_box, make_targets


@dataclass(frozen=True)
class Example:
    """An image resampled to training scale, with its completed boxes and where it came from."""

    image: np.ndarray
    boxes: list[Box]
    rbc_complete: bool
    platelets_complete: bool = True
    source: str = ""


def prepare_examples(images: list[AnnotatedImage], scale: float, source: str = "") -> list[Example]:
    """Load images into memory at training scale, completing boxes cut by the border."""
    examples = []
    for annotated in images:
        boxes = [complete_cut_box(b, annotated.width, annotated.height) for b in annotated.boxes]
        image = rescale_image(load_image(annotated.path), scale)
        factor = image.shape[1] / annotated.width
        examples.append(
            Example(
                image,
                scale_boxes(boxes, factor),
                annotated.rbc_complete,
                annotated.platelets_complete,
                source,
            )
        )
    return examples


def source_weights(examples: list[Example], boost: dict[str, float] | None = None) -> np.ndarray:
    """Sampling probability per example: each source weighs sqrt(its size), so a small source
    (one microscope's 64 images) is seen often without the large ones being starved, times
    its `boost` (1 unless named)."""
    boost = boost or {}
    sources = [e.source for e in examples]
    counts = {name: sources.count(name) for name in set(sources)}
    weights = np.array(
        [boost.get(name, 1.0) * np.sqrt(counts[name]) / counts[name] for name in sources]
    )
    return weights / weights.sum()


def edge_band(
    image: np.ndarray, boxes: list[Box], sides: tuple[int, int, int, int]
) -> tuple[np.ndarray, list[Box]]:
    """The image with bands of (top, bottom, left, right) pixels as inference pads it
    (preprocess.edge_pad), and the boxes moved with it."""
    top, _, left, _ = sides
    return edge_pad(image, sides), shift_boxes(boxes, left, top)


def crop_with_boxes(
    image: np.ndarray, boxes: list[Box], top: int, left: int, size: int
) -> tuple[np.ndarray, list[Box]]:
    """A size x size crop whose corner is (top, left), zero-padded past the image (the corner
    may be negative), and the boxes in its coordinates."""
    crop = np.zeros((size, size, image.shape[2]), dtype=image.dtype)
    src_top, src_left = max(top, 0), max(left, 0)
    part = image[src_top : top + size, src_left : left + size]
    dst_top, dst_left = src_top - top, src_left - left
    crop[dst_top : dst_top + part.shape[0], dst_left : dst_left + part.shape[1]] = part
    return crop, shift_boxes(boxes, -left, -top)


class CellBatches(keras.utils.PyDataset):
    """Keras dataset of random (training) or fixed top-left (validation) crops.

    With `samples_per_epoch`, an epoch draws that many examples, weighted by source
    (`source_weights`); otherwise it is one pass over the examples. With a `teacher`
    (training.distill.Teacher), its outputs on the batch's crops follow the targets.
    """

    def __init__(
        self,
        examples: list[Example],
        batch_size: int,
        crop_size: int,
        target_shape: TargetShape,
        normalization: Normalization,
        augment: AugmentConfig | None,
        seed: int,
        num_classes: int = 3,
        samples_per_epoch: int = 0,
        source_boost: dict[str, float] | None = None,
        edge_border_px: int = 0,
        teacher: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> None:
        super().__init__()
        self.examples = examples
        self.batch_size = batch_size
        self.crop_size = crop_size
        self.target_shape = target_shape
        self.normalization = normalization
        self.augment = augment
        self.seed = seed
        self.num_classes = num_classes
        self.samples_per_epoch = samples_per_epoch
        self.source_boost = source_boost or {}
        self.edge_border_px = edge_border_px
        self.teacher = teacher
        self.epoch = 0
        self.order = np.arange(len(examples))
        self.on_epoch_end()

    def __len__(self) -> int:
        return int(np.ceil(len(self.order) / self.batch_size))

    def on_epoch_end(self) -> None:
        rng = np.random.default_rng([self.seed, self.epoch])
        if self.augment is not None and self.samples_per_epoch:
            self.order = rng.choice(
                len(self.examples),
                self.samples_per_epoch,
                p=source_weights(self.examples, self.source_boost),
            )
        elif self.augment is not None:
            self.order = rng.permutation(len(self.examples))
        self.epoch += 1

    def sample(self, index: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """One normalised crop and its stacked targets."""
        example = self.examples[index]
        image, boxes = example.image, example.boxes
        if self.augment is not None:
            image, boxes = geometric(image, boxes, rng, self.augment)
            image = colour(image, rng, self.augment)
        normalized = normalize_image(image, self.normalization)
        if self.edge_border_px:
            band = self.edge_border_px
            sides = tuple(rng.integers(0, band + 1, 4)) if self.augment else (band,) * 4
            normalized, boxes = edge_band(normalized, boxes, sides)
        size = self.crop_size
        top = left = 0
        if self.augment is not None:
            # an image smaller than the crop lands anywhere inside it
            spare_rows, spare_cols = normalized.shape[0] - size, normalized.shape[1] - size
            top = int(rng.integers(min(0, spare_rows), max(0, spare_rows) + 1))
            left = int(rng.integers(min(0, spare_cols), max(0, spare_cols) + 1))
        crop, crop_boxes = crop_with_boxes(normalized, boxes, top, left, size)
        targets = make_targets(
            crop_boxes,
            size,
            size,
            self.target_shape,
            example.rbc_complete,
            example.platelets_complete,
            self.num_classes,
        )
        return crop, targets.stacked()

    def __getitem__(self, batch_index: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng([self.seed, self.epoch, batch_index])
        indices = self.order[batch_index * self.batch_size : (batch_index + 1) * self.batch_size]
        pairs = [self.sample(int(i), rng) for i in indices]
        crops, targets = np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])
        if self.teacher is not None:
            targets = np.concatenate([targets, self.teacher(crops)], axis=-1)
        return crops, targets
