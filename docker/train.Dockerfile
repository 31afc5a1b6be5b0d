# syntax=docker/dockerfile:1
# The training job: TensorFlow (GPU-capable) trains, exports, verifies and publishes a model.
# /models and /runs exist in the image, owned by the job's user: a new named volume mounted
# there takes that ownership, so the job (uid 10001) can write even if it runs first.

FROM python:3.11-slim-bookworm
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 \
    TF_CPP_MIN_LOG_LEVEL=2
RUN useradd --create-home --uid 10001 bloodseg \
    && mkdir -p /models /runs \
    && chown bloodseg:bloodseg /models /runs
WORKDIR /src
COPY pyproject.toml README.md ./
COPY app ./app
COPY training ./training
COPY docker/train-entrypoint.sh /usr/local/bin/train-entrypoint
# DL3013: this installs the project itself; its dependency ranges are pinned in pyproject.toml
# hadolint ignore=DL3013
RUN pip install ".[train-gpu]"
ENV BLOODSEG_TRAIN_DATA='["/data/blood-cell-detection"]' \
    BLOODSEG_TRAIN_PARTIAL_RBC_DATA='["/data/bccd"]' \
    BLOODSEG_TRAIN_RUN_DIR=/runs/compose \
    BLOODSEG_TRAIN_MODELS_DIR=/models
USER 10001
ENTRYPOINT ["train-entrypoint"]
