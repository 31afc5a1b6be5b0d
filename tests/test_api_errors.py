"""Every bad input gets its 4xx with a JSON body, and the server keeps serving."""

import numpy as np
import pytest
from PIL import Image

from tests.conftest import (
    assert_error,
    encode,
    fixture_image,
    make_client,
    png_claiming,
    wait_ready,
)

GOOD = fixture_image("image-100.png")


def encode_noise(height: int, width: int) -> bytes:
    noise = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return encode(Image.fromarray(noise), "PNG")


def encode_flat(height: int, width: int) -> bytes:
    return encode(Image.new("RGB", (width, height), (200, 180, 190)), "PNG")


def post_image(client, data: bytes, query: str = ""):
    return client.post(f"/segment{query}", files={"image": ("a.png", data, "image/png")})


@pytest.mark.parametrize(
    "data, code",
    [
        (b"", "unsupported_image"),
        (b"just some text", "unsupported_image"),
        (GOOD[:400], "unsupported_image"),
        (b"%PDF-1.7\n" + b"0" * 100, "unsupported_image"),
    ],
    ids=["empty", "wrong-magic", "truncated", "pdf"],
)
def test_undecodable_uploads_are_415(client, data, code):
    response = post_image(client, data)
    assert_error(response, 415, code)
    assert "object at 0x" not in response.json()["error"]["message"]


def test_decompression_bomb_is_413(client):
    bomb = png_claiming(60_000, 60_000)
    assert len(bomb) < 200
    assert_error(post_image(client, bomb), 413, "image_too_large")


@pytest.mark.parametrize(
    "query, files",
    [
        ("", None),
        ("?include=pdf", "image"),
        ("?scale=-1", "image"),
        ("?scale=abc", "image"),
        ("?scale=1&rbc_diameter=50", "image"),
    ],
    ids=["missing-image", "bad-include", "negative-scale", "text-scale", "both-scales"],
)
def test_invalid_requests_are_422(client, query, files):
    response = client.post(
        f"/segment{query}", files={files: ("a.png", GOOD, "image/png")} if files else None
    )
    assert_error(response, 422, "invalid_include" if "include" in query else "invalid_request")


@pytest.mark.parametrize(
    "data, query, status, code",
    [
        # the probe's cases: a few hundred bytes that used to hold the inference slot for minutes
        (encode_flat(1, 100_000), "", 422, "degenerate_image"),
        (encode_flat(40_000, 4), "", 422, "degenerate_image"),
        (png_claiming(40_000_000, 1), "", 422, "degenerate_image"),  # was a 500 (114 GiB pad)
        (GOOD, "?rbc_diameter=2.2", 422, "invalid_scale"),  # resampling x24
        (encode_flat(790, 790), "?scale=8", 413, "image_too_large"),  # 6320x6320: 1089 tiles
        (encode_flat(8, 8), "", 422, "degenerate_image"),
        (encode_flat(300, 300), "?scale=0.04", 422, "degenerate_image"),  # 12x12 once resampled
    ],
    ids=["1x100000", "40000x4", "1x40M", "rbc-diameter-2.2", "790-scale-8", "8x8", "tiny-scale"],
)
def test_work_is_bounded_after_scaling_padding_and_tiling(client, data, query, status, code):
    response = post_image(client, data, query)
    assert_error(response, status, code)
    assert client.get("/healthz").status_code == 200


def test_the_work_budget_counts_tiles_not_upload_bytes():
    """A 256x256 image is one tile; at scale 2 it is nine (overlapping) tiles."""
    with make_client(max_work_pixels=4 * 256 * 256) as small:
        wait_ready(small)
        assert post_image(small, GOOD, "?include=").status_code == 200
        response = post_image(small, GOOD, "?scale=2&include=")
        assert_error(response, 413, "image_too_large")
        assert "pixels of network work" in response.json()["error"]["message"]


def test_unknown_route_is_a_json_404(client):
    assert_error(client.get("/nope"), 404, "not_found")


def test_oversized_upload_is_413_and_the_server_keeps_serving():
    with make_client(max_upload_bytes=300_000, max_pixels=100_000) as small:
        wait_ready(small)
        large = encode_noise(600, 600)
        assert len(large) > 300_000 > len(GOOD)
        assert_error(post_image(small, large), 413, "upload_too_large")
        assert_error(post_image(small, encode_flat(400, 300)), 413, "image_too_large")
        assert post_image(small, GOOD).status_code == 200


def test_a_request_past_its_deadline_is_504():
    with make_client(request_timeout_s=0.001) as hurried:
        wait_ready(hurried)
        response = post_image(hurried, GOOD)
        assert_error(response, 504, "timeout")
        assert "0.001 s" in response.json()["error"]["message"]


def test_oversized_header_block_is_431(client):
    response = client.get("/healthz", headers={"X-Padding": "x" * 20_000})
    assert_error(response, 431, "headers_too_large")


def test_malformed_multipart_is_400(client):
    response = client.post(
        "/segment", content=b"abc", headers={"Content-Type": "multipart/form-data"}
    )
    assert_error(response, 400, "bad_request")
    assert "400" in client.get("/openapi.json").json()["paths"]["/segment"]["post"]["responses"]


def test_a_body_without_content_length_is_refused_past_the_limit():
    """(That reading stops at the limit is shown over a real socket in test_server_process.)"""

    def body():
        for _ in range(4):
            yield b"x" * (1 << 20)

    with make_client(max_upload_bytes=1 << 20) as small:
        wait_ready(small)
        response = small.post(
            "/segment", content=body(), headers={"Content-Type": "multipart/form-data; boundary=b"}
        )
    assert "content-length" not in response.request.headers
    assert_error(response, 413, "upload_too_large")


def test_not_ready_is_503_with_retry_after():
    client = make_client()  # lifespan not started: no model loaded yet
    for path in ("/readyz", "/model"):
        response = client.get(path)
        assert_error(response, 503, "not_ready")
        assert response.headers["Retry-After"]
    assert_error(post_image(client, GOOD), 503, "not_ready")
    assert client.get("/healthz").json() == {"status": "ok"}


def test_a_missing_model_keeps_the_service_alive_and_not_ready(tmp_path):
    from fastapi.testclient import TestClient

    from app.core.config import Settings
    from app.main import create_app
    from tests.conftest import wait_until

    app = create_app(Settings(model_dir=tmp_path))
    with TestClient(app) as broken:
        wait_until(lambda: app.state.store.last_error is not None, what="a load error")
        response = broken.get("/readyz")
        assert_error(response, 503, "not_ready")
        message = response.json()["error"]["message"]
        assert "<model_dir> holds neither" in message and str(tmp_path) not in message
        assert broken.get("/healthz").status_code == 200


def test_an_unhandled_error_is_a_json_500_that_keeps_the_request_id(client, monkeypatch):
    from app.api import segmentation

    def explode(*args, **kwargs):
        raise RuntimeError("injected fault")

    # injected fault: nothing a client sends can make the pipeline raise an unexpected error
    monkeypatch.setattr(segmentation, "segment_upload", explode)
    response = client.post(
        "/segment", files={"image": ("a.png", GOOD)}, headers={"X-Request-ID": "boom-1"}
    )
    assert_error(response, 500, "internal_error")
    assert response.headers["X-Request-ID"] == "boom-1"
    assert "injected" not in response.text
    metrics = client.get("/metrics").text
    assert 'bloodseg_requests_total{method="POST",route="/segment",status="500"}' in metrics


def test_png_response_of_a_bad_upload_is_still_json(client):
    response = client.post(
        "/segment", files={"image": ("a.png", b"nope")}, headers={"Accept": "image/png"}
    )
    assert_error(response, 415, "unsupported_image")
