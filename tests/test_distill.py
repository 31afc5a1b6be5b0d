"""Distillation: a published model's outputs on each crop follow the targets, the loss pulls
the student towards them, and a run taught so trains, resumes and exports."""

import json
from pathlib import Path

import numpy as np
import pytest

from app.inference.metadata import InputSpec
from tests.conftest import FIXTURE_TXL, ROOT, SHIPPED_MODEL, tiny_platelet_recipe
from training.augment import AugmentConfig
from training.data import load_dataset
from training.dataset import CellBatches, prepare_examples
from training.distill import Teacher
from training.losses import CellLoss

CHANNELS = ["background", "rbc", "wbc", "platelet", "centre"]


@pytest.fixture(scope="module")
def teacher() -> Teacher:
    return Teacher(SHIPPED_MODEL, CHANNELS)


def fixture_examples():
    images = load_dataset(FIXTURE_TXL)
    return prepare_examples(images[:3], 0.5, "txl-pbc")


def test_a_teachers_outputs_follow_each_batchs_targets(teacher):
    examples = fixture_examples()
    normalization = InputSpec().normalization
    args = (examples, 2, 64, "ellipses", normalization, AugmentConfig(), 3, 4, 0, None, 16)
    plain = CellBatches(*args)
    taught = CellBatches(*args, teacher=teacher)
    crops, targets = plain[0]
    taught_crops, taught_targets = taught[0]
    # the same crops and targets (the same seeded draw), then the teacher's five channels
    np.testing.assert_array_equal(taught_crops, crops)
    assert taught_targets.shape == (*targets.shape[:-1], targets.shape[-1] + len(CHANNELS))
    np.testing.assert_array_equal(taught_targets[..., : targets.shape[-1]], targets)
    outputs = taught_targets[..., targets.shape[-1] :]
    np.testing.assert_allclose(outputs, teacher(crops), atol=1e-6)
    # softmax classes that sum to one, and a heatmap in [0, 1] that is not flat
    np.testing.assert_allclose(outputs[..., :4].sum(axis=-1), 1.0, atol=1e-4)
    assert 0.0 <= outputs[..., 4].min() < 0.1 and outputs[..., 4].max() > 0.3


def test_a_teacher_of_other_channels_is_refused():
    with pytest.raises(ValueError, match="a teacher must have the student's channels"):
        Teacher(ROOT / "models" / "bloodseg" / "1.1.0", CHANNELS)  # no platelet channel
    with pytest.raises(ValueError, match="student's channels"):
        Teacher(SHIPPED_MODEL, CHANNELS[:-1])


def soft_outputs(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    logits = rng.normal(size=(*shape, 4))
    classes = np.exp(logits) / np.exp(logits).sum(axis=-1, keepdims=True)
    centre = rng.uniform(0.05, 0.95, size=(*shape, 1))
    return np.concatenate([classes, centre], axis=-1).astype(np.float32)


def test_distillation_is_least_at_the_teachers_own_outputs():
    rng = np.random.default_rng(0)
    teacher = soft_outputs(rng, (2, 8, 8))
    targets = np.zeros((2, 8, 8, 6), np.float32)  # allowed classes, centre, centre weight
    targets[..., 0] = 1.0
    y_true = np.concatenate([targets, teacher], axis=-1)
    loss = CellLoss((1.0, 1.0, 3.0, 3.0), distill_weight=2.0)
    at_teacher = float(loss.distillation(y_true, teacher))
    # what is left at the teacher's own outputs is the entropy of its heatmap alone
    p = teacher[..., 4]
    entropy = float(np.mean(-(p * np.log(p) + (1 - p) * np.log(1 - p))))
    assert at_teacher == pytest.approx(entropy, rel=1e-4)
    for _ in range(5):
        other = soft_outputs(rng, (2, 8, 8))
        assert float(loss.distillation(y_true, other)) > at_teacher + 0.1
    # the term is added to the box loss with its weight, and no teacher means no term
    plain = CellLoss((1.0, 1.0, 3.0, 3.0))
    other = soft_outputs(rng, (2, 8, 8))
    with_term = float(loss(y_true, other)) - float(plain(targets, other))
    assert with_term == pytest.approx(2.0 * float(loss.distillation(y_true, other)), rel=1e-3)


@pytest.mark.slow
def test_a_taught_run_trains_resumes_exports_and_seeds_another_run(tmp_path: Path, caplog):
    import keras

    from app.inference.metadata import read_metadata, resolve_model_dir
    from training.cli import main

    args = [
        *tiny_platelet_recipe(tmp_path),
        "--level-filters",
        "4",
        "6",
        "12",
        "--no-tune-counting",
        "--teacher",
        str(SHIPPED_MODEL),
        "--distill-weight",
        "2",
        "--version",
        "2.3.0-test",
    ]
    assert main([*args, "--epochs", "1"]) == 0
    assert main([*args, "--epochs", "2"]) == 0  # resumes from last.keras
    assert json.loads((tmp_path / "state.json").read_text())["epochs_done"] == 2
    assert "resuming with the checkpoint's loss" not in caplog.text
    # the checkpoint keeps the loss with its distillation weight, so a resumed run is taught too
    resumed = keras.models.load_model(tmp_path / "last.keras")
    assert resumed.loss.distill_weight == 2.0
    metadata = read_metadata(tmp_path / "export" / "model.json")
    assert metadata.output.channels == CHANNELS
    assert metadata.training["teacher"] == str(SHIPPED_MODEL)
    shipped = read_metadata(resolve_model_dir(SHIPPED_MODEL) / "model.json")
    assert metadata.training["taught_by"] == f"bloodseg {shipped.version}"
    assert metadata.training["distill_weight"] == 2.0
    assert metadata.training["level_filters"] == [4, 6, 12]
    assert resumed.get_layer("bottleneck_conv2").filters == 12

    # resumed with another weight, the checkpoint's loss trains on, and the log says so
    weight = args.index("--distill-weight") + 1
    other = [*args[:weight], "3", *args[weight + 1 :], "--epochs", "3"]
    caplog.clear()
    assert main(other) == 0
    assert "resuming with the checkpoint's loss" in caplog.text

    # a new run started from its weights, with its own recipe: at learning rate 0 its
    # convolutions stay the checkpoint's (a fresh run's, seeded otherwise, do not)
    seeded = tmp_path / "seeded"
    run_dir = args.index("--run-dir") + 1
    again = [*args[:run_dir], str(seeded), *args[run_dir + 1 :], "--epochs", "1"]
    init = ["--init-weights", str(tmp_path / "best.keras"), "--learning-rate", "0"]
    assert main([*again, *init]) == 0
    fresh = [*again[:run_dir], str(tmp_path / "fresh"), *again[run_dir + 1 :], "--seed", "8"]
    assert main(fresh) == 0
    source = keras.models.load_model(tmp_path / "best.keras").get_layer("down0_conv1")
    kernel = source.get_weights()[0]
    for name, same in (("seeded", True), ("fresh", False)):
        model = keras.models.load_model(tmp_path / name / "best.keras")
        assert np.array_equal(model.get_layer("down0_conv1").get_weights()[0], kernel) is same
