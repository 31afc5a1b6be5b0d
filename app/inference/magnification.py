"""Estimate an image's magnification (its typical RBC diameter in pixels) without a hint.

A granulometry of the image, corrected by a small regressor fitted on the model's training
images:

1. The inverted green channel (RBCs are darker than plasma there) is filtered with a
   scale-normalised Laplacian of Gaussian at a geometric series of scales; the percentiles of
   each answer form a *signature* that slides along the scales as the magnification changes.
2. The signature's peak gives a diameter; how far the true diameter lies from it depends on
   stain and optics, and the model's **size regressor** (ridge weights in model.json, fitted by
   training/size_model.py) reads that from the signature's shape around the peak.

Its cost is a few Gaussian filters on shrunk copies of the image: no network pass. Regressors
fitted from 2.2.1 on read each level through a central window of at most 8,192 pixels, so the
cost no longer grows with the image (the finest levels, the dear ones, still hold hundreds of
cells of their size there). A network probe (segmenting a window at the coarse scale and
measuring the RBCs found) was measured too and dropped: it cost roughly 55 % to 100 % of the
full pass (measured while training shared the CPU) and did not move the estimate. How sure the
estimate is shows once cells are found at it (pipeline.segment_at_estimated_scale); the
signature's own peak contrast was measured as a confidence and does not predict the error.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np
from PIL import Image
from scipy import ndimage

from app.inference.metadata import ModelMetadata

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
COARSE_MAX_SIDE = 1024  # the estimate reads a central window of at most this side
# below this span of green levels (1st to 99th percentile) an image holds nothing to measure
# (blank frames, empty glass): every one of the datasets' 1,621 images spans 73 or more
MIN_CONTRAST = 16


QUANTILES = np.true_divide(np.asarray(PERCENTILES), 100)


def percentiles(values: np.ndarray) -> np.ndarray:
    """np.percentile(values, PERCENTILES), the same to the bit (its default linear method: the
    same order statistics, weights and interpolation), without its generic bookkeeping, which
    cost as much as the partition on these small levels."""
    flat = values.ravel()
    virtual = (flat.size - 1) * QUANTILES
    below = np.floor(virtual)
    weight = virtual - below
    lower = below.astype(np.intp)
    upper = np.minimum(lower + 1, flat.size - 1)
    ranked = np.partition(flat, np.unique(np.concatenate([lower, upper])))
    low, high = ranked[lower], ranked[upper]
    step = high - low
    result = low + step * weight
    np.subtract(high, step * (1 - weight), out=result, where=weight >= 0.5)  # as numpy's _lerp
    return result


@lru_cache(maxsize=8)
def _gaussian_kernels(sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """The smoothing and second-derivative Gaussian kernels that ndimage.gaussian_laplace
    builds at this sigma, read off a unit impulse (built once: every level filters at about
    the spec's working sigma, and building them cost as much as filtering the smaller levels)."""
    radius = int(4.0 * sigma + 0.5)
    impulse = np.zeros(2 * radius + 1)
    impulse[radius] = 1.0
    return tuple(
        ndimage.gaussian_filter1d(impulse, sigma, order=order, mode="constant") for order in (0, 2)
    )


def gaussian_laplace(image: np.ndarray, sigma: float) -> np.ndarray:
    """ndimage.gaussian_laplace(image, sigma) of a 2-D image, the same to the bit, with the
    kernels built once per sigma."""
    smooth, second = _gaussian_kernels(sigma)
    across = ndimage.correlate1d(ndimage.correlate1d(image, second, axis=0), smooth, axis=1)
    across += ndimage.correlate1d(ndimage.correlate1d(image, smooth, axis=0), second, axis=1)
    return across


@dataclass(frozen=True)
class SignatureSpec:
    """How the signature is computed; a size regressor is fitted to one and names it in
    model.json (`size_regressor.signature`), so each model keeps the one it was fitted on."""

    # each level is computed on the image shrunk so that sigma is this many pixels
    working_sigma: float = 1.5
    # shrink each level from the nearest 2x level of an image pyramid instead of the whole
    # image (resizing costs less; with sigma 2 px the levels keep more pixels, which costs
    # more): fitted since 2.2.0, its regressor is closer (within 12 % on 0.595 of the fit's
    # samples against 0.536) and it costs 2 to 19 % more than the legacy signature
    octaves: bool = False
    # the central window read, at most this side (the cost follows its pixels)
    max_side: int = COARSE_MAX_SIDE
    # each level reads a central crop of at most this many pixels (0: all of them); the finest
    # levels, which cost the most, still hold hundreds of cells of their size in it
    level_pixels: int = 0

    @classmethod
    def of(cls, regressor: dict | None) -> SignatureSpec:
        """The spec a size regressor was fitted on (1.x and 2.0-2.1: the default)."""
        return cls(**((regressor or {}).get("signature") or {}))


LEGACY_SIGNATURE = SignatureSpec()  # 1.x, 2.0, 2.1
PYRAMID_SIGNATURE = SignatureSpec(working_sigma=2.0, octaves=True)  # 2.2.0
# what new regressors are fitted on: the pyramid with each level read through at most 8,192
# pixels (a 90 px square at the working sigma), which fitted as closely (within 12 % on 0.590
# of the fit's samples against 0.595) and bounds the cost on large images
SIGNATURE = replace(PYRAMID_SIGNATURE, level_pixels=8192)


def central_window(height: int, width: int, side: int = COARSE_MAX_SIDE) -> tuple[slice, slice]:
    """The rows and columns of the central window of at most `side` that the signature reads."""
    top, left = max(0, (height - side) // 2), max(0, (width - side) // 2)
    return slice(top, top + side), slice(left, left + side)


def log_signature(image: np.ndarray, spec: SignatureSpec = LEGACY_SIGNATURE) -> np.ndarray:
    """(LEVELS, len(PERCENTILES)) percentiles of the scale-normalised Laplacian of Gaussian of
    the inverted green channel (RBCs are darker than plasma there), one row per SIGMAS level:
    a granulometry of the image that slides along the levels as the magnification changes.
    A large image is read through a central window, and with `spec.level_pixels` each level
    through its own smaller one, so the cost stays bounded."""
    rows, cols = central_window(*image.shape[:2], spec.max_side)
    green = image[rows, cols, 1].astype(np.float32)
    inverted = (green.mean() - green) / max(float(green.std()), 1.0)
    height, width = inverted.shape
    octaves = [(1.0, Image.fromarray(inverted))]
    rows = []
    for sigma in SIGMAS:
        shrink, size, keep = level_plan(height, width, sigma, spec)
        while spec.octaves and octaves[-1][0] * 4 <= shrink and min(octaves[-1][1].size) >= 32:
            factor, level = octaves[-1]
            octaves.append((factor * 2, level.reduce(2)))
        source = octaves[-1][1]
        if shrink > 1:
            crop = central_box(source.size, keep) if keep < 1 else None
            small = np.asarray(source.resize(size, Image.Resampling.BOX, box=crop))
        else:
            x0, y0, x1, y1 = (round(v) for v in central_box((width, height), keep))
            small = inverted[y0:y1, x0:x1]
        working = sigma / shrink
        response = -gaussian_laplace(small, working) * working**2
        margin = int(2 * working)
        if min(response.shape) > 4 * margin + 4:  # the border answers to the padding
            response = response[margin:-margin, margin:-margin]
        rows.append(percentiles(response))
    return np.array(rows, dtype=np.float64)


def level_plan(
    height: int, width: int, sigma: float, spec: SignatureSpec
) -> tuple[float, tuple[int, int], float]:
    """How one level reads a (height, width) image: the shrink that brings `sigma` to the
    working sigma, the (width, height) filtered, and the central share of each side kept
    (below 1 where the level would exceed spec.level_pixels)."""
    shrink = max(1.0, sigma / spec.working_sigma)
    size = (max(8, round(width / shrink)), max(8, round(height / shrink)))
    if not spec.level_pixels or size[0] * size[1] <= spec.level_pixels:
        return shrink, size, 1.0
    keep = float(np.sqrt(spec.level_pixels / (size[0] * size[1])))
    return shrink, (max(8, round(size[0] * keep)), max(8, round(size[1] * keep))), keep


def central_box(size: tuple[int, int], keep: float) -> tuple[float, float, float, float]:
    """(left, top, right, bottom) of the central `keep` fraction of each side of a (w, h)."""
    width, height = size
    dx, dy = width * (1 - keep) / 2, height * (1 - keep) / 2
    return (dx, dy, width - dx, height - dy)


def signature_features(signature: np.ndarray) -> tuple[float, np.ndarray]:
    """The peak level's log diameter, and the signature around the peak (WINDOW levels either
    side, scaled by the peak): what the size regressor reads, alike at any magnification."""
    column = PERCENTILES.index(90)
    peak = SEARCH_FROM + int(np.argmax(signature[SEARCH_FROM : SEARCH_TO + 1, column]))
    padded = np.pad(signature, ((WINDOW, WINDOW), (0, 0)), mode="edge")
    window = padded[peak : peak + 2 * WINDOW + 1] / max(signature[peak, column], 1e-6)
    return float(np.log(SIGMAS[peak] * LOG_TO_DIAMETER)), window.ravel()


def regressed_log_diameter(
    log_peak: np.ndarray | float, features: np.ndarray, regressor: dict
) -> np.ndarray | float:
    """The size regressor's log RBC diameter from signature_features (one image, or rows of
    several): the peak's log diameter plus the ridge correction."""
    z = (features - np.asarray(regressor["mean"])) / np.asarray(regressor["std"])
    return log_peak + z @ np.asarray(regressor["weights"]) + regressor["bias"]


def coarse_rbc_diameter(image: np.ndarray, regressor: dict | None = None) -> float:
    """RBC diameter (pixels) from the LoG signature: the peak's scale corrected by the model's
    size regressor (ridge weights fitted on its training images, training/size_model.py), or
    the peak's scale alone for a model without one."""
    log_peak, features = signature_features(log_signature(image, SignatureSpec.of(regressor)))
    if not regressor:
        return float(np.exp(log_peak))
    return float(np.exp(regressed_log_diameter(log_peak, features, regressor)))


def green_contrast(image: np.ndarray) -> float:
    """The span of an RGB image's green levels, 1st to 99th percentile, in the window the
    estimate reads (every 4th pixel of each side): what it has to measure cells by."""
    rows, cols = central_window(*image.shape[:2])
    low, high = np.percentile(image[rows, cols, 1][::4, ::4], (1, 99))
    return float(high - low)


def estimate_rbc_diameter(image: np.ndarray, metadata: ModelMetadata) -> float:
    """Typical RBC diameter of an RGB uint8 image in its own pixels (see the module's notes)."""
    return coarse_rbc_diameter(image, metadata.size_regressor)
