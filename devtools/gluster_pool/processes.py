"""Processes and namespaces of a pool: start a namespace set whose PID 1 is our reaper, run
commands inside it, find and signal the processes that live in it.

A server is one `unshare --pid --fork --kill-child --mount-proc --mount --net --uts --ipc`
whose child (PID 1 inside) runs `reaper.py`; the switch is `unshare --net` running the same
reaper without a PID namespace. Every reaper's argv carries a marker
`hcsi-gpool:<pool>:<member>`, so that a later `down` finds them without any state file.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from services.common.commands import CommandResult, CommandTimeout, run_command

REAPER = Path(__file__).with_name("reaper.py")
MARKER_PREFIX = "hcsi-gpool:"
# Seconds allowed for one helper command (ip, mount, losetup, nsenter ...).
COMMAND_TIMEOUT = 60.0
SPAWN_TIMEOUT = 20.0


class PoolError(RuntimeError):
    """A pool operation failed; the message says which step and carries the tool's output."""


def marker(pool: str, member: str) -> str:
    return f"{MARKER_PREFIX}{pool}:{member}"


def python() -> str:
    """A Python outside any virtualenv or mount that a new mount namespace may drop."""
    real = os.path.realpath(sys.executable)
    return real if real.startswith(("/usr/", "/bin/")) else "/usr/bin/python3"


async def run(argv: Sequence[str], what: str, seconds: float = COMMAND_TIMEOUT,
              check: bool = True) -> CommandResult:
    """Run a command; raise PoolError naming `what` (with its output) when it fails."""
    try:
        result = await run_command(argv, seconds)
    except CommandTimeout as exc:
        raise PoolError(f"{what}: {exc}") from None
    except FileNotFoundError:
        raise PoolError(f"{what}: {argv[0]} is not installed") from None
    if check and result.returncode != 0:
        raise PoolError(f"{what}: `{' '.join(argv)}` exited {result.returncode}: "
                        f"{result.output[-2000:]}")
    return result


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.rstrip(b"\0").split(b"\0")]


def _pids() -> list[int]:
    return [int(e.name) for e in Path("/proc").iterdir() if e.name.isdigit()]


def ns_id(pid: int, kind: str) -> str | None:
    """The namespace inode link (`net:[4026…]`) of `pid`, None when it is gone."""
    try:
        return os.readlink(f"/proc/{pid}/ns/{kind}")
    except OSError:
        return None


def reapers(prefix: str) -> list[tuple[int, str]]:
    """(host pid, marker) of every reaper whose marker starts with `prefix` (not unshare)."""
    found = []
    for pid in _pids():
        argv = _cmdline(pid)
        if len(argv) >= 3 and argv[1].endswith("reaper.py") and argv[2].startswith(prefix) \
                and not os.path.basename(argv[0]).startswith("unshare"):
            found.append((pid, argv[2]))
    return found


def members_of(pid_ns: str) -> list[int]:
    """Host pids of every process in PID namespace `pid_ns`."""
    return [pid for pid in _pids() if ns_id(pid, "pid") == pid_ns]


def processes_named(pid_ns: str, name: str) -> list[int]:
    out = []
    for pid in members_of(pid_ns):
        argv = _cmdline(pid)
        if argv and os.path.basename(argv[0]) == name:
            out.append(pid)
    return out


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is not alive
    with contextlib.suppress(OSError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return fields[0] != "Z"
    return False


def _exists(path: Path) -> bool:
    return path.exists()


def _tail(path: Path, chars: int = 1500) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


async def spawn_reaper(pool: str, member: str, ready: Path, log: Path,
                       new_pid_ns: bool) -> int:
    """Start a namespace set with our reaper as its first process; return its host pid.

    `setsid -f` detaches it from us: a pool outlives the command that brought it up.
    """
    await asyncio.to_thread(ready.unlink, missing_ok=True)
    mark = marker(pool, member)
    if new_pid_ns:
        ns = ["unshare", "--pid", "--fork", "--kill-child", "--mount-proc", "--mount",
              "--net", "--uts", "--ipc", "--propagation", "private", "--"]
        argv = [*ns, python(), str(REAPER), mark, str(ready), "--isolate"]
    else:
        argv = ["unshare", "--net", "--", python(), str(REAPER), mark, str(ready)]
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        proc = await asyncio.create_subprocess_exec(
            "setsid", "-f", *argv, stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=out)
        await proc.wait()
    deadline = time.monotonic() + SPAWN_TIMEOUT
    while time.monotonic() < deadline:
        found = [pid for pid, m in reapers(mark) if m == mark]
        if found and _exists(ready):
            return found[0]
        await asyncio.sleep(0.05)
    tail = _tail(log)
    raise PoolError(f"the namespaces of {member} did not come up within {SPAWN_TIMEOUT:.0f} s"
                    f"{': ' + tail if tail else ''}")


def nsenter(pid: int, *kinds: str) -> list[str]:
    return ["nsenter", "-t", str(pid), *(f"--{k}" for k in kinds), "--"]


ALL_NS = ("pid", "mount", "net", "uts", "ipc")


async def signal_all(pids: Sequence[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


async def wait_gone(pids: Sequence[int], seconds: float) -> list[int]:
    """Wait until none of `pids` is alive; return those still alive at the deadline."""
    deadline = time.monotonic() + seconds
    left = [p for p in pids if alive(p)]
    while left and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        left = [p for p in left if alive(p)]
    return left


async def kill_namespace(init: int, pid_ns: str | None, seconds: float = 10.0) -> None:
    """SIGKILL the PID 1 of a namespace set (the kernel then kills everything in its PID
    namespace) and wait until no process is left in it."""
    await signal_all([init], signal.SIGKILL)
    left = await wait_gone([init], seconds)
    if pid_ns is not None:
        members = members_of(pid_ns)
        await signal_all(members, signal.SIGKILL)
        left += await wait_gone(members, seconds)
    if left:
        raise PoolError(f"processes {left} did not exit after SIGKILL")
