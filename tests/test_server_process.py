"""uvicorn as a real process on 127.0.0.1, segmenting over HTTP."""

import os
import socket
import subprocess
import sys
import time
from contextlib import contextmanager

import httpx

from tests.conftest import BCD, ROOT, SHIPPED_MODEL


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_http_ready(server: subprocess.Popen, base: str, seconds: float = 60.0) -> None:
    """Poll /readyz of a server process until it answers 200."""
    deadline = time.monotonic() + seconds
    while True:
        assert server.poll() is None, "server exited"
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "server never became ready"
        time.sleep(0.2)


@contextmanager
def running_server(extra_env: dict | None = None):
    """uvicorn app.main:app on a free 127.0.0.1 port, ready; yields its base URL."""
    port = free_port()
    env = {
        **os.environ,
        "BLOODSEG_MODEL_DIR": str(SHIPPED_MODEL),
        "BLOODSEG_PROVIDERS": '["CPUExecutionProvider"]',
        **(extra_env or {}),
    }
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "app.main:app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    server = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http_ready(server, base)
        yield base
    finally:
        server.terminate()
        server.wait(timeout=20)


def test_uvicorn_serves_segment_over_http():
    with running_server() as base:
        data = (BCD / "images" / "image-2.png").read_bytes()
        response = httpx.post(
            f"{base}/segment?include=", timeout=30, files={"image": ("a.png", data, "image/png")}
        )
        assert response.status_code == 200
        body = response.json()
        assert body["counts"]["wbc"] == 1 and body["counts"]["rbc"] > 10
        bad = httpx.post(f"{base}/segment", files={"image": ("a.png", b"nope", "image/png")})
        assert bad.status_code == 415
        assert httpx.get(f"{base}/healthz").status_code == 200
        assert_http_scores_match_offline_evaluation(base)


def assert_http_scores_match_offline_evaluation(base: str) -> None:
    """scripts/evaluate_service.py over HTTP agrees with `python -m training evaluate`."""
    import json

    def run(*args: str) -> dict:
        done = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, check=True)
        return json.loads(done.stdout)

    common = ["--data", str(BCD), "--split", "val"]
    online = run("scripts/evaluate_service.py", "--url", base, *common)
    offline = run("-m", "training", "evaluate", "--model", str(SHIPPED_MODEL), *common)
    assert online["images"] == offline["images"] == 16
    for label in ("rbc", "wbc"):
        for key in ("f1", "count_mae", "count_bias", "predicted"):
            assert online[label][key] == offline[label][key], (label, key)
