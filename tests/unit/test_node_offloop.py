"""Lanes: blocking calls off the loop with a deadline, one per key, a bounded number at once."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from services.node.offloop import Hung, Lane
from tests.support.conditions import until


class Blocker:
    """A blocking call that hangs until released, counting how often it ran."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.started = 0
        self.lock = threading.Lock()

    def __call__(self) -> str:
        with self.lock:
            self.started += 1
        self.release.wait(30)
        return "done"


async def test_a_hung_call_answers_hung_at_its_deadline_and_keeps_its_key():
    lane = Lane("test", 4)
    hang = Blocker()
    try:
        started = time.monotonic()
        with pytest.raises(Hung, match=r"did not answer within 0\.2 s"):
            await lane.run("/p", hang, 0.2)
        assert time.monotonic() - started < 1
        # The same key again: no second thread, "hung" at this caller's deadline.
        with pytest.raises(Hung, match="earlier call has not returned"):
            await lane.run("/p", hang, 0.2)
        assert hang.started == 1 and lane.in_flight() == 1
        # Another key is not held up.
        assert await lane.run("/q", lambda: "fine", 1) == "fine"
    finally:
        hang.release.set()
    await until(lambda: lane.in_flight() == 0, "no call in flight", 5, 0.01)
    assert await lane.run("/p", lambda: "again", 1) == "again"


async def test_a_second_call_on_a_key_waits_for_the_first_to_end():
    lane = Lane("test", 4)
    hang = Blocker()
    first = asyncio.create_task(lane.run("/p", hang, 5))
    await until(lambda: hang.started == 1, "the call started", 5, 0.01)
    second = asyncio.create_task(lane.run("/p", lambda: "second", 5))
    await asyncio.sleep(0)
    assert not second.done() and lane.in_flight() == 1
    hang.release.set()
    assert await first == "done"
    assert await second == "second"


async def test_a_full_lane_answers_hung_instead_of_queueing_threads():
    lane = Lane("test", 2)
    hang = Blocker()
    try:
        for key in ("/a", "/b"):
            with pytest.raises(Hung):
                await lane.run(key, hang, 0.1)
        started = time.monotonic()
        with pytest.raises(Hung, match="all 2 threads for test calls are stuck"):
            await lane.run("/c", lambda: "never", 0.2)
        assert time.monotonic() - started < 1
        assert hang.started == 2
        # Exactly the two stuck calls hold threads of this lane (counted by their names:
        # other tests' threads come and go meanwhile).
        lane_threads = [t.name for t in threading.enumerate() if t.name.startswith("test:")]
        assert sorted(lane_threads) == ["test:/a", "test:/b"]
    finally:
        hang.release.set()
    await until(lambda: lane.in_flight() == 0, "no call in flight", 5, 0.01)
    assert await lane.run("/c", lambda: "now", 1) == "now"


async def test_a_call_waiting_for_a_thread_gets_one_when_a_call_ends():
    lane = Lane("test", 1)
    hang = Blocker()
    first = asyncio.create_task(lane.run("/a", hang, 5))
    await until(lambda: hang.started == 1, "the call started", 5, 0.01)
    second = asyncio.create_task(lane.run("/b", lambda: "b", 5))
    await asyncio.sleep(0)
    assert not second.done()
    hang.release.set()
    assert await first == "done" and await second == "b"


async def test_a_result_nobody_waits_for_is_discarded():
    lane = Lane("test", 2)
    hang = Blocker()
    discarded: list[str] = []
    with pytest.raises(Hung):
        await lane.run("/a", hang, 0.1, discard=discarded.append)
    hang.release.set()
    await until(lambda: discarded == ["done"], "the late result discarded", 5, 0.01)


async def test_errors_reach_the_caller():
    def fail() -> None:
        raise FileNotFoundError("gone")

    with pytest.raises(FileNotFoundError, match="gone"):
        await Lane("test", 1).run("/x", fail, 1)
