"""Faster forms of one model: a simplified graph that computes the same, variants (float16
for CUDA) that are checksummed, published and chosen per provider, and IO binding."""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import onnx
import onnx.numpy_helper
import onnxruntime as ort
import pytest

from app.core.model_store import ModelLoadError, load_model
from app.inference.cpu_features import cpu_flags
from app.inference.decode import decode_image
from app.inference.metadata import read_metadata, resolve_model_dir
from app.inference.preprocess import normalize_image
from app.inference.runner import OnnxSegmenter, RunnerOptions
from tests.conftest import FIXTURE_BCD, ROOT, fixture_image
from training.data import load_dataset, median_rbc_diameter
from training.optimize import (
    FLOAT16_MAX_ABS_DIFF,
    FLOAT16_MIN_ARGMAX_AGREEMENT,
    compare_outputs,
    float16_variant,
    lay_out_file,
    simplify_file,
)
from training.publish import PublishError, publish
from training.quantize import (
    INT8_FILE,
    calibration_tiles,
    float_nodes,
    int8_for_cpu,
    int8_segmenter,
)

CPU = ("CPUExecutionProvider",)
# 1.1.0 is tf2onnx's export as it came (1.1.1 is the same model simplified): versions are
# immutable, so it stays the example of a graph with the crop-and-pad pattern
AS_EXPORTED = ROOT / "models" / "bloodseg" / "1.1.0"
# 2.2.2 is the shipped network before its graph was laid out for the CPU kernels (2.2.3)
BEFORE_LAYOUT = ROOT / "models" / "bloodseg" / "2.2.2"


def real_input(shipped_model_dir) -> np.ndarray:
    spec = read_metadata(shipped_model_dir / "model.json").input.normalization
    return normalize_image(decode_image(fixture_image()), spec)[None]


def run(path, batch: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=list(CPU))
    return session.run(None, {session.get_inputs()[0].name: batch})[0]


def test_simplified_graph_is_smaller_and_computes_the_same(shipped_model_dir, tmp_path):
    lean = tmp_path / "lean.onnx"
    removed = simplify_file(AS_EXPORTED / "model.onnx", lean)
    before = onnx.load(str(AS_EXPORTED / "model.onnx")).graph.node
    after = onnx.load(str(lean)).graph.node
    assert removed == len(before) - len(after) > 0
    assert not [n for n in after if n.op_type in {"Pad", "Slice"}]
    image = real_input(shipped_model_dir)
    wide = np.concatenate([image, image[:, :, :128]], axis=2)  # 256 x 384: not square
    for batch in (image, wide, np.concatenate([image, image])):
        original = run(AS_EXPORTED / "model.onnx", batch)
        np.testing.assert_array_equal(run(lean, batch), original)


def model_with_variant(source, target, providers: list[str], sha: str | None = None):
    """A copy of the shipped version with a float16 variant listed for `providers`."""
    shutil.copytree(source, target)
    float16_variant(target / "model.onnx", target / "model.fp16.onnx")
    digest = hashlib.sha256((target / "model.fp16.onnx").read_bytes()).hexdigest()
    metadata = json.loads((target / "model.json").read_text())
    metadata["variants"] = [
        {
            "file": "model.fp16.onnx",
            "precision": "float16",
            "providers": providers,
            "sha256": sha or digest,
        }
    ]
    (target / "model.json").write_text(json.dumps(metadata))
    return target


def test_float16_variant_reproduces_float32_within_its_gate(shipped_model_dir, tmp_path):
    variant = float16_variant(shipped_model_dir / "model.onnx", tmp_path / "model.fp16.onnx")
    parity = compare_outputs(
        shipped_model_dir / "model.onnx", variant, [real_input(shipped_model_dir)], 3
    )
    assert parity["max_abs_diff"] <= FLOAT16_MAX_ABS_DIFF
    assert parity["argmax_agreement"] >= FLOAT16_MIN_ARGMAX_AGREEMENT
    types = {i.data_type for i in onnx.load(str(variant)).graph.initializer}
    assert onnx.TensorProto.FLOAT16 in types


def test_the_variant_listed_for_the_provider_is_the_one_loaded(shipped_model_dir, tmp_path):
    for_cuda = model_with_variant(shipped_model_dir, tmp_path / "cuda", ["CUDAExecutionProvider"])
    meta = read_metadata(for_cuda / "model.json")
    assert OnnxSegmenter(for_cuda, meta, RunnerOptions(providers=CPU)).model_file == "model.onnx"
    for_cpu = model_with_variant(shipped_model_dir, tmp_path / "cpu", list(CPU))
    meta = read_metadata(for_cpu / "model.json")
    chosen = OnnxSegmenter(for_cpu, meta, RunnerOptions(providers=CPU))
    assert chosen.model_file == "model.fp16.onnx"
    pinned = OnnxSegmenter(for_cpu, meta, RunnerOptions(providers=CPU, precision="float32"))
    assert pinned.model_file == "model.onnx"
    image = real_input(shipped_model_dir)
    assert not np.array_equal(chosen.run_batch(image), pinned.run_batch(image))
    loaded = load_model(for_cpu, RunnerOptions(providers=CPU))
    assert loaded.segmenter.model_file == "model.fp16.onnx"


def test_a_variant_that_does_not_match_its_checksum_is_refused(shipped_model_dir, tmp_path):
    broken = model_with_variant(shipped_model_dir, tmp_path / "m", list(CPU), sha="0" * 64)
    with pytest.raises(ModelLoadError, match=r"model\.fp16\.onnx: sha256"):
        load_model(broken, RunnerOptions(providers=CPU))


def test_publish_carries_the_variants_and_refuses_a_missing_one(shipped_model_dir, tmp_path):
    export = model_with_variant(shipped_model_dir, tmp_path / "export", ["CUDAExecutionProvider"])
    metadata = json.loads((export / "model.json").read_text())
    metadata["version"] = "9.0.0"
    (export / "model.json").write_text(json.dumps(metadata))
    final = publish(export, tmp_path / "models")
    assert (final / "model.fp16.onnx").read_bytes() == (export / "model.fp16.onnx").read_bytes()
    (export / "model.fp16.onnx").unlink()
    metadata["version"] = "9.0.1"
    (export / "model.json").write_text(json.dumps(metadata))
    with pytest.raises(PublishError, match=r"model\.fp16\.onnx is missing"):
        publish(export, tmp_path / "models")


def test_io_binding_gives_the_plain_run_result(segmenter, shipped_model_dir):
    batch = np.concatenate([real_input(shipped_model_dir)] * 2)
    bound = segmenter.run_bound(batch, "cpu")
    plain = segmenter.session.run(None, {segmenter.input_name: batch})[0]
    np.testing.assert_array_equal(bound, plain)


def test_optimize_makes_a_publishable_version_with_the_same_function(
    shipped_model_dir, tmp_path, capsys
):
    from training.cli import main

    out = tmp_path / "export"
    assert main(["optimize", "--model", str(AS_EXPORTED), "--version", "9.1.0",
                 "--out", str(out)]) == 0  # fmt: skip
    result = json.loads(capsys.readouterr().out)
    assert result["nodes_removed"] > 0 and result["parity"]["max_abs_diff"] <= 1e-5
    assert result["variants"] == ["model.fp16.onnx"]
    final = publish(out, tmp_path / "models")
    loaded = load_model(final, RunnerOptions(providers=CPU))
    assert loaded.metadata.version == "9.1.0" and loaded.segmenter.model_file == "model.onnx"
    assert loaded.metadata.variant_for("CUDAExecutionProvider").file == "model.fp16.onnx"
    image = real_input(shipped_model_dir)
    source = run(AS_EXPORTED / "model.onnx", image)
    np.testing.assert_allclose(loaded.segmenter.run_batch(image), source, atol=1e-5)


def test_cpu_layout_pads_channels_and_drops_softmax_computing_the_same(shipped_model_dir, tmp_path):
    source = BEFORE_LAYOUT / "model.onnx"
    graph = onnx.load(str(source)).graph
    arrays = {i.name: onnx.numpy_helper.to_array(i) for i in graph.initializer}
    before = [arrays[n.input[1]].shape[0] for n in graph.node if n.op_type == "Conv"]
    assert any(c % 8 for c in before if c > 5), "the shipped model has no unpadded level"
    laid_out = tmp_path / "cpu.onnx"
    changes = lay_out_file(source, laid_out)
    assert changes["softmax_replaced"] >= 1 and changes["convolutions_padded"] > 0
    model = onnx.load(str(laid_out))
    arrays = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    assert not [n for n in model.graph.node if n.op_type == "Softmax"]
    # every convolution but the 1x1 heads (4 classes, 1 centre) now has whole blocks of 8
    widths = [arrays[n.input[1]].shape[0] for n in model.graph.node if n.op_type == "Conv"]
    assert [w for w in widths if w % 8] == [w for w in before if w <= 5]
    image = real_input(shipped_model_dir)
    wide = np.concatenate([image, image[:, :, :128]], axis=2)
    for batch in (image, wide, np.concatenate([image, image[:, ::-1]])):
        expected, actual = run(source, batch), run(laid_out, batch)
        assert actual.shape == expected.shape
        np.testing.assert_allclose(actual, expected, atol=1e-5)
        np.testing.assert_array_equal(actual[..., :4].argmax(-1), expected[..., :4].argmax(-1))


def fixture_sets() -> list:
    """(source, images, median RBC diameter) of the fixture smears, as training splits them."""
    images = load_dataset(FIXTURE_BCD)
    return [("blood-cell-detection", images, median_rbc_diameter(images))]


def test_int8_calibration_sees_the_first_window_the_service_runs(segmenter):
    from app.inference.decode import load_image
    from app.inference.pipeline import predict_probs

    [(source, images, diameter)] = fixture_sets()
    tiles = calibration_tiles(segmenter.metadata, [(source, images[:3], diameter)])
    assert len(tiles) == 3
    for annotated, tile in zip(images[:3], tiles, strict=True):
        batches = []

        def record(batch, batches=batches):
            batches.append(batch.copy())
            return np.zeros((*batch.shape[:3], len(segmenter.metadata.output.channels)))

        scale = segmenter.metadata.working_rbc_diameter_px / diameter
        predict_probs(load_image(annotated.path), segmenter, scale, run=record)
        np.testing.assert_array_equal(tile, batches[0][:1])
        # a small smear: the edge band fills part of the room around it, zeros the rest
        assert (tile[0, :16] != 0).any() and (tile[0, -4:] == 0).all()


def test_int8_variant_keeps_the_ends_in_float32_and_agrees_with_float32(
    shipped_model_dir, tmp_path
):
    shutil.copyfile(shipped_model_dir / "model.onnx", tmp_path / "model.onnx")
    metadata = read_metadata(shipped_model_dir / "model.json")
    model = onnx.load(str(tmp_path / "model.onnx"))
    kept = float_nodes(model)
    convolutions = [n for n in model.graph.node if n.op_type == "Conv"]
    kernels = {i.name: i.dims[2:] for i in model.graph.initializer}
    kernel = {n.name: list(kernels[n.input[1]]) for n in convolutions}
    # the first, the two 1x1 heads, and the last 3x3 convolution, whose activations they read
    assert len(kept) == 4 and kept[0] == convolutions[0].name
    assert [kernel[name] for name in kept[1:]] == [[1, 1], [1, 1], [3, 3]]
    assert kept[3] == convolutions[-3].name
    sets = fixture_sets()
    variant, report = int8_for_cpu(tmp_path, metadata, sets, sets, gate=1.0)
    assert variant is not None and variant.providers == ["CPUExecutionProvider"]
    int8_file = tmp_path / variant.file
    assert hashlib.sha256(int8_file.read_bytes()).hexdigest() == variant.sha256
    quantised = onnx.load(str(int8_file)).graph
    assert sum(n.op_type == "QuantizeLinear" for n in quantised.node) > 10
    weights = {i.name: i.data_type for i in quantised.initializer}
    for node in quantised.node:
        if node.name in kept:  # still read float32 weights, not dequantised int8 ones
            assert weights[node.input[1]] == onnx.TensorProto.FLOAT
    assert set(report["float32"]) == set(report["int8"]) == {"blood-cell-detection"}
    listed = metadata.model_copy(update={"variants": [variant]})
    chosen = int8_segmenter(tmp_path, listed)
    assert chosen.model_file == variant.file
    image = real_input(shipped_model_dir)
    plain = run(tmp_path / "model.onnx", image)
    agreement = (chosen.run_batch(image)[..., :4].argmax(-1) == plain[..., :4].argmax(-1)).mean()
    assert agreement > 0.97


def test_int8_runs_only_when_asked_for_and_only_on_a_cpu_with_vnni(tmp_path, caplog):
    """The shipped model's int8 variant moves counts a little more than its gate measures, so
    "auto" keeps float32 on the CPU; without VNNI int8 convolutions can saturate, so "int8"
    there runs float32 too, and says why."""
    model_dir = resolve_model_dir(ROOT / "models" / "bloodseg")
    metadata = read_metadata(model_dir / "model.json")
    assert metadata.variant_for(CPU[0], "int8").file == INT8_FILE
    assert cpu_flags() & {"sse2", "fp"}  # this machine's flags are read (x86 or ARM names)

    def file_for(precision: str, flags: set[str]) -> str:
        options = RunnerOptions(providers=CPU, precision=precision, cpu_flags=frozenset(flags))
        return OnnxSegmenter(model_dir, metadata, options).model_file

    assert file_for("auto", {"avx512_vnni"}) == "model.onnx"
    assert file_for("float32", {"avx512_vnni"}) == "model.onnx"
    assert file_for("int8", {"avx2", "avx512_vnni"}) == INT8_FILE
    assert file_for("int8", {"avx2", "avx_vnni"}) == INT8_FILE
    caplog.clear()
    assert file_for("int8", {"avx2", "avx512f"}) == "model.onnx"
    assert "lacks VNNI" in caplog.text
    older = read_metadata(ROOT / "models" / "bloodseg" / "2.2.4" / "model.json")
    options = RunnerOptions(providers=CPU, precision="int8", cpu_flags=frozenset({"avx_vnni"}))
    assert OnnxSegmenter(ROOT / "models/bloodseg/2.2.4", older, options).model_file == "model.onnx"
    assert "ships no int8 variant" in caplog.text


def test_an_int8_variant_that_fails_the_gate_is_not_kept(shipped_model_dir, tmp_path):
    shutil.copyfile(shipped_model_dir / "model.onnx", tmp_path / "model.onnx")
    metadata = read_metadata(shipped_model_dir / "model.json")
    sets = fixture_sets()[:1]
    variant, report = int8_for_cpu(tmp_path, metadata, sets, sets, gate=-1.0)  # any drop fails
    assert variant is None and not (tmp_path / INT8_FILE).exists()
    assert report["largest_drop"] and report["gate"] == -1.0
