"""One /segment request's work, off the event loop: decode, segment, encode, with timings."""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass
from functools import partial

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
from app.inference.exports import cell_outlines, geojson
from app.inference.field_of_view import FieldOfView, within_field_of_view
from app.inference.pipeline import (
    ScaleChoice,
    Segmentation,
    estimated_scale,
    given_scale,
    segment_at_estimated_scale,
    segment_image,
)
from app.inference.png import encode_png
from app.inference.postprocess import rbc_sizes
from app.inference.quality import colour_spread, result_warnings
from app.inference.render import overlay_image

PICTURES = ("mask", "instances", "overlay")
INCLUDES = (*PICTURES, "geojson")


def parse_include(value: str) -> frozenset[str]:
    """The parts a client asked for; unknown names are a 422."""
    names = {part.strip() for part in value.split(",") if part.strip()}
    unknown = names - set(INCLUDES)
    if unknown:
        raise ApiError(
            422,
            "invalid_include",
            f"unknown include value(s) {sorted(unknown)}; choose from {list(INCLUDES)}",
        )
    return frozenset(names)


@dataclass
class SegmentResult:
    """The JSON body, the encoded pictures, and the segmentation they came from."""

    body: dict
    segmentation: Segmentation
    pngs: dict[str, bytes]


def segment_upload(
    data: bytes,
    model: LoadedModel,
    include: frozenset[str],
    limits: WorkLimits,
    scale: float | None = None,
    rbc_diameter: float | None = None,
    embed: bool = True,
    guard: WorkGuard | None = None,
    auto_scale: bool = True,
    find_field_of_view: bool = True,
) -> SegmentResult:
    """Decode the upload, run the model and build the response (blocking: run in a thread).

    `include` names the pictures to encode (base64 in the body when `embed`, always in
    `pngs`) and whether to add the GeoJSON. With neither `scale` nor `rbc_diameter` the
    magnification is estimated from the image (unless `auto_scale` is off: then scale 1).
    With `find_field_of_view`, an eyepiece photo's dark surround is read as empty glass.
    The image is refused when its work is out of bounds: from its header when the scale is
    given, after the (bounded) estimate otherwise. `guard` is checked between steps and stops
    the work past the request's deadline.
    """
    check = guard.check if guard is not None else None
    metadata = model.metadata
    started = time.perf_counter()
    choice = given_scale(metadata, rbc_diameter, scale)
    if choice is None and not auto_scale:
        choice = ScaleChoice(1.0, metadata.working_rbc_diameter_px, "default")
    estimate_ms = None
    try:
        opened = open_image(data)
        # the size before EXIF orientation: every bound is the same for width x height and
        # height x width, and PNG keeps its orientation after the pixels (reading it decodes)
        width, height = opened.size
        given = choice.scale if choice is not None else None  # None: estimated below
        check_work(width, height, given, limits, model.segmenter.work_pixels)
        image = image_to_rgb(opened)
        # what the model reads: the image with an eyepiece's dark surround painted over
        field = within_field_of_view(image) if find_field_of_view else FieldOfView.whole(image)
        decoded = time.perf_counter()
        if choice is None:
            if check is not None:
                check()
            choice = estimated_scale(field.for_estimate, metadata)
            estimate_ms = (time.perf_counter() - decoded) * 1000
            check_work(width, height, choice.scale, limits, model.segmenter.work_pixels)
    except ImageTooLargeError as error:
        raise ApiError(413, "image_too_large", str(error)) from error
    except ImageDecodeError as error:
        raise ApiError(415, "unsupported_image", str(error)) from error
    except WorkRefused as error:
        raise ApiError(error.status, error.code, str(error)) from error
    if check is not None:
        check()
    # the service's network stage batches these tiles with other requests'
    run = partial(model.network.run, guard=guard) if model.network is not None else None
    if choice.source == "estimated":

        def within_limits(scale: float) -> bool:
            try:
                check_work(width, height, scale, limits, model.segmenter.work_pixels)
            except WorkRefused:
                return False
            return True

        choice, segmentation = segment_at_estimated_scale(
            field.image, model.segmenter, choice, within_limits, check=check, run=run
        )
    else:
        segmentation = segment_image(
            field.image, model.segmenter, choice.scale, check=check, run=run
        )
    encode_start = time.perf_counter()
    pngs: dict[str, bytes] = {}
    if "mask" in include:
        pngs["mask"] = encode_png(segmentation.mask)
    if "instances" in include:
        labels = np.minimum(segmentation.instances.labels, np.iinfo(np.uint16).max)
        pngs["instances"] = encode_png(labels.astype(np.uint16))
    if "overlay" in include:
        overlay = overlay_image(image, segmentation.instances, segmentation.cells, model.metadata)
        pngs["overlay"] = encode_png(overlay)
    extra = {}
    if "geojson" in include:
        outlines = cell_outlines(segmentation.instances.labels)
        extra["geojson"] = geojson(segmentation.cells, outlines, model.metadata)
    finished = time.perf_counter()

    timings = {
        "decode": (decoded - started) * 1000,
        **({"estimate_scale": estimate_ms} if estimate_ms is not None else {}),
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
    body = {
        "counts": segmentation.counts,
        "cells": [cell.__dict__ for cell in segmentation.cells],
        "image": {"width": width, "height": height},
        **({k: base64.b64encode(v).decode() for k, v in pngs.items()} if embed else {}),
        **extra,
        "model": {
            "name": metadata.name,
            "version": metadata.version,
            "provider": model.segmenter.provider,
        },
        "scale": round(choice.scale, 6),
        "rbc_diameter_px": round(choice.rbc_diameter_px, 2),
        "rbc_sizes": rbc_sizes(segmentation.cells),
        "scale_source": choice.source,
        "scale_refined": choice.refined,
        "scale_passes": choice.passes,
        "field_of_view": round(field.cover, 4),
        "warnings": [
            w.__dict__
            for w in result_warnings(segmentation, choice, metadata, colour_spread(image))
        ],
        "timings_ms": {k: round(v, 2) for k, v in timings.items()},
    }
    return SegmentResult(body=body, segmentation=segmentation, pngs=pngs)
