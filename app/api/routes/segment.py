"""POST /segment: an uploaded smear in, counts, cells and pictures out."""

from __future__ import annotations

from functools import partial
from typing import Annotated

from fastapi import APIRouter, File, Query, Request, Response, UploadFile
from fastapi.responses import JSONResponse

from app.api.deps import ReadyModelDep, SettingsDep
from app.api.responses import error_responses
from app.api.schemas import SegmentResponse
from app.core.errors import ApiError
from app.core.metrics import DEADLINE_EXCEEDED, SEGMENT_IN_FLIGHT
from app.core.segmenting import INCLUDES, PICTURES, parse_include, segment_upload
from app.core.work import DeadlineExceeded, WorkGuard, run_guarded
from app.inference.budget import WorkLimits

router = APIRouter()

READ_CHUNK = 1 << 20
GEOJSON = "application/geo+json"


async def read_limited(upload: UploadFile, limit: int) -> bytes:
    """The upload's bytes, or 413 as soon as they pass the limit."""
    chunks, size = [], 0
    while chunk := await upload.read(READ_CHUNK):
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "upload_too_large", f"the upload exceeds {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


@router.post(
    "/segment",
    response_model=SegmentResponse,
    responses={
        200: {
            "content": {
                "image/png": {"schema": {"type": "string", "format": "binary"}},
                GEOJSON: {"schema": {"type": "object"}},
            },
            "description": "JSON; or the overlay PNG itself with X-Count-RBC / X-Count-WBC "
            "when Accept: image/png; or a QuPath GeoJSON FeatureCollection of the cells when "
            "Accept: application/geo+json",
        },
        **error_responses(
            (400, "malformed multipart body"),
            (413, "upload or image too large, or too much work once resampled and tiled"),
            (415, "not an image this service reads"),
            (422, "missing or invalid field or parameter; degenerate image shape or scale"),
            (503, "model not ready (see Retry-After)"),
            (504, "the request ran past BLOODSEG_REQUEST_TIMEOUT_S"),
        ),
    },
    summary="Segment and count the blood cells of one image",
)
async def segment(
    request: Request,
    model: ReadyModelDep,
    settings: SettingsDep,
    image: Annotated[UploadFile, File(description="PNG, JPEG, TIFF, BMP, GIF or WebP")],
    include: Annotated[str, Query(description=f"comma list of {', '.join(INCLUDES)}")] = ",".join(
        PICTURES
    ),
    scale: Annotated[
        float | None, Query(gt=0, le=8, description="resample by this factor first")
    ] = None,
    rbc_diameter: Annotated[
        float | None,
        Query(
            gt=2,
            le=4000,
            description=(
                "RBC diameter in this image's pixels: resamples to the model's training scale"
            ),
        ),
    ] = None,
):
    guard = WorkGuard(settings.request_timeout_s)
    if scale is not None and rbc_diameter is not None:
        raise ApiError(422, "invalid_request", "give scale or rbc_diameter, not both")
    accept = request.headers.get("accept", "")
    wants_png, wants_geojson = "image/png" in accept, GEOJSON in accept
    if wants_png or wants_geojson:
        parse_include(include)  # still refuse a wrong value
        parts = frozenset({"overlay"} if wants_png else {"geojson"})
    else:
        parts = parse_include(include)
    data = await read_limited(image, settings.max_upload_bytes)
    work = partial(
        segment_upload,
        data,
        model,
        parts,
        WorkLimits(settings.max_pixels, settings.max_work_pixels),
        scale,
        rbc_diameter,
        embed=not (wants_png or wants_geojson),
    )
    try:
        with SEGMENT_IN_FLIGHT.track_inprogress():
            result = await run_guarded(
                lambda g: work(guard=g), guard, request.app.state.inference_limiter
            )
    except DeadlineExceeded as error:
        DEADLINE_EXCEEDED.inc()
        raise ApiError(504, "timeout", str(error)) from error
    if wants_png:
        counts = result.body["counts"]
        headers = {"X-Count-RBC": str(counts["rbc"]), "X-Count-WBC": str(counts["wbc"])}
        return Response(result.pngs["overlay"], media_type="image/png", headers=headers)
    if wants_geojson:
        return JSONResponse(result.body["geojson"], media_type=GEOJSON)
    return result.body
