"""What one image may cost, judged from its header size and the requested scale before any
pixel is decoded: the decoded pixels, and the pixels the network really processes (after
resampling, padding and tiling)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

MIN_SIDE_PX = 16  # at the model's scale: a smaller side cannot hold a cell
MAX_ASPECT_RATIO = 32.0
MIN_SCALE = 1 / 64
MAX_SCALE = 8.0


class WorkRefused(ValueError):
    """An image this service will not process, with the HTTP status and code to answer."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code = status, code


@dataclass(frozen=True)
class WorkLimits:
    """The per-request bounds from the settings."""

    max_pixels: int
    max_work_pixels: int


def scaled_size(width: int, height: int, scale: float) -> tuple[int, int]:
    """The size an image has once resampled by `scale` (as preprocess.rescale_image does it)."""
    if abs(scale - 1.0) < 1e-6:
        return width, height
    return max(1, round(width * scale)), max(1, round(height * scale))


def check_work(
    width: int,
    height: int,
    scale: float | None,
    limits: WorkLimits,
    work_pixels: Callable[[int, int], int],
) -> int:
    """Refuse an image whose work is out of bounds; return the pixels the network will process.

    `work_pixels(height, width)` counts tiles x tile area for an image of that size at the
    model's scale (the runner knows its tiling). With `scale` None (not known yet: it will be
    estimated) only the size checks are made, and 0 is returned.
    """
    if width * height > limits.max_pixels:
        raise WorkRefused(
            413,
            "image_too_large",
            f"image is {width}x{height} = {width * height} pixels, over the "
            f"{limits.max_pixels} limit",
        )
    if scale is not None and not MIN_SCALE <= scale <= MAX_SCALE:
        raise WorkRefused(
            422,
            "invalid_scale",
            f"the resampling factor {scale:.4g} is outside [{MIN_SCALE:.4g}, {MAX_SCALE:g}]: "
            "check scale or rbc_diameter",
        )
    if max(width, height) > MAX_ASPECT_RATIO * min(width, height):
        raise WorkRefused(
            422,
            "degenerate_image",
            f"image is {width}x{height}: sides differ by more than {MAX_ASPECT_RATIO:g}x",
        )
    if scale is None:
        if min(width, height) < MIN_SIDE_PX:
            raise WorkRefused(
                422,
                "degenerate_image",
                f"image is {width}x{height}: too small to hold a cell or estimate its "
                f"magnification (each side needs at least {MIN_SIDE_PX} pixels)",
            )
        return 0
    scaled_w, scaled_h = scaled_size(width, height, scale)
    if min(scaled_w, scaled_h) < MIN_SIDE_PX:
        raise WorkRefused(
            422,
            "degenerate_image",
            f"image is {width}x{height}, {scaled_w}x{scaled_h} at the model's scale: "
            f"each side needs at least {MIN_SIDE_PX} pixels there",
        )
    pixels = work_pixels(scaled_h, scaled_w)
    if pixels > limits.max_work_pixels:
        raise WorkRefused(
            413,
            "image_too_large",
            f"image is {width}x{height}, {scaled_w}x{scaled_h} at the model's scale: "
            f"{pixels} pixels of network work, over the {limits.max_work_pixels} limit",
        )
    return pixels
