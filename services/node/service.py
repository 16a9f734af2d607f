"""The CSI Node service: stage (FUSE-mount), publish (bind-mount), stats, unpublish, unstage.

Each RPC validates its request first, then takes its operation lock (a busy volume or path
answers ABORTED), then acts. Mount work runs in its own task that keeps the lock until it is
done, so a caller that gives up (kubelet's deadline) does not leave a half-made mount behind;
its retry answers ABORTED until the work finished, then finds the finished mount.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import os
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from services.common import context_keys
from services.common.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unavailable,
)
from services.common.keyed_operations import KeyedOperations
from services.common.logging import get_logger
from services.common.proto import csi_pb2
from services.common.rpc import RpcContext
from services.common.validation import require
from services.node import mountinfo, mountopts, paths
from services.node.boundary import ParentMissing, Place, Tree
from services.node.fsstat import FsProbe, PathMissing, Probe
from services.node.mounter import Mounter
from services.node.mountinfo import GLUSTER_FSTYPE, Mount
from services.node.mountopts import GlusterMount, volume_of_source
from services.node.offloop import Lane
from services.node.repair import Repairer, entangled, path_key, volume_key
from services.node.state import StageRecord, StateStore, stage_key
from services.node.volfile_servers import VolfileProber, describe

_log = get_logger("node.service")

T = TypeVar("T")

AccessMode = csi_pb2.VolumeCapability.AccessMode
_READER_ONLY = frozenset({AccessMode.SINGLE_NODE_READER_ONLY, AccessMode.MULTI_NODE_READER_ONLY})
_RPC = csi_pb2.NodeServiceCapability.RPC
CAPABILITIES = (
    _RPC.STAGE_UNSTAGE_VOLUME,
    _RPC.GET_VOLUME_STATS,
    _RPC.VOLUME_CONDITION,
    _RPC.EXPAND_VOLUME,
    _RPC.SINGLE_NODE_MULTI_WRITER,  # SINGLE_NODE_SINGLE_WRITER is kept to one target
)


# A volume id as the node accepts it where it records one (stage, publish): what the
# controller makes (`hv1:<backend>:<heketi-id>`, base64url backend tokens) and what static
# PVs carry, at most 128 bytes as CSI allows. It ends up in state files, logs and lock keys.
_VOLUME_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._~:@=+-]{0,127}")


def check_volume_id(value: str) -> str:
    """`value` if it is a well-formed volume id, else INVALID_ARGUMENT (never echoing it)."""
    require(value, "volume_id")
    if not _VOLUME_ID.fullmatch(value):
        raise InvalidArgument(
            "volume_id is not a valid volume id (1-128 letters, digits and ._~:@=+-, "
            "starting with a letter or digit)"
        )
    return value


# Threads of the lane that resolves, creates and removes staging and target directories.
PATH_THREADS = 32
# Seconds a gluster client is given to end by itself after its last mount went (unstage).
CLIENT_EXIT_SECONDS = 5.0


@dataclass(frozen=True)
class NodeConfig:
    node_id: str
    driver_name: str
    kubelet_root: str
    gluster_log_dir: str
    gluster_log_level: str = "ERROR"
    mount_timeout: float = 60.0
    stats_timeout: float = 5.0


def mount_flags_of(capability: csi_pb2.VolumeCapability, field: str) -> list[str]:
    """Check a volume capability; return its mount flags (not yet validated)."""
    if capability.HasField("block"):
        raise InvalidArgument(
            f"{field}: block access is not supported; GlusterFS volumes are file systems "
            "(use volumeMode: Filesystem)"
        )
    if not capability.HasField("mount"):
        raise InvalidArgument(f"{field}: access type mount is required")
    if not capability.HasField("access_mode") or capability.access_mode.mode == AccessMode.UNKNOWN:
        raise InvalidArgument(f"{field}: access_mode is required")
    fs_type = capability.mount.fs_type
    if fs_type not in ("", "glusterfs"):
        raise InvalidArgument(f"{field}: fs_type {fs_type!r} is not supported (only glusterfs)")
    return list(capability.mount.mount_flags)


def _pick(key: str, publish: Mapping[str, str], volume: Mapping[str, str]) -> str:
    """A context value: the publish context (fresh from the controller) wins."""
    return publish.get(key) or volume.get(key) or ""


def gluster_source(
    volume_context: Mapping[str, str], publish_context: Mapping[str, str]
) -> tuple[str, list[str], list[str]]:
    """Volume name, hosts and backup volfile servers from the contexts."""
    volume = _pick(context_keys.VOLUME, publish_context, volume_context)
    if not volume:
        raise InvalidArgument(
            f"volume_context has no {context_keys.VOLUME!r} (the gluster volume name)"
        )
    hosts = mountopts.split_list(_pick(context_keys.HOSTS, publish_context, volume_context))
    if not hosts:
        raise InvalidArgument(
            f"neither publish_context nor volume_context has {context_keys.HOSTS!r} "
            "(gluster server hosts)"
        )
    backups = mountopts.split_list(
        _pick(context_keys.BACKUP_VOLFILE_SERVERS, publish_context, volume_context)
    )
    gid = volume_context.get(context_keys.GID, "")
    if gid and not gid.isdigit():
        raise InvalidArgument(f"volume_context {context_keys.GID!r} must be a number, not {gid!r}")
    return volume, hosts, backups


def _make_dirs(path: str) -> None:
    os.makedirs(path, exist_ok=True)


class NodeService:
    """CSI Node RPCs. Construct with `NodeService.create(config)` or inject the parts."""

    def __init__(
        self,
        config: NodeConfig,
        mounter: Mounter,
        store: StateStore,
        probe: FsProbe,
        locks: KeyedOperations,
        repairer: Repairer,
        tree: Tree | None = None,
        volfile: VolfileProber | None = None,
    ) -> None:
        """`volfile`: asks the servers' glusterd before each mount and hands the mount a
        reachable one first (None: the servers are tried in the order the volume gives)."""
        self.config = config
        self.volfile = volfile
        self.mounter = mounter
        self.store = store
        self.probe = probe
        self.locks = locks
        self.repairer = repairer
        self.tree = tree or Tree(
            config.kubelet_root, Lane("paths", PATH_THREADS), config.stats_timeout
        )

    # ---- helpers -------------------------------------------------------------------------

    def _staging(self, value: str, field: str = "staging_target_path") -> str:
        return paths.validate_staging(
            value, field, self.config.kubelet_root, self.config.driver_name
        )

    def _target(self, value: str, field: str = "target_path") -> str:
        return paths.validate_target(
            value, field, self.config.kubelet_root, self.config.driver_name
        )

    def log_file_for(self, volume: str, staging_path: str) -> str:
        digest = hashlib.sha256(staging_path.encode()).hexdigest()[:8]
        name = volume.lstrip("/").replace("/", "_")
        return os.path.join(self.config.gluster_log_dir, f"{name}-{digest}.log")

    async def _locked(self, keys: tuple[str, ...], work: Callable[[], Awaitable[T]]) -> T:
        """Run `work` holding `keys`, in a task of its own that outlives a cancelled caller;
        ABORTED when another operation holds one of them."""
        return await self.locks.run(*keys, what=f"an operation on {', '.join(keys)}", work=work)

    async def wait_idle(self) -> None:
        """Wait for mount work still running after its caller left (used at shutdown)."""
        await self.locks.drain()

    def _plan(
        self, volume: str, hosts: list[str], backups: list[str], flags: list[str], staging: str
    ) -> GlusterMount:
        return mountopts.plan_mount(
            volume,
            hosts,
            backups,
            flags,
            log_file=self.log_file_for(volume, staging),
            log_level=self.config.gluster_log_level,
        )

    async def _reachable_first(self, plan: GlusterMount, ctx: RpcContext) -> GlusterMount:
        """`plan` with the servers whose glusterd answers first (see volfile_servers)."""
        if self.volfile is None or len(plan.servers) < 2:
            return plan
        loop = asyncio.get_running_loop()
        started = loop.time()
        order = await self.volfile.order(plan.servers)
        probe_ms = round((loop.time() - started) * 1000)
        if order.none_answered:
            ctx.log.warning("no gluster server answered on its management port; mounting "
                            "in the volume's own order", servers=list(plan.servers),
                            skipped=describe(order.skipped), probe_ms=probe_ms)
            return plan
        if order.skipped:
            ctx.log.warning("skipped gluster servers that did not answer as first volfile "
                            "server", skipped=describe(order.skipped),
                            servers=list(order.servers), probe_ms=probe_ms)
        return plan.with_servers(order.servers)

    async def _unmount_after_failure(self, place: Place) -> None:
        """Take down what a failed stage or publish mounted (its own error is the answer)."""
        try:
            await self.mounter.unmount(place, self.config.mount_timeout)
        except Exception as exc:  # the RPC's own error is what the caller must see
            _log.error("cannot unmount after a failed operation", path=place.path, error=str(exc))

    # ---- stage ---------------------------------------------------------------------------

    async def NodeStageVolume(
        self, request: csi_pb2.NodeStageVolumeRequest, ctx: RpcContext
    ) -> csi_pb2.NodeStageVolumeResponse:
        volume_id = check_volume_id(request.volume_id)
        staging = self._staging(request.staging_target_path)
        paths.validate_for_helper(staging, "staging_target_path")
        if not request.HasField("volume_capability"):
            raise InvalidArgument("volume_capability is required")
        flags = mount_flags_of(request.volume_capability, "volume_capability")
        volume, hosts, backups = gluster_source(request.volume_context, request.publish_context)
        plan = self._plan(volume, hosts, backups, flags, staging)
        await self._locked(
            (volume_key(volume_id), path_key(staging)),
            lambda: self._stage(volume_id, staging, plan, ctx),
        )
        return csi_pb2.NodeStageVolumeResponse()

    async def _stage(
        self, volume_id: str, requested: str, plan: GlusterMount, ctx: RpcContext
    ) -> None:
        field = "staging_target_path"
        async with self.tree.place(
            requested, field, make_parents=True, check=self._staging
        ) as place:
            staging = paths.validate_for_helper(place.path, field)
            existing = mountinfo.mount_at(self.mounter.mounts(), staging)
            previous = self.store.get(staging)
            if (
                previous is not None
                and previous.volume_id != volume_id
                and (existing is not None or previous.targets)
            ):
                raise AlreadyExists(
                    f"{staging} is staged for volume {previous.volume_id}; cannot stage "
                    f"volume {volume_id} there"
                )
            record = StageRecord(
                volume_id=volume_id,
                staging_path=staging,
                source=plan.source,
                options=plan.options,
                log_file=self.log_file_for(plan.volume, staging),
                targets=dict(previous.targets)
                if previous and previous.volume_id == volume_id
                else {},
                stale=dict(previous.stale) if previous and previous.volume_id == volume_id
                else {},
            )
            if existing is not None:
                await self._already_staged(existing, record, plan, ctx)
                return
            plan = await self._reachable_first(plan, ctx)
            record = dataclasses.replace(record, source=plan.source, options=plan.options)
            await self.tree.mkdir(place, field)
            await asyncio.to_thread(_make_dirs, self.config.gluster_log_dir)  # local disk
            # Record first: a crash right after the mount must still leave it repairable.
            await self.store.put(record)
            group = stage_key(staging)
            try:
                # What an earlier node process left of an attempt it did not finish (its
                # mount helper runs on in the client group) goes first: one client per path.
                await self.mounter.end_group(group, 0)
                await self.mounter.unmount(place, self.config.mount_timeout)
                await self.mounter.mount_glusterfs(
                    plan.source, place, plan.options, record.log_file, self.config.mount_timeout,
                    group,
                )
                await self.repairer.follow(staging)
                ctx.log.info("staged", source=plan.source, staging_path=staging)
                if record.targets:
                    # Targets recorded from an earlier mount of this path (e.g. a repair that
                    # could not re-mount): bind them to the new mount.
                    await self.repairer.repair(record)
            except BaseException:
                # Never leave a mount behind a failed stage: kubelet will not unstage it.
                self.repairer.watch.forget(staging)
                await self._unmount_after_failure(place)
                await self._end_group_after_failure(group)
                if previous is not None:
                    await self.store.put(previous)
                else:
                    await self.store.delete(staging)
                raise

    async def _already_staged(
        self, existing: Mount, record: StageRecord, plan: GlusterMount, ctx: RpcContext
    ) -> None:
        if existing.fstype != GLUSTER_FSTYPE or volume_of_source(existing.source) != (
            plan.volume.lstrip("/")
        ):
            raise AlreadyExists(
                f"{record.staging_path} already has {existing.fstype} {existing.source} "
                f"mounted; cannot stage gluster volume {plan.volume} there"
            )
        if ("ro" in plan.options) != existing.readonly:
            raise AlreadyExists(
                f"{record.staging_path} is already staged "
                f"{'read-only' if existing.readonly else 'read-write'} with other mount flags"
            )
        known = self.store.get(record.staging_path)
        if known is None:  # staged before this driver kept records: adopt it
            await self.store.put(record)
            known = record
        if await self.repairer.repair(known) is None:
            ctx.log.info("already staged", staging_path=record.staging_path)
        if not self.repairer.watch.pids(record.staging_path):
            await self.repairer.follow(record.staging_path)

    async def NodeUnstageVolume(
        self, request: csi_pb2.NodeUnstageVolumeRequest, ctx: RpcContext
    ) -> csi_pb2.NodeUnstageVolumeResponse:
        volume_id = require(request.volume_id, "volume_id")
        staging = self._staging(request.staging_target_path)

        async def unstage() -> None:
            try:
                async with self.tree.place(
                    staging, "staging_target_path", check=self._staging
                ) as place:
                    await self._unstage_at(place, ctx)
            except ParentMissing:  # nothing there: unstaged already
                await self.store.delete(staging)

        await self._locked((volume_key(volume_id), path_key(staging)), unstage)
        return csi_pb2.NodeUnstageVolumeResponse()

    async def _unstage_at(self, place: Place, ctx: RpcContext) -> None:
        """Unmount the staging mount, end its client, then forget the record (in this order:
        a crash in between leaves a record, which the next node process squares)."""
        self.repairer.forget(place.path)
        stage = mountinfo.mount_at(self.mounter.mounts(), place.path)
        if await self.mounter.unmount(place, self.config.mount_timeout):
            ctx.log.info("unstaged", staging_path=place.path)
        left = [] if stage is None else mountinfo.binds_of(self.mounter.mounts(), stage)
        if left:
            # Unpublish did not come first (CSI says it must): the client still serves these.
            ctx.log.warning("binds of an unstaged volume are still mounted; its gluster client "
                            "is left to serve them", mounts=[m.mount_point for m in left])
        else:
            # The client ends by itself once its last mount is gone; whatever is left goes.
            await self.mounter.end_group(stage_key(place.path), CLIENT_EXIT_SECONDS)
        await self.store.delete(place.path)

    async def _end_group_after_failure(self, group: str) -> None:
        try:
            await self.mounter.end_group(group, 0)
        except Exception as exc:  # the RPC's own error is what the caller must see
            _log.error("cannot end a client group after a failed stage", group=group,
                       error=str(exc))

    # ---- publish -------------------------------------------------------------------------

    async def NodePublishVolume(
        self, request: csi_pb2.NodePublishVolumeRequest, ctx: RpcContext
    ) -> csi_pb2.NodePublishVolumeResponse:
        volume_id = check_volume_id(request.volume_id)
        target = self._target(request.target_path)
        if not request.HasField("volume_capability"):
            raise InvalidArgument("volume_capability is required")
        mount_flags_of(request.volume_capability, "volume_capability")
        if not request.staging_target_path:
            raise InvalidArgument(
                "staging_target_path is required (this driver stages volumes: STAGE_UNSTAGE_VOLUME)"
            )
        staging = self._staging(request.staging_target_path)
        if target == staging:
            raise InvalidArgument("target_path must differ from staging_target_path")
        mode = request.volume_capability.access_mode.mode
        readonly = request.readonly or mode in _READER_ONLY
        if mode != AccessMode.SINGLE_NODE_SINGLE_WRITER:
            await self._locked(
                (path_key(target),),
                lambda: self._publish(volume_id, staging, target, readonly, ctx),
            )
            return csi_pb2.NodePublishVolumeResponse()

        async def publish_once() -> None:
            # Holding the staging path too: no other publish of the volume runs meanwhile.
            record = self.store.get(staging)
            elsewhere = sorted(t for t in (record.targets if record else {}) if t != target)
            if elsewhere:
                raise FailedPrecondition(
                    f"volume {volume_id} has access mode SINGLE_NODE_SINGLE_WRITER and is "
                    f"already published at {elsewhere[0]}; it can be published at one target "
                    "only")
            await self._publish(volume_id, staging, target, readonly, ctx)

        await self._locked((path_key(target), path_key(staging)), publish_once)
        return csi_pb2.NodePublishVolumeResponse()

    async def _publish(
        self, volume_id: str, staging_path: str, target_path: str, readonly: bool, ctx: RpcContext
    ) -> None:
        try:
            async with self.tree.place(
                staging_path, "staging_target_path", check=self._staging
            ) as staged:
                try:
                    async with self.tree.place(
                        target_path, "target_path", check=self._target
                    ) as target:
                        await self._publish_at(volume_id, staged, target, readonly, ctx)
                except ParentMissing as exc:  # kubelet makes the target's parent
                    raise FailedPrecondition(exc.message) from None
        except ParentMissing:
            raise FailedPrecondition(
                f"volume {volume_id} is not staged at {staging_path}"
            ) from None

    async def _publish_at(
        self, volume_id: str, staged: Place, target: Place, readonly: bool, ctx: RpcContext
    ) -> None:
        if target.path == staged.path:
            raise InvalidArgument("target_path and staging_target_path are the same directory")
        mounts = self.mounter.mounts()
        stage = mountinfo.mount_at(mounts, staged.path)
        if stage is None or stage.fstype != GLUSTER_FSTYPE:
            raise FailedPrecondition(f"volume {volume_id} is not staged at {staged.path}")
        existing = mountinfo.mount_at(mounts, target.path)
        if existing is not None:
            if existing.same_origin(stage):
                if existing.readonly != readonly:
                    raise AlreadyExists(
                        f"{target.path} is already published "
                        f"{'read-only' if existing.readonly else 'read-write'}"
                    )
                await self._remember_target(volume_id, staged.path, stage, target.path, readonly)
                ctx.log.info("already published", target_path=target.path)
                return
            same_volume = existing.fstype == GLUSTER_FSTYPE and volume_of_source(
                existing.source
            ) == volume_of_source(stage.source)
            if not same_volume:
                raise AlreadyExists(
                    f"{target.path} already has {existing.fstype} {existing.source} mounted"
                )
            # A bind of an earlier mount of this volume (the stage was re-mounted): bind the
            # current one on top, where running containers that receive mounts see it.
            if entangled(existing, mounts, readonly):
                await self.mounter.unmount(target, self.config.mount_timeout)
        await self.tree.mkdir(target, "target_path")
        await self.mounter.bind(staged, target, readonly, self.config.mount_timeout)
        try:
            await self._remember_target(volume_id, staged.path, stage, target.path, readonly)
        except BaseException:
            # Never leave a mount behind a failed publish: kubelet will not unpublish it.
            await self._unmount_after_failure(target)
            raise
        ctx.log.info("published", target_path=target.path, readonly=readonly)

    async def _remember_target(
        self, volume_id: str, staging: str, stage: Mount, target: str, readonly: bool
    ) -> None:
        if self.store.get(staging) is None:
            # Staged before this driver kept records: record what mountinfo says.
            volume = volume_of_source(stage.source)
            server = stage.source.rpartition(":")[0]
            plan = self._plan(volume, [server], [], [], staging)
            await self.store.put(
                StageRecord(
                    volume_id,
                    staging,
                    stage.source,
                    plan.options,
                    self.log_file_for(volume, staging),
                )
            )
        await self.store.add_target(staging, target, readonly)

    async def NodeUnpublishVolume(
        self, request: csi_pb2.NodeUnpublishVolumeRequest, ctx: RpcContext
    ) -> csi_pb2.NodeUnpublishVolumeResponse:
        require(request.volume_id, "volume_id")
        target = self._target(request.target_path)

        async def unpublish() -> None:
            try:
                async with self.tree.place(target, "target_path", check=self._target) as place:
                    if await self.mounter.unmount(place, self.config.mount_timeout):
                        ctx.log.info("unpublished", target_path=place.path)
                    await self.tree.rmdir(place, "target_path")
                    await self.store.remove_target(place.path)
            except ParentMissing:  # nothing there: unpublished already
                await self.store.remove_target(target)

        await self._locked((path_key(target),), unpublish)
        return csi_pb2.NodeUnpublishVolumeResponse()

    # ---- stats and expansion -------------------------------------------------------------

    async def _mounted_volume(self, volume_id: str, path: str) -> Mount:
        """The gluster mount at `path`, or NotFound."""
        try:
            paths.validate(path, "volume_path", self.config.kubelet_root)
        except InvalidArgument as exc:
            raise NotFound(f"no volume at {path!r}: {exc.message}") from None
        mount = mountinfo.mount_at(self.mounter.mounts(), path)
        if mount is None:
            exists = await self.probe.exists(path)
            if exists is None:
                raise NotFound(
                    f"nothing is mounted at {path} (and looking at it did not answer within "
                    f"{self.probe.seconds:g} s: a hung mount?)"
                )
            raise NotFound(f"nothing is mounted at {path}" if exists else f"{path} does not exist")
        if mount.fstype != GLUSTER_FSTYPE:
            raise NotFound(f"{path} holds {mount.fstype}, not a glusterfs volume")
        record = self.store.get(path) or self.store.owner_of_target(path)
        if record is not None and record.volume_id != volume_id:
            raise NotFound(f"{path} holds volume {record.volume_id}, not {volume_id}")
        return mount

    async def _probe_mounted(self, volume_id: str, path: str) -> Probe:
        """statvfs of the volume mounted at `path` (off the loop, with a timeout)."""
        await self._mounted_volume(volume_id, path)
        try:
            return await self.probe.probe(path)
        except PathMissing:
            raise NotFound(f"{path} does not exist") from None

    async def NodeGetVolumeStats(
        self, request: csi_pb2.NodeGetVolumeStatsRequest, ctx: RpcContext
    ) -> csi_pb2.NodeGetVolumeStatsResponse:
        volume_id = require(request.volume_id, "volume_id")
        path = require(request.volume_path, "volume_path")
        await self._mounted_volume(volume_id, path)
        record = self.store.get(path) or self.store.owner_of_target(path)
        try:
            # A stopped client is said at once, a hung mount within the health timeout.
            probe = await self.repairer.health(path, record.staging_path if record else None)
        except PathMissing:
            raise NotFound(f"{path} does not exist") from None
        if probe.usage is None:
            return csi_pb2.NodeGetVolumeStatsResponse(
                volume_condition=csi_pb2.VolumeCondition(
                    abnormal=True, message=probe.abnormal or "abnormal"
                )
            )
        usage = probe.usage
        Unit = csi_pb2.VolumeUsage.Unit
        stale = record.stale.get(path) if record is not None else None
        if stale is not None:
            condition = csi_pb2.VolumeCondition(abnormal=True, message=stale[1])
        elif probe.abnormal is not None:  # answers, but degraded (bricks unreachable)
            condition = csi_pb2.VolumeCondition(abnormal=True, message=probe.abnormal)
        else:
            condition = csi_pb2.VolumeCondition(abnormal=False, message="volume is healthy")
        return csi_pb2.NodeGetVolumeStatsResponse(
            usage=[
                csi_pb2.VolumeUsage(
                    unit=Unit.BYTES,
                    total=usage.total_bytes,
                    available=usage.available_bytes,
                    used=usage.used_bytes,
                ),
                csi_pb2.VolumeUsage(
                    unit=Unit.INODES,
                    total=usage.total_inodes,
                    available=usage.free_inodes,
                    used=usage.used_inodes,
                ),
            ],
            volume_condition=condition,
        )

    async def NodeExpandVolume(
        self, request: csi_pb2.NodeExpandVolumeRequest, ctx: RpcContext
    ) -> csi_pb2.NodeExpandVolumeResponse:
        """Nothing to do on the node (a gluster volume grows on its servers); answer the
        capacity the mount shows now."""
        volume_id = require(request.volume_id, "volume_id")
        path = require(request.volume_path, "volume_path")
        if request.HasField("volume_capability"):
            mount_flags_of(request.volume_capability, "volume_capability")
        probe = await self._probe_mounted(volume_id, path)
        if probe.usage is None:
            raise Unavailable(f"cannot read the capacity of {path}: {probe.abnormal}")
        return csi_pb2.NodeExpandVolumeResponse(capacity_bytes=probe.usage.total_bytes)

    # ---- node information ----------------------------------------------------------------

    async def NodeGetCapabilities(
        self, request: csi_pb2.NodeGetCapabilitiesRequest, ctx: RpcContext
    ) -> csi_pb2.NodeGetCapabilitiesResponse:
        return csi_pb2.NodeGetCapabilitiesResponse(
            capabilities=[
                csi_pb2.NodeServiceCapability(rpc=_RPC(type=kind)) for kind in CAPABILITIES
            ]
        )

    async def NodeGetInfo(
        self, request: csi_pb2.NodeGetInfoRequest, ctx: RpcContext
    ) -> csi_pb2.NodeGetInfoResponse:
        return csi_pb2.NodeGetInfoResponse(node_id=self.config.node_id)
