"""The name index of one Heketi backend: which of its volumes are ours, by CSI-name hash.

Heketi has no lookup by name; `GET /volumes` returns ids only. The index is built once per
backend (one GET per volume, bounded concurrency, progress logged) and then kept current by
every create and delete, so that a CreateVolume costs no scan. Ids of volumes that are not
ours are remembered too, so that a later recovery scan only reads volumes it has not seen.

A resync forgets what Heketi no longer lists, but only what the index learnt before its list
was requested: a volume created while the answer was on the way is missing from it, and
forgetting it would let a retried CreateVolume make a second one (in another cluster).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import dataclass

from services.common.errors import NotFound
from services.common.logging import get_logger
from services.controller.heketi import HeketiClient, VolumeInfo
from services.controller.ids import Kind, parse_owned_name
from services.controller.metrics import INDEX_VOLUMES

_log = get_logger("index")


@dataclass(frozen=True)
class Entry:
    """A volume or snapshot of ours, as Heketi describes it."""

    kind: Kind
    hash: str
    info: VolumeInfo
    source_heketi_id: str | None = None
    created_unix: int | None = None
    content: str | None = None  # see OwnedName.content

    @property
    def heketi_id(self) -> str:
        return self.info.id


def entry_for(info: VolumeInfo) -> Entry | None:
    owned = parse_owned_name(info.name)
    if owned is None:
        return None
    return Entry(owned.kind, owned.hash, info, owned.source_heketi_id, owned.created_unix,
                 owned.content)


class VolumeIndex:
    def __init__(self, backend: str) -> None:
        self.backend = backend
        self._by_hash: dict[tuple[Kind, str], Entry] = {}
        self._by_id: dict[str, Entry] = {}
        self._foreign: dict[str, int] = {}  # Heketi id -> GID of volumes not ours
        # When each known id was last learnt, on a clock that each resync advances.
        self._learnt: dict[str, int] = {}
        self._clock = 0
        self.ready = False
        self.build_seconds: float | None = None
        self.progress = (0, 0)

    # --- building -----------------------------------------------------------------
    async def build(self, client: HeketiClient, concurrency: int = 16) -> None:
        """Read every volume once; raises the client's error when Heketi cannot be read."""
        started = time.monotonic()
        ids = await client.list_volume_ids()
        self.progress = (0, len(ids))
        _log.info("building volume index", backend=self.backend, volumes=len(ids))
        await self._read(client, ids, concurrency)
        INDEX_VOLUMES.labels(self.backend).set(len(self._by_id))  # also when none is ours
        self.ready = True
        self.build_seconds = time.monotonic() - started
        _log.info("volume index ready", backend=self.backend, volumes=len(ids),
                  ours=len(self._by_id), seconds=round(self.build_seconds, 2))

    async def _read(self, client: HeketiClient, ids: Iterable[str], concurrency: int) -> None:
        limit = asyncio.Semaphore(concurrency)
        pending = list(ids)
        last_log = time.monotonic()

        async def one(volume_id: str) -> None:
            nonlocal last_log
            async with limit:
                try:
                    info = await client.volume_info(volume_id)
                except NotFound:
                    return  # deleted while we were reading
            self.add(info)
            done, total = self.progress
            self.progress = (done + 1, total)
            if time.monotonic() - last_log > 2.0:
                last_log = time.monotonic()
                _log.info("volume index progress", backend=self.backend,
                          read=done + 1, total=total)

        await asyncio.gather(*(one(v) for v in pending))

    async def scan_new(self, client: HeketiClient, concurrency: int = 16) -> int:
        """Read volumes the index has never seen (recovery after a lost result); returns count."""
        ids = await client.list_volume_ids()
        unseen = [v for v in ids if v not in self._by_id and v not in self._foreign]
        if unseen:
            await self._read(client, unseen, concurrency)
        return len(unseen)

    async def resync(self, client: HeketiClient, concurrency: int = 16) -> tuple[int, int]:
        """Follow changes made outside the driver: forget volumes Heketi no longer lists and
        read the ones never seen. One list request plus one read per new volume; returns
        (added, removed)."""
        self._clock += 1
        asked = self._clock
        ids = set(await client.list_volume_ids())
        gone = [v for v in (*self._by_id, *self._foreign)
                if v not in ids and self._learnt.get(v, 0) < asked]
        for volume_id in gone:
            self.remove(volume_id)
        unseen = [v for v in ids if v not in self._by_id and v not in self._foreign]
        if unseen:
            await self._read(client, unseen, concurrency)
        return len(unseen), len(gone)

    # --- keeping current ------------------------------------------------------------
    def add(self, info: VolumeInfo) -> Entry | None:
        self._learnt[info.id] = self._clock
        entry = entry_for(info)
        if entry is None:
            self._foreign[info.id] = info.gid
            return None
        self._by_hash[(entry.kind, entry.hash)] = entry
        self._by_id[info.id] = entry
        INDEX_VOLUMES.labels(self.backend).set(len(self._by_id))
        return entry

    def remove(self, heketi_id: str) -> None:
        entry = self._by_id.pop(heketi_id, None)
        self._foreign.pop(heketi_id, None)
        if entry is not None and self._by_hash.get((entry.kind, entry.hash)) is entry:
            del self._by_hash[(entry.kind, entry.hash)]
        INDEX_VOLUMES.labels(self.backend).set(len(self._by_id))

    # --- queries ----------------------------------------------------------------------
    def by_hash(self, kind: Kind, name_hash: str) -> Entry | None:
        return self._by_hash.get((kind, name_hash))

    def by_id(self, heketi_id: str) -> Entry | None:
        return self._by_id.get(heketi_id)

    def entries(self, kind: Kind) -> list[Entry]:
        """Ours of one kind, in a stable order (Heketi id) for pagination."""
        return sorted((e for e in self._by_id.values() if e.kind is kind),
                      key=lambda e: e.heketi_id)

    def gids_in_use(self) -> set[int]:
        """GIDs of every volume on this Heketi: ours, adopted, in-tree and other foreign ones
        (two volumes sharing a GID would let each one's pods read the other's files)."""
        ours = {e.info.gid for e in self._by_id.values() if e.info.gid}
        return ours | {gid for gid in self._foreign.values() if gid}

    def __len__(self) -> int:
        return len(self._by_id)
