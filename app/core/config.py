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
    inference_concurrency: int = Field(1, ge=1, description="images run at once")
    batch_size: int = Field(4, ge=1, description="tiles per network call")
    tile_overlap: int = Field(64, ge=0)
    max_upload_bytes: int = Field(25 * 1024 * 1024, ge=1)
    max_pixels: int = Field(40_000_000, ge=1, description="width x height, checked from the header")
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
