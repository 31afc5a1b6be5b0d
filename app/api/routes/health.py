"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app.api.deps import ReadyModelDep
from app.core.metrics import registry

router = APIRouter()


@router.get("/healthz", summary="The process is alive")
def healthz() -> dict:
    return {"status": "ok"}


@router.get("/readyz", summary="A model is loaded and warmed up (503 before)")
def readyz(model: ReadyModelDep) -> dict:
    return {"status": "ready", "model": f"{model.metadata.name}/{model.metadata.version}"}


@router.get("/metrics", summary="Prometheus metrics")
def metrics() -> Response:
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
