"""The kubelet plugin-registration service: GetInfo and NotifyRegistrationStatus."""

from __future__ import annotations

from collections.abc import Callable

from services.common.proto.pluginregistration import api_pb2
from services.common.rpc import RpcContext
from services.registrar.metrics import REGISTERED, REGISTRATIONS

PLUGIN_TYPE = "CSIPlugin"
# Versions of the kubelet registration API for CSI plugins that we speak.
SUPPORTED_VERSIONS = ("1.0.0",)


class RegistrationService:
    """What kubelet's plugin watcher asks the registration socket.

    `on_rejected` is called with kubelet's error after a failed registration has been
    answered; the process then stops with exit code 1 so that the container restarts and
    registration is tried again.
    """

    def __init__(self, driver_name: str, endpoint: str,
                 on_rejected: Callable[[str], None]) -> None:
        self.driver_name = driver_name
        self.endpoint = endpoint
        self._on_rejected = on_rejected

    async def GetInfo(self, request: api_pb2.InfoRequest, ctx: RpcContext) -> api_pb2.PluginInfo:
        return api_pb2.PluginInfo(
            type=PLUGIN_TYPE,
            name=self.driver_name,
            endpoint=self.endpoint,
            supported_versions=SUPPORTED_VERSIONS,
        )

    async def NotifyRegistrationStatus(
        self, request: api_pb2.RegistrationStatus, ctx: RpcContext
    ) -> api_pb2.RegistrationStatusResponse:
        if request.plugin_registered:
            REGISTERED.set(1)
            REGISTRATIONS.labels("registered").inc()
            ctx.log.info("kubelet registered the plugin", driver=self.driver_name,
                         endpoint=self.endpoint)
        else:
            REGISTERED.set(0)
            REGISTRATIONS.labels("rejected").inc()
            ctx.log.error("kubelet rejected the plugin registration; exiting so that the "
                          "container restarts and registration is tried again",
                          driver=self.driver_name, kubelet_error=request.error)
            self._on_rejected(request.error)
        return api_pb2.RegistrationStatusResponse()
