"""The FastAPI application: `python -m app.serve`, or `uvicorn app.main:app`."""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager

import anyio
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline

from app import __version__
from app.api.responses import error_responses
from app.api.routes import health, inference_protocol, model, segment, web
from app.api.routes.segment import SUMMARY_HEADERS
from app.core.admission import Admission
from app.core.config import Settings, get_settings
from app.core.errors import install_error_handlers
from app.core.logging import configure_logging
from app.core.model_store import ModelStore
from app.core.request_guard import MULTIPART_OVERHEAD_BYTES, RequestGuard

logger = logging.getLogger(__name__)

DOCS_ASSETS_URL = "/docs-assets"


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
    body_limit = settings.max_upload_bytes + MULTIPART_OVERHEAD_BYTES
    common = {
        "title": "bloodseg",
        "version": __version__,
        "summary": "Segment and count red and white blood cells in microscope images.",
        "lifespan": lifespan,
        "responses": error_responses(
            (431, "request headers too large"), (500, "unexpected server error")
        ),
    }
    if settings.docs_enabled:  # Swagger UI and ReDoc with their assets served here, no CDN
        app = FastAPIOffline(static_url=DOCS_ASSETS_URL, **common)
    else:
        app = FastAPI(docs_url=None, redoc_url=None, **common)
    app.state.settings = settings
    app.state.admission = admission = Admission(settings.max_queue)
    app.state.store = ModelStore(settings, busy=lambda: admission.admitted > 1)
    app.state.workers = anyio.CapacityLimiter(settings.workers)
    install_error_handlers(app)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["*"],
            expose_headers=["X-Request-ID", *SUMMARY_HEADERS],
        )
    # added last, so outermost: it sees every request and response, errors included
    app.add_middleware(
        RequestGuard, max_header_bytes=settings.max_header_bytes, max_body_bytes=body_limit
    )
    app.include_router(health.router)
    app.include_router(segment.router)
    app.include_router(model.router)
    app.include_router(inference_protocol.router)
    app.include_router(web.router)
    app.mount("/static", StaticFiles(directory=web.STATIC_DIR), name="static")
    generate_openapi = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = generate_openapi()
            schema["components"]["schemas"].update(inference_protocol.openapi_schemas())
        return app.openapi_schema

    app.openapi = openapi
    return app


app = create_app()
