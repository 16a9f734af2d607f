"""The shared runtime over real unix sockets: identity, socket lifecycle, drain, redaction."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest
from grpclib.client import Channel
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from devtools.localcluster.processes import HEKETI_CSI, ManagedProcess, wait_for_path, wait_ready
from services.common.config import DEFAULT_DRIVER_NAME
from services.common.proto import csi_grpc, csi_pb2
from services.common.rpc import RpcContext, servable
from services.common.server import run_grpc_server
from services.common.version import package_version
from tests.support.conditions import until


def controller(tmp_path: Path, sock: Path, *extra: str, name: str = "controller") -> ManagedProcess:
    return ManagedProcess(
        name,
        [*HEKETI_CSI, "controller", "--endpoint", f"unix://{sock}", "--node-check", "none",
         "--log-format", "json", *extra],
        tmp_path / f"{name}.log",
    )


@pytest.fixture
async def procs():
    started: list[ManagedProcess] = []
    yield started
    for proc in started:
        await proc.kill()


async def test_identity_answers_over_a_real_socket(tmp_path, procs):
    sock = tmp_path / "a" / "csi.sock"
    proc = await controller(tmp_path, sock).start()
    procs.append(proc)
    await wait_ready(proc, sock)
    channel = Channel(path=str(sock))
    try:
        stub = csi_grpc.IdentityStub(channel)
        info = await stub.GetPluginInfo(csi_pb2.GetPluginInfoRequest())
        assert info.name == DEFAULT_DRIVER_NAME
        assert info.vendor_version == package_version()
        caps = await stub.GetPluginCapabilities(csi_pb2.GetPluginCapabilitiesRequest())
        kinds = {c.service.type for c in caps.capabilities if c.HasField("service")}
        assert csi_pb2.PluginCapability.Service.CONTROLLER_SERVICE in kinds
        assert (await stub.Probe(csi_pb2.ProbeRequest())).ready.value is True
    finally:
        channel.close()
    assert oct(sock.stat().st_mode & 0o777) == oct(0o660)


async def test_second_instance_refuses_sigterm_cleans_and_kill9_restarts(tmp_path, procs):
    sock = tmp_path / "run" / "csi.sock"
    first = await controller(tmp_path, sock).start()
    procs.append(first)
    await wait_ready(first, sock)

    second = await controller(tmp_path, sock, name="second").start()
    procs.append(second)
    assert await second.wait(15) == 1
    assert "already serving" in second.log_text()
    assert sock.exists(), "the refused instance must not remove the live socket"

    assert await first.stop() == 0
    assert not sock.exists()

    crashed = await controller(tmp_path, sock, name="crashed").start()
    procs.append(crashed)
    await wait_ready(crashed, sock)
    os.kill(crashed.pid, signal.SIGKILL)
    await crashed.wait(10)
    assert sock.exists(), "kill -9 leaves the socket file behind"

    restarted = await controller(tmp_path, sock, name="restarted").start()
    procs.append(restarted)
    await wait_ready(restarted, sock)
    assert "removed stale socket" in restarted.log_text()
    assert await restarted.stop() == 0


class _SlowIdentity:
    """GetPluginInfo answers only once the test sets `release`."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    async def GetPluginInfo(self, request: csi_pb2.GetPluginInfoRequest,
                            ctx: RpcContext) -> csi_pb2.GetPluginInfoResponse:
        self.entered.set()
        await self.release.wait()
        return csi_pb2.GetPluginInfoResponse(name="slow", vendor_version="1")


async def test_in_flight_call_finishes_after_stop_and_socket_is_removed(tmp_path):
    sock = tmp_path / "drain.sock"
    impl = _SlowIdentity()
    stop = asyncio.Event()
    server = asyncio.create_task(run_grpc_server(
        f"unix://{sock}", [servable(impl, csi_grpc.IdentityBase)], grace=5.0, stop_event=stop))
    await wait_for_path(sock)
    channel = Channel(path=str(sock))
    try:
        call = asyncio.create_task(
            csi_grpc.IdentityStub(channel).GetPluginInfo(csi_pb2.GetPluginInfoRequest()))
        await impl.entered.wait()
        stop.set()

        async def gone() -> bool:
            return not await asyncio.to_thread(sock.exists)

        await until(gone, f"{sock} removed", 5, 0.01)  # shutting down: no new connections ...
        assert not call.done() and not server.done()  # ... while the call is still running
        impl.release.set()
        reply = await call
        assert reply.name == "slow"
    finally:
        impl.release.set()
        channel.close()
    assert await asyncio.wait_for(server, 10) == 0
    assert not sock.exists()


async def test_missing_method_is_unimplemented(tmp_path):
    sock = tmp_path / "u.sock"
    stop = asyncio.Event()
    server = asyncio.create_task(run_grpc_server(
        f"unix://{sock}", [servable(_SlowIdentity(), csi_grpc.IdentityBase)], stop_event=stop))
    await wait_for_path(sock)
    channel = Channel(path=str(sock))
    try:
        with pytest.raises(GRPCError) as err:
            await csi_grpc.IdentityStub(channel).Probe(csi_pb2.ProbeRequest())
        assert err.value.status is Status.UNIMPLEMENTED
        assert "Probe" in (err.value.message or "")
    finally:
        channel.close()
        stop.set()
        await asyncio.wait_for(server, 10)


async def test_no_secret_value_reaches_a_log_line_or_an_error(tmp_path, procs):
    secret = "TOPSECRET-4f9a1c"
    sock = tmp_path / "csi.sock"
    proc = await controller(tmp_path, sock, "--log-level", "debug",
                            "--heketi-timeout", "2",
                            "--adhoc-heketi-urls", "http://127.0.0.1:9").start()
    procs.append(proc)
    await wait_ready(proc, sock)
    channel = Channel(path=str(sock))
    try:
        stub = csi_grpc.ControllerStub(channel)
        request = csi_pb2.CreateVolumeRequest(
            name="pvc-secret-test",
            volume_capabilities=[csi_pb2.VolumeCapability(
                mount=csi_pb2.VolumeCapability.MountVolume(),
                access_mode=csi_pb2.VolumeCapability.AccessMode(
                    mode=csi_pb2.VolumeCapability.AccessMode.MULTI_NODE_MULTI_WRITER))],
            # Port 9 on loopback: nothing listens, so the call fails after using the secret.
            parameters={"resturl": "http://127.0.0.1:9"},
            secrets={"key": secret, "user": secret + "-user"},
        )
        with pytest.raises(GRPCError) as err:
            await stub.CreateVolume(request, timeout=20)
        assert err.value.status is Status.UNAVAILABLE
        assert secret not in (err.value.message or "")
        # A bad parameter names the key in its error, never the secret.
        bad = csi_pb2.CreateVolumeRequest()
        bad.CopyFrom(request)
        bad.parameters["nope"] = "1"
        with pytest.raises(GRPCError) as err2:
            await stub.CreateVolume(bad, timeout=20)
        assert err2.value.status is Status.INVALID_ARGUMENT
        assert "nope" in (err2.value.message or "")
    finally:
        channel.close()
    await proc.stop()
    log = proc.log_text()
    assert "pvc-secret-test" in log, "the request must have been logged at debug level"
    assert '"***"' in log, "secret fields are logged as redacted"
    assert secret not in log
