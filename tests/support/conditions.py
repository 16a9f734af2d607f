"""Waiting for an observable condition, with a deadline, instead of sleeping a fixed time."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable

from devtools.heketi_sim.server import HeketiSimulator


async def until(condition: Callable[[], bool | Awaitable[bool]], what: str,
                timeout: float = 20.0) -> None:
    """Wait until `condition()` holds (checked every 50 ms); fail naming `what` at `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        outcome = condition()
        if inspect.isawaitable(outcome):
            outcome = await outcome
        if outcome:
            return
        assert time.monotonic() < deadline, f"not within {timeout:g} s: {what}"
        await asyncio.sleep(0.05)


def pending_operations(sim: HeketiSimulator, kind: str) -> int:
    """Operations of `kind` (create, delete, ...) the simulator accepted and has not finished."""
    return sum(1 for op in sim.queue.values() if op.kind == kind and not op.done)
