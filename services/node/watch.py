"""The gluster clients of the staged volumes, followed: which they are, and when one ends.

After each stage, adoption and repair, the node finds the client processes serving the
staging path (`follow`) and waits on each (a pidfd, no polling): when a client ends while
its staging path is still followed, `on_exit(staging_path)` is called at once, and the
repairer re-mounts the volume (`repair.py`). A dead client is thus noticed the moment it
dies, not at the next periodic pass. `forget` stops following a path before the node itself
ends its client (unstage), so that this is not taken for a death.

`stopped` tells which followed clients are stopped (SIGSTOP, a debugger: state T): their
mounts hang rather than fail, and NodeGetVolumeStats says so without waiting for a probe to
time out.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from services.common.logging import get_logger
from services.node.mounter import Mounter
from services.node.offloop import Hung

_log = get_logger("node.watch")

_STOPPED = frozenset({"T", "t"})


class ClientWatch:
    def __init__(self, mounter: Mounter, on_exit: Callable[[str], None]) -> None:
        self.mounter = mounter
        self.on_exit = on_exit
        self._pids: dict[str, list[int]] = {}
        self._tasks: dict[str, list[asyncio.Task[None]]] = {}

    def pids(self, staging_path: str) -> list[int]:
        return list(self._pids.get(staging_path, ()))

    def followed(self) -> list[str]:
        return sorted(self._pids)

    async def follow(self, staging_path: str) -> list[int]:
        """Find the clients serving `staging_path` now and wait on them; return their pids
        (empty when none serves it: the mount is dead, or /proc did not answer)."""
        try:
            pids = await self.mounter.client_pids(staging_path)
        except Hung as exc:
            _log.warning("cannot find the gluster clients of a mount", error=str(exc))
            pids = []
        self.forget(staging_path)
        self._pids[staging_path] = pids
        self._tasks[staging_path] = [
            asyncio.create_task(self._wait(staging_path, pid), name=f"client {pid}")
            for pid in pids
        ]
        return pids

    def forget(self, staging_path: str) -> None:
        self._pids.pop(staging_path, None)
        for task in self._tasks.pop(staging_path, []):
            task.cancel()

    async def close(self) -> None:
        tasks = [t for ts in self._tasks.values() for t in ts]
        self._pids.clear()
        self._tasks.clear()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def stopped(self, staging_path: str) -> list[int]:
        """The followed clients of `staging_path` that are stopped now."""
        found = []
        for pid in self.pids(staging_path):
            try:
                state = await self.mounter.process_state(pid)
            except Hung:
                continue
            if state in _STOPPED:
                found.append(pid)
        return found

    async def _wait(self, staging_path: str, pid: int) -> None:
        await self.mounter.wait_exit(pid)
        if pid not in self._pids.get(staging_path, ()):
            return
        self._pids[staging_path] = [p for p in self._pids[staging_path] if p != pid]
        _log.warning("gluster client ended", pid=pid, staging_path=staging_path)
        self.on_exit(staging_path)
