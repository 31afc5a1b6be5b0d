"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app.api.deps import RETRY_AFTER_S, StoreDep
from app.core.errors import error_response
from app.core.metrics import registry

router = APIRouter()


@router.get("/healthz", summary="The process is alive")
def healthz() -> dict:
    return {"status": "ok"}


@router.get("/readyz", summary="A model is loaded and warmed up (503 before)")
def readyz(store: StoreDep):
    model = store.current
    if model is None:
        message = store.last_error or "the model is still loading"
        return error_response(503, "not_ready", message, {"Retry-After": RETRY_AFTER_S})
    return {"status": "ready", "model": f"{model.metadata.name}/{model.metadata.version}"}


@router.get("/metrics", summary="Prometheus metrics")
def metrics() -> Response:
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
