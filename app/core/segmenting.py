"""One /segment request's work, off the event loop: decode, segment, encode, with timings."""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass

import numpy as np

from app.core.errors import ApiError
from app.core.metrics import CELLS, IMAGE_PIXELS, STAGE_LATENCY
from app.core.model_store import LoadedModel
from app.core.work import WorkGuard
from app.inference.budget import WorkLimits, WorkRefused, check_work
from app.inference.decode import (
    ImageDecodeError,
    ImageTooLargeError,
    image_to_rgb,
    open_image,
)
from app.inference.pipeline import scale_for, segment_image
from app.inference.render import overlay_image, png_bytes

PICTURES = ("mask", "instances", "overlay")


def parse_include(value: str) -> frozenset[str]:
    """The pictures a client asked for; unknown names are a 422."""
    names = {part.strip() for part in value.split(",") if part.strip()}
    unknown = names - set(PICTURES)
    if unknown:
        raise ApiError(
            422,
            "invalid_include",
            f"unknown include value(s) {sorted(unknown)}; choose from {list(PICTURES)}",
        )
    return frozenset(names)


@dataclass
class SegmentResult:
    """The JSON body, and the overlay PNG bytes when an image/png response was asked for."""

    body: dict
    overlay_png: bytes | None


def segment_upload(
    data: bytes,
    model: LoadedModel,
    include: frozenset[str],
    limits: WorkLimits,
    scale: float | None = None,
    rbc_diameter: float | None = None,
    overlay_only: bool = False,
    guard: WorkGuard | None = None,
) -> SegmentResult:
    """Decode the upload, run the model and build the response (blocking: run in a thread).

    The image is refused from its header when its work is out of bounds; `guard` is checked
    between steps and stops the work past the request's deadline.
    """
    check = guard.check if guard is not None else None
    started = time.perf_counter()
    try:
        opened = open_image(data)
        # the size before EXIF orientation: every bound is the same for width x height and
        # height x width, and PNG keeps its orientation after the pixels (reading it decodes)
        width, height = opened.size
        factor = scale_for(model.metadata.rbc_diameter_px, rbc_diameter, scale)
        check_work(width, height, factor, limits, model.segmenter.work_pixels)
        image = image_to_rgb(opened)
    except ImageTooLargeError as error:
        raise ApiError(413, "image_too_large", str(error)) from error
    except ImageDecodeError as error:
        raise ApiError(415, "unsupported_image", str(error)) from error
    except WorkRefused as error:
        raise ApiError(error.status, error.code, str(error)) from error
    decoded = time.perf_counter()
    if check is not None:
        check()
    segmentation = segment_image(image, model.segmenter, factor, check=check)
    encode_start = time.perf_counter()
    pictures: dict[str, str] = {}
    overlay_png = None
    wanted = {"overlay"} if overlay_only else include
    if "mask" in wanted:
        pictures["mask"] = base64.b64encode(png_bytes(segmentation.mask)).decode()
    if "instances" in wanted:
        labels = np.minimum(segmentation.instances.labels, np.iinfo(np.uint16).max)
        pictures["instances"] = base64.b64encode(png_bytes(labels.astype(np.uint16))).decode()
    if "overlay" in wanted:
        overlay = overlay_image(image, segmentation.instances, segmentation.cells, model.metadata)
        overlay_png = png_bytes(overlay)
        if not overlay_only:
            pictures["overlay"] = base64.b64encode(overlay_png).decode()
    finished = time.perf_counter()

    timings = {
        "decode": (decoded - started) * 1000,
        **segmentation.timings_ms,
        "encode": (finished - encode_start) * 1000,
        "total": (finished - started) * 1000,
    }
    for stage, ms in timings.items():
        if stage != "total":
            STAGE_LATENCY.labels(stage).observe(ms / 1000)
    IMAGE_PIXELS.observe(width * height)
    for label, count in segmentation.counts.items():
        CELLS.labels(label).inc(count)
    meta = model.metadata
    body = {
        "counts": segmentation.counts,
        "cells": [cell.__dict__ for cell in segmentation.cells],
        "image": {"width": width, "height": height},
        **pictures,
        "model": {"name": meta.name, "version": meta.version, "provider": model.segmenter.provider},
        "scale": round(factor, 6),
        "timings_ms": {k: round(v, 2) for k, v in timings.items()},
    }
    return SegmentResult(body=body, overlay_png=overlay_png if overlay_only else None)
