"""`python -m training evaluate` on real images, through the ONNX model and the app's pipeline."""

import json

import pytest

from tests.conftest import BCCD, BCD, SHIPPED_MODEL
from training.cli import main

pytestmark = pytest.mark.datasets


def evaluate(capsys, *args: str) -> dict:
    capsys.readouterr()
    assert main(["evaluate", "--model", str(SHIPPED_MODEL), *args]) == 0
    return json.loads(capsys.readouterr().out)


def test_shipped_model_meets_its_bar_on_blood_cell_detection_val(capsys):
    result = evaluate(capsys, "--data", str(BCD), "--split", "val")
    assert result["images"] == 16 and result["scale"] == pytest.approx(1.0, abs=0.1)
    assert result["wbc"]["f1"] >= 0.95
    assert result["rbc"]["count_mae"] <= 1.5
    assert result["pixel_accuracy"] > 0.8 and result["dice_wbc"] > 0.8


def test_evaluate_reads_the_voc_layout_at_its_magnification(capsys):
    result = evaluate(capsys, "--data", str(BCCD), "--split", "val")
    assert result["images"] == 87
    assert 0.45 < result["scale"] < 0.6  # BCCD cells are about twice as large
    assert result["wbc"]["f1"] > 0.8
