"""PNG encoding of the response's pictures, twice as fast as Pillow's at the same zlib settings.

Pillow picks a row filter per row by trying all five (libpng's heuristic): on a 640x480 RGB
overlay that search costs as much as the compression itself (about 18 ms each on the 2-core
CPU). Here every row takes the Up filter (each byte minus the one above it), one vectorised
subtraction, which suits smears (rows change slowly): overlays come out 10 to 16 % larger than
Pillow's, the label maps (a few kB) up to half again as large. Any PNG reader reads the
result; tests decode it with Pillow.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

SIGNATURE = b"\x89PNG\r\n\x1a\n"
UP_FILTER = 2
# (bit depth, colour type) per (dtype, channels): grey 8 and 16 bit, RGB 8 bit
FORMATS = {("uint8", 1): (8, 0), ("uint16", 1): (16, 0), ("uint8", 3): (8, 2)}
# the fastest zlib level with run-length matching: as quick as level 1, smaller than it
COMPRESS_LEVEL = 1
COMPRESS_STRATEGY = zlib.Z_RLE
# rows filtered at once: bounds the copy a large picture needs
BLOCK_BYTES = 1 << 20


def encode_png(array: np.ndarray) -> bytes:
    """A PNG of a uint8 grey (H, W), uint16 grey (H, W) or uint8 RGB (H, W, 3) array."""
    height, width = array.shape[:2]
    channels = 1 if array.ndim == 2 else array.shape[2]
    key = (array.dtype.name, channels)
    if key not in FORMATS:
        raise ValueError(f"cannot encode a {array.dtype} array with {channels} channels as PNG")
    depth, colour_type = FORMATS[key]
    # PNG stores 16-bit samples big-endian; rows as bytes, converted and filtered a block of
    # rows at a time so a large picture is not copied whole
    sample = ">u2" if depth == 16 else np.uint8
    row_bytes = width * channels * (depth // 8)
    block_rows = max(1, BLOCK_BYTES // row_bytes)
    compressor = zlib.compressobj(COMPRESS_LEVEL, zlib.DEFLATED, 15, 9, COMPRESS_STRATEGY)
    parts = []
    above = np.zeros(row_bytes, dtype=np.uint8)  # the row above the first is zeros
    for start in range(0, height, block_rows):
        block = np.ascontiguousarray(array[start : start + block_rows], dtype=sample)
        rows = block.view(np.uint8).reshape(len(block), row_bytes)
        scanlines = np.empty((len(rows), row_bytes + 1), dtype=np.uint8)
        scanlines[:, 0] = UP_FILTER
        np.subtract(rows[0], above, out=scanlines[0, 1:])  # modulo 256, as PNG defines it
        np.subtract(rows[1:], rows[:-1], out=scanlines[1:, 1:])
        parts.append(compressor.compress(scanlines))
        above = rows[-1]
    parts.append(compressor.flush())
    data = b"".join(parts)
    header = struct.pack(">IIBBBBB", width, height, depth, colour_type, 0, 0, 0)
    return SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", data) + _chunk(b"IEND", b"")


def _chunk(kind: bytes, payload: bytes) -> bytes:
    """One PNG chunk: length, type, payload, CRC of type and payload."""
    crc = zlib.crc32(payload, zlib.crc32(kind))
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)
