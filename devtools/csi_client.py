"""A small typed async client of a CSI driver's unix socket, and a CLI for a few calls.

The demo, the integration tests and the benchmarks use `CsiClient` to call the driver the way
the sidecars and kubelet do, without spelling out request messages each time:

    async with CsiClient(cluster.controller_socket) as csi:
        volume = await csi.create_volume("pvc-1", 1 * GIB)

Errors are grpclib's `GRPCError` (`exc.status` is a `grpclib.const.Status`);
`is_unimplemented(exc)` tells an RPC the driver does not offer.

CLI (`python -m devtools.csi_client --endpoint unix:///path/csi.sock COMMAND`):
`info`, `create NAME SIZE_GIB [--param key=value ...]`, `list`, `delete VOLUME_ID`.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TypeVar

from grpclib.client import Channel
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from services.common.config import unix_socket_path
from services.common.proto import csi_grpc, csi_pb2

GIB = 1 << 30
AccessMode = csi_pb2.VolumeCapability.AccessMode
DEFAULT_TIMEOUT = 120.0
T = TypeVar("T")


def is_unimplemented(exc: BaseException) -> bool:
    """Whether `exc` is the driver's answer that it does not implement the RPC."""
    return isinstance(exc, GRPCError) and exc.status is Status.UNIMPLEMENTED


def mount_capability(
    mode: AccessMode.Mode.ValueType = AccessMode.MULTI_NODE_MULTI_WRITER,
    mount_flags: Sequence[str] = (),
) -> csi_pb2.VolumeCapability:
    """A filesystem (mount) volume capability, as external-provisioner sends for a PVC."""
    return csi_pb2.VolumeCapability(
        mount=csi_pb2.VolumeCapability.MountVolume(mount_flags=list(mount_flags)),
        access_mode=AccessMode(mode=mode),
    )


def socket_path(endpoint: str | Path) -> Path:
    """`unix:///abs/path`, `/abs/path` or a Path: the socket's filesystem path."""
    return endpoint if isinstance(endpoint, Path) else unix_socket_path(endpoint)


class CsiClient:
    """Identity, Controller and Node stubs on one unix socket, with typed helper calls.

    Every call has a deadline (`timeout`, seconds, per call). The raw stubs are available as
    `identity`, `controller` and `node` for requests the helpers do not cover.
    """

    def __init__(self, endpoint: str | Path, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.path = socket_path(endpoint)
        self.timeout = timeout
        self.channel = Channel(path=str(self.path))
        self.identity = csi_grpc.IdentityStub(self.channel)
        self.controller = csi_grpc.ControllerStub(self.channel)
        self.node = csi_grpc.NodeStub(self.channel)

    async def __aenter__(self) -> CsiClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self.channel.close()

    # --- Identity ---------------------------------------------------------------------------
    async def plugin_info(self) -> csi_pb2.GetPluginInfoResponse:
        return await self.identity.GetPluginInfo(csi_pb2.GetPluginInfoRequest(),
                                                 timeout=self.timeout)

    async def plugin_capabilities(self) -> csi_pb2.GetPluginCapabilitiesResponse:
        return await self.identity.GetPluginCapabilities(
            csi_pb2.GetPluginCapabilitiesRequest(), timeout=self.timeout)

    async def probe(self) -> bool:
        reply = await self.identity.Probe(csi_pb2.ProbeRequest(), timeout=self.timeout)
        return reply.ready.value if reply.HasField("ready") else True

    # --- Controller -------------------------------------------------------------------------
    async def controller_capabilities(self) -> list[int]:
        reply = await self.controller.ControllerGetCapabilities(
            csi_pb2.ControllerGetCapabilitiesRequest(), timeout=self.timeout)
        return [c.rpc.type for c in reply.capabilities]

    async def create_volume(
        self, name: str, size_bytes: int, *,
        parameters: Mapping[str, str] | None = None,
        capability: csi_pb2.VolumeCapability | None = None,
        from_snapshot: str | None = None,
        from_volume: str | None = None,
        secrets: Mapping[str, str] | None = None,
    ) -> csi_pb2.Volume:
        request = csi_pb2.CreateVolumeRequest(
            name=name,
            capacity_range=csi_pb2.CapacityRange(required_bytes=size_bytes),
            volume_capabilities=[capability or mount_capability()],
            parameters=dict(parameters or {}),
            secrets=dict(secrets or {}),
        )
        if from_snapshot:
            request.volume_content_source.snapshot.snapshot_id = from_snapshot
        elif from_volume:
            request.volume_content_source.volume.volume_id = from_volume
        reply = await self.controller.CreateVolume(request, timeout=self.timeout)
        return reply.volume

    async def delete_volume(self, volume_id: str,
                            secrets: Mapping[str, str] | None = None) -> None:
        await self.controller.DeleteVolume(
            csi_pb2.DeleteVolumeRequest(volume_id=volume_id, secrets=dict(secrets or {})),
            timeout=self.timeout)

    async def controller_publish(
        self, volume_id: str, node_id: str, *,
        capability: csi_pb2.VolumeCapability | None = None, readonly: bool = False,
    ) -> dict[str, str]:
        reply = await self.controller.ControllerPublishVolume(
            csi_pb2.ControllerPublishVolumeRequest(
                volume_id=volume_id, node_id=node_id,
                volume_capability=capability or mount_capability(), readonly=readonly),
            timeout=self.timeout)
        return dict(reply.publish_context)

    async def controller_unpublish(self, volume_id: str, node_id: str) -> None:
        await self.controller.ControllerUnpublishVolume(
            csi_pb2.ControllerUnpublishVolumeRequest(volume_id=volume_id, node_id=node_id),
            timeout=self.timeout)

    async def expand_volume(
        self, volume_id: str, size_bytes: int,
    ) -> csi_pb2.ControllerExpandVolumeResponse:
        return await self.controller.ControllerExpandVolume(
            csi_pb2.ControllerExpandVolumeRequest(
                volume_id=volume_id,
                capacity_range=csi_pb2.CapacityRange(required_bytes=size_bytes),
                volume_capability=mount_capability()),
            timeout=self.timeout)

    async def get_volume(self, volume_id: str) -> csi_pb2.ControllerGetVolumeResponse:
        return await self.controller.ControllerGetVolume(
            csi_pb2.ControllerGetVolumeRequest(volume_id=volume_id), timeout=self.timeout)

    async def list_volumes(self, page_size: int = 0) -> list[csi_pb2.Volume]:
        """Every volume, following next_token through all pages."""
        volumes: list[csi_pb2.Volume] = []
        token = ""
        while True:
            reply = await self.controller.ListVolumes(
                csi_pb2.ListVolumesRequest(max_entries=page_size, starting_token=token),
                timeout=self.timeout)
            volumes.extend(e.volume for e in reply.entries)
            token = reply.next_token
            if not token:
                return volumes

    async def create_snapshot(self, name: str, source_volume_id: str) -> csi_pb2.Snapshot:
        reply = await self.controller.CreateSnapshot(
            csi_pb2.CreateSnapshotRequest(name=name, source_volume_id=source_volume_id),
            timeout=self.timeout)
        return reply.snapshot

    async def delete_snapshot(self, snapshot_id: str) -> None:
        await self.controller.DeleteSnapshot(
            csi_pb2.DeleteSnapshotRequest(snapshot_id=snapshot_id), timeout=self.timeout)

    async def list_snapshots(self, source_volume_id: str = "",
                             snapshot_id: str = "") -> list[csi_pb2.Snapshot]:
        snapshots: list[csi_pb2.Snapshot] = []
        token = ""
        while True:
            reply = await self.controller.ListSnapshots(
                csi_pb2.ListSnapshotsRequest(source_volume_id=source_volume_id,
                                             snapshot_id=snapshot_id, starting_token=token),
                timeout=self.timeout)
            snapshots.extend(e.snapshot for e in reply.entries)
            token = reply.next_token
            if not token:
                return snapshots

    # --- Node -------------------------------------------------------------------------------
    async def node_info(self) -> csi_pb2.NodeGetInfoResponse:
        return await self.node.NodeGetInfo(csi_pb2.NodeGetInfoRequest(), timeout=self.timeout)

    async def node_capabilities(self) -> list[int]:
        reply = await self.node.NodeGetCapabilities(csi_pb2.NodeGetCapabilitiesRequest(),
                                                    timeout=self.timeout)
        return [c.rpc.type for c in reply.capabilities]

    async def stage(
        self, volume_id: str, staging_path: str | Path, *,
        volume_context: Mapping[str, str] | None = None,
        publish_context: Mapping[str, str] | None = None,
        capability: csi_pb2.VolumeCapability | None = None,
    ) -> None:
        await self.node.NodeStageVolume(
            csi_pb2.NodeStageVolumeRequest(
                volume_id=volume_id, staging_target_path=str(staging_path),
                publish_context=dict(publish_context or {}),
                volume_context=dict(volume_context or {}),
                volume_capability=capability or mount_capability()),
            timeout=self.timeout)

    async def unstage(self, volume_id: str, staging_path: str | Path) -> None:
        await self.node.NodeUnstageVolume(
            csi_pb2.NodeUnstageVolumeRequest(volume_id=volume_id,
                                             staging_target_path=str(staging_path)),
            timeout=self.timeout)

    async def publish(
        self, volume_id: str, staging_path: str | Path, target_path: str | Path, *,
        volume_context: Mapping[str, str] | None = None,
        publish_context: Mapping[str, str] | None = None,
        capability: csi_pb2.VolumeCapability | None = None,
        readonly: bool = False,
    ) -> None:
        await self.node.NodePublishVolume(
            csi_pb2.NodePublishVolumeRequest(
                volume_id=volume_id, staging_target_path=str(staging_path),
                target_path=str(target_path),
                publish_context=dict(publish_context or {}),
                volume_context=dict(volume_context or {}),
                volume_capability=capability or mount_capability(), readonly=readonly),
            timeout=self.timeout)

    async def unpublish(self, volume_id: str, target_path: str | Path) -> None:
        await self.node.NodeUnpublishVolume(
            csi_pb2.NodeUnpublishVolumeRequest(volume_id=volume_id,
                                               target_path=str(target_path)),
            timeout=self.timeout)

    async def volume_stats(self, volume_id: str,
                           volume_path: str | Path) -> csi_pb2.NodeGetVolumeStatsResponse:
        return await self.node.NodeGetVolumeStats(
            csi_pb2.NodeGetVolumeStatsRequest(volume_id=volume_id, volume_path=str(volume_path)),
            timeout=self.timeout)

    async def node_expand(
        self, volume_id: str, volume_path: str | Path, size_bytes: int,
        staging_path: str | Path = "",
    ) -> csi_pb2.NodeExpandVolumeResponse:
        return await self.node.NodeExpandVolume(
            csi_pb2.NodeExpandVolumeRequest(
                volume_id=volume_id, volume_path=str(volume_path),
                staging_target_path=str(staging_path),
                capacity_range=csi_pb2.CapacityRange(required_bytes=size_bytes),
                volume_capability=mount_capability()),
            timeout=self.timeout)


# --- CLI ------------------------------------------------------------------------------------
def _enum_name(enum: object, value: int) -> str:
    name = getattr(enum, "Name", None)
    try:
        return str(name(value)) if name else str(value)
    except ValueError:
        return str(value)


def _print_volume(volume: csi_pb2.Volume) -> None:
    print(f"{volume.volume_id}  {volume.capacity_bytes / GIB:g} GiB")
    for key, value in sorted(volume.volume_context.items()):
        print(f"    {key}={value}")


def _not_served(exc: GRPCError) -> bool:
    # A service the server does not register at all (e.g. Controller on the node socket)
    # makes grpclib's server answer trailers-only without a content-type, which grpclib's
    # client reports as UNKNOWN instead of the UNIMPLEMENTED the server sent.
    return is_unimplemented(exc) or (exc.status is Status.UNKNOWN
                                      and "content-type" in (exc.message or ""))


async def _optional(call: Awaitable[T]) -> T | None:
    """Await `call`; None when the socket does not serve that RPC."""
    try:
        return await call
    except GRPCError as exc:
        if _not_served(exc):
            return None
        raise


async def _info(csi: CsiClient) -> None:
    info = await csi.plugin_info()
    print(f"driver    {info.name} {info.vendor_version}")
    print(f"ready     {await csi.probe()}")
    plugin_caps = await csi.plugin_capabilities()
    names = []
    for cap in plugin_caps.capabilities:
        if cap.HasField("service"):
            names.append(_enum_name(csi_pb2.PluginCapability.Service.Type, cap.service.type))
        elif cap.HasField("volume_expansion"):
            names.append("VOLUME_EXPANSION_" + _enum_name(
                csi_pb2.PluginCapability.VolumeExpansion.Type, cap.volume_expansion.type))
    print(f"plugin    {', '.join(names) or '-'}")
    rpc = csi_pb2.ControllerServiceCapability.RPC.Type
    controller = await _optional(csi.controller_capabilities())
    if controller is not None:
        print(f"controller {', '.join(_enum_name(rpc, c) for c in controller) or '-'}")
    node_rpc = csi_pb2.NodeServiceCapability.RPC.Type
    node = await _optional(csi.node_capabilities())
    if node is not None:
        print(f"node      {', '.join(_enum_name(node_rpc, c) for c in node) or '-'}")
        node_info = await csi.node_info()
        print(f"node id   {node_info.node_id}")


def _parameters(items: Sequence[str]) -> dict[str, str]:
    params: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"--param {item!r}: use key=value")
        params[key] = value
    return params


async def _run(args: argparse.Namespace) -> int:
    async with CsiClient(args.endpoint, timeout=args.timeout) as csi:
        if args.command == "info":
            await _info(csi)
        elif args.command == "create":
            volume = await csi.create_volume(args.name, args.size_gib * GIB,
                                             parameters=_parameters(args.param))
            _print_volume(volume)
        elif args.command == "list":
            volumes = await csi.list_volumes()
            for volume in volumes:
                _print_volume(volume)
            print(f"{len(volumes)} volume(s)")
        elif args.command == "delete":
            await csi.delete_volume(args.volume_id)
            print(f"deleted {args.volume_id}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.csi_client",
        description="Call a CSI driver over its unix socket (a few calls; see `make up`).")
    parser.add_argument("--endpoint", required=True,
                        help="the driver's socket: unix:///path/csi.sock or /path/csi.sock")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT,
                        help="deadline of each call in seconds")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("info", help="plugin name, readiness and capabilities (and node id)")
    create = sub.add_parser("create", help="CreateVolume")
    create.add_argument("name")
    create.add_argument("size_gib", type=int, metavar="SIZE_GIB")
    create.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                        help="StorageClass parameter, e.g. volumetype=replicate:3 (repeatable)")
    sub.add_parser("list", help="ListVolumes (all pages)")
    delete = sub.add_parser("delete", help="DeleteVolume")
    delete.add_argument("volume_id", metavar="VOLUME_ID")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return asyncio.run(_run(args))
    except GRPCError as exc:
        print(f"error: {exc.status.name}: {exc.message}", file=sys.stderr)
        return 1
    except (OSError, ConnectionError) as exc:
        print(f"error: cannot reach {args.endpoint}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
