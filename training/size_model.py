"""Fit the magnification estimate's size regressor on training images (never validation ones).

The regressor reads the image's LoG signature around its peak (app/inference/magnification.py)
and predicts how far the true RBC diameter lies from the peak's scale, in log units. Each
training image is also seen resampled by random factors, so that it learns the whole range of
magnifications a lab may send (0.45x to 2.6x of each source's own); a source is weighted by
the square root of its size, as in training.
"""

from __future__ import annotations

import logging
from dataclasses import asdict

import numpy as np

from app.inference.decode import load_image
from app.inference.magnification import (
    SIGNATURE,
    SignatureSpec,
    log_signature,
    regressed_log_diameter,
    signature_features,
)
from app.inference.preprocess import rescale_image
from training.data import AnnotatedImage, DataError, median_rbc_diameter

logger = logging.getLogger(__name__)

RESAMPLE_RANGE = (0.45, 2.6)
RIDGE = 3.0


def size_samples(
    images: list[AnnotatedImage],
    resamples: int,
    rng: np.random.Generator,
    spec: SignatureSpec = SIGNATURE,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Peak log diameters, signature features and true log diameters of the images, each at
    its own scale and `resamples` random ones. Images with no complete RBC box are skipped."""
    peaks, features, truths = [], [], []
    for annotated in images:
        try:
            diameter = median_rbc_diameter([annotated])
        except DataError:
            continue
        image = load_image(annotated.path)
        factors = [1.0, *np.exp(rng.uniform(*np.log(RESAMPLE_RANGE), size=resamples))]
        for factor in factors:
            resampled = rescale_image(image, float(factor))
            peak, window = signature_features(log_signature(resampled, spec))
            peaks.append(peak)
            features.append(window)
            truths.append(np.log(diameter * resampled.shape[1] / image.shape[1]))
    return np.array(peaks), np.array(features), np.array(truths)


def fit_ridge(features: np.ndarray, targets: np.ndarray, weights: np.ndarray) -> dict:
    """Weighted ridge regression on standardised features: the regressor model.json stores."""
    mean, std = features.mean(axis=0), features.std(axis=0) + 1e-6
    z = np.c_[(features - mean) / std, np.ones(len(features))]
    penalty = RIDGE * np.eye(z.shape[1])
    penalty[-1, -1] = 0.0  # the intercept is not shrunk
    solution = np.linalg.solve(z.T @ (z * weights[:, None]) + penalty, z.T @ (targets * weights))
    return {
        "mean": mean.round(6).tolist(),
        "std": std.round(6).tolist(),
        "weights": solution[:-1].round(6).tolist(),
        "bias": round(float(solution[-1]), 6),
    }


def fit_size_regressor(
    groups: list[list[AnnotatedImage]],
    samples_per_source: int = 400,
    seed: int = 7,
    spec: SignatureSpec = SIGNATURE,
) -> tuple[dict, dict]:
    """The regressor, and its fit on the training images: the share within 12 % of the true
    diameter and the median absolute error. Each group is one source's training images; the
    regressor names the signature `spec` it reads."""
    rng = np.random.default_rng(seed)
    peaks, features, truths, weights = [], [], [], []
    for images in groups:
        if not images:
            continue
        resamples = max(0, int(np.ceil(samples_per_source / len(images))) - 1)
        chosen = images[:samples_per_source]
        p, f, t = size_samples(chosen, resamples, rng, spec)
        peaks.append(p)
        features.append(f)
        truths.append(t)
        weights.append(np.full(len(t), np.sqrt(len(images)) / max(len(t), 1)))
    peak, feature, truth = (np.concatenate(x) for x in (peaks, features, truths))
    weight = np.concatenate(weights)
    regressor = {
        **fit_ridge(feature, truth - peak, weight / weight.mean()),
        "signature": asdict(spec),
    }
    predicted = regressed_log_diameter(peak, feature, regressor)
    error = np.abs(np.exp(predicted - truth) - 1)
    fit = {
        "samples": len(truth),
        "within_12pct": round(float(np.mean(error <= 0.12)), 3),
        "median_abs_error": round(float(np.median(error)), 3),
    }
    logger.info("size regressor fitted on %d samples: %s", len(truth), fit)
    return regressor, fit
