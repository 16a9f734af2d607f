"""No answer carries a credential the request did.

The fuzz suite found the first case on a fresh machine (random seed 2358522117, kept as a
fixed seed in tests/fuzz/test_fuzz_rpcs.py): ValidateVolumeCapabilities echoed the request's
`parameters` into its `confirmed` answer, `restuserkey` included. The controller now confirms
only what it validated, and the RPC layer takes every credential of the request out of any
answer and error text, whatever a service copies into them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import structlog
from grpclib.client import Channel
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from grpclib.server import Server

from devtools.heketi_sim.latency import INSTANT
from devtools.heketi_sim.server import HeketiSimulator
from services.common import context_keys as ck
from services.common.errors import InvalidArgument
from services.common.proto import csi_grpc, csi_pb2
from services.common.redact import credentials_in, without_credentials
from services.common.rpc import RpcContext, servable
from services.controller.backends import BackendConfig, BackendRegistry, ClientSettings
from services.controller.nodes import AnyNode
from services.controller.service import ControllerService
from tests.support.controller_harness import cap, create_request

KEY = "answers-test-admin-key"
MARKER = "FZSECRETdeadbeef0123"


def ctx() -> RpcContext:
    return RpcContext(method="test", request_id="r1", log=structlog.get_logger("test"))


@pytest.fixture
async def service() -> AsyncIterator[ControllerService]:
    async with HeketiSimulator(op_latency=INSTANT, admin_key=KEY) as sim:
        registry = BackendRegistry([BackendConfig("default", sim.url, key=KEY)],
                                   ClientSettings())
        try:
            yield ControllerService(registry, AnyNode())
        finally:
            await registry.close()


async def test_validate_volume_capabilities_does_not_echo_restuserkey(
        service: ControllerService) -> None:
    created = await service.CreateVolume(create_request("pvc-echo"), ctx())
    context = dict(created.volume.volume_context)
    answer = await service.ValidateVolumeCapabilities(
        csi_pb2.ValidateVolumeCapabilitiesRequest(
            volume_id=created.volume.volume_id, volume_capabilities=[cap()],
            parameters={"restuser": "admin", "RestUserKey": MARKER, "volumetype": "none"},
            volume_context={**context, "note": MARKER}),
        ctx())
    assert answer.HasField("confirmed"), answer.message
    assert dict(answer.confirmed.parameters) == {"restuser": "admin", "volumetype": "none"}
    assert dict(answer.confirmed.volume_context) == context
    assert set(context) <= ck.VOLUME_CONTEXT_KEYS
    assert MARKER not in str(answer)


def test_credentials_of_a_request_are_its_secrets_keys_and_url_passwords() -> None:
    request = csi_pb2.CreateVolumeRequest(
        name="pvc", secrets={"key": "secret-one", "x": "adminkey", "user": "administrator"},
        parameters={"restuserkey": "secret-two", "resturl": "http://u:secret-three@h:1/p",
                    "volumetype": "replicate:3"})
    # "u" is too short; the user name is no credential (a PVC may be named after it)
    assert credentials_in(request) == {"secret-one", "adminkey", "secret-two",
                                       "u:secret-three", "secret-three"}
    answer = csi_pb2.CreateVolumeResponse(volume=csi_pb2.Volume(
        volume_id="v-secret-one", volume_context={
            "k": "secret-two", "secret-three": "v", "volume": "csi_pvc-administrator-db"}))
    clean = without_credentials(answer, credentials_in(request))
    assert clean is not None
    assert clean.volume.volume_id == "v-***"
    assert dict(clean.volume.volume_context) == {"k": "***", "volume": "csi_pvc-administrator-db"}
    assert without_credentials(clean, credentials_in(request)) is None
    ordinary = csi_pb2.CreateVolumeResponse(volume=csi_pb2.Volume(volume_id="hv1:default:ab"))
    assert without_credentials(ordinary, credentials_in(request)) is None  # answered as is


class _Echo:
    """A careless service: echoes its request's secrets into answers and errors."""

    async def CreateVolume(self, request: csi_pb2.CreateVolumeRequest,
                           ctx: RpcContext) -> csi_pb2.CreateVolumeResponse:
        return csi_pb2.CreateVolumeResponse(volume=csi_pb2.Volume(
            volume_id=request.name, volume_context=dict(request.secrets)))

    async def DeleteVolume(self, request: csi_pb2.DeleteVolumeRequest,
                           ctx: RpcContext) -> csi_pb2.DeleteVolumeResponse:
        raise InvalidArgument(f"bad key {request.secrets.get('key')!r}")


async def test_the_rpc_layer_takes_credentials_out_of_answers_and_errors(
        tmp_path: Path) -> None:
    sock = tmp_path / "echo.sock"
    server = Server([servable(_Echo(), csi_grpc.ControllerBase)])
    await server.start(path=str(sock))
    channel = Channel(path=str(sock))
    try:
        stub = csi_grpc.ControllerStub(channel)
        answer = await stub.CreateVolume(csi_pb2.CreateVolumeRequest(
            name=f"pvc-{MARKER}", secrets={"key": MARKER}))
        assert MARKER not in str(answer)
        assert answer.volume.volume_id == "pvc-***"
        with pytest.raises(GRPCError) as failed:
            await stub.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id="v",
                                                                secrets={"key": MARKER}))
        assert failed.value.status is Status.INVALID_ARGUMENT
        assert failed.value.message == "bad key '***'"
    finally:
        channel.close()
        server.close()
        await server.wait_closed()
