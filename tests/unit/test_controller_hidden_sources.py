"""A volume Heketi hides while an operation holds it (the source of a clone) is ABORTED, not
NOT_FOUND, and stays in the index; a volume that is gone is NOT_FOUND and forgotten.

Heketi v10 answers `GET /volumes/{id}` with 404 `Id not found` both for a volume that does not
exist and for one whose pending operation hides it, but still lists a clone's source in
`GET /volumes`. The scripted Heketi below answers the same way.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from services.common.errors import Aborted, NotFound
from services.controller.backends import Backend
from services.controller.heketi import (
    Durability,
    GlusterMount,
    HeketiNotFound,
    Snapshot,
    VolumeInfo,
)
from services.controller.ids import Kind, make_ref, name_hash, volume_name
from services.controller.index import VolumeIndex
from services.controller.objects import clone_recovering, live_entry


def _info(number: int) -> VolumeInfo:
    return VolumeInfo(
        id=f"{number:032x}", name=volume_name(f"pvc-{number}"), cluster="c" * 32,
        size_gib=1, durability=Durability.replicate(3), snapshot=Snapshot(enable=True),
        gid=0, mount=GlusterMount(hosts=("h1",), device="h1:v", options={}))


class ScriptedHeketi:
    """Volumes by id; those in `hidden` are listed but answer GET with 404, as Heketi does
    for the source of a clone in progress. `clone_volume` answers 404 for hidden and unknown
    sources, as Heketi does."""

    def __init__(self, *volumes: VolumeInfo) -> None:
        self.volumes = {v.id: v for v in volumes}
        self.hidden: set[str] = set()

    async def list_volume_ids(self) -> list[str]:
        await asyncio.sleep(0)
        return list(self.volumes)

    async def volume_info(self, volume_id: str) -> VolumeInfo:
        await asyncio.sleep(0)
        if volume_id not in self.volumes or volume_id in self.hidden:
            raise HeketiNotFound(f"GET /volumes/{volume_id} failed: HTTP 404: Id not found")
        return self.volumes[volume_id]

    async def clone_volume(self, volume_id: str, name: str | None = None,
                           **_: Any) -> VolumeInfo:
        await asyncio.sleep(0)
        if volume_id not in self.volumes or volume_id in self.hidden:
            raise HeketiNotFound(f"POST /volumes/{volume_id}/clone failed: HTTP 404")
        raise AssertionError("this test never clones a visible source")


async def _backend(heketi: ScriptedHeketi) -> Backend:
    index = VolumeIndex("default")
    await index.build(heketi)  # type: ignore[arg-type]
    return Backend(token="default", url="http://heketi.invalid", client=heketi,  # type: ignore[arg-type]
                   index=index)


async def test_a_hidden_volume_is_aborted_and_kept_in_the_index():
    source = _info(1)
    heketi = ScriptedHeketi(source)
    backend = await _backend(heketi)
    heketi.hidden.add(source.id)

    with pytest.raises(Aborted) as err:
        await live_entry(backend, make_ref(Kind.VOLUME, "default", source.id))
    assert "operation in progress" in err.value.message and "retry later" in err.value.message
    assert not isinstance(err.value, NotFound)
    assert backend.index.by_id(source.id) is not None, "a hidden volume is not forgotten"

    heketi.hidden.clear()  # the clone finished
    entry = await live_entry(backend, make_ref(Kind.VOLUME, "default", source.id))
    assert entry.info == source


async def test_a_volume_that_is_gone_is_not_found_and_forgotten():
    gone = _info(2)
    heketi = ScriptedHeketi(gone)
    backend = await _backend(heketi)
    del heketi.volumes[gone.id]

    with pytest.raises(NotFound) as err:
        await live_entry(backend, make_ref(Kind.VOLUME, "default", gone.id))
    assert "does not exist" in err.value.message
    assert backend.index.by_id(gone.id) is None


async def test_a_source_hidden_between_read_and_clone_is_aborted_not_not_found():
    """The source was read, then another operation hid it before the clone request: the
    clone's 404 is looked into instead of being passed on as NOT_FOUND."""
    source = _info(3)
    heketi = ScriptedHeketi(source)
    backend = await _backend(heketi)
    ref = make_ref(Kind.VOLUME, "default", source.id)
    src = await live_entry(backend, ref)
    heketi.hidden.add(source.id)

    with pytest.raises(Aborted):
        await clone_recovering(backend, Kind.VOLUME, name_hash("pvc-new", Kind.VOLUME), ref, src,
                               volume_name("pvc-new"), lambda *_: None)


async def test_a_source_deleted_between_read_and_clone_is_not_found():
    source = _info(4)
    heketi = ScriptedHeketi(source)
    backend = await _backend(heketi)
    ref = make_ref(Kind.VOLUME, "default", source.id)
    src = await live_entry(backend, ref)
    del heketi.volumes[source.id]

    with pytest.raises(NotFound) as err:
        await clone_recovering(backend, Kind.VOLUME, name_hash("pvc-new", Kind.VOLUME), ref, src,
                               volume_name("pvc-new"), lambda *_: None)
    assert "does not exist" in err.value.message


async def test_a_source_busy_at_the_clone_and_free_again_is_aborted_not_not_found():
    """The operation that hid the source ended between the clone's 404 and the second look:
    the source exists, so the answer is a retry (ABORTED), not NOT_FOUND."""
    source = _info(5)

    class EndsOnClone(ScriptedHeketi):
        async def clone_volume(self, volume_id: str, name: str | None = None,
                               **kw: Any) -> VolumeInfo:
            try:
                return await super().clone_volume(volume_id, name, **kw)
            finally:
                self.hidden.clear()  # the other operation finishes just after refusing us

    heketi = EndsOnClone(source)
    backend = await _backend(heketi)
    ref = make_ref(Kind.VOLUME, "default", source.id)
    src = await live_entry(backend, ref)
    heketi.hidden.add(source.id)

    with pytest.raises(Aborted) as err:
        await clone_recovering(backend, Kind.VOLUME, name_hash("pvc-new", Kind.VOLUME), ref, src,
                               volume_name("pvc-new"), lambda *_: None)
    assert "retry" in err.value.message
    assert not heketi.hidden, "the second look saw the source again"
