"""CSI snapshots on Heketi's clone.

Heketi has no snapshot object: its one point-in-time copy is `POST /volumes/{id}/clone`, which
snapshots the source's thin-LVM bricks and turns the snapshot into an independent volume. A
CSI snapshot here is such a clone, named `snap_<source>_<created>_hcss-<hash>` so that its
source, creation time and CSI name survive controller restarts (Heketi keeps no metadata).
Snapshot volumes never appear in ListVolumes, and their ids are not volume ids.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING

from google.protobuf.timestamp_pb2 import Timestamp

from services.common.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from services.common.proto import csi_pb2
from services.common.rpc import RpcContext
from services.controller.capabilities import GIB
from services.controller.heketi import VolumeInfo
from services.controller.ids import Kind, ObjectRef, make_ref, name_hash, parse_ref, snapshot_name
from services.controller.index import Entry
from services.controller.operations import progress_logger
from services.controller.pagination import paginate
from services.controller.params import SIDECAR_PREFIX

if TYPE_CHECKING:
    from services.controller.backends import Backend, BackendRegistry
    from services.controller.operations import OperationTracker


def _require(value: str, field: str) -> str:
    if not value:
        raise InvalidArgument(f"{field} is required")
    return value


class SnapshotRpcs:
    """The snapshot RPCs of ControllerService (which provides the attributes below)."""

    backends: BackendRegistry
    ops: OperationTracker

    if TYPE_CHECKING:  # provided by ControllerService
        async def _backend_for(self, ref: ObjectRef, secrets: Mapping[str, str]) -> Backend: ...

        async def _live_entry(self, backend: Backend, ref: ObjectRef) -> Entry: ...

        async def _delete(self, backend: Backend, ref: ObjectRef, ctx: RpcContext) -> None: ...

        async def _still_there(self, backend: Backend, entry: Entry | None) -> Entry | None: ...

        async def _heketi_create(
            self, backend: Backend, kind: Kind, hashed: str,
            call: Callable[[], Awaitable[VolumeInfo]],
        ) -> Entry: ...

    @staticmethod
    def require_snapshots_enabled(entry: Entry) -> None:
        if not entry.info.snapshot.enable:
            raise FailedPrecondition(
                f"Heketi volume {entry.info.name} was created without gluster snapshots "
                "enabled, so Heketi cannot clone it")

    @staticmethod
    def _snapshot(backend: Backend, entry: Entry) -> csi_pb2.Snapshot:
        source = make_ref(Kind.VOLUME, backend.token, entry.source_heketi_id or "").encode()
        return csi_pb2.Snapshot(
            size_bytes=entry.info.size_gib * GIB,
            snapshot_id=make_ref(Kind.SNAPSHOT, backend.token, entry.heketi_id).encode(),
            source_volume_id=source,
            creation_time=Timestamp(seconds=entry.created_unix or 0),
            ready_to_use=True,
        )

    async def CreateSnapshot(
        self, request: csi_pb2.CreateSnapshotRequest, ctx: RpcContext
    ) -> csi_pb2.CreateSnapshotResponse:
        name = _require(request.name, "name")
        source_id = _require(request.source_volume_id, "source_volume_id")
        for param in request.parameters:
            if not param.lower().startswith(SIDECAR_PREFIX):
                raise InvalidArgument(f"invalid VolumeSnapshotClass parameter {param!r}; "
                                      "heketi-csi takes none")
        source = parse_ref(source_id, Kind.VOLUME)
        backend = await self._backend_for(source, request.secrets)
        hashed = name_hash(name, Kind.SNAPSHOT)
        key = (backend.token, "snapshot-name", hashed)
        existing = None
        if not self.ops.running(key):
            existing = await self._still_there(backend,
                                               backend.index.by_hash(Kind.SNAPSHOT, hashed))
        if existing is None:
            existing = await self.ops.run(
                key, f"creating snapshot {name!r}",
                lambda: self._create_snapshot(backend, source, name, hashed, ctx))
        if existing.source_heketi_id != source.heketi_id:
            raise AlreadyExists(f"snapshot {name!r} exists for another source volume")
        return csi_pb2.CreateSnapshotResponse(snapshot=self._snapshot(backend, existing))

    async def _create_snapshot(
        self, backend: Backend, source: ObjectRef, name: str, hashed: str, ctx: RpcContext
    ) -> Entry:
        src = await self._live_entry(backend, source)
        self.require_snapshots_enabled(src)
        clone_name = snapshot_name(name, source.heketi_id, int(time.time()))
        progress = progress_logger(ctx, "clone for snapshot", clone_name)
        entry = await self._heketi_create(
            backend, Kind.SNAPSHOT, hashed,
            lambda: backend.client.clone_volume(src.heketi_id, clone_name, on_progress=progress))
        ctx.log.info("snapshot created", heketi_id=entry.heketi_id, source=source.heketi_id)
        return entry

    async def DeleteSnapshot(
        self, request: csi_pb2.DeleteSnapshotRequest, ctx: RpcContext
    ) -> csi_pb2.DeleteSnapshotResponse:
        snapshot_id = _require(request.snapshot_id, "snapshot_id")
        try:
            ref = parse_ref(snapshot_id, Kind.SNAPSHOT)
        except NotFound:
            return csi_pb2.DeleteSnapshotResponse()
        backend = await self._backend_for(ref, request.secrets)

        await self.ops.run((ref.backend, "id", ref.heketi_id),
                           f"deleting snapshot {snapshot_id}",
                           lambda: self._delete(backend, ref, ctx))
        return csi_pb2.DeleteSnapshotResponse()

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
                snap = self._snapshot(backend, entry)
                items.append((snap.snapshot_id, snap))
        page, next_token = paginate(items, request.max_entries, request.starting_token)
        return csi_pb2.ListSnapshotsResponse(
            entries=[csi_pb2.ListSnapshotsResponse.Entry(snapshot=s) for _, s in page],
            next_token=next_token,
        )
