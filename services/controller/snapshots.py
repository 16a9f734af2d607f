"""CSI snapshots on Heketi's clone.

Heketi has no snapshot object: its one point-in-time copy is `POST /volumes/{id}/clone`, which
snapshots the source's thin-LVM bricks and turns the snapshot into an independent volume. A
CSI snapshot here is such a clone, named `snap_<source>_<created>_hcss-<hash>` so that its
source, creation time and CSI name survive controller restarts (Heketi keeps no metadata).
Snapshot volumes never appear in ListVolumes, and their ids are not volume ids.
"""

from __future__ import annotations

import time

from google.protobuf.timestamp_pb2 import Timestamp

from services.common.errors import AlreadyExists, InvalidArgument, NotFound
from services.common.keyed_operations import KeyedOperations
from services.common.proto import csi_pb2
from services.common.rpc import RpcContext
from services.common.validation import require
from services.controller.backends import Backend, BackendRegistry
from services.controller.capabilities import GIB
from services.controller.ids import Kind, ObjectRef, make_ref, name_hash, parse_ref, snapshot_name
from services.controller.index import Entry
from services.controller.objects import (
    clone_recovering,
    delete_by_id,
    find_by_name,
    id_key,
    live_entry,
    name_key,
    require_cloneable,
)
from services.controller.pagination import paginate
from services.controller.params import SIDECAR_PREFIX
from services.controller.progress import progress_logger


def snapshot_message(backend: Backend, entry: Entry,
                     source_id: str | None = None) -> csi_pb2.Snapshot:
    """`source_id`: the caller's source volume id (an adopted volume's id keeps its mark)."""
    source = source_id or make_ref(Kind.VOLUME, backend.token,
                                   entry.source_heketi_id or "").encode()
    return csi_pb2.Snapshot(
        size_bytes=entry.info.size_gib * GIB,
        snapshot_id=make_ref(Kind.SNAPSHOT, backend.token, entry.heketi_id).encode(),
        source_volume_id=source,
        creation_time=Timestamp(seconds=entry.created_unix or 0),
        ready_to_use=True,
    )


class SnapshotService:
    """The snapshot RPCs; the Controller service hands them over to it."""

    def __init__(self, backends: BackendRegistry, ops: KeyedOperations) -> None:
        self.backends = backends
        self.ops = ops

    async def CreateSnapshot(
        self, request: csi_pb2.CreateSnapshotRequest, ctx: RpcContext
    ) -> csi_pb2.CreateSnapshotResponse:
        name = require(request.name, "name")
        source_id = require(request.source_volume_id, "source_volume_id")
        for param in request.parameters:
            if not param.lower().startswith(SIDECAR_PREFIX):
                raise InvalidArgument(f"invalid VolumeSnapshotClass parameter {param!r}; "
                                      "heketi-csi takes none")
        source = parse_ref(source_id, Kind.VOLUME)
        backend = await self.backends.backend(source.backend, request.secrets)
        hashed = name_hash(name, Kind.SNAPSHOT)
        key = name_key(backend.token, Kind.SNAPSHOT, hashed)
        existing = None
        if not self.ops.running(key):
            existing = await find_by_name(backend, Kind.SNAPSHOT, hashed)
        if existing is None:
            # Holds the source volume too: Heketi hides it while the clone runs (service.py).
            existing = await self.ops.run(
                key, id_key(source), what=f"creating snapshot {name!r} of volume {source_id}",
                work=lambda: self._create(backend, source, name, hashed, ctx))
        if existing.source_heketi_id != source.heketi_id:
            raise AlreadyExists(f"snapshot {name!r} exists for another source volume")
        return csi_pb2.CreateSnapshotResponse(
            snapshot=snapshot_message(backend, existing, source_id))

    async def _create(
        self, backend: Backend, source: ObjectRef, name: str, hashed: str, ctx: RpcContext
    ) -> Entry:
        src = await live_entry(backend, source)
        require_cloneable(src)
        clone_name = snapshot_name(name, source.heketi_id, int(time.time()))
        progress = progress_logger(ctx, "clone for snapshot", clone_name)
        entry = await clone_recovering(backend, Kind.SNAPSHOT, hashed, source, src, clone_name,
                                       progress)
        ctx.log.info("snapshot created", heketi_id=entry.heketi_id, source=source.heketi_id)
        return entry

    async def DeleteSnapshot(
        self, request: csi_pb2.DeleteSnapshotRequest, ctx: RpcContext
    ) -> csi_pb2.DeleteSnapshotResponse:
        snapshot_id = require(request.snapshot_id, "snapshot_id")
        await delete_by_id(self.backends, self.ops, snapshot_id, Kind.SNAPSHOT,
                           request.secrets, ctx)
        return csi_pb2.DeleteSnapshotResponse()

    async def GetSnapshot(
        self, request: csi_pb2.GetSnapshotRequest, ctx: RpcContext
    ) -> csi_pb2.GetSnapshotResponse:
        """The snapshot as Heketi describes it now; NOT_FOUND when it is not (or no longer)
        there, or the id is not a snapshot id of ours."""
        ref = parse_ref(require(request.snapshot_id, "snapshot_id"), Kind.SNAPSHOT)
        backend = await self.backends.backend(ref.backend, request.secrets)
        entry = await live_entry(backend, ref)
        return csi_pb2.GetSnapshotResponse(snapshot=snapshot_message(backend, entry))

    async def ListSnapshots(
        self, request: csi_pb2.ListSnapshotsRequest, ctx: RpcContext
    ) -> csi_pb2.ListSnapshotsResponse:
        wanted: ObjectRef | None = None
        source: ObjectRef | None = None
        try:
            if request.snapshot_id:
                wanted = parse_ref(request.snapshot_id, Kind.SNAPSHOT)
            if request.source_volume_id:
                source = parse_ref(request.source_volume_id, Kind.VOLUME)
        except NotFound:
            return csi_pb2.ListSnapshotsResponse()
        items: list[tuple[str, csi_pb2.Snapshot]] = []
        for cfg in self.backends.configured:
            if (wanted and wanted.backend != cfg.name) or (source and source.backend != cfg.name):
                continue
            backend = await self.backends.backend(cfg.name, request.secrets)
            for entry in backend.index.entries(Kind.SNAPSHOT):
                if wanted and entry.heketi_id != wanted.heketi_id:
                    continue
                if source and entry.source_heketi_id != source.heketi_id:
                    continue
                snap = snapshot_message(backend, entry)
                items.append((snap.snapshot_id, snap))
        page, next_token = paginate(items, request.max_entries, request.starting_token)
        return csi_pb2.ListSnapshotsResponse(
            entries=[csi_pb2.ListSnapshotsResponse.Entry(snapshot=s) for _, s in page],
            next_token=next_token,
        )
