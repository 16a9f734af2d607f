"""Re-mount staging mounts whose gluster client is gone, and re-bind their publish targets so
that running pods get their data back.

A staging mount is broken when its path answers ENOTCONN (or ECONNABORTED) and no glusterfs
client process serves it any more (it was killed, the kernel's OOM killer took it, it
crashed). A client that is alive but cannot reach its servers also answers ENOTCONN; it
reconnects by itself, so it is left alone. A stopped or hung client is reported (volume
condition, log), never killed: it may continue.

When it happens: at once, because the node waits on every client it started or adopted
(`watch.ClientWatch`: the client's end wakes `repair_soon`), and on every health pass
(`run_forever`, at start-up and every `--repair-interval` seconds), which also catches what
the node did not see end. For each broken staging mount recorded in the state store:

1. note its publish targets: bind mounts of the same device and root below the kubelet root,
   plus the targets recorded for it;
2. unmount the dead staging mount and mount the volume again, with the recorded source and
   options, in the staging path's client group;
3. bind the new mount ON TOP of each dead target, without unmounting it first. The target is
   a peer group of its own whose copies include the containers' view of it when they mount
   the volume with `mountPropagation: HostToContainer`, so the new mount appears in those
   containers, over the dead one, and their next open() works. An unmount of the target
   would not reach them (it propagates through the target's parent, not into the
   containers), and a bind made after it would never be seen there. The dead mounts under
   it go when the target is unpublished.
   A target published by an earlier version of the node may share its peer group with other
   targets: a mount on top of it appears on all of them; when those differ in being
   read-only, it is unmounted and bound anew instead (its pods then see the dead mount).
4. hand the targets to `aftercare` (which pods see the new mount, events, remedy).

A staging mount that is gone entirely while recorded targets are still mounted from an old,
dead client is mounted again too. Targets still bound to an earlier (dead) mount of a now
healthy staging mount are re-bound the same way. Every repair is logged.
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
from services.node import client_bricks, mountinfo
from services.node.aftercare import Aftercare
from services.node.boundary import Tree
from services.node.fsstat import FsProbe, PathMissing, Probe
from services.node.metrics import ABNORMAL, REPAIRS
from services.node.mounter import Mounter
from services.node.mountinfo import GLUSTER_FSTYPE, Mount
from services.node.mountopts import volume_of_source
from services.node.offloop import Hung, Lane
from services.node.state import StageRecord, StateStore, stage_key
from services.node.watch import ClientWatch

_log = get_logger("node.repair")

# What a FUSE mount answers once its client process is gone: ENOTCONN, or ECONNABORTED for
# a request caught by the abort of the connection (both seen here after `kill -9`).
CLIENT_GONE_ERRNOS = frozenset({errno.ENOTCONN, errno.ECONNABORTED})
# Threads of the lane that resolves the paths of the mounts it repairs.
REPAIR_THREADS = 8
# A repair asked for by a client's end waits this long between tries while the volume is
# busy (another operation holds its lock), and gives up after this many (the next health
# pass takes over).
SOON_RETRY_SECONDS = 0.2
SOON_TRIES = 50


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
    replaced: tuple[str, ...] = ()  # of `rebound`: unmounted and bound anew, not on top


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
        aftercare: Aftercare | None = None,
        health_timeout: float | None = None,
        bricks: client_bricks.ClientBricks | None = None,
    ) -> None:
        self.mounter = mounter
        self.store = store
        self.probe = probe
        self.locks = locks
        self.kubelet_root = kubelet_root
        self.mount_timeout = mount_timeout
        self.tree = tree or Tree(kubelet_root, Lane("repair-paths", REPAIR_THREADS), probe.seconds)
        self.aftercare = aftercare
        self.health_timeout = probe.seconds if health_timeout is None else health_timeout
        self.bricks = bricks or client_bricks.ClientBricks(self.health_timeout)
        self.watch = ClientWatch(mounter, self.repair_soon)
        self.abnormal: dict[str, str] = {}  # staging path -> why, as the last pass saw it
        self._tasks: set[asyncio.Task[None]] = set()

    # ---- passes ----------------------------------------------------------------------------

    async def repair_all(self) -> list[RepairResult]:
        """One pass over all recorded staging paths; busy volumes are left for the next."""
        results = []
        for record in self.store.all():
            keys = (volume_key(record.volume_id), path_key(record.staging_path))
            if not self.locks.try_acquire(*keys, what="a mount repair"):
                continue
            try:
                result = await self._repair_logged(record)
            finally:
                self.locks.release(*keys)
            if result is not None:
                results.append(result)
        return results

    async def health_pass(self) -> None:
        """Repair what is broken, then note which staged volumes are abnormal (logged when
        that changes) and look again at pods that still see a dead mount."""
        await self.repair_all()
        seen: dict[str, str] = {}
        for record in self.store.all():
            staging = record.staging_path
            if mountinfo.mount_at(self.mounter.mounts(), staging) is None:
                continue
            try:
                probe = await self.health(staging, staging)
            except PathMissing:
                continue
            if probe.abnormal is not None:
                seen[staging] = probe.abnormal
                if staging not in self.abnormal:
                    _log.warning("staged volume is abnormal", volume_id=record.volume_id,
                                 staging_path=staging, reason=probe.abnormal)
            elif staging in self.abnormal:
                _log.info("staged volume is healthy again", volume_id=record.volume_id,
                          staging_path=staging)
        self.abnormal = seen
        ABNORMAL.set(len(seen))
        if self.aftercare is not None:
            await self.aftercare.recheck()

    async def run_forever(self, interval: float) -> None:
        """A health pass at once, then every `interval` seconds (only once when it is 0)."""
        while True:
            try:
                await self.health_pass()
            except Exception:
                _log.exception("health pass failed")
            if interval <= 0:
                return
            await asyncio.sleep(interval)

    def repair_soon(self, staging_path: str) -> None:
        """Repair `staging_path` now, in a task of its own (a client of it ended)."""
        task = asyncio.create_task(self._soon(staging_path), name=f"repair {staging_path}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _soon(self, staging_path: str) -> None:
        for _ in range(SOON_TRIES):
            record = self.store.get(staging_path)
            if record is None:
                return  # unstaged meanwhile
            keys = (volume_key(record.volume_id), path_key(record.staging_path))
            if self.locks.try_acquire(*keys, what="a mount repair"):
                try:
                    await self._repair_logged(record)
                finally:
                    self.locks.release(*keys)
                return
            await asyncio.sleep(SOON_RETRY_SECONDS)
        _log.info("volume busy; the health pass repairs it", staging_path=staging_path)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.watch.close()

    async def _repair_logged(self, record: StageRecord) -> RepairResult | None:
        try:
            result = await self.repair(record)
        except DriverError as exc:
            REPAIRS.labels("failed").inc()
            _log.error("repair failed", volume_id=record.volume_id,
                       staging_path=record.staging_path, error=exc.message)
            return None
        except Exception:
            REPAIRS.labels("failed").inc()
            _log.exception("repair failed", volume_id=record.volume_id,
                           staging_path=record.staging_path)
            return None
        if result is not None:
            REPAIRS.labels("remounted" if result.remounted else "rebound").inc()
        return result

    # ---- health ----------------------------------------------------------------------------

    async def health(self, path: str, staging_path: str | None) -> Probe:
        """Whether the volume at `path` (staged at `staging_path`, when known) answers: a
        stopped client is said at once, a hung one within the health timeout; a client that
        runs but lost quorum with the bricks it cannot reach (its statedump), and a mount that
        answers while some bricks are unreachable as degraded (its `.meta`), with its usage."""
        if staging_path is not None:
            stopped = await self.watch.stopped(staging_path)
            if stopped:
                return Probe(abnormal=(
                    f"the gluster client serving this volume (pid "
                    f"{', '.join(map(str, stopped))}) is stopped (SIGSTOP or a debugger): "
                    "I/O on the volume waits until it continues"))
        probe = await self.probe.probe(path, self.health_timeout)
        mount = staging_path or path
        if probe.errno in CLIENT_GONE_ERRNOS:
            pids = await self._clients(mount)
            if pids:  # alive but cut off: it reconnects by itself, say from which bricks
                cut_off = client_bricks.lost(pids, await self.bricks.dumped(mount, pids))
                return Probe(abnormal=f"{probe.abnormal}: {cut_off}", errno=probe.errno)
            return Probe(abnormal=f"{probe.abnormal} (its gluster client is gone; the node "
                         "mounts the volume again)", errno=probe.errno)
        if probe.usage is not None:
            bricks = await self.bricks.view(mount)
            degraded = client_bricks.degraded(bricks) if bricks else None
            if degraded is not None:
                return Probe(usage=probe.usage, abnormal=degraded)
        return probe

    async def _clients(self, staging_path: str) -> list[int]:
        """The live gluster clients of `staging_path` as far as the node knows."""
        pids = self.watch.pids(staging_path)
        if pids:
            return pids
        try:
            return await self.mounter.client_pids(staging_path)
        except Hung:
            return []

    async def follow(self, staging_path: str) -> None:
        """Follow the clients of a mount just made at `staging_path`, and learn where its
        bricks are (its `.meta`, while it answers), so that a health answer after the client
        lost them names their servers, not only its translators."""
        await self.watch.follow(staging_path)
        await self.bricks.view(staging_path)

    def forget(self, staging_path: str) -> None:
        """Stop following the clients of `staging_path` (it is being unstaged)."""
        self.watch.forget(staging_path)
        self.bricks.forget(staging_path)

    async def _client_gone(self, path: str) -> bool:
        try:
            return not await self.mounter.client_pids(path)
        except Hung as exc:  # not known to be gone: leave it for the next pass
            _log.warning("cannot tell whether a gluster client is alive", error=str(exc))
            return False

    async def _is_dead(self, path: str) -> bool:
        """Whether the mount at `path` has no client process and answers ENOTCONN (a live
        client, even a stopped or hung one, is never replaced)."""
        if self.watch.pids(path) or not await self._client_gone(path):
            return False
        try:
            probe = await self.probe.probe(path, self.health_timeout)
        except PathMissing:
            return False
        return probe.errno in CLIENT_GONE_ERRNOS

    # ---- repair ----------------------------------------------------------------------------

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
            result = await self._rebind(record, stale, remounted=False)
            _log.info(
                "re-bound publish targets of a re-mounted volume",
                volume_id=record.volume_id,
                staging_path=record.staging_path,
                targets=list(result.rebound),
                skipped=list(result.skipped),
            )
            return result

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
        loop = asyncio.get_running_loop()
        started = loop.time()
        await self.remount_stage(record)
        remounted = loop.time()
        result = await self._rebind(record, targets, remounted=True)
        _log.info(
            "repaired staged volume",
            volume_id=record.volume_id,
            staging_path=record.staging_path,
            targets=list(result.rebound),
            replaced=list(result.replaced),
            skipped=list(result.skipped),
            remount_ms=round((remounted - started) * 1000),
            rebind_ms=round((loop.time() - remounted) * 1000),
        )
        return result

    async def remount_stage(self, record: StageRecord) -> Mount:
        group = stage_key(record.staging_path)
        async with self.tree.place(record.staging_path, "staging path") as place:
            if not place.exists:
                raise FailedPrecondition(f"staging path {place.path} is gone")
            loop = asyncio.get_running_loop()
            times = [loop.time()]
            self.watch.forget(record.staging_path)
            await self.mounter.unmount(place, self.mount_timeout)
            times.append(loop.time())
            # Whatever is left in the group (a dead client's unfinished helper) goes first:
            # one client per staging path, never two.
            await self.mounter.end_group(group, 0)
            times.append(loop.time())
            mount = await self.mounter.mount_glusterfs(
                record.source, place, record.options, record.log_file, self.mount_timeout,
                group,
            )
            times.append(loop.time())
        await self.follow(record.staging_path)
        times.append(loop.time())
        _log.info("re-mounted a staging mount", staging_path=record.staging_path,
                  **{f"{step}_ms": round((b - a) * 1000) for step, a, b in zip(
                      ("unmount", "end_group", "mount", "follow"), times, times[1:],
                      strict=False)})
        return mount

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
        self, record: StageRecord, targets: dict[str, bool], remounted: bool
    ) -> RepairResult:
        in_place: list[str] = []
        replaced: list[str] = []
        skipped: list[str] = []
        for target, readonly in sorted(targets.items()):
            done = await self._with_path_lock(
                target, functools.partial(self._rebind_one, record, target, readonly)
            )
            if done is None:
                skipped.append(target)
            else:
                (in_place if done else replaced).append(target)
        result = RepairResult(record.staging_path, remounted, tuple(sorted(in_place + replaced)),
                              tuple(skipped), tuple(replaced))
        if self.aftercare is not None and result.rebound:
            self._after(self.aftercare.after_repair(record, tuple(in_place), tuple(replaced)))
        return result

    def _after(self, work: Awaitable[None]) -> None:
        async def run() -> None:
            try:
                await work
            except Exception:
                _log.exception("aftercare of a repair failed")

        task = asyncio.create_task(run(), name="aftercare")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _rebind_one(self, record: StageRecord, target: str, readonly: bool) -> bool:
        """Bind the staged volume at `target` again; True when on top of what is there
        (running containers that receive mounts see it), False when that had to go first."""
        async with (
            self.tree.place(record.staging_path, "staging path") as staged,
            self.tree.place(target, "publish target") as place,
        ):
            if not place.exists:
                raise FailedPrecondition(f"publish target {place.path} is gone")
            mounts = self.mounter.mounts()
            stage = mountinfo.mount_at(mounts, staged.path)
            top = mountinfo.mount_at(mounts, place.path)
            fresh = stage is not None and top is not None and top.same_origin(stage)
            if fresh and top is not None and top.readonly == readonly:
                # Already there: propagated from a target of the same peer group.
                await self.store.add_target(record.staging_path, target, readonly)
                return True
            on_top = top is None or not (fresh or entangled(top, mounts, readonly))
            if not on_top:
                await self.mounter.unmount(place, self.mount_timeout)
            await self.mounter.bind(staged, place, readonly, self.mount_timeout)
        await self.store.add_target(record.staging_path, target, readonly)
        return on_top

    async def _with_path_lock(
        self, path: str, work: Callable[[], Awaitable[bool]]
    ) -> bool | None:
        """Run `work` holding the lock of `path`; None (work not run) when it is busy."""
        key = path_key(path)
        if not self.locks.try_acquire(key, what="a re-bind of a publish target"):
            _log.info("publish target busy; re-binding it on the next pass", target=path)
            return None
        try:
            return await work()
        finally:
            self.locks.release(key)


def entangled(top: Mount, mounts: list[Mount], readonly: bool) -> bool:
    """Whether a mount on top of `top` would also appear, with the wrong read-only flag, on
    another mount point of its peer group (targets published before targets had peer groups
    of their own)."""
    return top.peer_group is not None and any(
        m.peer_group == top.peer_group and m.mount_point != top.mount_point
        and m.readonly != readonly
        for m in mounts
    )
