"""A tiny real training run: trains, resumes, exports to ONNX, passes parity, publishes."""

import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import FIXTURE_BCCD, FIXTURE_BCD, TINY, tiny_platelet_recipe

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    from training.cli import main

    run_dir = tmp_path_factory.mktemp("run")
    args = [
        "train",
        "--data",
        str(FIXTURE_BCD),
        "--partial-rbc-data",
        str(FIXTURE_BCCD),
        "--run-dir",
        str(run_dir),
        "--max-images",
        "4",
        # the 1.x recipe: no platelets, the first dataset's scale, one pass per epoch
        "--no-platelets",
        "--train-rbc-diameter-px",
        "0",
        "--scale-range",
        "1.15",
        "--samples-per-epoch",
        "0",
        "--val-per-source",
        "0",
        *TINY,
        "--version",
        "0.0.1",
    ]
    assert main([*args, "--epochs", "1"]) == 0
    assert json.loads((run_dir / "state.json").read_text())["epochs_done"] == 1
    assert main([*args, "--epochs", "2"]) == 0  # resumes from last.keras
    return run_dir


def test_training_resumes_and_writes_its_run_directory(tiny_run):
    assert json.loads((tiny_run / "state.json").read_text())["epochs_done"] == 2
    history = (tiny_run / "history.csv").read_text().strip().splitlines()
    assert len(history) == 3  # header + one row per epoch, across the resume
    for name in ("config.json", "best.keras", "history.png", "samples.png", "metrics.json"):
        assert (tiny_run / name).stat().st_size > 0


def test_export_passes_parity_and_records_metadata(tiny_run):
    from app.inference.metadata import read_metadata
    from training.tune import candidate_grid

    metrics = json.loads((tiny_run / "metrics.json").read_text())
    assert metrics["parity"]["max_abs_diff"] <= 1e-4
    assert metrics["parity"]["argmax_agreement"] >= 0.999
    metadata = read_metadata(tiny_run / "export" / "model.json")
    assert metadata.output.channels == ["background", "rbc", "wbc", "centre"]
    assert metadata.input.size_multiple == 4 and 45 < metadata.rbc_diameter_px < 60
    assert {d["rbc_complete"] for d in metadata.datasets} == {True, False}
    assert len(metadata.datasets[0]["fingerprint"]) == 64
    assert "blood-cell-detection train split (4 images)" in metadata.training["counting_tuned_on"]
    thresholds, distances, areas = candidate_grid(metadata.rbc_diameter_px)
    assert metadata.counting.peak_threshold in thresholds
    assert metadata.counting.min_peak_distance_px in distances
    assert metadata.counting.rbc_min_area_px in areas
    from training.tune import RBC_WEIGHTS

    assert metadata.counting.class_weights.get("rbc", 1.0) in RBC_WEIGHTS
    assert "rbc_size_ratio_calibrated" in metadata.training
    for key in ("pixel_accuracy", "dice_rbc", "rbc", "wbc"):
        assert key in metadata.metrics["val:blood-cell-detection"]
    # exported simplified; a float16 variant for CUDA is kept only within its gate (this
    # barely trained model's near-tied classes often flip, and then it is dropped)
    import onnx

    ops = {n.op_type for n in onnx.load(str(tiny_run / "export" / "model.onnx")).graph.node}
    assert "ConvTranspose" in ops and not ops & {"Pad", "Slice"}
    if metadata.variants:
        [variant] = metadata.variants
        assert variant.providers == ["CUDAExecutionProvider"]
        assert variant.parity["argmax_agreement"] >= 0.999
        assert (tiny_run / "export" / variant.file).is_file()
    else:
        assert not (tiny_run / "export" / "model.fp16.onnx").exists()


def test_onnx_batch_is_dynamic(tiny_run):
    import onnxruntime as ort

    session = ort.InferenceSession(str(tiny_run / "export" / "model.onnx"))
    name = session.get_inputs()[0].name
    for batch in (1, 3):
        out = session.run(None, {name: np.zeros((batch, 64, 64, 3), np.float32)})[0]
        assert out.shape == (batch, 64, 64, 4)
        assert np.allclose(out[..., :3].sum(-1), 1.0, atol=1e-5)


def test_parity_check_rejects_an_export_that_differs(tiny_run, tmp_path, monkeypatch):
    import keras

    from training import export as export_module
    from training.export import ParityError, check_parity, export_verified
    from training.model import build_unet

    trained = keras.models.load_model(tiny_run / "best.keras")
    untrained = build_unet(4, 2)
    inputs = np.random.default_rng(0).normal(size=(2, 64, 64, 3)).astype(np.float32)
    assert export_verified(trained, tmp_path / "ok.onnx", inputs, 3).ok
    assert not check_parity(untrained, tmp_path / "ok.onnx", inputs, 3).ok
    # injected fault: the exporter writes a different network than the one being checked
    real_export = export_module.export_onnx
    monkeypatch.setattr(
        export_module, "export_onnx", lambda model, path: real_export(trained, path)
    )
    with pytest.raises(ParityError, match="ONNX differs from Keras"):
        export_verified(untrained, tmp_path / "bad.onnx", inputs, 3)
    assert not (tmp_path / "bad.onnx").exists()


def test_publish_then_evaluate_the_published_model(tiny_run, tmp_path, capsys):
    from training.cli import main

    assert (
        main(["publish", "--export-dir", str(tiny_run / "export"), "--models-dir", str(tmp_path)])
        == 0
    )
    assert (tmp_path / "bloodseg" / "CURRENT").read_text().strip() == "0.0.1"
    capsys.readouterr()
    assert (
        main(
            [
                "evaluate",
                "--model",
                str(tmp_path / "bloodseg"),
                "--data",
                str(FIXTURE_BCD),
                "--split",
                "val",
            ]
        )
        == 0
    )
    result = json.loads(capsys.readouterr().out)
    assert result["images"] == 1 and result["split"] == "val"  # 0.2 of the 6 fixture images
    assert 0.0 <= result["pixel_accuracy"] <= 1.0


def test_calibrate_derives_a_version_with_the_same_network(tiny_run, tmp_path, capsys):
    from app.inference.metadata import read_metadata
    from training.cli import main
    from training.tune import RBC_WEIGHTS

    out = tmp_path / "export"
    source = tiny_run / "export"
    args = ["calibrate", "--model", str(source), "--version", "0.0.2", "--out", str(out)]
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out)
    metadata = read_metadata(out / "model.json")
    assert metadata.version == result["version"] == "0.0.2"
    assert (out / "model.onnx").read_bytes() == (source / "model.onnx").read_bytes()
    assert metadata.counting.class_weights.get("rbc", 1.0) == result["rbc_weight"] in RBC_WEIGHTS
    assert metadata.training["derived_from"].startswith("bloodseg 0.0.1: same network")
    original = read_metadata(source / "model.json")
    # only the RBC weight moves: every threshold of the counting stays
    assert metadata.counting.model_dump(exclude={"class_weights"}) == original.counting.model_dump(
        exclude={"class_weights"}
    )
    assert "pixel_accuracy" in metadata.metrics["val:blood-cell-detection"]
    assert main(["publish", "--export-dir", str(out), "--models-dir", str(tmp_path / "m")]) == 0
    assert (tmp_path / "m" / "bloodseg" / "0.0.2" / "model.onnx").is_file()


def test_evaluate_by_source_rescores_what_model_json_holds(tiny_run, capsys):
    from app.inference.metadata import read_metadata
    from training.cli import main

    export = tiny_run / "export"
    capsys.readouterr()
    assert main(["evaluate", "--model", str(export), "--by-source"]) == 0
    result = json.loads(capsys.readouterr().out)
    recorded = read_metadata(export / "model.json").metrics
    scored = {k: v for k, v in result.items() if k.startswith("val:")}
    assert scored and scored.keys() == {k for k in recorded if k.startswith("val:")}
    for key, value in scored.items():
        value.pop("mean_inference_ms"), recorded[key].pop("mean_inference_ms")
        assert value == recorded[key]
    with pytest.raises(SystemExit, match="--data DIR or --by-source"):
        main(["evaluate", "--model", str(export)])


@pytest.fixture(scope="module")
def platelet_run(tmp_path_factory) -> Path:
    """The 2.x recipe, tiny: platelets, a YOLO dataset of several sources, a fixed number of
    samples per epoch weighted by source, a chosen training diameter, wide scale jitter."""
    from training.cli import main

    run_dir = tmp_path_factory.mktemp("platelets")
    args = [*tiny_platelet_recipe(run_dir), "--epochs", "1", "--version", "2.0.0-test"]
    assert main(args) == 0
    return run_dir


def test_the_platelet_recipe_exports_four_classes_a_size_regressor_and_per_source_scores(
    platelet_run,
):
    from app.inference.magnification import PERCENTILES, WINDOW
    from app.inference.metadata import read_metadata

    metadata = read_metadata(platelet_run / "export" / "model.json")
    assert [c.name for c in metadata.classes] == ["background", "rbc", "wbc", "platelet"]
    assert metadata.output.channels == ["background", "rbc", "wbc", "platelet", "centre"]
    assert metadata.rbc_diameter_px == 40 and metadata.counting.method == "cell_peaks"
    assert metadata.counting.wbc_min_peak_distance_px == 30
    regressor = metadata.size_regressor
    assert len(regressor["weights"]) == (2 * WINDOW + 1) * len(PERCENTILES)
    bcd, txl = metadata.datasets
    assert not bcd["platelets_complete"] and txl["platelets_complete"]
    assert {s["source"] for s in txl["sources"]} == {
        "txl-pbc:640x480",
        "txl-pbc:360x363",
        "txl-pbc:575x575",
        "txl-pbc:416x416",
    }
    low, high = metadata.trained_diameter_range_px()
    assert low < bcd["rbc_diameter_px"] < high
    scored = {k for k in metadata.metrics if k.startswith("val:")}
    assert "val:blood-cell-detection" in scored and "val:txl-pbc:575x575" in scored
    # platelets are scored only where they are boxed
    assert "platelet" not in metadata.metrics["val:blood-cell-detection"]
    # and their minimum score is tuned on the training images that box them
    from training.tune import PLATELET_MIN_SCORES

    tried = metadata.training["platelet_min_scores_tried"]
    assert list(tried) == [f"{score:g}" for score in PLATELET_MIN_SCORES]
    miss = {score: abs(t["predicted"] - t["annotated"]) for score, t in tried.items()}
    assert miss[f"{metadata.counting.platelet_min_score:g}"] == min(miss.values())
    assert "platelet" in metadata.metrics["val:txl-pbc:575x575"]


def test_a_patchify_run_trains_exports_within_parity_and_segments_an_odd_sized_image(tmp_path):
    import onnx

    from app.inference.decode import load_image
    from app.inference.metadata import read_metadata
    from app.inference.pipeline import segment_image
    from app.inference.runner import OnnxSegmenter, RunnerOptions
    from training.cli import main

    args = [
        *tiny_platelet_recipe(tmp_path),
        "--stem",
        "patchify",
        "--level-filters",
        "4",
        "6",
        "12",
        "--no-tune-counting",
        "--epochs",
        "1",
        "--version",
        "2.3.0-test",
    ]
    assert main(args) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["parity"]["max_abs_diff"] <= 1e-4
    export = tmp_path / "export"
    metadata = read_metadata(export / "model.json")
    assert metadata.training["stem"] == "patchify"
    # the stem is a 2x2 stride-2 convolution on the image itself
    graph = onnx.load(str(export / "model.onnx")).graph
    strides = {
        tuple(attribute.ints)
        for node in graph.node
        if node.op_type == "Conv"
        for attribute in node.attribute
        if attribute.name == "strides"
    }
    assert (2, 2) in strides
    segmenter = OnnxSegmenter(export, metadata, RunnerOptions(providers=("CPUExecutionProvider",)))
    image = load_image(FIXTURE_BCD / "images" / "image-100.png")[:203, :157]
    result = segment_image(image, segmenter, with_class_map=True)
    assert result.semantic.shape == (203, 157)
    assert result.size == (203, 157)
