"""A real glusterd for tests: start it, make and remove directory-brick volumes.

Everything that talks to gluster runs `gluster --mode=script --xml ...` through
`services.common.commands.run_command` (an asyncio subprocess with a deadline), and reads the
XML answer (the gluster CLI exits 0 even when the operation failed; `opRet`/`opErrstr` in the
XML are what count).

Test volume names start with `hcsitest_` (see `TEST_PREFIX`). Bricks are plain directories
under the `brick_root` given to `create_volume`, one per replica, created with `force` (they
live on the root filesystem and share one host).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import time
import xml.etree.ElementTree as ET
from pathlib import Path

from devtools import host
from services.common.commands import CommandTimeout, run_command

TEST_PREFIX = "hcsitest_"
GLUSTER = "gluster"
GLUSTERD = "glusterd"
DEFAULT_PIDFILE = Path("/run/heketi-csi-tests/glusterd.pid")

# Seconds allowed for one gluster CLI call (a volume start takes about 1.2 s here).
CLI_TIMEOUT = 60.0
# Seconds allowed for one lazy umount during clean-up.
UMOUNT_TIMEOUT = 10.0
# Seconds to wait for a freshly started glusterd to answer.
STARTUP_TIMEOUT = 30.0


class GlusterError(RuntimeError):
    """A gluster CLI call failed; the message carries gluster's own error text."""

    def __init__(self, command: list[str], message: str, errno: int = 0) -> None:
        super().__init__(f"{' '.join(command)}: {message}")
        self.command = command
        self.errno = errno
        self.gluster_message = message


def hostname() -> str:
    """The name gluster accepts for bricks and mounts on this machine (not localhost)."""
    return socket.gethostname()


def _glusterd_running() -> bool:
    """A glusterd of this host runs: one in our own PID namespace, not a container's (the
    compose stack's glusterd is visible to pgrep on the host but serves another /run)."""
    found = subprocess.run(["pgrep", "-x", GLUSTERD], capture_output=True, check=False, timeout=10)
    try:
        ours = os.readlink("/proc/self/ns/pid")
    except OSError:
        return found.returncode == 0
    for pid in found.stdout.decode().split():
        try:
            if os.readlink(f"/proc/{pid}/ns/pid") == ours:
                return True
        except OSError:
            continue
    return False


def _glusterd_answers() -> bool:
    try:
        probe = subprocess.run(
            [GLUSTER, "--mode=script", "--xml", "volume", "list"],
            capture_output=True,
            check=False,
            timeout=10,
        )
    except subprocess.TimeoutExpired:
        return False
    if probe.returncode != 0:
        return False
    try:
        root = ET.fromstring(probe.stdout)
    except ET.ParseError:
        return False
    return root.findtext("opRet") == "0"


def ensure_glusterd(pidfile: Path = DEFAULT_PIDFILE) -> None:
    """Start glusterd unless one runs already, and wait until it answers CLI calls.

    Synchronous on purpose: it is called once from a session fixture before any loop runs.
    Raises RuntimeError when glusterd does not come up within STARTUP_TIMEOUT.
    """
    if not _glusterd_running():
        pidfile.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([GLUSTERD, "-p", str(pidfile)], check=True, timeout=STARTUP_TIMEOUT)
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if _glusterd_answers():
            return
        time.sleep(0.2)
    raise RuntimeError(f"glusterd did not answer within {STARTUP_TIMEOUT:.0f} s")


# glusterd answers these when another CLI transaction holds its lock; worth a retry.
_BUSY = ("Another transaction is in progress", "Locking failed")
BUSY_RETRY_SECONDS = 20.0


async def _gluster(*args: str, seconds: float = CLI_TIMEOUT) -> ET.Element:
    """Run one `gluster --mode=script --xml` command; return the parsed <cliOutput>.

    Retried for a while when glusterd is busy with another transaction. Raises GlusterError
    when the command fails or overruns its deadline (the process is killed then).
    """
    deadline = time.monotonic() + BUSY_RETRY_SECONDS
    delay = 0.1
    while True:
        try:
            return await _gluster_once(*args, seconds=seconds)
        except GlusterError as exc:
            busy = any(text in exc.gluster_message for text in _BUSY)
            if not busy or time.monotonic() + delay > deadline:
                raise
        await asyncio.sleep(delay)
        delay = min(delay * 2, 2.0)


def split_xml(output: str) -> tuple[str, str]:
    """Split the CLI's output (stdout and stderr merged) into its XML document and the rest."""
    start = output.find("<?xml")
    end = output.rfind("</cliOutput>")
    if start < 0 or end < start:
        return "", output
    end += len("</cliOutput>")
    return output[start:end], (output[:start] + output[end:]).strip()


async def _gluster_once(*args: str, seconds: float) -> ET.Element:
    command = [GLUSTER, "--mode=script", "--xml", *args]
    try:
        result = await run_command(command, seconds)
    except CommandTimeout:
        raise GlusterError(command, f"no answer within {seconds:.0f} s") from None
    text, rest = split_xml(result.output)
    try:
        root = ET.fromstring(text)
    except ET.ParseError:
        detail = result.output or "no output"
        raise GlusterError(command, f"exit {result.returncode}: {detail}") from None
    if root.findtext("opRet") != "0":
        errno = int(root.findtext("opErrno") or 0)
        message = root.findtext("opErrstr") or rest
        raise GlusterError(command, message or "failed without a message", errno)
    return root


async def list_volumes() -> list[str]:
    """Names of all gluster volumes on this glusterd."""
    root = await _gluster("volume", "list")
    return [v.text or "" for v in root.iterfind("volList/volume")]


async def volume_exists(name: str) -> bool:
    return name in await list_volumes()


async def brick_paths(name: str) -> list[Path]:
    """The directories of the bricks of volume `name` that live on this host."""
    root = await _gluster("volume", "info", name)
    me = hostname()
    paths = []
    for brick in root.iterfind("volInfo/volumes/volume/bricks/brick"):
        host, _, path = (brick.findtext("name") or "").partition(":")
        if host == me and path:
            paths.append(Path(path))
    return paths


async def create_volume(name: str, brick_root: Path, replica: int = 1) -> None:
    """Create and start volume `name` with `replica` directory bricks under `brick_root`.

    Bricks are `<brick_root>/<name>/brick<i>`. Raises GlusterError if gluster refuses
    (for instance when the volume exists already).
    """
    if replica < 1:
        raise ValueError("replica must be at least 1")
    bricks = [Path(brick_root) / name / f"brick{i}" for i in range(replica)]
    for brick in bricks:
        brick.parent.mkdir(parents=True, exist_ok=True)
    host = hostname()
    args = ["volume", "create", name]
    if replica > 1:
        args += ["replica", str(replica)]
    args += [f"{host}:{brick}" for brick in bricks]
    args.append("force")
    await _gluster(*args)
    try:
        await _start(name)
    except GlusterError:
        await delete_volume(name)
        raise


async def _start(name: str, attempts: int = 3) -> None:
    """Start a volume. glusterd can hand a new brick the port of a brick that another volume
    is still giving up ("Address already in use" in the brick log, "Commit failed" here);
    starting again with `force` then succeeds."""
    for attempt in range(attempts):
        try:
            if attempt == 0:
                await _gluster("volume", "start", name)
            else:
                await _gluster("volume", "start", name, "force")
            return
        except GlusterError as exc:
            if "Commit failed" not in exc.gluster_message or attempt == attempts - 1:
                raise
        await asyncio.sleep(1.0)


def _is_gone(exc: GlusterError) -> bool:
    return "does not exist" in exc.gluster_message


def _remove_brick_dir(path: Path) -> None:
    # Guard against a brick path that could take more than a test's own directory with it.
    resolved = path.resolve()
    if len(resolved.parts) < 3 or os.path.ismount(resolved):
        raise RuntimeError(f"refusing to remove brick directory {resolved}")
    shutil.rmtree(resolved, ignore_errors=True)
    # The per-volume parent that create_volume made, once its bricks are gone.
    with contextlib.suppress(OSError):
        resolved.parent.rmdir()


async def delete_volume(name: str) -> None:
    """Stop and delete volume `name` and remove its brick directories on this host.

    Idempotent: a volume that does not exist (or is already stopped) is no error.
    """
    try:
        bricks = await brick_paths(name)
    except GlusterError as exc:
        if _is_gone(exc):
            return
        raise
    try:
        await _gluster("volume", "stop", name, "force")
    except GlusterError as exc:
        if _is_gone(exc):
            return
        if "not in the started state" not in exc.gluster_message:
            raise
    try:
        await _gluster("volume", "delete", name)
    except GlusterError as exc:
        if not _is_gone(exc):
            raise
    for brick in bricks:
        await asyncio.to_thread(_remove_brick_dir, brick)


async def cleanup_mounts_under(directory: Path) -> list[str]:
    """Test clean-up: kill gluster clients serving mounts below `directory` and lazily
    unmount everything mounted below it. Returns the mount points it unmounted."""
    await asyncio.to_thread(host.kill_gluster_clients_under, directory)
    unmounted, _left = await asyncio.to_thread(host.unmount_under, [directory], lazy_only=True)
    return unmounted
