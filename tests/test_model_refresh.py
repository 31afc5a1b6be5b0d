"""A running server adopts new model versions without failing a request, and refuses bad ones."""

import hashlib
import json
import shutil
import threading

import httpx
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from tests.conftest import fixture_image, running_server, wait_until
from training.publish import publish, write_atomically

pytestmark = pytest.mark.slow

TOKEN = "test-reload-token"
IMAGE = fixture_image()


def version_copy(source, target, version, onnx_bytes=None, sha=None):
    """An export dir: the shipped model (with its variants) under another version, or other
    ONNX bytes under its model.json."""
    target.mkdir(parents=True)
    data = onnx_bytes if onnx_bytes is not None else (source / "model.onnx").read_bytes()
    (target / "model.onnx").write_bytes(data)
    metadata = json.loads((source / "model.json").read_text())
    metadata["version"] = version
    metadata["onnx_sha256"] = sha or hashlib.sha256(data).hexdigest()
    if onnx_bytes is None:  # the same model: its variants come along
        for variant in metadata.get("variants", []):
            (target / variant["file"]).write_bytes((source / variant["file"]).read_bytes())
    else:  # another network: the shipped model's variants are not its own
        metadata["variants"] = []
    (target / "model.json").write_text(json.dumps(metadata))
    return target


def wrong_shape_onnx() -> bytes:
    """A valid ONNX graph that wants NCHW input with 1 channel: incompatible with model.json."""
    node = helper.make_node("Identity", ["image"], ["probs"])
    graph = helper.make_graph(
        [node],
        "wrong",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, "H", "W"])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 1, "H", "W"])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)]).SerializeToString()


@pytest.fixture(scope="module")
def refresh_server(tmp_path_factory, shipped_model_dir):
    """A server watching its own models root (shipped model as 1.0.0-test) every 0.5 s."""
    tmp = tmp_path_factory.mktemp("models")
    publish(version_copy(shipped_model_dir, tmp / "v1", "1.0.0-test"), tmp / "models")
    root = tmp / "models" / "bloodseg"
    env = {
        "BLOODSEG_MODEL_DIR": str(root),
        "BLOODSEG_WATCH_INTERVAL_S": "0.5",
        "BLOODSEG_RELOAD_TOKEN": TOKEN,
    }
    with running_server(env) as base:
        yield base, root


def described(base: str) -> dict:
    return httpx.get(f"{base}/model").json()


def load_failures(base: str) -> float:
    for line in httpx.get(f"{base}/metrics").text.splitlines():
        if line.startswith("bloodseg_model_load_failures_total "):
            return float(line.split()[1])
    raise AssertionError("no load failure counter")


def segment(base: str) -> httpx.Response:
    return httpx.post(f"{base}/segment?include=", files={"image": ("a.png", IMAGE)}, timeout=60)


def test_a_published_version_is_adopted_under_load(refresh_server, tmp_path, shipped_model_dir):
    base, root = refresh_server
    before = described(base)["version"]
    statuses, stop = [], threading.Event()

    def client_loop() -> None:
        with httpx.Client(base_url=base, timeout=60) as client:
            for _ in range(2000):  # bounded: stops by itself
                if stop.is_set():
                    return
                response = client.post(
                    "/segment", params={"include": ""}, files={"image": ("a.png", IMAGE)}
                )
                statuses.append((response.status_code, response.json()["model"]["version"]))

    worker = threading.Thread(target=client_loop)
    worker.start()
    try:
        wait_until(lambda: len(statuses) >= 2, what="requests on the old version")
        publish(version_copy(shipped_model_dir, tmp_path / "v2", "2.0.0-test"), root.parent)
        wait_until(lambda: described(base)["version"] == "2.0.0-test", what="the new version")
        served_before = len(statuses)
        wait_until(lambda: len(statuses) > served_before + 3, what="requests on the new version")
    finally:
        stop.set()
        worker.join(timeout=120)
    assert statuses and all(status == 200 for status, _ in statuses)
    assert {version for _, version in statuses} == {before, "2.0.0-test"}


def corrupt(tmp_path, source):
    junk = np.random.default_rng(0).bytes(5000)
    return "3.0.0-corrupt", version_copy(source, tmp_path / "c", "3.0.0-corrupt", onnx_bytes=junk)


def wrong_shape(tmp_path, source):
    onnx_bytes = wrong_shape_onnx()
    assert onnx.load_from_string(onnx_bytes).graph.input[0].name == "image"
    return "3.0.0-shape", version_copy(source, tmp_path / "w", "3.0.0-shape", onnx_bytes=onnx_bytes)


def sha_mismatch(tmp_path, source):
    return "3.0.0-sha", version_copy(source, tmp_path / "s", "3.0.0-sha", sha="0" * 64)


@pytest.mark.parametrize("make_broken", [corrupt, wrong_shape, sha_mismatch])
def test_a_broken_version_is_rejected_and_the_old_one_keeps_serving(
    refresh_server, tmp_path, shipped_model_dir, make_broken
):
    base, root = refresh_server
    serving = described(base)["version"]
    failures = load_failures(base)
    version, export_dir = make_broken(tmp_path, shipped_model_dir)
    shutil.copytree(export_dir, root / version)  # bypasses publish's own checks
    write_atomically(root / "CURRENT", version + "\n")
    try:
        wait_until(lambda: described(base)["last_load_error"] is not None, what="a rejection")
        description = described(base)
        assert description["version"] == serving
        assert version in description["last_load_error"]
        assert str(root) not in description["last_load_error"]
        assert load_failures(base) == failures + 1
        response = segment(base)
        assert response.status_code == 200 and response.json()["model"]["version"] == serving
    finally:
        write_atomically(root / "CURRENT", serving + "\n")
    wait_until(lambda: described(base)["last_load_error"] is None, what="recovery")


@pytest.mark.parametrize("pointer", ["/etc", "../../../../etc", "1.0.0-test/../..", "a b"])
def test_current_never_points_outside_the_model_root(refresh_server, pointer):
    base, root = refresh_server
    serving = described(base)["version"]
    write_atomically(root / "CURRENT", pointer + "\n")
    try:
        wait_until(lambda: described(base)["last_load_error"] is not None, what="a rejection")
        description = described(base)
        assert description["version"] == serving
        assert "must name a version directory" in description["last_load_error"]
        assert "/etc/model.json" not in json.dumps(description)
    finally:
        write_atomically(root / "CURRENT", serving + "\n")
    wait_until(lambda: described(base)["last_load_error"] is None, what="recovery")


def test_reload_needs_the_token_and_reports_a_rejection(
    refresh_server, tmp_path, shipped_model_dir
):
    base, root = refresh_server
    reload = f"{base}/model/reload"
    assert httpx.post(reload).status_code == 401
    wrong = httpx.post(reload, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 403 and wrong.json()["error"]["code"] == "forbidden"
    accented = httpx.post(reload, headers={"Authorization": "Bearer s\xe9cret".encode("latin-1")})
    assert accented.status_code == 403  # was a 500: compare_digest refuses non-ASCII str

    serving = described(base)["version"]
    version, export_dir = corrupt(tmp_path, shipped_model_dir)
    if not (root / version).exists():
        shutil.copytree(export_dir, root / version)
    write_atomically(root / "CURRENT", version + "\n")
    try:
        rejected = httpx.post(reload, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60)
        assert rejected.status_code == 409 and version in rejected.json()["error"]["message"]
    finally:
        write_atomically(root / "CURRENT", serving + "\n")
    fine = httpx.post(reload, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60)
    assert fine.status_code == 200 and fine.json()["version"] == serving
