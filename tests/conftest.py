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
SHIPPED_MODEL = Path(os.environ.get("BLOODSEG_TEST_MODEL", ROOT / "models" / "bloodseg"))


@pytest.fixture(scope="session")
def shipped_model_dir() -> Path:
    from app.inference.metadata import resolve_model_dir

    return resolve_model_dir(SHIPPED_MODEL)


@pytest.fixture(scope="session")
def segmenter(shipped_model_dir: Path):
    from app.inference.metadata import read_metadata
    from app.inference.runner import OnnxSegmenter, RunnerOptions

    metadata = read_metadata(shipped_model_dir / "model.json")
    return OnnxSegmenter(
        shipped_model_dir, metadata, RunnerOptions(providers=("CPUExecutionProvider",))
    )


def wait_ready(client, seconds: float = 60.0) -> None:
    """Poll /readyz until the model is loaded and warmed up."""
    import time

    deadline = time.monotonic() + seconds
    while client.get("/readyz").status_code != 200:
        assert time.monotonic() < deadline, "the model did not become ready"
        time.sleep(0.05)


def make_client(**overrides):
    """A TestClient context for the real app on the shipped model (lifespan runs on enter)."""
    from fastapi.testclient import TestClient

    from app.core.config import Settings
    from app.main import create_app

    settings = Settings(model_dir=SHIPPED_MODEL, providers=["CPUExecutionProvider"], **overrides)
    return TestClient(create_app(settings))


@pytest.fixture(scope="module")
def client():
    with make_client() as test_client:
        wait_ready(test_client)
        yield test_client
