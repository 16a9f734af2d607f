"""The name index against a scripted Heketi: the periodic resync and the volumes that change
while its list request is on the way."""

from __future__ import annotations

import asyncio
from typing import Any

from services.common.errors import NotFound
from services.controller.heketi import Durability, GlusterMount, Snapshot, VolumeInfo
from services.controller.ids import Kind, name_hash, volume_name
from services.controller.index import VolumeIndex


def _info(number: int, name: str | None = None) -> VolumeInfo:
    return VolumeInfo(
        id=f"{number:032x}", name=name or volume_name(f"pvc-{number}"), cluster="c" * 32,
        size_gib=1, durability=Durability.replicate(3), snapshot=Snapshot(enable=True),
        gid=0, mount=GlusterMount(hosts=("h1",), device="h1:v", options={}))


class GatedHeketi:
    """Answers `GET /volumes` with the volumes that existed when the request was sent, but
    only once the test opens the gate: the answer is in flight while the test acts."""

    def __init__(self, *volumes: VolumeInfo) -> None:
        self.volumes = {v.id: v for v in volumes}
        self.list_sent = asyncio.Event()
        self.gate = asyncio.Event()

    async def list_volume_ids(self) -> list[str]:
        answer = list(self.volumes)  # what Heketi had when the request reached it
        self.list_sent.set()
        await self.gate.wait()
        return answer

    async def volume_info(self, volume_id: str) -> VolumeInfo:
        await asyncio.sleep(0)
        if volume_id not in self.volumes:
            raise NotFound(volume_id)
        return self.volumes[volume_id]


async def _built(heketi: Any) -> VolumeIndex:
    index = VolumeIndex("default")
    heketi.gate.set()
    await index.build(heketi)
    heketi.gate.clear()
    heketi.list_sent.clear()
    return index


async def test_resync_keeps_a_volume_created_while_its_list_was_in_flight():
    old, gone = _info(1), _info(2)
    heketi = GatedHeketi(old, gone)
    index = await _built(heketi)
    del heketi.volumes[gone.id]  # deleted outside the driver before the resync

    resync = asyncio.create_task(index.resync(heketi))  # type: ignore[arg-type]
    await heketi.list_sent.wait()
    new = _info(3)  # a create finishes while the list answer is on the way
    heketi.volumes[new.id] = new
    index.add(new)
    heketi.gate.set()
    added, removed = await resync

    assert index.by_id(new.id) is not None, "the new volume must not be forgotten"
    assert index.by_hash(Kind.VOLUME, name_hash("pvc-3", Kind.VOLUME)) is not None
    assert index.by_id(old.id) is not None
    assert index.by_id(gone.id) is None and removed == 1 and added == 0

    # The next resync, whose list was sent after the create, keeps it for good reasons.
    heketi.list_sent.clear()
    again = asyncio.create_task(index.resync(heketi))  # type: ignore[arg-type]
    await heketi.list_sent.wait()
    assert await again == (0, 0)
    assert index.by_id(new.id) is not None


async def test_resync_forgets_a_volume_deleted_outside_the_driver_after_a_reread():
    kept = _info(1)
    heketi = GatedHeketi(kept)
    index = await _built(heketi)
    # The driver re-read the volume (an idempotent retry) while a resync's list was in
    # flight, then an administrator deleted it: the next resync still forgets it.
    resync = asyncio.create_task(index.resync(heketi))  # type: ignore[arg-type]
    await heketi.list_sent.wait()
    index.add(kept)
    heketi.gate.set()
    assert await resync == (0, 0)
    del heketi.volumes[kept.id]
    heketi.list_sent.clear()
    assert await index.resync(heketi) == (0, 1)  # type: ignore[arg-type]
    assert index.by_id(kept.id) is None
