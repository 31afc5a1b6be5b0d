"""scripts/gpu_check.py, the GPU host's proof, dry-run here on the CPU: it passes when the
expected provider serves, and fails when it does not (no GPU here, so CUDA must fail)."""

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT, free_port

pytestmark = pytest.mark.slow


def gpu_check(provider: str) -> tuple[int, dict]:
    done = subprocess.run(
        [
            sys.executable,
            "scripts/gpu_check.py",
            "--expect-provider",
            provider,
            "--requests",
            "6",
            "--clients",
            "2",
            "--port",
            str(free_port()),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    return done.returncode, json.loads(done.stdout)


def test_gpu_check_passes_on_the_provider_that_serves():
    code, summary = gpu_check("CPUExecutionProvider")
    assert code == 0 and summary["ok"]
    assert summary["parity"]["images"] == 10 and summary["parity"]["max_abs_prob_diff"] <= 1e-3
    assert summary["http"]["p50_ms"] > 0 and summary["http"]["images_per_s"] > 0


def test_gpu_check_fails_without_a_gpu():
    code, summary = gpu_check("CUDAExecutionProvider")
    assert code == 1 and not summary["ok"]
    assert summary["parity"]["provider"] == "CPUExecutionProvider"
    assert not summary["served"]["ok"]
