"""Prove the CUDA path on a GPU host: provider, CUDA-vs-CPU agreement, served latency.

    python scripts/gpu_check.py                      # on a GPU host (scripts/gpu_check.sh)
    python scripts/gpu_check.py --expect-provider CPUExecutionProvider   # dry run, no GPU

1. Opens the shipped model twice, on the expected provider and on the CPU, and checks on the
   real fixture images (tests/data) that the probabilities agree within --tolerance and the
   counts are the same.
2. Serves the model (`python -m app.serve`), checks /model names the expected provider with no
   CPU fallback, then measures sequential latency (p50/p99) and the throughput of concurrent
   clients over HTTP.
Prints one JSON summary; exits 1 if any check fails.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.inference.decode import load_image  # noqa: E402
from app.inference.metadata import read_metadata, resolve_model_dir  # noqa: E402
from app.inference.pipeline import network_input, scale_for, segment_image  # noqa: E402
from app.inference.runner import OnnxSegmenter, RunnerOptions  # noqa: E402

FIXTURES = ROOT / "tests" / "data"
FLOAT16_MAX_ABS_DIFF = 0.02  # training.optimize's gate (that package needs the [train] extra)
BCCD_RBC_DIAMETER_PX = 104.0  # BCCD's cells are about twice blood-cell-detection's


def fixture_images() -> list[tuple[Path, float | None]]:
    """Real smears with the RBC diameter to send (None: the training scale)."""
    bcd = sorted((FIXTURES / "blood-cell-detection" / "images").glob("*.png"))
    bccd = sorted((FIXTURES / "bccd" / "JPEGImages").glob("*.jpg"))
    return [(p, None) for p in bcd] + [(p, BCCD_RBC_DIAMETER_PX) for p in bccd]


def compare_providers(
    model_dir: Path, provider: str, tolerance: float, precision: str = "float32"
) -> dict:
    """Probabilities and counts of `provider` against the CPU on every fixture image.

    precision "float32" compares model.onnx on both; "auto" runs the provider's own variant
    (float16 on CUDA, when the model ships one), as the service does.
    """
    directory = resolve_model_dir(model_dir)
    metadata = read_metadata(directory / "model.json")
    options = RunnerOptions(providers=(provider,), precision=precision)
    tested = OnnxSegmenter(directory, metadata, options)
    # the CPU reference in the tested provider's windows, so that only the provider differs:
    # the CPU runs a 640x480 smear as one window, CUDA as two tiles
    windows = options.max_window_pixels if tested.device == "cpu" else 0
    reference = RunnerOptions(providers=("CPUExecutionProvider",), max_window_pixels=windows)
    cpu = OnnxSegmenter(directory, metadata, reference)
    worst, mismatched = 0.0, []
    for path, diameter in fixture_images():
        image = load_image(path)
        scale = scale_for(metadata.working_rbc_diameter_px, diameter, None)
        normalized = network_input(image, cpu, scale)
        diff = np.abs(tested.predict(normalized) - cpu.predict(normalized)).max()
        worst = max(worst, float(diff))
        counts = (
            segment_image(image, tested, scale).counts,
            segment_image(image, cpu, scale).counts,
        )
        if counts[0] != counts[1]:
            mismatched.append({"image": path.name, "tested": counts[0], "cpu": counts[1]})
    return {
        "provider": tested.provider,
        "model_file": tested.model_file,
        "images": len(fixture_images()),
        "max_abs_prob_diff": worst,
        "count_mismatches": mismatched,
        "ok": tested.provider == provider and worst <= tolerance and not mismatched,
    }


def serve(provider: str, port: int) -> subprocess.Popen:
    env = {
        **os.environ,
        "BLOODSEG_PROVIDERS": json.dumps([provider, "CPUExecutionProvider"]),
        "BLOODSEG_HOST": "127.0.0.1",
        "BLOODSEG_PORT": str(port),
        "BLOODSEG_WATCH_INTERVAL_S": "0",
    }
    return subprocess.Popen([sys.executable, "-m", "app.serve"], cwd=ROOT, env=env)


def wait_ready(server: subprocess.Popen, base: str, seconds: float = 180) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError("the server exited")
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError("the server never became ready")


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def measure_service(base: str, requests: int, clients: int) -> dict:
    """Sequential latency and concurrent throughput of POST /segment?include= over HTTP."""
    images = [(p.read_bytes(), d) for p, d in fixture_images()]

    def post(client: httpx.Client, index: int) -> float:
        data, diameter = images[index % len(images)]
        params = {"include": ""} | ({"rbc_diameter": diameter} if diameter else {})
        started = time.perf_counter()
        response = client.post("/segment", params=params, files={"image": ("a", data)})
        response.raise_for_status()
        return (time.perf_counter() - started) * 1000

    with httpx.Client(base_url=base, timeout=120) as client:
        for index in range(len(images)):  # warm-up: every image size once
            post(client, index)
        latencies = [post(client, i) for i in range(requests)]
    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        sessions = [httpx.Client(base_url=base, timeout=120) for _ in range(clients)]
        list(pool.map(lambda i: post(sessions[i % clients], i), range(requests)))
        for session in sessions:
            session.close()
    elapsed = time.perf_counter() - started
    return {
        "requests": requests,
        "p50_ms": round(statistics.median(latencies), 1),
        "p99_ms": round(percentile(latencies, 99), 1),
        "clients": clients,
        "images_per_s": round(requests / elapsed, 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(ROOT / "models" / "bloodseg"))
    parser.add_argument("--expect-provider", default="CUDAExecutionProvider")
    parser.add_argument("--tolerance", type=float, default=1e-3)
    parser.add_argument("--requests", type=int, default=60)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()

    summary: dict = {"expect_provider": args.expect_provider}
    summary["parity"] = compare_providers(Path(args.model), args.expect_provider, args.tolerance)
    # the variant the service runs on this provider (float16 on CUDA), within its own gate
    summary["variant_parity"] = compare_providers(
        Path(args.model), args.expect_provider, FLOAT16_MAX_ABS_DIFF, precision="auto"
    )
    server = serve(args.expect_provider, args.port)
    base = f"http://127.0.0.1:{args.port}"
    try:
        wait_ready(server, base)
        model = httpx.get(f"{base}/model").json()
        summary["served"] = {
            "provider": model["provider"],
            "model_file": model["model_file"],
            "fallback": model["fallback"],
            "ok": model["provider"] == args.expect_provider and model["fallback"] is None,
        }
        summary["http"] = measure_service(base, args.requests, args.clients)
    finally:
        server.terminate()
        server.wait(timeout=30)
    summary["ok"] = all(summary[k]["ok"] for k in ("parity", "variant_parity", "served"))
    print(json.dumps(summary, indent=2))
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
