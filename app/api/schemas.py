"""Response bodies of the API, as they appear in the OpenAPI schema."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field


class CellOut(BaseModel):
    """One cell, in the uploaded image's pixel coordinates."""

    id: int = Field(description="the cell's value in the instances PNG")
    label: Literal["rbc", "wbc", "platelet"]
    bbox: tuple[int, int, int, int] = Field(
        description="x_min, y_min, x_max, y_max (max exclusive)"
    )
    centroid: tuple[float, float] = Field(description="x, y")
    area: int = Field(description="pixels")
    score: float = Field(description="mean class probability over the cell's pixels")
    diameter: float = Field(
        description="the cell's size as boxes are annotated: the mean of its box's width and "
        "height, pixels (the disc of the cell's area reads RBCs 2 to 7 % smaller than their "
        "annotated boxes)"
    )
    on_border: bool = Field(
        description="the cell reaches the image border: its area and diameter measure the "
        "visible part only (leave it out of size statistics)"
    )


class ImageSize(BaseModel):
    width: int
    height: int


class ModelRef(BaseModel):
    name: str
    version: str
    provider: str = Field(description="the ONNX Runtime execution provider actually used")


class WarningOut(BaseModel):
    """Something to know before trusting the result (README: "Warnings")."""

    code: Literal[
        "scale_low_confidence",
        "magnification_out_of_range",
        "mostly_background",
        "count_unusually_high",
        "greyscale_image",
    ]
    message: str


class RbcSizes(BaseModel):
    """The size distribution of the RBCs the image border does not cut."""

    cells: int = Field(description="RBCs measured (those the border cuts are left out)")
    median_diameter_px: float = Field(description="median of their diameters, pixels")
    diameter_cv: float = Field(
        description="coefficient of variation of their diameters (as a blood count's RDW-CV, "
        "by diameter rather than volume)"
    )


class SegmentResponse(BaseModel):
    """Counts, cells and pictures of one image."""

    counts: dict[str, int] = Field(
        examples=[{"rbc": 22, "wbc": 1, "platelet": 2}],
        description="cells per class of the model (platelet: models 2.x and later)",
    )
    cells: list[CellOut]
    image: ImageSize
    mask: str | None = Field(
        None,
        description="base64 8-bit PNG of class ids (model.json classes: 0 background, "
        "1 RBC, 2 WBC, 3 platelet)",
    )
    instances: str | None = Field(None, description="base64 16-bit PNG: 0 background, else cell id")
    overlay: str | None = Field(None, description="base64 RGB PNG of the cells over the image")
    geojson: dict[str, Any] | None = Field(
        None, description="QuPath GeoJSON FeatureCollection: one polygon per cell (include=geojson)"
    )
    model: ModelRef
    scale: float = Field(description="resampling factor applied before the model")
    rbc_diameter_px: float = Field(
        description="typical RBC diameter in the uploaded image's pixels: given, or estimated"
    )
    rbc_sizes: RbcSizes | None = Field(
        description="the RBCs' measured sizes; null with fewer than 5 RBCs clear of the border"
    )
    scale_source: Literal["given", "estimated", "default"] = Field(
        description="given: from scale or rbc_diameter; estimated: measured from the image; "
        "default: scale 1, when BLOODSEG_AUTO_SCALE is off and nothing was given, or the image "
        "has too little contrast to estimate from (warning scale_low_confidence)"
    )
    scale_refined: bool = Field(
        description="estimated: the scale kept is not the first estimate, because the cells "
        "found there measured more than 8 % off it (segmented again at the scale they imply), "
        "or because the network found its RBC centres clearly surer an octave away"
    )
    scale_passes: int = Field(
        description="network passes made to settle the scale (1 when it was given); the "
        "earlier ones show together as first_pass in timings_ms"
    )
    field_of_view: float = Field(
        ge=0,
        le=1,
        description="the share of the image inside the microscope's field of view: 1 unless "
        "the image has a dark surround at its border (an eyepiece photo's black circle or "
        "bars), which the model then reads as empty glass; no cell is found there",
    )
    warnings: list[WarningOut]
    timings_ms: dict[str, float]


class ErrorBody(BaseModel):
    code: str
    message: str


class ErrorResponse(BaseModel):
    error: ErrorBody


class DatasetRef(BaseModel):
    """A dataset the model was trained on, by name (its path stays out)."""

    name: str
    fingerprint: str | None = None
    rbc_complete: bool | None = None
    platelets_complete: bool | None = None
    rbc_diameter_px: float | None = None
    sources: list[dict[str, Any]] | None = Field(
        None, description="a dataset that mixes microscopes: each image size, scored apart"
    )
    train_images: int | None = None
    val_images: int | None = None


class OnnxInput(BaseModel):
    name: str
    shape: list[int | str | None]
    type: str


class ModelDescription(BaseModel):
    """What is served: model.json's public part, where it runs, and the last load error.

    No file paths: they describe the machine the model was trained on, or the server's disk.
    """

    name: str
    version: str
    classes: list[dict[str, Any]]
    input: dict[str, Any]
    output: dict[str, Any]
    rbc_diameter_px: float = Field(description="training scale: median RBC diameter in pixels")
    working_rbc_diameter_px: float = Field(
        description="the RBC diameter images are resampled to before the network (scale 1 "
        "means the image's RBCs are this size); the training scale unless model.json sets "
        "inference_rbc_diameter_px"
    )
    trained_diameter_range_px: tuple[float, float] | None = Field(
        None,
        description="RBC diameters of the training images, widened by the scale "
        "augmentation: outside it, a result warns magnification_out_of_range",
    )
    size_regressor: bool = Field(
        False, description="the model carries the magnification estimate's size regressor"
    )
    counting: dict[str, Any]
    training: dict[str, Any] = Field(
        description="the training recipe (architecture, epochs, split seed), without paths"
    )
    datasets: list[DatasetRef]
    metrics: dict[str, Any]
    onnx_sha256: str
    created_at: str
    package_version: str
    provider: str = Field(description="the ONNX Runtime execution provider actually used")
    providers: list[str]
    model_file: str = Field(
        description="the file the session runs, as BLOODSEG_PRECISION chose it: model.onnx, "
        "model.fp16.onnx on CUDA, or model.int8.onnx on a CPU with VNNI when int8 is asked for"
    )
    variants: list[dict[str, Any]] = Field(
        [], description="other files of the same model, by precision and provider"
    )
    fallback: str | None = Field(
        None, description="why the model runs on CPU although an accelerator was asked for"
    )
    onnx_inputs: list[OnnxInput]
    last_load_error: str | None


class ReloadResult(BaseModel):
    reloaded: bool = Field(description="a new version was swapped in")
    version: str | None
    last_load_error: str | None


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    status: Literal["ready"]
    model: str = Field(description="name/version of the served model")


class V2Error(BaseModel):
    """The Open Inference Protocol's error body."""

    error: str


class V2Tensor(BaseModel):
    name: str
    datatype: str
    shape: list[int]
    parameters: dict[str, Any] | None = None
    data: list[Any] | None = Field(None, description="for BYTES: base64 strings")


class V2RequestedOutput(BaseModel):
    name: str
    parameters: dict[str, Any] | None = None


class V2InferRequest(BaseModel):
    """An inference request: input 'image' (BYTES [1]); parameters scale or rbc_diameter."""

    id: str | None = None
    parameters: dict[str, Any] | None = None
    inputs: list[V2Tensor]
    outputs: list[V2RequestedOutput] | None = None
