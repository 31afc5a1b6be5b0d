"""Replay the hostile-client probe against a fresh local server and print what each case got.

    python scripts/probe_hostile.py

Starts `python -m app.serve` on 127.0.0.1 with the shipped model on the CPU, sends each case
(one at a time, bounded), checks /healthz after each, then times a SIGTERM with 16 requests
queued. Prints a table: case, status, seconds, and whether the server was still up.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SMEAR = ROOT / "tests" / "data" / "blood-cell-detection" / "images" / "image-2.png"


def png(width: int, height: int, fill: int = 200) -> bytes:
    """A real RGB PNG of any size, built row by row (no full array in memory)."""
    row = b"\0" + bytes([fill]) * (3 * width)
    compressor = zlib.compressobj(9)
    data = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()

    def chunk(kind: bytes, payload: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + payload))
        return struct.pack(">I", len(payload)) + kind + payload + crc

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")
    )


def start(port: int, extra: dict | None = None) -> subprocess.Popen:
    env = {
        **os.environ,
        "BLOODSEG_PROVIDERS": '["CPUExecutionProvider"]',
        "BLOODSEG_HOST": "127.0.0.1",
        "BLOODSEG_PORT": str(port),
        "BLOODSEG_RELOAD_TOKEN": "secret",
        **(extra or {}),
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "app.serve"], cwd=ROOT, env=env, stderr=subprocess.DEVNULL
    )
    base = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                return server
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError("server not ready")


def chunked_upload(port: int, mebibytes: int) -> tuple[int, float]:
    """Stream a multipart image part of `mebibytes` MiB with no Content-Length."""
    part = b'--b\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n\r\n'
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(
            b"POST /segment HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
            b"Content-Type: multipart/form-data; boundary=b\r\n\r\n"
            + f"{len(part):x}\r\n".encode()
            + part
            + b"\r\n"
        )
        block = b"100000\r\n" + b"x" * (1 << 20) + b"\r\n"
        sent = 0
        try:
            for _ in range(mebibytes):
                sock.sendall(block)
                sent += 1
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = sock.recv(4096)
    return int(answer.split(b" ")[1]), sent


def main() -> int:
    port = 18000 + os.getpid() % 1000
    base = f"http://127.0.0.1:{port}"
    server = start(port)
    smear = SMEAR.read_bytes()
    # built before the clock starts: only the server's answer is timed
    strip, tower, square = png(100_000, 1), png(4, 40_000), png(790, 790)
    needle = png(1, 40_000_000)
    cases = [
        ("1x100000 PNG", lambda: post(base, strip)),
        ("40000x4 PNG", lambda: post(base, tower)),
        ("256x256, rbc_diameter=2.2", lambda: post(base, smear, {"rbc_diameter": 2.2})),
        ("790x790, scale=8", lambda: post(base, square, {"scale": 8})),
        (f"1x40,000,000 PNG ({len(needle) // 1000} KB)", lambda: post(base, needle)),
        ("chunked 1 GiB upload", lambda: chunked_upload(port, 1024)[0]),
        (
            "non-ASCII bearer token",
            lambda: (
                httpx.post(
                    f"{base}/model/reload",
                    headers={"Authorization": "Bearer s\xe9cret".encode("latin-1")},
                ).status_code
            ),
        ),
        ("1 MB X-Request-ID", lambda: raw_get(port, b"X-Request-ID: " + b"a" * 1_000_000)),
        ("16 MB header", lambda: raw_get(port, b"X-Pad: " + b"a" * 16_000_000)),
    ]
    print(f"{'case':32} {'status':>6} {'seconds':>8}  server up")
    for name, run in cases:
        started = time.perf_counter()
        try:
            status = run()
        except Exception as error:  # a failed case must not stop the probe
            status = f"error {type(error).__name__}"
        seconds = time.perf_counter() - started
        up = httpx.get(f"{base}/healthz", timeout=5).status_code == 200
        print(f"{name:32} {status!s:>6} {seconds:8.2f}  {up}")
    server.terminate()
    server.wait(timeout=60)

    server = start(port)
    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (1024, 1024, 3), np.uint8)).save(buffer, format="PNG")
    big = buffer.getvalue()
    threads = [
        threading.Thread(target=lambda: quiet_post(base, big), daemon=True) for _ in range(16)
    ]
    for thread in threads:
        thread.start()
    time.sleep(2)  # a probe, not a test: give the clients time to be queued
    started = time.perf_counter()
    server.send_signal(signal.SIGTERM)
    server.wait(timeout=120)
    print(f"{'SIGTERM, 16 requests queued':32} {'exit':>6} {time.perf_counter() - started:8.2f}")
    return 0


def post(base: str, data: bytes, params: dict | None = None) -> int:
    response = httpx.post(
        f"{base}/segment", params=params, files={"image": ("a.png", data)}, timeout=120
    )
    return response.status_code


def quiet_post(base: str, data: bytes) -> None:
    with contextlib.suppress(httpx.TransportError):
        post(base, data, {"include": ""})


def raw_get(port: int, header: bytes) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + header + b"\r\n\r\n")
        return int(sock.recv(4096).split(b" ")[1])


if __name__ == "__main__":
    raise SystemExit(main())
