"""Paths of the training CLI, from environment variables (prefix BLOODSEG_TRAIN_) or flags."""

from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict


class TrainingSettings(BaseSettings):
    """Defaults for the CLI's path flags; every one can also be given on the command line."""

    model_config = SettingsConfigDict(env_prefix="BLOODSEG_TRAIN_")

    data: list[str] = [
        "../shared/datasets/blood-cell-detection",
        "../shared/datasets/txl-pbc",
    ]
    partial_rbc_data: list[str] = []
    run_dir: str = "runs/default"
    models_dir: str = "models"
