"""Publishing is atomic: a version appears whole or not at all, and CURRENT moves last."""

import hashlib
import json

import pytest

from app.inference.metadata import resolve_model_dir
from training.publish import PublishError, publish


def make_export(path, version="1.0.0", onnx=b"fake onnx bytes", sha=None):
    path.mkdir(parents=True)
    (path / "model.onnx").write_bytes(onnx)
    metadata = {
        "name": "bloodseg",
        "version": version,
        "classes": [{"id": 0, "name": "background", "color": [0, 0, 0]}],
        "input": {},
        "output": {"channels": ["background"]},
        "rbc_diameter_px": 50.0,
        "counting": {},
        "onnx_sha256": sha or hashlib.sha256(onnx).hexdigest(),
    }
    (path / "model.json").write_text(json.dumps(metadata))
    return path


def test_publish_writes_version_and_moves_pointer(tmp_path):
    models = tmp_path / "models"
    publish(make_export(tmp_path / "a", "1.0.0"), models)
    publish(make_export(tmp_path / "b", "1.1.0"), models)
    assert resolve_model_dir(models / "bloodseg") == models / "bloodseg" / "1.1.0"
    assert (models / "bloodseg" / "1.0.0" / "model.onnx").read_bytes() == b"fake onnx bytes"
    assert not [p for p in (models / "bloodseg").iterdir() if p.name.startswith(".")]


def test_existing_version_is_never_overwritten(tmp_path):
    models = tmp_path / "models"
    publish(make_export(tmp_path / "a", "1.0.0"), models)
    with pytest.raises(PublishError, match="immutable"):
        publish(make_export(tmp_path / "b", "1.0.0", onnx=b"other"), models)
    assert (models / "bloodseg" / "1.0.0" / "model.onnx").read_bytes() == b"fake onnx bytes"


def test_checksum_mismatch_publishes_nothing(tmp_path):
    models = tmp_path / "models"
    publish(make_export(tmp_path / "a", "1.0.0"), models)
    with pytest.raises(PublishError, match="sha256"):
        publish(make_export(tmp_path / "b", "2.0.0", sha="0" * 64), models)
    assert sorted(p.name for p in (models / "bloodseg").iterdir()) == ["1.0.0", "CURRENT"]
    assert (models / "bloodseg" / "CURRENT").read_text().strip() == "1.0.0"


def test_failed_copy_leaves_no_partial_version(tmp_path, monkeypatch):
    import training.publish as module

    def broken_copy(src, dst):
        raise OSError("disk full")  # injected: a fault the test cannot cause for real

    monkeypatch.setattr(module.shutil, "copyfile", broken_copy)
    with pytest.raises(OSError):
        publish(make_export(tmp_path / "a"), tmp_path / "models")
    assert list((tmp_path / "models" / "bloodseg").iterdir()) == []
