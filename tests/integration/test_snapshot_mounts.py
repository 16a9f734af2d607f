"""Snapshot, restore and clone end to end: real gluster volumes, real FUSE mounts."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest

from devtools.csi_client import CsiClient
from devtools.localcluster import LocalCluster

GIB = 1 << 30
pytestmark = pytest.mark.gluster


class Mounted:
    """Stages and publishes volumes the way kubelet would, and undoes it all at the end."""

    def __init__(self, cluster: LocalCluster, controller: CsiClient, node: CsiClient) -> None:
        self.cluster, self.controller, self.node = cluster, controller, node
        self._undo: list[tuple[str, str, Path]] = []

    async def publish(self, volume_id: str, context: dict[str, str], pod: str) -> Path:
        publish_context = await self.controller.controller_publish(volume_id,
                                                                   self.cluster.node_id)
        staging = self.cluster.staging_path(volume_id)
        await self.node.stage(volume_id, staging, volume_context=context,
                              publish_context=publish_context)
        self._undo.append(("unstage", volume_id, staging))
        target = self.cluster.pod_target_path(pod, f"pv-{pod}")
        await self.node.publish(volume_id, staging, target, volume_context=context,
                                publish_context=publish_context)
        self._undo.append(("unpublish", volume_id, target))
        return target

    async def close(self) -> None:
        for action, volume_id, path in reversed(self._undo):
            with contextlib.suppress(Exception):
                if action == "unpublish":
                    await self.node.unpublish(volume_id, path)
                else:
                    await self.node.unstage(volume_id, path)


async def write(path: Path, text: str) -> None:
    await asyncio.to_thread(path.write_text, text)


async def read(path: Path) -> str:
    return await asyncio.to_thread(path.read_text)


async def test_restore_and_clone_carry_the_data_of_their_moment(
    cluster: LocalCluster, controller_client: CsiClient, node_client: CsiClient
) -> None:
    mounts = Mounted(cluster, controller_client, node_client)
    volumes: list[str] = []
    snapshots: list[str] = []
    try:
        source = await controller_client.create_volume("pvc-snap-src", GIB)
        volumes.append(source.volume_id)
        target = await mounts.publish(source.volume_id, dict(source.volume_context), "pod-src")
        await write(target / "data.txt", "before the snapshot")

        snap = await controller_client.create_snapshot("snapshot-e2e", source.volume_id)
        snapshots.append(snap.snapshot_id)
        assert snap.ready_to_use
        assert await controller_client.create_snapshot("snapshot-e2e", source.volume_id) == snap

        await write(target / "data.txt", "after the snapshot")

        restored = await controller_client.create_volume("pvc-restored", GIB,
                                                         from_snapshot=snap.snapshot_id)
        volumes.append(restored.volume_id)
        again = await controller_client.create_volume("pvc-restored", GIB,
                                                      from_snapshot=snap.snapshot_id)
        assert again.volume_id == restored.volume_id
        restored_target = await mounts.publish(restored.volume_id,
                                               dict(restored.volume_context), "pod-restore")
        assert await read(restored_target / "data.txt") == "before the snapshot"

        clone = await controller_client.create_volume("pvc-clone", GIB,
                                                      from_volume=source.volume_id)
        volumes.append(clone.volume_id)
        clone_target = await mounts.publish(clone.volume_id, dict(clone.volume_context),
                                             "pod-clone")
        assert await read(clone_target / "data.txt") == "after the snapshot"

        # Independent copies: a write to the clone does not reach the source.
        await write(clone_target / "data.txt", "only in the clone")
        assert await read(target / "data.txt") == "after the snapshot"

        listed = await controller_client.list_snapshots(source_volume_id=source.volume_id)
        assert [s.snapshot_id for s in listed] == [snap.snapshot_id]
        await controller_client.delete_snapshot(snap.snapshot_id)
        await controller_client.delete_snapshot(snap.snapshot_id)
        snapshots.clear()
        assert await controller_client.list_snapshots(source_volume_id=source.volume_id) == []
    finally:
        await mounts.close()
        for snapshot_id in snapshots:
            with contextlib.suppress(Exception):
                await controller_client.delete_snapshot(snapshot_id)
        for volume_id in volumes:
            with contextlib.suppress(Exception):
                await controller_client.delete_volume(volume_id)
    assert await cluster.leftovers() == []
