"""Shared fixtures and helpers: fixture images, the full datasets, the shipped model, servers.

Tests that do not measure accuracy read the small committed fixture set in tests/data, so the
suite passes on a fresh clone. Tests marked `datasets` read the full datasets beside the
project (or BLOODSEG_TEST_DATASETS): without them they skip, and under CI=true they fail.
"""

from __future__ import annotations

import io
import os
import socket
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "data"
FIXTURE_BCD = FIXTURES / "blood-cell-detection"
FIXTURE_BCCD = FIXTURES / "bccd"
FIXTURE_TXL = FIXTURES / "txl-pbc"
DATASETS = Path(os.environ.get("BLOODSEG_TEST_DATASETS", ROOT.parent / "shared" / "datasets"))
BCD = DATASETS / "blood-cell-detection"
BCCD = DATASETS / "bccd"
TXL_PBC = DATASETS / "txl-pbc"
SHIPPED_MODEL = Path(os.environ.get("BLOODSEG_TEST_MODEL", ROOT / "models" / "bloodseg"))
IN_CI = os.environ.get("CI", "").lower() == "true"
# training flags for a network and a run small enough to train in seconds on fixtures
TINY = [
    "--size-samples-per-source",
    "4",
    "--crop-size",
    "64",
    "--base-filters",
    "4",
    "--depth",
    "2",
    "--batch-size",
    "4",
]


def tiny_platelet_recipe(run_dir: Path) -> list[str]:
    """`training train` arguments for the 2.x recipe, tiny: platelets, a YOLO dataset of
    several sources, a fixed number of samples per epoch weighted by source, a chosen training
    diameter, wide scale jitter (no epochs or version: the caller's)."""
    return [
        "train",
        "--data",
        str(FIXTURE_BCD),
        str(FIXTURE_TXL),
        "--partial-rbc-data",
        "--run-dir",
        str(run_dir),
        "--platelets",
        "--train-rbc-diameter-px",
        "40",
        "--scale-range",
        "1.4",
        "--samples-per-epoch",
        "8",
        "--val-per-source",
        "1",
        *TINY,
    ]


def constructed_metadata(platelets: bool = True, **counting):
    """A 2.x model's metadata for constructed probability maps: RBC diameter 40 px, a centre
    channel, platelets unless asked otherwise, counting with `counting`'s thresholds."""
    from app.inference.metadata import (
        DEFAULT_CLASSES,
        PLATELET_CLASS,
        Counting,
        InputSpec,
        ModelMetadata,
        OutputSpec,
    )

    classes = [*DEFAULT_CLASSES, *([PLATELET_CLASS] if platelets else [])]
    return ModelMetadata(
        name="t",
        version="0",
        classes=classes,
        input=InputSpec(),
        output=OutputSpec(channels=[c.name for c in classes] + ["centre"]),
        rbc_diameter_px=40.0,
        counting=Counting(platelet_min_area_px=8, **counting),
    )


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Skip (or, under CI=true, fail) tests marked `datasets` when the datasets are absent."""
    if item.get_closest_marker("datasets") is None:
        return
    missing = [str(d) for d in (BCD, BCCD, TXL_PBC) if not d.is_dir()]
    if not missing:
        return
    reason = f"needs the full datasets, not found: {', '.join(missing)} (BLOODSEG_TEST_DATASETS)"
    if IN_CI:
        pytest.fail(f"CI=true: {reason}", pytrace=False)
    pytest.skip(reason)


def fixture_image(name: str = "image-2.png") -> bytes:
    """A real blood-cell-detection smear from the committed fixture set."""
    return (FIXTURE_BCD / "images" / name).read_bytes()


def encode(image, fmt: str, **kwargs) -> bytes:
    """A Pillow image encoded in `fmt`."""
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def png_claiming(width: int, height: int, pixels: bytes = b"\0" * 64) -> bytes:
    """A valid-looking RGB PNG whose header declares any size, with little pixel data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(pixels))
        + chunk(b"IEND", b"")
    )


def assert_error(response, status: int, code: str) -> None:
    """The response is the JSON error shape with this status and code."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["error"]["code"] == code
    assert response.json()["error"]["message"]


def wait_until(predicate, seconds: float = 30.0, what: str = "condition") -> None:
    """Poll `predicate` until it is true (fails after `seconds`)."""
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, f"{what} not reached in {seconds} s"
        time.sleep(0.05)


def wait_ready(client, seconds: float = 60.0) -> None:
    """Poll /readyz until the model is loaded and warmed up."""
    wait_until(lambda: client.get("/readyz").status_code == 200, seconds, "readiness")


def make_client(**overrides):
    """A TestClient context for the real app on the shipped model (lifespan runs on enter)."""
    from fastapi.testclient import TestClient

    from app.core.config import Settings
    from app.main import create_app

    settings = Settings(
        **{"model_dir": SHIPPED_MODEL, "providers": ["CPUExecutionProvider"], **overrides}
    )
    return TestClient(create_app(settings))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_http_ready(server: subprocess.Popen, base: str, seconds: float = 60.0) -> None:
    """Poll /readyz of a server process until it answers 200."""

    def ready() -> bool:
        assert server.poll() is None, "server exited"
        try:
            return httpx.get(f"{base}/readyz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    wait_until(ready, seconds, "server readiness")


def start_server(extra_env: dict | None = None, command: list[str] | None = None):
    """Start the service as a process (`python -m app.serve`) on a free 127.0.0.1 port.

    Returns (process, base URL); the caller stops it.
    """
    port = free_port()
    env = {
        **os.environ,
        "BLOODSEG_MODEL_DIR": str(SHIPPED_MODEL),
        "BLOODSEG_PROVIDERS": '["CPUExecutionProvider"]',
        "BLOODSEG_HOST": "127.0.0.1",
        "BLOODSEG_PORT": str(port),
        **(extra_env or {}),
    }
    server = subprocess.Popen(
        command or [sys.executable, "-m", "app.serve"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return server, f"http://127.0.0.1:{port}"


@contextmanager
def running_server(extra_env: dict | None = None) -> Iterator[str]:
    """The service as a real process, ready; yields its base URL."""
    server, base = start_server(extra_env)
    try:
        wait_http_ready(server, base)
        yield base
    finally:
        server.terminate()
        server.wait(timeout=30)


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


@pytest.fixture(scope="module")
def client():
    with make_client() as test_client:
        wait_ready(test_client)
        yield test_client
