"""Which of a volume's bricks its gluster client on this node is connected to.

The answer is the client's own view: no glusterd is asked, so nothing here waits on a dead
server or takes a glusterd transaction lock. Two sources, both read off the event loop with a
deadline (a hung mount must not hang the node):

- the mount's `.meta/graphs/active/` tree (gluster's meta translator). Each brick is a
  directory of `type` "protocol/client" whose `options/remote-host`,
  `options/remote-subvolume` and `private` (`connected = 1`) say where it is and whether the
  client reaches it. It answers only while the mount does: once the client has lost quorum,
  every path below the mount, `.meta` included, answers ENOTCONN;
- the client's statedump, which it writes when sent SIGUSR1 (`DUMP_DIR/glusterdump.<pid>.dump.
  <time>`, ending with a `DUMP-END-TIME:` line): a `[xlator.protocol.client.<name>.priv]`
  section with `connected=0|1` per brick. It names the bricks' translators, not their
  servers; `ClientBricks` keeps the last `.meta` reading of each mount to name them.

Only a process whose comm is `glusterfs` is ever signalled, and the dumps it writes for an ask
are removed once read (one that comes after the ask gave up, from a client that was stopped,
by the next ask of that client). Sizes are bounded: a brick file's content, the bricks per
volume, a dump's size.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

from services.common.logging import get_logger
from services.node.offloop import Hung, Lane

_log = get_logger("node.client_bricks")

DUMP_DIR = Path("/var/run/gluster")
# How long a client may take to write its statedump (a few ms here for a small graph).
DUMP_SECONDS = 1.0
DUMP_POLL_SECONDS = 0.02
CLOCK_SLACK_NS = 100_000_000
# Bounds on what is read: one .meta file, the bricks of one volume, one statedump.
META_FILE_BYTES = 4096
MAX_BRICKS = 256
DUMP_BYTES = 64 * 1024 * 1024
# Threads of the lane the readings run in (a hung mount holds one).
BRICKS_THREADS = 8
CLIENT_TYPE = "protocol/client"
DUMP_END = "DUMP-END-TIME:"


@dataclass(frozen=True)
class Brick:
    """One brick as the client sees it: its translator's name, where it is, whether reached."""

    name: str
    host: str
    path: str
    connected: bool

    def label(self) -> str:
        return f"{self.host}:{self.path}" if self.host else self.name


def _read_small(path: Path) -> str:
    with open(path, "rb") as file:
        return file.read(META_FILE_BYTES).decode("utf-8", "replace").strip()


def _connected(private: str) -> bool:
    for line in private.splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "connected":
            return value.strip() == "1"
    return False


def read_meta(mount: str) -> list[Brick] | None:
    """Blocking: the bricks of the active graph of the gluster mount at `mount`, in
    translator-name order; None when the mount has no `.meta` (not a gluster mount). Raises
    OSError as the mount answers (ENOTCONN once the client lost quorum)."""
    active = Path(mount, ".meta", "graphs", "active")
    try:
        entries = sorted(os.scandir(active), key=lambda e: e.name)
    except FileNotFoundError:
        return None
    bricks = []
    for entry in entries:
        # `top` is a link to the top translator: never follow links, only read directories.
        if not entry.is_dir(follow_symlinks=False):
            continue
        here = active / entry.name
        try:
            if _read_small(here / "type") != CLIENT_TYPE:
                continue
        except FileNotFoundError:
            continue
        bricks.append(Brick(
            name=entry.name,
            host=_read_small(here / "options" / "remote-host"),
            path=_read_small(here / "options" / "remote-subvolume"),
            connected=_connected(_read_small(here / "private")),
        ))
        if len(bricks) >= MAX_BRICKS:
            break
    return bricks


def parse_statedump(lines: Iterable[str]) -> dict[str, bool]:
    """Brick translator name -> connected, from a client statedump's
    `[xlator.protocol.client.<name>.priv]` sections."""
    found: dict[str, bool] = {}
    current: str | None = None
    prefix, suffix = "[xlator.protocol.client.", ".priv]"
    for raw in lines:
        line = raw.strip()
        if line.startswith("["):
            name = (line[len(prefix):-len(suffix)]
                    if line.startswith(prefix) and line.endswith(suffix) else None)
            current = name if name in found or len(found) < MAX_BRICKS else None
            if current is not None:
                found.setdefault(current, False)
            continue
        if current is not None:
            key, _, value = line.partition("=")
            if key.strip() == "connected":
                found[current] = value.strip() == "1"
    return found


def is_gluster_client(pid: int, proc_root: Path = Path("/proc")) -> bool:
    try:
        return (proc_root / str(pid) / "comm").read_bytes().strip() == b"glusterfs"
    except OSError:
        return False


def _dumps_since(pid: int, dump_dir: Path, since_ns: int) -> list[Path]:
    """The dumps of `pid` written since `since_ns` (a dump is named after its second, so a
    second ask within that second rewrites the same file: its time tells it apart)."""
    found = []
    try:
        for path in dump_dir.iterdir():
            if path.name.startswith(f"glusterdump.{pid}.dump."):
                with contextlib.suppress(FileNotFoundError):
                    if path.stat().st_mtime_ns >= since_ns:
                        found.append(path)
    except FileNotFoundError:
        pass
    return sorted(found)


def _read_dump(path: Path) -> list[str] | None:
    """The dump's lines once it is complete (ends with DUMP-END-TIME), else None."""
    with open(path, "rb") as file:
        data = file.read(DUMP_BYTES + 1)
    if len(data) > DUMP_BYTES:
        raise ValueError(f"{path} is larger than {DUMP_BYTES} bytes")
    lines = data.decode("utf-8", "replace").splitlines()
    tail = [line for line in lines[-3:] if line.strip()]
    return lines if tail and tail[-1].startswith(DUMP_END) else None


def dump_connections(
    pid: int, dump_dir: Path = DUMP_DIR, seconds: float = DUMP_SECONDS,
    proc_root: Path = Path("/proc"), *, late: bool = False,
) -> dict[str, bool] | None:
    """Blocking: ask the gluster client `pid` for a statedump and read which bricks it is
    connected to; None when `pid` is no gluster client or its dump did not come in time. The
    dump is removed; with `late`, so is every earlier dump of `pid` (an earlier ask of ours
    gave up on it, and its dump came afterwards)."""
    if not is_gluster_client(pid, proc_root):
        return None
    dump_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
    if late:
        for path in _dumps_since(pid, dump_dir, 0):
            path.unlink(missing_ok=True)
    # File times come from the kernel's coarse clock, a tick behind time.time_ns().
    since = time.time_ns() - CLOCK_SLACK_NS
    os.kill(pid, signal.SIGUSR1)
    deadline = time.monotonic() + seconds
    try:
        while True:
            for path in _dumps_since(pid, dump_dir, since):
                with contextlib.suppress(FileNotFoundError):
                    lines = _read_dump(path)
                    if lines is not None:
                        return parse_statedump(lines)
            if time.monotonic() >= deadline:
                return None
            time.sleep(DUMP_POLL_SECONDS)
    finally:
        for path in _dumps_since(pid, dump_dir, since):
            path.unlink(missing_ok=True)


def degraded(bricks: list[Brick]) -> str | None:
    """Why a mount that answers is not at its best (bricks it cannot reach), or None."""
    down = [b for b in bricks if not b.connected]
    if not down:
        return None
    return (f"degraded: {len(down)} of {len(bricks)} bricks unreachable from this node "
            f"({', '.join(b.label() for b in down)}); I/O goes on with the others while the "
            "volume's quorum holds")


def lost(pids: list[int], bricks: list[Brick] | None) -> str:
    """Why a mount whose client runs answers ENOTCONN."""
    who = f"the gluster client (pid {', '.join(map(str, pids))}) is running but"
    if bricks:
        down = [b for b in bricks if not b.connected]
        reached = len(bricks) - len(down)
        quorum = " (too few for the volume's quorum)" if reached <= len(bricks) // 2 else ""
        return (f"{who} reaches only {reached} of {len(bricks)} bricks{quorum}, unreachable: "
                f"{', '.join(b.label() for b in down) or 'none'}; I/O fails until enough of "
                "its servers return")
    return (f"{who} cannot reach enough of the volume's bricks (client quorum lost, or its "
            "servers unreachable): I/O fails until they return")


class ClientBricks:
    """The bricks of staged mounts as their clients see them, read with a deadline."""

    def __init__(self, seconds: float, lane: Lane | None = None,
                 dump_dir: Path = DUMP_DIR) -> None:
        self.seconds = seconds
        self.dump_dir = dump_dir
        self._lane = lane or Lane("bricks", BRICKS_THREADS)
        self._named: dict[str, list[Brick]] = {}  # mount -> its last .meta reading
        self._late: set[int] = set()  # clients whose dump did not come in time

    async def view(self, mount: str) -> list[Brick] | None:
        """The bricks of the mount at `mount` from `.meta`; None when it has none or does
        not answer (the caller's own probe says why)."""
        try:
            bricks = await self._lane.run(
                f"meta {mount}", functools.partial(read_meta, mount), self.seconds, share=True)
        except (Hung, OSError):
            return None
        if bricks:
            self._named[mount] = bricks
        return bricks

    async def dumped(self, mount: str, pids: list[int]) -> list[Brick] | None:
        """The bricks of the mount at `mount` from its client's statedump, named after its
        last `.meta` reading where there was one; None when no dump came."""
        for pid in pids:
            ask = functools.partial(dump_connections, pid, self.dump_dir, late=pid in self._late)
            try:
                connected = await self._lane.run(
                    f"dump {pid}", ask, self.seconds + DUMP_SECONDS, share=True)
            except (Hung, OSError, ValueError) as exc:
                _log.warning("gluster client statedump failed", pid=pid, error=str(exc))
                self._late.add(pid)
                continue
            if connected is None:
                self._late.add(pid)
                continue
            self._late.discard(pid)
            if not connected:
                continue
            named = {b.name: b for b in self._named.get(mount, ())}
            return [replace(named[name], connected=up) if name in named
                    else Brick(name=name, host="", path="", connected=up)
                    for name, up in sorted(connected.items())]
        return None

    def forget(self, mount: str) -> None:
        self._named.pop(mount, None)
