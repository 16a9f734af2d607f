"""Brick file systems: a sparse XFS image per server on a loop device of its own.

Loop devices are always allocated with `losetup -f` and only those backed by a file below
the pool's directory are ever detached: other tests use loop devices at the same time.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

from devtools.gluster_pool.processes import PoolError, run

# mkfs.xfs 6.x refuses file systems below 300 MiB
MIN_IMAGE_BYTES = 300 * 1024 * 1024


async def ensure_image(image: Path, size: int) -> None:
    if size < MIN_IMAGE_BYTES:
        raise PoolError(f"brick image size {size} is below the 300 MiB mkfs.xfs accepts")
    if await asyncio.to_thread(image.exists):
        return
    partial = image.with_suffix(".partial")
    await asyncio.to_thread(_sparse_file, partial, size)
    await run(["mkfs.xfs", "-q", "-i", "size=512", str(partial)], f"mkfs.xfs {image.name}")
    os.replace(partial, image)


def _sparse_file(path: Path, size: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        f.truncate(size)


async def loop_devices() -> dict[str, str]:
    """Every loop device of the machine → its backing file (as losetup shows it)."""
    result = await run(["losetup", "-J", "-l"], "listing loop devices")
    if not result.output.strip():
        return {}
    return {d["name"]: d.get("back-file") or "" for d in
            json.loads(result.output).get("loopdevices", [])}


def _backed_by(back_file: str, base: Path) -> bool:
    root = str(base).rstrip("/") + "/"
    return back_file.removesuffix(" (deleted)").startswith(root)


async def ours(base: Path) -> list[str]:
    """Loop devices backed by a file below `base`."""
    return sorted(dev for dev, back in (await loop_devices()).items() if _backed_by(back, base))


async def attach(image: Path, known: str | None) -> str:
    """The loop device of `image`: `known` if it still backs it, else a new one."""
    devices = await loop_devices()
    if known and devices.get(known, "").removesuffix(" (deleted)") == str(image):
        return known
    result = await run(["losetup", "-f", "--show", str(image)], f"losetup {image.name}")
    device = result.output.strip().splitlines()[-1]
    if not device.startswith("/dev/loop"):
        raise PoolError(f"losetup gave no loop device for {image}: {result.output}")
    return device


async def detach(device: str) -> None:
    await run(["losetup", "-d", device], f"detaching {device}", check=False)
