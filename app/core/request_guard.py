"""The outermost middleware: request ids, header and body limits, metrics, access log, and a
JSON 500 for any unhandled error, so that every response passes through one place."""

from __future__ import annotations

import logging
import re
import time
import uuid

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.errors import error_response
from app.core.logging import request_id
from app.core.metrics import LATENCY, REQUESTS

logger = logging.getLogger(__name__)

REQUEST_ID_HEADER = "X-Request-ID"
# a client's id is kept only if short and plain: it is echoed and written to every log line
VALID_REQUEST_ID = re.compile(r"[A-Za-z0-9._:+=/-]{1,128}")
MULTIPART_OVERHEAD_BYTES = 64 * 1024
# metric labels take the method only from this set, so clients cannot grow /metrics at will
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"})


def client_request_id(value: str | None) -> str:
    """The client's X-Request-ID when it is a plain token, else a new random one."""
    if value is not None and VALID_REQUEST_ID.fullmatch(value):
        return value
    return uuid.uuid4().hex


def header_bytes(scope: Scope) -> int:
    """Size of the request's header block as sent (names, values, separators)."""
    return sum(len(name) + len(value) + 4 for name, value in scope["headers"])


class BodyTooLarge(Exception):
    """The request body passed the limit while it was being read."""


class RequestGuard:
    """Wraps the app for every HTTP request.

    Too many header bytes are a 431 and a declared body over the limit a 413, both answered
    before the body is read. A body without Content-Length (chunked) is cut off as soon as
    it passes the limit, and the app's own answer is replaced by the 413.
    """

    def __init__(self, app: ASGIApp, max_header_bytes: int, max_body_bytes: int) -> None:
        self.app = app
        self.max_header_bytes = max_header_bytes
        self.max_body_bytes = max_body_bytes

    def _refusal(self, scope: Scope):
        if header_bytes(scope) > self.max_header_bytes:
            return error_response(
                431,
                "headers_too_large",
                f"request headers exceed {self.max_header_bytes} bytes",
            )
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            return self._too_large()
        return None

    def _too_large(self):
        return error_response(
            413, "upload_too_large", f"the body exceeds {self.max_body_bytes} bytes"
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = client_request_id(Headers(scope=scope).get(REQUEST_ID_HEADER))
        token = request_id.set(rid)
        started = time.perf_counter()
        status = 500
        response_started = False
        body_bytes = 0
        body_too_large = False

        async def receive_limited() -> Message:
            nonlocal body_bytes, body_too_large
            message = await receive()
            if message["type"] == "http.request":
                body_bytes += len(message.get("body", b""))
                if body_bytes > self.max_body_bytes:
                    body_too_large = True
                    raise BodyTooLarge
            return message

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = rid
            await send(message)

        async def send_unless_cut(message: Message) -> None:
            # the app answers a body cut off mid-parse with its own error: send the 413 instead
            if not body_too_large:
                await send_with_id(message)
            elif message["type"] == "http.response.start" and not response_started:
                await self._too_large()(scope, receive, send_with_id)

        try:
            refusal = self._refusal(scope)
            if refusal is not None:
                await refusal(scope, receive, send_with_id)
            else:
                await self.app(scope, receive_limited, send_unless_cut)
        except Exception as error:
            if response_started:
                raise  # too late for an error response: let the server close the connection
            if body_too_large or isinstance(error, BodyTooLarge):
                await self._too_large()(scope, receive, send_with_id)
            else:
                logger.exception("unhandled error")
                await error_response(500, "internal_error", "internal server error")(
                    scope, receive, send_with_id
                )
        finally:
            route = scope.get("route")
            path = getattr(route, "path", "unmatched")
            elapsed = time.perf_counter() - started
            method = scope["method"] if scope["method"] in HTTP_METHODS else "other"
            REQUESTS.labels(path, method, str(status)).inc()
            LATENCY.labels(path).observe(elapsed)
            logger.info(
                "%s %s -> %d in %.1f ms", scope["method"], scope["path"], status, elapsed * 1000
            )
            request_id.reset(token)
