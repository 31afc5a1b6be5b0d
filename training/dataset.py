"""Batches of (normalised crop, stacked targets) for Keras, with augmentation for training."""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np

from app.inference.decode import load_image
from app.inference.metadata import Normalization
from app.inference.preprocess import normalize_image, rescale_image
from training.augment import AugmentConfig, colour, geometric, scale_boxes
from training.data import AnnotatedImage, Box
from training.targets import TargetShape, complete_cut_box, make_targets


@dataclass(frozen=True)
class Example:
    """An image resampled to training scale, with its completed boxes."""

    image: np.ndarray
    boxes: list[Box]
    rbc_complete: bool


def prepare_examples(images: list[AnnotatedImage], scale: float) -> list[Example]:
    """Load images into memory at training scale, completing boxes cut by the border."""
    examples = []
    for annotated in images:
        boxes = [complete_cut_box(b, annotated.width, annotated.height) for b in annotated.boxes]
        image = rescale_image(load_image(annotated.path), scale)
        factor = image.shape[1] / annotated.width
        examples.append(Example(image, scale_boxes(boxes, factor), annotated.rbc_complete))
    return examples


def crop_with_boxes(
    image: np.ndarray, boxes: list[Box], top: int, left: int, size: int
) -> tuple[np.ndarray, list[Box]]:
    """A size x size crop (zero-padded past the image) and the boxes in its coordinates."""
    crop = np.zeros((size, size, image.shape[2]), dtype=image.dtype)
    part = image[top : top + size, left : left + size]
    crop[: part.shape[0], : part.shape[1]] = part
    shifted = [
        Box(b.x_min - left, b.y_min - top, b.x_max - left, b.y_max - top, b.label) for b in boxes
    ]
    return crop, shifted


class CellBatches(keras.utils.PyDataset):
    """Keras dataset of random (training) or fixed top-left (validation) crops."""

    def __init__(
        self,
        examples: list[Example],
        batch_size: int,
        crop_size: int,
        target_shape: TargetShape,
        normalization: Normalization,
        augment: AugmentConfig | None,
        seed: int,
    ) -> None:
        super().__init__()
        self.examples = examples
        self.batch_size = batch_size
        self.crop_size = crop_size
        self.target_shape = target_shape
        self.normalization = normalization
        self.augment = augment
        self.seed = seed
        self.epoch = 0
        self.order = np.arange(len(examples))
        self.on_epoch_end()

    def __len__(self) -> int:
        return int(np.ceil(len(self.examples) / self.batch_size))

    def on_epoch_end(self) -> None:
        if self.augment is not None:
            self.order = np.random.default_rng([self.seed, self.epoch]).permutation(
                len(self.examples)
            )
        self.epoch += 1

    def sample(self, index: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """One normalised crop and its stacked targets."""
        example = self.examples[index]
        image, boxes = example.image, example.boxes
        if self.augment is not None:
            image, boxes = geometric(image, boxes, rng, self.augment)
            image = colour(image, rng, self.augment)
        normalized = normalize_image(image, self.normalization)
        size = self.crop_size
        top = left = 0
        if self.augment is not None:
            top = int(rng.integers(max(1, image.shape[0] - size + 1)))
            left = int(rng.integers(max(1, image.shape[1] - size + 1)))
        crop, crop_boxes = crop_with_boxes(normalized, boxes, top, left, size)
        targets = make_targets(crop_boxes, size, size, self.target_shape, example.rbc_complete)
        return crop, targets.stacked()

    def __getitem__(self, batch_index: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng([self.seed, self.epoch, batch_index])
        indices = self.order[batch_index * self.batch_size : (batch_index + 1) * self.batch_size]
        pairs = [self.sample(int(i), rng) for i in indices]
        return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])
