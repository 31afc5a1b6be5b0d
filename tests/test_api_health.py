"""Readiness, model description, metrics and request ids."""

from tests.conftest import FIXTURES

FIXTURE_TXL = FIXTURES / "txl-pbc"


def test_ready_and_model_description(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz").json()
    model = client.get("/model").json()
    assert ready["model"] == f"{model['name']}/{model['version']}"
    assert model["provider"] == "CPUExecutionProvider"
    assert model["onnx_inputs"][0]["shape"][-1] == 3
    assert [c["name"] for c in model["classes"]] == ["background", "rbc", "wbc", "platelet"]
    assert model["classes"][3]["color"] and model["output"]["channels"][-1] == "centre"
    assert model["rbc_diameter_px"] > 0 and model["counting"]["method"]


def test_metrics_counters_move(client):
    def segment_ok_count() -> float:
        for line in client.get("/metrics").text.splitlines():
            if line.startswith(
                'bloodseg_requests_total{method="POST",route="/segment",status="200"}'
            ):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    def sample(name: str) -> float:
        for line in client.get("/metrics").text.splitlines():
            if line.startswith(name + " "):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    before = segment_ok_count()
    batches = sample("bloodseg_inference_batch_tiles_count")
    queued = sample("bloodseg_inference_queue_duration_seconds_count")
    labels = ("rbc", "wbc", "platelet")
    cells = {n: sample(f'bloodseg_cells_total{{label="{n}"}}') for n in labels}
    # a BCCD image (TXL-PBC's copy): two platelets are boxed in it
    data = (
        FIXTURE_TXL / "images" / "train" / "e980dd0e-c7cb-5990-ac8a-e3384c2b2d71.jpg"
    ).read_bytes()
    counts = client.post(
        "/segment?include=&rbc_diameter=104", files={"image": ("a.jpg", data, "image/jpeg")}
    ).json()["counts"]
    assert segment_ok_count() == before + 1
    assert counts["platelet"] >= 1
    for name in labels:
        assert sample(f'bloodseg_cells_total{{label="{name}"}}') == cells[name] + counts[name]
    # the request's tiles went through the network stage: batches of them, one queue wait
    assert sample("bloodseg_inference_batch_tiles_count") > batches
    assert sample("bloodseg_inference_queue_duration_seconds_count") == queued + 1
    assert sample("bloodseg_inference_pending_tiles") == 0
    text = client.get("/metrics").text
    for name in (
        'bloodseg_stage_duration_seconds_bucket{le="0.001",stage="inference"}',
        "bloodseg_image_pixels_count",
        'bloodseg_cells_total{label="rbc"}',
        "bloodseg_model_info{",
        "bloodseg_model_ready 1.0",
    ):
        assert name in text


def test_request_id_is_echoed(client):
    response = client.get("/healthz", headers={"X-Request-ID": "abc-123"})
    assert response.headers["X-Request-ID"] == "abc-123"
    assert len(client.get("/healthz").headers["X-Request-ID"]) == 32


def test_openapi_documents_segment(client):
    schema = client.get("/openapi.json").json()
    operation = schema["paths"]["/segment"]["post"]
    assert {"413", "415", "422", "503"} <= set(operation["responses"])
    assert client.get("/docs").status_code == 200


def test_model_description_shows_no_paths_or_machine_details(client, shipped_model_dir):
    text = client.get("/model").text
    model = client.get("/model").json()
    assert str(shipped_model_dir) not in text and "/work" not in text and "../" not in text
    assert "directory" not in model and "run_dir" not in model["training"]
    assert {d["name"] for d in model["datasets"]} == {"blood-cell-detection", "txl-pbc"}
    assert model["training"]["seed"] == 7 and model["fallback"] is None


def test_docs_load_nothing_from_other_hosts(client):
    import re

    for page in ("/docs", "/redoc"):
        html = client.get(page).text
        urls = re.findall(r"""(?:src|href)=["']([^"']+)""", html)
        assert urls and all(u.startswith("/docs-assets/") for u in urls), urls
        for url in urls:
            assert client.get(url).status_code == 200
    assert "https://" not in client.get("/docs").text


def test_docs_can_be_switched_off():
    from tests.conftest import make_client

    with make_client(docs_enabled=False) as bare:
        assert bare.get("/docs").status_code == 404
        assert bare.get("/docs-assets/swagger-ui.css").status_code == 404
        assert bare.get("/openapi.json").status_code == 200


def test_openapi_documents_what_routes_really_return(client):
    paths = client.get("/openapi.json").json()["paths"]
    assert set(paths["/metrics"]["get"]["responses"]["200"]["content"]) == {"text/plain"}
    assert {"401", "403", "409"} <= set(paths["/model/reload"]["post"]["responses"])
    assert {"400", "413", "415", "422", "503", "504"} <= set(paths["/segment"]["post"]["responses"])
    assert "image/png" in paths["/segment"]["post"]["responses"]["200"]["content"]


def test_metrics_labels_stay_bounded_whatever_clients_send(client):
    for index in range(5):
        client.request(f"BREW{index}", f"/nope-{index}")
    text = client.get("/metrics").text
    assert "BREW" not in text and "nope" not in text
    assert 'bloodseg_requests_total{method="other",route="unmatched",status="404"}' in text
