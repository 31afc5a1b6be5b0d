"""Serve the app with uvicorn, configured from the settings: `python -m app.serve`.

h11 is used rather than httptools because it bounds the request head
(`h11_max_incomplete_event_size`): a client cannot make the server buffer megabytes of
headers. The drain after SIGTERM is bounded by BLOODSEG_SHUTDOWN_TIMEOUT_S.
"""

from __future__ import annotations

import uvicorn

from app.core.config import get_settings


def main() -> None:
    """Run the service until SIGTERM or Ctrl-C."""
    settings = get_settings()
    uvicorn.run(
        "app.main:app",
        host=settings.host,
        port=settings.port,
        http="h11",
        h11_max_incomplete_event_size=settings.max_header_bytes,
        timeout_graceful_shutdown=settings.shutdown_timeout_s,
        server_header=False,
        access_log=False,  # RequestGuard logs each request once, with its request id
        log_level=settings.log_level.lower(),
    )


if __name__ == "__main__":
    main()
