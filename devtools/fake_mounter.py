"""An in-memory `Mounter` for the node's unit tests: a complete fake, no real mount is made.

Like mount-utils' `FakeMounter`, it keeps a mount table of its own (`Mount` entries as
/proc/self/mountinfo shows them) and changes it the way mount(8) and umount(8) would, at the
canonical path of the verified place (`services.node.boundary.Place`) it is given:

- `mount_glusterfs` adds a `fuse.glusterfs` mount of a filesystem of its own (a new device)
  and starts a pretend gluster client for it (a pid, with the source and options it got), in
  the client group it names (a cgroup outside the node container) or, without one, in the
  node's container;
- `bind` adds a mount showing the same device and root as the mount at its source, read-only
  if asked (or if the source is);
- `unmount` removes every mount stacked at a path; a client ends with the last mount of its
  filesystem, as a real one does when its FUSE connection goes away;
- `usage` answers what statvfs would: the volume's capacity on a healthy mount, OSError on a
  broken one, and it blocks on a hung one until released. A path outside every mount is the
  real directory (it lives in the test's tmp_path), and so are mount points: they must exist.

The machine outlives the node process: a test that "restarts" the node builds a new service
on the same fake. `restart_container` is what a restart of the node container does to the
clients: those in no client group die with it (their mounts answer ENOTCONN), the others
live on. Processes: `group_pids`, `groups`, `end_group` (kills what is left), `process_state`
('S', 'T' when stopped, None when gone) and `wait_exit` (woken when the client ends).

Trouble on demand: `vanish` (something else unmounted a path), `kill_client` (the client
died: ENOTCONN and no pid, as after `kill -9`), `stop_client`/`continue_client` (SIGSTOP:
statvfs blocks, the state is 'T'),
`break_mount` (any errno, client alive), `hang` (statvfs blocks until `unhang`), `refuse`
(mounts of a volume fail as for a missing volume), `hold_mounts` (mounts wait until
`release_mounts`, or fail with MountTimeout at their deadline; `wait_pending` sees them).
"""

from __future__ import annotations

import asyncio
import errno
import itertools
import os
import posixpath
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from services.common.errors import DeadlineExceeded, Internal
from services.node.boundary import Place
from services.node.fsstat import Usage, usage_of
from services.node.mounter import Mounter, MountFailed, MountTimeout
from services.node.mountinfo import GLUSTER_FSTYPE, Mount
from services.node.mountopts import volume_of_source

Device = tuple[int, int]

GIB = 1 << 30
INODES = 1 << 20
# What a bind of a directory that is no mount point shows: the root filesystem.
ROOT_DEVICE: Device = (8, 1)
# Mount flags that mountinfo shows for a FUSE mount (the rest are the client's options).
_VFS_FLAGS = frozenset({"noatime", "nodiratime", "relatime", "strictatime", "nosuid", "nodev",
                        "noexec"})
_FUSE_SUPER = ("user_id=0", "group_id=0", "default_permissions", "allow_other",
               "max_read=131072")


@dataclass
class FakeClient:
    """A pretend glusterfs client process, as `ps` would show it."""

    pid: int
    source: str
    mount_point: str
    options: tuple[str, ...]
    log_file: str
    device: Device
    group: str | None = None
    stopped: bool = False


def _is_dir(path: str) -> bool:
    return os.path.isdir(path)


class FakeMounter(Mounter):
    """The machine's mounts, in memory. Call `close()` at the end of a test: it releases any
    statvfs still blocked on a hung mount."""

    def __init__(self) -> None:
        self.table: list[Mount] = []
        self.clients: list[FakeClient] = []
        self.cgroups: set[str] = set()  # client groups that exist
        self.started = 0  # clients started, ever
        self.pending: set[str] = set()  # targets of mounts in progress
        self._exits: dict[int, asyncio.Event] = {}
        # Mount helpers of held mounts: pid -> (client group, killed).
        self._helpers: dict[int, tuple[str | None, asyncio.Event]] = {}
        self._errors: dict[Device, int] = {}
        self._hung: dict[Device, threading.Event] = {}
        self._refused: dict[str, str] = {}
        self._capacity: dict[str, tuple[int, int]] = {}
        self._held: asyncio.Event | None = None
        self._pending_changed = asyncio.Condition()
        # usage() runs in probe threads; everything else on the loop.
        self._lock = threading.Lock()
        self._ids = itertools.count(100)
        self._minors = itertools.count(40)
        self._pids = itertools.count(4000)

    # ---- the Mounter protocol ----------------------------------------------------------------

    def mounts(self) -> list[Mount]:
        with self._lock:
            return list(self.table)

    async def mount_glusterfs(
        self,
        source: str,
        target: Place,
        options: Sequence[str],
        log_file: str,
        seconds: float,
        group: str | None = None,
    ) -> Mount:
        return await self._mount(source, target.path, options, log_file, seconds, group)

    async def _mount(
        self,
        source: str,
        target: str,
        options: Sequence[str],
        log_file: str,
        seconds: float,
        group: str | None = None,
    ) -> Mount:
        if not await asyncio.to_thread(_is_dir, target):
            raise MountFailed(f"mounting {source} at {target} failed: mount point does not exist")
        await self._wait_until_released(source, target, seconds, group)
        volume = volume_of_source(source)
        if volume in self._refused:
            raise MountFailed(
                f"mounting {source} at {target} failed: Mount failed. Check the log file "
                f"{log_file} for more details; gluster client log {log_file} ends with:\n"
                f"{self._refused[volume]}"
            )
        device = (0, next(self._minors))
        flags = [o for o in options if o in _VFS_FLAGS] or ["relatime"]
        mode = "ro" if "ro" in options else "rw"
        mount = Mount(next(self._ids), 1, *device, "/", target, (mode, *flags),
                      GLUSTER_FSTYPE, source, (mode, *_FUSE_SUPER))
        with self._lock:
            self.table.append(mount)
            self.clients.append(FakeClient(next(self._pids), source, target, tuple(options),
                                           log_file, device, group))
            self.started += 1
            if group is not None:
                self.cgroups.add(group)
        return mount

    async def bind(self, source: Place, target: Place, readonly: bool, seconds: float) -> Mount:
        return await self._bind(source.path, target.path, readonly, seconds)

    async def _bind(self, source: str, target: str, readonly: bool, seconds: float) -> Mount:
        for path in (source, target):
            if not await asyncio.to_thread(_is_dir, path):
                raise Internal(f"bind-mount at {target} failed: {path} does not exist")
        origin = self._covering(source)
        if origin is None:  # a plain directory, on the root filesystem
            origin = Mount(0, 0, *ROOT_DEVICE, "/", "/", ("rw",), "ext4", "/dev/root", ("rw",))
        await self._answer_or_raise(origin, seconds, f"bind-mount at {target}")
        below = posixpath.relpath(source, origin.mount_point)
        root = origin.root if below == "." else posixpath.join(origin.root, below)
        mode = "ro" if readonly or origin.readonly else "rw"
        rest = tuple(o for o in origin.options if o not in ("ro", "rw"))
        mount = Mount(next(self._ids), 1, *origin.device, root, target, (mode, *rest),
                      origin.fstype, origin.source, origin.super_options)
        with self._lock:
            self.table.append(mount)
        return mount

    async def unmount(self, target: Place, seconds: float) -> bool:
        return self.vanish(target.path)

    async def client_pids(self, mount_point: str) -> list[int]:
        return [c.pid for c in self.clients if c.mount_point == mount_point]

    async def group_pids(self, group: str) -> list[int]:
        helpers = [pid for pid, (g, _) in self._helpers.items() if g == group]
        return [c.pid for c in self.clients if c.group == group] + helpers

    async def groups(self) -> list[str]:
        return sorted(self.cgroups)

    async def end_group(self, group: str, grace: float) -> None:
        for helper_group, killed in list(self._helpers.values()):
            if helper_group == group:
                killed.set()
        self._end_clients(lambda c: c.group == group)
        self.cgroups.discard(group)

    async def process_state(self, pid: int) -> str | None:
        client = next((c for c in self.clients if c.pid == pid), None)
        if client is None:
            return None
        return "T" if client.stopped else "S"

    async def wait_exit(self, pid: int) -> None:
        if not any(c.pid == pid for c in self.clients):
            return
        await self._exits.setdefault(pid, asyncio.Event()).wait()

    def usage(self, path: str) -> Usage:
        while True:
            with self._lock:
                mount = self._covering(path)
                hung = self._hung.get(mount.device) if mount else None
                code = self._errors.get(mount.device) if mount else None
            if hung is None:
                break
            hung.wait()
        if mount is None or mount.fstype != GLUSTER_FSTYPE:
            return usage_of(path)
        if code is not None:
            raise OSError(code, os.strerror(code), path)
        total, used = self._capacity.get(volume_of_source(mount.source), (GIB, 0))
        return Usage(total, total - used, used, INODES, INODES - 1, 1)

    # ---- trouble on demand ------------------------------------------------------------------

    def vanish(self, target: str, keep_clients: bool = False) -> bool:
        """Everything mounted at `target` is unmounted (by the node, or by someone else).
        `keep_clients`: a lazy unmount that something still holds; the clients live on."""
        with self._lock:
            gone = [m for m in self.table if m.mount_point == target]
            self.table = [m for m in self.table if m.mount_point != target]
            left = {m.device for m in self.table}
            ended = {m.device for m in gone} - left
            for device in ended:
                self._errors.pop(device, None)
                hung = self._hung.pop(device, None)
                if hung is not None:
                    hung.set()
        # The last mount of a FUSE filesystem is gone: so is its client.
        if not keep_clients:
            self._end_clients(lambda c: c.device in ended, broken=False)
        return bool(gone)

    def kill_client(self, path: str) -> None:
        """The gluster client of the mount at `path` dies: its mounts answer ENOTCONN."""
        device = self._device_at(path)
        self._end_clients(lambda c: c.device == device)

    def restart_container(self) -> list[int]:
        """The node container stops: the clients in no client group die with it (their
        mounts answer ENOTCONN). Returns their pids."""
        return self._end_clients(lambda c: c.group is None)

    def stop_client(self, path: str) -> None:
        """SIGSTOP the gluster client of the mount at `path`: statvfs blocks until
        `continue_client`, its state is 'T'."""
        device = self._device_at(path)
        for client in self.clients:
            if client.device == device:
                client.stopped = True
        self.hang(path)

    def continue_client(self, path: str) -> None:
        device = self._device_at(path)
        for client in self.clients:
            if client.device == device:
                client.stopped = False
        self.unhang(path)

    def break_mount(self, path: str, code: int = errno.ENOTCONN) -> None:
        """The filesystem at `path` answers `code` (its client, if any, lives on)."""
        device = self._device_at(path)
        with self._lock:
            self._errors[device] = code

    def hang(self, path: str) -> None:
        """statvfs on the filesystem at `path` blocks until `unhang` (or its unmount)."""
        device = self._device_at(path)
        with self._lock:
            self._hung.setdefault(device, threading.Event())

    def unhang(self, path: str) -> None:
        device = self._device_at(path)
        with self._lock:
            event = self._hung.pop(device, None)
        if event is not None:
            event.set()

    def refuse(self, volume: str, log_line: str = "failed to fetch volume file") -> None:
        """Mounts of gluster `volume` fail, the client log ending with `log_line`."""
        self._refused[volume] = log_line

    def set_capacity(self, volume: str, total_bytes: int, used_bytes: int = 0) -> None:
        """What statvfs shows on every mount of gluster `volume` (1 GiB, empty by default)."""
        self._capacity[volume] = (total_bytes, used_bytes)

    def hold_mounts(self) -> None:
        """glusterfs mounts from now on wait for `release_mounts` (or their deadline)."""
        self._held = asyncio.Event()

    def release_mounts(self) -> None:
        if self._held is not None:
            self._held.set()
            self._held = None

    async def wait_pending(self, target: str, timeout: float = 5.0) -> None:
        """Return once a glusterfs mount at `target` is in progress."""
        async with self._pending_changed:
            await asyncio.wait_for(
                self._pending_changed.wait_for(lambda: target in self.pending), timeout
            )

    def add_mount(self, fstype: str, source: str, target: str) -> Mount:
        """Something else mounted at `target` (a filesystem that is not the driver's)."""
        mount = Mount(next(self._ids), 1, 0, next(self._minors), "/", target, ("rw",), fstype,
                      source, ("rw",))
        with self._lock:
            self.table.append(mount)
        return mount

    def close(self) -> None:
        """Release every blocked statvfs (call at the end of a test)."""
        self.release_mounts()
        for event in self._hung.values():
            event.set()
        self._hung.clear()

    # ---- internals --------------------------------------------------------------------------

    def _end_clients(self, which: Callable[[FakeClient], bool], broken: bool = True
                     ) -> list[int]:
        """Clients matching `which` end; their mounts answer ENOTCONN if `broken`."""
        with self._lock:
            ended = [c for c in self.clients if which(c)]
            self.clients = [c for c in self.clients if not which(c)]
            if broken:
                for client in ended:
                    self._errors[client.device] = errno.ENOTCONN
        for client in ended:
            self._exits.setdefault(client.pid, asyncio.Event()).set()
        return [c.pid for c in ended]

    def _covering(self, path: str) -> Mount | None:
        """The mount that `path` lies on: the deepest mount point above it, the last one
        stacked there."""
        found: Mount | None = None
        for mount in self.table:
            point = mount.mount_point
            below = path == point or path.startswith(point.rstrip("/") + "/")
            if below and (found is None or len(point) >= len(found.mount_point)):
                found = mount
        return found

    def _device_at(self, path: str) -> Device:
        mount = self._covering(path)
        if mount is None:
            raise ValueError(f"nothing is mounted at {path}")
        return mount.device

    async def _answer_or_raise(self, origin: Mount, seconds: float, what: str) -> None:
        """What a mount(8) that must look at `origin` runs into: a hang or an error."""
        hung = self._hung.get(origin.device)
        if hung is not None:
            try:
                await asyncio.wait_for(asyncio.to_thread(hung.wait), seconds)
            except TimeoutError:
                raise DeadlineExceeded(f"{what} did not finish within {seconds:g} s") from None
        code = self._errors.get(origin.device)
        if code is not None:
            raise Internal(f"{what} failed: {origin.mount_point}: {os.strerror(code)}")

    async def _wait_until_released(
        self, source: str, target: str, seconds: float, group: str | None
    ) -> None:
        """A held mount: its helper is a process of `group` until it ends; `end_group`
        kills it (the mount then fails)."""
        held = self._held
        if held is None:
            return
        helper = next(self._pids)
        killed = asyncio.Event()
        self._helpers[helper] = (group, killed)
        async with self._pending_changed:
            self.pending.add(target)
            self._pending_changed.notify_all()
        waiters = [asyncio.ensure_future(held.wait()), asyncio.ensure_future(killed.wait())]
        try:
            done, _ = await asyncio.wait(waiters, timeout=seconds,
                                         return_when=asyncio.FIRST_COMPLETED)
            if killed.is_set():
                raise MountFailed(f"mounting {source} at {target} failed: the mount helper "
                                  "was killed")
            if not done:
                raise MountTimeout(
                    f"mounting {source} at {target} did not finish within {seconds:g} s; the "
                    "mount and its gluster client were killed"
                )
        finally:
            for waiter in waiters:
                waiter.cancel()
            self._helpers.pop(helper, None)
            self.pending.discard(target)
