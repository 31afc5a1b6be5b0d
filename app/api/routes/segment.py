"""POST /segment: an uploaded smear in, counts, cells and pictures out."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Query, Request, Response, UploadFile
from fastapi.responses import JSONResponse

from app.api.deps import ReadyModelDep, SettingsDep
from app.api.responses import error_responses
from app.api.schemas import SegmentResponse
from app.api.segmentation import segment_in_worker
from app.core.errors import ApiError
from app.core.segmenting import INCLUDES, PICTURES, parse_include

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


COUNT_HEADERS = {"rbc": "X-Count-RBC", "wbc": "X-Count-WBC", "platelet": "X-Count-Platelet"}
SUMMARY_HEADERS = [
    *COUNT_HEADERS.values(),
    "X-Scale",
    "X-RBC-Diameter-Px",
    "X-Scale-Source",
    "X-RBC-Median-Diameter-Px",
    "X-Field-Of-View",
    "X-Warnings",
]


def summary_headers(body: dict) -> dict[str, str]:
    """What a picture-only (PNG) response carries of the JSON body: counts, scale, warnings."""
    headers = {COUNT_HEADERS[name]: str(count) for name, count in body["counts"].items()}
    headers["X-Scale"] = str(body["scale"])
    headers["X-RBC-Diameter-Px"] = str(body["rbc_diameter_px"])
    headers["X-Scale-Source"] = body["scale_source"]
    sizes = body["rbc_sizes"]  # empty with too few RBCs clear of the border
    headers["X-RBC-Median-Diameter-Px"] = str(sizes["median_diameter_px"]) if sizes else ""
    headers["X-Field-Of-View"] = str(body["field_of_view"])
    headers["X-Warnings"] = ",".join(w["code"] for w in body["warnings"])
    return headers


@router.post(
    "/segment",
    response_model=SegmentResponse,
    responses={
        200: {
            "content": {
                "image/png": {"schema": {"type": "string", "format": "binary"}},
                GEOJSON: {"schema": {"type": "object"}},
            },
            "description": "JSON; or the overlay PNG itself when Accept: image/png, with "
            "X-Count-RBC / X-Count-WBC / X-Count-Platelet (models with platelets), X-Scale, "
            "X-RBC-Diameter-Px, X-Scale-Source, X-RBC-Median-Diameter-Px (rbc_sizes; empty "
            "when null), X-Field-Of-View and X-Warnings (comma-separated codes); or a "
            "QuPath GeoJSON FeatureCollection of the cells when Accept: application/geo+json",
        },
        **error_responses(
            (400, "malformed multipart body"),
            (413, "upload or image too large, or too much work once resampled and tiled"),
            (415, "not an image this service reads"),
            (422, "missing or invalid field or parameter; degenerate image shape or scale"),
            (503, "model not ready, or BLOODSEG_MAX_QUEUE requests admitted (see Retry-After)"),
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
    accept = request.headers.get("accept", "")
    wants_png, wants_geojson = "image/png" in accept, GEOJSON in accept
    if wants_png or wants_geojson:
        parse_include(include)  # still refuse a wrong value
        parts = frozenset({"overlay"} if wants_png else {"geojson"})
    else:
        parts = parse_include(include)
    data = await read_limited(image, settings.max_upload_bytes)
    result = await segment_in_worker(
        request,
        model,
        settings,
        data,
        parts,
        scale,
        rbc_diameter,
        embed=not (wants_png or wants_geojson),
    )
    if wants_png:
        return Response(
            result.pngs["overlay"], media_type="image/png", headers=summary_headers(result.body)
        )
    if wants_geojson:
        return JSONResponse(result.body["geojson"], media_type=GEOJSON)
    return result.body
