"""Decode uploaded or stored image bytes into an RGB uint8 array, safely.

Decoding is two steps so that a caller can refuse an image from its header alone:
`open_image` reads the header (format, size) and `image_to_rgb` decompresses.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

SUPPORTED_FORMATS = frozenset({"PNG", "JPEG", "TIFF", "BMP", "GIF", "WEBP", "MPO"})
DECODE_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError)


class ImageDecodeError(ValueError):
    """The bytes are not an image this service reads (empty, truncated, unknown format)."""


class ImageTooLargeError(ValueError):
    """The image header declares more pixels than allowed."""


def _to_rgb(image: Image.Image) -> np.ndarray:
    """RGB uint8 from any Pillow mode: 16-bit and float scaled, transparency over white."""
    if image.mode in {"I;16", "I;16B", "I;16L", "I", "F"}:
        return np.repeat(_gray_levels(image)[..., None], 3, axis=-1)
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in {"RGBA", "LA", "PA"} and _opaque(image):
        return np.asarray(image.convert("RGB"))
    if image.mode in {"RGBA", "LA", "PA"}:
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image.convert("RGBA"))
    return np.asarray(image.convert("RGB"))


def _gray_levels(image: Image.Image) -> np.ndarray:
    """uint8 levels of a 16-bit, 32-bit integer or float image: values above 255 scaled by
    the image's maximum; a float image whose values lie within [0, 1] (as ImageJ and
    scikit-image write normalised ones) taken as fractions of white; NaN and infinities black."""
    values = np.asarray(image, dtype=np.float64)
    values = np.where(np.isfinite(values), values, 0.0)
    top = float(values.max())
    if top > 255:
        values = values / top * 255.0
    elif image.mode == "F" and 0 < top <= 1:
        values = values * 255.0
    return np.clip(values, 0, 255).astype(np.uint8)


def _opaque(image: Image.Image) -> bool:
    """Whether every pixel's alpha is 255 (many RGBA smears are), so no compositing is needed."""
    alpha = image.getchannel("A")
    return alpha.getextrema() == (255, 255)


def _reason(error: Exception) -> str:
    """Pillow's message without object reprs such as '<_io.BytesIO object at 0x...>'."""
    if isinstance(error, UnidentifiedImageError):
        return "not a recognised image format"
    text = str(error).split(" <", 1)[0].strip()
    return text or type(error).__name__


def open_image(data: bytes) -> Image.Image:
    """Read the header of image bytes (no pixel data is decompressed yet)."""
    if not data:
        raise ImageDecodeError("the upload is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageTooLargeError(str(error)) from error
    except DECODE_ERRORS as error:
        raise ImageDecodeError(f"cannot decode the image: {_reason(error)}") from error
    if image.format not in SUPPORTED_FORMATS:
        raise ImageDecodeError(f"unsupported image format {image.format}")
    return image


def image_to_rgb(image: Image.Image) -> np.ndarray:
    """Decompress an opened image (first frame, EXIF orientation applied) into (H, W, 3) uint8."""
    try:
        image.seek(0)
        image.load()
        return _to_rgb(ImageOps.exif_transpose(image))
    except DECODE_ERRORS as error:
        raise ImageDecodeError(f"cannot decode the image: {_reason(error)}") from error


def decode_image(data: bytes) -> np.ndarray:
    """Decode image bytes into (H, W, 3) uint8 (the service bounds the size first, from the
    header, with budget.check_work; Pillow's own bomb limit always applies)."""
    return image_to_rgb(open_image(data))


def load_image(path: Path) -> np.ndarray:
    """Read an image file into (H, W, 3) uint8 RGB."""
    return decode_image(path.read_bytes())
