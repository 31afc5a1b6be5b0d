"""Admission control: a bound on the segmentation requests admitted at once (waiting for the
model or running). Past it a request is refused at once with 503 instead of queueing without
end, as Triton's max_queue_size and Ray Serve's max_queued_requests do."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from app.core.metrics import REJECTED, SEGMENT_IN_FLIGHT


class Overloaded(Exception):
    """Every admission slot is taken."""


class Admission:
    """Counts admitted requests (and shows the count as bloodseg_segment_requests_in_flight).
    Used from the event loop only, so a plain integer suffices."""

    def __init__(self, max_queue: int) -> None:
        self.max_queue = max_queue  # 0: unbounded
        self.admitted = 0

    @contextmanager
    def admit(self) -> Iterator[None]:
        """Hold one slot for the duration of the block, or raise Overloaded."""
        if self.max_queue and self.admitted >= self.max_queue:
            REJECTED.inc()
            raise Overloaded(f"{self.admitted} requests are already admitted (BLOODSEG_MAX_QUEUE)")
        self.admitted += 1
        SEGMENT_IN_FLIGHT.inc()
        try:
            yield
        finally:
            self.admitted -= 1
            SEGMENT_IN_FLIGHT.dec()
