"""Train a UNet from box-annotated datasets, resumably, then export and score it."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import keras
import numpy as np

from app import __version__
from app.inference.metadata import (
    DEFAULT_CLASSES,
    METADATA_FILE,
    MODEL_FILE,
    PLATELET_CLASS,
    ClassInfo,
    Counting,
    InputSpec,
    ModelMetadata,
    OutputSpec,
    read_metadata,
    resolve_model_dir,
)
from app.inference.runner import OnnxSegmenter, RunnerOptions
from training.augment import AugmentConfig
from training.config import TrainConfig
from training.data import SourceSet
from training.dataset import CellBatches, Example, prepare_examples
from training.distill import Teacher
from training.evaluate import score_sources
from training.export import export_verified
from training.losses import CellLoss
from training.model import build_unet, count_flops
from training.optimize import float16_for_cuda
from training.report import plot_history, plot_samples
from training.size_model import fit_size_regressor
from training.splits import complete_sources, split_sources, tuning_groups
from training.tune import (
    calibrate_rbc_weight,
    network_predictions,
    tune_counting,
    tune_platelet_score,
)

logger = logging.getLogger(__name__)

LAST_CHECKPOINT = "last.keras"
BEST_CHECKPOINT = "best.keras"
HISTORY_FILE = "history.csv"
EXPORT_DIR = "export"


@dataclass
class Splits:
    """Training and validation examples, and what is recorded about the data.

    `val_sets` and `tune_sets` hold (source name, images, their median RBC diameter).
    """

    train: list[Example]
    val: list[Example]
    val_sets: list[SourceSet]
    rbc_diameter_px: float
    datasets: list[dict]
    tune_sets: list[SourceSet]


def load_splits(config: TrainConfig) -> Splits:
    """The data split by source (splits.split_sources), with each source's images brought to
    the training cell scale by its median RBC diameter as training and validation examples."""
    data = split_sources(config)
    train, val = [], []
    for part in data.sources:
        scale = data.rbc_diameter_px / part.rbc_diameter_px
        train += prepare_examples(part.train, scale, part.source)
        val += prepare_examples(part.val, scale, part.source)
    return Splits(train, val, data.val_sets, data.rbc_diameter_px, data.datasets, data.tune_sets)


def model_classes(config: TrainConfig) -> list[ClassInfo]:
    """The classes this configuration trains, background first."""
    return DEFAULT_CLASSES + ([PLATELET_CLASS] if config.platelets else [])


def output_channels(config: TrainConfig) -> list[str]:
    """The network's output channels: its classes, then the centre heatmap (not for
    rectangles)."""
    names = [c.name for c in model_classes(config)]
    return names + ([] if config.targets == "rectangles" else ["centre"])


def build_metadata(config: TrainConfig, rbc_diameter_px: float) -> ModelMetadata:
    """model.json content for this configuration (metrics and checksum are added later)."""
    rectangles = config.targets == "rectangles"
    classes = model_classes(config)
    channels = output_channels(config)
    working = config.inference_rbc_diameter_px or rbc_diameter_px
    # sizes scale with the diameter the network is run at (the 1.x defaults were set at 53.64 px)
    area_factor = (working / 53.64) ** 2
    defaults = {
        "centre_source": "distance_transform" if rectangles else "heatmap",
        "rbc_min_area_px": round(120 * area_factor),
        "wbc_min_area_px": round(600 * area_factor),
        "platelet_min_area_px": max(4, round(10 * area_factor)),
        # two touching WBCs' centres lie about two RBC diameters apart; one WBC's lobes share
        # the one centre the heatmap was trained on
        "wbc_min_peak_distance_px": round(0.75 * working),
    }
    if config.platelets and not rectangles:
        defaults["method"] = "cell_peaks"
    if not rectangles:
        # the levels measured on 2.2.2's network (README, Scale): a pass an octave away wins
        # only when clearly surer, so a new network's other peak levels cost passes, not counts
        defaults |= {"octave_check_peak": 0.5, "octave_check_low_peak": 0.45}
    counting = Counting(**{**defaults, **config.counting})
    training = asdict(config)
    if config.teacher:
        # the teacher by name and version: its path names the machine it was trained on
        teacher = read_metadata(resolve_model_dir(Path(config.teacher)) / METADATA_FILE)
        training["taught_by"] = f"{teacher.name} {teacher.version}"
    return ModelMetadata(
        name=config.name,
        version=config.version or datetime.now(UTC).strftime("%Y%m%d-%H%M%S"),
        classes=classes,
        input=InputSpec(
            tile_size=config.tile_size,
            size_multiple=2**config.depth,
            edge_border_px=config.edge_border_px,
        ),
        output=OutputSpec(channels=channels),
        rbc_diameter_px=round(rbc_diameter_px, 2),
        inference_rbc_diameter_px=config.inference_rbc_diameter_px or None,
        counting=counting,
        training=training,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        package_version=__version__,
    )


def num_classes(config: TrainConfig) -> int:
    """Class channels, background included."""
    return 4 if config.platelets else 3


def cell_loss(config: TrainConfig) -> CellLoss:
    """The loss this configuration trains with."""
    weights = (1.0, 1.0, config.wbc_weight) + (
        (config.platelet_weight,) if config.platelets else ()
    )
    distill = config.distill_weight if config.teacher else 0.0
    # rectangles reproduce the original: plain categorical cross-entropy
    if config.targets == "rectangles":
        return CellLoss((1.0,) * len(weights), 0.0, 0.0, distill_weight=distill)
    return CellLoss(weights, distill_weight=distill)


def compile_model(config: TrainConfig) -> keras.Model:
    """A fresh UNet with its optimizer and loss."""
    model = build_unet(
        config.base_filters,
        config.depth,
        num_classes=num_classes(config),
        centre_head=config.targets != "rectangles",
        batchnorm=config.batchnorm,
        level_filters=config.level_filters or None,
        stem=config.stem,
    )
    model.compile(optimizer=keras.optimizers.Adam(config.learning_rate), loss=cell_loss(config))
    return model


class ProgressLog(keras.callbacks.Callback):
    """One log line per epoch, with its duration, and the resume state on disk."""

    def __init__(self, state_path: Path, best: float) -> None:
        super().__init__()
        self.state_path = state_path
        self.best = best
        self.started = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        self.best = min(self.best, logs.get("val_loss", np.inf))
        seconds = time.perf_counter() - self.started
        logger.info(
            "epoch %d: loss %.4f val_loss %.4f (best %.4f) in %.0f s",
            epoch + 1,
            logs.get("loss", np.nan),
            logs.get("val_loss", np.nan),
            self.best,
            seconds,
        )
        self.state_path.write_text(
            json.dumps({"epochs_done": epoch + 1, "best_val_loss": self.best})
        )


def validation_examples(examples: list[Example], per_source: int) -> list[Example]:
    """The first `per_source` validation examples of each source (all with 0)."""
    if not per_source:
        return examples
    taken: dict[str, int] = {}
    chosen = []
    for example in examples:
        if taken.get(example.source, 0) < per_source:
            taken[example.source] = taken.get(example.source, 0) + 1
            chosen.append(example)
    return chosen


def fit(config: TrainConfig, splits: Splits, run_dir: Path) -> keras.Model:
    """Fit with checkpoints every epoch; resumes from run_dir/last.keras if it is there."""
    unknown = set(config.source_boost) - {example.source for example in splits.train}
    if unknown:
        raise ValueError(f"--source-boost names no training source: {sorted(unknown)}")
    normalization = InputSpec().normalization
    teacher = Teacher(config.teacher, output_channels(config)) if config.teacher else None
    if teacher is not None:
        logger.info(
            "taught by %s %s (distill weight %g)",
            teacher.metadata.name,
            teacher.metadata.version,
            config.distill_weight,
        )
    train = CellBatches(
        splits.train,
        config.batch_size,
        config.crop_size,
        config.targets,
        normalization,
        AugmentConfig(scale_range=config.scale_range),
        config.seed,
        num_classes(config),
        config.samples_per_epoch,
        config.source_boost,
        config.edge_border_px,
        teacher,
    )
    val = CellBatches(
        validation_examples(splits.val, config.val_per_source),
        config.batch_size,
        config.crop_size,
        config.targets,
        normalization,
        None,
        config.seed,
        num_classes(config),
        edge_border_px=config.edge_border_px,
        teacher=teacher,
    )
    state_path = run_dir / "state.json"
    state = json.loads(state_path.read_text()) if state_path.exists() else {}
    initial_epoch, best = state.get("epochs_done", 0), state.get("best_val_loss", np.inf)
    if (run_dir / LAST_CHECKPOINT).exists() and initial_epoch:
        logger.info("resuming from %s after epoch %d", run_dir / LAST_CHECKPOINT, initial_epoch)
        model = keras.models.load_model(run_dir / LAST_CHECKPOINT)
        kept, asked = model.loss.get_config(), cell_loss(config).get_config()
        if kept != asked:
            logger.warning(
                "resuming with the checkpoint's loss %s, not this command's %s: start a new "
                "run with --init-weights to train on another loss",
                kept,
                asked,
            )
    else:
        model, initial_epoch, best = compile_model(config), 0, np.inf
        if config.init_weights:
            logger.info("starting from the weights of %s", config.init_weights)
            model.load_weights(config.init_weights)
    train.epoch = initial_epoch
    if initial_epoch < config.epochs:
        model.fit(
            train,
            validation_data=val,
            epochs=config.epochs,
            initial_epoch=initial_epoch,
            verbose=0,
            callbacks=[
                keras.callbacks.ModelCheckpoint(
                    run_dir / BEST_CHECKPOINT,
                    save_best_only=True,
                    initial_value_threshold=None if np.isinf(best) else best,
                ),
                keras.callbacks.ModelCheckpoint(run_dir / LAST_CHECKPOINT),
                keras.callbacks.CSVLogger(run_dir / HISTORY_FILE, append=True),
                keras.callbacks.ReduceLROnPlateau(
                    factor=0.5, patience=max(2, config.patience // 2)
                ),
                keras.callbacks.EarlyStopping(patience=config.patience),
                ProgressLog(state_path, best),
            ],
        )
    return keras.models.load_model(run_dir / BEST_CHECKPOINT)


def validation_inputs(splits: Splits, limit: int = 8) -> np.ndarray:
    """Normalised validation crops for the parity check."""
    normalization = InputSpec().normalization
    batches = CellBatches(splits.val[:limit], limit, 256, "ellipses", normalization, None, 0)
    return batches[0][0]


def export_and_score(
    model: keras.Model, config: TrainConfig, splits: Splits, run_dir: Path
) -> dict:
    """Export ONNX with a parity gate, write model.json, and score the validation images."""
    export_dir = run_dir / EXPORT_DIR
    onnx_path = export_dir / MODEL_FILE
    metadata = build_metadata(config, splits.rbc_diameter_px)
    inputs = validation_inputs(splits)
    parity = export_verified(model, onnx_path, inputs, len(metadata.classes))
    metadata.onnx_sha256 = hashlib.sha256(onnx_path.read_bytes()).hexdigest()
    metadata.datasets = splits.datasets
    batches = [inputs[i : i + 1] for i in range(len(inputs))]
    metadata.variants = float16_for_cuda(onnx_path, batches, len(metadata.classes))
    segmenter = OnnxSegmenter(
        export_dir, metadata, RunnerOptions(providers=("CPUExecutionProvider",))
    )
    complete = complete_sources(splits.tune_sets)
    if config.tune_counting:
        groups, described = tuning_groups(complete, metadata.working_rbc_diameter_px)
        predictions = network_predictions(segmenter, groups)
        metadata.counting, size_ratio = calibrate_rbc_weight(
            metadata.counting, metadata.layout, predictions
        )
        metadata.training["rbc_size_ratio_calibrated"] = round(size_ratio, 4)
        metadata.counting = tune_counting(metadata.counting, metadata.layout, predictions)
        metadata.counting, platelet_scores = tune_platelet_score(
            metadata.counting, metadata.layout, predictions
        )
        if platelet_scores:
            metadata.training["platelet_min_scores_tried"] = platelet_scores
        metadata.training["counting_tuned_on"] = described
        metadata.training["rbc_weight_calibrated_on"] = described
    metadata.size_regressor, size_fit = fit_size_regressor(
        [images for _, images, _ in complete], config.size_samples_per_source, config.seed
    )
    metrics = {
        "size_regressor_fit": size_fit,
        "parity": {
            "max_abs_diff": parity.max_abs_diff,
            "argmax_agreement": parity.argmax_agreement,
        },
        "gflops_256": round(count_flops(model) / 1e9, 2),
        "parameters": int(model.count_params()),
    }
    metrics.update(score_sources(segmenter, splits.val_sets))
    metadata.metrics = metrics
    (export_dir / METADATA_FILE).write_text(metadata.model_dump_json(indent=2))
    return metrics


def train(config: TrainConfig) -> dict:
    """Run (or resume) training, then export, verify, score and draw the run's pictures."""
    run_dir = Path(config.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps(asdict(config), indent=2))
    keras.utils.set_random_seed(config.seed)
    started = time.perf_counter()
    splits = load_splits(config)
    model = fit(config, splits, run_dir)
    metrics = export_and_score(model, config, splits, run_dir)
    metrics["train_seconds_this_session"] = round(time.perf_counter() - started, 1)
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    plot_history(run_dir / HISTORY_FILE, run_dir / "history.png")
    plot_samples(
        model,
        splits.val,
        config.targets,
        run_dir / "samples.png",
        build_metadata(config, splits.rbc_diameter_px),
    )
    return metrics
