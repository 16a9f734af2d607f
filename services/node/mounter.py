"""The node's one door to mounts: the `Mounter` protocol and its real implementation.

The node service and the repairer see mounts only through `Mounter` (mount, bind, unmount,
the mount table, the gluster clients serving a mount, the usage of a mounted path), as
csi-driver-nfs sees them through mount-utils' `Interface`; the unit tests use the in-memory
fake in `devtools/fake_mounter.py`. `SystemMounter` runs mount and umount as asyncio
subprocesses with deadlines (`services.common.commands.run_command`):

- A glusterfs mount that overruns its deadline is not left to finish on its own (a lingering
  half-mount poisons later mounts): the mount helper's process group is killed, then the
  glusterfs client it daemonized (found by its mount point in /proc/*/cmdline), and whatever
  half-made mount is left at the target is lazily unmounted.
- A failed mount raises an error carrying the tail of the gluster client log of this attempt,
  because the mount helper itself says little.
- umount never waits for a broken or hung filesystem: it runs without path canonicalization
  (no stat of the mount point) and falls back to a lazy unmount.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import signal
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from services.common.commands import CommandTimeout, run_command
from services.common.errors import DeadlineExceeded, Internal
from services.common.logging import get_logger
from services.node import mountinfo
from services.node.fsstat import Usage, usage_of
from services.node.mountinfo import Mount
from services.node.offloop import Hung, Lane

_log = get_logger("node.mounter")

LOG_TAIL_LINES = 20
LOG_TAIL_BYTES = 8192
# Seconds allowed to the clean-up steps after a failed or timed-out mount.
CLEANUP_SECONDS = 10.0
# Seconds allowed to a scan of /proc for gluster clients, and threads for such scans.
PROC_SECONDS = 10.0
MOUNTER_THREADS = 8


class MountFailed(Internal):
    """`mount -t glusterfs` failed; the message carries the helper's output and log tail."""


class MountTimeout(DeadlineExceeded):
    """A mount did not finish in time; it was killed and nothing of it is left mounted."""


class UnmountFailed(Internal):
    """Even a lazy unmount did not remove the mount."""


class Mounter(Protocol):
    """What the node needs of the machine's mounts. Paths must already be validated."""

    def mounts(self) -> list[Mount]:
        """The mount table, in mount order (never touches a mounted filesystem)."""
        ...

    async def mount_glusterfs(
        self, source: str, target: str, options: Sequence[str], log_file: str, seconds: float
    ) -> Mount:
        """FUSE-mount gluster `source` (host:volume) at `target`; return its entry.
        Raises MountFailed or MountTimeout, leaving nothing of the attempt mounted."""
        ...

    async def bind(self, source: str, target: str, readonly: bool, seconds: float) -> Mount:
        """Bind-mount `source` at `target` (read-only if asked); return its entry.
        On failure nothing is left mounted at `target`."""
        ...

    async def unmount(self, target: str, seconds: float) -> bool:
        """Unmount everything stacked at `target`, broken and hung mounts included; return
        whether anything was mounted. Raises UnmountFailed if something is still there."""
        ...

    async def client_pids(self, mount_point: str) -> list[int]:
        """Pids of the gluster client processes started for a mount at `mount_point`.
        Raises offloop.Hung when /proc does not answer in time."""
        ...

    def usage(self, path: str) -> Usage:
        """Blocking stat + statvfs of `path`; may hang for ever or raise OSError (ENOTCONN,
        ...) on a broken mount. Call it only through `fsstat.FsProbe`, never on the loop."""
        ...


def gluster_clients_of(mount_point: str, proc_root: Path = Path("/proc")) -> list[int]:
    """Pids of glusterfs client processes serving `mount_point` (blocking; procfs only: run
    it in a lane, see `SystemMounter.client_pids`).

    The client's command line ends with the mount point:
    `/usr/sbin/glusterfs --process-name fuse --volfile-server=h --volfile-id=v /mnt/x`.
    """
    pids = []
    for entry in proc_root.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            # comm first: reading a process's cmdline takes its memory map lock, which a
            # process stuck in a page fault on a hung mount holds; comm needs no lock.
            if (entry / "comm").read_bytes().strip() != b"glusterfs":
                continue
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        while argv and not argv[-1]:
            argv.pop()
        if len(argv) < 2 or os.path.basename(argv[0]) != b"glusterfs":
            continue
        if argv[-1] == os.fsencode(mount_point):
            pids.append(int(entry.name))
    return pids


def log_offset(log_file: str) -> int:
    try:
        return os.path.getsize(log_file)
    except OSError:
        return 0


def log_tail(log_file: str, since: int = 0) -> str:
    """The last lines the gluster client wrote to `log_file` after byte offset `since`
    (everything's tail if nothing new was written). Blocking; local disk only."""
    try:
        with open(log_file, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            start = since if 0 <= since < size else 0
            start = max(start, size - LOG_TAIL_BYTES)
            f.seek(start)
            data = f.read()
    except OSError:
        return ""
    lines = data.decode(errors="replace").splitlines()
    if start > 0 and start != since and lines:
        lines = lines[1:]  # the first line is probably cut
    return "\n".join(lines[-LOG_TAIL_LINES:])


class SystemMounter(Mounter):
    """The machine's mounts: /proc/self/mountinfo, mount(8) and umount(8), procfs, statvfs."""

    def __init__(
        self,
        mount_bin: str = "mount",
        umount_bin: str = "umount",
        proc_root: Path = Path("/proc"),
        mountinfo_path: Path = mountinfo.MOUNTINFO,
    ) -> None:
        self.mount_bin = mount_bin
        self.umount_bin = umount_bin
        self.proc_root = proc_root
        self.mountinfo_path = mountinfo_path
        self.lane = Lane("mounter", MOUNTER_THREADS)

    def mounts(self) -> list[Mount]:
        return mountinfo.read(self.mountinfo_path)

    async def client_pids(self, mount_point: str) -> list[int]:
        return await self.lane.run(
            f"clients of {mount_point}",
            functools.partial(gluster_clients_of, mount_point, self.proc_root),
            PROC_SECONDS,
            share=True,
        )

    def usage(self, path: str) -> Usage:
        return usage_of(path)

    async def mount_glusterfs(
        self, source: str, target: str, options: Sequence[str], log_file: str, seconds: float
    ) -> Mount:
        """FUSE-mount gluster `source` (host:volume) at `target`; return its mountinfo entry."""
        since = await asyncio.to_thread(log_offset, log_file)
        before = mountinfo.count_at(self.mounts(), target)
        argv = [self.mount_bin, "-t", "glusterfs"]
        if options:
            argv += ["-o", ",".join(options)]
        argv += [source, target]
        try:
            result = await run_command(argv, seconds)
        except CommandTimeout:
            await self._clean_up_failed_mount(target, before)
            tail = await asyncio.to_thread(log_tail, log_file, since)
            raise MountTimeout(
                f"mounting {source} at {target} did not finish within {seconds:g} s; the "
                "mount and its gluster client were killed" + _with_log(tail, log_file)
            ) from None
        except asyncio.CancelledError:
            await asyncio.shield(self._clean_up_failed_mount(target, before))
            raise
        mounted = mountinfo.mount_at(self.mounts(), target)
        if result.returncode != 0 or mounted is None or mounted.fstype != mountinfo.GLUSTER_FSTYPE:
            await self._clean_up_failed_mount(target, before)
            tail = await asyncio.to_thread(log_tail, log_file, since)
            said = result.output or f"exit status {result.returncode}"
            raise MountFailed(
                f"mounting {source} at {target} failed: {said}" + _with_log(tail, log_file)
            )
        return mounted

    async def _clean_up_failed_mount(self, target: str, before: int) -> None:
        """Kill the gluster client of `target` and lazily unmount what it left behind."""
        try:
            pids = await self.client_pids(target)
        except Hung as exc:
            _log.warning("cannot find the gluster client of a failed mount", error=str(exc))
            pids = []
        for pid in pids:
            _log.warning("killing gluster client of a failed mount", pid=pid, target=target)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        for _ in range(8):
            if mountinfo.count_at(self.mounts(), target) <= before:
                break
            await self._umount_once(target, lazy=True)

    async def bind(self, source: str, target: str, readonly: bool, seconds: float) -> Mount:
        """Bind-mount `source` at `target`, then make it read-only if asked (a bind ignores
        `ro` until remounted). On failure nothing is left mounted at `target`."""
        before = mountinfo.count_at(self.mounts(), target)
        await self._checked([self.mount_bin, "--bind", source, target], seconds, "bind-mount")
        try:
            if readonly:
                await self._checked(
                    [self.mount_bin, "-o", "remount,bind,ro", target], seconds, "remount read-only"
                )
            mounted = mountinfo.mount_at(self.mounts(), target)
            if mounted is None:
                raise Internal(f"bind mount of {source} does not show at {target}")
            if readonly and not mounted.readonly:
                raise Internal(f"{target} is still writable after remounting it read-only")
            return mounted
        except BaseException:
            while mountinfo.count_at(self.mounts(), target) > before:
                await self._umount_once(target, lazy=True)
            raise

    async def _checked(self, argv: list[str], seconds: float, what: str) -> None:
        try:
            result = await run_command(argv, seconds)
        except CommandTimeout:
            raise DeadlineExceeded(
                f"{what} at {argv[-1]} did not finish within {seconds:g} s"
            ) from None
        if result.returncode != 0:
            raise Internal(f"{what} at {argv[-1]} failed: {result.output or result.returncode}")

    async def unmount(self, target: str, seconds: float) -> bool:
        """Unmount everything stacked at `target`, broken mounts included.

        Plain umount first, a lazy one when that fails or hangs. Returns whether anything was
        mounted. Raises UnmountFailed if a mount is still there afterwards.
        """
        had = mountinfo.count_at(self.mounts(), target)
        if had == 0:
            return False
        for _ in range(had + 4):
            count = mountinfo.count_at(self.mounts(), target)
            if count == 0:
                return True
            ok = await self._umount_once(target, lazy=False, seconds=seconds)
            if not ok or mountinfo.count_at(self.mounts(), target) >= count:
                await self._umount_once(target, lazy=True, seconds=seconds)
        if mountinfo.count_at(self.mounts(), target):
            raise UnmountFailed(f"{target} is still mounted after unmounting it lazily")
        return True

    async def _umount_once(self, target: str, lazy: bool, seconds: float = CLEANUP_SECONDS) -> bool:
        # -c (no canonicalization): umount must not stat a path on a dead or hung mount.
        argv = [self.umount_bin, "-c"]
        if lazy:
            argv.append("-l")
        argv.append(target)
        try:
            result = await run_command(argv, seconds)
        except CommandTimeout:
            _log.warning("umount timed out", target=target, lazy=lazy)
            return False
        if result.returncode != 0:
            _log.info("umount failed", target=target, lazy=lazy, output=result.output)
            return False
        return True


def _with_log(tail: str, log_file: str) -> str:
    if not tail:
        return f" (gluster client log {log_file} has nothing to add)"
    return f"; gluster client log {log_file} ends with:\n{tail}"
