"""Does int8 pay on this CPU? Quantise a published model as `training optimize --int8` does,
then time it against float32 and score both per validation source, side by side in one run.

    python scripts/int8_trial.py                       # the shipped model
    python scripts/int8_trial.py --model models/bloodseg/2.2.3 --repeats 30

Prints network ms per 256x256 tile for both (alternated, ONNX Runtime's spinning off so that
one session's idle threads do not slow the other), the speed ratio, both models' validation
figures per source, the largest drop, and whether int8 passes the accuracy gate (every
figure within 0.01 of float32, as training's export requires of any variant that ships).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.inference.metadata import read_metadata, resolve_model_dir  # noqa: E402
from app.inference.runner import OnnxSegmenter, RunnerOptions  # noqa: E402
from training.quantize import GATE, calibration_tiles, int8_for_cpu, training_sets  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(ROOT / "models" / "bloodseg"))
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()

    source = resolve_model_dir(Path(args.model))
    metadata = read_metadata(source / "model.json")
    train_sets, val_sets = training_sets(metadata)
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        shutil.copyfile(source / "model.onnx", work / "model.onnx")
        with contextlib.redirect_stdout(sys.stderr):  # the calibrator prints its progress
            variant, report = int8_for_cpu(work, metadata, train_sets, val_sets, gate=float("inf"))
        options = RunnerOptions(providers=("CPUExecutionProvider",), spinning=False)
        runners = {
            "float32": OnnxSegmenter(work, metadata.model_copy(update={"variants": []}), options),
            "int8": OnnxSegmenter(
                work, metadata.model_copy(update={"variants": [variant]}), options
            ),
        }
        tile = calibration_tiles(metadata, val_sets[:1])[0]
        times: dict[str, list[float]] = {name: [] for name in runners}
        for runner in runners.values():
            runner.run_batch(tile)
        for _ in range(args.repeats):
            for name, runner in runners.items():
                for _ in range(3):
                    started = time.perf_counter()
                    runner.run_batch(tile)
                    times[name].append((time.perf_counter() - started) * 1000)

    ms = {name: round(statistics.median(values), 1) for name, values in times.items()}
    worst = next(iter(report["largest_drop"].values()))
    print(
        json.dumps(
            {
                "model": f"{metadata.name} {metadata.version}",
                "network_ms_p50": ms,
                "int8_speedup": round(ms["float32"] / ms["int8"], 3),
                **report,
                "gate": GATE,
                "int8_passes_gate": worst <= GATE,
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
