"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app.api.deps import ReadyModelDep
from app.api.responses import error_responses
from app.api.schemas import Health, Readiness
from app.core.metrics import registry

router = APIRouter()


@router.get("/healthz", response_model=Health, summary="The process is alive")
def healthz() -> dict:
    return {"status": "ok"}


@router.get(
    "/readyz",
    response_model=Readiness,
    responses=error_responses((503, "no model loaded yet, or none could be loaded")),
    summary="A model is loaded and warmed up (503 before)",
)
def readyz(model: ReadyModelDep) -> dict:
    return {"status": "ready", "model": f"{model.metadata.name}/{model.metadata.version}"}


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {
            "content": {CONTENT_TYPE_LATEST.split(";")[0]: {"schema": {"type": "string"}}},
            "description": "Prometheus text exposition format",
        }
    },
    summary="Prometheus metrics",
)
def metrics() -> Response:
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
