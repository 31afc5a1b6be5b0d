"""Shared fixtures: the real datasets beside the project and the shipped model."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parents[1]
DATASETS = Path(os.environ.get("BLOODSEG_TEST_DATASETS", ROOT.parent / "shared" / "datasets"))
BCD = DATASETS / "blood-cell-detection"
BCCD = DATASETS / "bccd"
SHIPPED_MODEL = ROOT / "models" / "bloodseg"


@pytest.fixture(scope="session")
def shipped_model_dir() -> Path:
    from app.inference.metadata import resolve_model_dir

    return resolve_model_dir(SHIPPED_MODEL)


@pytest.fixture(scope="session")
def segmenter(shipped_model_dir: Path):
    from app.inference.metadata import read_metadata
    from app.inference.runner import OnnxSegmenter, RunnerOptions

    metadata = read_metadata(shipped_model_dir / "model.json")
    return OnnxSegmenter(shipped_model_dir, metadata, RunnerOptions(providers=("CPUExecutionProvider",)))
