"""End-to-end on kind: a volume's whole life through Kubernetes and the real driver.

tests/e2e/run.sh creates the cluster, deploys k8s/e2e (driver + Heketi simulator backed by a
real glusterd) and runs this module with HEKETI_CSI_E2E_CONTEXT set. Without Docker, kind or
that cluster, every test here is skipped with the reason; none of them counts as a pass.

The lifecycle: PVC -> pod writes -> snapshot -> restore -> clone -> expand -> delete,
asserting on the Kubernetes objects (PV, VolumeAttachment, VolumeSnapshotContent, capacity),
on the data read back through new volumes, and on the FUSE mounts of the kind node.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import os
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "k8s/examples/demo"
DRIVER_NAME = "glusterfs.heketi.csi.io"
DRIVER_NAMESPACE = "heketi-csi"
CONTEXT = os.environ.get("HEKETI_CSI_E2E_CONTEXT", "")
CLUSTER = os.environ.get("HEKETI_CSI_E2E_CLUSTER", "heketi-csi-e2e")
TEST_IMAGE = "busybox:1.36.1"
SNAPSHOT_GROUP, SNAPSHOT_VERSION = "snapshot.storage.k8s.io", "v1"

T = TypeVar("T")
Obj = dict[str, Any]
# A plain dict handed to the client as a request body; it serialises dicts as they are.
Body = Any


def _skip_reason() -> str | None:
    if shutil.which("docker") is None:
        return "Docker is not installed"
    if shutil.which("kind") is None:
        return "kind is not installed"
    try:
        info = subprocess.run(["docker", "info"], capture_output=True, timeout=30, check=False)
    except subprocess.TimeoutExpired:
        return "the Docker daemon does not answer"
    if info.returncode != 0:
        return "the Docker daemon is not reachable"
    if not CONTEXT:
        return ("no e2e cluster: run tests/e2e/run.sh (it creates the kind cluster, deploys "
                "k8s/e2e and runs this suite)")
    return None


_REASON = _skip_reason()
if _REASON is not None:
    pytest.skip(_REASON, allow_module_level=True)

# Imported only when the suite runs: the unit-test machines need not import it.
from kubernetes_asyncio import client, config  # noqa: E402
from kubernetes_asyncio.client.api_client import ApiClient  # noqa: E402
from kubernetes_asyncio.client.exceptions import ApiException  # noqa: E402

# ------------------------------------------------------------------------------ helpers


class Kube:
    def __init__(self, api: ApiClient) -> None:
        self.core = client.CoreV1Api(api)
        self.apps = client.AppsV1Api(api)
        self.storage = client.StorageV1Api(api)
        self.custom = client.CustomObjectsApi(api)


@pytest.fixture
async def kube() -> AsyncIterator[Kube]:
    await config.load_kube_config(context=CONTEXT)
    async with ApiClient() as api:
        yield Kube(api)


async def wait_for(what: str, probe: Callable[[], Awaitable[T | None]],
                   timeout: float = 180.0, interval: float = 2.0) -> T:
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


def example(name: str, namespace: str) -> Body:
    """An object from k8s/examples/demo, moved to `namespace`: the examples are tested."""
    docs = [d for d in yaml.safe_load_all((EXAMPLES / name).read_text()) if d]
    assert len(docs) == 1, name
    obj: Body = copy.deepcopy(docs[0])
    obj["metadata"]["namespace"] = namespace
    return obj


def busybox_pod(name: str, claim: str, script: str) -> Body:
    """A restricted, non-root pod with the claim at /data (group 2000 via fsGroup)."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 1,
            "securityContext": {
                "runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 2000,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [{
                "name": "main",
                "image": TEST_IMAGE,
                "imagePullPolicy": "IfNotPresent",
                "command": ["/bin/sh", "-c", script],
                "securityContext": {
                    "allowPrivilegeEscalation": False,
                    "capabilities": {"drop": ["ALL"]},
                },
                "volumeMounts": [{"name": "data", "mountPath": "/data"}],
            }],
            "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": claim}}],
        },
    }


async def bound_pv(kube: Kube, namespace: str, claim: str) -> Any:
    """Wait for the claim to bind; return its PV after checking it is ours."""
    async def bound() -> Any:
        pvc = await kube.core.read_namespaced_persistent_volume_claim(claim, namespace)
        return pvc if pvc.status.phase == "Bound" else None

    pvc = await wait_for(f"PVC {claim} to bind", bound, timeout=300)
    pv = await kube.core.read_persistent_volume(pvc.spec.volume_name)
    assert pv.spec.csi.driver == DRIVER_NAME
    assert pv.spec.csi.volume_handle, "the driver returned no volume id"
    assert len(pv.spec.csi.volume_handle.encode()) <= 128
    assert pv.spec.persistent_volume_reclaim_policy == "Delete"
    assert pv.spec.claim_ref.name == claim and pv.spec.claim_ref.namespace == namespace
    return pv


async def pod_phase(kube: Kube, namespace: str, name: str, phases: set[str],
                    timeout: float = 240) -> str:
    async def reached() -> str | None:
        pod = await kube.core.read_namespaced_pod(name, namespace)
        if pod.status.phase == "Failed":
            log = await kube.core.read_namespaced_pod_log(name, namespace)
            raise AssertionError(f"pod {name} failed: {log}")
        phase: str = pod.status.phase
        return phase if phase in phases else None

    return await wait_for(f"pod {name} to reach {sorted(phases)}", reached, timeout)


async def read_back(kube: Kube, namespace: str, claim: str) -> str:
    """Run a pod that prints /data/token from the claim; return what it printed."""
    name = f"reader-{claim}"
    await kube.core.create_namespaced_pod(
        namespace, busybox_pod(name, claim, "cat /data/token"))
    await pod_phase(kube, namespace, name, {"Succeeded"})
    log: str = await kube.core.read_namespaced_pod_log(name, namespace)
    await kube.core.delete_namespaced_pod(name, namespace, grace_period_seconds=0)
    await wait_gone(f"pod {name}", lambda: kube.core.read_namespaced_pod(name, namespace))
    return log.strip()


async def gluster_mounts_on_node() -> list[str]:
    """The fuse.glusterfs mount points in the kind node's mount table."""
    proc = await asyncio.create_subprocess_exec(
        "docker", "exec", f"{CLUSTER}-control-plane", "cat", "/proc/1/mountinfo",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, stderr.decode()
    mounts = []
    for line in stdout.decode().splitlines():
        fields = line.split()
        separator = fields.index("-")
        if fields[separator + 1] == "fuse.glusterfs":
            mounts.append(fields[4])
    return mounts


async def snapshot_status(kube: Kube, namespace: str, name: str) -> Obj | None:
    snapshot: Obj = await kube.custom.get_namespaced_custom_object(
        SNAPSHOT_GROUP, SNAPSHOT_VERSION, namespace, "volumesnapshots", name)
    status: Obj = snapshot.get("status") or {}
    if status.get("error"):
        raise AssertionError(f"snapshot {name}: {status['error']}")
    return status if status.get("readyToUse") else None


# -------------------------------------------------------------------------------- tests


async def test_driver_is_deployed_and_registered(kube: Kube) -> None:
    driver = await kube.storage.read_csi_driver(DRIVER_NAME)
    assert driver.spec.attach_required is True
    assert driver.spec.fs_group_policy == "File"

    statefulset = await kube.apps.read_namespaced_stateful_set(
        "heketi-csi-controller", DRIVER_NAMESPACE)
    assert statefulset.status.ready_replicas == 1
    daemonset = await kube.apps.read_namespaced_daemon_set("heketi-csi-node", DRIVER_NAMESPACE)
    assert daemonset.status.number_ready == daemonset.status.desired_number_scheduled >= 1

    # Our registrar registered the node plugin: kubelet wrote the CSINode entry with the
    # node id NodeGetInfo returned (the node name).
    nodes = (await kube.core.list_node()).items

    async def registered() -> bool:
        for node in nodes:
            csinode = await kube.storage.read_csi_node(node.metadata.name)
            ids = {d.name: d.node_id for d in csinode.spec.drivers or []}
            if ids.get(DRIVER_NAME) != node.metadata.name:
                return False
        return True

    await wait_for("the driver on every CSINode", registered, timeout=120)


async def test_volume_lifecycle(kube: Kube) -> None:
    namespace = f"e2e-{uuid.uuid4().hex[:8]}"
    token = uuid.uuid4().hex
    namespace_body: Body = {
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": namespace,
                     "labels": {"pod-security.kubernetes.io/enforce": "restricted"}},
    }
    await kube.core.create_namespace(namespace_body)
    pv_names: list[str] = []
    mounts_before = await gluster_mounts_on_node()
    try:
        await _lifecycle(kube, namespace, token, pv_names, mounts_before)
    finally:
        await kube.core.delete_namespace(namespace)

    # Deleting the claims deleted the PVs, which happens only once DeleteVolume succeeded.
    for pv in pv_names:
        await wait_gone(f"PV {pv}", functools.partial(kube.core.read_persistent_volume, pv),
                        timeout=300)
    assert await gluster_mounts_on_node() == mounts_before, "a gluster mount was left behind"


async def _lifecycle(kube: Kube, namespace: str, token: str, pv_names: list[str],
                     mounts_before: list[str]) -> None:
    core = kube.core

    # 1. A claim from the example StorageClass binds to a PV of our driver.
    await core.create_namespaced_persistent_volume_claim(
        namespace, example("pvc.yaml", namespace))
    pv = await bound_pv(kube, namespace, "data")
    pv_names.append(pv.metadata.name)
    assert pv.spec.capacity["storage"] == "1Gi"

    # 2. A pod writes; while it runs the volume is attached (ControllerPublish) and
    #    FUSE-mounted on the node (NodeStage + NodePublish).
    await core.create_namespaced_pod(namespace, busybox_pod(
        "writer", "data", f"echo {token} > /data/token && sync && echo written && sleep 600"))
    await pod_phase(kube, namespace, "writer", {"Running"})

    async def written() -> bool:
        return "written" in await core.read_namespaced_pod_log("writer", namespace)

    await wait_for("the writer to write", written, timeout=60)
    attachments = (await kube.storage.list_volume_attachment()).items
    ours = [a for a in attachments if a.spec.source.persistent_volume_name == pv.metadata.name]
    assert len(ours) == 1 and ours[0].spec.attacher == DRIVER_NAME
    assert ours[0].status.attached is True
    assert len(await gluster_mounts_on_node()) > len(mounts_before)
    await core.delete_namespaced_pod("writer", namespace, grace_period_seconds=0)
    await wait_gone("pod writer", lambda: core.read_namespaced_pod("writer", namespace))

    # 3. A snapshot of the claim becomes ready, with a content object of our driver.
    await kube.custom.create_namespaced_custom_object(
        SNAPSHOT_GROUP, SNAPSHOT_VERSION, namespace, "volumesnapshots",
        example("volumesnapshot.yaml", namespace))
    status = await wait_for("the snapshot to be ready",
                            lambda: snapshot_status(kube, namespace, "data-snap"), timeout=300)
    content: Obj = await kube.custom.get_cluster_custom_object(
        SNAPSHOT_GROUP, SNAPSHOT_VERSION, "volumesnapshotcontents",
        status["boundVolumeSnapshotContentName"])
    assert content["spec"]["driver"] == DRIVER_NAME
    assert content["status"]["snapshotHandle"]
    assert content["status"]["readyToUse"] is True

    # 4. A claim restored from the snapshot holds what the writer wrote.
    await core.create_namespaced_persistent_volume_claim(
        namespace, example("pvc-from-snapshot.yaml", namespace))
    restored = await bound_pv(kube, namespace, "data-restored")
    pv_names.append(restored.metadata.name)
    assert restored.spec.csi.volume_handle != pv.spec.csi.volume_handle
    assert await read_back(kube, namespace, "data-restored") == token

    # 5. So does a clone of the claim.
    await core.create_namespaced_persistent_volume_claim(
        namespace, example("pvc-clone.yaml", namespace))
    clone = await bound_pv(kube, namespace, "data-clone")
    pv_names.append(clone.metadata.name)
    assert clone.spec.csi.volume_handle not in (
        pv.spec.csi.volume_handle, restored.spec.csi.volume_handle)
    assert await read_back(kube, namespace, "data-clone") == token

    # 6. Expansion: the PV and the claim's capacity follow the new request, and the data
    #    is still there (a mount after the resize completes any node-side step).
    await core.patch_namespaced_persistent_volume_claim(
        "data", namespace, {"spec": {"resources": {"requests": {"storage": "2Gi"}}}})

    async def pv_grown() -> bool:
        current = await core.read_persistent_volume(pv.metadata.name)
        return bool(current.spec.capacity["storage"] == "2Gi")

    await wait_for("the PV to grow to 2Gi", pv_grown, timeout=300)
    assert await read_back(kube, namespace, "data") == token

    async def claim_grown() -> bool:
        claim = await core.read_namespaced_persistent_volume_claim("data", namespace)
        return bool((claim.status.capacity or {}).get("storage") == "2Gi")

    await wait_for("the claim's capacity to be 2Gi", claim_grown, timeout=300)

    # 7. Delete the snapshot: its content goes with it (deletionPolicy Delete).
    await kube.custom.delete_namespaced_custom_object(
        SNAPSHOT_GROUP, SNAPSHOT_VERSION, namespace, "volumesnapshots", "data-snap")
    await wait_gone("the snapshot content", lambda: kube.custom.get_cluster_custom_object(
        SNAPSHOT_GROUP, SNAPSHOT_VERSION, "volumesnapshotcontents",
        status["boundVolumeSnapshotContentName"]), timeout=300)
    for claim in ("data", "data-restored", "data-clone"):
        await core.delete_namespaced_persistent_volume_claim(claim, namespace)
