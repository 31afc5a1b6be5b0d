"""Decode uploaded or stored image bytes into an RGB uint8 array, safely."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

SUPPORTED_FORMATS = frozenset({"PNG", "JPEG", "TIFF", "BMP", "GIF", "WEBP", "MPO"})


class ImageDecodeError(ValueError):
    """The bytes are not an image this service reads (empty, truncated, unknown format)."""


class ImageTooLargeError(ValueError):
    """The image header declares more pixels than allowed."""


def _to_rgb(image: Image.Image) -> np.ndarray:
    """RGB uint8 from any Pillow mode: 16-bit and float scaled, transparency over white."""
    if image.mode in {"I;16", "I;16B", "I;16L", "I", "F"}:
        values = np.asarray(image, dtype=np.float64)
        top = values.max()
        scaled = values / top * 255.0 if top > 255 else values
        gray = np.clip(scaled, 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=-1)
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in {"RGBA", "LA", "PA"}:
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image.convert("RGBA"))
    return np.asarray(image.convert("RGB"))


def decode_image(data: bytes, max_pixels: int | None = None) -> np.ndarray:
    """Decode image bytes (first frame, EXIF orientation applied) into (H, W, 3) uint8.

    The pixel limit is checked from the header, before any pixel data is decompressed.
    """
    if not data:
        raise ImageDecodeError("the upload is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
        if image.format not in SUPPORTED_FORMATS:
            raise ImageDecodeError(f"unsupported image format {image.format}")
        width, height = image.size
        if max_pixels is not None and width * height > max_pixels:
            raise ImageTooLargeError(
                f"image is {width}x{height} = {width * height} pixels, over the {max_pixels} limit"
            )
        image.seek(0)
        image.load()
        return _to_rgb(ImageOps.exif_transpose(image))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageTooLargeError(str(error)) from error
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as error:
        if isinstance(error, ImageTooLargeError | ImageDecodeError):
            raise
        raise ImageDecodeError(f"cannot decode the image: {error}") from error


def load_image(path: Path) -> np.ndarray:
    """Read an image file into (H, W, 3) uint8 RGB."""
    return decode_image(path.read_bytes())
