"""Schemathesis, with all its checks, against the real service over HTTP: responses match the
OpenAPI document (statuses, content types, headers, bodies) and nothing is a server error."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, running_server

pytestmark = pytest.mark.slow

TOKEN = "schemathesis-token"
MAX_EXAMPLES = 150  # per operation; the parameterless ones need only a few
MIN_CASES = 1000


def test_schemathesis_finds_no_failure(tmp_path):
    report = tmp_path / "schemathesis.json"
    env = {"BLOODSEG_RELOAD_TOKEN": TOKEN, "BLOODSEG_WATCH_INTERVAL_S": "0"}
    with running_server(env) as base:
        done = subprocess.run(
            [
                str(Path(sys.executable).parent / "schemathesis"),
                "--config-file",
                str(ROOT / "tests" / "schemathesis.toml"),
                "run",
                f"{base}/openapi.json",
                "--checks",
                "all",
                "--max-examples",
                str(MAX_EXAMPLES),
                "--seed",
                "20261127",
                "--header",
                f"Authorization: Bearer {TOKEN}",
                "--report",
                "json",
                "--report-json-path",
                str(report),
            ],
            cwd=tmp_path,
            env={
                **os.environ,
                "SCHEMATHESIS_HOOKS": "tests.schemathesis_hooks",
                "PYTHONPATH": str(ROOT),
            },
            capture_output=True,
            text=True,
            timeout=900,
        )
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    result = json.loads(report.read_text())
    assert result["complete"] and result["operations"]["tested"] == result["operations"]["total"]
    cases = result["test_cases"]
    assert cases["with_failures"] == 0 and cases["errored"] == 0 and not result["errors"]
    print(f"schemathesis: {cases}")
    assert cases["generated"] >= MIN_CASES, cases
    segment = result["valid_rates"]["POST /segment"]["fuzzing"]
    assert segment["accepted"] > 0  # real smears went all the way through the pipeline
