"""Mounts that survive, in the real cluster: gluster clients that outlive the node plugin,
and recovery that reaches running pods (issue "Mounts that survive").

Every test runs a pod that writes a counter once a second, each write fsync'ed (so a write
the pod saw succeed is on the brick), and checks what the writer saw. The tests need the
local cluster: the node is this machine, where they find the gluster client of a volume,
signal it, look at its cgroups and ask the node plugin's socket for the volume condition.
"""

from __future__ import annotations

import glob
import hashlib
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from devtools.csi_client import CsiClient
from services.node import mountinfo
from services.node.mounter import gluster_clients_of
from services.node.state import stage_key
from tests.e2e.conftest import Cluster
from tests.e2e.kube import (
    DRIVER_NAME,
    DRIVER_NAMESPACE,
    Body,
    Kube,
    bound_pv,
    busybox_pod,
    claim,
    delete_pod,
    event_matching,
    log_line,
    pod_log,
    pod_phase,
    read_file,
    wait_for,
    wait_gone,
)

pytestmark = pytest.mark.e2e

KUBELET = "/var/lib/kubelet"
NODE_SOCKET = f"{KUBELET}/plugins/{DRIVER_NAME}/csi.sock"
NODE_DAEMONSET = "heketi-csi-node"
NODE_CONTAINER = "heketi-csi-node"
# Appends the next number to /data/counter once a second, fsync'ed; resumes after the last
# number already there (a re-created pod goes on where its predecessor stopped).
COUNTER = (
    "i=$(tail -n1 /data/counter 2>/dev/null); echo start ${i:-0}; "
    "while true; do i=$((i+1)); "
    "if echo $i | dd of=/data/counter oflag=append conv=notrunc,fsync 2>/dev/null; "
    "then echo ok $i; else echo IOERROR $i; fi; sleep 1; done"
)
# A writer that misses more writes than this after its client died did not get its data
# back "within a few seconds".
MOST_FAILED_WRITES = 3


def need_local(cluster: Cluster) -> None:
    if not cluster.local:
        pytest.fail("needs the local cluster (the node's processes are inspected here)",
                    pytrace=False)


def staging_of(pv: Any) -> str:
    digest = hashlib.sha256(pv.spec.csi.volume_handle.encode()).hexdigest()
    return f"{KUBELET}/plugins/kubernetes.io/csi/{DRIVER_NAME}/{digest}/globalmount"


def target_of(pod: Any, pv: Any) -> str:
    return f"{KUBELET}/pods/{pod.metadata.uid}/volumes/kubernetes.io~csi/{pv.metadata.name}/mount"


def clients(staging: str) -> list[int]:
    return gluster_clients_of(staging)


def group_dirs(staging: str) -> list[str]:
    return glob.glob(f"/sys/fs/cgroup/*/heketi-csi/{DRIVER_NAME}/{stage_key(staging)}")


def oks(log: str) -> list[int]:
    return [int(line.split()[1]) for line in log.splitlines() if line.startswith("ok ")]


def failures(log: str) -> list[str]:
    return [line for line in log.splitlines() if line.startswith("IOERROR")]


async def writes_after(kube: Kube, namespace: str, pod: str, count: int,
                       timeout: float = 120) -> str:
    """Wait until the writer logged `count` more successful writes than now; its log."""
    start = len(oks(await pod_log(kube, namespace, pod)))

    async def more() -> str | None:
        log = await pod_log(kube, namespace, pod)
        return log if len(oks(log)) >= start + count else None

    return await wait_for(f"{count} more writes by {pod}", more, timeout=timeout)


async def counter_holds(kube: Kube, namespace: str, claim_name: str, written: list[int]) -> None:
    """The counter file holds every write the writers saw succeed, and nothing else."""
    text = await read_file(kube, namespace, claim_name, "counter")
    numbers = [int(n) for n in text.split()]
    missing = sorted(set(written) - set(numbers))
    assert not missing, f"writes reported ok but not in the file: {missing}"


async def node_condition(pv: Any, path: str) -> tuple[bool, str, float]:
    """NodeGetVolumeStats over the node plugin's socket: (abnormal, message, seconds)."""
    started = time.monotonic()
    async with CsiClient(NODE_SOCKET, timeout=30) as csi:
        answer = await csi.volume_stats(pv.spec.csi.volume_handle, path)
    condition = answer.volume_condition
    return condition.abnormal, condition.message, time.monotonic() - started


async def writer(kube: Kube, namespace: str, name: str, claim_name: str,
                 propagation: str | None = "HostToContainer") -> Any:
    await kube.core.create_namespaced_pod(namespace, busybox_pod(
        name, {"/data": claim_name}, COUNTER, propagation=propagation))
    # (Its log is read only once it runs: kubelet may be between attempts before that.)
    await pod_phase(kube, namespace, name, {"Running"})
    await log_line(kube, namespace, name, lambda line: line.startswith("ok"), "a write")
    return await kube.core.read_namespaced_pod(name, namespace)


async def volume(kube: Kube, namespace: str, name: str) -> Any:
    await kube.core.create_namespaced_persistent_volume_claim(namespace, claim(name))
    return await bound_pv(kube, namespace, name)


async def new_client(staging: str, old: list[int], timeout: float = 30) -> list[int]:
    async def replaced() -> list[int] | None:
        now = clients(staging)
        return now if now and now != old else None

    return await wait_for("a new gluster client", replaced, timeout, interval=0.1)


async def released(staging: str) -> None:
    """After the last pod of the volume is gone: unstaged, and nothing of it left."""
    await wait_for("the volume to be unstaged",
                   lambda: _async(mountinfo.mount_at(mountinfo.read(), staging) is None), 120)
    assert clients(staging) == [], "a gluster client outlived its volume"
    await wait_for("the client's cgroups to go", lambda: _async(not group_dirs(staging)), 30)


async def _async(value: bool) -> bool:
    return value


# ---- the node plugin's DaemonSet ---------------------------------------------------------

async def node_plugin_pod(kube: Kube) -> Any:
    pods = await kube.core.list_namespaced_pod(
        DRIVER_NAMESPACE, label_selector=f"app.kubernetes.io/name={NODE_DAEMONSET}")
    running = [p for p in pods.items
               if p.status.phase == "Running" and p.metadata.deletion_timestamp is None]
    assert len(running) == 1, [p.metadata.name for p in running]
    return running[0]


async def node_plugin_replaced(kube: Kube, old_uid: str) -> Any:
    """Wait until another node plugin pod than `old_uid` runs with every container ready."""
    async def replaced() -> Any:
        pods = await kube.core.list_namespaced_pod(
            DRIVER_NAMESPACE, label_selector=f"app.kubernetes.io/name={NODE_DAEMONSET}")
        for pod in pods.items:
            statuses = pod.status.container_statuses or []
            if (pod.metadata.uid != old_uid and pod.metadata.deletion_timestamp is None
                    and statuses and all(s.ready for s in statuses)):
                return pod
        return None

    return await wait_for("the DaemonSet to replace the node plugin pod", replaced, 180)


async def rolled_out(kube: Kube) -> None:
    """Wait until the DaemonSet's current template runs, ready, on every node."""
    async def done() -> bool:
        ds = await kube.apps.read_namespaced_daemon_set(NODE_DAEMONSET, DRIVER_NAMESPACE)
        status = ds.status
        return bool(
            (status.observed_generation or 0) >= ds.metadata.generation
            and status.updated_number_scheduled == status.desired_number_scheduled
            and status.number_ready == status.desired_number_scheduled
            and not status.number_unavailable)

    await wait_for("the node plugin to roll out", done, 300)


async def set_node_env(kube: Kube, name: str, value: str | None) -> None:
    """Set (or remove) an environment variable of the node container: a rolling update."""
    ds = await kube.apps.read_namespaced_daemon_set(NODE_DAEMONSET, DRIVER_NAMESPACE)
    container = next(c for c in ds.spec.template.spec.containers if c.name == NODE_CONTAINER)
    env = [e for e in container.env or [] if e.name != name]
    if value is not None:
        env.append({"name": name, "value": value})
    container.env = env
    await kube.apps.replace_namespaced_daemon_set(NODE_DAEMONSET, DRIVER_NAMESPACE, ds)
    await rolled_out(kube)


@pytest.fixture
async def remedy(kube: Kube) -> AsyncIterator[None]:
    """The node plugin runs with --delete-stale-pods for the test."""
    await set_node_env(kube, "DELETE_STALE_PODS", "true")
    try:
        yield
    finally:
        await set_node_env(kube, "DELETE_STALE_PODS", "false")


# ---- the tests ---------------------------------------------------------------------------

async def test_rolling_the_node_plugin_keeps_its_clients_and_the_writer_never_fails(
        kube: Kube, namespace: str, cluster: Cluster) -> None:
    need_local(cluster)
    pv = await volume(kube, namespace, "data")
    await writer(kube, namespace, "writer", "data")
    staging = staging_of(pv)
    before = clients(staging)
    assert len(before) == 1
    old = await node_plugin_pod(kube)

    await set_node_env(kube, "HCSI_E2E_ROLL", uuid.uuid4().hex)  # a new pod template
    try:
        assert (await node_plugin_pod(kube)).metadata.uid != old.metadata.uid
        log = await writes_after(kube, namespace, "writer", 5)
        assert clients(staging) == before, "a gluster client was restarted"
        assert not failures(log), failures(log)
    finally:
        await set_node_env(kube, "HCSI_E2E_ROLL", None)
    log = await writes_after(kube, namespace, "writer", 3)
    assert clients(staging) == before and not failures(log)
    await delete_pod(kube, namespace, "writer")
    await counter_holds(kube, namespace, "data", oks(log))
    await released(staging)


async def test_a_killed_client_under_a_host_to_container_writer_is_back_in_seconds(
        kube: Kube, namespace: str, cluster: Cluster) -> None:
    need_local(cluster)
    pv = await volume(kube, namespace, "data")
    pod = await writer(kube, namespace, "writer", "data")
    staging = staging_of(pv)
    [pid] = clients(staging)

    os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    await new_client(staging, [pid])
    log = await writes_after(kube, namespace, "writer", 5)
    print(f"new client and 5 more writes {time.monotonic() - killed:.1f} s after the kill")

    assert len(failures(log)) <= MOST_FAILED_WRITES, failures(log)
    same = await kube.core.read_namespaced_pod("writer", namespace)
    assert same.metadata.uid == pod.metadata.uid
    assert all(s.restart_count == 0 for s in same.status.container_statuses)
    await event_matching(kube, namespace, "Pod", "writer",
                         lambda e: e.reason == "VolumeRemounted", "reason VolumeRemounted")
    abnormal, message, _ = await node_condition(pv, target_of(pod, pv))
    assert not abnormal, message
    await delete_pod(kube, namespace, "writer")
    await counter_holds(kube, namespace, "data", oks(log))
    await released(staging)


async def test_without_propagation_and_with_the_remedy_the_pod_is_recreated_and_reads_the_data(
        kube: Kube, namespace: str, cluster: Cluster, remedy: None) -> None:
    need_local(cluster)
    pv = await volume(kube, namespace, "data")
    labels = {"app": "writer"}
    template = busybox_pod("unused", {"/data": "data"}, COUNTER, propagation=None,
                           restart="Always", labels=labels)
    deployment: Body = {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "writer"},
        "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels}, "spec": template["spec"]}},
    }
    await kube.apps.create_namespaced_deployment(namespace, deployment)
    first = await the_writer(kube, namespace, labels)
    name = first.metadata.name
    await log_line(kube, namespace, name, lambda line: line.startswith("ok"), "a write")
    staging = staging_of(pv)
    [pid] = clients(staging)

    os.kill(pid, signal.SIGKILL)
    written = oks(await pod_log(kube, namespace, name))
    event = await event_matching(kube, namespace, "Pod", name,
                                 lambda e: e.reason == "EvictingPodWithStaleMount",
                                 "reason EvictingPodWithStaleMount")
    assert "HostToContainer" in event.message
    second = await the_writer(kube, namespace, labels, not_uid=first.metadata.uid)
    start = await log_line(kube, namespace, second.metadata.name,
                           lambda line: line.startswith("start"), "the counter it read")
    assert int(start.split()[1]) >= max(written), (start, written)
    log = await writes_after(kube, namespace, second.metadata.name, 3)
    assert not failures(log), failures(log)

    await kube.apps.delete_namespaced_deployment("writer", namespace)
    await wait_gone(f"pod {second.metadata.name}", lambda: kube.core.read_namespaced_pod(
        second.metadata.name, namespace))
    await counter_holds(kube, namespace, "data", written + oks(log))
    await released(staging)


async def the_writer(kube: Kube, namespace: str, labels: dict[str, str],
                     not_uid: str | None = None) -> Any:
    """The running pod of the writer Deployment (another than `not_uid`)."""
    selector = ",".join(f"{k}={v}" for k, v in labels.items())

    async def running() -> Any:
        pods = await kube.core.list_namespaced_pod(namespace, label_selector=selector)
        for pod in pods.items:
            if (pod.status.phase == "Running" and pod.metadata.deletion_timestamp is None
                    and pod.metadata.uid != not_uid):
                return pod
        return None

    return await wait_for("a running writer pod", running, 180)


async def test_without_propagation_or_remedy_the_pod_is_told_and_its_volume_is_abnormal(
        kube: Kube, namespace: str, cluster: Cluster) -> None:
    need_local(cluster)
    pv = await volume(kube, namespace, "data")
    pod = await writer(kube, namespace, "writer", "data", propagation=None)
    staging = staging_of(pv)
    [pid] = clients(staging)

    os.kill(pid, signal.SIGKILL)
    event = await event_matching(kube, namespace, "Pod", "writer",
                                 lambda e: e.reason == "StaleVolumeMount",
                                 "reason StaleVolumeMount")
    assert "Delete the pod" in event.message and "HostToContainer" in event.message
    abnormal, message, _ = await node_condition(pv, target_of(pod, pv))
    assert abnormal and "Delete the pod" in message, message
    await log_line(kube, namespace, "writer", lambda line: line.startswith("IOERROR"),
                   "a failed write (its container still sees the dead mount)")
    same = await kube.core.read_namespaced_pod("writer", namespace)
    assert same.metadata.uid == pod.metadata.uid  # not deleted: the remedy is off
    written = oks(await pod_log(kube, namespace, "writer"))
    await delete_pod(kube, namespace, "writer")  # unpublish of the stale target works
    await counter_holds(kube, namespace, "data", written)
    await released(staging)


async def test_a_stopped_client_is_abnormal_within_two_seconds_and_healthy_after_sigcont(
        kube: Kube, namespace: str, cluster: Cluster) -> None:
    need_local(cluster)
    pv = await volume(kube, namespace, "data")
    pod = await writer(kube, namespace, "writer", "data")
    staging = staging_of(pv)
    [pid] = clients(staging)
    target = target_of(pod, pv)

    os.kill(pid, signal.SIGSTOP)
    stopped = time.monotonic()
    try:
        abnormal, message, took = await node_condition(pv, target)
        seen = time.monotonic() - stopped
        print(f"abnormal after {seen:.2f} s (the call took {took:.2f} s): {message}")
        assert abnormal and seen <= 2, (seen, message)
    finally:
        os.kill(pid, signal.SIGCONT)

    async def healthy() -> bool:
        return not (await node_condition(pv, target))[0]

    await wait_for("the volume to be healthy again", healthy, 30)
    log = await writes_after(kube, namespace, "writer", 3)
    assert clients(staging) == [pid], "a stopped client must be left to continue"
    await delete_pod(kube, namespace, "writer")
    await counter_holds(kube, namespace, "data", oks(log))
    await released(staging)


async def test_a_node_plugin_restart_under_a_stopped_client_leaves_it_alone(
        kube: Kube, namespace: str, cluster: Cluster) -> None:
    """The restarted node adopts a client that does not answer instead of replacing it."""
    need_local(cluster)
    pv = await volume(kube, namespace, "data")
    await writer(kube, namespace, "writer", "data")
    staging = staging_of(pv)
    [pid] = clients(staging)
    old = await node_plugin_pod(kube)
    os.kill(pid, signal.SIGSTOP)
    try:
        await kube.core.delete_namespaced_pod(old.metadata.name, DRIVER_NAMESPACE)
        await node_plugin_replaced(kube, old.metadata.uid)
        assert clients(staging) == [pid]
    finally:
        os.kill(pid, signal.SIGCONT)
    log = await writes_after(kube, namespace, "writer", 3)
    assert clients(staging) == [pid]
    await delete_pod(kube, namespace, "writer")
    await counter_holds(kube, namespace, "data", oks(log))
    await released(staging)
