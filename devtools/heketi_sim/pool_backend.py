"""Pool mode: each simulated volume is a real gluster volume across a GlusterFS pool
(devtools/gluster_pool), made as Heketi makes it.

Every brick the simulator placed is made on the pool server whose address is its node's
storage host (nodes map to servers in order), each on an XFS file system of the brick's
size of its own (at least 300 MiB, what mkfs.xfs accepts). Replicate volumes are `replica
N` (with `user.heketi.arbiter true` among the options: `replica 3 arbiter 1`), disperse
volumes `disperse D+R redundancy R`, others plain distribute. The request's
`glustervolumeoptions` are applied with `gluster volume set`: one gluster refuses fails the
create with gluster's own text, and nothing of the volume is left.

Expansion is Heketi's: the bricks the simulator placed for the added size (one brick set or
more, each brick of a set on a different server, each on an XFS file system of its own) are
added with `gluster volume add-brick`; the mounted volume grows as gluster switches its
clients to the new graph.

A clone (what the driver restores from) is a new volume of the source's layout and brick
sizes on the same servers, seeded with the source's files copied through two FUSE mounts on
this host (the source read-only). Heketi clones by snapshotting every brick's thin LV; we
have no LVM, and copying brick by brick would be wrong for anything but a plain replica:
a disperse brick holds fragments, a distributed volume's files are spread by DHT's layout,
and every brick carries gluster's own metadata (gfids, `.glusterfs`, AFR/EC xattrs) that a
new volume must make itself. Through FUSE, gluster writes all of that as for any client.

The pool must be up (`python -m devtools.gluster_pool up`) before the simulator starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Sequence
from pathlib import Path

from devtools.gluster_pool import GlusterPool, PoolConfig, PoolError
from devtools.gluster_pool.gluster import GlusterError
from devtools.heketi_sim.gluster_backend import GlusterBackend, copy_tree
from devtools.heketi_sim.model import Topology, Volume, durability_shape

KIB = 1024
# What a FUSE mount's root shows that is gluster's, not the volume's data.
_FUSE_ROOT_SKIP = frozenset({".meta", ".trashcan"})


class PoolBackendError(RuntimeError):
    """A pool-mode create or delete failed; the message is what Heketi's client sees."""


def pool_hosts(pool_name: str) -> list[str]:
    """The storage addresses of a pool's servers, in order (for the topology's nodes)."""
    pool = GlusterPool(PoolConfig(name=pool_name), log=lambda _line: None)
    return [pool.address(i) for i in pool.indexes]


def _options(volume: Volume) -> list[tuple[str, str]]:
    pairs = []
    for raw in volume.options:
        text = raw.strip()
        if not text:
            continue
        key, _, value = text.partition(" ")
        pairs.append((key, value.strip()))
    return pairs


def _chown_brick(path: Path, gid: int) -> None:
    # What Heketi does to a new brick root: root:<gid>, mode 2775.
    os.chown(path, 0, gid)
    os.chmod(path, 0o2775)


class PoolBackend(GlusterBackend):
    def __init__(self, pool_name: str, topology: Topology) -> None:
        self.pool = GlusterPool(PoolConfig(name=pool_name), log=lambda _line: None)
        super().__init__(self.pool.dir / "heketi-sim", sized=False)
        self.topology = topology
        self._lock = asyncio.Lock()
        # volume name -> (server index, file system name) of its bricks
        self.filesystems: dict[str, list[tuple[int, str]]] = {}

    async def start(self) -> None:
        self.pool.reload()
        if not self.pool.state.switch_pid or not self.pool.running():
            raise PoolBackendError(f"gluster pool {self.pool.config.name} is not up: "
                                   "run `python -m devtools.gluster_pool up` first")

    def _volume(self, name: str) -> Volume:
        found = [v for v in self.topology.volumes.values() if v.name == name and v.pending]
        if len(found) != 1:
            raise PoolBackendError(f"no pending volume named {name} in the topology")
        return found[0]

    def _create_args(self, volume: Volume, bricks: list[str]) -> list[str]:
        return ["volume", "create", volume.name, *self._shape(volume, add=False), *bricks]

    def _shape(self, volume: Volume, add: bool) -> list[str]:
        """The layout words of `volume create` (or, with `add`, of `volume add-brick`)."""
        args: list[str] = []
        kind = volume.durability.get("type") or "none"
        per_set, data = durability_shape(volume.durability)
        arbiter = any(k == "user.heketi.arbiter" and v.lower() == "true"
                      for k, v in _options(volume))
        if kind == "replicate" and per_set > 1:
            args += ["replica", str(per_set)]
            if arbiter:
                if per_set != 3:
                    raise PoolBackendError("an arbiter volume needs replica 3")
                args += ["arbiter", "1"]
        elif kind == "disperse" and not add:
            args += ["disperse", str(per_set), "redundancy", str(per_set - data)]
        return args

    def _brick_args(self, paths: list[tuple[int, str]]) -> list[str]:
        return [f"{self.pool.address(i)}:{p}" for i, p in paths]

    async def _brick_filesystems(self, name: str, brick_ids: list[str],
                                 made: list[tuple[int, str]]) -> list[tuple[int, str]]:
        """One XFS file system per brick, on the server of the brick's node; appended to
        `made` as they are made (so that a failure halfway removes them); the bricks'
        (server, path)."""
        paths: list[tuple[int, str]] = []
        for brick_id in brick_ids:
            brick = self.topology.bricks[brick_id]
            index = self.pool.index_of(self.topology.nodes[brick.node_id].storage)
            path = await self.pool.brick_fs_add(index, brick_id, brick.size_kib * KIB)
            made.append((index, brick_id))
            paths.append((index, path))
            brick.path = path  # as Heketi reports it: the brick's path on its server
        return paths

    async def _own_bricks(self, gid: int, paths: list[tuple[int, str]]) -> None:
        if gid:
            for index, path in paths:
                root = Path(f"/proc/{self.pool.server_pid(index)}/root{path}")
                await asyncio.to_thread(_chown_brick, root, gid)

    async def create(self, name: str, gid: int, size_gib: int,
                     copy_from: Path | None = None) -> Path:
        if copy_from is not None:
            raise PoolBackendError("pool mode clones by volume name: use clone()")
        volume = self._volume(name)
        self.pool.reload()
        made: list[tuple[int, str]] = []
        self.filesystems[name] = made
        try:
            paths = await self._brick_filesystems(name, volume.bricks, made)
            self.created.add(name)
            async with self._lock:
                try:
                    await self.pool.gluster(*self._create_args(
                        volume, self._brick_args(paths)))
                except GlusterError as exc:
                    self.created.discard(name)
                    raise PoolBackendError(exc.gluster_message) from None
                try:
                    for key, value in _options(volume):
                        await self.pool.gluster("volume", "set", name, key, value)
                    await self.pool.gluster("volume", "start", name)
                except GlusterError as exc:
                    raise PoolBackendError(exc.gluster_message) from None
            await self._own_bricks(gid, paths)
        except BaseException:
            with contextlib.suppress(PoolError, PoolBackendError):
                await self.delete(name)
            raise
        return Path(paths[0][1])

    async def grow(self, name: str, size_gib: int, new_bricks: Sequence[str] = ()) -> None:
        """Add the bricks placed for an expansion (whole brick sets) with `gluster volume
        add-brick`, each on a file system of its own; a failure removes what it made."""
        found = [v for v in self.topology.volumes.values() if v.name == name]
        if len(found) != 1:
            raise PoolBackendError(f"no volume named {name} in the topology")
        volume = found[0]
        self.pool.reload()
        made: list[tuple[int, str]] = []
        try:
            paths = await self._brick_filesystems(name, list(new_bricks), made)
            async with self._lock:
                try:
                    await self.pool.gluster("volume", "add-brick", name,
                                            *self._shape(volume, add=True),
                                            *self._brick_args(paths))
                except GlusterError as exc:
                    raise PoolBackendError(exc.gluster_message) from None
        except BaseException:
            for index, fs_name in made:
                with contextlib.suppress(PoolError):
                    await self.pool.brick_fs_remove(index, fs_name)
            raise
        self.filesystems.setdefault(name, []).extend(made)
        await self._own_bricks(volume.gid, paths)

    async def clone(self, source: str, name: str, gid: int, size_gib: int,
                    source_brick: Path | None = None) -> Path:
        """A new volume `name` of the source's layout (the bricks the simulator placed for
        the clone), seeded with the source's files through FUSE mounts of both."""
        brick = await self.create(name, gid, size_gib)
        src = self.pool.mounts_dir / f"clone-src-{name}"
        dst = self.pool.mounts_dir / f"clone-dst-{name}"
        try:
            try:
                await self.pool.mount(source, src, options=["ro"])
                await self.pool.mount(name, dst)
                await asyncio.to_thread(copy_tree, src, dst, _FUSE_ROOT_SKIP)
            finally:
                for target in (src, dst):
                    await self.pool.unmount(target)
                    with contextlib.suppress(OSError):
                        await asyncio.to_thread(target.rmdir)
        except BaseException:
            with contextlib.suppress(PoolError, PoolBackendError):
                await self.delete(name)
            raise
        return brick

    async def delete(self, name: str) -> None:
        self.pool.reload()
        if name in self.created:
            async with self._lock:
                try:
                    await self.pool.gluster("volume", "stop", name, "force")
                except GlusterError as exc:
                    if "does not exist" not in exc.gluster_message and \
                            "not in the started state" not in exc.gluster_message:
                        raise PoolBackendError(exc.gluster_message) from None
                try:
                    await self.pool.gluster("volume", "delete", name)
                except GlusterError as exc:
                    if "does not exist" not in exc.gluster_message:
                        raise PoolBackendError(exc.gluster_message) from None
            self.created.discard(name)
        for index, fs_name in self.filesystems.pop(name, []):
            await self.pool.brick_fs_remove(index, fs_name)

    async def delete_all(self) -> None:
        for name in sorted(set(self.created) | set(self.filesystems)):
            with contextlib.suppress(PoolError, PoolBackendError):
                await self.delete(name)
