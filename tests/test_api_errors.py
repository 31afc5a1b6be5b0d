"""Every bad input gets its 4xx with a JSON body, and the server keeps serving."""

import numpy as np
import pytest

from tests.conftest import BCD, make_client, wait_ready
from tests.test_decode import encode, png_claiming

GOOD = (BCD / "images" / "image-100.png").read_bytes()


def assert_error(response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["error"]["code"] == code
    assert response.json()["error"]["message"]


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
    response = client.post("/segment", files={"image": ("x.png", data, "image/png")})
    assert_error(response, 415, code)


def test_decompression_bomb_is_413(client):
    bomb = png_claiming(60_000, 60_000)
    assert len(bomb) < 200
    response = client.post("/segment", files={"image": ("bomb.png", bomb, "image/png")})
    assert_error(response, 413, "image_too_large")


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


def test_unknown_route_is_a_json_404(client):
    assert_error(client.get("/nope"), 404, "not_found")


def test_oversized_upload_is_413_and_the_server_keeps_serving():
    with make_client(max_upload_bytes=300_000, max_pixels=100_000) as small:
        wait_ready(small)
        large = encode_noise(600, 600)
        assert len(large) > 300_000 > len(GOOD)
        assert_error(
            small.post("/segment", files={"image": ("big.png", large, "image/png")}),
            413,
            "upload_too_large",
        )
        assert_error(
            small.post(
                "/segment", files={"image": ("tall.png", encode_flat(400, 300), "image/png")}
            ),
            413,
            "image_too_large",
        )
        assert_error(
            small.post("/segment?scale=4", files={"image": ("a.png", GOOD, "image/png")}),
            413,
            "image_too_large",
        )
        assert (
            small.post("/segment", files={"image": ("a.png", GOOD, "image/png")}).status_code == 200
        )


def encode_noise(height: int, width: int) -> bytes:
    from PIL import Image

    noise = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return encode(Image.fromarray(noise), "PNG")


def encode_flat(height: int, width: int) -> bytes:
    from PIL import Image

    return encode(Image.new("RGB", (width, height), (200, 180, 190)), "PNG")


def test_not_ready_is_503_with_retry_after(tmp_path):
    client = make_client()  # lifespan not started: no model loaded yet
    for path in ("/readyz", "/model"):
        response = client.get(path)
        assert_error(response, 503, "not_ready")
        assert response.headers["Retry-After"]
    response = client.post("/segment", files={"image": ("a.png", GOOD, "image/png")})
    assert_error(response, 503, "not_ready")
    assert client.get("/healthz").json() == {"status": "ok"}


def test_a_missing_model_keeps_the_service_alive_and_not_ready(tmp_path):
    from fastapi.testclient import TestClient

    from app.core.config import Settings
    from app.main import create_app

    with TestClient(create_app(Settings(model_dir=tmp_path))) as broken:
        import time

        time.sleep(0.5)
        response = broken.get("/readyz")
        assert_error(response, 503, "not_ready")
        assert str(tmp_path) in response.json()["error"]["message"]
        assert broken.get("/healthz").status_code == 200
