"""External commands as asyncio subprocesses with a deadline.

One implementation for the node's mount and umount calls and the developer tooling that
drives gluster or cleans up after it: no shell, stdin closed, stdout and stderr merged, the
command in a process group of its own, and the whole group killed (and reaped) when the
deadline passes or the caller is cancelled, so a hung helper never outlives its caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class CommandResult:
    returncode: int
    output: str


class CommandTimeout(Exception):
    """A command overran its deadline; it and its process group were killed."""


async def run_command(argv: Sequence[str], seconds: float) -> CommandResult:
    """Run `argv` in its own process group; kill the group if it overruns `seconds`."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), seconds)
    except TimeoutError:
        await kill_group(proc)
        raise CommandTimeout(f"{argv[0]} did not finish within {seconds:g} s") from None
    except asyncio.CancelledError:
        await kill_group(proc)
        raise
    return CommandResult(proc.returncode or 0, out.decode(errors="replace").strip())


async def kill_group(proc: asyncio.subprocess.Process) -> None:
    """Kill a command and its whole process group, and reap it (no zombie left)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    await asyncio.shield(proc.wait())
