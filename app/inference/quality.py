"""Warnings a user must read before trusting a result: what the response's `warnings` holds.

Each warning has a stable `code` (also sent in the PNG response's X-Warnings header) and a
message in words. The README documents every code.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from app.inference.magnification import MIN_CONTRAST
from app.inference.metadata import ModelMetadata
from app.inference.pipeline import ScaleChoice, Segmentation

# cells cover less than this share of the image: mostly empty glass, or not a smear at all
MIN_CELL_COVER = 0.05
# RBC discs of the image's RBC diameter would cover more than this share of the image: more
# RBCs than fit, so cells were split (or the scale is wrong)
MAX_RBC_PACKING = 1.1
# an image whose pixels' spread across R, G and B is under this (99th percentile) has no
# colour: a greyscale image. Every image of the three datasets spreads 59 or more, greyscale
# ones 0, and JPEG keeps them at 0
MIN_COLOUR = 16


@dataclass(frozen=True)
class ResultWarning:
    """One thing the user must know about this result."""

    code: str
    message: str


def colour_spread(image: np.ndarray) -> float:
    """How coloured an RGB uint8 image is: the 99th percentile, over every 4th pixel of each
    side, of each pixel's largest minus smallest channel. 0 for a greyscale image."""
    sample = image[::4, ::4].astype(np.int16)
    return float(np.percentile(sample.max(axis=2) - sample.min(axis=2), 99))


def result_warnings(
    segmentation: Segmentation,
    choice: ScaleChoice,
    metadata: ModelMetadata,
    colour: float | None = None,
) -> list[ResultWarning]:
    """The warnings for one result, in a fixed order; `colour` is the image's colour_spread."""
    found: list[ResultWarning] = []
    if colour is not None and colour < MIN_COLOUR:
        found.append(
            ResultWarning(
                "greyscale_image",
                "the image has no colour, and the model tells WBCs and platelets from RBCs by "
                "their stain: on greyscale copies of the validation images WBC F1 fell to 0.64 "
                "(blood-cell-detection) and platelet F1 to 0.07 (BCCD); send the colour image",
            )
        )
    if choice.contrast is not None:
        found.append(
            ResultWarning(
                "scale_low_confidence",
                f"the image's green levels span {choice.contrast:.0f} grey levels (under "
                f"{MIN_CONTRAST}; smears span 70 or more): too little to estimate the "
                "magnification, so it was segmented at the model's own scale; pass "
                "rbc_diameter if you know it",
            )
        )
    if choice.source == "estimated" and not choice.checked:
        measured = (
            "too few whole RBCs were found to check it"
            if choice.measured_px is None
            else f"the RBCs found measure {choice.measured_px:.0f} px"
        )
        found.append(
            ResultWarning(
                "scale_low_confidence",
                f"the magnification was estimated at RBCs of {choice.rbc_diameter_px:.0f} px, "
                f"and {measured}; pass rbc_diameter if you know it",
            )
        )
    trained = metadata.trained_diameter_range_px()
    if trained is not None and not trained[0] <= choice.rbc_diameter_px <= trained[1]:
        found.append(
            ResultWarning(
                "magnification_out_of_range",
                f"RBCs of {choice.rbc_diameter_px:.0f} px are outside the {trained[0]:.0f}-"
                f"{trained[1]:.0f} px RBC diameters the model was trained on; counts may be "
                "less accurate",
            )
        )
    cover = segmentation.cell_cover
    if cover < MIN_CELL_COVER:
        found.append(
            ResultWarning(
                "mostly_background",
                f"cells cover {cover:.1%} of the image; is it a blood smear, in focus?",
            )
        )
    rbcs = segmentation.counts.get("rbc", 0)
    packing = rbcs * np.pi * (choice.rbc_diameter_px / 2) ** 2 / segmentation.pixels
    if packing > MAX_RBC_PACKING:
        found.append(
            ResultWarning(
                "count_unusually_high",
                f"{rbcs} RBCs of {choice.rbc_diameter_px:.0f} px would cover {packing:.0%} of "
                "the image: cells were probably split; check the magnification",
            )
        )
    return found
