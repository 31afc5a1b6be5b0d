"""ONNX Runtime session for a published model, run over tiles with a seamless merge."""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from app.inference.metadata import MODEL_FILE, ModelMetadata
from app.inference.preprocess import blend_weights, pad_to_tile, padded_size, tile_windows

logger = logging.getLogger(__name__)

DEFAULT_PROVIDERS = ("CUDAExecutionProvider", "CPUExecutionProvider")


def preload_cuda_libraries() -> None:
    """Load CUDA/cuDNN from the nvidia-* pip packages (the Docker image's way of shipping them).

    Skipped where those packages are absent: the system's libraries are then used, if any.
    """
    if importlib.util.find_spec("nvidia") is not None:
        ort.preload_dlls()


def choose_providers(requested: tuple[str, ...] | list[str]) -> list[str]:
    """Keep the requested providers this ONNX Runtime build has, CPU always last as a fallback."""
    available = set(ort.get_available_providers())
    if "CUDAExecutionProvider" in requested and "CUDAExecutionProvider" in available:
        preload_cuda_libraries()
    chosen = [p for p in requested if p in available and p != "CPUExecutionProvider"]
    missing = [p for p in requested if p not in available]
    if missing:
        logger.warning("execution providers not available here, skipped: %s", ", ".join(missing))
    return [*chosen, "CPUExecutionProvider"]


@dataclass(frozen=True)
class RunnerOptions:
    """How to run the session: providers in order of preference, threads, tiling and batching."""

    providers: tuple[str, ...] = DEFAULT_PROVIDERS
    intra_op_threads: int = 0
    inter_op_threads: int = 0
    tile_overlap: int = 64
    batch_size: int = 4


class OnnxSegmenter:
    """Runs a published model on normalised images of any size."""

    def __init__(self, model_dir: Path, metadata: ModelMetadata, options: RunnerOptions) -> None:
        session_options = ort.SessionOptions()
        session_options.intra_op_num_threads = options.intra_op_threads
        session_options.inter_op_num_threads = options.inter_op_threads
        self.metadata = metadata
        self.options = options
        self.session = ort.InferenceSession(
            str(model_dir / MODEL_FILE),
            sess_options=session_options,
            providers=choose_providers(options.providers),
        )
        self.provider = self.session.get_providers()[0]
        self.input_name = self.session.get_inputs()[0].name
        if options.providers and self.provider != options.providers[0]:
            logger.warning(
                "%s was requested but is unavailable here: falling back to %s",
                options.providers[0],
                self.provider,
            )
        logger.info("model %s %s runs on %s", metadata.name, metadata.version, self.provider)

    @property
    def tile_size(self) -> int:
        return self.metadata.input.tile_size

    @property
    def overlap(self) -> int:
        return min(self.options.tile_overlap, self.tile_size // 2)

    def work_pixels(self, height: int, width: int) -> int:
        """Pixels the network processes for an image of this size: tiles x tile area."""
        padded_h, padded_w = padded_size(
            height, width, self.tile_size, self.metadata.input.size_multiple
        )
        windows = tile_windows(padded_h, padded_w, self.tile_size, self.overlap)
        return len(windows) * self.tile_size**2

    def run_batch(self, batch: np.ndarray) -> np.ndarray:
        """Run the network on a NHWC float32 batch of tiles."""
        return self.session.run(None, {self.input_name: batch.astype(np.float32)})[0]

    def predict(
        self,
        normalized: np.ndarray,
        check: Callable[[], None] | None = None,
        run: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> np.ndarray:
        """Probabilities (H, W, C) of a normalised (H, W, 3) image, merged from tiles.

        `check` is called before each batch of tiles; it raises to stop the work early. `run`
        runs one batch (default: this session, directly; the service passes its network stage).
        """
        run = run or self.run_batch
        height, width = normalized.shape[:2]
        tile = self.tile_size
        overlap = self.overlap
        padded = pad_to_tile(normalized, tile, self.metadata.input.size_multiple)
        windows = tile_windows(padded.shape[0], padded.shape[1], tile, overlap)
        if len(windows) == 1:  # one tile: nothing to blend
            if check is not None:
                check()
            return run(padded[None])[0, :height, :width]
        weights = blend_weights(tile, overlap)[..., None]
        channels = len(self.metadata.output.channels)
        merged = np.zeros((*padded.shape[:2], channels), dtype=np.float32)
        total = np.zeros((*padded.shape[:2], 1), dtype=np.float32)
        for start in range(0, len(windows), self.options.batch_size):
            if check is not None:
                check()
            chunk = windows[start : start + self.options.batch_size]
            batch = np.stack([padded[w.top : w.top + tile, w.left : w.left + tile] for w in chunk])
            for window, probs in zip(chunk, run(batch), strict=True):
                rows = slice(window.top, window.top + tile)
                cols = slice(window.left, window.left + tile)
                merged[rows, cols] += probs * weights
                total[rows, cols] += weights
        return (merged / total)[:height, :width]
