"""Operations keyed by the objects they act on: at most one at a time for each key.

Kubelet and the CSI sidecars give up on a call at their deadline and retry it; a Heketi create
or a FUSE mount may take longer. The work a call started must neither be cut short (a
half-made volume or mount) nor run twice at once. So each mutating operation runs in a task
of its own that holds the keys of the objects it acts on (volume ids, names, paths) until it
ends. The RPC waits for the task shielded, so the caller's deadline cancels the wait, not the
work. A call that needs a key already held answers ABORTED at once (retry later) instead of
queueing behind the first, and once the task is done its outcome is where the service keeps
outcomes (the controller's name index, the node's mounts), so the retry finds it.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, TypeVar

from services.common.errors import Aborted
from services.common.logging import get_logger

T = TypeVar("T")
_log = get_logger("operations")


class KeyedOperations:
    """The operations running now, and the keys each one holds."""

    def __init__(self) -> None:
        self._holders: dict[Hashable, str] = {}  # key -> what the operation holding it does
        self._tasks: set[asyncio.Task[Any]] = set()

    def running(self, key: Hashable) -> bool:
        return key in self._holders

    def try_acquire(self, *keys: Hashable, what: str = "another operation") -> bool:
        """Take all `keys` for work run by the caller itself, or none when one is held."""
        if any(key in self._holders for key in keys):
            return False
        self._holders.update(dict.fromkeys(keys, what))
        return True

    def release(self, *keys: Hashable) -> None:
        for key in keys:
            self._holders.pop(key, None)

    async def run(self, *keys: Hashable, what: str, work: Callable[[], Awaitable[T]]) -> T:
        """Run `work()` in a task of its own that holds `keys` until it ends, and wait for it.

        ABORTED, with nothing run, when another operation holds one of the keys. Cancelling
        the caller stops the wait, not the work.
        """
        busy = next((key for key in keys if key in self._holders), None)
        if busy is not None:
            raise Aborted(f"{self._holders[busy]} is already in progress; retry later")
        self.try_acquire(*keys, what=what)
        task: asyncio.Task[T] = asyncio.create_task(_call(work), name=what)
        self._tasks.add(task)
        task.add_done_callback(functools.partial(self._finished, keys, what))
        return await asyncio.shield(task)

    def _finished(self, keys: tuple[Hashable, ...], what: str, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        self.release(*keys)
        # Retrieved here, so that the failure of a task whose caller left does not go
        # unnoticed (nor make asyncio warn that it was never retrieved).
        if not task.cancelled() and task.exception() is not None:
            _log.info("operation failed", operation=what, error=str(task.exception()))

    async def drain(self, timeout: float | None = None) -> int:
        """Wait up to `timeout` s (None: as long as it takes) for the running operations;
        return how many are still running."""
        tasks = list(self._tasks)
        if tasks:
            _log.info("waiting for operations in progress", count=len(tasks))
            await asyncio.wait(tasks, timeout=timeout)
        return sum(1 for task in tasks if not task.done())


async def _call(work: Callable[[], Awaitable[T]]) -> T:
    return await work()
