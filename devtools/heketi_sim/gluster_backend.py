"""Glusterd mode: each simulated volume is backed by a real gluster volume on this host.

Every real volume has ONE directory brick (replica 1) under the brick root, whatever
durability the request asked for: on a single host more replicas would only multiply brick
processes without making anything safer. The durability that was asked for is what the
simulator records, places and reports (bricks, device space); the real volume exists so that
`mount -t glusterfs <host>:<name>` works end to end.

Gluster CLI calls are serialised (glusterd refuses concurrent transactions with "Another
transaction is in progress"). Copying data for a clone runs in a worker thread.

Sizes are real by default: each brick lives on an XFS file system of the volume's size
(brick_fs.py), grown on expand, so `df` on a mount shows the volume's size, writing beyond
it fails with ENOSPC, and a clone (restore) gets its source's size until it is expanded.
With `sized=False` bricks are plain directories and every volume reports the size of the
disk under the brick root: an explicit opt-out that lies about sizes.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from devtools import glusterd
from devtools.heketi_sim.brick_fs import BrickFsError, SizedBricks

_SKIP_AT_ROOT = frozenset({".glusterfs"})


def copy_tree(source: Path, target: Path, skip_at_root: frozenset[str] = _SKIP_AT_ROOT) -> None:
    """Copy a brick's files (not gluster's `.glusterfs` store, not any xattrs) into `target`
    (or, with another `skip_at_root`, a mounted volume's files).

    Extended attributes are deliberately not copied: the source brick root carries gluster's
    volume-id, and the new volume's create would refuse a brick that seems to belong to
    another volume. Gluster assigns gfids to the copied files on their first lookup.
    """
    target.mkdir(parents=True, exist_ok=True)
    for root, dirs, files in os.walk(source):
        here = Path(root)
        relative = here.relative_to(source)
        if relative == Path("."):
            dirs[:] = [d for d in dirs if d not in skip_at_root]
            files = [f for f in files if f not in skip_at_root]
        for name in dirs:
            src = here / name
            dst = target / relative / name
            if src.is_symlink():
                os.symlink(os.readlink(src), dst)
                continue
            dst.mkdir(exist_ok=True)
            st = src.stat()
            os.chmod(dst, st.st_mode & 0o7777)
            os.chown(dst, st.st_uid, st.st_gid)
        for name in files:
            src = here / name
            dst = target / relative / name
            if src.is_symlink():
                os.symlink(os.readlink(src), dst)
                continue
            shutil.copyfile(src, dst)
            st = src.stat()
            os.chmod(dst, st.st_mode & 0o7777)
            os.chown(dst, st.st_uid, st.st_gid)


def _set_brick_owner(brick: Path, gid: int) -> None:
    # What Heketi does to a new brick root: root:<gid>, mode 2775.
    os.chown(brick, 0, gid)
    os.chmod(brick, 0o2775)


class GlusterBackend:
    def __init__(self, brick_root: Path, sized: bool = True) -> None:
        self.brick_root = Path(brick_root)
        self.created: set[str] = set()
        self.sized = SizedBricks(self.brick_root) if sized else None
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        self.brick_root.mkdir(parents=True, exist_ok=True)
        if self.sized is not None:
            await self.sized.start()
        await asyncio.to_thread(glusterd.ensure_glusterd)

    def brick_path(self, name: str) -> Path:
        # The layout glusterd.create_volume uses for its first (here: only) brick.
        return self.brick_root / name / "brick0"

    async def create(self, name: str, gid: int, size_gib: int,
                     copy_from: Path | None = None) -> Path:
        """Create and start `name` (a brick of `size_gib` GiB when sized); with
        `copy_from`, seed its brick with that brick's files."""
        brick = self.brick_path(name)
        if self.sized is not None:
            await self.sized.make(name, size_gib)
        try:
            if copy_from is not None:
                await asyncio.to_thread(copy_tree, copy_from, brick)
            # Recorded before the call, so that a shutdown in the middle still cleans up; a
            # refusal (the name exists in gluster already?) means it is not ours to delete.
            self.created.add(name)
            try:
                async with self._lock:
                    await glusterd.create_volume(name, self.brick_root, replica=1)
            except glusterd.GlusterError:
                self.created.discard(name)
                raise
            if gid:
                await asyncio.to_thread(_set_brick_owner, brick, gid)
        except BaseException:
            if name not in self.created:
                await self._remove_files(name)
            raise
        return brick

    async def grow(self, name: str, size_gib: int, new_bricks: Sequence[str] = ()) -> None:
        """Make volume `name` `size_gib` GiB large (what an expansion adds): its one brick's
        file system grows (the bricks placed for the expansion stay records)."""
        if self.sized is not None:
            await self.sized.grow(name, size_gib)

    async def clone(self, source: str, name: str, gid: int, size_gib: int,
                    source_brick: Path | None = None) -> Path:
        """A new volume `name` seeded with a copy of the source brick's files."""
        return await self.create(name, gid, size_gib, copy_from=source_brick)

    async def delete(self, name: str) -> None:
        async with self._lock:
            await glusterd.delete_volume(name)
        self.created.discard(name)
        await self._remove_files(name)

    async def _remove_files(self, name: str) -> None:
        # The brick's file system, or the leftovers of a failed create (the copy for a clone)
        # if gluster never knew them.
        if self.sized is not None:
            await self.sized.remove(name)
        await asyncio.to_thread(shutil.rmtree, self.brick_root / name, True)

    async def delete_all(self) -> None:
        """Remove every gluster volume this simulator created, and every brick file system
        it made (at shutdown)."""
        try:
            for name in sorted(self.created):
                try:
                    await self.delete(name)
                except (glusterd.GlusterError, BrickFsError):
                    continue
        finally:
            if self.sized is not None:
                await self.sized.remove_all()
