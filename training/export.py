"""Export a Keras model to ONNX (tf2onnx) and refuse it unless ONNX Runtime agrees with Keras."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import onnxruntime as ort

from training.optimize import lay_out_file, output_agreement, simplify_file

logger = logging.getLogger(__name__)

MAX_ABS_DIFF = 1e-4
MIN_ARGMAX_AGREEMENT = 0.999


class ParityError(RuntimeError):
    """The exported ONNX model does not reproduce the Keras model."""


@dataclass(frozen=True)
class Parity:
    """How closely ONNX Runtime reproduces Keras on the same inputs."""

    max_abs_diff: float
    argmax_agreement: float
    images: int

    @property
    def ok(self) -> bool:
        return self.max_abs_diff <= MAX_ABS_DIFF and self.argmax_agreement >= MIN_ARGMAX_AGREEMENT


def export_onnx(model: keras.Model, path: Path) -> Path:
    """Write the model as ONNX with a dynamic batch (and spatial) size."""
    path.parent.mkdir(parents=True, exist_ok=True)
    spec = keras.InputSpec(shape=(None, None, None, 3), dtype="float32")
    model.export(str(path), format="onnx", input_signature=[spec], verbose=False)
    return path


def check_parity(
    model: keras.Model, onnx_path: Path, inputs: np.ndarray, num_classes: int
) -> Parity:
    """Compare ONNX Runtime with Keras on a batch of normalised inputs (one image at a time)."""
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    batches = (inputs[i : i + 1].astype(np.float32) for i in range(len(inputs)))
    pairs = (
        (np.asarray(model(batch, training=False)), session.run(None, {name: batch})[0])
        for batch in batches
    )
    agreement = output_agreement(pairs, num_classes)
    return Parity(**agreement, images=len(inputs))


def export_verified(model: keras.Model, path: Path, inputs: np.ndarray, num_classes: int) -> Parity:
    """Export, simplify the graph and lay it out for the CPU kernels, then check parity on real
    inputs; delete the file and raise if it fails."""
    export_onnx(model, path)
    simplify_file(path, path)
    lay_out_file(path, path)
    parity = check_parity(model, path, inputs, num_classes)
    logger.info(
        "ONNX parity on %d images: max |diff| %.2e, argmax agreement %.5f",
        parity.images,
        parity.max_abs_diff,
        parity.argmax_agreement,
    )
    if not parity.ok:
        path.unlink(missing_ok=True)
        raise ParityError(
            f"ONNX differs from Keras: max |diff| {parity.max_abs_diff:.2e} "
            f"(limit {MAX_ABS_DIFF}), "
            f"argmax agreement {parity.argmax_agreement:.5f} (minimum {MIN_ARGMAX_AGREEMENT})"
        )
    return parity
