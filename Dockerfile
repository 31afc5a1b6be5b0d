# syntax=docker/dockerfile:1
# The bloodseg service: FastAPI + ONNX Runtime (CUDA 13 / cuDNN 9 from pip, CPU fallback).

FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/venv
COPY pyproject.toml README.md ./
COPY app ./app
COPY training ./training
# runtime dependencies only (no TensorFlow), plus the CUDA libraries onnxruntime-gpu loads
RUN /opt/venv/bin/pip install ".[gpu]"

FROM python:3.11-slim-bookworm
RUN useradd --create-home --uid 10001 bloodseg
COPY --from=build /opt/venv /opt/venv
WORKDIR /srv
COPY --chown=bloodseg:bloodseg models ./models
# HOME and the CUDA kernel cache point into /tmp: compose runs the root filesystem read-only
# with a tmpfs /tmp, and CUDA/ORT write caches under $HOME at start-up.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    CUDA_CACHE_PATH=/tmp/cuda-cache \
    BLOODSEG_MODEL_DIR=/srv/models/bloodseg \
    BLOODSEG_HOST=0.0.0.0 \
    BLOODSEG_PORT=8000
USER 10001
EXPOSE 8000
# healthy means ready: a model is loaded and warmed up (on CPU if the GPU failed its warm-up)
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=4)"]
CMD ["python", "-m", "app.serve"]
