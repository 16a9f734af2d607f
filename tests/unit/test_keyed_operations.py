"""Keyed operations: one per key at a time, ABORTED for a second, work outliving its caller."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from services.common.errors import Aborted
from services.common.keyed_operations import KeyedOperations


class Gate:
    """Work that runs until the test opens the gate, and records that it finished."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.open = asyncio.Event()
        self.done: list[str] = []

    def work(self, label: str) -> Callable[[], Awaitable[str]]:
        async def run() -> str:
            self.started.set()
            await self.open.wait()
            self.done.append(label)
            return label

        return run


async def test_second_operation_on_a_held_key_is_aborted_and_runs_nothing() -> None:
    ops = KeyedOperations()
    gate = Gate()
    first = asyncio.create_task(ops.run("volume:a", "path:/x", what="staging a",
                                        work=gate.work("first")))
    await gate.started.wait()
    with pytest.raises(Aborted, match="staging a is already in progress"):
        await ops.run("path:/x", what="publishing", work=gate.work("second"))
    # All or nothing: a key that was free is not left taken by the refused call.
    with pytest.raises(Aborted):
        await ops.run("path:/y", "volume:a", what="other", work=gate.work("third"))
    assert not ops.running("path:/y")
    gate.open.set()
    assert await first == "first"
    assert gate.done == ["first"]
    assert not ops.running("volume:a") and not ops.running("path:/x")
    assert await ops.run("path:/x", what="again", work=gate.work("again")) == "again"


async def test_work_outlives_a_cancelled_caller_and_holds_its_key_until_done() -> None:
    ops = KeyedOperations()
    gate = Gate()
    caller = asyncio.create_task(ops.run("name", what="creating", work=gate.work("made")))
    await gate.started.wait()
    caller.cancel()  # the sidecar's deadline
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert ops.running("name")
    with pytest.raises(Aborted):
        await ops.run("name", what="retry", work=gate.work("duplicate"))
    gate.open.set()
    assert await ops.drain(timeout=5) == 0
    assert gate.done == ["made"]
    assert not ops.running("name")


async def test_a_failure_reaches_the_caller_and_frees_the_key() -> None:
    ops = KeyedOperations()

    async def fail() -> None:
        raise RuntimeError("heketi said no")

    with pytest.raises(RuntimeError, match="heketi said no"):
        await ops.run("k", what="failing", work=fail)
    assert not ops.running("k")


async def test_drain_reports_what_is_still_running_after_the_timeout() -> None:
    ops = KeyedOperations()
    gate = Gate()
    caller = asyncio.create_task(ops.run("k", what="slow", work=gate.work("slow")))
    await gate.started.wait()
    assert await ops.drain(timeout=0.01) == 1
    gate.open.set()
    assert await ops.drain() == 0
    assert await caller == "slow"


async def test_work_run_by_the_holder_itself_blocks_operations_on_its_keys() -> None:
    ops = KeyedOperations()
    assert ops.try_acquire("volume:a", "path:/x", what="a mount repair")
    assert not ops.try_acquire("path:/x")
    gate = Gate()
    with pytest.raises(Aborted, match="a mount repair is already in progress"):
        await ops.run("volume:a", what="staging", work=gate.work("stage"))
    ops.release("volume:a", "path:/x")
    gate.open.set()
    assert await ops.run("volume:a", what="staging", work=gate.work("stage")) == "stage"
