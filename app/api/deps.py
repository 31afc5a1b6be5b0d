"""Dependencies shared by routes, as Annotated aliases."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.core.config import Settings
from app.core.errors import ApiError
from app.core.model_store import LoadedModel, ModelStore

RETRY_AFTER_S = "5"


def get_store(request: Request) -> ModelStore:
    return request.app.state.store


def get_app_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_ready_model(store: Annotated[ModelStore, Depends(get_store)]) -> LoadedModel:
    """The current model, or 503 with Retry-After while none is ready."""
    model = store.current
    if model is None:
        raise ApiError(
            503,
            "not_ready",
            store.last_error or "the model is still loading",
            headers={"Retry-After": RETRY_AFTER_S},
        )
    return model


StoreDep = Annotated[ModelStore, Depends(get_store)]
SettingsDep = Annotated[Settings, Depends(get_app_settings)]
ReadyModelDep = Annotated[LoadedModel, Depends(get_ready_model)]
