"""Estimate an image's magnification (its typical RBC diameter in pixels) without a hint.

Two steps, so that the estimate is both cheap and measured by the model itself:

1. **Coarse**: the scale at which the image's darkest round blobs answer a scale-normalised
   Laplacian of Gaussian best (a granulometry of the green channel, where RBCs are darker than
   plasma). Stain- and density-independent, but only good to about +-30 %.
2. **Probe**: the network runs once on a small window of the image brought to the training scale
   by the coarse estimate (the network was trained with a wide scale augmentation, so +-30 % is
   inside what it segments well). The median size of the RBCs it finds there, back in image
   pixels, is the estimate. The window's area is a fixed fraction of what the full pass will
   cost, so the estimate stays a bounded share of the request's work.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import ndimage

from app.inference.metadata import ModelMetadata
from app.inference.postprocess import find_instances
from app.inference.preprocess import channel_stats, normalize_image, padded_size, rescale_image

# the scales the coarse step reads, as RBC diameters in image pixels; the peak is searched
# between levels SEARCH_FROM and SEARCH_TO (about 14 to 230 px), the rest gives context
MIN_DIAMETER_PX = 10.0
MAX_DIAMETER_PX = 320.0
LEVELS = 24
SEARCH_FROM, SEARCH_TO = 2, LEVELS - 3
WINDOW = 6  # levels either side of the peak that the size regressor reads
PERCENTILES = (50, 90, 99)
LOG_TO_DIAMETER = 2.0 * np.sqrt(2.0)  # a disc of radius r answers a LoG best at sigma r/sqrt(2)
SIGMAS = np.geomspace(MIN_DIAMETER_PX, MAX_DIAMETER_PX, LEVELS) / LOG_TO_DIAMETER
WORKING_SIGMA = 2.5  # each level is computed on the image shrunk so sigma is this many pixels
COARSE_MAX_SIDE = 1024  # the coarse step reads a central window of at most this side
PROBE_FRACTION = 0.2  # the probe's pixels, as a share of the full pass's
MIN_PROBE_PX = 96
MIN_PROBE_CELLS = 4
MAX_PROBE_SPREAD = 0.35  # interquartile range / median of the probe's RBC diameters


@dataclass(frozen=True)
class SizeEstimate:
    """The typical RBC diameter of an image in its own pixels, and how it was found."""

    rbc_diameter_px: float
    coarse_diameter_px: float
    cells_measured: int  # RBCs the probe measured (0 without a probe)
    spread: float  # interquartile range / median of the measured diameters (0 without)
    confident: bool


def log_signature(image: np.ndarray) -> np.ndarray:
    """(LEVELS, len(PERCENTILES)) percentiles of the scale-normalised Laplacian of Gaussian of
    the inverted green channel (RBCs are darker than plasma there), one row per SIGMAS level:
    a granulometry of the image that slides along the levels as the magnification changes.
    A large image is read through a central window, so the cost stays bounded."""
    height, width = image.shape[:2]
    top, left = max(0, (height - COARSE_MAX_SIDE) // 2), max(0, (width - COARSE_MAX_SIDE) // 2)
    green = image[top : top + COARSE_MAX_SIDE, left : left + COARSE_MAX_SIDE, 1]
    green = green.astype(np.float32)
    inverted = (green.mean() - green) / max(float(green.std()), 1.0)
    base = Image.fromarray(inverted)
    height, width = inverted.shape
    rows = []
    for sigma in SIGMAS:
        shrink = max(1.0, sigma / WORKING_SIGMA)
        size = (max(8, round(width / shrink)), max(8, round(height / shrink)))
        small = np.asarray(base.resize(size, Image.Resampling.BOX)) if shrink > 1 else inverted
        working = sigma / shrink
        response = -ndimage.gaussian_laplace(small, working) * working**2
        margin = int(2 * working)
        if min(response.shape) > 4 * margin + 4:  # the border answers to the padding
            response = response[margin:-margin, margin:-margin]
        rows.append(np.percentile(response, PERCENTILES))
    return np.array(rows, dtype=np.float64)


def signature_features(signature: np.ndarray) -> tuple[float, np.ndarray]:
    """The peak level's log diameter, and the signature around the peak (WINDOW levels either
    side, scaled by the peak): what the size regressor reads, alike at any magnification."""
    column = PERCENTILES.index(90)
    peak = SEARCH_FROM + int(np.argmax(signature[SEARCH_FROM : SEARCH_TO + 1, column]))
    padded = np.pad(signature, ((WINDOW, WINDOW), (0, 0)), mode="edge")
    window = padded[peak : peak + 2 * WINDOW + 1] / max(signature[peak, column], 1e-6)
    return float(np.log(SIGMAS[peak] * LOG_TO_DIAMETER)), window.ravel()


def coarse_rbc_diameter(image: np.ndarray, regressor: dict | None = None) -> float:
    """RBC diameter (pixels) from the LoG signature: the peak's scale corrected by the model's
    size regressor (ridge weights fitted on its training images, training/size_model.py), or
    the peak's scale alone for a model without one."""
    log_peak, features = signature_features(log_signature(image))
    if not regressor:
        return float(np.exp(log_peak))
    z = (features - np.asarray(regressor["mean"])) / np.asarray(regressor["std"])
    return float(np.exp(log_peak + z @ np.asarray(regressor["weights"]) + regressor["bias"]))


def probe_size(height: int, width: int, scale: float, tile: int, multiple: int) -> int:
    """Side of the square probe window (network pixels): PROBE_FRACTION of the full pass's tile
    area at this scale, at most one tile and no more than the image itself."""
    scaled_h, scaled_w = max(1, round(height * scale)), max(1, round(width * scale))
    full_h, full_w = padded_size(scaled_h, scaled_w, tile, multiple)
    full_tiles = -(-full_h // tile) * -(-full_w // tile)
    side = int(np.sqrt(PROBE_FRACTION * full_tiles) * tile) // multiple * multiple
    fits = -(-max(scaled_h, scaled_w) // multiple) * multiple
    return max(MIN_PROBE_PX, min(side, tile, fits))


def rbc_diameters(probs: np.ndarray, metadata: ModelMetadata) -> np.ndarray:
    """Diameters (network pixels) of the RBCs found in `probs` that do not touch its border (a
    cell cut by the border would read small), measured as the training scale was: the mean of
    the cell's width and height, as for an annotated box."""
    instances = find_instances(probs, metadata)
    labels = instances.labels
    rbc = metadata.class_id("rbc")
    height, width = labels.shape
    diameters = []
    for index, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None or instances.classes.get(index) != rbc:
            continue
        rows, cols = box
        if rows.start == 0 or cols.start == 0 or rows.stop == height or cols.stop == width:
            continue
        diameters.append((rows.stop - rows.start + cols.stop - cols.start) / 2)
    return np.array(diameters, dtype=float)


def estimate_rbc_diameter(
    image: np.ndarray,
    metadata: ModelMetadata,
    run: Callable[[np.ndarray], np.ndarray] | None,
) -> SizeEstimate:
    """Typical RBC diameter of an RGB uint8 image in its own pixels (see the module's notes).

    `run` runs the network on a (1, H, W, 3) normalised batch of any size that is a multiple of
    the model's size_multiple; None skips the probe (the coarse estimate alone).
    """
    coarse = coarse_rbc_diameter(image, metadata.size_regressor)
    if run is None:
        return SizeEstimate(coarse, coarse, 0, 0.0, metadata.size_regressor is not None)
    scale = metadata.rbc_diameter_px / coarse
    height, width = image.shape[:2]
    multiple = metadata.input.size_multiple
    side = probe_size(height, width, scale, metadata.input.tile_size, multiple)
    # the window, in image pixels, centred; normalised by the whole image's statistics
    window = min(max(height, width), int(np.ceil(side / scale)))
    top = max(0, (height - window) // 2)
    left = max(0, (width - window) // 2)
    crop = rescale_image(image[top : top + window, left : left + window], scale)
    normalized = normalize_image(crop, metadata.input.normalization, channel_stats(image))
    probe = np.zeros((side, side, 3), dtype=np.float32)
    rows, cols = min(side, normalized.shape[0]), min(side, normalized.shape[1])
    probe[:rows, :cols] = normalized[:rows, :cols]
    probs = run(probe[None])[0, :rows, :cols]
    diameters = rbc_diameters(probs, metadata) / scale
    if len(diameters) < MIN_PROBE_CELLS:
        return SizeEstimate(coarse, coarse, len(diameters), 0.0, False)
    median = float(np.median(diameters))
    q1, q3 = np.percentile(diameters, [25, 75])
    spread = float((q3 - q1) / median)
    if spread > MAX_PROBE_SPREAD:  # the probe saw no consistent RBCs: keep the coarse answer
        return SizeEstimate(coarse, coarse, len(diameters), round(spread, 3), False)
    return SizeEstimate(median, coarse, len(diameters), round(spread, 3), True)
