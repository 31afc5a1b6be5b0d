"""The microscope's field of view: the dark surround of an eyepiece photo, left out.

A photo taken through an eyepiece or a camera adapter shows a round (or cropped) field of view
in black. The network, the per-image normalisation and the magnification estimate all read
that surround as if it were smear: its edge is the strongest feature in the image, so the
estimate can land several times off and most cells go uncounted. Here the surround is found.
The network reads it painted the colour of the smear's plasma, as empty glass around a smear,
which its training images have; the magnification estimate reads it filled with the field
mirrored across its edge, as a flat area would shift the percentiles of its signature.

The surround is the dark pixels connected to the image border: darker than SEED_SHARE of the
image's bright level (its plasma), grown through the vignetting's falloff into pixels darker
than GROW_SHARE of it, then widened by FALLOFF_PX. Of the 1,621 images of the three datasets
one has such a border region, and it is a real black bar (scripts/evaluate_field_of_view.py
scans them); an image without one returns unchanged after a look at its border lines. WBC
nuclei can be darker than GROW_SHARE, so a nucleus touching the surround goes with it: a WBC
the field's edge cuts may lose part of its nucleus.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from app.inference.magnification import central_window
from app.inference.postprocess import regions_reaching

# shares of the image's bright level (BRIGHT_PERCENTILE of each pixel's brightest channel)
SEED_SHARE = 0.35
GROW_SHARE = 0.6
BRIGHT_PERCENTILE = 90
# a dark border region smaller than this share of the image is left as it is
MIN_COVER = 0.02
FALLOFF_PX = 2
# the bright level is read from every SAMPLE_STEP-th pixel in each direction
SAMPLE_STEP = 4
# the plasma colour: the median of the field's pixels at or above this percentile of green
PLASMA_PERCENTILE = 80
# a larger image's surround is found on a regular sample of about this many of its pixels
DETECT_PIXELS = 1 << 20


@dataclass(frozen=True)
class FieldOfView:
    """The image as the network should read it (the surround painted as empty glass), the
    image's central window as the magnification estimate should read it (the surround filled
    with the field's content mirrored across its edge: a flat area shifts the percentiles of
    the estimate's signature; the estimate reads no more than that window), and the share of
    the image's pixels inside the field."""

    image: np.ndarray
    for_estimate: np.ndarray
    cover: float  # 1.0 when nothing was left out

    @classmethod
    def whole(cls, image: np.ndarray) -> FieldOfView:
        """The whole image is the field: read as it is."""
        return cls(image, image, 1.0)


def brightest_channel(pixels: np.ndarray) -> np.ndarray:
    """Each pixel's brightest channel (uint8), for an image or a row of pixels."""
    return pixels.max(axis=-1)


def dark_surround(image: np.ndarray) -> np.ndarray | None:
    """The mask of the dark surround of an RGB uint8 image; None when it has none."""
    border = np.concatenate(
        [brightest_channel(edge) for edge in (image[0], image[-1], image[:, 0], image[:, -1])]
    )
    if border.min() >= SEED_SHARE * 255:  # no bright level could make any of it a seed
        return None
    sample = brightest_channel(image[::SAMPLE_STEP, ::SAMPLE_STEP])
    bright = float(np.percentile(sample, BRIGHT_PERCENTILE))
    seed_level = SEED_SHARE * bright
    if not (border < seed_level).any():
        return None
    brightness = brightest_channel(image)
    surround = regions_reaching(brightness < seed_level)
    if surround.mean() < MIN_COVER:
        return None
    surround = regions_reaching(brightness < GROW_SHARE * bright, seeds=surround)
    return ndimage.binary_dilation(surround, iterations=FALLOFF_PX)


def plasma_colour(image: np.ndarray, field: np.ndarray) -> np.ndarray:
    """The colour of the empty glass between cells, from the pixels inside the field."""
    inside = image[field]
    green = inside[:, 1]
    return np.median(inside[green >= np.percentile(green, PLASMA_PERCENTILE)], axis=0)


def mirrored(image: np.ndarray, surround: np.ndarray) -> np.ndarray:
    """The image with each surround pixel taken from the field, mirrored across the nearest
    point of its edge (the nearest field pixel itself where the mirror lands outside it)."""
    _, (near_rows, near_cols) = ndimage.distance_transform_edt(surround, return_indices=True)
    rows, cols = np.nonzero(surround)
    near_r, near_c = near_rows[rows, cols], near_cols[rows, cols]
    height, width = surround.shape
    mirror_r = np.clip(2 * near_r - rows, 0, height - 1)
    mirror_c = np.clip(2 * near_c - cols, 0, width - 1)
    outside = surround[mirror_r, mirror_c]
    mirror_r[outside], mirror_c[outside] = near_r[outside], near_c[outside]
    filled = image.copy()
    filled[rows, cols] = image[mirror_r, mirror_c]
    return filled


def sample_positions(size: int, step: int) -> np.ndarray:
    """About every `step`-th position along a side, the first and the last included."""
    return np.round(np.linspace(0, size - 1, math.ceil(size / step))).astype(np.intp)


def nearest_sample(size: int, positions: np.ndarray) -> np.ndarray:
    """For each position along a side, the index of the nearest of `positions`."""
    if len(positions) == 1:
        return np.zeros(size, dtype=np.intp)
    return np.round(np.arange(size) * (len(positions) - 1) / (size - 1)).astype(np.intp)


def within_field_of_view(image: np.ndarray) -> FieldOfView:
    """The image with its dark surround painted the plasma's colour (the same array when it
    has none). A large image's surround is found on a regular sample of about DETECT_PIXELS of
    its pixels, its edges included, and drawn back at full size (each pixel takes its nearest
    sample's answer); the widening covers the coarser edge."""
    height, width = image.shape[:2]
    step = max(1, math.ceil(math.sqrt(height * width / DETECT_PIXELS)))
    if step > 1:
        rows, cols = (sample_positions(size, step) for size in (height, width))
        sampled = image[np.ix_(rows, cols)]
    else:
        sampled = image
    coarse = dark_surround(sampled)
    if coarse is None:
        return FieldOfView.whole(image)
    if coarse.all():  # all dark: nothing to read either way
        return FieldOfView(image, image, 0.0)
    colour = np.round(plasma_colour(sampled, ~coarse)).astype(np.uint8)
    surround = coarse
    if step > 1:  # each pixel takes its nearest sample's answer
        surround = coarse[np.ix_(nearest_sample(height, rows), nearest_sample(width, cols))]
    field = ~surround
    painted = image.copy()
    painted[surround] = colour
    # the estimate reads no more than its central window: only that much is mirrored
    window = central_window(*image.shape[:2])
    return FieldOfView(painted, mirrored(image[window], surround[window]), float(field.mean()))
