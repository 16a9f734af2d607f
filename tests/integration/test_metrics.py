"""The Prometheus metrics the README lists exist on the processes' /metrics and move when
their event happens: RPC counts and latencies, Heketi requests by status, Heketi operation
latency, 429s and throttling slots in use, index size (controller, against a simulator that
throttles); mount repairs and abnormal volumes (node, on a real gluster mount whose client
is stopped, then killed).

Storage: the node half uses a volume of this host's glusterd, on purpose: the test stops and
kills that volume's client itself; a pool adds nothing to what a metric counts."""

# Checks of the test's own directories are fine on the test's loop.

from __future__ import annotations

import asyncio
import os
import signal
import socket
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from grpclib.client import Channel
from grpclib.const import Status
from prometheus_client.parser import text_string_to_metric_families

from devtools import glusterd
from devtools.heketi_sim.latency import INSTANT
from devtools.heketi_sim.server import HeketiSimulator
from devtools.localcluster import KubeletPaths
from devtools.localcluster.processes import HEKETI_CSI, ManagedProcess, wait_ready
from services.common.proto import csi_grpc, csi_pb2
from services.node.mounter import gluster_clients_of
from tests.support.conditions import until
from tests.support.controller_harness import (
    KEY,
    cap,
    create_request,
    retry_while,
    start_controller,
)
from tests.support.host import require_gluster_root

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
CREATES = 5
HEKETI_LIMIT = 2  # the simulator answers 429 beyond two running operations


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def scrape(port: int) -> Samples:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http, \
            http.get(f"http://127.0.0.1:{port}/metrics") as reply:
        assert reply.status == 200
        text = await reply.text()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float | None:
    """The sum of `name`'s samples whose labels include `labels`; None when there is none."""
    found = [v for (n, have), v in samples.items()
             if n == name and set(labels.items()) <= have]
    return sum(found) if found else None


def moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return (value(after, name, **labels) or 0) - (value(before, name, **labels) or 0)


@pytest.fixture
async def sim() -> AsyncIterator[HeketiSimulator]:
    async with HeketiSimulator(op_latency=INSTANT, admin_key=KEY,
                               max_inflight=HEKETI_LIMIT) as simulator:
        yield simulator


async def test_controller_metrics_exist_and_move(tmp_path: Path, sim: HeketiSimulator) -> None:
    port = free_port()
    ctl = await start_controller(tmp_path, sim.url, "metrics", "--metrics-port", str(port),
                                 "--heketi-max-inflight", "8")
    backend = {"backend": "default"}
    try:
        await wait_ready(ctl.proc, ctl.socket)
        before = await scrape(port)
        assert value(before, "heketi_csi_heketi_operations_in_flight", **backend) == 0
        assert value(before, "heketi_csi_index_volumes", **backend) == 0
        assert value(before, "heketi_csi_rpc_total", method="Probe", code="OK")

        held = sim.hold("create")  # accepted creates stay pending: the others get 429
        creates = [asyncio.create_task(retry_while(
            {Status.ABORTED, Status.UNAVAILABLE},
            lambda i=i: ctl.stub.CreateVolume(create_request(f"pvc-metrics-{i}"), timeout=30)))
            for i in range(CREATES)]
        during: Samples = {}

        async def throttled_with_slots_taken() -> bool:
            nonlocal during
            during = await scrape(port)
            return (value(during, "heketi_csi_heketi_throttled_total", **backend) or 0) >= 1 \
                and (value(during, "heketi_csi_heketi_operations_in_flight", **backend)
                     or 0) >= HEKETI_LIMIT

        try:
            await until(throttled_with_slots_taken, "429s counted while the driver's slots "
                        "hold the accepted creates")
        finally:
            held.set()
        await asyncio.gather(*creates)

        after: Samples = {}

        async def slots_free() -> bool:
            nonlocal after
            after = await scrape(port)
            return value(after, "heketi_csi_heketi_operations_in_flight", **backend) == 0

        await until(slots_free, "the slots are given back once the creates finish")
    finally:
        ctl.channel.close()
        await ctl.proc.stop()

    assert moved(before, after, "heketi_csi_rpc_total", method="CreateVolume", code="OK") \
        == CREATES
    assert moved(before, after, "heketi_csi_rpc_duration_seconds_count",
                 method="CreateVolume") >= CREATES
    assert moved(before, after, "heketi_csi_rpc_duration_seconds_sum",
                 method="CreateVolume") > 0
    throttled = moved(before, after, "heketi_csi_heketi_throttled_total", **backend)
    assert throttled >= 1
    assert throttled == moved(before, after, "heketi_csi_heketi_requests_total",
                              method="POST", status="429", **backend) == sim.stats.throttled
    assert moved(before, after, "heketi_csi_heketi_requests_total", method="POST",
                 status="202", **backend) == CREATES
    assert moved(before, after, "heketi_csi_heketi_operation_seconds_count",
                 operation="create", outcome="ok", **backend) == CREATES
    assert value(after, "heketi_csi_index_volumes", **backend) == CREATES


# --- node -------------------------------------------------------------------------------------
class NodeRig:
    """A node process with /metrics on its own kubelet root, and one gluster volume."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.paths = KubeletPaths(tmp / "kubelet")
        self.port = free_port()
        self.sock = tmp / "node" / "csi.sock"
        self.volume = f"hcsitest_{uuid.uuid4().hex[:10]}"
        self.volume_id = f"id-{self.volume}"
        self.proc = ManagedProcess("node", [
            *HEKETI_CSI, "node", "--endpoint", f"unix://{self.sock}", "--node-id", "metrics",
            "--kubelet-root", str(self.paths.kubelet_root),
            "--gluster-log-dir", str(tmp / "gluster-logs"), "--metrics-port", str(self.port),
            "--repair-interval", "0.5", "--health-timeout", "1", "--stats-timeout", "2",
            "--log-format", "json", "--log-level", "debug"], tmp / "node.log")

    async def stage_and_publish(self, stub: csi_grpc.NodeStub) -> tuple[Path, Path]:
        staging = self.paths.staging_path(self.volume_id)
        target = self.paths.pod_target_path("pod-metrics", "pv-metrics")
        await stub.NodeStageVolume(csi_pb2.NodeStageVolumeRequest(
            volume_id=self.volume_id, staging_target_path=str(staging), volume_capability=cap(),
            volume_context={"volume": self.volume, "hosts": glusterd.hostname()}), timeout=60)
        await stub.NodePublishVolume(csi_pb2.NodePublishVolumeRequest(
            volume_id=self.volume_id, staging_target_path=str(staging), target_path=str(target),
            volume_capability=cap()), timeout=60)
        return staging, target


@pytest.fixture
async def node_rig(tmp_path: Path) -> AsyncIterator[tuple[NodeRig, csi_grpc.NodeStub]]:
    require_gluster_root("the node metrics test mounts a real gluster volume")
    glusterd.ensure_glusterd()
    rig = NodeRig(tmp_path)
    (tmp_path / "kubelet").mkdir()
    channel: Channel | None = None
    try:
        await glusterd.create_volume(rig.volume, tmp_path / "bricks")
        await rig.proc.start()
        await wait_ready(rig.proc, rig.sock, timeout=30)
        channel = Channel(path=str(rig.sock))
        yield rig, csi_grpc.NodeStub(channel)
    finally:
        for pid in gluster_clients_of(str(rig.paths.staging_path(rig.volume_id))):
            os.kill(pid, signal.SIGCONT)  # a stopped client would hang the cleanup
        if channel is not None:
            channel.close()
        await rig.proc.stop(timeout=15)
        await glusterd.cleanup_mounts_under(tmp_path / "kubelet")
        await glusterd.delete_volume(rig.volume)


def _clients(staging: Path) -> list[int]:
    return gluster_clients_of(str(staging))


async def test_node_metrics_count_abnormal_volumes_and_repairs(
        node_rig: tuple[NodeRig, csi_grpc.NodeStub]) -> None:
    rig, stub = node_rig
    staging, target = await rig.stage_and_publish(stub)
    before = await scrape(rig.port)
    assert value(before, "heketi_csi_node_abnormal_volumes") == 0
    assert value(before, "heketi_csi_rpc_total", method="NodeStageVolume", code="OK") == 1

    async def abnormal_is(count: int) -> bool:
        return value(await scrape(rig.port), "heketi_csi_node_abnormal_volumes") == count

    [pid] = _clients(staging)
    os.kill(pid, signal.SIGSTOP)  # a stopped client: abnormal, never replaced
    try:
        await until(lambda: abnormal_is(1), "a stopped client makes its volume abnormal")
    finally:
        os.kill(pid, signal.SIGCONT)
    await until(lambda: abnormal_is(0), "the volume is normal again once the client runs")

    os.kill(pid, signal.SIGKILL)  # a dead client: replaced, and the repair counted

    async def repaired() -> bool:
        samples = await scrape(rig.port)
        return (value(samples, "heketi_csi_node_repairs_total", outcome="remounted") or 0) >= 1

    await until(repaired, "the repair of a killed client is counted")
    after = await scrape(rig.port)
    assert _clients(staging) not in ([], [pid])
    assert value(after, "heketi_csi_node_repairs_total", outcome="failed") in (None, 0)
    assert value(after, "heketi_csi_node_abnormal_volumes") == 0
    await stub.NodeUnpublishVolume(csi_pb2.NodeUnpublishVolumeRequest(
        volume_id=rig.volume_id, target_path=str(target)), timeout=60)
    await stub.NodeUnstageVolume(csi_pb2.NodeUnstageVolumeRequest(
        volume_id=rig.volume_id, staging_target_path=str(staging)), timeout=60)
    unstaged = await scrape(rig.port)
    assert moved(after, unstaged, "heketi_csi_rpc_total", method="NodeUnstageVolume",
                 code="OK") == 1
    assert (value(unstaged, "heketi_csi_rpc_duration_seconds_count",
                  method="NodeUnstageVolume") or 0) >= 1
