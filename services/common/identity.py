"""The CSI Identity service, shared by the controller and node processes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from google.protobuf.wrappers_pb2 import BoolValue

from services.common.proto import csi_pb2
from services.common.rpc import RpcContext
from services.common.version import package_version


class IdentityService:
    """GetPluginInfo, GetPluginCapabilities and Probe for one process."""

    def __init__(
        self,
        driver_name: str,
        capabilities: Sequence[csi_pb2.PluginCapability],
        readiness: Callable[[], Awaitable[bool]],
    ) -> None:
        self._name = driver_name
        self._capabilities = list(capabilities)
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


def service_capability(kind: int) -> csi_pb2.PluginCapability:
    """A PluginCapability for a `csi_pb2.PluginCapability.Service.Type` value."""
    return csi_pb2.PluginCapability(service=csi_pb2.PluginCapability.Service(type=kind))  # type: ignore[arg-type]


def expansion_capability(kind: int) -> csi_pb2.PluginCapability:
    """A PluginCapability for a `csi_pb2.PluginCapability.VolumeExpansion.Type` value."""
    return csi_pb2.PluginCapability(
        volume_expansion=csi_pb2.PluginCapability.VolumeExpansion(type=kind)  # type: ignore[arg-type]
    )
