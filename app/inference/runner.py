"""ONNX Runtime session for a published model, run over tiles with a seamless merge."""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from app.inference.cpu_features import cpu_flags, runs_int8_exactly
from app.inference.metadata import MODEL_FILE, ModelMetadata
from app.inference.preprocess import (
    blend_weights,
    padded_size,
    place_in_tile,
    tile_windows,
    window_side,
)

logger = logging.getLogger(__name__)

CUDA_PROVIDER = "CUDAExecutionProvider"
DEFAULT_PROVIDERS = (CUDA_PROVIDER, "CPUExecutionProvider")
# what precision "auto" takes where the model ships it: int8 moves counts a little more than
# its gate measures (README, "int8 on request"), so it runs only when asked for
AUTO_PRECISION = "float16"


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
    """How to run the session: providers in order of preference, threads, tiling and batching,
    the model file by `precision` ("auto": the float16 variant on CUDA where the model ships
    one, else model.onnx; "float32": model.onnx; "int8": the int8 variant on a CPU with VNNI,
    else model.onnx), and the GPU levers: cuDNN's convolution search and IO binding.
    `cpu_flags` are the CPU's instruction-set flags (None: this machine's)."""

    providers: tuple[str, ...] = DEFAULT_PROVIDERS
    intra_op_threads: int = 0
    inter_op_threads: int = 0
    tile_overlap: int = 64
    batch_size: int = 4
    spinning: bool = True
    precision: str = "auto"
    cpu_flags: frozenset[str] | None = None
    cudnn_conv_algo_search: str = "HEURISTIC"
    io_binding: bool = True
    # on the CPU, an image whose padded size holds at most this many pixels runs as one window
    # of its own size, a larger one in even windows of at most that area, instead of tiles
    # (0: always tiles); see OnnxSegmenter.window_shape
    max_window_pixels: int = 1024 * 1024


def provider_options(providers: list[str], options: RunnerOptions) -> list[dict[str, str]]:
    """Per-provider options: CUDA gets the cuDNN search mode (tiles have one fixed shape, so an
    exhaustive search would run once per batch size, at warm-up)."""
    return [
        {"cudnn_conv_algo_search": options.cudnn_conv_algo_search} if p == CUDA_PROVIDER else {}
        for p in providers
    ]


class OnnxSegmenter:
    """Runs a published model on normalised images of any size."""

    def __init__(self, model_dir: Path, metadata: ModelMetadata, options: RunnerOptions) -> None:
        self.metadata = metadata
        self.options = options
        self.model_dir = model_dir
        providers = choose_providers(options.providers)
        self.model_file = self._file_for(providers[0])
        self.session = self._open(model_dir / self.model_file, providers)
        self.provider = self.session.get_providers()[0]
        if self.model_file != self._file_for(self.provider):  # the provider fell back
            self.model_file = self._file_for(self.provider)
            self.session = self._open(model_dir / self.model_file, [self.provider])
        if options.precision == "int8" and self.model_file == MODEL_FILE:
            logger.warning("int8 was asked for; running float32: %s", self._no_int8(self.provider))
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name
        self.device = "cuda" if self.provider == CUDA_PROVIDER else "cpu"
        self.io_binding = options.io_binding and self.provider == CUDA_PROVIDER
        if options.providers and self.provider != options.providers[0]:
            logger.warning(
                "%s was requested but is unavailable here: falling back to %s",
                options.providers[0],
                self.provider,
            )
        logger.info(
            "model %s %s runs on %s (%s)",
            metadata.name,
            metadata.version,
            self.provider,
            self.model_file,
        )

    def _file_for(self, provider: str) -> str:
        precision = self.options.precision
        if precision == "float32" or (precision == "int8" and self._no_int8(provider)):
            return MODEL_FILE
        variant = self.metadata.variant_for(
            provider, "int8" if precision == "int8" else AUTO_PRECISION
        )
        return variant.file if variant is not None else MODEL_FILE

    def _no_int8(self, provider: str) -> str | None:
        """Why the int8 variant cannot run here, or None if it can."""
        if self.metadata.variant_for(provider, "int8") is None:
            return f"the model ships no int8 variant for {provider}"
        flags = cpu_flags() if self.options.cpu_flags is None else self.options.cpu_flags
        if not runs_int8_exactly(flags):
            return "this CPU lacks VNNI, without which int8 convolutions can saturate"
        return None

    def _open(self, path: Path, providers: list[str]) -> ort.InferenceSession:
        session_options = ort.SessionOptions()
        session_options.intra_op_num_threads = self.options.intra_op_threads
        session_options.inter_op_num_threads = self.options.inter_op_threads
        if not self.options.spinning:
            session_options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        return ort.InferenceSession(
            str(path),
            sess_options=session_options,
            providers=providers,
            provider_options=provider_options(providers, self.options),
        )

    @property
    def tile_size(self) -> int:
        return self.metadata.input.tile_size

    @property
    def overlap(self) -> int:
        return min(self.options.tile_overlap, self.tile_size // 2)

    def work_pixels(self, height: int, width: int) -> int:
        """The work bound's measure of an image of this size at the model's scale: its tiles x
        tile area. The same on every provider, so a server admits the same images on CPU and
        CUDA, and the largest admitted image (whose maps set a request's memory) stays where
        the memory note sizes it, though the CPU runs it in fewer pixels (network_pixels)."""
        return self._covering_pixels(height, width, in_tiles=True)

    def network_pixels(self, height: int, width: int) -> int:
        """Pixels this session's network runs for an image of this size at the model's
        scale: windows x window area."""
        return self._covering_pixels(height, width, in_tiles=False)

    def _covering_pixels(self, height: int, width: int, in_tiles: bool) -> int:
        """Windows x window area that cover an image of this size once padded: the model's
        tiles, or this session's window_shape."""
        padded_h, padded_w = padded_size(
            height, width, self.tile_size, self.metadata.input.size_multiple
        )
        tile = self.tile_size
        shape = (tile, tile) if in_tiles else self.window_shape(padded_h, padded_w)
        return len(tile_windows(padded_h, padded_w, shape, self.overlap)) * shape[0] * shape[1]

    def window_shape(self, padded_height: int, padded_width: int) -> tuple[int, int]:
        """The (height, width) of the windows a padded image runs in. The network is fully
        convolutional, and on the CPU its cost per pixel is the same from 256 to 1,024 px: an
        image of at most max_window_pixels runs as one window (a 640x480 smear at the working
        scale, 272x256 padded, in one pass instead of two overlapping 256 tiles, half the
        work), a larger one in even windows of at most that area, overlapping by the tile
        overlap. CUDA keeps the model's tile, so cuDNN's search and warm-up cover every batch
        and the tiles of concurrent requests always batch together."""
        tile = self.tile_size
        largest = self.options.max_window_pixels
        if self.device != "cpu" or largest <= tile * tile:
            return (min(tile, padded_height), min(tile, padded_width))
        if padded_height * padded_width <= largest:
            return (padded_height, padded_width)
        multiple = self.metadata.input.size_multiple
        side = max(tile, int(np.sqrt(largest)) // multiple * multiple)
        return (
            window_side(padded_height, side, self.overlap, multiple),
            window_side(padded_width, side, self.overlap, multiple),
        )

    def run_batch(self, batch: np.ndarray) -> np.ndarray:
        """Run the network on a NHWC float32 batch of tiles."""
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if self.io_binding:
            return self.run_bound(batch, self.device)
        return self.session.run(None, {self.input_name: batch})[0]

    def run_bound(self, batch: np.ndarray, device: str) -> np.ndarray:
        """Run with IO binding: the output is allocated on `device` by ONNX Runtime and copied
        back once, instead of through the default run path's extra copies."""
        binding = self.session.io_binding()
        binding.bind_cpu_input(self.input_name, batch)
        binding.bind_output(self.output_name, device)
        self.session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()[0]

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
        spec = self.metadata.input
        padded, top, left = place_in_tile(normalized, tile, spec.size_multiple, spec.edge_border_px)
        image_part = slice(top, top + height), slice(left, left + width)
        shape = self.window_shape(*padded.shape[:2])
        if shape == padded.shape[:2]:  # one window: nothing to blend
            if check is not None:
                check()
            return run(padded[None])[0][image_part]
        windows = tile_windows(padded.shape[0], padded.shape[1], shape, overlap)
        weights = blend_weights(shape, overlap)[..., None]
        channels = len(self.metadata.output.channels)
        merged = np.zeros((*padded.shape[:2], channels), dtype=np.float32)
        total = np.zeros((*padded.shape[:2], 1), dtype=np.float32)
        # batch_size counts tiles: a larger window counts as the tiles its area holds
        per_batch = max(1, self.options.batch_size * tile * tile // (shape[0] * shape[1]))
        for start in range(0, len(windows), per_batch):
            if check is not None:
                check()
            chunk = windows[start : start + per_batch]
            batch = np.stack(
                [padded[w.top : w.top + shape[0], w.left : w.left + shape[1]] for w in chunk]
            )
            for window, probs in zip(chunk, run(batch), strict=True):
                rows = slice(window.top, window.top + shape[0])
                cols = slice(window.left, window.left + shape[1])
                merged[rows, cols] += probs * weights
                total[rows, cols] += weights
        merged /= total  # in place: a second full-size copy is most of a large image's peak
        return merged[image_part]
