"""The Open Inference Protocol (KServe V2) REST endpoints, so that tritonclient, KServe
gateways and other V2 clients work unchanged. Errors are the protocol's {"error": "..."}."""

from __future__ import annotations

import json

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from app import __version__
from app.api.deps import SettingsDep, StoreDep
from app.api.oip_codec import (
    HEADER_LENGTH,
    OutputTensor,
    ProtocolError,
    bytes_input,
    encode_response,
    number_parameter,
    requested_outputs,
    split_body,
)
from app.api.schemas import V2Error, V2InferRequest
from app.api.segmentation import segment_in_worker
from app.core.errors import ApiError
from app.core.model_store import LoadedModel, ModelStore

router = APIRouter(prefix="/v2", tags=["Open Inference Protocol (KServe V2)"])

INPUT = "image"
OUTPUTS = ["counts", "mask", "instances", "cells"]
V2_ERRORS = {
    status: {"model": V2Error, "description": text}
    for status, text in [
        (400, "the request does not follow the protocol"),
        (404, "no such model or version"),
        (413, "upload or image too large"),
        (415, "the image bytes are not an image"),
        (422, "degenerate image shape or scale"),
        (503, "the model is not ready, or the server is at BLOODSEG_MAX_QUEUE (Retry-After)"),
        (504, "the request ran past its deadline"),
    ]
}


class V2Failure(Exception):
    """An error answered in the protocol's shape."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def v2_error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def served_model(store: ModelStore, name: str, version: str | None = None) -> LoadedModel:
    """The served model if `name` (and `version`, if given) are its own."""
    model = store.current
    if model is None:
        raise V2Failure(503, "the model is not ready")
    meta = model.metadata
    if name != meta.name or (version is not None and version != meta.version):
        wanted = f"{name} version {version}" if version else name
        raise V2Failure(
            404, f"model {wanted[:100]!r} not found; serving {meta.name} {meta.version}"
        )
    return model


def model_metadata(model: LoadedModel) -> dict:
    meta = model.metadata
    classes = len(meta.classes) - 1
    return {
        "name": meta.name,
        "versions": [meta.version],
        "platform": "onnxruntime_onnx",
        "inputs": [{"name": INPUT, "datatype": "BYTES", "shape": [1]}],
        "outputs": [
            {"name": "counts", "datatype": "INT32", "shape": [classes]},
            {"name": "mask", "datatype": "UINT8", "shape": [-1, -1]},
            {"name": "instances", "datatype": "INT32", "shape": [-1, -1]},
            {"name": "cells", "datatype": "BYTES", "shape": [1]},
        ],
        "parameters": {
            "classes": ",".join(c.name for c in meta.classes if c.id != 0),
            "rbc_diameter_px": meta.rbc_diameter_px,
            "working_rbc_diameter_px": meta.working_rbc_diameter_px,
        },
    }


def output_tensors(model: LoadedModel, body: dict, segmentation) -> list[OutputTensor]:
    names = [c.name for c in model.metadata.classes if c.id != 0]
    counts = [body["counts"][n] for n in names]
    return [
        OutputTensor("counts", "INT32", np.array(counts), {"classes": ",".join(names)}),
        OutputTensor("mask", "UINT8", segmentation.mask),
        OutputTensor("instances", "INT32", segmentation.instances.labels),
        OutputTensor("cells", "BYTES", [json.dumps(body["cells"]).encode()]),
    ]


@router.get("", summary="Server metadata")
def server_metadata() -> dict:
    return {"name": "bloodseg", "version": __version__, "extensions": ["binary_tensor_data"]}


@router.get("/health/live", summary="The server is alive")
def live() -> dict:
    return {"live": True}


@router.get("/health/ready", summary="A model is ready", responses={503: V2_ERRORS[503]})
def ready(store: StoreDep):
    if store.current is None:
        return v2_error(503, "the model is not ready")
    return {"ready": True}


@router.get("/models/{model_name}", summary="Model metadata", responses=V2_ERRORS)
@router.get(
    "/models/{model_name}/versions/{model_version}", summary="Model metadata", responses=V2_ERRORS
)
def metadata(store: StoreDep, model_name: str, model_version: str | None = None):
    try:
        return model_metadata(served_model(store, model_name, model_version))
    except V2Failure as failure:
        return v2_error(failure.status, str(failure))


@router.get("/models/{model_name}/ready", summary="The model is ready", responses=V2_ERRORS)
@router.get(
    "/models/{model_name}/versions/{model_version}/ready",
    summary="The model is ready",
    responses=V2_ERRORS,
)
def model_ready(store: StoreDep, model_name: str, model_version: str | None = None):
    try:
        model = served_model(store, model_name, model_version)
    except V2Failure as failure:
        return v2_error(failure.status, str(failure))
    return {"name": model.metadata.name, "ready": True}


def openapi_schemas() -> dict:
    """Component schemas of the infer request body (FastAPI does not see a raw body's model)."""
    schema = V2InferRequest.model_json_schema(ref_template="#/components/schemas/{model}")
    return {"V2InferRequest": schema, **schema.pop("$defs", {})}


INFER_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/V2InferRequest"}},
            "application/octet-stream": {
                "schema": {"type": "string", "format": "binary"},
                "description": f"the JSON header, then binary tensors ({HEADER_LENGTH})",
            },
        },
    }
}


@router.post(
    "/models/{model_name}/infer",
    summary="Segment one image (input 'image': BYTES [1], the encoded file)",
    responses={
        200: {
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
            },
            "description": "JSON; with binary outputs, the JSON header then their bytes",
        },
        **V2_ERRORS,
    },
    openapi_extra=INFER_BODY,
)
@router.post(
    "/models/{model_name}/versions/{model_version}/infer",
    summary="Segment one image with this model version",
    responses=V2_ERRORS,
    openapi_extra=INFER_BODY,
)
async def infer(
    request: Request,
    store: StoreDep,
    settings: SettingsDep,
    model_name: str,
    model_version: str | None = None,
):
    try:
        model = served_model(store, model_name, model_version)
        body = await request.body()
        header, binary = split_body(body, request.headers.get(HEADER_LENGTH))
        image = bytes_input(header, binary, INPUT)
        scale = number_parameter(header, "scale")
        rbc_diameter = number_parameter(header, "rbc_diameter")
        wanted = requested_outputs(header, OUTPUTS)
        result = await segment_in_worker(
            request, model, settings, image, frozenset(), scale, rbc_diameter, embed=False
        )
    except V2Failure as failure:
        return v2_error(failure.status, str(failure))
    except ProtocolError as error:
        return v2_error(400, str(error))
    except ApiError as error:
        return v2_error(error.status, error.message, error.headers)
    tensors = [
        t for t in output_tensors(model, result.body, result.segmentation) if t.name in wanted
    ]
    reply = {
        "model_name": model.metadata.name,
        "model_version": model.metadata.version,
        "parameters": {
            "scale": result.body["scale"],
            "rbc_diameter_px": result.body["rbc_diameter_px"],
            "scale_source": result.body["scale_source"],
            "field_of_view": result.body["field_of_view"],
            # rbc_sizes, when there are enough RBCs clear of the border to measure
            **{f"rbc_{k}": v for k, v in (result.body["rbc_sizes"] or {}).items() if k != "cells"},
            "warnings": ",".join(w["code"] for w in result.body["warnings"]),
        },
    }
    if isinstance(header.get("id"), str):
        reply["id"] = header["id"]
    content, header_length = encode_response(reply, tensors, wanted)
    if header_length is None:
        return Response(content, media_type="application/json")
    return Response(
        content,
        media_type="application/octet-stream",
        headers={HEADER_LENGTH: str(header_length)},
    )
