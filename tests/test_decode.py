"""Image decoding: formats, modes, orientation, and refusal of bad bytes before decoding."""

import io

import numpy as np
import pytest
from PIL import Image

from app.inference.decode import (
    ImageDecodeError,
    ImageTooLargeError,
    decode_image,
    open_image,
)
from tests.conftest import encode, png_claiming

RGB = Image.fromarray(np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8))


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "TIFF", "BMP", "GIF", "WEBP"])
def test_formats_decode_to_rgb(fmt):
    out = decode_image(encode(RGB, fmt))
    assert out.shape == (20, 30, 3) and out.dtype == np.uint8


def test_modes_become_rgb():
    gray16 = Image.fromarray(np.arange(600, dtype=np.uint16).reshape(20, 30) * 100)
    out = decode_image(encode(gray16, "PNG"))
    assert out.shape == (20, 30, 3) and out.max() == 255 and (out[..., 0] == out[..., 2]).all()
    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    assert (decode_image(encode(rgba, "PNG")) == 255).all()  # transparent -> white
    palette = RGB.convert("P")
    assert decode_image(encode(palette, "PNG")).shape == (20, 30, 3)
    assert decode_image(encode(RGB.convert("L"), "JPEG")).shape == (20, 30, 3)


def test_exif_orientation_is_applied():
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    out = decode_image(encode(RGB, "JPEG", exif=exif))
    assert out.shape == (30, 20, 3)


def test_opening_reads_the_header_only():
    """A 1 x 40,000,000 PNG (160 MB of pixels) is opened without decompressing them."""
    opened = open_image(png_claiming(1, 40_000_000, pixels=b"\0" * 4 * 40_000_000))
    assert opened.size == (1, 40_000_000)
    assert opened.tile  # the decoder work is still pending: nothing was decompressed


def test_gif_first_frame():
    frames = [Image.new("RGB", (8, 8), c) for c in ((255, 0, 0), (0, 0, 255))]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
    out = decode_image(buffer.getvalue())
    assert out[0, 0, 0] > 200 and out[0, 0, 2] < 50


def test_decompression_bomb_is_refused_from_the_header():
    with pytest.raises(ImageTooLargeError, match="pixels"):
        decode_image(png_claiming(50_000, 50_000))


@pytest.mark.parametrize(
    "data", [b"", b"hello, not an image", encode(RGB, "PNG")[:60], b"%PDF-1.4 fake"]
)
def test_bad_bytes_are_decode_errors(data):
    with pytest.raises(ImageDecodeError):
        decode_image(data)


def test_decode_errors_do_not_leak_object_reprs():
    with pytest.raises(ImageDecodeError) as error:
        decode_image(b"just some text")
    assert "object at 0x" not in str(error.value) and "<" not in str(error.value)
    assert "not a recognised image format" in str(error.value)


def test_float_images_keep_their_contrast():
    """32-bit float TIFFs (ImageJ, scikit-image) in [0, 1] are fractions of white, others as
    16-bit ones; NaN and infinities do not poison the rest of the image."""
    ramp = np.linspace(0, 1, 600, dtype=np.float32).reshape(20, 30)
    out = decode_image(encode(Image.fromarray(ramp), "TIFF"))
    assert out.shape == (20, 30, 3) and out.min() == 0 and out.max() == 255
    assert np.array_equal(out[..., 0], np.clip(ramp * 255, 0, 255).astype(np.uint8))
    wide = decode_image(encode(Image.fromarray(ramp * 4000), "TIFF"))
    assert wide.max() == 255 and np.array_equal(wide, out)
    holes = ramp.copy()
    holes[0, :3] = [np.nan, np.inf, -np.inf]
    out = decode_image(encode(Image.fromarray(holes), "TIFF"))
    assert (out[0, :3] == 0).all() and out.max() == 255
