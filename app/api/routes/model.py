"""GET /model (what is served) and POST /model/reload (adopt the version CURRENT points at)."""

from __future__ import annotations

import hmac
from typing import Annotated

import anyio
from fastapi import APIRouter, Header

from app.api.deps import ReadyModelDep, SettingsDep, StoreDep
from app.core.errors import ApiError

router = APIRouter()


@router.get("/model", summary="model.json of the served model, its provider and ONNX inputs")
def model_info(model: ReadyModelDep, store: StoreDep) -> dict:
    session = model.segmenter.session
    return {
        **model.metadata.model_dump(),
        "provider": model.segmenter.provider,
        "providers": session.get_providers(),
        "directory": str(model.directory),
        "onnx_inputs": [
            {"name": i.name, "shape": i.shape, "type": i.type} for i in session.get_inputs()
        ],
        "last_load_error": store.last_error,
    }


@router.post("/model/reload", summary="Load the version CURRENT names now (bearer token)")
async def reload_model(
    store: StoreDep,
    settings: SettingsDep,
    authorization: Annotated[str | None, Header()] = None,
):
    if not authorization or not authorization.startswith("Bearer "):
        raise ApiError(
            401,
            "unauthorized",
            "send Authorization: Bearer <BLOODSEG_RELOAD_TOKEN>",
            headers={"WWW-Authenticate": "Bearer"},
        )
    token = authorization.removeprefix("Bearer ")
    if not settings.reload_token or not hmac.compare_digest(token, settings.reload_token):
        raise ApiError(403, "forbidden", "wrong reload token (or reload is disabled)")
    swapped = await anyio.to_thread.run_sync(store.refresh, True)
    current = store.current
    if store.last_error and not swapped:
        raise ApiError(409, "model_rejected", store.last_error)
    return {
        "reloaded": swapped,
        "version": current.metadata.version if current else None,
        "last_load_error": store.last_error,
    }
