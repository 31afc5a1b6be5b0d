"""A published model as teacher: its outputs on each training crop, for a student to learn."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from app.inference.metadata import METADATA_FILE, MODEL_FILE, read_metadata, resolve_model_dir


class Teacher:
    """A published model's float32 network, run on batches of normalised crops (the student's
    inputs): its softmax classes and centre heatmap are the student's soft targets."""

    def __init__(self, model: str | Path, channels: list[str]) -> None:
        directory = resolve_model_dir(Path(model))
        self.metadata = read_metadata(directory / METADATA_FILE)
        if self.metadata.output.channels != channels:
            raise ValueError(
                f"teacher {directory} outputs {self.metadata.output.channels}, "
                f"the student {channels}: a teacher must have the student's channels"
            )
        options = ort.SessionOptions()
        # the teacher's pass is a small part of a training step: two threads, no spinning
        options.intra_op_num_threads = 2
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(
            str(directory / MODEL_FILE), options, providers=["CPUExecutionProvider"]
        )
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, crops: np.ndarray) -> np.ndarray:
        """The teacher's outputs (N, H, W, channels) for normalised crops (N, H, W, 3)."""
        return self.session.run(None, {self.input_name: crops.astype(np.float32)})[0]
