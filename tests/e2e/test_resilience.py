"""The driver's own pods and kubelet going away under load: nothing duplicated, nothing lost,
and what a running pod's I/O sees (more of the node-plugin case in test_mount_recovery.py)."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import aiohttp
import pytest

from services.controller.heketi.auth import authorization_header, make_token
from services.controller.heketi.client import HeketiClient
from tests.e2e.conftest import HEKETI_SECRET, Cluster, heketi_id
from tests.e2e.kube import (
    DRIVER_NAMESPACE,
    Kube,
    bound_pv,
    busybox_pod,
    claim,
    delete_pod,
    log_line,
    pod_log,
    read_file,
    wait_for,
    wait_registered,
)
from tests.e2e.test_mount_recovery import clients, staging_of

pytestmark = pytest.mark.e2e

# Writes a counter once every half second; a failed write is logged, never fatal.
COUNTER = ("i=0; while true; do i=$((i+1)); if echo $i >> /data/counter; then echo ok $i; "
           "else echo IOERROR $i; fi; sleep 0.5; done")


async def ticks_after(kube: Kube, namespace: str, pod: str, count: int) -> list[str]:
    """Wait until the writer logged `count` more lines than now; return the new lines."""
    # Right after a kubelet restart the log is not served (404) until kubelet has synced
    # the pod again: wait_for counts that as "not yet".
    text = await wait_for(f"the log of {pod}", lambda: pod_log(kube, namespace, pod), 120)
    start = len(text.splitlines())

    async def more() -> list[str] | None:
        lines = (await pod_log(kube, namespace, pod)).splitlines()
        return lines[start:] if len(lines) >= start + count else None

    return await wait_for(f"{count} more writes by {pod}", more, timeout=120)


async def node_plugin_pod(kube: Kube) -> str:
    pods = await kube.core.list_namespaced_pod(
        DRIVER_NAMESPACE, label_selector="app.kubernetes.io/name=heketi-csi-node")
    running = [p.metadata.name for p in pods.items
               if p.status.phase == "Running" and p.metadata.deletion_timestamp is None]
    assert len(running) == 1, running
    return running[0]


async def wait_node_plugin_replaced(kube: Kube, old: str) -> str:
    async def replaced() -> str | None:
        pods = await kube.core.list_namespaced_pod(
            DRIVER_NAMESPACE, label_selector="app.kubernetes.io/name=heketi-csi-node")
        for pod in pods.items:
            statuses = pod.status.container_statuses or []
            if (pod.metadata.name != old and statuses
                    and all(s.ready for s in statuses)):
                return str(pod.metadata.name)
        return None

    return await wait_for("the DaemonSet to replace the node plugin pod", replaced, 180)


async def test_deleting_the_node_plugin_pod_does_not_interrupt_a_writer(
        kube: Kube, namespace: str, cluster: Cluster) -> None:
    """The gluster clients run outside the node plugin's container (issue "Mounts that
    survive"): the same client processes serve the volume before and after."""
    await kube.core.create_namespaced_persistent_volume_claim(namespace, claim("busy"))
    pv = await bound_pv(kube, namespace, "busy")
    await kube.core.create_namespaced_pod(namespace, busybox_pod(
        "writer", {"/data": "busy"}, COUNTER))
    await log_line(kube, namespace, "writer", lambda line: line.startswith("ok"), "a write")
    staging = staging_of(pv)
    before = clients(staging) if cluster.local else []

    old = await node_plugin_pod(kube)
    await kube.core.delete_namespaced_pod(old, DRIVER_NAMESPACE)
    await wait_node_plugin_replaced(kube, old)
    lines = await ticks_after(kube, namespace, "writer", 10)
    log = await pod_log(kube, namespace, "writer")
    await delete_pod(kube, namespace, "writer")
    failed = [line for line in log.splitlines() if line.startswith("IOERROR")]
    assert not failed, f"the writer saw {len(failed)} I/O errors; last lines: {lines[-5:]}"
    if cluster.local:
        assert len(before) == 1 and clients(staging) == before, "a gluster client restarted"


async def test_kubelet_restart_keeps_the_writer_and_re_registers_the_driver(
        kube: Kube, namespace: str, cluster: Cluster) -> None:
    if not cluster.local:
        pytest.fail("restarting kubelet needs the local cluster (make k8s-up)", pytrace=False)
    from devtools.k8s.cluster import restart_kubelet

    await kube.core.create_namespaced_persistent_volume_claim(namespace, claim("steady"))
    await bound_pv(kube, namespace, "steady")
    await kube.core.create_namespaced_pod(namespace, busybox_pod(
        "writer", {"/data": "steady"}, COUNTER))
    await log_line(kube, namespace, "writer", lambda line: line.startswith("ok"), "a write")

    await asyncio.to_thread(restart_kubelet)

    async def node_ready() -> bool:
        node = (await kube.core.list_node()).items[0]
        return any(c.type == "Ready" and c.status == "True" for c in node.status.conditions)

    await wait_for("the node to be Ready again", node_ready, 120)
    await ticks_after(kube, namespace, "writer", 6)
    log = await pod_log(kube, namespace, "writer")
    assert not [line for line in log.splitlines() if line.startswith("IOERROR")], log[-500:]

    # The restarted kubelet re-registered the driver: a new pod can mount a new volume.
    await wait_registered(kube)
    counter = await read_file(kube, namespace, "steady", "counter")
    numbers = [int(n) for n in counter.split()]
    assert numbers == list(range(1, len(numbers) + 1)), "writes were lost or reordered"
    await delete_pod(kube, namespace, "writer")


# Seconds each create takes in the simulator during the burst: long enough that creates
# are certainly running in Heketi when the controller dies, short enough for the test.
BURST_CREATE_LATENCY = 6.0


async def sim_request(kube: Kube, cluster: Cluster, method: str, path: str,
                      body: object = None) -> dict[str, Any]:
    """An admin request to the e2e Heketi simulator's own routes (/_sim/faults, /_sim/stats)."""
    secret = await kube.core.read_namespaced_secret(HEKETI_SECRET, DRIVER_NAMESPACE)
    key = base64.b64decode(secret.data["key"]).decode()
    headers = {"Authorization": authorization_header(make_token(method, path, "admin", key))}
    async with aiohttp.ClientSession() as session, session.request(
            method, cluster.heketi_url + path, json=body, headers=headers,
            timeout=aiohttp.ClientTimeout(total=30)) as resp:
        text = await resp.text()
        assert resp.status == 200, f"{method} {path}: {resp.status} {text[:300]}"
        answer: dict[str, Any] = json.loads(text)
        return answer


async def test_controller_deleted_during_a_burst_of_20_claims_makes_exactly_20_volumes(
        kube: Kube, namespace: str, heketi: HeketiClient, cluster: Cluster) -> None:
    # The simulator's fault routes: against another Heketi this fails with its 404.
    before = set(await heketi.list_volume_ids())
    names = [f"burst-{i:02d}" for i in range(20)]
    await sim_request(kube, cluster, "POST", "/_sim/faults",
                      {"latency": {"create": BURST_CREATE_LATENCY}})
    try:
        started = (await sim_request(kube, cluster, "GET", "/_sim/stats"))["ops_started"]
        await asyncio.gather(*(kube.core.create_namespaced_persistent_volume_claim(
            namespace, claim(name)) for name in names))

        async def in_flight() -> int | None:
            stats = await sim_request(kube, cluster, "GET", "/_sim/stats")
            return int(stats["inflight"]) or None

        # Creates are running in Heketi (the simulator holds each for its latency) when the
        # controller dies: the kill lands in the middle of them, not before or after.
        running = await wait_for("creates running in Heketi", in_flight, 60, interval=0.1)
        pods = await kube.core.list_namespaced_pod(
            DRIVER_NAMESPACE, label_selector="app.kubernetes.io/name=heketi-csi-controller")
        await asyncio.gather(*(kube.core.delete_namespaced_pod(
            p.metadata.name, DRIVER_NAMESPACE, grace_period_seconds=0) for p in pods.items))
        stats = await sim_request(kube, cluster, "GET", "/_sim/stats")
        assert stats["inflight"] >= 1, "no create was still running at the kill"
        pvcs = (await kube.core.list_namespaced_persistent_volume_claim(namespace)).items
        assert sum(1 for p in pvcs if p.status.phase == "Bound") < len(names)
    finally:
        # back to the latency the manifest gives (--op-latency)
        await sim_request(kube, cluster, "POST", "/_sim/faults", {"reset": True})

    handles = {(await bound_pv(kube, namespace, name, timeout=300)).spec.csi.volume_handle
               for name in names}
    ids = {heketi_id(handle) for handle in handles}
    assert len(ids) == len(names)
    made = []
    for volume_id in set(await heketi.list_volume_ids()) - before:
        if "_burst-" in (await heketi.volume_info(volume_id)).name:
            made.append(volume_id)
    assert sorted(made) == sorted(ids), f"{len(made)} Heketi volumes for {len(ids)} claims"
    after = (await sim_request(kube, cluster, "GET", "/_sim/stats"))["ops_started"]
    creates = after.get("create", 0) - started.get("create", 0)
    print(f"creates running at the kill: {running}; creates started in Heketi: {creates} "
          f"for {len(names)} claims")
