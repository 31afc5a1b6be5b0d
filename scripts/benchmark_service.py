"""The service under load, measured side by side in one run against the network alone.

    python scripts/benchmark_service.py                     # everything, about 4 minutes
    python scripts/benchmark_service.py --out docs/benchmark/service.json --seed-keras

Starts the real service (`python -m app.serve`, CPU) on 127.0.0.1 and prints:
- the network's ms per tile at batch sizes 1, 2, 4 and 8 (what batching buys here);
- the network's own time per image: ONNX Runtime on the image's tiles at the scale the server
  chose for it, nothing else;
- each stage's server-side time (estimate_scale, decode, preprocess, inference, postprocess,
  encode);
- end-to-end p50/p99 over HTTP for 256x256 and 640x480, with the default pictures and with
  `include=` (counts and cells only), with that scale sent and with no hint (the server
  estimates it), each request alternated with a network-only run, and the ratio of medians;
- throughput with 1, 8 and 32 clients (scale sent), against the network-only bound (images/s
  that the network alone sustains, back to back);
- 32 clients against a server with BLOODSEG_MAX_QUEUE=4: 503s with Retry-After, other errors,
  /healthz latency meanwhile, served p50/p99;
- with --seed-keras, the seed architecture (64 filters, depth 3) in Keras, alternated with
  the shipped network as served and with its other precisions (float32, int8 where the CPU
  runs it), for the speed-up (needs the [train] extra).

BLOODSEG_PRECISION=int8 runs the whole benchmark on the model's int8 variant.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gpu_check import percentile, wait_ready  # noqa: E402  (a sibling script)

from app.core.config import Settings  # noqa: E402
from app.inference.cpu_features import cpu_flags  # noqa: E402
from app.inference.decode import decode_image  # noqa: E402
from app.inference.metadata import read_metadata, resolve_model_dir  # noqa: E402
from app.inference.pipeline import network_input  # noqa: E402
from app.inference.runner import OnnxSegmenter, RunnerOptions  # noqa: E402

DATASETS = ROOT.parent / "shared" / "datasets"
FIXTURES = ROOT / "tests" / "data"
IMAGES = {
    "256x256": ("blood-cell-detection/images/image-100.png", "image/png"),
    "640x480": ("bccd/JPEGImages/BloodImage_00000.jpg", "image/jpeg"),
}
PICTURES = "mask,instances,overlay"
# ONNX Runtime's threads spin for a moment after a run: let ours go quiet before timing the
# server, so that they do not take its CPU
SETTLE_S = 0.05


def image_bytes(relative: str) -> bytes:
    """The benchmark image from the datasets, or the same image among the test fixtures."""
    for base in (DATASETS, FIXTURES):
        if (base / relative).is_file():
            return (base / relative).read_bytes()
    raise SystemExit(f"{relative} not found under {DATASETS} or {FIXTURES}")


class Server:
    """`python -m app.serve` on a free port, CPU only, with extra BLOODSEG_* settings."""

    def __init__(self, port: int, **settings: str) -> None:
        env = {
            **os.environ,
            "BLOODSEG_PROVIDERS": '["CPUExecutionProvider"]',
            "BLOODSEG_PORT": str(port),
            "BLOODSEG_HOST": "127.0.0.1",
            "BLOODSEG_LOG_LEVEL": "WARNING",
            "BLOODSEG_WATCH_INTERVAL_S": "0",
            **{f"BLOODSEG_{k.upper()}": v for k, v in settings.items()},
        }
        self.url = f"http://127.0.0.1:{port}"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "app.serve"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_ready(self.process, self.url)
        except RuntimeError as error:
            self.stop()
            raise SystemExit(f"the service did not become ready: {error}") from error

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


def post(
    client: httpx.Client,
    url: str,
    data: bytes,
    kind: str,
    include: str,
    scale: float | None = None,
) -> httpx.Response:
    """POST /segment; with `scale` given, the server does not estimate the magnification."""
    params = {"include": include, **({"scale": scale} if scale is not None else {})}
    return client.post(f"{url}/segment", params=params, files={"image": ("image", data, kind)})


def served_scale(url: str, data: bytes, kind: str) -> tuple[float, bool]:
    """The scale the server segments this image at when sent with no hint (a 2.x model
    estimates it), and whether it needed a second pass to get there."""
    with httpx.Client(timeout=120) as client:
        body = post(client, url, data, kind, "").raise_for_status().json()
    return body["scale"], body.get("scale_refined", False)


def network_timer(segmenter: OnnxSegmenter, data: bytes, scale: float = 1.0):
    """A function timing the network alone on this image at this scale: the very batches of
    tiles that the segmenter's predict sends it (recorded from one run), and nothing else."""
    batches: list[np.ndarray] = []

    def record(batch: np.ndarray) -> np.ndarray:
        batches.append(batch)
        return segmenter.run_batch(batch)

    segmenter.predict(network_input(decode_image(data), segmenter, scale), run=record)

    def run() -> float:
        started = time.perf_counter()
        for batch in batches:
            segmenter.run_batch(batch)
        return (time.perf_counter() - started) * 1000

    return run, sum(len(batch) for batch in batches)


def latency(server: Server, segmenter: OnnxSegmenter, repeats: int) -> dict:
    """p50/p99 over HTTP per image, include and hint, each request alternated with a network
    run at the scale the server chose. "scale given" sends that scale (one network pass, as
    1.x always did); "no hint" lets the server estimate it (a 2.x model): the estimate, and a
    second pass where the first one's cells disagree, are the request's own cost."""
    results = {}
    with httpx.Client(timeout=120) as client:
        for size, (relative, kind) in IMAGES.items():
            data = image_bytes(relative)
            scale, refined = served_scale(server.url, data, kind)
            run_network, tiles = network_timer(segmenter, data, scale)
            for hint, sent_scale in (("scale given", scale), ("no hint", None)):
                for label, include in (("pictures", PICTURES), ("include=", "")):
                    post(client, server.url, data, kind, include, sent_scale)  # warm
                    network, http, stages = [], [], {}
                    for _ in range(repeats):
                        time.sleep(SETTLE_S)  # the server's threads spin after a request, too
                        network.append(run_network())
                        time.sleep(SETTLE_S)
                        started = time.perf_counter()
                        response = post(client, server.url, data, kind, include, sent_scale)
                        http.append((time.perf_counter() - started) * 1000)
                        response.raise_for_status()
                        for stage, ms in response.json()["timings_ms"].items():
                            stages.setdefault(stage, []).append(ms)
                    net_p50 = statistics.median(network)
                    results[f"{size} {label} {hint}"] = {
                        "scale": scale,
                        "second_pass": refined and sent_scale is None,
                        "tiles": tiles,
                        "network_ms_p50": round(net_p50, 1),
                        "http_ms_p50": round(statistics.median(http), 1),
                        "http_ms_p99": round(percentile(http, 99), 1),
                        "ratio_p50_to_network": round(statistics.median(http) / net_p50, 3),
                        "server_stages_ms_p50": {
                            k: round(statistics.median(v), 1) for k, v in stages.items()
                        },
                    }
    return results


def load(
    url: str, data: bytes, kind: str, clients: int, seconds: float, scale: float | None = None
) -> dict:
    """`clients` threads posting back to back for `seconds`: statuses, latencies, errors."""
    statuses: list[int] = []
    served: list[float] = []
    retry_after: list[str | None] = []
    errors: list[str] = []
    health: list[float] = []
    lock = threading.Lock()
    ended = time.monotonic() + seconds

    def client_loop() -> None:
        with httpx.Client(timeout=120) as client:
            while time.monotonic() < ended:
                started = time.perf_counter()
                try:
                    response = post(client, url, data, kind, PICTURES, scale)
                except httpx.HTTPError as error:
                    with lock:
                        errors.append(type(error).__name__)
                    continue
                took = (time.perf_counter() - started) * 1000
                with lock:
                    statuses.append(response.status_code)
                    if response.status_code == 200:
                        served.append(took)
                    elif response.status_code == 503:
                        retry_after.append(response.headers.get("retry-after"))
                        time.sleep(0.05)  # a client that backs off a little, not a tight loop

    def health_loop() -> None:
        with httpx.Client(timeout=30) as client:
            while time.monotonic() < ended:
                started = time.perf_counter()
                client.get(f"{url}/healthz")
                health.append((time.perf_counter() - started) * 1000)
                time.sleep(0.1)

    threads = [threading.Thread(target=client_loop) for _ in range(clients)]
    threads.append(threading.Thread(target=health_loop))
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    return {
        "clients": clients,
        "seconds": round(elapsed, 1),
        "served": len(served),
        "images_per_s": round(len(served) / elapsed, 2),
        "served_p50_ms": round(percentile(served, 50) if served else float("nan"), 1),
        "served_p99_ms": round(percentile(served, 99) if served else float("nan"), 1),
        "status_503": statuses.count(503),
        "status_503_with_retry_after": sum(1 for r in retry_after if r),
        "other_5xx": sum(1 for s in statuses if s >= 500 and s != 503),
        "other_non_200": sum(1 for s in statuses if s != 200 and s < 500),
        "connection_errors": len(errors),
        "healthz_max_ms": round(max(health), 1) if health else None,
    }


def side_by_side_rate(timers: list, seconds: float) -> float:
    """Images per second of these network timers, each looping in its own thread."""
    count, lock = [0], threading.Lock()
    ended = time.monotonic() + seconds

    def loop(run) -> None:
        while time.monotonic() < ended:
            run()
            with lock:
                count[0] += 1

    threads = [threading.Thread(target=loop, args=(run,)) for run in timers]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return count[0] / (time.monotonic() - started)


def network_bound(
    segmenter: OnnxSegmenter, data: bytes, seconds: float, scale: float = 1.0
) -> dict[str, float]:
    """Images per second that the network alone sustains on this image, back to back: one
    session on all cores, and one single-threaded session per core side by side. The better
    of the two is the bound the service is held to."""
    single = replace(segmenter.options, intra_op_threads=1)
    per_core = [
        OnnxSegmenter(segmenter.model_dir, segmenter.metadata, single)
        for _ in range(os.cpu_count() or 1)
    ]
    rates = {
        label: round(
            side_by_side_rate([network_timer(r, data, scale)[0] for r in runners], seconds), 2
        )
        for label, runners in (
            ("one_session_all_cores", [segmenter]),
            ("one_session_per_core", per_core),
        )
    }
    return {**rates, "bound": max(rates.values())}


def batch_sizes(segmenter: OnnxSegmenter, data: bytes, repeats: int) -> dict[str, float]:
    """Network ms per tile at batch sizes 1 to 8, alternated: what batching buys on this device
    (the evidence for BLOODSEG_MAX_BATCH and BLOODSEG_BATCH_DELAY_MS)."""
    tile = network_input(decode_image(data), segmenter, 1.0)[None].astype(np.float32)
    batches = {size: np.repeat(tile, size, axis=0) for size in (1, 2, 4, 8)}
    times: dict[int, list[float]] = {size: [] for size in batches}
    for batch in batches.values():
        segmenter.run_batch(batch)
    for _ in range(repeats):
        for size, batch in batches.items():
            started = time.perf_counter()
            segmenter.run_batch(batch)
            times[size].append((time.perf_counter() - started) * 1000 / size)
    return {f"batch_{size}": round(statistics.median(v), 1) for size, v in times.items()}


def cpu_model() -> str:
    """The CPU's model name and the vector extensions that change these figures (Linux)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown"
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines()
                 if line.startswith("model name")), "unknown")  # fmt: skip
    flags = cpu_flags()
    extensions = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni") if f in flags]
    return f"{name} ({', '.join(extensions) or 'no AVX2'})"


def seed_keras(segmenters: dict[str, OnnxSegmenter], repeats: int) -> dict:
    """The seed architecture in Keras, alternated with the shipped ONNX network (256x256) at
    each precision given (name: segmenter), the served one first."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from training.model import build_unet

    seed = build_unet(64, 3, num_classes=3, centre_head=False)
    batch = np.random.default_rng(0).standard_normal((1, 256, 256, 3)).astype(np.float32)
    seed.predict_on_batch(batch)
    times: dict[str, list[float]] = {"seed_keras": [], **{name: [] for name in segmenters}}
    runs = {"seed_keras": seed.predict_on_batch}
    runs.update({name: s.run_batch for name, s in segmenters.items()})
    for run in runs.values():
        run(batch)
    for _ in range(repeats):
        for name, run in runs.items():
            started = time.perf_counter()
            run(batch)
            times[name].append((time.perf_counter() - started) * 1000)
    p50 = {name: statistics.median(values) for name, values in times.items()}
    served = next(iter(segmenters))
    figures = {
        "seed_keras_ms_p50": round(p50["seed_keras"], 1),
        "shipped_onnx_ms_p50": round(p50[served], 1),
        "shipped_file": segmenters[served].model_file,
        "speedup": round(p50["seed_keras"] / p50[served], 2),
    }
    for name in list(segmenters)[1:]:
        figures[f"{name}_file"] = segmenters[name].model_file
        figures[f"{name}_ms_p50"] = round(p50[name], 1)
        figures[f"{name}_speedup"] = round(p50["seed_keras"] / p50[name], 2)
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30, help="requests per latency figure")
    parser.add_argument("--seconds", type=float, default=20.0, help="per throughput figure")
    parser.add_argument("--port", type=int, default=8791)
    parser.add_argument("--seed-keras", action="store_true", help="time the seed in Keras too")
    parser.add_argument("--out", type=Path, help="also write the figures here as JSON")
    parser.add_argument(
        "--parts",
        default="batching,latency,throughput,overload",
        help="comma list of batching, latency, throughput, overload (and --seed-keras)",
    )
    parser.add_argument("--clients", default="1,8,32", help="client counts for throughput")
    args = parser.parse_args()

    settings = Settings()
    directory = resolve_model_dir(settings.model_dir)
    metadata = read_metadata(directory / "model.json")
    options = RunnerOptions(
        providers=("CPUExecutionProvider",),
        batch_size=settings.max_batch,
        precision=settings.precision,  # what the server runs, from BLOODSEG_PRECISION
    )
    segmenter = OnnxSegmenter(directory, metadata, options)
    figures: dict = {
        "model": f"{metadata.name} {metadata.version}",
        "cpu": f"{os.cpu_count()} cores",
        "cpu_model": cpu_model(),
        "settings": {"workers": settings.workers, "max_batch": settings.max_batch,
                     "batch_delay_ms": settings.batch_delay_ms},
    }  # fmt: skip
    small, small_kind = image_bytes(IMAGES["256x256"][0]), IMAGES["256x256"][1]

    parts = set(args.parts.split(","))
    if "batching" in parts:
        figures["network_ms_per_tile"] = batch_sizes(segmenter, small, max(5, args.repeats // 3))
    if parts & {"latency", "throughput"}:
        server = Server(args.port)
        try:
            if "latency" in parts:
                figures["latency"] = latency(server, segmenter, args.repeats)
            if "throughput" in parts:
                # the scale is sent, so the network's bound and the server do the same work
                scale, _ = served_scale(server.url, small, small_kind)
                figures["throughput_scale"] = scale
                network_only = network_bound(segmenter, small, args.seconds / 2, scale)
                figures["network_only_images_per_s"] = network_only
                bound = network_only["bound"]
                figures["throughput"] = []
                for clients in map(int, args.clients.split(",")):
                    result = load(server.url, small, small_kind, clients, args.seconds, scale)
                    result["vs_network_bound"] = round(result["images_per_s"] / bound, 3)
                    figures["throughput"].append(result)
        finally:
            server.stop()

    if "overload" in parts:
        server = Server(args.port, max_queue="4")
        try:
            scale, _ = served_scale(server.url, small, small_kind)
            figures["overload_32_clients_max_queue_4"] = load(
                server.url, small, small_kind, 32, args.seconds, scale
            )
        finally:
            server.stop()

    if args.seed_keras:
        # spinning off: a session's spinning threads would slow the next one timed
        quiet = replace(options, spinning=False)
        timed: dict[str, OnnxSegmenter] = {}
        for precision in (settings.precision, "float32", "int8"):
            session = OnnxSegmenter(directory, metadata, replace(quiet, precision=precision))
            if session.model_file not in {s.model_file for s in timed.values()}:
                timed[precision] = session
        figures["seed_keras"] = seed_keras(timed, max(5, args.repeats // 3))

    text = json.dumps(figures, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
