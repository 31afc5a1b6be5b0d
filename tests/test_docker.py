"""What can be proved about the images and compose file without a Docker engine."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from compose_spec import PyOptions

from app.core.config import Settings
from tests.conftest import ROOT, SHIPPED_MODEL
from tests.test_server_process import free_port, wait_http_ready
from training.settings import TrainingSettings

DOCKERFILES = [ROOT / "Dockerfile", ROOT / "docker" / "train.Dockerfile"]


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    pairs = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            pairs.append((word.upper(), rest.strip()))
    return pairs


def env_of(path: Path) -> dict[str, str]:
    env = {}
    for word, rest in dockerfile_instructions(path):
        if word == "ENV":
            for key, value in re.findall(r"(\w+)=('[^']*'|\"[^\"]*\"|\S+)", rest):
                env[key] = value.strip("'\"")
    return env


def interpolated_compose() -> str:
    """docker-compose.yml with ${VAR:-default} replaced as `docker compose` would (no env set)."""
    text = (ROOT / "docker-compose.yml").read_text()
    return re.sub(r"\$\{(\w+)(?::?-([^}]*))?\}", lambda m: m.group(2) or "", text)


def test_hadolint_passes_with_every_ignore_explained():
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    done = subprocess.run([hadolint, *map(str, DOCKERFILES)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    for path in DOCKERFILES:
        lines = path.read_text().splitlines()
        for index, line in enumerate(lines):
            if "hadolint ignore" in line:
                assert lines[index - 1].startswith("#") and "hadolint" not in lines[index - 1]


def test_compose_file_follows_the_compose_specification():
    compose = PyOptions(apply_merge=True).from_yaml(interpolated_compose())
    compose.validate()
    services = compose.to_dict()["services"]
    assert set(services) == {"api", "api-cpu", "train"}
    gpu = services["api"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["driver"] == "nvidia" and gpu["capabilities"] == ["gpu"]
    assert "deploy" not in services["api-cpu"] and services["api-cpu"]["profiles"] == ["cpu"]
    assert services["train"]["profiles"] == ["train"]
    for name in ("api", "api-cpu"):
        api = services[name]
        assert api["read_only"] is True and api["restart"] == "unless-stopped"
        assert "healthz" in " ".join(api["healthcheck"]["test"])
        assert any("/srv/models" in str(v) for v in api["volumes"])
        assert set(api["environment"]) <= {f"BLOODSEG_{n.upper()}" for n in Settings.model_fields}
    assert any("/models" in str(v) for v in services["train"]["volumes"])


def test_dockerfile_env_names_and_copied_paths_exist():
    settings_names = {f"BLOODSEG_{n.upper()}" for n in Settings.model_fields}
    training_names = {f"BLOODSEG_TRAIN_{n.upper()}" for n in TrainingSettings.model_fields}
    for path in DOCKERFILES:
        for key in env_of(path):
            if key.startswith("BLOODSEG_TRAIN_"):
                assert key in training_names, key
            elif key.startswith("BLOODSEG_"):
                assert key in settings_names, key
        for word, rest in dockerfile_instructions(path):
            if word == "COPY" and "--from" not in rest:
                sources = [s for s in rest.split()[:-1] if not s.startswith("--")]
                assert all((ROOT / s).exists() for s in sources), rest
    service_env = env_of(ROOT / "Dockerfile")
    assert service_env["BLOODSEG_MODEL_DIR"] == "/srv/models/bloodseg"  # COPY models ./models
    assert json.loads(env_of(DOCKERFILES[1])["BLOODSEG_TRAIN_DATA"]) == [
        "/data/blood-cell-detection"
    ]


def test_dockerignore_keeps_data_venvs_caches_and_runs_out():
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".git", ".venv", "runs", "shared", "datasets", "**/__pycache__", "tests"} <= ignored
    assert not ignored & {"app", "training", "models", "pyproject.toml", "README.md", "docker"}


@pytest.mark.slow
def test_the_images_command_serves_the_shipped_model_locally():
    """CMD and ENV of the service Dockerfile, run here with the model path mapped to the repo."""
    (command,) = [
        json.loads(rest)
        for word, rest in dockerfile_instructions(ROOT / "Dockerfile")
        if word == "CMD"
    ]
    env = {**os.environ, **env_of(ROOT / "Dockerfile")}
    port = free_port()
    env.update(
        PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        BLOODSEG_MODEL_DIR=str(SHIPPED_MODEL),
        UVICORN_HOST="127.0.0.1",
        UVICORN_PORT=str(port),
        BLOODSEG_PROVIDERS='["CPUExecutionProvider"]',
    )
    server = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_http_ready(server, base)
        assert httpx.get(f"{base}/healthz").json() == {"status": "ok"}
    finally:
        server.terminate()
        server.wait(timeout=20)
