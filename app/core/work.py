"""Blocking work with a deadline, run off the event loop without outliving its request.

The work checks its `WorkGuard` between steps (tile batches, stages). A request past its
deadline stops there, and a request cancelled from outside (server shutdown) stops its
thread too, instead of leaving it to run unchecked.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import anyio

T = TypeVar("T")
FINISH_POLL_S = 0.02
FINISH_WAIT_S = 10.0
DISCONNECT_POLL_S = 0.1


class WorkAborted(Exception):
    """The work stopped before it was done."""


class DeadlineExceeded(WorkAborted):
    """The request ran past its deadline."""


class WorkCancelled(WorkAborted):
    """The request was cancelled (the server is shutting down)."""


class ClientGone(WorkAborted):
    """The client disconnected before its work reached the model."""


class WorkGuard:
    """A deadline and a cancel flag that blocking work checks as it goes."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self.deadline = time.monotonic() + timeout_s
        self._cancelled = threading.Event()
        self._reason: WorkAborted | None = None
        self.finished = threading.Event()

    def remaining(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    def cancel(self) -> None:
        self.abandon(WorkCancelled("the request was cancelled"))

    def abandon(self, reason: WorkAborted) -> None:
        """Stop the work at its next check, raising `reason` there."""
        self._reason = reason
        self._cancelled.set()

    def check(self) -> None:
        """Raise if the work should stop now."""
        if self._cancelled.is_set():
            raise self._reason or WorkCancelled("the request was cancelled")
        if time.monotonic() > self.deadline:
            raise DeadlineExceeded(f"the request took longer than {self.timeout_s:g} s")


async def run_guarded(
    func: Callable[[WorkGuard], T],
    guard: WorkGuard,
    limiter: anyio.CapacityLimiter,
    disconnected: Callable[[], Awaitable[bool]] | None = None,
) -> T:
    """Run `func(guard)` in a worker thread once `limiter` has room, within the guard's deadline.

    Waiting for room counts against the deadline, and a request whose client has gone by the
    time it gets room is dropped (`disconnected`). While the work runs, the client is polled
    every DISCONNECT_POLL_S; if it has left, the work stops at its next check, and its tiles
    still queued for the network are dropped. If this task is cancelled meanwhile, the work is
    told to stop, and the slot is held until its thread has really finished, so the limiter
    keeps bounding the threads that run.
    """
    with anyio.move_on_after(guard.remaining()) as waiting:
        await limiter.acquire()
    if waiting.cancelled_caught:
        raise DeadlineExceeded(
            f"no inference slot became free within {guard.timeout_s:g} s (server busy)"
        )
    if disconnected is not None and await disconnected():
        limiter.release()
        raise ClientGone("the client disconnected while its request waited")

    def work() -> T:
        try:
            return func(guard)
        finally:
            guard.finished.set()

    async def watch_client(done: anyio.Event) -> None:
        while not done.is_set():
            with anyio.move_on_after(DISCONNECT_POLL_S):
                await done.wait()
            if not done.is_set() and await disconnected():
                guard.abandon(ClientGone("the client disconnected while its request ran"))
                return

    async def work_and_watch() -> T:
        if disconnected is None:
            return await anyio.to_thread.run_sync(work, abandon_on_cancel=True)
        done = anyio.Event()
        failure: Exception | None = None
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(watch_client, done)
            try:
                result = await anyio.to_thread.run_sync(work, abandon_on_cancel=True)
            except Exception as error:  # raised outside the group, not as an ExceptionGroup
                failure = error
            finally:
                done.set()
        if failure is not None:
            raise failure
        return result

    try:
        return await work_and_watch()
    except anyio.get_cancelled_exc_class():
        guard.cancel()
        with anyio.CancelScope(shield=True), anyio.move_on_after(FINISH_WAIT_S):
            while not guard.finished.is_set():
                await anyio.sleep(FINISH_POLL_S)
        raise
    finally:
        limiter.release()
