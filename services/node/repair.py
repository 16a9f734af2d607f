"""Re-mount staging mounts whose gluster client is gone, and re-bind their publish targets.

A staging mount is broken when its path answers ENOTCONN (or ECONNABORTED) and no glusterfs
client process serves it any more (it was killed, or died with the previous node container).
A client that is alive but cannot reach its servers also answers ENOTCONN; it reconnects by
itself, so it is left alone. For each broken staging mount recorded in the state store:

1. note its publish targets: bind mounts of the same device and root below the kubelet root,
   plus the targets recorded for it;
2. unmount the dead staging mount and mount the volume again with the recorded source and
   options;
3. unmount each dead target and bind it again from the new staging mount (read-only if it
   was).

A staging mount that is gone entirely while recorded targets are still mounted from an old,
dead client is mounted again too. Targets still bound to an earlier (dead) mount of a now
healthy staging mount are re-bound. Every repair is logged.
"""

from __future__ import annotations

import asyncio
import errno
import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from services.common.errors import DriverError, FailedPrecondition
from services.common.keyed_operations import KeyedOperations
from services.common.logging import get_logger
from services.node import mountinfo
from services.node.boundary import Tree
from services.node.fsstat import FsProbe, PathMissing
from services.node.metrics import REPAIRS
from services.node.mounter import Mounter
from services.node.mountinfo import GLUSTER_FSTYPE, Mount
from services.node.mountopts import volume_of_source
from services.node.offloop import Hung, Lane
from services.node.state import StageRecord, StateStore

_log = get_logger("node.repair")

# What a FUSE mount answers once its client process is gone: ENOTCONN, or ECONNABORTED for
# a request caught by the abort of the connection (both seen here after `kill -9`).
CLIENT_GONE_ERRNOS = frozenset({errno.ENOTCONN, errno.ECONNABORTED})
# Threads of the lane that resolves the paths of the mounts it repairs.
REPAIR_THREADS = 8


def volume_key(volume_id: str) -> str:
    return f"volume:{volume_id}"


def path_key(path: str) -> str:
    return f"path:{path}"


@dataclass(frozen=True)
class RepairResult:
    staging_path: str
    remounted: bool
    rebound: tuple[str, ...]
    skipped: tuple[str, ...] = ()


class Repairer:
    def __init__(
        self,
        mounter: Mounter,
        store: StateStore,
        probe: FsProbe,
        locks: KeyedOperations,
        kubelet_root: str,
        mount_timeout: float,
        tree: Tree | None = None,
    ) -> None:
        self.mounter = mounter
        self.store = store
        self.probe = probe
        self.locks = locks
        self.kubelet_root = kubelet_root
        self.mount_timeout = mount_timeout
        self.tree = tree or Tree(kubelet_root, Lane("repair-paths", REPAIR_THREADS), probe.seconds)

    async def repair_all(self) -> list[RepairResult]:
        """One pass over all recorded staging paths; busy volumes are left for the next."""
        results = []
        for record in self.store.all():
            keys = (volume_key(record.volume_id), path_key(record.staging_path))
            if not self.locks.try_acquire(*keys, what="a mount repair"):
                continue
            try:
                result = await self.repair(record)
            except DriverError as exc:
                REPAIRS.labels("failed").inc()
                _log.error(
                    "repair failed",
                    volume_id=record.volume_id,
                    staging_path=record.staging_path,
                    error=exc.message,
                )
                continue
            except Exception:
                REPAIRS.labels("failed").inc()
                _log.exception(
                    "repair failed", volume_id=record.volume_id, staging_path=record.staging_path
                )
                continue
            finally:
                self.locks.release(*keys)
            if result is not None:
                REPAIRS.labels("remounted" if result.remounted else "rebound").inc()
                results.append(result)
        return results

    async def run_forever(self, interval: float) -> None:
        """Repair at once, then every `interval` seconds (only once when it is 0)."""
        while True:
            try:
                await self.repair_all()
            except Exception:
                _log.exception("repair pass failed")
            if interval <= 0:
                return
            await asyncio.sleep(interval)

    async def _client_gone(self, path: str) -> bool:
        try:
            return not await self.mounter.client_pids(path)
        except Hung as exc:  # not known to be gone: leave it for the next pass
            _log.warning("cannot tell whether a gluster client is alive", error=str(exc))
            return False

    async def _is_dead(self, path: str) -> bool:
        """Whether the mount at `path` answers ENOTCONN and has no client process."""
        try:
            probe = await self.probe.probe(path)
        except PathMissing:
            return False
        return probe.errno in CLIENT_GONE_ERRNOS and await self._client_gone(path)

    async def repair(self, record: StageRecord) -> RepairResult | None:
        """Repair one staging path if it needs it; the caller holds its volume lock."""
        mounts = self.mounter.mounts()
        stage = mountinfo.mount_at(mounts, record.staging_path)
        wanted = volume_of_source(record.source)
        if stage is not None and (
            stage.fstype != GLUSTER_FSTYPE or volume_of_source(stage.source) != wanted
        ):
            _log.warning(
                "staging path holds a different mount; not repairing it",
                staging_path=record.staging_path,
                fstype=stage.fstype,
                source=stage.source,
            )
            return None
        if stage is not None and not await self._is_dead(record.staging_path):
            stale = self._stale_targets(mounts, record, stage)
            if not stale:
                return None
            rebound, skipped = await self._rebind(record, stale)
            _log.info(
                "re-bound publish targets of a re-mounted volume",
                volume_id=record.volume_id,
                staging_path=record.staging_path,
                targets=list(rebound),
                skipped=list(skipped),
            )
            return RepairResult(record.staging_path, False, rebound, skipped)

        targets = self._targets_of(mounts, record, stage)
        if stage is None:
            dead = [t for t in targets if await self._is_dead(t)]
            if not dead:
                return None
            targets = {t: ro for t, ro in targets.items() if t in dead}
        _log.warning(
            "gluster client of a staged volume is gone; re-mounting",
            volume_id=record.volume_id,
            staging_path=record.staging_path,
            source=record.source,
            targets=sorted(targets),
        )
        await self.remount_stage(record)
        rebound, skipped = await self._rebind(record, targets)
        _log.info(
            "repaired staged volume",
            volume_id=record.volume_id,
            staging_path=record.staging_path,
            targets=list(rebound),
            skipped=list(skipped),
        )
        return RepairResult(record.staging_path, True, rebound, skipped)

    async def remount_stage(self, record: StageRecord) -> Mount:
        async with self.tree.place(record.staging_path, "staging path") as place:
            if not place.exists:
                raise FailedPrecondition(f"staging path {place.path} is gone")
            await self.mounter.unmount(place, self.mount_timeout)
            return await self.mounter.mount_glusterfs(
                record.source, place, record.options, record.log_file, self.mount_timeout
            )

    def _targets_of(
        self, mounts: list[Mount], record: StageRecord, stage: Mount | None
    ) -> dict[str, bool]:
        """Publish targets of `record` that are mounted now, with their read-only flag."""
        found: dict[str, bool] = {}
        if stage is not None:
            for bind in mountinfo.binds_of(mounts, stage, under=self.kubelet_root):
                if bind.mount_point != record.staging_path:
                    found[bind.mount_point] = bind.readonly
        wanted = volume_of_source(record.source)
        for target, readonly in record.targets.items():
            current = mountinfo.mount_at(mounts, target)
            if (
                current is not None
                and current.fstype == GLUSTER_FSTYPE
                and volume_of_source(current.source) == wanted
            ):
                found.setdefault(target, readonly or current.readonly)
        return found

    def _stale_targets(
        self, mounts: list[Mount], record: StageRecord, stage: Mount
    ) -> dict[str, bool]:
        """Recorded targets bound to some other (earlier) mount of the volume."""
        stale = {}
        wanted = volume_of_source(record.source)
        for target, readonly in record.targets.items():
            current = mountinfo.mount_at(mounts, target)
            if (
                current is not None
                and current.fstype == GLUSTER_FSTYPE
                and volume_of_source(current.source) == wanted
                and not current.same_origin(stage)
            ):
                stale[target] = readonly or current.readonly
        return stale

    async def _rebind(
        self, record: StageRecord, targets: dict[str, bool]
    ) -> tuple[tuple[str, ...], tuple[str, ...]]:
        rebound: list[str] = []
        skipped: list[str] = []
        for target, readonly in sorted(targets.items()):
            done = await self._with_path_lock(
                target, functools.partial(self._rebind_one, record, target, readonly)
            )
            (rebound if done else skipped).append(target)
        return tuple(rebound), tuple(skipped)

    async def _rebind_one(self, record: StageRecord, target: str, readonly: bool) -> None:
        async with (
            self.tree.place(record.staging_path, "staging path") as staged,
            self.tree.place(target, "publish target") as place,
        ):
            if not place.exists:
                raise FailedPrecondition(f"publish target {place.path} is gone")
            await self.mounter.unmount(place, self.mount_timeout)
            await self.mounter.bind(staged, place, readonly, self.mount_timeout)
        await self.store.add_target(record.staging_path, target, readonly)

    async def _with_path_lock(self, path: str, work: Callable[[], Awaitable[None]]) -> bool:
        """Run `work` holding the lock of `path`; False (work not run) when it is busy."""
        key = path_key(path)
        if not self.locks.try_acquire(key, what="a re-bind of a publish target"):
            _log.info("publish target busy; re-binding it on the next pass", target=path)
            return False
        try:
            await work()
        finally:
            self.locks.release(key)
        return True
