"""The work one request may cause: refused from the header, checked while running, and
stopped with its request."""

import threading
import time
from dataclasses import replace

import anyio
import numpy as np
import pytest

from app.core.work import DeadlineExceeded, WorkGuard, run_guarded
from app.inference.budget import MIN_SIDE_PX, WorkLimits, WorkRefused, check_work
from app.inference.runner import OnnxSegmenter

LIMITS = WorkLimits(max_pixels=1_000_000, max_work_pixels=10 * 256 * 256)


def one_tile_per_65536(height: int, width: int) -> int:
    return -(-height * width // 65536) * 65536


@pytest.mark.parametrize(
    "width, height, scale, status, code",
    [
        (1001, 1000, 1.0, 413, "image_too_large"),  # decoded pixels
        (900, 900, 1.0, 413, "image_too_large"),  # 13 tiles of work, the limit is 10
        (100, 100, 9.0, 422, "invalid_scale"),
        (100, 100, 1 / 100, 422, "invalid_scale"),
        (1000, 20, 1.0, 422, "degenerate_image"),  # aspect ratio 50
        (200, 100, 0.1, 422, "degenerate_image"),  # 10 px once resampled
    ],
)
def test_refusals(width, height, scale, status, code):
    with pytest.raises(WorkRefused) as refused:
        check_work(width, height, scale, LIMITS, one_tile_per_65536)
    assert (refused.value.status, refused.value.code) == (status, code)


def test_accepted_work_is_counted_at_the_model_scale():
    assert check_work(256, 256, 1.0, LIMITS, one_tile_per_65536) == 65536
    assert check_work(512, 512, 0.5, LIMITS, one_tile_per_65536) == 65536
    assert check_work(MIN_SIDE_PX, MIN_SIDE_PX, 1.0, LIMITS, one_tile_per_65536) == 65536


def test_segmenter_counts_overlapping_tiles(segmenter):
    tile = segmenter.tile_size
    tiled = OnnxSegmenter(
        segmenter.model_dir, segmenter.metadata, replace(segmenter.options, max_window_pixels=0)
    )
    # the bound counts tiles whatever runs, so every provider admits the same images
    for counted in (segmenter, tiled):
        assert counted.work_pixels(256, 256) == tile * tile
        assert counted.work_pixels(10, 10) == tile * tile  # padded up to one tile
        assert counted.work_pixels(2048, 2048) == 121 * tile * tile  # 11 x 11 windows
        assert counted.work_pixels(256, 700) == 4 * tile * tile  # padded to 704: 4 windows
        assert counted.work_pixels(1024, 1024) == 25 * tile * tile  # 5 x 5 windows
    # what runs on the CPU: one window within max_window_pixels, even windows past it
    assert segmenter.network_pixels(256, 700) == 256 * 704
    assert segmenter.network_pixels(1024, 1024) == 1024 * 1024
    assert segmenter.network_pixels(2048, 2048) == 9 * 736 * 736  # at most 1024 a side
    assert tiled.network_pixels(2048, 2048) == tiled.work_pixels(2048, 2048)


def test_predict_checks_before_every_batch_and_stops_when_told(segmenter):
    segmenter = OnnxSegmenter(  # in tiles, as on CUDA or past BLOODSEG_MAX_WINDOW_PIXELS
        segmenter.model_dir, segmenter.metadata, replace(segmenter.options, max_window_pixels=0)
    )
    image = np.zeros((256, 2048, 3), np.float32)  # 11 tiles: batches of 4, 4 and 3
    calls = []
    segmenter.predict(image, lambda: calls.append(1))
    assert len(calls) == 3

    def stop_on_second() -> None:
        calls.append(1)
        if len(calls) == 2:
            raise DeadlineExceeded("past the deadline")

    calls.clear()
    with pytest.raises(DeadlineExceeded):
        segmenter.predict(image, stop_on_second)
    assert len(calls) == 2


def test_a_cancelled_request_stops_its_thread_before_freeing_the_slot():
    limiter_state = {}
    stopped_at: list[float] = []
    running = threading.Event()

    def slow_work(guard: WorkGuard) -> None:
        running.set()
        try:
            for _ in range(500):  # 5 s if never stopped
                guard.check()
                time.sleep(0.01)
        finally:
            stopped_at.append(time.monotonic())

    async def main() -> None:
        limiter = anyio.CapacityLimiter(1)
        guard = WorkGuard(60)
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(run_guarded, slow_work, guard, limiter)
            while not running.is_set():  # cancel once the work really runs in its thread
                await anyio.sleep(0.01)
            tasks.cancel_scope.cancel()
        limiter_state["borrowed"] = limiter.borrowed_tokens
        limiter_state["released_at"] = time.monotonic()

    started = time.monotonic()
    anyio.run(main)
    assert stopped_at and stopped_at[0] - started < 2  # stopped, not run to its end
    assert limiter_state["borrowed"] == 0
    assert stopped_at[0] <= limiter_state["released_at"]


def test_waiting_for_a_busy_slot_counts_against_the_deadline():
    async def main() -> None:
        limiter = anyio.CapacityLimiter(1)
        other_request = object()
        await limiter.acquire_on_behalf_of(other_request)  # the slot is busy
        with pytest.raises(DeadlineExceeded, match="no inference slot"):
            await run_guarded(lambda guard: None, WorkGuard(0.1), limiter)
        limiter.release_on_behalf_of(other_request)
        assert limiter.borrowed_tokens == 0

    anyio.run(main)


def test_admission_refuses_past_the_bound_and_frees_slots():
    from app.core.admission import Admission, Overloaded

    admission = Admission(2)
    with admission.admit(), admission.admit():
        with pytest.raises(Overloaded), admission.admit():
            pass
        assert admission.admitted == 2
    assert admission.admitted == 0
    with admission.admit():
        assert admission.admitted == 1
    unbounded = Admission(0)
    with unbounded.admit(), unbounded.admit(), unbounded.admit():
        assert unbounded.admitted == 3
