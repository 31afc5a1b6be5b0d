"""The network stage: tiles of concurrent requests batched together, each request getting its
own results; abandoned requests dropped before the network; failures kept to their batch."""

from __future__ import annotations

import threading
import time

import anyio
import numpy as np
import pytest

from app.core.network_stage import NetworkStage
from app.core.work import ClientGone, DeadlineExceeded, WorkGuard, run_guarded
from app.inference.decode import decode_image
from app.inference.pipeline import network_input, predict_probs
from tests.conftest import fixture_image, make_client, wait_ready


class GatedRun:
    """The real session's run_batch, recording batch sizes, optionally held at a gate."""

    def __init__(self, run_batch) -> None:
        self.run_batch = run_batch
        self.sizes: list[int] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        self.entered.set()
        self.gate.wait(30)
        self.sizes.append(len(batch))
        return self.run_batch(batch)


def tiles_of(segmenter, name: str) -> np.ndarray:
    return network_input(decode_image(fixture_image(name)), segmenter, 1.0)[None]


def test_concurrent_requests_share_batches_and_each_gets_its_own_result(segmenter):
    names = ["image-2.png", "image-4.png", "image-7.png", "image-10.png", "image-11.png"]
    images = [decode_image(fixture_image(n)) for n in names]
    alone = [predict_probs(image, segmenter) for image in images]
    run = GatedRun(segmenter.run_batch)
    stage = NetworkStage(run, max_batch=4, delay_s=0.0)
    run.gate.clear()  # hold the first batch so that the others queue up behind it
    results: dict[int, np.ndarray] = {}

    def request(index: int) -> None:
        results[index] = predict_probs(images[index], segmenter, run=stage.run)

    first = threading.Thread(target=request, args=(0,))
    first.start()
    assert run.entered.wait(30)
    others = [threading.Thread(target=request, args=(i,)) for i in range(1, len(images))]
    for thread in others:
        thread.start()
    time.sleep(0.3)  # let the four others queue
    run.gate.set()
    for thread in [first, *others]:
        thread.join(60)
    assert run.sizes == [1, 4]  # the four queued requests ran as one batch
    for index, expected in enumerate(alone):
        np.testing.assert_allclose(results[index], expected, atol=1e-4)
    assert not np.allclose(results[1], results[2])  # not one image's answer for all


def test_a_batch_waits_up_to_the_delay_for_more_tiles(segmenter):
    run = GatedRun(segmenter.run_batch)
    stage = NetworkStage(run, max_batch=4, delay_s=0.5)
    tiles = tiles_of(segmenter, "image-2.png")
    threads = [threading.Thread(target=stage.run, args=(tiles,)) for _ in range(2)]
    threads[0].start()
    time.sleep(0.1)
    threads[1].start()
    for thread in threads:
        thread.join(30)
    assert run.sizes == [2]


def test_a_request_with_more_tiles_than_max_batch_is_split(segmenter):
    run = GatedRun(segmenter.run_batch)
    stage = NetworkStage(run, max_batch=3, delay_s=0.0)
    tiles = np.concatenate([tiles_of(segmenter, "image-2.png")] * 7)
    out = stage.run(tiles)
    assert run.sizes == [3, 3, 1] and out.shape[0] == 7
    np.testing.assert_allclose(out[6], out[0], atol=1e-5)


def test_windows_of_other_shapes_are_batched_apart_and_counted_by_area(segmenter):
    """On the CPU a small image runs as one window of its own size: a batch never mixes
    shapes, and a window of several tiles' area takes that much of max_batch."""
    run = GatedRun(segmenter.run_batch)
    stage = NetworkStage(run, max_batch=4, delay_s=0.0, tile_pixels=256 * 256)
    shapes = {}

    def record(batch: np.ndarray) -> np.ndarray:
        shapes.setdefault(batch.shape[1:3], []).append(len(batch))
        return run(batch)

    stage.instances = [record]
    square = tiles_of(segmenter, "image-2.png")  # one 256 tile
    wide = np.concatenate([square, square[:, :, :64]], axis=2)  # 256x320: 2 tiles' area
    large = np.concatenate([wide, wide], axis=1)  # 512x320: 3 tiles' area
    alone = {name: segmenter.run_batch(t) for name, t in (("square", square), ("wide", wide))}
    alone["large"] = segmenter.run_batch(large)
    jobs = [("square", square), ("wide", wide), ("wide", wide), ("square", square)]
    jobs += [("large", large), ("large", large)]
    run.gate.clear()
    results: dict[int, np.ndarray] = {}

    def request(index: int) -> None:
        results[index] = stage.run(jobs[index][1])

    threads = [threading.Thread(target=request, args=(i,)) for i in range(len(jobs))]
    threads[0].start()
    assert run.entered.wait(30)
    for thread in threads[1:]:
        thread.start()
        time.sleep(0.05)  # queued in this order
    run.gate.set()
    for thread in threads:
        thread.join(60)
    # the first square alone (it held the gate), two wide windows (4 tiles' area), then the
    # square behind them, then each large window alone (two would be 6 tiles' area)
    assert shapes == {(256, 256): [1, 1], (256, 320): [2], (512, 320): [1, 1]}
    for index, (name, _) in enumerate(jobs):
        np.testing.assert_allclose(results[index], alone[name], atol=1e-4)


def test_an_abandoned_request_never_reaches_the_network(segmenter):
    run = GatedRun(segmenter.run_batch)
    stage = NetworkStage(run, max_batch=1, delay_s=0.0)
    tiles = tiles_of(segmenter, "image-2.png")
    run.gate.clear()
    busy = threading.Thread(target=stage.run, args=(tiles,))
    busy.start()
    assert run.entered.wait(30)
    guard = WorkGuard(60)
    outcome: list[BaseException] = []

    def waiting() -> None:
        try:
            stage.run(tiles, guard)
        except ClientGone as error:
            outcome.append(error)

    queued = threading.Thread(target=waiting)
    queued.start()
    time.sleep(0.2)
    guard.abandon(ClientGone("the client left"))
    run.gate.set()
    busy.join(30)
    queued.join(30)
    assert len(outcome) == 1 and run.sizes == [1]  # only the first request's tile ran


def test_a_request_past_its_deadline_stops_waiting_for_the_network(segmenter):
    run = GatedRun(segmenter.run_batch)
    stage = NetworkStage(run, max_batch=1, delay_s=0.0)
    tiles = tiles_of(segmenter, "image-2.png")
    run.gate.clear()
    threading.Thread(target=stage.run, args=(tiles,), daemon=True).start()
    assert run.entered.wait(30)
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded):
        stage.run(tiles, WorkGuard(0.3))
    assert time.monotonic() - started < 2
    run.gate.set()


def test_a_failing_batch_fails_its_requests_and_the_stage_goes_on(segmenter):
    calls = []

    def flaky(batch: np.ndarray) -> np.ndarray:
        calls.append(len(batch))
        if len(calls) == 1:
            raise RuntimeError("device lost")
        return segmenter.run_batch(batch)

    stage = NetworkStage(flaky, max_batch=4, delay_s=0.0)
    tiles = tiles_of(segmenter, "image-2.png")
    with pytest.raises(RuntimeError, match="device lost"):
        stage.run(tiles)
    assert stage.run(tiles).shape[:3] == (1, 256, 256)


def test_work_is_stopped_when_its_client_leaves_while_it_runs():
    checks: list[float] = []
    polls = {"count": 0}

    async def disconnected() -> bool:
        polls["count"] += 1
        return polls["count"] >= 3  # the client leaves after a few polls

    def work(guard: WorkGuard) -> None:
        for _ in range(500):  # 5 s if never stopped
            checks.append(time.monotonic())
            guard.check()
            time.sleep(0.01)

    async def main() -> None:
        with pytest.raises(ClientGone):
            await run_guarded(work, WorkGuard(60), anyio.CapacityLimiter(1), disconnected)

    started = time.monotonic()
    anyio.run(main)
    assert time.monotonic() - started < 2 and len(checks) < 200


def test_instances_run_batches_side_by_side(segmenter):
    first, second = GatedRun(segmenter.run_batch), GatedRun(segmenter.run_batch)
    first.gate.clear()
    second.gate.clear()
    stage = NetworkStage(first, max_batch=1, delay_s=0.0, more_instances=[second])
    tiles = tiles_of(segmenter, "image-2.png")
    threads = [threading.Thread(target=stage.run, args=(tiles,)) for _ in range(2)]
    for thread in threads:
        thread.start()
    # both instances hold a batch at once: neither waits for the other
    assert first.entered.wait(30) and second.entered.wait(30)
    first.gate.set()
    second.gate.set()
    for thread in threads:
        thread.join(30)
    assert first.sizes == [1] and second.sizes == [1]


def test_batches_run_without_spinning_while_other_requests_are_in_flight(segmenter):
    spinning, quiet = GatedRun(segmenter.run_batch), GatedRun(segmenter.run_batch)
    others = threading.Event()  # stands for the admission count above one
    stage = NetworkStage(spinning, 4, 0.0, when_busy=quiet, busy=others.is_set)
    tiles = tiles_of(segmenter, "image-2.png")
    alone = stage.run(tiles)
    others.set()
    crowded = stage.run(tiles)
    assert spinning.sizes == [1] and quiet.sizes == [1]
    np.testing.assert_array_equal(alone, crowded)  # the same model either way


def test_the_app_tells_the_store_when_several_requests_are_admitted():
    with make_client() as client:
        wait_ready(client)
        state = client.app.state
        assert state.store.current.network.when_busy is not None  # CPU, spinning on auto
        assert not state.store.busy()
        state.admission.admitted = 2
        assert state.store.busy()
        state.admission.admitted = 0
    with make_client(intra_op_spinning=True) as client:
        wait_ready(client)
        assert client.app.state.store.current.network.when_busy is None
