#!/usr/bin/env bash
# The README's serve command: install the service (no TensorFlow) and serve the shipped model.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e .
exec .venv/bin/python -m app.serve
