"""Glusterd mode: each simulated volume is backed by a real gluster volume on this host.

Every real volume has ONE directory brick (replica 1) under the brick root, whatever
durability the request asked for: on a single host more replicas would only multiply brick
processes without making anything safer. The durability that was asked for is what the
simulator records, places and reports (bricks, device space); the real volume exists so that
`mount -t glusterfs <host>:<name>` works end to end.

Gluster CLI calls are serialised (glusterd refuses concurrent transactions with "Another
transaction is in progress"). Copying data for a clone runs in a worker thread.

Expand only records the new size: a directory brick has no size of its own, so `df` on a
mount shows the root filesystem's size before and after. (Gluster quota could make a size
visible, but it adds a daemon per volume; not worth it for a test double.)
"""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

from devtools import glusterd

_SKIP_AT_ROOT = {".glusterfs"}


def _copy_tree(source: Path, target: Path) -> None:
    """Copy a brick's files (not gluster's `.glusterfs` store, not any xattrs) into `target`.

    Extended attributes are deliberately not copied: the source brick root carries gluster's
    volume-id, and the new volume's create would refuse a brick that seems to belong to
    another volume. Gluster assigns gfids to the copied files on their first lookup.
    """
    target.mkdir(parents=True, exist_ok=True)
    for root, dirs, files in os.walk(source):
        here = Path(root)
        relative = here.relative_to(source)
        if relative == Path("."):
            dirs[:] = [d for d in dirs if d not in _SKIP_AT_ROOT]
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
    def __init__(self, brick_root: Path) -> None:
        self.brick_root = Path(brick_root)
        self.created: set[str] = set()
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        self.brick_root.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(glusterd.ensure_glusterd)

    def brick_path(self, name: str) -> Path:
        # The layout glusterd.create_volume uses for its first (here: only) brick.
        return self.brick_root / name / "brick0"

    async def create(self, name: str, gid: int, copy_from: Path | None = None) -> Path:
        """Create and start `name`; with `copy_from`, seed its brick with that brick's files."""
        brick = self.brick_path(name)
        if copy_from is not None:
            await asyncio.to_thread(_copy_tree, copy_from, brick)
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
        return brick

    async def delete(self, name: str) -> None:
        async with self._lock:
            await glusterd.delete_volume(name)
        self.created.discard(name)
        # Leftovers of a failed create (the copy for a clone) if gluster never knew them.
        await asyncio.to_thread(shutil.rmtree, self.brick_root / name, True)

    async def delete_all(self) -> None:
        """Remove every gluster volume this simulator created (at shutdown)."""
        for name in sorted(self.created):
            try:
                await self.delete(name)
            except glusterd.GlusterError:
                continue
