"""The service's settings: one typed object, read from BLOODSEG_* environment variables."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parents[2]


class Settings(BaseSettings):
    """Deployment settings (model constants live in model.json, never here)."""

    model_config = SettingsConfigDict(env_prefix="BLOODSEG_", env_file=".env", extra="ignore")

    model_dir: Path = Field(
        PROJECT_ROOT / "models" / "bloodseg",
        description="a model root with a CURRENT pointer, or one version directory",
    )
    providers: list[str] = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    intra_op_threads: int = Field(0, ge=0, description="0 lets ONNX Runtime choose")
    inter_op_threads: int = Field(0, ge=0)
    intra_op_spinning: bool | Literal["auto"] = Field(
        "auto",
        description="ONNX Runtime's threads spin between operators: the lowest latency for one "
        "request, but the spinning takes CPU that concurrent requests' other stages need. "
        "auto: spin while one request is admitted, not while several are (CPU)",
    )
    workers: int = Field(
        4,
        ge=1,
        description="requests decoded, post-processed and encoded at once, beside the network "
        "stage (a request waiting for the network holds its worker)",
    )
    network_instances: int = Field(
        1,
        ge=1,
        le=16,
        description="sessions running batches at once, each in its own thread (Triton's "
        "instance_group count); give each BLOODSEG_INTRA_OP_THREADS = cores / instances",
    )
    max_batch: int = Field(
        4, ge=1, description="tiles per network call, mixed from concurrent requests"
    )
    batch_delay_ms: float = Field(
        0.0,
        ge=0,
        le=1000,
        description="how long a short batch waits for more tiles before it runs",
    )
    tile_overlap: int = Field(64, ge=0)
    max_window_pixels: int = Field(
        1024 * 1024,
        ge=0,
        le=2048 * 2048,  # a window's activations grow with it: about 0.5 GB at 1024 x 1024
        description="on the CPU, an image padded to at most this many pixels at the model's "
        "scale runs as one window of its own size, a larger one in even windows of at most "
        "that area, instead of 256 tiles (0: tiles)",
    )
    auto_scale: bool = Field(
        True,
        description="estimate the magnification of an image sent without scale or "
        "rbc_diameter; off: such an image is taken at the model's own scale (scale 1)",
    )
    field_of_view: bool = Field(
        True,
        description="find an eyepiece photo's dark surround (black circle or bars at the border) "
        "and read it as empty glass; off: every image is read as it is",
    )
    precision: Literal["auto", "float32", "int8"] = Field(
        "auto",
        description="auto: the model's float16 variant on CUDA, float32 on the CPU; int8: the "
        "model's int8 variant on a CPU with VNNI (float32 elsewhere); float32: always float32",
    )
    cudnn_conv_algo_search: Literal["HEURISTIC", "EXHAUSTIVE", "DEFAULT"] = "HEURISTIC"
    io_binding: bool = Field(True, description="bind inputs and outputs on CUDA")
    max_upload_bytes: int = Field(25 * 1024 * 1024, ge=1)
    max_pixels: int = Field(
        40_000_000, ge=1, description="width x height of the decoded image, checked from the header"
    )
    max_work_pixels: int = Field(
        32 * 1024 * 1024,
        ge=1,
        description="pixels the network processes for one image: tiles x tile area, after "
        "resampling and padding",
    )
    max_header_bytes: int = Field(16 * 1024, ge=1024, description="all request headers together")
    max_queue: int = Field(
        32,
        ge=0,
        description="segmentation requests admitted at once, waiting or running; past it a "
        "503 with Retry-After (0: no bound)",
    )
    request_timeout_s: float = Field(
        60.0, gt=0, description="deadline for one /segment request: waiting, decoding, inference"
    )
    host: str = "0.0.0.0"
    port: int = Field(8000, ge=0, le=65535)
    shutdown_timeout_s: float = Field(
        8.0, ge=0, description="drain time after SIGTERM before in-flight work is cancelled"
    )
    docs_enabled: bool = Field(True, description="/docs and /redoc (assets served locally)")
    log_level: str = "INFO"
    log_format: Literal["text", "json"] = "text"
    cors_origins: list[str] = []
    reload_token: str = Field(
        "", description="bearer token for POST /model/reload; empty: disabled"
    )
    watch_interval_s: float = Field(5.0, ge=0, description="poll the CURRENT pointer; 0: off")


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings."""
    return Settings()
