"""Waiting for an observable condition, with a deadline, instead of sleeping a fixed time."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar, cast

from devtools.heketi_sim.server import HeketiSimulator

T = TypeVar("T")


async def first(probe: Callable[[], T | Awaitable[T]], what: str | Callable[[], str],
                timeout: float = 20.0, interval: float = 0.05) -> T:
    """The first truthy value `probe()` gives (tried every `interval` s); fail naming `what`
    at `timeout`. `what` may be a function: it is called on failure (to add a log's tail)."""
    deadline = time.monotonic() + timeout
    while True:
        outcome = probe()
        value = cast(T, await outcome if inspect.isawaitable(outcome) else outcome)
        if value:
            return value
        assert time.monotonic() < deadline, (
            f"not within {timeout:g} s: {what if isinstance(what, str) else what()}")
        await asyncio.sleep(interval)


async def until(condition: Callable[[], bool | Awaitable[bool]], what: str | Callable[[], str],
                timeout: float = 20.0, interval: float = 0.05) -> None:
    """Wait until `condition()` holds (checked every `interval` s, 50 ms unless told); fail
    naming `what` at `timeout`."""
    await first(condition, what, timeout, interval)


def pending_operations(sim: HeketiSimulator, kind: str) -> int:
    """Operations of `kind` (create, delete, ...) the simulator accepted and has not finished."""
    return sum(1 for op in sim.queue.values() if op.kind == kind and not op.done)
