"""The network as a stage of its own: one thread runs the model, on batches that mix the tiles
of concurrent requests (Triton's dynamic batching: `max_batch_size`,
`max_queue_delay_microseconds`). Requests decode, post-process and encode in their own threads
meanwhile, so those stages overlap the network instead of queueing behind it.

Tiles batch with tiles of their own shape. On the CPU a small image runs as one window of its
own size (OnnxSegmenter.window_shape), so one batch holds the windows of one shape, and a
window counts as many tiles as its area holds (rounded up) against `max_batch`."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field

import numpy as np

from app.core.metrics import BATCH_TILES, NETWORK_PENDING_TILES, NETWORK_QUEUE_DURATION
from app.core.work import WorkAborted, WorkGuard

logger = logging.getLogger(__name__)

IDLE_EXIT_S = 30.0  # a stage with no work for this long ends its thread; the next job restarts it


@dataclass
class _Job:
    """One request's tiles, the part of them already taken into batches, and its result."""

    tiles: np.ndarray
    guard: WorkGuard | None
    enqueued: float = field(default_factory=time.monotonic)
    taken: int = 0
    done: int = 0
    outputs: np.ndarray | None = None
    future: Future = field(default_factory=Future)

    def aborted(self) -> WorkAborted | None:
        """Why this job's request no longer wants it (deadline, cancel, client gone), if so."""
        if self.guard is None:
            return None
        try:
            self.guard.check()
        except WorkAborted as reason:
            return reason
        return None


class NetworkStage:
    """Runs `run_batch` on batches of at most `max_batch` tiles (of `tile_pixels` each) from
    all waiting requests.

    A batch waits at most `delay_s` for more tiles once the first has arrived. Jobs whose
    request has been abandoned (deadline, cancellation, disconnect) are dropped before they
    reach the network. With `when_busy` (the same model in a session whose threads do not
    spin), the first instance runs a batch there whenever `busy()` says other requests are in
    flight: their decoding and post-processing need the cores that spinning would take.
    """

    def __init__(
        self,
        run_batch: Callable[[np.ndarray], np.ndarray],
        max_batch: int,
        delay_s: float,
        more_instances: Sequence[Callable[[np.ndarray], np.ndarray]] = (),
        when_busy: Callable[[np.ndarray], np.ndarray] | None = None,
        busy: Callable[[], bool] = lambda: False,
        tile_pixels: int = 256 * 256,
    ) -> None:
        # one thread per model instance (Triton's instance_group count), all on one queue
        self.instances = [run_batch, *more_instances]
        self.max_batch = max_batch
        self.delay_s = delay_s
        self.when_busy = when_busy
        self.busy = busy
        self.tile_pixels = tile_pixels
        self._jobs: deque[_Job] = deque()
        self._pending = 0  # tiles queued, not yet taken into a batch
        self._wake = threading.Condition()
        self._threads: dict[int, threading.Thread] = {}

    def run(self, tiles: np.ndarray, guard: WorkGuard | None = None) -> np.ndarray:
        """The network's outputs for a (N, H, W, C) stack of tiles, batched with other requests'.

        Blocks until they are done; raises the guard's reason if the request is abandoned.
        """
        job = _Job(tiles=tiles, guard=guard)
        with self._wake:
            self._jobs.append(job)
            self._pending += len(tiles)
            NETWORK_PENDING_TILES.inc(len(tiles))
            for index, run_batch in enumerate(self.instances):
                if index not in self._threads:
                    self._threads[index] = threading.Thread(
                        target=self._loop,
                        args=(index, run_batch),
                        name=f"bloodseg-network-{index}",
                        daemon=True,
                    )
                    self._threads[index].start()
            self._wake.notify()
        while True:
            timeout = None if guard is None else max(guard.remaining(), 0.0) + 0.05
            try:
                return job.future.result(timeout=timeout)
            except FutureTimeout:
                guard.check()  # past the deadline: raises; the loop drops the job

    def _loop(self, index: int, run_batch: Callable[[np.ndarray], np.ndarray]) -> None:
        while True:
            with self._wake:
                if not self._wake.wait_for(lambda: self._jobs, timeout=IDLE_EXIT_S):
                    del self._threads[index]
                    return
                self._wait_for_more()
                taken = self._take_batch()
            if taken:
                quiet = index == 0 and self.when_busy is not None and self.busy()
                self._run(taken, self.when_busy if quiet else run_batch)

    def _wait_for_more(self) -> None:
        """Hold the batch open up to delay_s while it is short of max_batch (lock held)."""
        closes = time.monotonic() + self.delay_s
        while self._pending < self.max_batch:
            left = closes - time.monotonic()
            if left <= 0:
                return
            self._wake.wait(left)

    def _take_batch(self) -> list[tuple[_Job, int, int]]:
        """Up to max_batch tiles' worth of windows of one shape from the head of the queue, as
        (job, start, stop) (lock held); at least one window, however large."""
        taken: list[tuple[_Job, int, int]] = []
        room = self.max_batch
        while self._jobs and room:
            job = self._jobs[0]
            reason = job.aborted()
            if reason is not None:  # never reaches the network
                self._jobs.popleft()
                self._forget(len(job.tiles) - job.taken)
                job.future.set_exception(reason)
                continue
            if taken and job.tiles.shape[1:] != taken[0][0].tiles.shape[1:]:
                break  # another shape: the next batch, in turn
            weight = -(-job.tiles.shape[1] * job.tiles.shape[2] // self.tile_pixels)
            count = min(room // weight, len(job.tiles) - job.taken)
            if count == 0:
                if taken:
                    break
                count = 1
            if job.taken == 0:
                NETWORK_QUEUE_DURATION.observe(time.monotonic() - job.enqueued)
            taken.append((job, job.taken, job.taken + count))
            job.taken += count
            room = max(0, room - count * weight)
            self._forget(count)
            if job.taken == len(job.tiles):
                self._jobs.popleft()
        return taken

    def _forget(self, tiles: int) -> None:
        self._pending -= tiles
        NETWORK_PENDING_TILES.dec(tiles)

    def _run(
        self, taken: list[tuple[_Job, int, int]], run_batch: Callable[[np.ndarray], np.ndarray]
    ) -> None:
        parts = [job.tiles[start:stop] for job, start, stop in taken]
        batch = parts[0] if len(parts) == 1 else np.concatenate(parts)
        BATCH_TILES.observe(len(batch))
        try:
            outputs = run_batch(batch)
        except Exception as error:  # the requests in this batch fail; the stage goes on
            logger.exception("network batch of %d tiles failed", len(batch))
            for job, _, _ in taken:
                if not job.future.done():
                    job.future.set_exception(error)
            return
        offset = 0
        for job, start, stop in taken:
            if job.outputs is None:
                job.outputs = np.empty((len(job.tiles), *outputs.shape[1:]), outputs.dtype)
            job.outputs[start:stop] = outputs[offset : offset + stop - start]
            offset += stop - start
            job.done += stop - start
            if job.done == len(job.tiles) and not job.future.done():
                job.future.set_result(job.outputs)
