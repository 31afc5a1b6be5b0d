"""Running one segmentation for a route: off the event loop, bounded by the request deadline,
counted in /metrics. Shared by POST /segment and the Open Inference Protocol's infer."""

from __future__ import annotations

from functools import partial

from fastapi import Request

from app.core.admission import Overloaded
from app.core.config import Settings
from app.core.errors import ApiError
from app.core.metrics import DEADLINE_EXCEEDED, DISCONNECTED
from app.core.model_store import LoadedModel
from app.core.segmenting import SegmentResult, segment_upload
from app.core.work import ClientGone, DeadlineExceeded, WorkGuard, run_guarded
from app.inference.budget import WorkLimits

RETRY_AFTER_OVERLOADED_S = "1"
CLIENT_CLOSED_REQUEST = 499  # nginx's status for a request whose client went away


async def segment_in_worker(
    request: Request,
    model: LoadedModel,
    settings: Settings,
    data: bytes,
    parts: frozenset[str],
    scale: float | None = None,
    rbc_diameter: float | None = None,
    embed: bool = True,
) -> SegmentResult:
    """Segment uploaded bytes in a worker thread: 503 at once when BLOODSEG_MAX_QUEUE requests
    are already admitted, 504 past BLOODSEG_REQUEST_TIMEOUT_S, dropped if the client left."""
    guard = WorkGuard(settings.request_timeout_s)
    if scale is not None and rbc_diameter is not None:
        raise ApiError(422, "invalid_request", "give scale or rbc_diameter, not both")
    work = partial(
        segment_upload,
        data,
        model,
        parts,
        WorkLimits(settings.max_pixels, settings.max_work_pixels),
        scale,
        rbc_diameter,
        embed,
        auto_scale=settings.auto_scale,
        find_field_of_view=settings.field_of_view,
    )
    try:
        with request.app.state.admission.admit():
            return await run_guarded(
                lambda g: work(guard=g),
                guard,
                request.app.state.workers,
                request.is_disconnected,
            )
    except Overloaded as error:
        raise ApiError(
            503, "overloaded", str(error), headers={"Retry-After": RETRY_AFTER_OVERLOADED_S}
        ) from error
    except DeadlineExceeded as error:
        DEADLINE_EXCEEDED.inc()
        raise ApiError(504, "timeout", str(error)) from error
    except ClientGone as error:
        DISCONNECTED.inc()
        raise ApiError(CLIENT_CLOSED_REQUEST, "client_closed_request", str(error)) from error
