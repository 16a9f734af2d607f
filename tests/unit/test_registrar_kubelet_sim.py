"""The kubelet simulator against plugins in this process: it must judge like kubelet does."""

from __future__ import annotations

import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from grpclib.server import Server

from devtools.kubelet_sim import KubeletSimulator
from services.common.proto import csi_grpc, csi_pb2
from services.common.proto.pluginregistration import api_grpc, api_pb2
from services.common.rpc import RpcContext, servable

DRIVER = "glusterfs.heketi.csi.io"


@pytest.fixture
def sockdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="hcsi-sim-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


class Node:
    def __init__(self, node_id: str) -> None:
        self.node_id = node_id

    async def NodeGetInfo(self, request: csi_pb2.NodeGetInfoRequest,
                          ctx: RpcContext) -> csi_pb2.NodeGetInfoResponse:
        return csi_pb2.NodeGetInfoResponse(node_id=self.node_id)


class Registration:
    """A registration socket that says what it is told and records kubelet's verdicts."""

    def __init__(self, info: api_pb2.PluginInfo) -> None:
        self.info = info
        self.verdicts: list[tuple[bool, str]] = []

    async def GetInfo(self, request: api_pb2.InfoRequest, ctx: RpcContext) -> api_pb2.PluginInfo:
        return self.info

    async def NotifyRegistrationStatus(
        self, request: api_pb2.RegistrationStatus, ctx: RpcContext
    ) -> api_pb2.RegistrationStatusResponse:
        self.verdicts.append((request.plugin_registered, request.error))
        return api_pb2.RegistrationStatusResponse()


class Plugin:
    """A node plugin socket (NodeGetInfo) and its registration socket, in this process."""

    def __init__(self, sockdir: Path, info: api_pb2.PluginInfo | None = None,
                 node_id: str = "node-a") -> None:
        self.csi = sockdir / "csi.sock"
        self.reg_dir = sockdir / "registry"
        self.reg_path = self.reg_dir / f"{DRIVER}-reg.sock"
        self.registration = Registration(info or api_pb2.PluginInfo(
            type="CSIPlugin", name=DRIVER, endpoint=str(self.csi),
            supported_versions=["1.0.0"]))
        self.node_id = node_id
        self.servers: list[Server] = []

    async def start_node(self) -> None:
        server = Server([servable(Node(self.node_id), csi_grpc.NodeBase)])
        await server.start(path=str(self.csi))
        self.servers.append(server)

    async def start_registration(self) -> None:
        self.reg_dir.mkdir(exist_ok=True)
        server = Server([servable(self.registration, api_grpc.RegistrationBase)])
        await server.start(path=str(self.reg_path))
        self.servers.append(server)

    async def close(self) -> None:
        for server in self.servers:
            server.close()
            await server.wait_closed()


async def run_sim(plugin: Plugin, reject: str | None = None,
                  kind: str = "registered") -> KubeletSimulator:
    async with KubeletSimulator(plugin.reg_dir, reject, poll_interval=0.05) as sim:
        await sim.wait_event(kind, DRIVER, 1, timeout=5)
    return sim


async def test_registers_and_records_the_node_id(sockdir: Path) -> None:
    plugin = Plugin(sockdir)
    await plugin.start_node()
    await plugin.start_registration()
    try:
        sim = await run_sim(plugin)
        assert sim.registered == {DRIVER: "node-a"}
        assert plugin.registration.verdicts == [(True, "")]
    finally:
        await plugin.close()


@pytest.mark.parametrize(("info", "error"), [
    (api_pb2.PluginInfo(type="DevicePlugin", name=DRIVER, supported_versions=["1.0.0"]),
     "no handler registered for plugin type: DevicePlugin"),
    (api_pb2.PluginInfo(type="CSIPlugin", name=DRIVER, supported_versions=["0.3.0"]),
     "1.0.0"),
    (api_pb2.PluginInfo(type="CSIPlugin", name="", supported_versions=["1.0.0"]),
     "empty name"),
])
async def test_refuses_what_kubelet_refuses(sockdir: Path, info: api_pb2.PluginInfo,
                                            error: str) -> None:
    plugin = Plugin(sockdir, info)
    await plugin.start_node()
    await plugin.start_registration()
    try:
        async with KubeletSimulator(plugin.reg_dir, poll_interval=0.05) as sim:
            await sim.wait_for(lambda: bool(plugin.registration.verdicts), 5)
        assert sim.registered == {}
        [(registered, message)] = plugin.registration.verdicts
        assert not registered and error in message
    finally:
        await plugin.close()


async def test_a_node_plugin_that_does_not_answer_is_refused(sockdir: Path) -> None:
    plugin = Plugin(sockdir)  # no node server: NodeGetInfo cannot connect
    await plugin.start_registration()
    try:
        sim = await run_sim(plugin, kind="rejected")
        assert sim.registered == {}
        [(registered, message)] = plugin.registration.verdicts
        assert not registered and "NodeGetInfo" in message and str(plugin.csi) in message
    finally:
        await plugin.close()


async def test_reject_mode_refuses_with_the_given_reason(sockdir: Path) -> None:
    plugin = Plugin(sockdir)
    await plugin.start_node()
    await plugin.start_registration()
    try:
        sim = await run_sim(plugin, reject="node is cordoned", kind="rejected")
        assert sim.registered == {}
        assert plugin.registration.verdicts == [(False, "node is cordoned")]
    finally:
        await plugin.close()


async def test_removed_socket_deregisters_and_a_new_one_registers_again(sockdir: Path) -> None:
    plugin = Plugin(sockdir)
    await plugin.start_node()
    await plugin.start_registration()
    try:
        async with KubeletSimulator(plugin.reg_dir, poll_interval=0.05) as sim:
            await sim.wait_registered(DRIVER, 5)
            plugin.reg_path.unlink()
            await sim.wait_deregistered(DRIVER, 5)
            await plugin.start_registration()
            assert await sim.wait_registered(DRIVER, 5) == "node-a"
            assert [e.kind for e in sim.events] == ["registered", "deregistered", "registered"]
        assert plugin.registration.verdicts == [(True, ""), (True, "")]
    finally:
        await plugin.close()


async def test_a_socket_nobody_answers_on_is_retried(sockdir: Path) -> None:
    plugin = Plugin(sockdir)
    await plugin.start_node()
    plugin.reg_dir.mkdir()
    dead = socket.socket(socket.AF_UNIX)
    dead.bind(str(plugin.reg_path))  # bound, not listening: GetInfo cannot connect
    try:
        async with KubeletSimulator(plugin.reg_dir, poll_interval=0.05) as sim:
            await sim.wait_event("failed", "", 1, 5)
            assert sim.registered == {}
            plugin.reg_path.unlink()  # a real server takes the path over
            await plugin.start_registration()
            assert await sim.wait_registered(DRIVER, 5) == "node-a"
    finally:
        dead.close()
        await plugin.close()


async def test_wait_registered_times_out_with_the_events_seen(sockdir: Path) -> None:
    async with KubeletSimulator(sockdir, poll_interval=0.05) as sim:
        with pytest.raises(TimeoutError, match="not registered"):
            await sim.wait_registered(DRIVER, 0.3)
