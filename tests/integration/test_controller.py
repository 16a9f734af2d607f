"""The controller process over its real socket, against Heketi over HTTP.

A test that asks for `heketi` runs twice, against a fresh real Heketi v10.3.0 (mock executor)
and a fresh simulator (tests/support/heketi_backends.py); one that asks for `sim` needs the
simulator's fault injection and runs on it only, its `sim_only` mark saying why."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections import Counter

import aiohttp
import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from devtools.heketi_sim.latency import INSTANT
from devtools.localcluster.processes import probe, wait_log_line, wait_ready
from services.common.proto import csi_pb2
from services.controller.heketi.auth import authorization_header, make_token
from services.controller.ids import volume_name
from services.controller.service import PUBLISH_HEKETI_WAIT_S
from tests.support.conditions import pending_operations, until
from tests.support.controller_harness import (
    GIB,
    MODE,
    NODE,
    cap,
    create_request,
    our_volumes,
    retry_while,
    start_controller,
)
from tests.support.heketi_backends import HeketiBackend


async def test_create_is_idempotent_by_name_and_conflicts_on_size(ctl, heketi):
    first = await ctl.stub.CreateVolume(create_request("pvc-a", 1))
    again = await ctl.stub.CreateVolume(create_request("pvc-a", 1))
    assert first.volume.volume_id == again.volume.volume_id
    assert first.volume.capacity_bytes == GIB
    ctx = first.volume.volume_context
    heketi_id = first.volume.volume_id.split(":")[-1]
    assert [v.name for v in await heketi.volumes() if v.id == heketi_id] == [ctx["volume"]]
    assert ctx["hosts"] and ctx["backupVolfileServers"]
    assert list((await heketi.our_volumes()).values()) == [1]
    with pytest.raises(GRPCError) as err:
        await ctl.stub.CreateVolume(create_request("pvc-a", 3))
    assert err.value.status is Status.ALREADY_EXISTS
    with pytest.raises(GRPCError) as err:
        await ctl.stub.CreateVolume(create_request("pvc-a", 1, volumetype="replicate:2"))
    assert err.value.status is Status.ALREADY_EXISTS
    assert list((await heketi.our_volumes()).values()) == [1]


async def test_sizes_round_up_and_bad_requests_change_nothing(ctl, heketi):
    reply = await ctl.stub.CreateVolume(csi_pb2.CreateVolumeRequest(
        name="pvc-round", volume_capabilities=[cap()],
        capacity_range=csi_pb2.CapacityRange(required_bytes=GIB + 1)))
    assert reply.volume.capacity_bytes == 2 * GIB
    before = len(await heketi.volumes())
    bad = [
        (create_request("", 1), Status.INVALID_ARGUMENT),
        (csi_pb2.CreateVolumeRequest(name="x"), Status.INVALID_ARGUMENT),
        (create_request("pvc-b", 1, colour="blue"), Status.INVALID_ARGUMENT),
        (csi_pb2.CreateVolumeRequest(
            name="pvc-b", volume_capabilities=[csi_pb2.VolumeCapability(
                block=csi_pb2.VolumeCapability.BlockVolume(),
                access_mode=csi_pb2.VolumeCapability.AccessMode(mode=MODE.SINGLE_NODE_WRITER))]),
         Status.INVALID_ARGUMENT),
        (csi_pb2.CreateVolumeRequest(
            name="pvc-b", volume_capabilities=[cap()],
            capacity_range=csi_pb2.CapacityRange(required_bytes=10, limit_bytes=100)),
         Status.OUT_OF_RANGE),
    ]
    for request, status in bad:
        with pytest.raises(GRPCError) as err:
            await ctl.stub.CreateVolume(request)
        assert err.value.status is status, request
        assert err.value.message
    assert len(await heketi.volumes()) == before


@pytest.mark.sim_only("latency injection: a create that outlives its RPC")
async def test_operation_outlives_its_rpc_and_retry_finds_the_volume(ctl, sim):
    sim.set_latency(3.0, "create")
    with pytest.raises(TimeoutError):  # grpclib's client raises this on its deadline
        await ctl.stub.CreateVolume(create_request("pvc-slow"), timeout=1.0)
    assert pending_operations(sim, "create") == 1, "the create goes on after its caller left"
    with pytest.raises(GRPCError) as err:
        await ctl.stub.CreateVolume(create_request("pvc-slow"), timeout=5.0)
    assert err.value.status is Status.ABORTED
    reply = await retry_while(
        {Status.ABORTED}, lambda: ctl.stub.CreateVolume(create_request("pvc-slow"), timeout=5.0))
    assert reply.volume.capacity_bytes == GIB
    assert list(our_volumes(sim).values()) == [1]
    assert sim.stats.ops_started["create"] == 1


@pytest.mark.sim_only("a dropped queue result")
async def test_lost_result_is_recovered_by_name_without_a_duplicate(ctl, sim):
    sim.drop_next_results(1)
    reply = await ctl.stub.CreateVolume(create_request("pvc-lost"), timeout=30)
    assert reply.volume.volume_id
    assert sim.stats.results_dropped == 1
    assert list(our_volumes(sim).values()) == [1]
    assert "Heketi result lost" in ctl.proc.log_text()


async def test_no_space_is_resource_exhausted(ctl, heketi):
    with pytest.raises(GRPCError) as err:
        await ctl.stub.CreateVolume(create_request("pvc-huge", 100_000))
    assert err.value.status is Status.RESOURCE_EXHAUSTED
    assert not await heketi.our_volumes()


async def test_replica_3_with_a_node_offline_is_resource_exhausted_until_it_is_back(ctl, heketi):
    async with heketi.client() as client:
        cluster = await client.cluster_info((await client.list_cluster_ids())[0])
    node = cluster.nodes[0]
    await heketi.set_state("node", node, "offline")
    with pytest.raises(GRPCError) as err:
        await ctl.stub.CreateVolume(create_request("pvc-offline", 1, volumetype="replicate:3"))
    assert err.value.status is Status.RESOURCE_EXHAUSTED, err.value
    assert "Failed to allocate new volume: No space" in (err.value.message or ""), err.value
    assert not await heketi.our_volumes()
    await heketi.set_state("node", node, "online")
    made = await ctl.stub.CreateVolume(create_request("pvc-offline", 1, volumetype="replicate:3"))
    volume = await heketi.volume(made.volume.volume_id.split(":")[-1])
    assert len({b.node for b in volume.bricks}) == 3 and node in {b.node for b in volume.bricks}
    assert list((await heketi.our_volumes()).values()) == [1]


async def test_expansion_beyond_free_space_is_resource_exhausted(ctl, heketi):
    vid = (await ctl.stub.CreateVolume(create_request("pvc-grow-huge"))).volume.volume_id
    with pytest.raises(GRPCError) as err:
        await ctl.stub.ControllerExpandVolume(csi_pb2.ControllerExpandVolumeRequest(
            volume_id=vid, capacity_range=csi_pb2.CapacityRange(required_bytes=100_000 * GIB)))
    assert err.value.status is Status.RESOURCE_EXHAUSTED, err.value
    assert "Maximum number of bricks reached" in (err.value.message or "")


async def test_delete_is_idempotent_and_never_touches_foreign_volumes(ctl, heketi):
    reply = await ctl.stub.CreateVolume(create_request("pvc-del"))
    vid = reply.volume.volume_id
    await ctl.stub.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=vid))
    await ctl.stub.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=vid))
    await ctl.stub.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id="not-ours"))
    assert not await heketi.our_volumes()
    # A volume someone else made in Heketi, addressed with a forged id of our format.
    foreign = await _foreign_volume(heketi)
    with pytest.raises(GRPCError) as err:
        await ctl.stub.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=f"hv1:default:{foreign}"))
    assert err.value.status is Status.FAILED_PRECONDITION
    assert any(v.id == foreign for v in await heketi.volumes())


async def _foreign_volume(heketi: HeketiBackend) -> str:
    from services.controller.heketi import VolumeCreateRequest

    async with heketi.client() as client:
        info = await client.create_volume(VolumeCreateRequest(size_gib=1, name="someone_elses"))
    return info.id


async def test_publish_checks_volume_node_and_gives_current_hosts(ctl, heketi):
    vid = (await ctl.stub.CreateVolume(create_request("pvc-pub"))).volume.volume_id
    reply = await ctl.stub.ControllerPublishVolume(csi_pb2.ControllerPublishVolumeRequest(
        volume_id=vid, node_id=NODE, volume_capability=cap()))
    heketi_id = vid.split(":")[-1]
    volume = await heketi.volume(heketi_id)
    hosts = await heketi.storage_hosts(volume.cluster)
    assert reply.publish_context["hosts"].split(",") == hosts
    cases = [
        (csi_pb2.ControllerPublishVolumeRequest(volume_id="hv1:default:" + "0" * 32,
                                                node_id=NODE, volume_capability=cap()),
         Status.NOT_FOUND),
        (csi_pb2.ControllerPublishVolumeRequest(volume_id=vid, node_id="ghost",
                                                volume_capability=cap()), Status.NOT_FOUND),
        (csi_pb2.ControllerPublishVolumeRequest(volume_id=vid, volume_capability=cap()),
         Status.INVALID_ARGUMENT),
        (csi_pb2.ControllerPublishVolumeRequest(volume_id=vid, node_id=NODE),
         Status.INVALID_ARGUMENT),
    ]
    for request, status in cases:
        with pytest.raises(GRPCError) as err:
            await ctl.stub.ControllerPublishVolume(request)
        assert err.value.status is status
    await ctl.stub.ControllerUnpublishVolume(
        csi_pb2.ControllerUnpublishVolumeRequest(volume_id=vid, node_id=NODE))
    await ctl.stub.ControllerUnpublishVolume(
        csi_pb2.ControllerUnpublishVolumeRequest(volume_id=vid, node_id=NODE))


async def test_list_volumes_pages_only_our_volumes(ctl, heketi):
    await _foreign_volume(heketi)
    made = {(await ctl.stub.CreateVolume(create_request(f"pvc-list-{i}"))).volume.volume_id
            for i in range(5)}
    seen: list[str] = []
    token = ""
    while True:
        page = await ctl.stub.ListVolumes(csi_pb2.ListVolumesRequest(max_entries=2,
                                                                     starting_token=token))
        assert len(page.entries) <= 2
        seen.extend(e.volume.volume_id for e in page.entries)
        token = page.next_token
        if not token:
            break
    assert sorted(seen) == sorted(made)
    with pytest.raises(GRPCError) as err:
        await ctl.stub.ListVolumes(csi_pb2.ListVolumesRequest(starting_token="bogus"))
    assert err.value.status is Status.ABORTED


async def test_expand_capacity_and_get_volume(ctl, heketi):
    free_before = (await ctl.stub.GetCapacity(csi_pb2.GetCapacityRequest())).available_capacity
    vid = (await ctl.stub.CreateVolume(create_request("pvc-grow", 2))).volume.volume_id
    free_after = (await ctl.stub.GetCapacity(csi_pb2.GetCapacityRequest())).available_capacity
    # replicate:3 costs 3 x raw, reported per volume; thin-pool metadata and whole-GiB
    # rounding of the report may cost one GiB more.
    assert 2 * GIB <= free_before - free_after <= 3 * GIB
    grow = csi_pb2.ControllerExpandVolumeRequest(
        volume_id=vid, capacity_range=csi_pb2.CapacityRange(required_bytes=5 * GIB))
    reply = await ctl.stub.ControllerExpandVolume(grow)
    assert reply.capacity_bytes == 5 * GIB and not reply.node_expansion_required
    again = await ctl.stub.ControllerExpandVolume(grow)
    assert again.capacity_bytes == 5 * GIB
    heketi_id = vid.split(":")[-1]
    assert (await heketi.volume(heketi_id)).size_gib == 5
    got = await ctl.stub.ControllerGetVolume(csi_pb2.ControllerGetVolumeRequest(volume_id=vid))
    assert got.volume.capacity_bytes == 5 * GIB
    assert not got.status.volume_condition.abnormal


async def test_gids_are_unique_within_the_range_and_exhaustion_is_reported(ctl, heketi):
    params = {"gidMin": "5000", "gidMax": "5002"}
    gids = set()
    for i in range(3):
        reply = await ctl.stub.CreateVolume(create_request(f"pvc-gid-{i}", 1, **params))
        gids.add(int(reply.volume.volume_context["gid"]))
    assert gids == {5000, 5001, 5002}
    with pytest.raises(GRPCError) as err:
        await ctl.stub.CreateVolume(create_request("pvc-gid-x", 1, **params))
    assert err.value.status is Status.OUT_OF_RANGE


async def test_heketi_down_at_start_then_up(tmp_path, heketi):
    await heketi.go_offline()
    controller = await start_controller(tmp_path, heketi.url)
    try:
        await wait_ready(controller.proc, controller.socket, need_ready=False)
        await wait_log_line(controller.proc, lambda line: "Heketi not reachable" in line,
                            "a failed attempt to read Heketi")
        assert await probe(controller.socket) is False
        await heketi.go_online()
        await until(lambda: probe(controller.socket), "ready once Heketi is back")
        reply = await controller.stub.CreateVolume(create_request("pvc-late"))
        assert reply.volume.volume_id
    finally:
        controller.channel.close()
        await controller.proc.stop()


async def test_sigkill_during_twenty_creates_leaves_exactly_one_volume_per_name(tmp_path, heketi):
    sim, real = heketi.sim, heketi.real
    if sim is not None:
        sim.set_latency(1.5, "create")
    names = [f"pvc-crash-{i}" for i in range(20)]
    controller = await start_controller(tmp_path, heketi.url, "first")
    await wait_ready(controller.proc, controller.socket)
    calls = [asyncio.create_task(controller.stub.CreateVolume(create_request(n), timeout=30))
             for n in names]
    if sim is not None:
        # Heketi runs 8 of our creates (the controller's --heketi-max-inflight), and the
        # controller logged them as started.
        await until(lambda: pending_operations(sim, "create") >= 8,
                    "8 creates running in Heketi")
    await wait_log_line(controller.proc, lambda line: "heketi operation started" in line,
                        "a started create in the controller log")
    if real is not None:
        # The mock executor's creates take milliseconds: freeze Heketi so that the rest are
        # in flight (sent, unanswered) when the controller dies; it serves them afterwards.
        assert real.proc is not None
        real.proc.send_signal(signal.SIGSTOP)
    try:
        finished = len(await heketi.our_volumes()) if sim is not None else 0
        if sim is not None:
            in_flight = pending_operations(sim, "create")
            assert in_flight >= 8 and finished < len(names), "creates were in flight at the kill"
        os.kill(controller.proc.pid, signal.SIGKILL)
        await asyncio.gather(*calls, return_exceptions=True)
        controller.channel.close()
        await controller.proc.wait(10)
    finally:
        if real is not None and real.proc is not None:
            real.proc.send_signal(signal.SIGCONT)

    restarted = await start_controller(tmp_path, heketi.url, "second")
    try:
        await wait_ready(restarted.proc, restarted.socket)
        ids = {}
        for name in names:  # the provisioner's retries
            reply = await retry_while(
                {Status.ABORTED, Status.UNAVAILABLE},
                lambda n=name: restarted.stub.CreateVolume(create_request(n), timeout=10))
            ids[name] = reply.volume.volume_id
        counts = await heketi.our_volumes()
        assert len(counts) == 20 and set(counts.values()) == {1}
        assert len(set(ids.values())) == 20
    finally:
        restarted.channel.close()
        await restarted.proc.stop()


async def test_resync_follows_deletes_made_outside_the_driver(tmp_path, heketi):
    controller = await start_controller(tmp_path, heketi.url, "resync", "--resync-interval", "0.5")
    try:
        await wait_ready(controller.proc, controller.socket)
        kept = (await controller.stub.CreateVolume(create_request("pvc-kept"))).volume.volume_id
        gone = (await controller.stub.CreateVolume(create_request("pvc-gone"))).volume.volume_id
        async with heketi.client() as client:
            await client.delete_volume(gone.split(":")[-1])  # an administrator, by hand
        listed: set[str] = set()

        async def forgotten() -> bool:
            nonlocal listed
            reply = await controller.stub.ListVolumes(csi_pb2.ListVolumesRequest())
            listed = {e.volume.volume_id for e in reply.entries}
            return gone not in listed

        await until(forgotten, "the resync forgets the volume deleted by hand")
        assert listed == {kept}
    finally:
        controller.channel.close()
        await controller.proc.stop()


async def test_metrics_count_rpcs_and_heketi_work(tmp_path, heketi):
    import socket as socket_module

    import aiohttp

    with socket_module.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    controller = await start_controller(tmp_path, heketi.url, "metrics",
                                        "--metrics-port", str(port))
    try:
        await wait_ready(controller.proc, controller.socket)
        await controller.stub.CreateVolume(create_request("pvc-metrics"))
        async with aiohttp.ClientSession() as http, \
                http.get(f"http://127.0.0.1:{port}/metrics") as resp:
            assert resp.status == 200
            text = await resp.text()
        assert 'heketi_csi_rpc_total{code="OK",method="CreateVolume"} 1.0' in text
        assert 'heketi_csi_heketi_requests_total{backend="default",method="POST",status="202"}' \
            in text
        assert 'heketi_csi_heketi_operation_seconds_count{backend="default",operation="create",' \
            'outcome="ok"} 1.0' in text
        assert 'heketi_csi_index_volumes{backend="default"} 1.0' in text
    finally:
        controller.channel.close()
        await controller.proc.stop()


async def test_retry_after_an_outside_delete_creates_the_volume_again(ctl, heketi):
    first = (await ctl.stub.CreateVolume(create_request("pvc-again"))).volume.volume_id
    async with heketi.client() as client:
        await client.delete_volume(first.split(":")[-1])
    second = (await ctl.stub.CreateVolume(create_request("pvc-again"))).volume.volume_id
    assert second != first
    assert list((await heketi.our_volumes()).values()) == [1]


@pytest.mark.sim_only("latency injection: an operation that outlives its deadline")
async def test_an_operation_past_its_deadline_frees_its_key_and_slot_and_is_found_by_name(
        tmp_path, sim):
    controller = await start_controller(tmp_path, sim.url, "deadline",
                                        "--heketi-operation-timeout", "1",
                                        "--heketi-max-inflight", "1")
    try:
        await wait_ready(controller.proc, controller.socket)
        sim.set_latency(4.0, "create")
        with pytest.raises(GRPCError) as err:
            await controller.stub.CreateVolume(create_request("pvc-stuck"), timeout=10)
        assert err.value.status is Status.UNAVAILABLE, err.value
        assert pending_operations(sim, "create") == 1, "Heketi still runs the create"
        # The driver holds neither the name's key nor the one throttling slot any more.
        with pytest.raises(GRPCError) as err:
            await controller.stub.CreateVolume(create_request("pvc-stuck"), timeout=10)
        assert "already in progress" not in (err.value.message or "")
        sim.set_latency(0.0, "create")
        other = await controller.stub.CreateVolume(create_request("pvc-other"), timeout=10)
        assert other.volume.volume_id
        # Once Heketi finishes, the retry finds the volume by name instead of making another.
        reply = await retry_while(
            {Status.ABORTED, Status.UNAVAILABLE},
            lambda: controller.stub.CreateVolume(create_request("pvc-stuck"), timeout=10))
        assert reply.volume.volume_id
        assert sorted(our_volumes(sim).values()) == [1, 1]
        assert sim.stats.ops_started["create"] == 2
    finally:
        controller.channel.close()
        await controller.proc.stop()


async def test_keys_and_users_from_parameters_and_secrets_stay_out_of_logs_and_errors(ctl, heketi):
    key_marker, user_marker = "s3cret-key-7f1c", "s3cret-user-9a2b"
    vid = (await ctl.stub.CreateVolume(create_request("pvc-creds"))).volume.volume_id
    request = create_request("pvc-creds-2", restuserkey=key_marker, restuser="nobody")
    with pytest.raises(GRPCError) as err:
        await ctl.stub.CreateVolume(request)
    messages = [err.value.message or ""]
    for call in (
        ctl.stub.DeleteVolume(csi_pb2.DeleteVolumeRequest(
            volume_id=vid, secrets={"key": key_marker, "user": user_marker})),
        ctl.stub.ControllerExpandVolume(csi_pb2.ControllerExpandVolumeRequest(
            volume_id=vid, secrets={"key": key_marker, "user": user_marker},
            capacity_range=csi_pb2.CapacityRange(required_bytes=2 * GIB))),
    ):
        with pytest.raises(GRPCError) as err:
            await call
        assert err.value.status is Status.PERMISSION_DENIED
        messages.append(err.value.message or "")
    log = ctl.proc.log_text()
    assert "rpc request" in log, "the controller logs requests at debug level"
    for marker in (key_marker, user_marker):
        assert not any(marker in m for m in messages), messages
        assert marker not in log


async def test_publish_answers_from_the_index_while_heketi_is_unreachable(ctl, heketi):
    vid = (await ctl.stub.CreateVolume(create_request("pvc-outage"))).volume.volume_id
    publish = csi_pb2.ControllerPublishVolumeRequest(volume_id=vid, node_id=NODE,
                                                     volume_capability=cap())
    before = await ctl.stub.ControllerPublishVolume(publish)
    unknown = csi_pb2.ControllerPublishVolumeRequest(
        volume_id="hv1:default:" + "0" * 32, node_id=NODE, volume_capability=cap())
    await heketi.go_offline()
    try:
        during = await ctl.stub.ControllerPublishVolume(publish, timeout=10)
        assert during.publish_context == before.publish_context
        await wait_log_line(ctl.proc, lambda line: "answering from the index" in line,
                            "the fallback is logged")
        with pytest.raises(GRPCError) as err:  # Heketi did not say it is gone: retry later
            await ctl.stub.ControllerPublishVolume(unknown, timeout=10)
        assert err.value.status is Status.UNAVAILABLE
    finally:
        await heketi.go_online()
    async with heketi.client() as client:
        await client.delete_volume(vid.split(":")[-1])
    with pytest.raises(GRPCError) as err:  # now Heketi says so
        await ctl.stub.ControllerPublishVolume(publish, timeout=10)
    assert err.value.status is Status.NOT_FOUND


@pytest.mark.parametrize("existing", [0, 50, 500])
async def test_a_create_costs_three_heketi_requests_however_many_volumes_exist(
        tmp_path, sim, existing):
    """README: "a create costs three Heketi requests however many volumes exist" (the name
    index is built at start-up; a create is POST /volumes, one queue poll, one GET)."""
    for i in range(existing):  # half the driver's own, half someone else's
        sim.add_volume_now(volume_name(f"pvc-present-{i}") if i % 2 else f"vol_other_{i}")
    controller = await start_controller(tmp_path, sim.url, f"cost-{existing}")
    try:
        await wait_ready(controller.proc, controller.socket)
        costs = []
        for i in range(3):
            sim.request_counts.clear()
            await controller.stub.CreateVolume(create_request(f"pvc-cost-{i}"), timeout=30)
            costs.append(dict(sim.request_counts))
        assert [sum(cost.values()) for cost in costs] == [3, 3, 3], costs
        assert len(our_volumes(sim)) == existing // 2 + 3
    finally:
        controller.channel.close()
        await controller.proc.stop()


async def test_publish_answers_from_the_index_while_heketi_hangs(ctl, sim):
    """README: "when Heketi does not answer within 5 s, ControllerPublish answers from the
    controller's index". Heketi here accepts the connection, reads the request and never
    answers; the answer must come within the call's deadline, a few seconds past the wait."""
    vid = (await ctl.stub.CreateVolume(create_request("pvc-hang"))).volume.volume_id
    publish = csi_pb2.ControllerPublishVolumeRequest(volume_id=vid, node_id=NODE,
                                                     volume_capability=cap())
    before = await ctl.stub.ControllerPublishVolume(publish)
    unknown = csi_pb2.ControllerPublishVolumeRequest(
        volume_id="hv1:default:" + "0" * 32, node_id=NODE, volume_capability=cap())
    deadline = PUBLISH_HEKETI_WAIT_S + 5
    reads_before = sim.request_counts["GET /volumes/{id}"]
    sim.hang()
    try:
        during, refused = await asyncio.gather(
            ctl.stub.ControllerPublishVolume(publish, timeout=deadline),
            ctl.stub.ControllerPublishVolume(unknown, timeout=deadline),
            return_exceptions=True)
        assert sim.request_counts["GET /volumes/{id}"] >= reads_before + 2, \
            "both calls asked the hung Heketi first"
    finally:
        sim.hang(False)
    assert isinstance(during, csi_pb2.ControllerPublishVolumeResponse), during
    assert during.publish_context == before.publish_context
    await wait_log_line(ctl.proc, lambda line: "answering from the index" in line,
                        "the fallback is logged")
    # A volume the index does not know: Heketi has not said it is gone, so retry later.
    assert isinstance(refused, GRPCError), refused
    assert refused.status is Status.UNAVAILABLE, refused
    assert "did not answer within 5 s" in (refused.message or ""), refused.message


async def test_heketi_killed_during_creates_then_each_volume_exactly_once(tmp_path, heketi):
    """A Heketi that dies mid-create keeps those creates in its database as stale pending
    operations: their names are in use, their volumes unlisted, their space held, until its
    background cleaner rolls them back (60 s after a start by default; here 1 s for the real
    one, 3 s for the simulator on its state file, so that its window always shows). The
    driver answers UNAVAILABLE (result lost) or ABORTED (name held by a stale operation)
    meanwhile, both retryable, then makes each volume once; nothing is orphaned: no pending
    operation is left and deleting the volumes gives all the space back."""
    names = [f"pvc-hcrash-{i}" for i in range(8)]
    async with heketi.crashable(tmp_path / "heketi", sim_cleaner_start=3.0) as crashing:
        free_before = await crashing.free_kib()
        controller = await start_controller(tmp_path, crashing.url, "hcrash")
        try:
            await wait_ready(controller.proc, controller.socket)
            calls = [asyncio.create_task(
                controller.stub.CreateVolume(create_request(n), timeout=30)) for n in names]
            await wait_log_line(controller.proc,
                                lambda line: "heketi operation started" in line,
                                "a create accepted by Heketi")
            await crashing.go_offline()
            results = await asyncio.gather(*calls, return_exceptions=True)
            assert any(isinstance(r, GRPCError) for r in results), "some creates were cut off"
            if crashing.proc is not None:  # the simulator's later operations need not last
                crashing.proc.op_latency = INSTANT
            await crashing.go_online()
            statuses = set()
            aborted: list[str] = []
            ids = {}
            for name in names:  # the provisioner's retries
                async def create(n=name):
                    try:
                        return await controller.stub.CreateVolume(create_request(n),
                                                                  timeout=10)
                    except GRPCError as exc:
                        statuses.add(exc.status)
                        if exc.status is Status.ABORTED:
                            aborted.append(exc.message or "")
                        raise
                reply = await retry_while({Status.ABORTED, Status.UNAVAILABLE}, create,
                                          timeout=60)
                ids[name] = reply.volume.volume_id
            counts = await crashing.our_volumes()
            assert len(counts) == len(names) and set(counts.values()) == {1}, counts
            assert len(set(ids.values())) == len(names)
            print("statuses the retries saw:", sorted(s.name for s in statuses))
            if crashing.proc is not None:  # every create was pending at the kill
                assert aborted, "a name held by a stale operation answers ABORTED"
            assert all("stale operation" in m and "retry later" in m for m in aborted), aborted
            operations = await crashing.get_json("/operations")
            assert operations["total"] == 0, ("no pending operation left", operations)
            for volume_id in ids.values():
                await controller.stub.DeleteVolume(
                    csi_pb2.DeleteVolumeRequest(volume_id=volume_id), timeout=30)
            assert await crashing.free_kib() == free_before, "no brick left holding space"
        finally:
            controller.channel.close()
            await controller.proc.stop()


async def test_heketi_killed_during_a_delete_then_it_finishes_the_delete(tmp_path, heketi):
    """A Heketi that dies mid-delete keeps the delete as a stale operation: the volume is
    hidden and unlisted, its space held, until the background cleaner finishes the delete.
    The driver's retried DeleteVolume succeeds (the volume reads as gone), and Heketi's
    cleaner then gives the space back: nothing is orphaned. On the simulator (the delete
    always pending at the kill) the success comes while the operation is still stale."""
    async with heketi.crashable(tmp_path / "heketi", sim_cleaner_start=3.0) as crashing:
        free_before = await crashing.free_kib()
        controller = await start_controller(tmp_path, crashing.url, "hdelcrash")
        try:
            await wait_ready(controller.proc, controller.socket)
            if crashing.proc is not None:  # the create need not last; the delete must
                await _sim_latency(crashing, INSTANT)
            reply = await controller.stub.CreateVolume(create_request("pvc-hdel"), timeout=30)
            volume_id = reply.volume.volume_id
            if crashing.proc is not None:
                await _sim_latency(crashing, 30.0)
            call = asyncio.create_task(controller.stub.DeleteVolume(
                csi_pb2.DeleteVolumeRequest(volume_id=volume_id), timeout=30))
            await wait_log_line(controller.proc, lambda line: (
                "heketi operation started" in line and "delete" in line),
                "the delete accepted by Heketi")
            await crashing.go_offline()
            with contextlib.suppress(GRPCError):
                await call
            if crashing.proc is not None:
                crashing.proc.op_latency = INSTANT
            await crashing.go_online()
            await retry_while({Status.ABORTED, Status.UNAVAILABLE}, lambda: (
                controller.stub.DeleteVolume(
                    csi_pb2.DeleteVolumeRequest(volume_id=volume_id), timeout=10)),
                timeout=60)
            at_success = await crashing.get_json("/operations")
            if crashing.proc is not None:
                assert at_success["stale"] == 1, at_success
            assert await crashing.our_volumes() == Counter()

            async def cleaned() -> bool:
                return (await crashing.get_json("/operations"))["total"] == 0
            await until(cleaned, "Heketi's cleaner finished the delete", timeout=20)
            assert await crashing.free_kib() == free_before, "the space is back"
        finally:
            controller.channel.close()
            await controller.proc.stop()


async def _sim_latency(backend: HeketiBackend, seconds: float) -> None:
    """The simulator process's operation latency, through its admin-only fault route."""
    path = "/_sim/faults"
    async with aiohttp.ClientSession() as session, session.post(
            backend.url + path, json={"op_latency": seconds},
            headers={"Authorization": authorization_header(
                make_token("POST", path, "admin", backend.admin_key))}) as resp:
        assert resp.status == 200, await resp.text()
