"""Prometheus metrics of the service, in a registry of its own."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

registry = CollectorRegistry()

REQUESTS = Counter(
    "bloodseg_requests_total",
    "HTTP requests by route, method and status",
    ["route", "method", "status"],
    registry=registry,
)
LATENCY = Histogram(
    "bloodseg_request_duration_seconds",
    "HTTP request latency by route",
    ["route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=registry,
)
STAGE_LATENCY = Histogram(
    "bloodseg_stage_duration_seconds",
    "Time per /segment stage",
    ["stage"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=registry,
)
IMAGE_PIXELS = Histogram(
    "bloodseg_image_pixels",
    "Pixels (width x height) of segmented images",
    buckets=(65_536, 262_144, 1_048_576, 4_194_304, 16_777_216, 67_108_864),
    registry=registry,
)
CELLS = Counter("bloodseg_cells_total", "Cells found, by class", ["label"], registry=registry)
MODEL_INFO = Gauge(
    "bloodseg_model_info",
    "The model being served (value 1)",
    ["name", "version", "provider"],
    registry=registry,
)
MODEL_READY = Gauge(
    "bloodseg_model_ready", "1 when a model is loaded and warmed up", registry=registry
)
MODEL_LOAD_FAILURES = Counter(
    "bloodseg_model_load_failures_total", "Models that failed to load or verify", registry=registry
)
MODEL_CPU_FALLBACK = Gauge(
    "bloodseg_model_cpu_fallback",
    "1 when an accelerator was asked for but failed its warm-up, so the model runs on CPU",
    registry=registry,
)
SEGMENT_IN_FLIGHT = Gauge(
    "bloodseg_segment_requests_in_flight",
    "/segment requests admitted and not yet answered (waiting for the model or running)",
    registry=registry,
)
DEADLINE_EXCEEDED = Counter(
    "bloodseg_segment_timeouts_total",
    "/segment requests answered 504 past BLOODSEG_REQUEST_TIMEOUT_S",
    registry=registry,
)
REJECTED = Counter(
    "bloodseg_segment_rejected_total",
    "/segment requests refused with 503 because BLOODSEG_MAX_QUEUE requests were admitted",
    registry=registry,
)
DISCONNECTED = Counter(
    "bloodseg_segment_dropped_total",
    "/segment requests dropped before inference because their client had disconnected",
    registry=registry,
)
NETWORK_PENDING_TILES = Gauge(
    "bloodseg_inference_pending_tiles",
    "Tiles waiting for the network stage (as Triton's nv_inference_pending_request_count)",
    registry=registry,
)
NETWORK_QUEUE_DURATION = Histogram(
    "bloodseg_inference_queue_duration_seconds",
    "Time a request's tiles waited before their first network batch (as Triton's "
    "nv_inference_queue_duration_us)",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=registry,
)
BATCH_TILES = Histogram(
    "bloodseg_inference_batch_tiles",
    "Tiles per network call (batches mix concurrent requests' tiles)",
    buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64),
    registry=registry,
)
