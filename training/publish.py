"""Publish an exported model into models/<name>/<version>/ and point CURRENT at it, atomically."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from app.inference.metadata import CURRENT_POINTER, METADATA_FILE, MODEL_FILE, read_metadata


class PublishError(RuntimeError):
    """The export is incomplete or inconsistent, or the version already exists."""


def write_atomically(path: Path, text: str) -> None:
    """Replace a small file in one rename, so readers see the old or the new content, never half."""
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(handle, "w") as stream:
        stream.write(text)
        stream.flush()
        os.fsync(stream.fileno())
    os.chmod(temp, 0o644)  # mkstemp makes it 0600; readers may be another user
    os.replace(temp, path)


def publish(export_dir: Path, models_root: Path, make_current: bool = True) -> Path:
    """Copy model.onnx, its variants and model.json to models_root/<name>/<version>/, then
    switch CURRENT to it.

    The version is written under a hidden name and renamed into place, and its checksum is
    verified against model.json before the pointer moves.
    """
    metadata = read_metadata(export_dir / METADATA_FILE)
    files = {MODEL_FILE: metadata.onnx_sha256, **{v.file: v.sha256 for v in metadata.variants}}
    for name, sha in files.items():
        path = export_dir / name
        if not path.is_file() or hashlib.sha256(path.read_bytes()).hexdigest() != sha:
            raise PublishError(f"{path} is missing or does not match the sha256 in model.json")
    model_root = models_root / metadata.name
    final = model_root / metadata.version
    if final.exists():
        raise PublishError(f"{final} already exists: versions are immutable")
    model_root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=model_root, prefix=f".{metadata.version}."))
    try:
        for name in [*files, METADATA_FILE]:
            shutil.copyfile(export_dir / name, staging / name)
        staging.chmod(0o755)
        os.rename(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if make_current:
        write_atomically(model_root / CURRENT_POINTER, metadata.version + "\n")
    return final
