"""Sized bricks: each simulated volume's brick on an XFS file system of the volume's size.

Heketi puts every brick on its own thin LV formatted XFS (`mkfs.xfs -i size=512 -n
size=8192`), so `df` in a pod shows the volume's size (less XFS's own overhead), writing
beyond it fails with ENOSPC, and an expansion makes the volume larger. A directory brick
would report the host disk instead. Here each volume gets a sparse image file under
`<brick root>/.images/`, formatted with Heketi's options and mounted through a loop device
at `<brick root>/<volume>`; gluster's brick is the directory `brick0` inside it, as Heketi's
bricks are a `brick` directory inside the LV's mount. Grow = enlarge the file, tell the loop
device (`losetup -c`), `xfs_growfs`. Remove = unmount (libmount set the loop device to clear
itself), delete the image.

Why one file system per brick and not one with project quotas: XFS project quotas
(statfs of a directory reports its project's limit) would need a single loop device, but
kernels built without CONFIG_XFS_QUOTA (the test machines' among them) cannot mount with
`prjquota`. Loop devices are made on demand through /dev/loop-control, so the number of
pre-made /dev/loopN nodes is no limit; in a container without that node the simulator
makes it (a privileged container may). Each image costs about 65 MiB of real disk (the
64 MiB XFS log, the minimum mkfs.xfs allows); the rest is sparse.

Needs root, /dev/loop-control, `mkfs.xfs` and `xfs_growfs` (Debian: xfsprogs), `losetup`
and `mount` (util-linux).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import shutil
import stat
from pathlib import Path

from services.common.commands import CommandTimeout, run_command
from services.node import mountinfo

GIB = 1024**3
LOOP_CONTROL = Path("/dev/loop-control")
LOOP_CTL_REMOVE = 0x4C81
LOOP_CTL_GET_FREE = 0x4C82
# Heketi's brick format (executors/cmdexec/brick.go) and its mount options.
MKFS = ["mkfs.xfs", "-q", "-K", "-i", "size=512", "-n", "size=8192", "-l", "size=64m"]
MOUNT_OPTIONS = "rw,inode64,noatime,nouuid"
TOOLS = ("mkfs.xfs", "xfs_growfs", "losetup", "mount", "umount")
COMMAND_TIMEOUT = 60.0
UMOUNT_ATTEMPTS = 20
# Attempts to win a free loop device that another process may take first.
ATTACH_ATTEMPTS = 5


class BrickFsError(RuntimeError):
    """Sized bricks cannot be made here, or one step of making, growing or removing failed."""


def unsupported_reason() -> str | None:
    """Why this machine cannot make sized bricks, or None when it can."""
    if os.geteuid() != 0:
        return "sized bricks need root (loop devices and mounts)"
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        return (f"sized bricks need {', '.join(missing)} (Debian: apt-get install xfsprogs "
                f"util-linux)")
    try:
        fd = os.open(LOOP_CONTROL, os.O_RDWR)
    except OSError as exc:
        return f"sized bricks need loop devices: cannot open {LOOP_CONTROL} ({exc.strerror})"
    os.close(fd)
    return None


def _sysfs_dev(number: int) -> tuple[int, int]:
    major, minor = Path(f"/sys/block/loop{number}/dev").read_text().strip().split(":")
    return int(major), int(minor)


def _free_loop_device() -> tuple[Path, bool]:
    """A free /dev/loopN (the kernel adds one when none is free); True when this call made
    the device node (a container's /dev lacks devices added after it started)."""
    fd = os.open(LOOP_CONTROL, os.O_RDWR)
    try:
        number = fcntl.ioctl(fd, LOOP_CTL_GET_FREE)
    finally:
        os.close(fd)
    path = Path(f"/dev/loop{number}")
    if path.exists():
        return path, False
    major, minor = _sysfs_dev(number)
    os.mknod(path, 0o600 | stat.S_IFBLK, os.makedev(major, minor))
    return path, True


def _remove_spare_loop_device(number: int) -> None:
    """Remove an unused loop device the kernel added for us (beyond the pre-made ones)."""
    with contextlib.suppress(OSError):
        fd = os.open(LOOP_CONTROL, os.O_RDWR)
        try:
            fcntl.ioctl(fd, LOOP_CTL_REMOVE, number)
        finally:
            os.close(fd)


def _loop_devices() -> set[int]:
    return {int(p.name[4:]) for p in Path("/sys/block").glob("loop*") if p.name[4:].isdigit()}


def _source_of(mountpoint: Path) -> str | None:
    for entry in mountinfo.read():
        if entry.mount_point == str(mountpoint):
            return entry.source
    return None


async def _run(argv: list[str]) -> str:
    try:
        result = await run_command(argv, COMMAND_TIMEOUT)
    except CommandTimeout:
        raise BrickFsError(f"{' '.join(argv)}: no answer within {COMMAND_TIMEOUT:.0f} s") \
            from None
    if result.returncode != 0:
        raise BrickFsError(f"{' '.join(argv)}: exit {result.returncode}: "
                           f"{result.output.strip()}")
    return result.output


class SizedBricks:
    """The brick file systems of one simulator, under its brick root."""

    def __init__(self, brick_root: Path) -> None:
        self.brick_root = Path(brick_root)
        self.images = self.brick_root / ".images"
        self.mounted: set[str] = set()
        self._attach_lock = asyncio.Lock()
        self._preexisting: set[int] = set()
        self._made_nodes: set[Path] = set()

    async def start(self) -> None:
        reason = await asyncio.to_thread(unsupported_reason)
        if reason is not None:
            raise BrickFsError(reason)
        await asyncio.to_thread(self.images.mkdir, parents=True, exist_ok=True)
        self._preexisting = await asyncio.to_thread(_loop_devices)

    def mountpoint(self, name: str) -> Path:
        return self.brick_root / name

    def image(self, name: str) -> Path:
        return self.images / f"{name}.xfs"

    async def make(self, name: str, size_gib: int) -> Path:
        """Format and mount a file system of `size_gib` GiB for volume `name`; its mount
        point (the brick is a directory inside)."""
        image, mountpoint = self.image(name), self.mountpoint(name)
        await asyncio.to_thread(_new_sparse_file, image, size_gib * GIB)
        self.mounted.add(name)  # from here on remove() has something to undo
        try:
            await _run([*MKFS, str(image)])
            await asyncio.to_thread(mountpoint.mkdir, parents=True, exist_ok=True)
            await self._mount(image, mountpoint)
        except BaseException:
            await self.remove(name)
            raise
        return mountpoint

    async def _mount(self, image: Path, mountpoint: Path) -> None:
        # One attach at a time in this process; another process may still take the device
        # between GET_FREE and the mount, which then fails and is tried again.
        async with self._attach_lock:
            for attempt in range(ATTACH_ATTEMPTS):
                device, made_node = await asyncio.to_thread(_free_loop_device)
                if made_node:
                    self._made_nodes.add(device)
                try:
                    await _run(["mount", "-t", "xfs", "-o",
                                f"loop={device},{MOUNT_OPTIONS}", str(image), str(mountpoint)])
                    return
                except BrickFsError:
                    await self._release(device)
                    if attempt == ATTACH_ATTEMPTS - 1:
                        raise

    async def _release(self, device: Path) -> None:
        """After its unmount (the loop device clears itself): drop the node this process
        made, and the device itself when the kernel added it for us."""
        if device in self._made_nodes:
            self._made_nodes.discard(device)
            with contextlib.suppress(OSError):
                await asyncio.to_thread(device.unlink)
        number = device.name[4:]
        if number.isdigit() and int(number) not in self._preexisting:
            await asyncio.to_thread(_remove_spare_loop_device, int(number))

    async def grow(self, name: str, size_gib: int) -> None:
        """Make volume `name`'s file system `size_gib` GiB (larger only), while mounted."""
        image, mountpoint = self.image(name), self.mountpoint(name)
        device = await asyncio.to_thread(_source_of, mountpoint)
        if device is None or not device.startswith("/dev/loop"):
            raise BrickFsError(f"{mountpoint} is not a mounted loop device")
        await asyncio.to_thread(_extend_file, image, size_gib * GIB)
        await _run(["losetup", "-c", device])
        await _run(["xfs_growfs", str(mountpoint)])

    async def remove(self, name: str) -> None:
        """Unmount volume `name`'s file system and delete its image. Idempotent."""
        image, mountpoint = self.image(name), self.mountpoint(name)
        device = await asyncio.to_thread(_source_of, mountpoint)
        if device is not None:
            await self._umount(mountpoint)
            if device.startswith("/dev/loop"):
                await self._release(Path(device))
        with contextlib.suppress(FileNotFoundError):
            await asyncio.to_thread(image.unlink)
        with contextlib.suppress(OSError):
            await asyncio.to_thread(mountpoint.rmdir)
        self.mounted.discard(name)

    async def _umount(self, mountpoint: Path) -> None:
        # A brick process that has just been stopped can hold the file system a moment.
        delay = 0.05
        for _ in range(UMOUNT_ATTEMPTS):
            try:
                await _run(["umount", str(mountpoint)])
                return
            except BrickFsError as exc:
                if "busy" not in str(exc):
                    if await asyncio.to_thread(_source_of, mountpoint) is None:
                        return
                    raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)
        # Still busy: detach it now; the loop device clears itself when the last user goes.
        await _run(["umount", "-l", str(mountpoint)])

    async def remove_all(self) -> None:
        for name in sorted(self.mounted):
            with contextlib.suppress(BrickFsError):
                await self.remove(name)
        with contextlib.suppress(OSError):
            await asyncio.to_thread(self.images.rmdir)


def _new_sparse_file(path: Path, size: int) -> None:
    with open(path, "xb") as f:
        try:
            f.truncate(size)
        except BaseException:
            path.unlink()  # ours: made just now; a later create of the name must not trip on it
            raise


def _extend_file(path: Path, size: int) -> None:
    if path.stat().st_size < size:
        os.truncate(path, size)
