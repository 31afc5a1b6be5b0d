"""Augmentations that fit microscopy: flips, 90-degree turns, scale jitter, stain/colour jitter."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from app.inference.preprocess import rescale_image
from training.data import Box


@dataclass(frozen=True)
class AugmentConfig:
    """Ranges of the random transforms."""

    scale_range: float = 1.15  # scale factors drawn log-uniformly in [1/range, range]
    gain_jitter: float = 0.08
    brightness_jitter: float = 0.08
    contrast_jitter: float = 0.2
    gamma_jitter: float = 0.2


def scale_boxes(boxes: list[Box], factor: float) -> list[Box]:
    """Boxes of an image resampled by `factor`."""
    return [
        Box(b.x_min * factor, b.y_min * factor, b.x_max * factor, b.y_max * factor, b.label)
        for b in boxes
    ]


def shift_boxes(boxes: list[Box], dx: float, dy: float) -> list[Box]:
    """Boxes moved by (dx, dy) pixels."""
    return [Box(b.x_min + dx, b.y_min + dy, b.x_max + dx, b.y_max + dy, b.label) for b in boxes]


def rotate90_boxes(boxes: list[Box], width: int) -> list[Box]:
    """Boxes after np.rot90 (counter-clockwise) of an image `width` wide."""
    return [Box(b.y_min, width - b.x_max, b.y_max, width - b.x_min, b.label) for b in boxes]


def flip_boxes(boxes: list[Box], width: int) -> list[Box]:
    """Boxes after a left-right flip of an image `width` wide."""
    return [Box(width - b.x_max, b.y_min, width - b.x_min, b.y_max, b.label) for b in boxes]


def geometric(
    image: np.ndarray, boxes: list[Box], rng: np.random.Generator, config: AugmentConfig
) -> tuple[np.ndarray, list[Box]]:
    """Random scale, 90-degree turns and flip, applied to the image and its boxes alike."""
    factor = float(np.exp(rng.uniform(-np.log(config.scale_range), np.log(config.scale_range))))
    scaled = rescale_image(image, factor)
    boxes = scale_boxes(boxes, scaled.shape[1] / image.shape[1])
    image = scaled
    for _ in range(int(rng.integers(4))):
        boxes = rotate90_boxes(boxes, image.shape[1])
        image = np.rot90(image)
    if rng.random() < 0.5:
        boxes = flip_boxes(boxes, image.shape[1])
        image = image[:, ::-1]
    return np.ascontiguousarray(image), boxes


def colour(image: np.ndarray, rng: np.random.Generator, config: AugmentConfig) -> np.ndarray:
    """Stain-like jitter: per-channel gain, brightness, contrast and gamma."""
    pixels = image.astype(np.float32) / 255.0
    pixels = pixels * rng.uniform(1 - config.gain_jitter, 1 + config.gain_jitter, size=3)
    pixels = pixels + rng.uniform(-config.brightness_jitter, config.brightness_jitter)
    mean = pixels.mean(axis=(0, 1), keepdims=True)
    pixels = (pixels - mean) * rng.uniform(
        1 - config.contrast_jitter, 1 + config.contrast_jitter
    ) + mean
    pixels = np.clip(pixels, 0.0, 1.0) ** rng.uniform(
        1 - config.gamma_jitter, 1 + config.gamma_jitter
    )
    return (pixels * 255.0).round().astype(np.uint8)
