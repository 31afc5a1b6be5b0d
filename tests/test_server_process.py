"""uvicorn as a real process on 127.0.0.1, segmenting over HTTP."""

import os
import socket
import subprocess
import sys
import time

import httpx

from tests.conftest import BCD, ROOT, SHIPPED_MODEL


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_uvicorn_serves_segment_over_http():
    port = free_port()
    env = {
        **os.environ,
        "BLOODSEG_MODEL_DIR": str(SHIPPED_MODEL),
        "BLOODSEG_PROVIDERS": '["CPUExecutionProvider"]',
    }
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "app.main:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, server.stdout.read().decode()
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server never became ready"
            time.sleep(0.2)
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
    finally:
        server.terminate()
        server.wait(timeout=20)
