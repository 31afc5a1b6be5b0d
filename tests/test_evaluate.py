"""`python -m training evaluate` on real images, through the ONNX model and the app's pipeline."""

import json

import pytest

from tests.conftest import BCCD, BCD, SHIPPED_MODEL
from training.cli import main

pytestmark = pytest.mark.datasets


MODEL_1_1 = SHIPPED_MODEL / "1.1.1" if (SHIPPED_MODEL / "1.1.1").is_dir() else SHIPPED_MODEL


def evaluate(capsys, *args: str, model=SHIPPED_MODEL) -> dict:
    capsys.readouterr()
    assert main(["evaluate", "--model", str(model), *args]) == 0
    return json.loads(capsys.readouterr().out)


def assert_blood_cell_detection_bar(result: dict) -> None:
    assert result["images"] == 16
    assert result["wbc"]["f1"] >= 0.95
    assert result["rbc"]["count_mae"] <= 1.5
    assert result["pixel_accuracy"] > 0.8 and result["dice_wbc"] > 0.8


@pytest.mark.xfail(
    strict=True,
    reason="known gap: 2.x undercounts blood-cell-detection's dense RBCs at its own "
    "magnification (RBC count MAE on val: 2.0.0 4.19, 2.1.0 3.63, 2.2.0 and 2.2.1 3.00, the "
    "same network and counting, 2.2.2 2.25: that network at 46 px); 1.1.1, still shipped, "
    "meets the bar",
)
def test_shipped_model_meets_its_bar_on_blood_cell_detection_val(capsys):
    assert_blood_cell_detection_bar(evaluate(capsys, "--data", str(BCD), "--split", "val"))


def test_the_1_1_model_still_meets_the_bar_on_blood_cell_detection_val(capsys):
    result = evaluate(capsys, "--data", str(BCD), "--split", "val", model=MODEL_1_1)
    assert result["scale"] == pytest.approx(1.0, abs=0.1)
    assert_blood_cell_detection_bar(result)


def test_evaluate_reads_the_voc_layout_at_its_magnification(capsys):
    result = evaluate(capsys, "--data", str(BCCD), "--split", "val")
    assert result["images"] == 87
    # BCCD cells are about twice as large as blood-cell-detection's, 2.6x the model's 40 px
    assert 0.3 < result["scale"] < 0.45
    assert result["wbc"]["f1"] > 0.8
