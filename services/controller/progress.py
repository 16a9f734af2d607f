"""Mutating operations that outlive the RPC that started them.

external-provisioner gives up on a call after ~10 s; a Heketi create can take minutes. Each
create/delete/expand/snapshot therefore runs in a task of its own, keyed by the object it acts
on. The RPC waits for the task (shielded, so the caller's deadline does not cancel it); a second
call for the same key while the task runs answers ABORTED, and once the task is done its
outcome is in the index, so the retry finds the finished object.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, TypeVar

from services.common.errors import Aborted
from services.common.logging import get_logger
from services.common.rpc import RpcContext

T = TypeVar("T")
_log = get_logger("operations")


class OperationTracker:
    def __init__(self) -> None:
        self._tasks: dict[Hashable, asyncio.Task[Any]] = {}

    def running(self, key: Hashable) -> bool:
        return key in self._tasks

    def __len__(self) -> int:
        return len(self._tasks)

    async def run(self, key: Hashable, what: str, factory: Callable[[], Awaitable[T]]) -> T:
        """Run `factory()` as the one operation for `key`; ABORTED if one is already running."""
        if key in self._tasks:
            raise Aborted(f"{what} is already in progress; retry later")
        task: asyncio.Task[T] = asyncio.create_task(_call(factory), name=what)
        self._tasks[key] = task

        def finished(done: asyncio.Task[T]) -> None:
            self._tasks.pop(key, None)
            if not done.cancelled() and done.exception() is not None:
                # Retrieved here so that a task whose caller went away does not warn.
                _log.info("operation failed", operation=what, error=str(done.exception()))

        task.add_done_callback(finished)
        return await asyncio.shield(task)

    async def drain(self, timeout: float) -> int:
        """Wait up to `timeout` s for running operations; returns how many are still running."""
        tasks = list(self._tasks.values())
        if tasks:
            _log.info("waiting for operations in progress", count=len(tasks))
            await asyncio.wait(tasks, timeout=timeout)
        return sum(1 for t in tasks if not t.done())


async def _call(factory: Callable[[], Awaitable[T]]) -> T:
    return await factory()


def progress_logger(ctx: RpcContext, operation: str, name: str,
                    every: float = 5.0) -> Callable[[float], None]:
    """An on_progress callback that logs a waiting line every `every` seconds, not per poll."""
    logged = 0.0

    def report(elapsed: float) -> None:
        nonlocal logged
        if elapsed - logged >= every:
            logged = elapsed
            ctx.log.info("waiting for Heketi", operation=operation, name=name,
                         elapsed_s=round(elapsed, 1))

    return report
