"""The CSI Identity service, shared by the controller and node processes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from google.protobuf.wrappers_pb2 import BoolValue

from services.common.proto import csi_grpc, csi_pb2
from services.common.rpc import RpcContext, Servable, servable
from services.common.version import package_version


class IdentityService:
    """GetPluginInfo, GetPluginCapabilities and Probe for one process.

    The CSI spec wants every instance of a plugin to report the same capabilities, whichever
    RPCs it serves: the controller and the node process both report `plugin_capabilities()`.
    """

    def __init__(
        self,
        driver_name: str,
        readiness: Callable[[], Awaitable[bool]],
        capabilities: Sequence[csi_pb2.PluginCapability] | None = None,
    ) -> None:
        self._name = driver_name
        self._capabilities = list(plugin_capabilities() if capabilities is None else capabilities)
        self._readiness = readiness

    async def GetPluginInfo(
        self, request: csi_pb2.GetPluginInfoRequest, ctx: RpcContext
    ) -> csi_pb2.GetPluginInfoResponse:
        return csi_pb2.GetPluginInfoResponse(name=self._name, vendor_version=package_version())

    async def GetPluginCapabilities(
        self, request: csi_pb2.GetPluginCapabilitiesRequest, ctx: RpcContext
    ) -> csi_pb2.GetPluginCapabilitiesResponse:
        return csi_pb2.GetPluginCapabilitiesResponse(capabilities=self._capabilities)

    async def Probe(self, request: csi_pb2.ProbeRequest, ctx: RpcContext) -> csi_pb2.ProbeResponse:
        return csi_pb2.ProbeResponse(ready=BoolValue(value=await self._readiness()))


def plugin_capabilities() -> list[csi_pb2.PluginCapability]:
    """What heketi-csi as a whole provides: a controller, and online volume expansion."""
    return [
        service_capability(csi_pb2.PluginCapability.Service.CONTROLLER_SERVICE),
        expansion_capability(csi_pb2.PluginCapability.VolumeExpansion.ONLINE),
    ]


def csi_servables(
    identity: IdentityService, *, controller: object | None = None, node: object | None = None
) -> list[Servable]:
    """Servables for every CSI service; those a process does not provide answer UNIMPLEMENTED
    (rather than a bare HTTP/2 error that clients report as UNKNOWN)."""
    empty = object()
    return [
        servable(identity, csi_grpc.IdentityBase),
        servable(controller or empty, csi_grpc.ControllerBase),
        servable(node or empty, csi_grpc.NodeBase),
        servable(empty, csi_grpc.GroupControllerBase),
        servable(empty, csi_grpc.SnapshotMetadataBase),
    ]


def service_capability(kind: int) -> csi_pb2.PluginCapability:
    """A PluginCapability for a `csi_pb2.PluginCapability.Service.Type` value."""
    return csi_pb2.PluginCapability(service=csi_pb2.PluginCapability.Service(type=kind))  # type: ignore[arg-type]


def expansion_capability(kind: int) -> csi_pb2.PluginCapability:
    """A PluginCapability for a `csi_pb2.PluginCapability.VolumeExpansion.Type` value."""
    return csi_pb2.PluginCapability(
        volume_expansion=csi_pb2.PluginCapability.VolumeExpansion(type=kind)  # type: ignore[arg-type]
    )
