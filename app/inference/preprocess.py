"""Turn an RGB image into network input: rescale, normalise, pad and cut into tiles."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from app.inference.metadata import Normalization


def rescale_image(image: np.ndarray, scale: float) -> np.ndarray:
    """Resample an RGB uint8 image by `scale` (area-like filter when shrinking)."""
    if abs(scale - 1.0) < 1e-6:
        return image
    height, width = image.shape[:2]
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    resample = Image.Resampling.BOX if scale < 1 else Image.Resampling.BILINEAR
    return np.asarray(Image.fromarray(image).resize(size, resample))


def channel_stats(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact per-channel mean and std of an RGB uint8 image, from its 256-bin histograms
    (one integer pass instead of float passes over every pixel)."""
    values = np.arange(256, dtype=np.float64)
    counts = np.stack([np.bincount(image[..., c].ravel(), minlength=256) for c in range(3)])
    pixels = counts[0].sum()
    mean = counts @ values / pixels
    variance = counts @ (values * values) / pixels - mean * mean
    return mean, np.sqrt(np.maximum(variance, 0.0))


def normalize_image(
    image: np.ndarray,
    spec: Normalization,
    stats: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """Standardise each channel of an RGB uint8 image by the image's own mean and std.

    Statistics come from the whole image (never a tile) so that tiles of one image agree,
    and they make the network indifferent to stain intensity and exposure. A part of an image
    passes the whole image's `stats` (channel_stats) to be normalised like the rest of it.
    """
    mean, std = stats if stats is not None else channel_stats(image)
    mean, std = mean / 255.0, np.maximum(std / 255.0, spec.min_std)
    out = image.astype(np.float32)
    out *= (1.0 / (255.0 * std)).astype(np.float32)
    out -= (mean / std).astype(np.float32)
    return out


@dataclass(frozen=True)
class Window:
    """One tile: its top-left corner in the padded image."""

    top: int
    left: int


def window_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of size `tile` covering `length` (>= tile) with at least `overlap`."""
    if length <= tile:
        return [0]
    stride = tile - overlap
    count = int(np.ceil((length - tile) / stride)) + 1
    return [round(i * (length - tile) / (count - 1)) for i in range(count)]


def tile_windows(
    height: int, width: int, tile: int | tuple[int, int], overlap: int
) -> list[Window]:
    """Overlapping windows of `tile` (a side, or (height, width)) that cover a (padded) image
    at least that large."""
    tile_h, tile_w = (tile, tile) if isinstance(tile, int) else tile
    return [
        Window(top, left)
        for top in window_starts(height, tile_h, overlap)
        for left in window_starts(width, tile_w, overlap)
    ]


def window_side(length: int, max_side: int, overlap: int, multiple: int) -> int:
    """The side of the fewest windows of at most `max_side` that cover `length` overlapping by
    at least `overlap`, made as even as a multiple of `multiple` allows (never over
    `length`): 2,000 px with 1,024 at most takes three windows of 720, not two of 1,024 and a
    third mostly overlap."""
    if length <= max_side:
        return length
    count = int(np.ceil((length - overlap) / (max_side - overlap)))
    side = -(-(length + (count - 1) * overlap) // count)
    return min(length, max_side, -(-side // multiple) * multiple)


def padded_size(height: int, width: int, tile: int, multiple: int) -> tuple[int, int]:
    """The size `pad_to_tile` pads an image of this size to."""
    return (
        max(tile, -(-height // multiple) * multiple),
        max(tile, -(-width // multiple) * multiple),
    )


def pad_to_tile(array: np.ndarray, tile: int, multiple: int) -> np.ndarray:
    """Zero-pad (the normalised mean) bottom/right to >= `tile` and a multiple of `multiple`."""
    height, width = array.shape[:2]
    target_h, target_w = padded_size(height, width, tile, multiple)
    if (target_h, target_w) == (height, width):
        return array  # already a whole number of tiles: no copy
    pad = ((0, target_h - height), (0, target_w - width)) + ((0, 0),) * (array.ndim - 2)
    return np.pad(array, pad)


# the band repeats the rows and columns this far in from the border: a camera's or scanner's
# outermost rows are often a dark frame line, which repeated would look like a dark cell
EDGE_INSET_PX = 2


def edge_pad(array: np.ndarray, sides: tuple[int, int, int, int]) -> np.ndarray:
    """`array` with bands of (top, bottom, left, right) pixels that repeat its row or column
    EDGE_INSET_PX in from each border (training/dataset.py bands its crops the same way)."""
    top, bottom, left, right = sides
    height, width = array.shape[:2]
    inset = max(0, min(EDGE_INSET_PX, (min(height, width) - 1) // 2))
    core = array[inset : height - inset, inset : width - inset]
    rest = ((0, 0),) * (array.ndim - 2)
    around = ((top + inset, bottom + inset), (left + inset, right + inset), *rest)
    padded = np.pad(core, around, mode="edge")
    padded[top : top + height, left : left + width] = array
    return padded


def place_in_tile(
    array: np.ndarray, tile: int, multiple: int, edge_border: int = 0
) -> tuple[np.ndarray, int, int]:
    """`array` padded as `pad_to_tile` pads it, and where it sits: (padded, top, left).

    With `edge_border`, up to that many pixels of each side repeat the image's border rows and
    columns (edge_pad) into the room the padding leaves (never more, so the work is the
    same): cells cut by the image border look as they did in training
    (TrainConfig.edge_border_px), instead of ending at zeros.
    """
    if not edge_border:
        return pad_to_tile(array, tile, multiple), 0, 0
    height, width = array.shape[:2]
    target_h, target_w = padded_size(height, width, tile, multiple)
    top = min(edge_border, (target_h - height) // 2)
    left = min(edge_border, (target_w - width) // 2)
    bottom = min(edge_border, target_h - height - top)
    right = min(edge_border, target_w - width - left)
    # the band stays within the padded size, so padding it as usual reaches the same size
    return pad_to_tile(edge_pad(array, (top, bottom, left, right)), tile, multiple), top, left


def blend_weights(tile: int | tuple[int, int], overlap: int) -> np.ndarray:
    """Per-pixel weights for merging overlapping tiles of `tile` (a side, or (height, width)):
    1 inside, tapering linearly to the edges.

    The taper spans the overlap, so each pixel's merged value is dominated by the tile that
    sees it farthest from an edge, where the network has the most context.
    """

    def ramp(length: int) -> np.ndarray:
        values = np.ones(length, dtype=np.float32)
        if overlap > 0:
            edge = np.linspace(0.05, 1.0, overlap, dtype=np.float32)
            values[:overlap] = edge
            values[-overlap:] = edge[::-1]
        return values

    tile_h, tile_w = (tile, tile) if isinstance(tile, int) else tile
    return np.outer(ramp(tile_h), ramp(tile_w))
