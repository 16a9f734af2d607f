"""The CSI Controller service: volumes through Heketi.

Each RPC validates its request first, then acts. Mutating work runs as a keyed operation
(one task per object, outliving the RPC), and every outcome is recorded in the backend's name
index so that a retry finds what an earlier call created. The snapshot RPCs are served by
`SnapshotService`, which shares the backends and the running operations.
"""

from __future__ import annotations

import asyncio
import time

from google.protobuf.wrappers_pb2 import Int64Value

from services.common import context_keys as ck
from services.common.errors import (
    Aborted,
    AlreadyExists,
    DeadlineExceeded,
    DriverError,
    InvalidArgument,
    OutOfRange,
    Unavailable,
)
from services.common.keyed_operations import KeyedOperations
from services.common.proto import csi_pb2
from services.common.redact import is_credential_key
from services.common.rpc import RpcContext
from services.common.validation import require
from services.controller import brick_health
from services.controller.backends import Backend, BackendRegistry
from services.controller.capabilities import (
    GIB,
    capability_problem,
    fits,
    require_capabilities,
    require_capability,
    size_gib,
)
from services.controller.heketi import OnProgress, Snapshot, VolumeCreateRequest, VolumeInfo
from services.controller.ids import (
    Kind,
    ObjectRef,
    content_digest,
    make_ref,
    name_hash,
    parse_ref,
    volume_name,
)
from services.controller.index import Entry
from services.controller.nodes import NodeCheck
from services.controller.objects import (
    adopted_entry,
    clone_recovering,
    create_recovering,
    delete_by_id,
    find_by_name,
    id_key,
    live_entry,
    name_key,
    noun,
    require_cloneable,
)
from services.controller.pagination import paginate
from services.controller.params import VolumeParams, describe, parse_params
from services.controller.progress import progress_logger
from services.controller.snapshots import SnapshotService

_Cap = csi_pb2.ControllerServiceCapability.RPC.Type
# How long ControllerPublish waits for Heketi before answering from the index: well within
# external-attacher's own deadline (15 s by default), so that a Heketi that does not answer
# at all cannot keep pods from starting.
PUBLISH_HEKETI_WAIT_S = 5.0

CAPABILITIES = (
    _Cap.CREATE_DELETE_VOLUME, _Cap.PUBLISH_UNPUBLISH_VOLUME, _Cap.LIST_VOLUMES,
    _Cap.GET_CAPACITY, _Cap.EXPAND_VOLUME, _Cap.GET_VOLUME, _Cap.VOLUME_CONDITION,
    _Cap.SINGLE_NODE_MULTI_WRITER,
    _Cap.CREATE_DELETE_SNAPSHOT, _Cap.LIST_SNAPSHOTS, _Cap.GET_SNAPSHOT, _Cap.CLONE_VOLUME,
)


def volume_context(info: VolumeInfo) -> dict[str, str]:
    """What the node needs to mount the volume, as Heketi describes it now."""
    context = {ck.VOLUME: info.name, ck.HOSTS: ",".join(info.mount.hosts)}
    backups = info.mount.backup_volfile_servers
    if backups:
        context[ck.BACKUP_VOLFILE_SERVERS] = ",".join(backups)
    if info.gid:
        context[ck.GID] = str(info.gid)
    return context


def source_ref(source: csi_pb2.VolumeContentSource | None) -> ObjectRef | None:
    """The snapshot or volume a CreateVolume's content source names (None without one)."""
    if source is None:
        return None
    kind_name = source.WhichOneof("type")
    if kind_name == "snapshot":
        return parse_ref(require(source.snapshot.snapshot_id, "snapshot_id"), Kind.SNAPSHOT)
    if kind_name == "volume":
        return parse_ref(require(source.volume.volume_id, "source volume_id"), Kind.VOLUME)
    raise InvalidArgument("volume_content_source names neither a snapshot nor a volume")


def require_same_content(entry: Entry, name: str, content: str | None) -> None:
    """ALREADY_EXISTS when the volume of this name was made from another content source."""
    if entry.content != content:
        raise AlreadyExists(f"volume {name!r} exists with another content source")


def _recorded_condition(info: VolumeInfo) -> csi_pb2.VolumeCondition:
    """A volume's condition from Heketi's record alone (brick health turned off)."""
    if not info.mount.hosts or not info.bricks:
        return csi_pb2.VolumeCondition(
            abnormal=True, message="Heketi reports the volume without bricks or mount hosts")
    return csi_pb2.VolumeCondition(abnormal=False, message=(
        f"Heketi reports {len(info.bricks)} bricks on {len(info.mount.hosts)} hosts "
        "(brick health not asked: --brick-health-timeout 0)"))


class ControllerService:
    def __init__(self, backends: BackendRegistry, nodes: NodeCheck,
                 brick_health_timeout: float = 0.0) -> None:
        self.backends = backends
        self.nodes = nodes
        self.brick_health_timeout = brick_health_timeout  # 0: Heketi's record only
        self.ops = KeyedOperations()
        self.snapshots = SnapshotService(backends, self.ops)

    # --- CreateVolume -----------------------------------------------------------------------
    async def CreateVolume(
        self, request: csi_pb2.CreateVolumeRequest, ctx: RpcContext
    ) -> csi_pb2.CreateVolumeResponse:
        name = require(request.name, "name")
        require_capabilities(request.volume_capabilities)
        has_range = request.HasField("capacity_range")
        gib = size_gib(request.capacity_range, has_range)
        params = parse_params(request.parameters)
        source = request.volume_content_source if request.HasField("volume_content_source") \
            else None
        src = source_ref(source)
        content = content_digest(src.encode()) if src is not None else None
        token = self.backends.token_for_create(params)
        backend = await self.backends.backend(token, request.secrets, params)
        hashed = name_hash(name, Kind.VOLUME)
        key = name_key(token, Kind.VOLUME, hashed)
        existing = None
        if not self.ops.running(key):
            existing = await find_by_name(backend, Kind.VOLUME, hashed)
        if existing is not None:
            entry = existing
            require_same_content(entry, name, content)
            if source is not None and entry.info.size_gib < gib:
                entry = await self.ops.run(key, what=f"finishing clone {name!r}",
                                           work=lambda: self._grow(backend, existing, gib))
            return self._create_response(backend, entry, request, params, source, content)

        async def create() -> Entry:
            return await self._create(backend, name, hashed, gib, params, src, content, ctx)

        # A clone also holds its source: while it runs, Heketi hides the source, so another
        # clone, restore or delete of it must wait (ABORTED), not find it missing.
        keys, what = [key], f"creating volume {name!r}"
        if src is not None:
            keys.append(id_key(src))
            what += f" from {noun(src.kind)} {src.encode()}"
        entry = await self.ops.run(*keys, what=what, work=create)
        return self._create_response(backend, entry, request, params, source, content)

    def _create_response(
        self, backend: Backend, entry: Entry, request: csi_pb2.CreateVolumeRequest,
        params: VolumeParams, source: csi_pb2.VolumeContentSource | None, content: str | None,
    ) -> csi_pb2.CreateVolumeResponse:
        info = entry.info
        require_same_content(entry, request.name, content)
        has_range = request.HasField("capacity_range")
        if not fits(info.size_gib, request.capacity_range, has_range):
            raise AlreadyExists(
                f"volume {request.name!r} exists with {info.size_gib} GiB, which does not satisfy "
                "the requested capacity range")
        mismatch = self._param_mismatch(info, params)
        if mismatch:
            raise AlreadyExists(f"volume {request.name!r} exists with other parameters: {mismatch}")
        volume = csi_pb2.Volume(
            capacity_bytes=info.size_gib * GIB,
            volume_id=make_ref(Kind.VOLUME, backend.token, info.id).encode(),
            volume_context=volume_context(info),
        )
        if source is not None:
            volume.content_source.CopyFrom(source)
        return csi_pb2.CreateVolumeResponse(volume=volume)

    @staticmethod
    def _param_mismatch(info: VolumeInfo, params: VolumeParams) -> str | None:
        have, asked = describe(info.durability), describe(params.durability)
        if have != asked:
            return f"volumetype {have} (asked {asked})"
        if params.clusters and info.cluster not in params.clusters:
            return f"cluster {info.cluster} is not in clusterid {','.join(params.clusters)}"
        if params.gid_range is not None:
            low, high = params.gid_range
            if not info.gid or not low <= info.gid <= high:
                return f"gid {info.gid} is outside gidMin..gidMax {low}..{high}"
        return None

    async def _create(
        self, backend: Backend, name: str, hashed: str, gib: int, params: VolumeParams,
        source: ObjectRef | None, content: str | None, ctx: RpcContext,
    ) -> Entry:
        heketi_name = volume_name(name, params.name_prefix, params.pvc_namespace, params.pvc_name,
                                  content)
        started = time.monotonic()
        progress = progress_logger(ctx, "create volume", heketi_name)

        if source is not None:
            entry = await self._clone_into(backend, source, heketi_name, hashed, gib, params,
                                           progress)
        else:
            if params.gid_range is not None:
                # Volumes made outside the driver since the last resync hold GIDs too.
                await backend.index.scan_new(backend.client)
            with backend.gid_for_create(params.gid_range) as gid:
                request = VolumeCreateRequest(
                    size_gib=gib, name=heketi_name, durability=params.durability,
                    clusters=params.clusters, gid=gid,
                    gluster_volume_options=params.volume_options,
                    snapshot=Snapshot(enable=True, factor=params.snap_factor),
                )
                entry = await create_recovering(
                    backend, Kind.VOLUME, hashed,
                    lambda: backend.client.create_volume(request, on_progress=progress))
        ctx.log.info("volume created", heketi_id=entry.heketi_id, name=entry.info.name,
                     size_gib=entry.info.size_gib, seconds=round(time.monotonic() - started, 2))
        return entry

    async def _clone_into(
        self, backend: Backend, ref: ObjectRef, heketi_name: str,
        hashed: str, gib: int, params: VolumeParams, progress: OnProgress,
    ) -> Entry:
        if ref.backend != backend.token:
            raise InvalidArgument("a volume can only be created from a source on the same "
                                  "Heketi backend")
        src = await live_entry(backend, ref)
        if gib < src.info.size_gib:
            raise OutOfRange(f"requested size {gib} GiB is smaller than the source's "
                             f"{src.info.size_gib} GiB")
        mismatch = self._param_mismatch(src.info, params)
        if mismatch:
            # A clone keeps its source's layout and GID: refuse before creating anything.
            raise InvalidArgument(f"a clone keeps its source's settings, but the parameters "
                                  f"ask otherwise: {mismatch}")
        require_cloneable(src)
        entry = await clone_recovering(backend, Kind.VOLUME, hashed, ref, src, heketi_name,
                                       progress)
        return await self._grow(backend, entry, gib)

    async def _grow(self, backend: Backend, entry: Entry, gib: int) -> Entry:
        if entry.info.size_gib >= gib:
            return entry
        info = await backend.client.expand_volume(entry.heketi_id, gib - entry.info.size_gib)
        return backend.index.add(info) or adopted_entry(info)

    # --- DeleteVolume -----------------------------------------------------------------------
    async def DeleteVolume(
        self, request: csi_pb2.DeleteVolumeRequest, ctx: RpcContext
    ) -> csi_pb2.DeleteVolumeResponse:
        volume_id = require(request.volume_id, "volume_id")
        await delete_by_id(self.backends, self.ops, volume_id, Kind.VOLUME, request.secrets, ctx)
        return csi_pb2.DeleteVolumeResponse()

    # --- publish ----------------------------------------------------------------------------
    async def ControllerPublishVolume(
        self, request: csi_pb2.ControllerPublishVolumeRequest, ctx: RpcContext
    ) -> csi_pb2.ControllerPublishVolumeResponse:
        volume_id = require(request.volume_id, "volume_id")
        node_id = require(request.node_id, "node_id")
        require_capability(request.volume_capability, request.HasField("volume_capability"))
        ref = parse_ref(volume_id, Kind.VOLUME)
        backend = await self.backends.backend(ref.backend, request.secrets)
        entry = await self._publishable(backend, ref, ctx)
        await self.nodes.require(node_id)
        context = volume_context(entry.info)
        context.pop(ck.GID, None)
        return csi_pb2.ControllerPublishVolumeResponse(publish_context=context)

    @staticmethod
    async def _publishable(backend: Backend, ref: ObjectRef, ctx: RpcContext) -> Entry:
        """The volume as Heketi describes it now; while Heketi cannot be reached, or hides the
        volume during an operation on it (a snapshot being taken), as the index last saw it
        (pods must start meanwhile: the mount needs no Heketi). NOT_FOUND only when Heketi
        says so."""
        try:
            async with asyncio.timeout(PUBLISH_HEKETI_WAIT_S):
                return await live_entry(backend, ref)
        except (Unavailable, DeadlineExceeded, TimeoutError, Aborted) as exc:
            known = backend.index.by_id(ref.heketi_id)
            if known is None or known.kind is not ref.kind:
                if isinstance(exc, TimeoutError):
                    raise Unavailable(f"Heketi did not answer within {PUBLISH_HEKETI_WAIT_S:g} "
                                      "s and the volume is not in the index; retry") from None
                raise
            ctx.log.warning("Heketi cannot describe the volume now; answering from the index "
                            "(last known hosts)",
                            heketi_id=ref.heketi_id, hosts=",".join(known.info.mount.hosts),
                            error=str(exc) or type(exc).__name__)
            return known

    async def ControllerUnpublishVolume(
        self, request: csi_pb2.ControllerUnpublishVolumeRequest, ctx: RpcContext
    ) -> csi_pb2.ControllerUnpublishVolumeResponse:
        require(request.volume_id, "volume_id")
        # Nothing is attached in Heketi; the node's unstage releases the mount.
        return csi_pb2.ControllerUnpublishVolumeResponse()

    # --- queries ----------------------------------------------------------------------------
    async def ValidateVolumeCapabilities(
        self, request: csi_pb2.ValidateVolumeCapabilitiesRequest, ctx: RpcContext
    ) -> csi_pb2.ValidateVolumeCapabilitiesResponse:
        volume_id = require(request.volume_id, "volume_id")
        if not request.volume_capabilities:
            raise InvalidArgument("volume_capabilities is required")
        ref = parse_ref(volume_id, Kind.VOLUME)
        backend = await self.backends.backend(ref.backend, request.secrets)
        await live_entry(backend, ref)
        problems = [p for c in request.volume_capabilities if (p := capability_problem(c))]
        if problems:
            return csi_pb2.ValidateVolumeCapabilitiesResponse(message="; ".join(problems))
        parse_params(request.parameters)
        # Confirmed is what was validated: the parameters without those that carry a
        # credential (`restuserkey`), and only the context keys the driver itself writes.
        confirmed = csi_pb2.ValidateVolumeCapabilitiesResponse.Confirmed(
            volume_context={k: v for k, v in request.volume_context.items()
                            if k in ck.VOLUME_CONTEXT_KEYS},
            volume_capabilities=request.volume_capabilities,
            parameters={k: v for k, v in request.parameters.items()
                        if not is_credential_key(k)},
        )
        return csi_pb2.ValidateVolumeCapabilitiesResponse(confirmed=confirmed)

    async def ListVolumes(
        self, request: csi_pb2.ListVolumesRequest, ctx: RpcContext
    ) -> csi_pb2.ListVolumesResponse:
        refs: list[tuple[str, Entry]] = []
        for cfg in self.backends.configured:
            backend = await self.backends.backend(cfg.name, {})
            refs.extend((make_ref(Kind.VOLUME, cfg.name, e.heketi_id).encode(), e)
                        for e in backend.index.entries(Kind.VOLUME))
        page, next_token = paginate(refs, request.max_entries, request.starting_token)
        conditions: dict[str, csi_pb2.VolumeCondition] = {}
        for cfg in self.backends.configured:
            mine = [(vid, e.info) for vid, e in page if parse_ref(vid, Kind.VOLUME).backend
                    == cfg.name]
            if mine:
                backend = await self.backends.backend(cfg.name, {})
                found = await self._conditions(backend, [info for _, info in mine])
                conditions.update(zip([vid for vid, _ in mine], found, strict=True))
        Entry = csi_pb2.ListVolumesResponse.Entry
        entries = [
            Entry(volume=csi_pb2.Volume(
                volume_id=vid, capacity_bytes=e.info.size_gib * GIB,
                volume_context=volume_context(e.info)),
                status=csi_pb2.ListVolumesResponse.VolumeStatus(
                    volume_condition=conditions[vid]))
            for vid, e in page
        ]
        return csi_pb2.ListVolumesResponse(entries=entries, next_token=next_token)

    async def _conditions(self, backend: Backend,
                          infos: list[VolumeInfo]) -> list[csi_pb2.VolumeCondition]:
        """The condition of each volume: from its bricks (brick_health), or Heketi's record
        when that is turned off."""
        if self.brick_health_timeout <= 0:
            return [_recorded_condition(info) for info in infos]
        hosts: dict[str, str] = {}
        for node_id in sorted({b.node for info in infos for b in info.bricks}):
            try:
                node = await backend.client.node_info(node_id)
            except DriverError:
                continue  # its bricks are reported down: where they are is unknown
            if node.storage_hostnames:
                hosts[node_id] = node.storage_hostnames[0]
        wanted = [(hosts.get(b.node, ""), b.path) for info in infos for b in info.bricks]
        states = iter(await brick_health.look([w for w in wanted if w[0]],
                                              self.brick_health_timeout))
        conditions = []
        for info in infos:
            mine = [next(states) if b.node in hosts else brick_health.BrickState(
                f"node {b.node}", b.path, False, "Heketi did not say where its node is")
                for b in info.bricks]
            abnormal, message = brick_health.verdict(mine, info.durability)
            conditions.append(csi_pb2.VolumeCondition(abnormal=abnormal, message=message))
        return conditions

    async def ControllerGetVolume(
        self, request: csi_pb2.ControllerGetVolumeRequest, ctx: RpcContext
    ) -> csi_pb2.ControllerGetVolumeResponse:
        ref = parse_ref(require(request.volume_id, "volume_id"), Kind.VOLUME)
        backend = await self.backends.backend(ref.backend, {})
        entry = await live_entry(backend, ref)
        info = entry.info
        (condition,) = await self._conditions(backend, [info])
        return csi_pb2.ControllerGetVolumeResponse(
            volume=csi_pb2.Volume(volume_id=request.volume_id, capacity_bytes=info.size_gib * GIB,
                                  volume_context=volume_context(info)),
            status=csi_pb2.ControllerGetVolumeResponse.VolumeStatus(volume_condition=condition),
        )

    async def GetCapacity(
        self, request: csi_pb2.GetCapacityRequest, ctx: RpcContext
    ) -> csi_pb2.GetCapacityResponse:
        for cap in request.volume_capabilities:
            if capability_problem(cap):
                return csi_pb2.GetCapacityResponse(available_capacity=0)
        params = parse_params(request.parameters)
        token = self.backends.token_for_create(params)
        backend = await self.backends.backend(token, {}, params)
        clusters = list(params.clusters) or await backend.client.list_cluster_ids()
        free_kib = 0
        for cluster_id in clusters:
            cluster = await backend.client.cluster_info(cluster_id)
            for node_id in cluster.nodes:
                node = await backend.client.node_info(node_id)
                for device in node.devices:
                    free_kib += device.storage.free_kib
        overhead = params.durability.raw_factor * params.snap_factor
        available = int(free_kib * 1024 / overhead) // GIB * GIB
        return csi_pb2.GetCapacityResponse(
            available_capacity=available, minimum_volume_size=Int64Value(value=GIB))

    # --- expansion --------------------------------------------------------------------------
    async def ControllerExpandVolume(
        self, request: csi_pb2.ControllerExpandVolumeRequest, ctx: RpcContext
    ) -> csi_pb2.ControllerExpandVolumeResponse:
        volume_id = require(request.volume_id, "volume_id")
        if not request.HasField("capacity_range"):
            raise InvalidArgument("capacity_range is required")
        if request.HasField("volume_capability"):
            require_capability(request.volume_capability, True)
        gib = size_gib(request.capacity_range, True)
        ref = parse_ref(volume_id, Kind.VOLUME)
        backend = await self.backends.backend(ref.backend, request.secrets)

        async def expand() -> Entry:
            entry = await live_entry(backend, ref)
            if entry.info.size_gib >= gib:
                return entry
            ctx.log.info("expanding", from_gib=entry.info.size_gib, to_gib=gib)
            return await self._grow(backend, entry, gib)

        entry = await self.ops.run(id_key(ref), what=f"expanding volume {volume_id}", work=expand)
        return csi_pb2.ControllerExpandVolumeResponse(
            capacity_bytes=entry.info.size_gib * GIB, node_expansion_required=False)

    async def ControllerGetCapabilities(
        self, request: csi_pb2.ControllerGetCapabilitiesRequest, ctx: RpcContext
    ) -> csi_pb2.ControllerGetCapabilitiesResponse:
        return csi_pb2.ControllerGetCapabilitiesResponse(capabilities=[
            csi_pb2.ControllerServiceCapability(
                rpc=csi_pb2.ControllerServiceCapability.RPC(type=c))
            for c in CAPABILITIES
        ])

    # --- snapshots: served by SnapshotService ----------------------------------------------
    async def CreateSnapshot(
        self, request: csi_pb2.CreateSnapshotRequest, ctx: RpcContext
    ) -> csi_pb2.CreateSnapshotResponse:
        return await self.snapshots.CreateSnapshot(request, ctx)

    async def DeleteSnapshot(
        self, request: csi_pb2.DeleteSnapshotRequest, ctx: RpcContext
    ) -> csi_pb2.DeleteSnapshotResponse:
        return await self.snapshots.DeleteSnapshot(request, ctx)

    async def ListSnapshots(
        self, request: csi_pb2.ListSnapshotsRequest, ctx: RpcContext
    ) -> csi_pb2.ListSnapshotsResponse:
        return await self.snapshots.ListSnapshots(request, ctx)

    async def GetSnapshot(
        self, request: csi_pb2.GetSnapshotRequest, ctx: RpcContext
    ) -> csi_pb2.GetSnapshotResponse:
        return await self.snapshots.GetSnapshot(request, ctx)
