"""GET /model (what is served) and POST /model/reload (adopt the version CURRENT points at)."""

from __future__ import annotations

import hmac
from pathlib import Path
from typing import Annotated

import anyio
from fastapi import APIRouter, Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.api.deps import ReadyModelDep, SettingsDep, StoreDep
from app.api.responses import error_responses
from app.api.schemas import ModelDescription, ReloadResult
from app.core.errors import ApiError
from app.core.model_store import LoadedModel, ModelStore

router = APIRouter()
bearer = HTTPBearer(auto_error=False, description="BLOODSEG_RELOAD_TOKEN")
# the training recipe without anything that names the machine it ran on (paths, run dirs)
PUBLIC_TRAINING_KEYS = (
    "targets",
    "base_filters",
    "level_filters",
    "stem",
    "depth",
    "batchnorm",
    "tile_size",
    "crop_size",
    "batch_size",
    "epochs",
    "learning_rate",
    "val_fraction",
    "seed",
    "platelets",
    "train_rbc_diameter_px",
    "scale_range",
    "inference_rbc_diameter_px",
    "samples_per_epoch",
    "source_boost",
    "edge_border_px",
    "taught_by",
    "distill_weight",
)


def public_dataset(entry: dict) -> dict:
    """A model.json dataset entry with its path reduced to the dataset's name."""
    fields = {k: v for k, v in entry.items() if k != "path"}
    return {"name": Path(str(entry.get("path", "unknown"))).name, **fields}


def describe(model: LoadedModel, store: ModelStore) -> dict:
    """The public description of a loaded model: no paths, no training configuration."""
    meta = model.metadata
    session = model.segmenter.session
    return {
        **meta.model_dump(include={"name", "version", "classes", "input", "output", "counting"}),
        "rbc_diameter_px": meta.rbc_diameter_px,
        "working_rbc_diameter_px": meta.working_rbc_diameter_px,
        "trained_diameter_range_px": meta.trained_diameter_range_px(),
        "size_regressor": meta.size_regressor is not None,
        "training": {k: meta.training[k] for k in PUBLIC_TRAINING_KEYS if k in meta.training},
        "datasets": [public_dataset(d) for d in meta.datasets],
        "metrics": meta.metrics,
        "onnx_sha256": meta.onnx_sha256,
        "variants": [v.model_dump(exclude={"sha256"}) for v in meta.variants],
        "created_at": meta.created_at,
        "package_version": meta.package_version,
        "provider": model.segmenter.provider,
        "model_file": model.segmenter.model_file,
        "providers": session.get_providers(),
        "fallback": model.fallback,
        "onnx_inputs": [
            {"name": i.name, "shape": i.shape, "type": i.type} for i in session.get_inputs()
        ],
        "last_load_error": store.last_error,
    }


@router.get(
    "/model",
    response_model=ModelDescription,
    responses=error_responses((503, "model not ready (see Retry-After)")),
    summary="The served model: classes, scale, counting, metrics, provider",
)
def model_info(model: ReadyModelDep, store: StoreDep) -> dict:
    return describe(model, store)


def token_matches(given: str, expected: str) -> bool:
    """Constant-time comparison of the raw header bytes (Starlette decodes them as latin-1)."""
    return hmac.compare_digest(given.encode("latin-1"), expected.encode("utf-8"))


@router.post(
    "/model/reload",
    response_model=ReloadResult,
    responses=error_responses(
        (401, "no bearer token"),
        (403, "wrong token, or reload disabled (no BLOODSEG_RELOAD_TOKEN)"),
        (409, "the version CURRENT names was rejected; the old model keeps serving"),
    ),
    summary="Load the version CURRENT names now (bearer token)",
)
async def reload_model(
    store: StoreDep,
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
):
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise ApiError(
            401,
            "unauthorized",
            "send Authorization: Bearer <BLOODSEG_RELOAD_TOKEN>",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if not settings.reload_token or not token_matches(
        credentials.credentials, settings.reload_token
    ):
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
