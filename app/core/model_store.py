"""The model the service runs: loaded, verified and warmed up off the event loop."""

from __future__ import annotations

import hashlib
import logging
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from app.core.config import Settings
from app.core.metrics import MODEL_INFO, MODEL_LOAD_FAILURES, MODEL_READY
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


@dataclass(frozen=True)
class LoadedModel:
    """A ready model and where it came from."""

    directory: Path
    metadata: ModelMetadata
    segmenter: OnnxSegmenter


def load_model(settings: Settings) -> LoadedModel:
    """Resolve, verify (sha256) and open the model, then run one warm-up tile."""
    try:
        directory = resolve_model_dir(settings.model_dir)
        metadata = read_metadata(directory / METADATA_FILE)
        digest = hashlib.sha256((directory / MODEL_FILE).read_bytes()).hexdigest()
        if metadata.onnx_sha256 and digest != metadata.onnx_sha256:
            raise ModelLoadError(f"{directory / MODEL_FILE}: sha256 does not match model.json")
        options = RunnerOptions(
            providers=tuple(settings.providers),
            intra_op_threads=settings.intra_op_threads,
            inter_op_threads=settings.inter_op_threads,
            tile_overlap=settings.tile_overlap,
            batch_size=settings.batch_size,
        )
        segmenter = OnnxSegmenter(directory, metadata, options)
        tile = metadata.input.tile_size
        segmenter.run_batch(np.zeros((1, tile, tile, 3), np.float32))
    except ModelLoadError:
        raise
    except Exception as error:  # any failure to open a model is a load error, never a crash
        raise ModelLoadError(f"cannot load model from {settings.model_dir}: {error}") from error
    return LoadedModel(directory, metadata, segmenter)


class ModelStore:
    """Holds the current model; `current` is None until a load succeeds."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.current: LoadedModel | None = None
        self.last_error: str | None = None
        self._lock = threading.Lock()

    @property
    def ready(self) -> bool:
        return self.current is not None

    def load(self) -> None:
        """Load the configured model; on failure keep what is served and record the error."""
        try:
            loaded = load_model(self.settings)
        except ModelLoadError as error:
            self.last_error = str(error)
            MODEL_LOAD_FAILURES.inc()
            logger.error("model not loaded: %s", error)
            return
        with self._lock:
            self.current = loaded
            self.last_error = None
        MODEL_INFO.clear()
        meta = loaded.metadata
        MODEL_INFO.labels(meta.name, meta.version, loaded.segmenter.provider).set(1)
        MODEL_READY.set(1)
        logger.info(
            "serving %s %s from %s on %s",
            meta.name,
            meta.version,
            loaded.directory,
            loaded.segmenter.provider,
        )
