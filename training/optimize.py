"""Faster forms of an exported ONNX model: the same function with less graph, and variants.

- `simplify_graph`: tf2onnx wraps each Conv2DTranspose in shape arithmetic, a Slice and a Pad
  that crop and pad its output to the size TensorFlow asked for. For a 2x2, stride-2 transpose
  without padding that size is exactly the output's, so the crop and pad copy whole feature
  maps for nothing; they are removed, with every node and initializer only they used.
- `lay_out_file`: the rewrites of `training.graph_layout` for ONNX Runtime's CPU kernels
  (channels padded to its block, Softmax as elementwise ops); the same function to about 1e-6.
- `float16_variant`: weights and activations in float16 (inputs and outputs stay float32),
  for CUDA, where tensor cores run it; checked for parity against the float32 model.
- an int8 variant for the CPU provider (`training.quantize`), kept only if it passes the
  accuracy gate; whether it is faster is measured, never assumed.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import numpy as np
import onnx
import onnxruntime as ort

from app import __version__
from app.inference.decode import load_image
from app.inference.metadata import METADATA_FILE, MODEL_FILE, Variant, read_metadata
from app.inference.preprocess import normalize_image
from app.inference.runner import CUDA_PROVIDER
from training.graph_layout import cpu_layout

logger = logging.getLogger(__name__)

T = TypeVar("T")

FLOAT16_FILE = "model.fp16.onnx"
FLOAT16_MAX_ABS_DIFF = 0.02  # probabilities; float16 keeps about 3 decimal digits
FLOAT16_MIN_ARGMAX_AGREEMENT = 0.999
SAME_FUNCTION_MAX_ABS_DIFF = 1e-5


def _is_plain_upsampling(node: onnx.NodeProto) -> bool:
    """A ConvTranspose whose output is exactly stride x its input: kernel == stride, no pads."""
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    kernel, strides = list(attrs.get("kernel_shape", [])), list(attrs.get("strides", []))
    return (
        node.op_type == "ConvTranspose"
        and bool(kernel)
        and kernel == strides
        and not any(attrs.get("pads", []))
        and not any(attrs.get("output_padding", []))
        and "output_shape" not in attrs
        and attrs.get("auto_pad", b"NOTSET") in (b"NOTSET", "NOTSET")
    )


def simplify_graph(model: onnx.ModelProto) -> int:
    """Remove identity crop-and-pad pairs after plain upsampling transposes, in place.

    Returns the number of nodes removed. The crop (Slice) and pad (Pad) only reshape the
    transpose's output to (input - 1) * stride + kernel, which for kernel == stride is the
    output's own size; the check that outputs are unchanged is the caller's (parity).
    """
    graph = model.graph
    producer = {output: node for node in graph.node for output in node.output}
    rewire: dict[str, str] = {}
    for node in graph.node:
        if node.op_type != "Pad":
            continue
        crop = producer.get(node.input[0])
        if crop is None or crop.op_type != "Slice":
            continue
        source = producer.get(crop.input[0])
        if source is not None and _is_plain_upsampling(source):
            rewire[node.output[0]] = source.output[0]
    for node in graph.node:
        for index, name in enumerate(node.input):
            if name in rewire:
                node.input[index] = rewire[name]
    needed = {output.name for output in graph.output}
    kept = []
    for node in reversed(list(graph.node)):
        if any(output in needed for output in node.output):
            kept.append(node)
            needed.update(node.input)
    removed = len(graph.node) - len(kept)
    del graph.node[:]
    graph.node.extend(reversed(kept))
    initializers = [i for i in graph.initializer if i.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(initializers)
    return removed


def _rewrite_file(source: Path, target: Path, rewrite: Callable[[onnx.ModelProto], T]) -> T:
    """Apply an in-place graph rewrite from one .onnx file to another (they may be the same),
    check the result and save it; returns what the rewrite returned."""
    model = onnx.load(str(source))
    result = rewrite(model)
    onnx.checker.check_model(model)
    onnx.save(model, str(target))
    return result


def simplify_file(source: Path, target: Path) -> int:
    """simplify_graph from one .onnx file to another (they may be the same)."""
    removed = _rewrite_file(source, target, simplify_graph)
    logger.info("simplified %s: %d nodes removed", target.name, removed)
    return removed


def lay_out_file(source: Path, target: Path) -> dict[str, int]:
    """graph_layout.cpu_layout from one .onnx file to another (they may be the same)."""
    changes = _rewrite_file(source, target, cpu_layout)
    logger.info("laid out %s for CPU kernels: %s", target.name, changes)
    return changes


def float16_variant(source: Path, target: Path) -> Path:
    """Write a float16 copy of a float32 model (float32 inputs and outputs kept)."""
    from onnxconverter_common import float16

    model = float16.convert_float_to_float16(onnx.load(str(source)), keep_io_types=True)
    onnx.save(model, str(target))
    return target


def output_agreement(
    pairs: Iterable[tuple[np.ndarray, np.ndarray]], num_classes: int
) -> dict[str, float]:
    """Largest absolute difference and class argmax agreement over (expected, actual) outputs."""
    worst, agree, total = 0.0, 0, 0
    for expected, actual in pairs:
        worst = max(worst, float(np.abs(expected - actual).max()))
        same = expected[..., :num_classes].argmax(-1) == actual[..., :num_classes].argmax(-1)
        agree += int(same.sum())
        total += same.size
    return {"max_abs_diff": worst, "argmax_agreement": agree / max(total, 1)}


def compare_outputs(
    reference: Path, candidate: Path, inputs: Iterable[np.ndarray], num_classes: int
) -> dict[str, float]:
    """output_agreement of two ONNX models on the same input batches (CPU)."""
    sessions = [
        ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        for path in (reference, candidate)
    ]
    name = sessions[0].get_inputs()[0].name
    pairs = (
        tuple(s.run(None, {name: batch.astype(np.float32)})[0] for s in sessions)
        for batch in inputs
    )
    return output_agreement(pairs, num_classes)


def float16_for_cuda(onnx_path: Path, batches: list[np.ndarray], num_classes: int) -> list[Variant]:
    """A float16 variant for CUDA beside model.onnx, listed only if it reproduces it within
    its gate on these input batches (else deleted)."""
    target = onnx_path.with_name(FLOAT16_FILE)
    float16_variant(onnx_path, target)
    parity = compare_outputs(onnx_path, target, batches, num_classes)
    logger.info("float16 variant: %s", parity)
    if (
        parity["max_abs_diff"] > FLOAT16_MAX_ABS_DIFF
        or parity["argmax_agreement"] < FLOAT16_MIN_ARGMAX_AGREEMENT
    ):
        logger.warning("float16 variant dropped: it differs from float32 (%s)", parity)
        target.unlink()
        return []
    return [
        Variant(
            file=FLOAT16_FILE,
            precision="float16",
            providers=[CUDA_PROVIDER],
            sha256=hashlib.sha256(target.read_bytes()).hexdigest(),
            parity={k: round(v, 6) for k, v in parity.items()},
        )
    ]


class OptimizeError(RuntimeError):
    """The rewritten graph does not compute what the source model computes."""


def what_changed(removed: int, layout: dict[str, int], variants: list[Variant]) -> list[str]:
    """What optimize_published did to its source, in words for model.json."""
    changes = ["same weights"]
    changes += ["graph simplified"] if removed else []
    changes += ["laid out for the CPU kernels"] if any(layout.values()) else []
    return changes + [f"{v.precision} variant for {', '.join(v.providers)}" for v in variants]


def optimize_published(
    source: Path, out: Path, version: str, images: list[Path], int8: bool = False
) -> dict:
    """A new version of a published model with the same weights: simplified graph laid out for
    the CPU kernels (checked to compute the same on real images) and a float16 variant for
    CUDA; with `int8`, an int8 variant for the CPU provider too, if it passes the accuracy gate
    on the data the model was trained on. Writes model.onnx, the variants and model.json into
    `out`, ready for `publish`."""
    metadata = read_metadata(source / METADATA_FILE)
    out.mkdir(parents=True, exist_ok=True)
    target = out / MODEL_FILE
    shutil.copyfile(source / MODEL_FILE, target)
    removed = simplify_file(target, target)
    layout = lay_out_file(target, target)
    spec = metadata.input.normalization
    batches = [normalize_image(load_image(p), spec)[None] for p in images]
    same = compare_outputs(source / MODEL_FILE, target, batches, len(metadata.classes))
    if same["max_abs_diff"] > SAME_FUNCTION_MAX_ABS_DIFF or same["argmax_agreement"] < 1.0:
        raise OptimizeError(f"the rewritten graph computes something else: {same}")
    metadata.version = version
    metadata.onnx_sha256 = hashlib.sha256(target.read_bytes()).hexdigest()
    metadata.variants = float16_for_cuda(target, batches, len(metadata.classes))
    int8_report = None
    if int8:
        from training.quantize import int8_for_cpu, training_sets

        variant, int8_report = int8_for_cpu(out, metadata, *training_sets(metadata))
        metadata.variants += [variant] if variant else []
    metadata.created_at = datetime.now(UTC).isoformat(timespec="seconds")
    metadata.package_version = __version__
    metadata.training = {
        **metadata.training,
        "derived_from": f"{metadata.name} {read_metadata(source / METADATA_FILE).version}: "
        + ", ".join(what_changed(removed, layout, metadata.variants)),
    }
    metadata.metrics = {
        **metadata.metrics,
        "parity_with_source": same,
        "nodes_removed": removed,
        "graph_layout": layout,
        **({"int8_gate": int8_report} if int8_report else {}),
    }
    (out / METADATA_FILE).write_text(metadata.model_dump_json(indent=2))
    return {
        "export": str(out),
        "version": version,
        "nodes_removed": removed,
        "graph_layout": layout,
        "parity": same,
        "variants": [v.file for v in metadata.variants],
    }
