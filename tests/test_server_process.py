"""The service as a real process (`python -m app.serve`) on 127.0.0.1, over real sockets."""

import contextlib
import json
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.conftest import (
    FIXTURE_BCD,
    ROOT,
    SHIPPED_MODEL,
    encode,
    fixture_image,
    running_server,
    start_server,
    wait_http_ready,
    wait_until,
)

pytestmark = pytest.mark.slow


def raw_exchange(base: str, head: bytes, chunks=(), timeout: float = 30.0) -> tuple[bytes, int]:
    """Send a request head, then body chunks until the server answers; returns the answer
    and the number of body bytes sent before it came."""
    host, port = base.removeprefix("http://").split(":")
    sent = 0
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(head)
        sock.setblocking(False)
        answer = b""
        for chunk in chunks:
            with contextlib.suppress(BlockingIOError):
                answer += sock.recv(65536)
            if answer:
                break
            try:
                sock.sendall(chunk)
                sent += len(chunk)
            except (BlockingIOError, BrokenPipeError, ConnectionResetError):
                break
        sock.setblocking(True)
        deadline = time.monotonic() + timeout
        while not complete(answer) and time.monotonic() < deadline:
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                break
            if not data:
                break
            answer += data
    return answer, sent


def complete(answer: bytes) -> bool:
    """A whole response: its head and as many body bytes as its Content-Length says."""
    head, found, body = answer.partition(b"\r\n\r\n")
    if not found:
        return False
    for line in head.lower().split(b"\r\n"):
        if line.startswith(b"content-length:"):
            return len(body) >= int(line.split(b":")[1])
    return True


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def test_the_service_process_segments_over_http():
    with running_server() as base:
        response = httpx.post(
            f"{base}/segment?include=",
            timeout=30,
            files={"image": ("a.png", fixture_image(), "image/png")},
        )
        assert response.status_code == 200
        body = response.json()
        assert body["counts"]["wbc"] == 1 and body["counts"]["rbc"] > 10
        assert "server" not in response.headers  # no software banner
        bad = httpx.post(f"{base}/segment", files={"image": ("a.png", b"nope", "image/png")})
        assert bad.status_code == 415
        assert httpx.get(f"{base}/healthz").status_code == 200
        assert_http_scores_match_offline_evaluation(base)


def assert_http_scores_match_offline_evaluation(base: str) -> None:
    """scripts/evaluate_service.py over HTTP agrees with `python -m training evaluate`."""

    def run(*args: str) -> dict:
        done = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, check=True)
        return json.loads(done.stdout)

    common = ["--data", str(FIXTURE_BCD), "--split", "all"]
    online = run("scripts/evaluate_service.py", "--url", base, *common)
    offline = run("-m", "training", "evaluate", "--model", str(SHIPPED_MODEL), *common)
    assert online["images"] == offline["images"] == 6
    for label in ("rbc", "wbc"):
        for key in ("f1", "count_mae", "count_bias", "predicted"):
            assert online[label][key] == offline[label][key], (label, key)


def test_hostile_heads_and_bodies_get_4xx_and_the_server_stays_up():
    with running_server({"BLOODSEG_MAX_UPLOAD_BYTES": str(1 << 20)}) as base:
        # a chunked body (no Content-Length) is cut off at the limit, not spooled whole
        head = (
            b"POST /segment HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
            b"Content-Type: multipart/form-data; boundary=b\r\n\r\n"
        )
        part = (
            b'--b\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n'
            b"Content-Type: image/png\r\n\r\n"
        )
        opening = f"{len(part):x}\r\n".encode() + part + b"\r\n"
        chunk = b"100000\r\n" + b"x" * 0x100000 + b"\r\n"  # 1 MiB of file per chunk
        answer, sent = raw_exchange(base, head, [opening] + [chunk] * 256)  # 256 MiB offered
        assert status_of(answer) == 413 and b"upload_too_large" in answer
        assert sent < 64 * (1 << 20)

        # a 1 MB X-Request-ID never reaches the app: the server refuses the head
        huge = (
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Request-ID: " + b"a" * 1_000_000 + b"\r\n\r\n"
        )
        answer, _ = raw_exchange(base, huge)
        assert 400 <= status_of(answer) < 500

        # a long but acceptable header: the id is not echoed, a fresh one is made instead
        response = httpx.get(f"{base}/healthz", headers={"X-Request-ID": "r" * 300})
        assert response.status_code == 200 and len(response.headers["X-Request-ID"]) == 32
        assert httpx.get(f"{base}/readyz").status_code == 200


def in_flight(base: str) -> float:
    for line in httpx.get(f"{base}/metrics").text.splitlines():
        if line.startswith("bloodseg_segment_requests_in_flight "):
            return float(line.split()[1])
    return 0.0


def test_shutdown_drains_for_a_bounded_time_with_requests_queued():
    rng = np.random.default_rng(0)
    big = encode(Image.fromarray(rng.integers(0, 256, (1024, 1024, 3), np.uint8)), "PNG")
    server, base = start_server({"BLOODSEG_SHUTDOWN_TIMEOUT_S": "1"})
    outcomes: list[str] = []
    try:
        wait_http_ready(server, base)

        def post() -> None:
            try:
                response = httpx.post(
                    f"{base}/segment?include=&scale=1", files={"image": ("a.png", big)}, timeout=120
                )
                outcomes.append(str(response.status_code))
            except httpx.TransportError:
                outcomes.append("closed")

        clients = [threading.Thread(target=post) for _ in range(16)]
        for client in clients:
            client.start()
        wait_until(lambda: in_flight(base) >= 16, 60, "16 requests admitted")
        stopping = time.monotonic()
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
        drain_s = time.monotonic() - stopping
        for client in clients:
            client.join(timeout=60)
    finally:
        if server.poll() is None:
            server.kill()
    # 16 queued images take well over 16 s here; the drain stops after 1 s plus one batch
    assert drain_s < 10, drain_s
    assert len(outcomes) == 16 and set(outcomes) <= {"200", "503", "closed"}
    assert outcomes.count("200") < 16  # the queue was not drained to the end


def metric(base: str, name: str) -> float:
    for line in httpx.get(f"{base}/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def big_png() -> bytes:
    rng = np.random.default_rng(1)
    return encode(Image.fromarray(rng.integers(0, 256, (1024, 1024, 3), np.uint8)), "PNG")


def test_past_max_queue_requests_get_503_at_once_and_health_stays_quick():
    data = big_png()
    with running_server({"BLOODSEG_MAX_QUEUE": "2"}) as base:
        answers: list[httpx.Response] = []

        def post() -> None:
            files = {"image": ("a.png", data)}
            # noise has no cells to estimate a magnification from: its scale is given
            answers.append(httpx.post(f"{base}/segment?include=&scale=1", files=files, timeout=120))

        clients = [threading.Thread(target=post) for _ in range(10)]
        for client in clients:
            client.start()
        health = [httpx.get(f"{base}/healthz", timeout=5).status_code for _ in range(5)]
        for client in clients:
            client.join(timeout=180)
        rejected = metric(base, "bloodseg_segment_rejected_total")
    statuses = sorted(a.status_code for a in answers)
    assert set(statuses) == {200, 503} and health == [200] * 5
    refused = [a for a in answers if a.status_code == 503]
    assert all(
        a.headers["Retry-After"] and a.json()["error"]["code"] == "overloaded" for a in refused
    )
    assert rejected == len(refused)


def test_a_request_whose_client_left_is_dropped_before_inference():
    data = big_png()
    small = fixture_image()
    boundary = b"xyzzy"
    body = (
        b"--"
        + boundary
        + b'\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n\r\n'
        + small
        + b"\r\n--"
        + boundary
        + b"--\r\n"
    )
    # one worker: the second request waits for it, and its client leaves meanwhile
    with running_server({"BLOODSEG_WORKERS": "1"}) as base:
        first = threading.Thread(
            target=lambda: httpx.post(
                f"{base}/segment?scale=1", files={"image": ("a", data)}, timeout=120
            )
        )
        first.start()
        wait_until(lambda: in_flight(base) >= 1, 60, "the first request running")
        host, port = base.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port))) as sock:
            sock.sendall(
                b"POST /segment HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary="
                + boundary
                + f"\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            wait_until(lambda: in_flight(base) >= 2, 60, "the second request waiting")
        first.join(timeout=120)  # the socket is closed: its client has gone
        wait_until(lambda: metric(base, "bloodseg_segment_dropped_total") == 1, 60, "the drop")
        assert in_flight(base) == 0
