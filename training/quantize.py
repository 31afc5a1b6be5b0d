"""An int8 variant of a published model for ONNX Runtime's CPU provider, kept only if it passes
the accuracy gate.

Static QDQ quantisation (per-channel int8 weights, uint8 activations), calibrated on tiles of
the training images of every source at the scale the model segments at. Two choices, measured
on 2.2.3 (README, "Speed under load"):
- activation ranges from the 99.999th percentile of the calibration values, not their min and
  max: with min/max a few extreme activations stretch the range, and on 40 validation images
  per source RBC or WBC F1 fell by up to 0.012 (416x416), against 0.0006 with the percentile;
- the first convolution (it reads the image), the 1x1 heads (they write the probabilities
  the counting thresholds) and the convolution whose activations the heads read stay float32:
  they are a small share of the arithmetic. Keeping the last one too was chosen on 280
  training images that calibration does not use (40 per source; 2.2.4): pixels whose class
  differs from float32's 0.00249 -> 0.00158, cells without a float32 twin (box IoU 0.5) 92 ->
  74 of 4,037 RBCs, at the same speed. Tried there and not better: percentile 99.99 or
  99.9999, 30 calibration images per source, entropy calibration, symmetric activations, the
  whole last level float32.

The gate is training's: every validation figure of every source within 0.01 of float32. 2.2.3
and 2.2.4 missed it by one platelet on BCCD (F1 -0.0118; one of 50): a platelet on a WBC's
edge that int8 ringed with WBC pixels, which the WBC's hole filling then took. Since platelet
pixels are no longer a WBC's hole (postprocess.find_instances), 2.2.5 (2.2.4's weights)
passes: largest drop BCCD's RBC F1, 0.0078. The gate does not score count errors, and with
the magnification estimated int8 moves RBC counts by up to 0.8 per image on some sources
(README, "int8 on request"), so the service runs it only when asked (BLOODSEG_PRECISION=int8)
and only on a CPU with VNNI (app.inference.cpu_features). Without VNNI (AVX-512 VNNI or
AVX-VNNI) int8 convolutions gain little as well: 1.1.1's trial on an AVX2 CPU measured 1.10x;
with VNNI, 2.2.3's network ran 1.92x.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Sequence
from dataclasses import fields, replace
from pathlib import Path

import numpy as np
import onnx

from app.inference.cpu_features import VNNI_FLAGS, cpu_flags, runs_int8_exactly
from app.inference.decode import load_image
from app.inference.metadata import ModelMetadata, Variant
from app.inference.preprocess import normalize_image, place_in_tile, rescale_image
from app.inference.runner import OnnxSegmenter, RunnerOptions
from training.data import SourceSet
from training.evaluate import evaluate_images

logger = logging.getLogger(__name__)

INT8_FILE = "model.int8.onnx"
CPU_PROVIDER = "CPUExecutionProvider"
GATE = 0.01  # largest drop of any validation figure, as training's export allows
CALIBRATION_PERCENTILE = 99.999
CALIBRATION_IMAGES_PER_SOURCE = 10
GATED = ("pixel_accuracy", "dice_rbc", "dice_wbc")
GATED_CELLS = ("rbc", "wbc", "platelet")
CONVOLUTIONS = ("Conv", "ConvTranspose")


def float_nodes(model: onnx.ModelProto) -> list[str]:
    """Names of the convolutions that stay float32: the first (it reads the image), every one
    that no other convolution follows (the heads), and the convolutions the heads read."""
    graph = model.graph
    convolutions = [n for n in graph.node if n.op_type in CONVOLUTIONS]
    if not convolutions:
        return []
    consumers: dict[str, list[onnx.NodeProto]] = {}
    producers: dict[str, onnx.NodeProto] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
        for name in node.output:
            producers[name] = node

    def feeds_a_convolution(node: onnx.NodeProto, seen: set[str]) -> bool:
        for output in node.output:
            for user in consumers.get(output, []):
                if user.op_type in CONVOLUTIONS:
                    return True
                if user.name not in seen:
                    seen.add(user.name)
                    if feeds_a_convolution(user, seen):
                        return True
        return False

    def read_by(node: onnx.NodeProto) -> list[str]:
        """The nearest convolutions upstream of `node`'s data input (through ReLU and such)."""
        found, pending, seen = [], [node.input[0]], set()
        while pending:
            producer = producers.get(pending.pop())
            if producer is None or producer.name in seen:
                continue
            seen.add(producer.name)
            if producer.op_type in CONVOLUTIONS:
                found.append(producer.name)
            else:
                pending.extend(producer.input[:1])
        return found

    heads = [n for n in convolutions if not feeds_a_convolution(n, set())]
    kept = [convolutions[0].name, *(n.name for n in heads)]
    for head in heads:
        kept += [name for name in read_by(head) if name not in kept]
    return kept


def int8_variant(
    source: Path, target: Path, calibration: Iterable[np.ndarray], exclude: Iterable[str] = ()
) -> Path:
    """Write a static int8 QDQ copy (per-channel weights, uint8 activations, percentile
    calibration on normalised input batches); the nodes named in `exclude` stay float32."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    input_name = onnx.load(str(source)).graph.input[0].name
    batches = iter(list(calibration))

    class Reader(CalibrationDataReader):
        def get_next(self) -> dict | None:
            batch = next(batches, None)
            return None if batch is None else {input_name: batch.astype(np.float32)}

    quantize_static(
        str(source),
        str(target),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        nodes_to_exclude=list(exclude),
        calibrate_method=CalibrationMethod.Percentile,
        extra_options={"CalibPercentile": CALIBRATION_PERCENTILE},
    )
    return target


def calibration_tiles(metadata: ModelMetadata, sets: Iterable[SourceSet]) -> list[np.ndarray]:
    """One normalised tile (1, T, T, 3) per image at the working scale: the first window the
    service runs, the image placed as it places it (edge band, zero padding)."""
    spec = metadata.input
    tile = spec.tile_size
    tiles = []
    for _, images, diameter in sets:
        for annotated in images[:CALIBRATION_IMAGES_PER_SOURCE]:
            image = rescale_image(
                load_image(annotated.path), metadata.working_rbc_diameter_px / diameter
            )
            normalized = normalize_image(image, spec.normalization)
            padded, _, _ = place_in_tile(normalized, tile, spec.size_multiple, spec.edge_border_px)
            tiles.append(np.ascontiguousarray(padded[None, :tile, :tile]))
    return tiles


def gated_figures(result: dict) -> dict[str, float]:
    """The validation figures the gate compares, from evaluate_images' result."""
    figures = {k: result[k] for k in GATED}
    figures.update({f"vs_ellipses.{k}": result["vs_ellipses"][k] for k in GATED})
    for label in GATED_CELLS:
        if label in result:
            figures[f"{label}.f1"] = result[label]["f1"]
    return figures


def validation_figures(segmenter: OnnxSegmenter, sets: Iterable[SourceSet]) -> dict[str, dict]:
    """gated_figures per source on its validation images, at the source's own RBC diameter
    (as training scores an export)."""
    return {
        source: gated_figures(evaluate_images(segmenter, list(images), diameter))
        for source, images, diameter in sets
    }


def largest_drops(reference: dict[str, dict], candidate: dict[str, dict]) -> dict[str, float]:
    """Each figure's drop from reference to candidate (positive: worse), per source."""
    return {
        f"{source}.{name}": round(value - candidate[source][name], 4)
        for source, figures in reference.items()
        for name, value in figures.items()
    }


def int8_for_cpu(
    model_dir: Path,
    metadata: ModelMetadata,
    calibration_sets: Iterable[SourceSet],
    validation_sets: Sequence[SourceSet],
    gate: float = GATE,
    also_float: Sequence[str] = (),
) -> tuple[Variant | None, dict]:
    """Quantise model_dir/model.onnx into model.int8.onnx beside it and score both on the
    validation sets. Returns the variant for the CPU provider and the report, or None (and the
    file deleted) when a figure drops by more than `gate`. `also_float` names nodes kept in
    float32 besides float_nodes' (for trials)."""
    source, target = model_dir / "model.onnx", model_dir / INT8_FILE
    exclude = float_nodes(onnx.load(str(source))) + list(also_float)
    tiles = calibration_tiles(metadata, calibration_sets)
    int8_variant(source, target, tiles, exclude)
    variant = Variant(
        file=INT8_FILE,
        precision="int8",
        providers=[CPU_PROVIDER],
        sha256=hashlib.sha256(target.read_bytes()).hexdigest(),
    )
    plain = metadata.model_copy(update={"variants": []})
    quantised = metadata.model_copy(update={"variants": [variant]})
    reference = validation_figures(
        OnnxSegmenter(model_dir, plain, RunnerOptions(providers=(CPU_PROVIDER,))), validation_sets
    )
    candidate = validation_figures(int8_segmenter(model_dir, quantised), validation_sets)
    drops = largest_drops(reference, candidate)
    worst = max(drops, key=drops.get)
    report = {
        "calibration_tiles": len(tiles),
        "cpu_has_vnni": runs_int8_exactly(cpu_flags()),
        "float32_nodes": exclude,
        "gate": gate,
        "largest_drop": {worst: drops[worst]},
        "float32": reference,
        "int8": candidate,
    }
    logger.info("int8 variant: largest drop %s %.4f (gate %.3f)", worst, drops[worst], gate)
    if drops[worst] > gate:
        logger.warning("int8 variant dropped: %s fell by %.4f", worst, drops[worst])
        target.unlink()
        return None, report
    variant.parity = {"largest_drop": drops[worst], "gate": gate}
    return variant, report


def int8_segmenter(model_dir: Path, metadata: ModelMetadata, **options) -> OnnxSegmenter:
    """A CPU session on the model's int8 variant, on any x86 CPU: where VNNI is missing it runs
    the kernels that can saturate, which the service would not serve (app.inference.cpu_features)
    but a gate or a trial can measure."""
    run = RunnerOptions(providers=(CPU_PROVIDER,), precision="int8", cpu_flags=VNNI_FLAGS)
    return OnnxSegmenter(model_dir, metadata, replace(run, **options))


def training_sets(metadata: ModelMetadata) -> tuple[list[SourceSet], list[SourceSet]]:
    """(train, validation) sets per source of the data the model was trained on, split as
    training split it (the datasets must be where model.json's training record says)."""
    from training.config import TrainConfig
    from training.splits import split_sources

    known = {f.name for f in fields(TrainConfig)}
    config = TrainConfig(**{k: v for k, v in metadata.training.items() if k in known})
    splits = split_sources(config)
    return splits.tune_sets, splits.val_sets
