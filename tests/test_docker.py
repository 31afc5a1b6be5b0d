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
from tests.conftest import ROOT, SHIPPED_MODEL, free_port, wait_http_ready
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


def parse_duration_s(value: str) -> float:
    """A compose duration such as '12s' or '1m30s' in seconds."""
    units = {"h": 3600, "m": 60, "s": 1}
    return sum(float(n) * units[u] for n, u in re.findall(r"([\d.]+)([hms])", value))


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
        assert "/readyz" in " ".join(api["healthcheck"]["test"])  # healthy means ready
        drain = float(api["environment"]["BLOODSEG_SHUTDOWN_TIMEOUT_S"])
        assert parse_duration_s(api["stop_grace_period"]) > drain
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


def test_images_can_write_where_they_must():
    """The train job's volumes exist in its image, owned by its user (a new named volume
    takes the mount point's ownership), and the read-only service has HOME and the CUDA
    cache on its tmpfs."""
    train = dockerfile_instructions(DOCKERFILES[1])
    compose = PyOptions(apply_merge=True).from_yaml(interpolated_compose()).to_dict()
    mounts = [str(v).split(":")[1] for v in compose["services"]["train"]["volumes"]]
    named = [m for m in mounts if m != "/data"]  # /data is read-only datasets
    setup = " ".join(rest for word, rest in train if word == "RUN")
    users = [rest for word, rest in train if word == "USER"]
    assert users == ["10001"]
    for mount in named:
        assert re.search(rf"mkdir -p[^&]*\s{mount}\b", setup), mount
        assert re.search(rf"chown bloodseg:bloodseg[^&]*\s{mount}\b", setup), mount
    service_env = env_of(ROOT / "Dockerfile")
    tmpfs = compose["services"]["api"]["tmpfs"]
    assert any(service_env["HOME"].startswith(t) for t in tmpfs)
    assert any(service_env["CUDA_CACHE_PATH"].startswith(t) for t in tmpfs)


def test_onnxruntime_gpu_is_pinned_to_the_tested_minor_version():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = [
        d
        for d in [*project["dependencies"], *project["optional-dependencies"]["gpu"]]
        if d.startswith("onnxruntime-gpu")
    ]
    assert pins and all(d.endswith("==1.31.*") for d in pins), pins


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
        HOME=os.environ.get("HOME", "/tmp"),
        CUDA_CACHE_PATH=os.environ.get("CUDA_CACHE_PATH", "/tmp/cuda-cache"),
        BLOODSEG_MODEL_DIR=str(SHIPPED_MODEL),
        BLOODSEG_HOST="127.0.0.1",
        BLOODSEG_PORT=str(port),
        BLOODSEG_PROVIDERS='["CPUExecutionProvider"]',
    )
    server = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_http_ready(server, base)
        response = httpx.get(f"{base}/readyz")
        assert response.json()["status"] == "ready" and "server" not in response.headers
    finally:
        server.terminate()
        server.wait(timeout=20)
