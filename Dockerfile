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
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    BLOODSEG_MODEL_DIR=/srv/models/bloodseg \
    UVICORN_HOST=0.0.0.0 \
    UVICORN_PORT=8000
USER 10001
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]
CMD ["uvicorn", "app.main:app"]
