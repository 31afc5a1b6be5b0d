"""OpenAPI descriptions of the error responses that routes really return."""

from __future__ import annotations

from typing import Any

from app.api.schemas import ErrorResponse

RETRY_AFTER_HEADER = {
    "Retry-After": {
        "description": "seconds to wait before trying again",
        "schema": {"type": "string"},
    }
}


def error_responses(*statuses: tuple[int, str]) -> dict[int | str, dict[str, Any]]:
    """`responses=` entries: each status with its description and the JSON error body."""
    out: dict[int | str, dict[str, Any]] = {}
    for status, description in statuses:
        entry: dict[str, Any] = {"model": ErrorResponse, "description": description}
        if status == 503:
            entry["headers"] = RETRY_AFTER_HEADER
        out[status] = entry
    return out
