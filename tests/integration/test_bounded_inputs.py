"""Huge request fields against the controller process: refused in milliseconds, naming the
field and its limit, while the process keeps answering Probe. Each test runs against a real
Heketi and the simulator (`heketi`, tests/support/heketi_backends.py)."""

from __future__ import annotations

import asyncio
import time

import pytest
from grpclib.client import Channel
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from services.common.proto import csi_grpc, csi_pb2
from tests.support.controller_harness import NODE, cap, create_request

MB = 1 << 20
HUGE = "x" * MB


def _huge_requests() -> list[tuple[str, object, str]]:
    """(method, request, the field the error must name) for each hostile request."""
    return [
        ("CreateVolume", create_request("pvc-bounds", **{HUGE: "v"}), "parameters"),
        ("CreateVolume", create_request(HUGE), "name"),
        ("CreateVolume", create_request("pvc-bounds", volumenameprefix=HUGE), "parameters"),
        ("DeleteVolume", csi_pb2.DeleteVolumeRequest(volume_id=HUGE), "volume_id"),
        ("ControllerPublishVolume", csi_pb2.ControllerPublishVolumeRequest(
            volume_id=HUGE, node_id=NODE, volume_capability=cap()), "volume_id"),
        ("ControllerPublishVolume", csi_pb2.ControllerPublishVolumeRequest(
            volume_id="hv1:default:" + "0" * 32, node_id=NODE, volume_capability=csi_pb2.
            VolumeCapability(mount=csi_pb2.VolumeCapability.MountVolume(mount_flags=[HUGE]))),
         "volume_capability.mount.mount_flags[0]"),
        ("CreateSnapshot", csi_pb2.CreateSnapshotRequest(
            name="s", source_volume_id="v", secrets={"key": HUGE}), "secrets"),
        ("ListVolumes", csi_pb2.ListVolumesRequest(starting_token=HUGE), "starting_token"),
    ]


async def test_a_1mb_field_costs_milliseconds_and_probe_answers_meanwhile(ctl, heketi):
    identity_channel = Channel(path=str(ctl.socket))
    identity = csi_grpc.IdentityStub(identity_channel)
    probe_latencies: list[float] = []
    stop = asyncio.Event()

    async def keep_probing() -> None:
        while not stop.is_set():
            started = time.monotonic()
            reply = await identity.Probe(csi_pb2.ProbeRequest(), timeout=5)
            probe_latencies.append(time.monotonic() - started)
            assert reply.ready.value

    prober = asyncio.create_task(keep_probing())
    costs: dict[str, float] = {}
    try:
        for method, request, field in _huge_requests():
            started = time.monotonic()
            with pytest.raises(GRPCError) as err:
                await getattr(ctl.stub, method)(request, timeout=5)
            costs[f"{method}.{field}"] = time.monotonic() - started
            assert err.value.status is Status.INVALID_ARGUMENT, (method, err.value)
            message = err.value.message or ""
            assert message.startswith(field) and "at most" in message, message
            assert len(message) < 300
        # The process is still well: a normal call works on the same connection.
        reply = await ctl.stub.CreateVolume(create_request("pvc-after-huge"), timeout=10)
        assert reply.volume.volume_id
    finally:
        stop.set()
        await prober
        identity_channel.close()
    print("cost of a refused 1 MB field (s):",
          {k: round(v, 4) for k, v in costs.items()},
          "slowest probe (s):", round(max(probe_latencies), 4))
    assert max(costs.values()) < 0.5, costs
    assert probe_latencies and max(probe_latencies) < 0.5
    assert list((await heketi.our_volumes()).values()) == [1]
    log = ctl.proc.log_text()
    assert "x" * 2000 not in log, "the huge value reached the log"


async def test_a_gigantic_request_is_refused_by_its_size_before_it_is_read(ctl, heketi):
    """grpclib reads whatever a message announces; the driver refuses a message larger than
    its wire bound from the length prefix alone, in well under a second."""
    request = create_request("pvc-gigantic", **{f"k{i}": "v" * 1000 for i in range(64)})
    request.name = "n" * (64 * MB)
    started = time.monotonic()
    with pytest.raises(GRPCError) as err:
        await ctl.stub.CreateVolume(request, timeout=10)
    cost = time.monotonic() - started
    assert err.value.status is Status.INVALID_ARGUMENT, err.value
    assert "request message is" in (err.value.message or ""), err.value.message
    print(f"a 64 MB request refused in {cost:.3f} s")
    assert cost < 2, cost
    reply = await ctl.stub.CreateVolume(create_request("pvc-after-gigantic"), timeout=10)
    assert reply.volume.volume_id
