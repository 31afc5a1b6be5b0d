#!/usr/bin/env bash
# The README's test command: a fresh virtual environment with everything, ruff, then the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[train,dev]"
.venv/bin/ruff check app training tests scripts
.venv/bin/python -m pytest "$@"
