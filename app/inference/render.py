"""Pictures of a segmentation: a class-tinted, outlined, centre-marked overlay."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from app.inference.metadata import ModelMetadata
from app.inference.postprocess import Cell, Instances, class_mask, inner_boundaries

TINT_ALPHA = 0.35
STRIP_ROWS = 512


def overlay_image(
    image: np.ndarray, instances: Instances, cells: list[Cell], metadata: ModelMetadata
) -> np.ndarray:
    """The RGB image with each cell tinted by its class colour, outlined, and its centre marked."""
    colors = np.zeros((len(metadata.classes), 3), dtype=np.uint16)
    for info in metadata.classes:
        colors[info.id] = info.color
    pixel_class = class_mask(instances)
    # integer blend in 1/256ths: weight 0 outside cells, TINT_ALPHA inside; per class the
    # image's share and the colour's share with the rounding half
    weights = np.full(len(colors), round(TINT_ALPHA * 256), dtype=np.uint16)
    weights[0] = 0
    kept, added = 256 - weights, colors * weights[:, None] + 128
    out = np.empty_like(image)
    # in strips of rows: the uint16 working copies of a 40 MP image would be 0.8 GB at once
    for top in range(0, image.shape[0], STRIP_ROWS):
        rows = slice(top, top + STRIP_ROWS)
        part, classes = image[rows].astype(np.uint16), pixel_class[rows]
        # np.take: a quarter of the time of fancy indexing for these lookups over every pixel
        part *= np.take(kept, classes)[..., None]
        part += np.take(added, classes, axis=0)
        part >>= 8
        out[rows] = part
    edges = inner_boundaries(instances.labels)
    out[edges] = colors[pixel_class[edges]]
    picture = Image.fromarray(out)
    draw = ImageDraw.Draw(picture)
    radius = max(2, round(min(image.shape[:2]) / 200))
    for cell in cells:
        x, y = cell.centroid
        draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=(255, 255, 255))
    return np.asarray(picture)
