"""A new version of a published model whose counting is calibrated: the same network, the
RBCs it finds brought to the size of their boxes (tune.calibrate_rbc_weight) and its platelets
kept from the score up that matches their boxes best (tune.tune_platelet_score)."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

from app import __version__
from app.inference.metadata import METADATA_FILE, MODEL_FILE, read_metadata
from app.inference.runner import OnnxSegmenter, RunnerOptions
from training.evaluate import score_sources
from training.quantize import INT8_FILE, int8_for_cpu, training_sets
from training.splits import complete_sources, tuning_groups
from training.tune import calibrate_rbc_weight, network_predictions, tune_platelet_score

CPU = RunnerOptions(providers=("CPUExecutionProvider",))


def calibrate_published(source: Path, out: Path, version: str) -> dict:
    """Write into `out`, ready for `publish`, a version of the model in `source` with the same
    network files, its RBC weight calibrated and its platelet minimum score tuned on the
    training images of each source the model was trained on (never validation ones), with its
    validation metrics scored again. An int8 variant is gated again under the new counting,
    and left out if it no longer passes. The datasets must be where model.json's training
    record says."""
    metadata = read_metadata(source / METADATA_FILE)
    origin = metadata.version
    tune_sets, val_sets = training_sets(metadata)
    groups, described = tuning_groups(complete_sources(tune_sets), metadata.working_rbc_diameter_px)
    predictions = network_predictions(OnnxSegmenter(source, metadata, CPU), groups)
    before = metadata.counting.class_weights.get("rbc", 1.0)
    metadata.counting, ratio = calibrate_rbc_weight(metadata.counting, metadata.layout, predictions)
    score_before = metadata.counting.platelet_min_score
    metadata.counting, platelet_scores = tune_platelet_score(
        metadata.counting, metadata.layout, predictions
    )
    out.mkdir(parents=True, exist_ok=True)
    for name in [MODEL_FILE, *(v.file for v in metadata.variants)]:
        shutil.copyfile(source / name, out / name)
    int8_gate = None
    if any(v.file == INT8_FILE for v in metadata.variants):
        # the gate compares counted cells, so a counting change is gated again
        floats = [v for v in metadata.variants if v.file != INT8_FILE]
        plain = metadata.model_copy(update={"variants": floats})
        variant, int8_gate = int8_for_cpu(out, plain, tune_sets, val_sets)
        metadata.variants = [*floats, *([variant] if variant else [])]
    segmenter = OnnxSegmenter(out, metadata, CPU)
    scores = score_sources(segmenter, val_sets)
    weight = metadata.counting.class_weights.get("rbc", 1.0)
    metadata.version = version
    metadata.created_at = datetime.now(UTC).isoformat(timespec="seconds")
    metadata.package_version = __version__
    metadata.training = {
        **metadata.training,
        "derived_from": f"{metadata.name} {origin}: same network, RBC weight "
        f"{before:g} -> {weight:g} (the RBCs found measure {ratio:.3f} of their boxes), "
        f"platelet minimum score {score_before:g} -> {metadata.counting.platelet_min_score:g}",
        "rbc_size_ratio_calibrated": round(ratio, 4),
        "rbc_weight_calibrated_on": described,
        **({"platelet_min_scores_tried": platelet_scores} if platelet_scores else {}),
    }
    metadata.metrics = {**metadata.metrics, **scores}
    (out / METADATA_FILE).write_text(metadata.model_dump_json(indent=2))
    return {
        "export": str(out),
        "version": version,
        "rbc_weight": weight,
        "size_ratio": ratio,
        "platelet_min_score": metadata.counting.platelet_min_score,
        **({"int8_gate": int8_gate} if int8_gate else {}),
    }
