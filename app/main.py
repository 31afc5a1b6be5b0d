"""The FastAPI application: `uvicorn app.main:app`."""

from __future__ import annotations

import logging
import time
import uuid
from contextlib import asynccontextmanager

import anyio
from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware

from app import __version__
from app.api.routes import health, model, segment
from app.core.config import Settings, get_settings
from app.core.errors import error_response, install_error_handlers
from app.core.logging import configure_logging, request_id
from app.core.metrics import LATENCY, REQUESTS
from app.core.model_store import ModelStore

logger = logging.getLogger(__name__)


async def watch_model(store: ModelStore, interval_s: float) -> None:
    """Load the model, then keep adopting the version CURRENT points at (if watching is on)."""
    await anyio.to_thread.run_sync(store.refresh)
    while interval_s > 0:
        await anyio.sleep(interval_s)
        await anyio.to_thread.run_sync(store.refresh)


@asynccontextmanager
async def lifespan(app: FastAPI):
    """Load and warm the model off the event loop; /readyz answers 503 until it is done."""
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(watch_model, app.state.store, app.state.settings.watch_interval_s)
        yield
        tasks.cancel_scope.cancel()


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app for these settings (the environment's by default)."""
    settings = settings or get_settings()
    configure_logging(settings.log_level, settings.log_format)
    app = FastAPI(
        title="bloodseg",
        version=__version__,
        summary="Segment and count red and white blood cells in microscope images.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.store = ModelStore(settings)
    app.state.inference_limiter = anyio.CapacityLimiter(settings.inference_concurrency)
    install_error_handlers(app)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["*"],
            expose_headers=["X-Request-ID", "X-Count-RBC", "X-Count-WBC"],
        )

    @app.middleware("http")
    async def observe(request: Request, call_next):
        """Request id, early 413 on a declared oversized body, and per-route metrics."""
        rid = request.headers.get("x-request-id") or uuid.uuid4().hex
        token = request_id.set(rid)
        started = time.perf_counter()
        try:
            declared = request.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > settings.max_upload_bytes + 64 * 1024:
                response = error_response(
                    413, "upload_too_large", f"the upload exceeds {settings.max_upload_bytes} bytes"
                )
            else:
                response = await call_next(request)
            route = request.scope.get("route")
            path = route.path if route is not None else "unmatched"
            REQUESTS.labels(path, request.method, str(response.status_code)).inc()
            LATENCY.labels(path).observe(time.perf_counter() - started)
            response.headers["X-Request-ID"] = rid
            logger.info(
                "%s %s -> %d in %.1f ms",
                request.method,
                request.url.path,
                response.status_code,
                (time.perf_counter() - started) * 1000,
            )
            return response
        finally:
            request_id.reset(token)

    app.include_router(health.router)
    app.include_router(segment.router)
    app.include_router(model.router)
    return app


app = create_app()
