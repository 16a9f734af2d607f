"""Helpers of the real-Kubernetes suite: the API, waiting on conditions, pods and claims.

Everything waits on an observable condition with a deadline (never a fixed sleep) and
reads state from the API server, the node's mount table, Heketi or the gluster bricks.
"""

from __future__ import annotations

import asyncio
import copy
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml
from kubernetes_asyncio import client
from kubernetes_asyncio.client.api_client import ApiClient
from kubernetes_asyncio.client.exceptions import ApiException

from services.common.kube_json import csinode_drivers, csinode_path, get_object

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "k8s/examples"
DRIVER_NAME = "glusterfs.heketi.csi.io"
DRIVER_NAMESPACE = "heketi-csi"
STORAGE_CLASS = "glusterfs-csi"
SNAPSHOT_CLASS = "glusterfs-csi"
TEST_IMAGE = "docker.io/library/busybox:1.36.1"
SNAPSHOT_GROUP, SNAPSHOT_VERSION = "snapshot.storage.k8s.io", "v1"

T = TypeVar("T")
Obj = dict[str, Any]
# A plain dict handed to the client as a request body; it serialises dicts as they are.
Body = Any


class Kube:
    """The API groups the suite uses, on one ApiClient."""

    def __init__(self, api: ApiClient) -> None:
        self.api = api
        self.core = client.CoreV1Api(api)
        self.apps = client.AppsV1Api(api)
        self.storage = client.StorageV1Api(api)
        self.custom = client.CustomObjectsApi(api)


async def wait_for(what: str, probe: Callable[[], Awaitable[T | None]],
                   timeout: float = 180.0, interval: float = 0.5) -> T:
    """Poll `probe` until it returns something truthy; 404s count as "not yet"."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            result = await probe()
        except ApiException as exc:
            if exc.status != 404:
                raise
            result = None
        if result:
            return result
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(interval)


async def csinode_driver_names(kube: Kube, node_name: str) -> set[str]:
    """The drivers the node's CSINode lists. Read as JSON: the client's model refuses the
    null `spec.drivers` a CSINode has while kubelet replaces a driver."""
    csinode = await get_object(kube.api, csinode_path(node_name))
    return {str(d.get("name")) for d in csinode_drivers(csinode)}


async def wait_registered(kube: Kube, timeout: float = 120) -> None:
    """Until kubelet lists the driver on every node's CSINode."""
    async def registered() -> bool:
        for node in (await kube.core.list_node()).items:
            if DRIVER_NAME not in await csinode_driver_names(kube, node.metadata.name):
                return False
        return True

    await wait_for("the driver on every CSINode", registered, timeout=timeout)


async def wait_gone(what: str, read: Callable[[], Awaitable[object]],
                    timeout: float = 180.0) -> None:
    async def gone() -> bool:
        try:
            await read()
        except ApiException as exc:
            if exc.status == 404:
                return True
            raise
        return False

    await wait_for(f"{what} to be deleted", gone, timeout)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def example(path: str, namespace: str | None = None, **overrides: Any) -> Body:
    """An object from k8s/examples (so the examples are what is tested), optionally moved
    to `namespace` and with top-level `spec` keys replaced."""
    docs = [d for d in yaml.safe_load_all((EXAMPLES / path).read_text()) if d]
    assert len(docs) == 1, path
    obj: Body = copy.deepcopy(docs[0])
    if namespace is not None:
        obj["metadata"]["namespace"] = namespace
    for key, value in overrides.items():
        obj[key] = value
    return obj


def claim(name: str, size: str = "1Gi", modes: tuple[str, ...] = ("ReadWriteMany",),
          storage_class: str = STORAGE_CLASS, data_source: Obj | None = None) -> Body:
    spec: Obj = {"accessModes": list(modes), "storageClassName": storage_class,
                 "resources": {"requests": {"storage": size}}}
    if data_source is not None:
        spec["dataSource"] = data_source
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": name}, "spec": spec}


@dataclass(frozen=True)
class PodUser:
    """Who the pod's process is: root, or a non-root user with optional groups."""

    uid: int = 0
    gid: int = 0
    fs_group: int | None = None
    supplemental: tuple[int, ...] = ()


def busybox_pod(name: str, claims: dict[str, str], script: str, *,
                user: PodUser = PodUser(), read_only: frozenset[str] = frozenset(),
                propagation: str | None = "HostToContainer", restart: str = "Never",
                labels: dict[str, str] | None = None) -> Body:
    """A busybox pod running `script`, with each claim of `claims` (mount path -> claim
    name) mounted; claims in `read_only` are mounted read-only."""
    security: Obj = {"seccompProfile": {"type": "RuntimeDefault"}}
    if user.uid:
        security.update(runAsNonRoot=True, runAsUser=user.uid, runAsGroup=user.gid)
    if user.fs_group is not None:
        security["fsGroup"] = user.fs_group
    if user.supplemental:
        security["supplementalGroups"] = list(user.supplemental)
    mounts: list[Obj] = []
    volumes: list[Obj] = []
    for index, (path, claim_name) in enumerate(sorted(claims.items())):
        mount: Obj = {"name": f"v{index}", "mountPath": path}
        if propagation is not None:
            mount["mountPropagation"] = propagation
        mounts.append(mount)
        volumes.append({"name": f"v{index}", "persistentVolumeClaim": {
            "claimName": claim_name, "readOnly": path in read_only}})
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {
            "restartPolicy": restart,
            "terminationGracePeriodSeconds": 1,
            "securityContext": security,
            "containers": [{
                "name": "main", "image": TEST_IMAGE, "imagePullPolicy": "Never",
                "command": ["/bin/sh", "-c", script],
                "securityContext": {"allowPrivilegeEscalation": False,
                                    "capabilities": {"drop": ["ALL"]}},
                "volumeMounts": mounts,
            }],
            "volumes": volumes,
        },
    }


async def bound_pv(kube: Kube, namespace: str, name: str, timeout: float = 180) -> Any:
    """Wait for the claim to bind; return its PV after checking it is the driver's."""
    async def bound() -> Any:
        pvc = await kube.core.read_namespaced_persistent_volume_claim(name, namespace)
        return pvc if pvc.status.phase == "Bound" else None

    pvc = await wait_for(f"PVC {name} to bind", bound, timeout=timeout)
    pv = await kube.core.read_persistent_volume(pvc.spec.volume_name)
    assert pv.spec.csi.driver == DRIVER_NAME
    assert pv.spec.csi.volume_handle, "the driver returned no volume id"
    assert len(pv.spec.csi.volume_handle.encode()) <= 128
    assert pv.spec.claim_ref.name == name and pv.spec.claim_ref.namespace == namespace
    return pv


async def pod_phase(kube: Kube, namespace: str, name: str, phases: set[str],
                    timeout: float = 180) -> str:
    async def reached() -> str | None:
        pod = await kube.core.read_namespaced_pod(name, namespace)
        phase: str = pod.status.phase
        if phase == "Failed" and "Failed" not in phases:
            log = await kube.core.read_namespaced_pod_log(name, namespace)
            raise AssertionError(f"pod {name} failed: {log}")
        return phase if phase in phases else None

    return await wait_for(f"pod {name} to reach {sorted(phases)}", reached, timeout)


async def pod_log(kube: Kube, namespace: str, name: str) -> str:
    """The pod's log so far; empty while its container has not started yet (the API server
    answers 400, "waiting to start" or "is not available", until it has)."""
    try:
        text: str | None = await kube.core.read_namespaced_pod_log(name, namespace)
    except ApiException as exc:
        if exc.status == 400 and ("waiting to start" in str(exc.body)
                                  or "is not available" in str(exc.body)):
            return ""
        raise
    return text or ""


async def log_line(kube: Kube, namespace: str, pod: str, predicate: Callable[[str], bool],
                   what: str, timeout: float = 120) -> str:
    """Wait until a line of the pod's log satisfies `predicate`; return that line."""
    async def found() -> str | None:
        for line in (await pod_log(kube, namespace, pod)).splitlines():
            if predicate(line):
                return line
        return None

    return await wait_for(f"{what} in the log of pod {pod}", found, timeout)


async def run_pod(kube: Kube, namespace: str, body: Body, timeout: float = 180) -> tuple[str, str]:
    """Run a pod to completion; return (phase, log), and delete it."""
    name = body["metadata"]["name"]
    await kube.core.create_namespaced_pod(namespace, body)
    phase = await pod_phase(kube, namespace, name, {"Succeeded", "Failed"}, timeout)
    log = await pod_log(kube, namespace, name)
    await delete_pod(kube, namespace, name)
    return phase, log


async def delete_pod(kube: Kube, namespace: str, name: str) -> None:
    try:
        await kube.core.delete_namespaced_pod(name, namespace, grace_period_seconds=0)
    except ApiException as exc:
        if exc.status != 404:
            raise
    await wait_gone(f"pod {name}", lambda: kube.core.read_namespaced_pod(name, namespace))


async def read_file(kube: Kube, namespace: str, claim_name: str, path: str) -> str:
    """What a fresh pod reads from `path` on the claim (mounted at /data)."""
    phase, log = await run_pod(kube, namespace, busybox_pod(
        unique("reader"), {"/data": claim_name}, f"cat /data/{path}"))
    assert phase == "Succeeded", f"reading {path} from {claim_name} failed: {log}"
    return log.strip()


async def events_for(kube: Kube, namespace: str, kind: str, name: str) -> list[Any]:
    events = await kube.core.list_namespaced_event(
        namespace, field_selector=f"involvedObject.kind={kind},involvedObject.name={name}")
    return list(events.items)


async def event_matching(kube: Kube, namespace: str, kind: str, name: str,
                         predicate: Callable[[Any], bool], what: str,
                         timeout: float = 120) -> Any:
    async def found() -> Any:
        for event in await events_for(kube, namespace, kind, name):
            if predicate(event):
                return event
        return None

    return await wait_for(f"an event on {kind} {name} with {what}", found, timeout)


# What the snapshot controllers write into status.error for a lost optimistic-concurrency
# race with each other, which they retry by themselves: not a failure of the snapshot.
TRANSIENT_SNAPSHOT_ERRORS = ("the object has been modified",)


class SnapshotFailed(AssertionError):
    """A VolumeSnapshot reports an error (`status.error`)."""


async def snapshot_status(kube: Kube, namespace: str, name: str) -> Obj | None:
    """The snapshot's status once it is ready to use; None before. Raises SnapshotFailed
    as soon as the snapshot reports an error: the snapshotter would retry, but in this
    suite an error is a failure, and waiting on would only end in a bare timeout."""
    snapshot: Obj = await kube.custom.get_namespaced_custom_object(
        SNAPSHOT_GROUP, SNAPSHOT_VERSION, namespace, "volumesnapshots", name)
    status: Obj = snapshot.get("status") or {}
    error = status.get("error") or {}
    message = str(error.get("message") or "") if isinstance(error, dict) else ""
    if message and not any(transient in message for transient in TRANSIENT_SNAPSHOT_ERRORS):
        raise SnapshotFailed(f"snapshot {namespace}/{name} failed: {message[:500]}")
    return status if status.get("readyToUse") else None


async def create_snapshot(kube: Kube, namespace: str, name: str, source_claim: str) -> Obj:
    body: Body = {"apiVersion": f"{SNAPSHOT_GROUP}/{SNAPSHOT_VERSION}",
                  "kind": "VolumeSnapshot", "metadata": {"name": name},
                  "spec": {"volumeSnapshotClassName": SNAPSHOT_CLASS,
                           "source": {"persistentVolumeClaimName": source_claim}}}
    await kube.custom.create_namespaced_custom_object(
        SNAPSHOT_GROUP, SNAPSHOT_VERSION, namespace, "volumesnapshots", body)
    return await wait_for(f"snapshot {name} to be ready",
                          lambda: snapshot_status(kube, namespace, name), timeout=180)
