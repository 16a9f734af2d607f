"""The node's one door to mounts: the `Mounter` protocol and its real implementation.

The node service and the repairer see mounts only through `Mounter` (mount, bind, unmount,
the mount table, the gluster clients serving a mount, the usage of a mounted path), as
csi-driver-nfs sees them through mount-utils' `Interface`; the unit tests use the in-memory
fake in `devtools/fake_mounter.py`. Mount points are `boundary.Place`s: resolved below the
kubelet root without following a link out, their parent directory held open.

`SystemMounter` runs mount and umount as asyncio subprocesses with deadlines
(`services.common.commands.run_command`), and acts on what was verified (`boundary`):

- bind mounts and unmounts name their source and target as `/proc/<pid>/fd/<n>` of
  descriptors opened from the verified places, with `-c` (no canonicalization), so they act
  on those very directories and mounts, whatever the paths name by then. Unmounts are lazy:
  the descriptor keeps the mount busy, and a lazy unmount never waits for a hung filesystem.
- every bind is a peer group of its own (with its copies on the host and in the pods'
  containers that use HostToContainer propagation), never a peer of the staging mount or of
  another target: the node's copy of the staging mount is made private before it is bound.
  A bind goes on top of whatever is mounted at the target, so binding the new mount of a
  repaired volume on top of a dead target reaches the containers (`repair.py`). A read-only
  bind is read-only before it is attached: it is bound from a private, read-only copy made in
  the node's scratch directory (a bind copies the flags of its source; a remount after the
  bind would change the node's own copy only, not the copies it propagated to).
- gluster clients run in a cgroup of their own per staging path when the node has one
  (`clients.py`): the mount helper is started as a member of it.
- the glusterfs FUSE mount is made by the place's canonical path (`mount -c`), because the
  client keeps its mount point as a path for its whole life, then verified through the held
  parent: the new mount must be the one on top of the place. If it is not, every new mount
  of that volume that no live client claims (ours, wherever a link swapped into the path sent
  it) is unmounted through a descriptor checked against its mount id, and the call fails.
- A glusterfs mount that overruns its deadline is not left to finish on its own (a lingering
  half-mount poisons later mounts): the mount helper's process group is killed, then the
  glusterfs client it daemonized (found by its mount point in /proc/*/cmdline), and whatever
  half-made mount it left is unmounted the same way.
- A failed mount raises an error carrying the tail of the gluster client log of this attempt,
  because the mount helper itself says little. What that log says picks the error's code
  where the caller can act (`mount_failure`): mount options the gluster client refuses are
  INVALID_ARGUMENT, a volume its server does not know is NOT_FOUND, servers or bricks that do
  not answer are UNAVAILABLE; anything else is INTERNAL.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import re
import signal
import tempfile
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Protocol

from services.common.commands import CommandResult, CommandTimeout, run_command
from services.common.errors import (
    DeadlineExceeded,
    DriverError,
    Internal,
    InvalidArgument,
    NotFound,
    Unavailable,
)
from services.common.logging import get_logger
from services.node import mountinfo
from services.node.boundary import Look, Place, close_look, open_look, run
from services.node.clients import ClientCgroups
from services.node.fsstat import Usage, usage_of
from services.node.mountinfo import GLUSTER_FSTYPE, Mount
from services.node.mountopts import volume_of_source
from services.node.offloop import Hung, Lane

_log = get_logger("node.mounter")

LOG_TAIL_LINES = 20
LOG_TAIL_BYTES = 8192
# Seconds allowed to the clean-up steps after a failed or timed-out mount.
CLEANUP_SECONDS = 10.0
# Seconds allowed to a scan of /proc for gluster clients, and threads for such scans.
PROC_SECONDS = 10.0
MOUNTER_THREADS = 8
# Per-mount flags a bind inherits that a remount must repeat (mountinfo field 6).
_KEPT_FLAGS = frozenset(
    {"nosuid", "nodev", "noexec", "noatime", "nodiratime", "relatime", "nosymfollow"}
)
# Most mounts stacked at one place that an unmount takes down.
MAX_STACK = 16
# Where read-only copies are made before they are bound (a directory of the node's own, in
# the node container, outside the kubelet root).
DEFAULT_SCRATCH = Path("/run/heketi-csi/scratch")
# Times the processes left in a client group are killed before giving up on them.
KILL_ROUNDS = 3


class MountFailed(Internal):
    """`mount -t glusterfs` failed; the message carries the helper's output and log tail."""


class OptionsRefused(InvalidArgument):
    """The gluster client refused its command line: a mount flag or value it does not take."""


class VolumeMissing(NotFound):
    """The volfile server has no volume file for the volume: it does not exist."""


class ServersUnavailable(Unavailable):
    """No volfile server, or no brick of the volume, answered the gluster client."""


# The gluster client refusing its arguments says why on the helper's output before it starts,
# as `glusterfs: <why>` (`/usr/sbin/glusterfs: unrecognized option ...` for an unknown one).
_ARGUMENTS_REFUSED = re.compile(r"^(?:\S*/)?glusterfs: (.+)$", re.MULTILINE)
# What the gluster client (GlusterFS 10) logs, at ERROR level unless noted, when...
# ...the volfile server does not know the volume:
_NO_VOLUME = ("failed to fetch volume file", "failed to get the 'volume file'")
# ...no server or brick answers (volume stopped, brick processes down, hosts unreachable):
_NO_SERVER = (
    "first lookup on root failed",  # no brick answered the mount's first lookup
    "failed to get the port number for remote subvolume",  # brick process not running
    "DNS resolution failed",
    "Exhausted all volfile servers",  # INFO
    "All subvolumes are down",
)


# The prefix of a gluster log line: `[time] E [MSGID: n] [file.c:line:function] 0-xlator: `.
_LOG_PREFIX = re.compile(r"^\[[^]]*\] [A-Z] (?:\[MSGID: [0-9]+\] )?\[[^]]*\] \S*: ?")


def _lines_saying(tail: str, texts: Sequence[str]) -> str:
    """The messages of the log lines that contain one of `texts`, without their prefix."""
    said = []
    for line in tail.splitlines():
        if any(text in line for text in texts):
            message = _LOG_PREFIX.sub("", line).strip()
            if message not in said:
                said.append(message)
    return "; ".join(said)


def mount_failure(
    source: str, target: str, what: str, tail: str, log_file: str, output: str = ""
) -> DriverError:
    """The error for a failed mount of `source` at `target` (`what`: how it failed, with the
    log tail), from the mount helper's `output` and the gluster client's log lines of this
    attempt (`tail`, empty when it wrote none): INVALID_ARGUMENT, NOT_FOUND or UNAVAILABLE,
    quoting the lines that say why, where the caller can act; else INTERNAL with `what`."""
    volume = volume_of_source(source)
    if refused := "; ".join(m.group(1).strip() for m in _ARGUMENTS_REFUSED.finditer(output)):
        return OptionsRefused(
            f"the gluster client refused the mount options of {source} at {target}; check "
            f"the volume's mount flags: {refused}"
        )
    if said := _lines_saying(tail, _NO_VOLUME):
        return VolumeMissing(
            f"gluster volume {volume} does not exist: mounting {source} at {target} failed, "
            f"its volfile server has no volume file for it (gluster client log {log_file}: "
            f"{said})"
        )
    if said := _lines_saying(tail, _NO_SERVER):
        return ServersUnavailable(
            f"the gluster servers or bricks of volume {volume} do not answer: mounting "
            f"{source} at {target} failed; is the volume started and are its bricks up? "
            f"(gluster client log {log_file}: {said})"
        )
    return MountFailed(what)


class MountTimeout(DeadlineExceeded):
    """A mount did not finish in time; it was killed and nothing of it is left mounted."""


class UnmountFailed(Internal):
    """Even a lazy unmount did not remove the mount."""


class Mounter(Protocol):
    """What the node needs of the machine's mounts and of the gluster clients that serve
    them. Mount points are verified places."""

    def mounts(self) -> list[Mount]:
        """The mount table, in mount order (never touches a mounted filesystem)."""
        ...

    async def mount_glusterfs(
        self,
        source: str,
        target: Place,
        options: Sequence[str],
        log_file: str,
        seconds: float,
        group: str | None = None,
    ) -> Mount:
        """FUSE-mount gluster `source` (host:volume) at `target`; return its entry. The
        client runs in client group `group` (see `group_pids`) when given.
        Raises MountFailed or MountTimeout, leaving nothing of the attempt mounted."""
        ...

    async def bind(self, source: Place, target: Place, readonly: bool, seconds: float) -> Mount:
        """Bind-mount what is mounted at `source` at `target`, on top of whatever is mounted
        there (read-only if asked); return its entry. On failure nothing of the attempt is
        left mounted."""
        ...

    async def group_pids(self, group: str) -> list[int]:
        """The processes of client group `group`: the clients and mount helpers started for
        it, by this process or by an earlier node process. Empty when the node has no
        client groups (clients then live and die with the node's container)."""
        ...

    async def groups(self) -> list[str]:
        """The client groups that exist."""
        ...

    async def end_group(self, group: str, grace: float) -> None:
        """Wait up to `grace` s for the processes of `group` to end, kill those left, and
        remove the group."""
        ...

    async def process_state(self, pid: int) -> str | None:
        """The state letter of process `pid` as /proc/<pid>/stat shows it (R, S, D, T, ...),
        None when it is gone."""
        ...

    async def wait_exit(self, pid: int) -> None:
        """Return once process `pid` has ended (at once when it is gone)."""
        ...

    async def unmount(self, target: Place, seconds: float) -> bool:
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


def process_state_of(pid: int, proc_root: Path = Path("/proc")) -> str | None:
    """The state letter in /proc/<pid>/stat (after the command name, which may hold any
    character), or None when the process is gone. Blocking; procfs only."""
    try:
        stat = (proc_root / str(pid) / "stat").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return None
    rest = stat[stat.rfind(b")") + 1 :].split()
    return rest[0].decode() if rest else None


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _scratch_dir(scratch: Path) -> str:
    scratch.mkdir(mode=0o700, parents=True, exist_ok=True)
    return tempfile.mkdtemp(prefix="ro-", dir=scratch)


def _listdir(directory: Path) -> list[str]:
    try:
        return sorted(os.listdir(directory))
    except FileNotFoundError:
        return []


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
        cgroups: ClientCgroups | None = None,
        scratch: Path = DEFAULT_SCRATCH,
    ) -> None:
        self.mount_bin = mount_bin
        self.umount_bin = umount_bin
        self.proc_root = proc_root
        self.mountinfo_path = mountinfo_path
        self.lane = Lane("mounter", MOUNTER_THREADS)
        self.cgroups = cgroups
        self.scratch = scratch

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

    async def group_pids(self, group: str) -> list[int]:
        if self.cgroups is None:
            return []
        return await asyncio.to_thread(self.cgroups.pids, group)

    async def groups(self) -> list[str]:
        if self.cgroups is None:
            return []
        return await asyncio.to_thread(self.cgroups.groups)

    async def end_group(self, group: str, grace: float) -> None:
        cgroups = self.cgroups
        if cgroups is None:
            return
        left = await self._wait_empty(group, grace)
        for _ in range(KILL_ROUNDS):
            if not left:
                break
            killed = await asyncio.to_thread(cgroups.kill, group)
            _log.warning("killed the processes left in a client group", group=group, pids=killed)
            left = await self._wait_empty(group, CLEANUP_SECONDS)
        if left:
            raise Internal(f"processes {left} of client group {group} did not end after SIGKILL")
        await asyncio.to_thread(cgroups.remove, group)

    async def _wait_empty(self, group: str, seconds: float) -> list[int]:
        """Wait up to `seconds` for the processes of `group` to end; return those left."""
        pids = await self.group_pids(group)
        if pids and seconds > 0:
            waits = asyncio.gather(*(self.wait_exit(pid) for pid in pids))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(waits, seconds)
        return await self.group_pids(group)

    async def process_state(self, pid: int) -> str | None:
        return await self.lane.run(
            f"state of {pid}",
            functools.partial(process_state_of, pid, self.proc_root),
            PROC_SECONDS,
            share=True,
        )

    async def wait_exit(self, pid: int) -> None:
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            return
        loop = asyncio.get_running_loop()
        ended: asyncio.Future[None] = loop.create_future()
        loop.add_reader(fd, _settle, ended)
        try:
            await ended
        finally:
            loop.remove_reader(fd)
            os.close(fd)

    async def mount_glusterfs(
        self,
        source: str,
        target: Place,
        options: Sequence[str],
        log_file: str,
        seconds: float,
        group: str | None = None,
    ) -> Mount:
        """FUSE-mount gluster `source` (host:volume) at `target`; return its mountinfo entry."""
        since = await asyncio.to_thread(log_offset, log_file)
        before = _ids(self.mounts())
        argv = [self.mount_bin, "-c", "-t", "glusterfs"]
        if options:
            argv += ["-o", ",".join(options)]
        argv += [source, target.path]
        if group is not None and self.cgroups is not None:
            argv = [*await asyncio.to_thread(self.cgroups.exec_prefix, group), *argv]
        try:
            result = await run_command(argv, seconds)
        except CommandTimeout:
            await self._undo_mount(source, target, before)
            tail = await asyncio.to_thread(log_tail, log_file, since)
            raise MountTimeout(
                f"mounting {source} at {target.path} did not finish within {seconds:g} s; the "
                "mount and its gluster client were killed" + _with_log(tail, log_file)
            ) from None
        except asyncio.CancelledError:
            await asyncio.shield(self._undo_mount(source, target, before))
            raise
        try:
            mounted = await self._new_on_top(target, before)
        except BaseException:
            await asyncio.shield(self._undo_mount(source, target, before))
            raise
        if result.returncode == 0 and mounted is not None and mounted.fstype == GLUSTER_FSTYPE:
            return mounted
        elsewhere = await self._undo_mount(source, target, before)
        if result.returncode == 0 and elsewhere:
            raise MountFailed(
                f"mounting {source} at {target.path} failed: the mount appeared at "
                f"{', '.join(elsewhere)} instead (a component of the path was replaced "
                "meanwhile); it was unmounted"
            )
        tail = await asyncio.to_thread(log_tail, log_file, since)
        fresh = await asyncio.to_thread(log_offset, log_file) > since
        said = result.output or (
            "the mount helper said it succeeded, but nothing was mounted"
            if result.returncode == 0
            else f"exit status {result.returncode}"
        )
        what = f"mounting {source} at {target.path} failed: {said}" + _with_log(tail, log_file)
        raise mount_failure(
            source, target.path, what, tail if fresh else "", log_file, result.output
        )

    async def _new_on_top(self, place: Place, before: set[_Seen]) -> Mount | None:
        """The mount on top of `place` if it is a new one (not in `before`)."""
        async with place.look() as top:
            if top is None:
                return None
            mounted = _by_id(self.mounts(), top.mount_id)
        if mounted is None or _seen(mounted) in before or mounted.mount_point != place.path:
            return None
        return mounted

    async def _undo_mount(self, source: str, target: Place, before: set[_Seen]) -> list[str]:
        """Kill the gluster client of a failed mount at `target` and unmount every new mount
        of its volume that no live client claims; return the mount points of those that
        were not at `target` (sent elsewhere by a link)."""
        for pid in await self._clients_or_none(target.path):
            _log.warning("killing gluster client of a failed mount", pid=pid, target=target.path)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        volume = volume_of_source(source)
        elsewhere = []
        for mount in reversed(self.mounts()):
            if (
                _seen(mount) in before
                or mount.fstype != GLUSTER_FSTYPE
                or volume_of_source(mount.source) != volume
                or await self._clients_or_none(mount.mount_point)
            ):
                continue
            if mount.mount_point == target.path:
                await self._detach_at(target, {mount.mount_id})
            else:
                _log.error(
                    "a mount went elsewhere than its verified place; unmounting it",
                    target=target.path,
                    mount_point=mount.mount_point,
                )
                elsewhere.append(mount.mount_point)
                await self._detach(mount)
        return elsewhere

    async def _clients_or_none(self, mount_point: str) -> list[int]:
        try:
            return await self.client_pids(mount_point)
        except Hung as exc:
            _log.warning("cannot find the gluster clients of a mount", error=str(exc))
            return []

    async def bind(self, source: Place, target: Place, readonly: bool, seconds: float) -> Mount:
        """Bind-mount what is mounted at `source` at `target`, on top of whatever is mounted
        there, through descriptors of both; read-only from the start if asked. On failure
        nothing of the attempt is left mounted."""
        before = _ids(self.mounts())
        async with source.look() as src, target.look() as dst:
            stage = _by_id(self.mounts(), src.mount_id) if src is not None else None
            if src is None or stage is None or stage.mount_point != source.path:
                raise Internal(
                    f"bind-mount at {target.path} failed: nothing is mounted at {source.path}"
                )
            if dst is None:
                raise Internal(f"bind-mount at {target.path} failed: it does not exist")
            # Our copy of the source leaves its peer group: a bind of a shared mount would
            # join that group, and a mount on top of one target would then appear on top
            # of the source and of every other target too, read-only or not.
            await self._checked(
                [self.mount_bin, "-c", "--make-private", src.proc_path],
                seconds, "make the staging mount private", source.path,
            )
            if readonly:
                async with self._readonly_copy(src, stage, seconds, target.path) as copy:
                    await self._checked(
                        [self.mount_bin, "-c", "--bind", copy.proc_path, dst.proc_path],
                        seconds, "bind-mount", target.path,
                    )
            else:
                await self._checked(
                    [self.mount_bin, "-c", "--bind", src.proc_path, dst.proc_path],
                    seconds, "bind-mount", target.path,
                )
            where = _path_of(dst)
        try:
            new = _newest_at(self.mounts(), where, before)
            if new is None:
                raise Internal(f"bind mount of {source.path} does not show at {target.path}")
            if where != target.path:
                raise Internal(
                    f"bind-mount at {target.path} failed: the directory was moved to {where} "
                    "meanwhile; the bind was unmounted"
                )
            if readonly and not new.readonly:
                raise Internal(f"the read-only bind at {target.path} is writable")
            return new
        except BaseException:
            for mount in reversed(self.mounts()):
                if _seen(mount) not in before and mount.mount_point in (where, target.path):
                    await asyncio.shield(self._detach(mount))
            raise

    @contextlib.asynccontextmanager
    async def _readonly_copy(
        self, src: Look, stage: Mount, seconds: float, target: str
    ) -> AsyncIterator[Look]:
        """A private, read-only bind of `src` in a fresh scratch directory, unmounted when
        the caller is done: what a read-only target is bound from."""
        directory = await asyncio.to_thread(_scratch_dir, self.scratch)
        look: Look | None = None
        try:
            await self._checked(
                [self.mount_bin, "-c", "--bind", src.proc_path, directory],
                seconds, "bind-mount a read-only copy", target,
            )
            flags = ["remount", "bind", "ro", *(o for o in stage.options if o in _KEPT_FLAGS)]
            await self._checked(
                [self.mount_bin, "-c", "-o", ",".join(flags), directory],
                seconds, "remount a copy read-only", target,
            )
            look = await run(
                self.lane, f"look {directory}", functools.partial(open_look, directory),
                seconds, close_look,
            )
            yield look
        finally:
            close_look(look)
            await asyncio.shield(self._drop_scratch(directory))

    async def _drop_scratch(self, directory: str) -> None:
        for _ in range(MAX_STACK):
            if mountinfo.count_at(self.mounts(), directory) == 0:
                break
            try:
                result = await run_command(
                    [self.umount_bin, "-c", "-l", directory], CLEANUP_SECONDS
                )
            except CommandTimeout:
                result = CommandResult(-1, "timed out")
            if result.returncode != 0:
                _log.error("cannot unmount a scratch copy", path=directory, output=result.output)
                return
        with contextlib.suppress(OSError):
            await asyncio.to_thread(os.rmdir, directory)

    async def clear_scratch(self, remove: bool = False) -> None:
        """Take down what a killed predecessor left in the scratch directory (and the
        directory itself if `remove`)."""
        for name in await asyncio.to_thread(_listdir, self.scratch):
            await self._drop_scratch(os.path.join(self.scratch, name))
        if remove:
            with contextlib.suppress(OSError):
                await asyncio.to_thread(os.rmdir, self.scratch)

    async def _checked(self, argv: list[str], seconds: float, what: str, where: str) -> None:
        try:
            result = await run_command(argv, seconds)
        except CommandTimeout:
            raise DeadlineExceeded(
                f"{what} at {where} did not finish within {seconds:g} s"
            ) from None
        if result.returncode != 0:
            raise Internal(f"{what} at {where} failed: {result.output or result.returncode}")

    async def unmount(self, target: Place, seconds: float) -> bool:
        """Unmount everything stacked at `target`, broken and hung mounts included, each
        through a descriptor of it. Returns whether anything was mounted. Raises
        UnmountFailed if a mount is still there afterwards."""
        if mountinfo.count_at(self.mounts(), target.path) == 0:
            return False
        await self._detach_at(target, None, seconds)
        if mountinfo.count_at(self.mounts(), target.path):
            raise UnmountFailed(f"{target.path} is still mounted after unmounting it lazily")
        return True

    async def _detach_at(
        self, place: Place, only: set[int] | None, seconds: float = CLEANUP_SECONDS
    ) -> None:
        """Lazily unmount the mounts on top of `place` (only those in `only`, if given)."""
        for _ in range(MAX_STACK):
            async with place.look() as top:
                mounted = _by_id(self.mounts(), top.mount_id) if top is not None else None
                if (
                    top is None
                    or mounted is None
                    or mounted.mount_point != place.path
                    or (only is not None and mounted.mount_id not in only)
                ):
                    return
                await self._umount_lazy(top, place.path, seconds)
            if _seen(mounted) in _ids(self.mounts()):
                return  # umount said why (logged); the caller checks what is left

    async def _detach(self, mount: Mount) -> None:
        """Lazily unmount `mount` (outside any verified place) through a descriptor, after
        checking that the descriptor holds that very mount."""
        try:
            look = await run(
                self.lane, f"look {mount.mount_point}",
                functools.partial(open_look, mount.mount_point), CLEANUP_SECONDS, close_look,
            )
        except (OSError, DeadlineExceeded) as exc:
            _log.error("cannot open a mount to unmount it", mount_point=mount.mount_point,
                       error=str(exc))
            return
        try:
            if look.mount_id != mount.mount_id:
                _log.error("the mount to unmount is not at its place any more; left alone",
                           mount_point=mount.mount_point)
                return
            await self._umount_lazy(look, mount.mount_point, CLEANUP_SECONDS)
        finally:
            close_look(look)

    async def _umount_lazy(self, top: Look, where: str, seconds: float) -> bool:
        # -c: no canonicalization; -l: lazy (our descriptor keeps the mount busy, and a lazy
        # unmount does not wait for a hung filesystem).
        try:
            result = await run_command([self.umount_bin, "-c", "-l", top.proc_path], seconds)
        except CommandTimeout:
            _log.warning("umount timed out", target=where)
            return False
        if result.returncode != 0:
            _log.info("umount failed", target=where, output=result.output)
            return False
        return True


# What tells a mount from any earlier one: mount ids are recycled as soon as a mount goes
# (and other mounts come and go concurrently), so an id alone does not say "new".
_Seen = tuple[int, int, int, str]


def _seen(mount: Mount) -> _Seen:
    return (mount.mount_id, mount.major, mount.minor, mount.mount_point)


def _ids(mounts: list[Mount]) -> set[_Seen]:
    return {_seen(mount) for mount in mounts}


def _by_id(mounts: list[Mount], mount_id: int) -> Mount | None:
    return next((mount for mount in mounts if mount.mount_id == mount_id), None)


def _newest_at(mounts: list[Mount], path: str, before: set[_Seen]) -> Mount | None:
    new = [m for m in mounts if m.mount_point == path and _seen(m) not in before]
    return new[-1] if new else None


def _path_of(look: Look) -> str:
    """Where the directory a descriptor holds is now (the kernel's path of it; procfs of
    this process only)."""
    return os.readlink(f"/proc/self/fd/{look.fd}")


def _with_log(tail: str, log_file: str) -> str:
    if not tail:
        return f" (gluster client log {log_file} has nothing to add)"
    return f"; gluster client log {log_file} ends with:\n{tail}"
