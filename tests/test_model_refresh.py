"""A running server adopts new model versions without failing a request, and refuses bad ones."""

import json
import shutil
import threading
import time

import httpx
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from tests.conftest import BCD
from tests.test_server_process import running_server
from training.publish import publish, write_atomically

TOKEN = "test-reload-token"


@pytest.fixture
def models_root(tmp_path, shipped_model_dir):
    """A models directory holding a copy of the shipped model as version 1.0.0-test."""
    publish(version_copy(shipped_model_dir, tmp_path / "v1", "1.0.0-test"), tmp_path / "models")
    return tmp_path / "models" / "bloodseg"


def version_copy(source, target, version, onnx_bytes=None, sha=None):
    """An export dir: the shipped model under another version (optionally other ONNX bytes)."""
    import hashlib

    target.mkdir(parents=True)
    data = onnx_bytes if onnx_bytes is not None else (source / "model.onnx").read_bytes()
    (target / "model.onnx").write_bytes(data)
    metadata = json.loads((source / "model.json").read_text())
    metadata["version"] = version
    metadata["onnx_sha256"] = sha or hashlib.sha256(data).hexdigest()
    (target / "model.json").write_text(json.dumps(metadata))
    return target


def install_unchecked(export_dir, root, version):
    """Put a version in place and point CURRENT at it, bypassing publish's checks."""
    shutil.copytree(export_dir, root / version)
    write_atomically(root / "CURRENT", version + "\n")


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


def served_version(base: str) -> str:
    return httpx.get(f"{base}/model").json()["version"]


def wait_for(predicate, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.2)


def test_publish_under_load_then_reject_broken_models(models_root, tmp_path, shipped_model_dir):
    env = {
        "BLOODSEG_MODEL_DIR": str(models_root),
        "BLOODSEG_WATCH_INTERVAL_S": "0.5",
        "BLOODSEG_RELOAD_TOKEN": TOKEN,
    }
    with running_server(env) as base:
        assert served_version(base) == "1.0.0-test"
        image = (BCD / "images" / "image-2.png").read_bytes()
        statuses, stop = [], threading.Event()

        def client_loop() -> None:
            with httpx.Client(base_url=base, timeout=60) as client:
                for _ in range(2000):  # bounded: stops by itself
                    if stop.is_set():
                        return
                    response = client.post(
                        "/segment", params={"include": ""}, files={"image": ("a.png", image)}
                    )
                    statuses.append((response.status_code, response.json()["model"]["version"]))

        worker = threading.Thread(target=client_loop)
        worker.start()
        try:
            time.sleep(1.0)
            publish(
                version_copy(shipped_model_dir, tmp_path / "v2", "2.0.0-test"), models_root.parent
            )
            wait_for(lambda: served_version(base) == "2.0.0-test")
            served_before = len(statuses)
            wait_for(lambda: len(statuses) > served_before + 3)
        finally:
            stop.set()
            worker.join(timeout=120)
        assert statuses and all(status == 200 for status, _ in statuses)
        assert {version for _, version in statuses} == {"1.0.0-test", "2.0.0-test"}

        good = version_copy(shipped_model_dir, tmp_path / "x", "unused")
        broken = {
            "corrupt": version_copy(
                shipped_model_dir,
                tmp_path / "c",
                "3.0.0-corrupt",
                onnx_bytes=np.random.default_rng(0).bytes(5000),
            ),
            "wrong-shape": version_copy(
                shipped_model_dir, tmp_path / "w", "3.0.0-shape", onnx_bytes=wrong_shape_onnx()
            ),
            "sha-mismatch": version_copy(
                shipped_model_dir,
                tmp_path / "s",
                "3.0.0-sha",
                onnx_bytes=(good / "model.onnx").read_bytes(),
                sha="0" * 64,
            ),
        }
        for failures, (kind, export_dir) in enumerate(broken.items(), start=1):
            version = json.loads((export_dir / "model.json").read_text())["version"]
            install_unchecked(export_dir, models_root, version)
            wait_for(lambda: httpx.get(f"{base}/model").json()["last_load_error"] is not None)
            described = httpx.get(f"{base}/model").json()
            assert described["version"] == "2.0.0-test", kind
            assert version in described["last_load_error"], kind
            metrics = httpx.get(f"{base}/metrics").text
            assert f"bloodseg_model_load_failures_total {float(failures)}" in metrics, kind
            response = httpx.post(f"{base}/segment", files={"image": ("a.png", image)}, timeout=60)
            assert response.status_code == 200
            assert response.json()["model"]["version"] == "2.0.0-test"
            write_atomically(models_root / "CURRENT", "2.0.0-test\n")
            wait_for(lambda: httpx.get(f"{base}/model").json()["last_load_error"] is None)

        reload = f"{base}/model/reload"
        assert httpx.post(reload).status_code == 401
        wrong = httpx.post(reload, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 403 and wrong.json()["error"]["code"] == "forbidden"
        write_atomically(models_root / "CURRENT", "3.0.0-corrupt\n")
        rejected = httpx.post(reload, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60)
        assert (
            rejected.status_code == 409 and "3.0.0-corrupt" in rejected.json()["error"]["message"]
        )
        write_atomically(models_root / "CURRENT", "2.0.0-test\n")
        fine = httpx.post(reload, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60)
        assert fine.status_code == 200 and fine.json()["version"] == "2.0.0-test"
        assert onnx.load_from_string(wrong_shape_onnx()).graph.input[0].name == "image"
