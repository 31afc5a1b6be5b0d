"""Loading a model: the CURRENT pointer stays inside the model root, and a GPU that fails its
warm-up falls back to the CPU instead of leaving the service unready."""

import pytest

from app.core.config import Settings
from app.core.model_store import ModelStore, load_model
from app.inference import runner
from app.inference.metadata import resolve_model_dir
from app.inference.runner import OnnxSegmenter, RunnerOptions


@pytest.mark.parametrize("pointer", ["/etc", "../../x", "1.1.0/../..", "..", "", "a b", "x" * 200])
def test_current_must_name_a_version_beside_it(tmp_path, pointer):
    (tmp_path / "CURRENT").write_text(pointer + "\n")
    with pytest.raises(FileNotFoundError, match="must name a version directory"):
        resolve_model_dir(tmp_path)


def test_current_may_not_reach_out_through_a_symlink(tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    root = tmp_path / "models"
    root.mkdir()
    (root / "2.0.0").symlink_to(outside)
    (root / "CURRENT").write_text("2.0.0\n")
    with pytest.raises(FileNotFoundError, match="outside"):
        resolve_model_dir(root)


def test_a_version_name_resolves_inside_the_root(shipped_model_dir):
    assert resolve_model_dir(shipped_model_dir.parent) == shipped_model_dir


class WarmUpFailsOnGpu(OnnxSegmenter):
    """Injected fault: a GPU session whose kernels do not run (as on a GPU generation this
    ONNX Runtime build has no kernels for). No GPU here, so it cannot be caused for real."""

    def __init__(self, model_dir, metadata, options) -> None:
        super().__init__(model_dir, metadata, options)
        if "CUDAExecutionProvider" in options.providers:
            self.provider = "CUDAExecutionProvider"

    def run_batch(self, batch):
        if self.provider == "CUDAExecutionProvider":
            raise RuntimeError("CUDA error: no kernel image is available for execution")
        return super().run_batch(batch)


def test_a_gpu_that_fails_its_warm_up_falls_back_to_cpu(shipped_model_dir, monkeypatch):
    import app.core.model_store as store_module

    monkeypatch.setattr(store_module, "OnnxSegmenter", WarmUpFailsOnGpu)
    loaded = load_model(
        shipped_model_dir,
        RunnerOptions(providers=("CUDAExecutionProvider", "CPUExecutionProvider")),
    )
    assert loaded.segmenter.provider == "CPUExecutionProvider"
    assert "no kernel image" in loaded.fallback
    assert loaded.fallback.startswith("CUDAExecutionProvider failed its warm-up")


def test_the_store_serves_the_fallback_and_says_so(shipped_model_dir, monkeypatch):
    import app.core.model_store as store_module
    from app.core.metrics import registry

    monkeypatch.setattr(store_module, "OnnxSegmenter", WarmUpFailsOnGpu)
    store = ModelStore(Settings(model_dir=shipped_model_dir.parent))
    assert store.refresh()
    assert store.current.fallback and store.last_error is None
    assert registry.get_sample_value("bloodseg_model_cpu_fallback") == 1.0


def test_a_cpu_failure_is_not_retried(shipped_model_dir, monkeypatch):
    def broken(self, batch):
        raise RuntimeError("broken kernels")

    monkeypatch.setattr(runner.OnnxSegmenter, "run_batch", broken)
    with pytest.raises(Exception, match="broken kernels"):
        load_model(shipped_model_dir, RunnerOptions(providers=("CPUExecutionProvider",)))


def test_load_errors_shown_to_clients_hide_the_model_path(tmp_path):
    store = ModelStore(Settings(model_dir=tmp_path))
    assert not store.refresh()
    assert store.last_error.startswith("<model_dir> holds neither")
    assert str(tmp_path) not in store.last_error
