"""The pictures' PNG encoder: what Pillow decodes is the array, to the value."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from app.inference import png
from app.inference.png import encode_png
from tests.conftest import FIXTURE_BCD


def decoded(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        assert image.format == "PNG"
        return np.asarray(image)


@pytest.mark.parametrize(
    "shape, dtype, high",
    [
        ((37, 53), np.uint8, 256),  # a class mask
        ((37, 53), np.uint16, 65536),  # an instance map: byte order matters past 255
        ((37, 53, 3), np.uint8, 256),  # an overlay
        ((1, 1), np.uint8, 256),
        ((1, 40, 3), np.uint8, 256),  # one row: no row above to filter against
        ((40, 1), np.uint16, 65536),
    ],
)
def test_pillow_reads_back_every_value(shape, dtype, high):
    """Random values, so every byte difference of the Up filter wraps both ways."""
    array = np.random.default_rng(1).integers(0, high, shape).astype(dtype)
    np.testing.assert_array_equal(decoded(encode_png(array)).astype(dtype), array)


@pytest.mark.parametrize("block_bytes", [1, 100, 5000])
def test_rows_filtered_block_by_block_join_up(monkeypatch, block_bytes):
    """A picture larger than a block is filtered in several, each block's first row against
    the last row of the one before."""
    monkeypatch.setattr(png, "BLOCK_BYTES", block_bytes)
    rng = np.random.default_rng(2)
    for array in (
        rng.integers(0, 256, (41, 29, 3)).astype(np.uint8),
        rng.integers(0, 65536, (33, 17)).astype(np.uint16),
    ):
        np.testing.assert_array_equal(decoded(encode_png(array)).astype(array.dtype), array)


def test_a_real_smear_round_trips_and_compresses():
    with Image.open(FIXTURE_BCD / "images" / "image-2.png") as image:
        smear = np.asarray(image.convert("RGB"))
    data = encode_png(smear)
    np.testing.assert_array_equal(decoded(data), smear)
    assert len(data) < smear.nbytes * 0.8


def test_a_16_bit_map_decodes_as_16_bit():
    labels = np.arange(300 * 7, dtype=np.uint16).reshape(7, 300)
    with Image.open(io.BytesIO(encode_png(labels))) as image:
        assert image.mode.startswith("I")
        assert int(np.asarray(image).max()) == 300 * 7 - 1


@pytest.mark.parametrize("array", [np.zeros((4, 4), np.float32), np.zeros((4, 4, 4), np.uint8)])
def test_other_arrays_are_refused(array):
    with pytest.raises(ValueError, match="cannot encode"):
        encode_png(array)
