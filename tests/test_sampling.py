"""How training draws its crops: sources weighted by sqrt(size), times a boost a user names."""

import numpy as np
import pytest

from training.cli import parse_boost
from training.config import TrainConfig
from training.dataset import Example, source_weights
from training.train import Splits, fit


def examples(sizes: dict[str, int]) -> list[Example]:
    blank = np.zeros((8, 8, 3), np.uint8)
    return [Example(blank, [], True, True, name) for name, n in sizes.items() for _ in range(n)]


def source_shares(weights: np.ndarray, items: list[Example]) -> dict[str, float]:
    shares: dict[str, float] = {}
    for weight, item in zip(weights, items, strict=True):
        shares[item.source] = shares.get(item.source, 0.0) + float(weight)
    return shares


def test_sources_weigh_by_the_square_root_of_their_size_times_their_boost():
    items = examples({"small": 16, "large": 400})
    plain = source_shares(source_weights(items), items)
    assert plain["large"] / plain["small"] == pytest.approx(20 / 4)
    boosted = source_shares(source_weights(items, {"small": 3.0}), items)
    assert boosted["large"] / boosted["small"] == pytest.approx(20 / 12)
    assert sum(boosted.values()) == pytest.approx(1.0)


def test_a_boost_is_source_equals_a_positive_factor():
    assert parse_boost("txl-pbc:640x480=2.5") == ("txl-pbc:640x480", 2.5)
    for wrong in ("blood-cell-detection", "=2", "bcd=0", "bcd=much"):
        with pytest.raises(SystemExit, match="SOURCE=FACTOR"):
            parse_boost(wrong)


def test_boosting_a_source_that_is_not_trained_on_is_refused(tmp_path):
    splits = Splits(examples({"blood-cell-detection": 2}), [], [], 40.0, [], [])
    config = TrainConfig(source_boost={"blood-cel-detection": 3.0})
    with pytest.raises(ValueError, match="blood-cel-detection"):
        fit(config, splits, tmp_path)
