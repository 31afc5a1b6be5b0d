#!/usr/bin/env bash
# One command on a GPU host: install the service with its CUDA libraries (.[gpu]), then prove
# the CUDA path: provider, CUDA-vs-CPU agreement on real images, served latency/throughput.
#   bash scripts/gpu_check.sh                # needs an NVIDIA driver >= 580 (CUDA 13)
# Offline hosts: point pip at local wheels, e.g. PIP_NO_INDEX=1 PIP_FIND_LINKS=/wheels.
# Extra arguments go to scripts/gpu_check.py (e.g. --requests 200 --clients 16).
set -euo pipefail
cd "$(dirname "$0")/.."
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
python3 -m venv .venv-gpu
.venv-gpu/bin/python -m pip install --quiet --upgrade pip || true
.venv-gpu/bin/python -m pip install --quiet -e ".[gpu]"
exec .venv-gpu/bin/python scripts/gpu_check.py "$@"
