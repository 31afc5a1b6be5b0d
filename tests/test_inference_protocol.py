"""The Open Inference Protocol (KServe V2) over real HTTP, driven by the real tritonclient."""

import base64
import json

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from tests.conftest import FIXTURE_BCCD, fixture_image, running_server

pytestmark = pytest.mark.slow

PNG = fixture_image()
JPEG = (FIXTURE_BCCD / "JPEGImages" / "BloodImage_00000.jpg").read_bytes()


@pytest.fixture(scope="module")
def server():
    with running_server() as base:
        yield base


@pytest.fixture(scope="module")
def client(server):
    client = triton.InferenceServerClient(url=server.removeprefix("http://"))
    yield client
    client.close()


def segment(base: str, data: bytes, **params) -> dict:
    files = {"image": ("a", data)}
    return httpx.post(f"{base}/segment?include=", params=params, files=files, timeout=60).json()


def image_input(data: bytes, binary: bool = True) -> triton.InferInput:
    tensor = triton.InferInput("image", [1], "BYTES")
    if binary:
        tensor.set_data_from_numpy(np.array([data], dtype=np.object_), binary_data=True)
    else:  # JSON: BYTES travel as base64 strings
        tensor.set_data_from_numpy(np.array([base64.b64encode(data)], dtype=np.object_), False)
    return tensor


def test_health_and_metadata(client):
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("bloodseg")
    assert not client.is_model_ready("nope")
    metadata = client.get_model_metadata("bloodseg")
    assert metadata["inputs"] == [{"name": "image", "datatype": "BYTES", "shape": [1]}]
    assert [o["name"] for o in metadata["outputs"]] == ["counts", "mask", "instances", "cells"]
    assert client.get_server_metadata()["extensions"] == ["binary_tensor_data"]


@pytest.mark.parametrize(
    "data, params", [(PNG, {}), (JPEG, {"rbc_diameter": 104})], ids=["png", "jpeg"]
)
def test_infer_matches_segment(client, server, data, params):
    result = client.infer("bloodseg", [image_input(data)], parameters=params or None)
    expected = segment(server, data, **params)
    counts = result.as_numpy("counts")
    classes = result.get_output("counts")["parameters"]["classes"].split(",")
    assert dict(zip(classes, counts.tolist(), strict=True)) == expected["counts"]
    mask, instances = result.as_numpy("mask"), result.as_numpy("instances")
    size = (expected["image"]["height"], expected["image"]["width"])
    assert mask.shape == instances.shape == size and mask.dtype == np.uint8
    cells = json.loads(result.as_numpy("cells")[0])
    assert cells == expected["cells"]
    assert instances.max() == len(cells) and set(np.unique(mask)) <= {0, 1, 2, 3}
    parameters = result.get_response()["parameters"]
    assert parameters["scale"] == expected["scale"]
    assert parameters["scale_source"] == ("given" if params else "estimated")
    assert parameters["field_of_view"] == expected["field_of_view"] == 1.0
    sizes = expected["rbc_sizes"]
    assert parameters["rbc_median_diameter_px"] == sizes["median_diameter_px"]
    assert parameters["rbc_diameter_cv"] == sizes["diameter_cv"]
    assert parameters["warnings"] == ",".join(w["code"] for w in expected["warnings"])


def test_json_inputs_and_outputs_give_the_same_counts(client, server):
    outputs = [triton.InferRequestedOutput("counts", binary_data=False)]
    result = client.infer("bloodseg", [image_input(PNG, binary=False)], outputs=outputs)
    assert result.get_output("counts")["data"] == list(segment(server, PNG)["counts"].values())
    assert result.get_output("mask") is None  # only what was asked for


def test_errors_follow_the_protocol(client, server):
    with pytest.raises(InferenceServerException, match="not found"):
        client.infer("nope", [image_input(PNG)])
    with pytest.raises(InferenceServerException, match="not a recognised image"):
        client.infer("bloodseg", [image_input(b"not an image")])
    for body, status in [
        (b"{not json", 400),
        (json.dumps({"inputs": [{"name": "image", "datatype": "FP32", "shape": [1]}]}), 400),
        (json.dumps({"inputs": [], "outputs": [{"name": "heatmap"}]}), 400),
    ]:
        response = httpx.post(f"{server}/v2/models/bloodseg/infer", content=body)
        assert response.status_code == status and isinstance(response.json()["error"], str)
