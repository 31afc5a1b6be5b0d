"""Response bodies of the API, as they appear in the OpenAPI schema."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class CellOut(BaseModel):
    """One cell, in the uploaded image's pixel coordinates."""

    id: int = Field(description="the cell's value in the instances PNG")
    label: Literal["rbc", "wbc"]
    bbox: tuple[int, int, int, int] = Field(
        description="x_min, y_min, x_max, y_max (max exclusive)"
    )
    centroid: tuple[float, float] = Field(description="x, y")
    area: int = Field(description="pixels")
    score: float = Field(description="mean class probability over the cell's pixels")


class ImageSize(BaseModel):
    width: int
    height: int


class ModelRef(BaseModel):
    name: str
    version: str
    provider: str = Field(description="the ONNX Runtime execution provider actually used")


class SegmentResponse(BaseModel):
    """Counts, cells and pictures of one image."""

    counts: dict[str, int] = Field(examples=[{"rbc": 22, "wbc": 1}])
    cells: list[CellOut]
    image: ImageSize
    mask: str | None = Field(None, description="base64 8-bit PNG: 0 background, 1 RBC, 2 WBC")
    instances: str | None = Field(None, description="base64 16-bit PNG: 0 background, else cell id")
    overlay: str | None = Field(None, description="base64 RGB PNG of the cells over the image")
    model: ModelRef
    scale: float = Field(description="resampling factor applied before the model")
    timings_ms: dict[str, float]


class ErrorBody(BaseModel):
    code: str
    message: str


class ErrorResponse(BaseModel):
    error: ErrorBody
