#!/bin/sh
# Train (resuming from the run directory's checkpoints), then publish atomically into /models.
# Extra arguments go to `python -m training train`, e.g. --epochs 60.
set -eu
python -m training train "$@"
python -m training publish
