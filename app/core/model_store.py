"""The model the service runs: loaded, verified, warmed up, and swapped atomically on refresh."""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from app.core.config import Settings
from app.core.metrics import MODEL_CPU_FALLBACK, MODEL_INFO, MODEL_LOAD_FAILURES, MODEL_READY
from app.core.network_stage import NetworkStage
from app.inference.metadata import (
    METADATA_FILE,
    MODEL_FILE,
    ModelMetadata,
    read_metadata,
    resolve_model_dir,
)
from app.inference.runner import OnnxSegmenter, RunnerOptions

logger = logging.getLogger(__name__)


class ModelLoadError(RuntimeError):
    """A model that is missing, corrupt, or does not match its model.json."""


CPU_PROVIDER = "CPUExecutionProvider"


@dataclass(frozen=True)
class LoadedModel:
    """A ready model, where it came from, and why it runs on CPU if a GPU was asked for."""

    directory: Path
    metadata: ModelMetadata
    segmenter: OnnxSegmenter
    fallback: str | None = None
    network: NetworkStage | None = None  # the service's batching stage over the segmenter


def runner_options(settings: Settings) -> RunnerOptions:
    """ONNX Runtime options from the deployment settings."""
    return RunnerOptions(
        providers=tuple(settings.providers),
        intra_op_threads=settings.intra_op_threads,
        inter_op_threads=settings.inter_op_threads,
        tile_overlap=settings.tile_overlap,
        max_window_pixels=settings.max_window_pixels,
        batch_size=settings.max_batch,
        spinning=settings.intra_op_spinning is not False,  # auto: spin when alone
        precision=settings.precision,
        cudnn_conv_algo_search=settings.cudnn_conv_algo_search,
        io_binding=settings.io_binding,
    )


def warm_up(segmenter: OnnxSegmenter) -> tuple[int, ...]:
    """Run blank tiles; returns the shape of one tile's output. On CUDA every batch size up to
    the largest is run once, so no request pays for cuDNN's algorithm search or allocation."""
    tile = segmenter.tile_size
    sizes = range(1, segmenter.options.batch_size + 1) if segmenter.device == "cuda" else [1]
    shapes = [segmenter.run_batch(np.zeros((n, tile, tile, 3), np.float32)).shape for n in sizes]
    return shapes[0]  # batch size 1


def verify_files(directory: Path, metadata: ModelMetadata) -> None:
    """model.onnx and every variant must match the sha256 that model.json records."""
    expected = {MODEL_FILE: metadata.onnx_sha256}
    expected.update({v.file: v.sha256 for v in metadata.variants})
    for name, sha in expected.items():
        if hashlib.sha256((directory / name).read_bytes()).hexdigest() != sha:
            raise ModelLoadError(f"{directory / name}: sha256 does not match model.json")


def load_model(directory: Path, options: RunnerOptions) -> LoadedModel:
    """Open a version directory: sha256 must match model.json, and a warm-up tile must give
    one output channel per channel that model.json declares.

    If the warm-up fails on an accelerator (a GPU generation this ONNX Runtime build has no
    kernels for, a driver too old), the model is loaded again on the CPU and the reason kept.
    """
    try:
        metadata = read_metadata(directory / METADATA_FILE)
        verify_files(directory, metadata)
        segmenter = OnnxSegmenter(directory, metadata, options)
        fallback = None
        try:
            shape = warm_up(segmenter)
        except Exception as error:
            if segmenter.provider == CPU_PROVIDER:
                raise
            fallback = f"{segmenter.provider} failed its warm-up, running on CPU: {error}"
            logger.warning("%s", fallback)
            segmenter = OnnxSegmenter(
                directory, metadata, replace(options, providers=(CPU_PROVIDER,))
            )
            shape = warm_up(segmenter)
        tile = metadata.input.tile_size
        expected = (1, tile, tile, len(metadata.output.channels))
        if shape != expected:
            raise ModelLoadError(f"output shape {shape}, model.json implies {expected}")
    except ModelLoadError:
        raise
    except Exception as error:  # any failure to open a model is a load error, never a crash
        raise ModelLoadError(f"cannot load model from {directory}: {error}") from error
    return LoadedModel(directory, metadata, segmenter, fallback)


class ModelStore:
    """Holds the served model. `current` is replaced in one assignment: a request that already
    holds the old model finishes on it, and the next request gets the new one."""

    def __init__(self, settings: Settings, busy: Callable[[], bool] = lambda: False) -> None:
        """`busy` says whether several requests are in flight (the admission count), for
        BLOODSEG_INTRA_OP_SPINNING=auto."""
        self.settings = settings
        self.busy = busy
        self.current: LoadedModel | None = None
        self.last_error: str | None = None
        self._rejected: Path | str | None = None  # a rejected version, or pointer error
        self._lock = threading.Lock()

    def refresh(self, force: bool = False) -> bool:
        """Load the version the settings point at, if it is not the one served.

        Returns True when a new model was swapped in. On failure the served model stays,
        and the error is logged, counted and kept for /model and /readyz; a rejected version
        is tried again only when forced (POST /model/reload) or when CURRENT moves on.
        """
        with self._lock:
            try:
                directory = resolve_model_dir(self.settings.model_dir).resolve()
            except (FileNotFoundError, OSError) as error:
                if str(error) == self._rejected and not force:
                    return False  # the same broken pointer: already logged and counted
                self._rejected = str(error)
                return self._failed(str(error))
            if self.current is not None and self.current.directory == directory:
                self.last_error = None
                return False
            if directory == self._rejected and not force:
                return False
            try:
                loaded = load_model(directory, runner_options(self.settings))
            except ModelLoadError as error:
                self._rejected = directory
                return self._failed(str(error))
            quiet = self._quiet_session(loaded)
            stage = NetworkStage(
                loaded.segmenter.run_batch,
                self.settings.max_batch,
                self.settings.batch_delay_ms / 1000,
                [s.run_batch for s in self._more_instances(loaded)],
                when_busy=quiet.run_batch if quiet else None,
                busy=self.busy,
                tile_pixels=loaded.segmenter.tile_size**2,
            )
            loaded = replace(loaded, network=stage)
            previous, self.current, self.last_error = self.current, loaded, None
        meta = loaded.metadata
        MODEL_INFO.clear()
        MODEL_INFO.labels(meta.name, meta.version, loaded.segmenter.provider).set(1)
        MODEL_READY.set(1)
        MODEL_CPU_FALLBACK.set(int(loaded.fallback is not None))
        old = f" (was {previous.metadata.version})" if previous else ""
        logger.info(
            "serving %s %s%s from %s on %s",
            meta.name,
            meta.version,
            old,
            loaded.directory,
            loaded.segmenter.provider,
        )
        return True

    def _another_session(self, loaded: LoadedModel, **changes) -> OnnxSegmenter:
        """A further session of the loaded model on its provider, with these RunnerOptions
        changed."""
        options = replace(
            runner_options(self.settings), providers=(loaded.segmenter.provider,), **changes
        )
        return OnnxSegmenter(loaded.directory, loaded.metadata, options)

    def _more_instances(self, loaded: LoadedModel) -> list[OnnxSegmenter]:
        """Sessions beyond the first for BLOODSEG_NETWORK_INSTANCES, on the loaded provider."""
        return [self._another_session(loaded) for _ in range(self.settings.network_instances - 1)]

    def _quiet_session(self, loaded: LoadedModel) -> OnnxSegmenter | None:
        """With spinning on auto and a CPU session, the same model in a session whose threads
        do not spin, for batches run while other requests are in flight (warmed up, so the
        first busy moment does not pay for its allocations)."""
        if self.settings.intra_op_spinning != "auto" or loaded.segmenter.device != "cpu":
            return None
        quiet = self._another_session(loaded, spinning=False)
        warm_up(quiet)
        return quiet

    def _failed(self, message: str) -> bool:
        MODEL_LOAD_FAILURES.inc()
        served = self.current.metadata.version if self.current else "nothing"
        logger.error("model not loaded, still serving %s: %s", served, message)
        self.last_error = self.public_message(message)
        return False

    def public_message(self, message: str) -> str:
        """A message for API clients: the model directory's path replaced by <model_dir>."""
        root = self.settings.model_dir
        for path in sorted({str(root.resolve()), str(root)}, key=len, reverse=True):
            message = message.replace(path, "<model_dir>")
        return message
