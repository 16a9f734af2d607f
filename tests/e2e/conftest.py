"""Fixtures of the real-Kubernetes suite.

The suite runs against a cluster that is already up with the driver deployed: the local one
(`make k8s-up`, which `make e2e` follows with the tests) or one of the user's with `k8s/e2e`
deployed (HEKETI_CSI_E2E_KUBECONFIG / HEKETI_CSI_E2E_CONTEXT / HEKETI_CSI_E2E_HEKETI_URL;
docs/deploy.md, "End-to-end tests"). Without a reachable cluster every selected test FAILS
with the reason: a missing cluster is never a pass.

Each test gets a namespace of its own; at the end the namespace is deleted, the suite waits
until every PV of it is gone (DeleteVolume succeeded), and checks that Heketi holds exactly
the volumes it held before and that no gluster mount of the test is left on the node.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import os
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from kubernetes_asyncio import config
from kubernetes_asyncio.client.api_client import ApiClient
from kubernetes_asyncio.client.exceptions import ApiException

from services.controller.heketi.client import HeketiClient
from services.node import mountinfo
from tests.e2e.kube import (
    DRIVER_NAMESPACE,
    Body,
    Kube,
    wait_for,
    wait_gone,
    wait_registered,
)

KUBECONFIG_ENV = "HEKETI_CSI_E2E_KUBECONFIG"
CONTEXT_ENV = "HEKETI_CSI_E2E_CONTEXT"
HEKETI_URL_ENV = "HEKETI_CSI_E2E_HEKETI_URL"
DEFAULT_HEKETI_URL = "http://127.0.0.1:18080"
HEKETI_SECRET = "heketi-admin"


def kubeconfig_path() -> Path:
    given = os.environ.get(KUBECONFIG_ENV)
    if given:
        return Path(given)
    from devtools.k8s.config import KUBECONFIG
    return KUBECONFIG


@dataclass(frozen=True)
class Cluster:
    kubeconfig: Path
    context: str | None
    heketi_url: str
    local: bool  # the node is this machine: its mounts and bricks can be inspected here


@pytest.fixture(scope="session")
def cluster() -> Cluster:
    path = kubeconfig_path()
    if not path.is_file():
        pytest.fail(f"no Kubernetes cluster: {path} does not exist. Bring the local cluster "
                    "up first (`make k8s-up`), or point HEKETI_CSI_E2E_KUBECONFIG at one "
                    "with k8s/e2e deployed (docs/deploy.md, \"End-to-end tests\").",
                    pytrace=False)
    return Cluster(kubeconfig=path, context=os.environ.get(CONTEXT_ENV) or None,
                   heketi_url=os.environ.get(HEKETI_URL_ENV, DEFAULT_HEKETI_URL),
                   local=KUBECONFIG_ENV not in os.environ)


@pytest.fixture
async def kube(cluster: Cluster) -> AsyncIterator[Kube]:
    loader = config.load_kube_config(config_file=str(cluster.kubeconfig),
                                     context=cluster.context)
    await loader
    async with ApiClient() as api:
        yield Kube(api)


@pytest.fixture
async def driver_ready(kube: Kube) -> None:
    """The controller and every node plugin are ready, and kubelet lists the driver."""
    async def ready() -> bool:
        sts = await kube.apps.read_namespaced_stateful_set("heketi-csi-controller",
                                                           DRIVER_NAMESPACE)
        ds = await kube.apps.read_namespaced_daemon_set("heketi-csi-node", DRIVER_NAMESPACE)
        if sts.status.ready_replicas != 1:
            return False
        return bool(ds.status.number_ready == ds.status.desired_number_scheduled >= 1)

    await wait_for("the driver's pods to be ready", ready, timeout=180)
    await wait_registered(kube)


@pytest.fixture
async def heketi(kube: Kube, cluster: Cluster) -> AsyncIterator[HeketiClient]:
    """A client of the Heketi the driver uses, with the admin key from the driver's Secret."""
    secret = await kube.core.read_namespaced_secret(HEKETI_SECRET, DRIVER_NAMESPACE)
    key = base64.b64decode(secret.data["key"]).decode()
    async with HeketiClient(cluster.heketi_url, user="admin", key=key) as client:
        yield client


def gluster_mount_points() -> set[str]:
    return {m.mount_point for m in mountinfo.read() if m.fstype == "fuse.glusterfs"}


def heketi_id(handle: str) -> str:
    """The Heketi volume id of a volume or snapshot handle (`<kind>:<backend>:<id>`, adopted
    volumes with a fourth field, the mark)."""
    return handle.split(":")[2]


async def handles_of(kube: Kube, namespace: str) -> set[str]:
    """Heketi ids of every PV bound to a claim of `namespace` and of every snapshot content
    of its VolumeSnapshots."""
    ids = {heketi_id(pv.spec.csi.volume_handle)
           for pv in (await kube.core.list_persistent_volume()).items
           if pv.spec.csi is not None and pv.spec.claim_ref is not None
           and pv.spec.claim_ref.namespace == namespace}
    contents = await kube.custom.list_cluster_custom_object(
        "snapshot.storage.k8s.io", "v1", "volumesnapshotcontents")
    for content in contents.get("items", []):
        ref = content["spec"].get("volumeSnapshotRef") or {}
        handle = (content.get("status") or {}).get("snapshotHandle")
        if ref.get("namespace") == namespace and handle:
            ids.add(heketi_id(handle))
    return ids


@pytest.fixture
async def namespace(kube: Kube, heketi: HeketiClient, cluster: Cluster,
                    driver_ready: None, request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """A fresh namespace; afterwards nothing of the test may be left anywhere: no PV, no
    Heketi volume of its claims or snapshots, no Heketi volume named after it, no mount.

    (Only what the test can be shown to own is checked, so that the suite can run beside
    other users of the same cluster and Heketi.)"""
    words = request.node.name.lower().removeprefix("test_").replace("_", "-")
    name = f"e2e-{words[:24].strip('-')}-{secrets.token_hex(2)}"
    volumes_before = set(await heketi.list_volume_ids())
    mounts_before = gluster_mount_points() if cluster.local else set()
    body: Body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
    await kube.core.create_namespace(body)
    owned: set[str] = set()
    marks: set[str] = set()  # what a mount of the test's volumes has in its path
    try:
        yield name
    finally:
        owned = await handles_of(kube, name)
        ours = [pv for pv in (await kube.core.list_persistent_volume()).items
                if pv.spec.claim_ref is not None and pv.spec.claim_ref.namespace == name]
        pvs = [pv.metadata.name for pv in ours]
        marks = {*pvs, *(hashlib.sha256(pv.spec.csi.volume_handle.encode()).hexdigest()
                         for pv in ours if pv.spec.csi is not None)}
        try:
            await kube.core.delete_namespace(name)
        except ApiException as exc:
            if exc.status != 404:
                raise
        await wait_gone(f"namespace {name}", lambda: kube.core.read_namespace(name), 300)
        for pv in pvs:
            await wait_gone(f"PV {pv}", functools.partial(kube.core.read_persistent_volume, pv),
                            300)
    after = set(await heketi.list_volume_ids())
    left = sorted(owned & after)
    for volume_id in sorted(after - volumes_before - owned):
        if f"_{name}_" in (await heketi.volume_info(volume_id)).name:
            left.append(volume_id)
    assert not left, f"Heketi volumes of {name} left behind: {left}"
    if cluster.local:
        stray = {m for m in gluster_mount_points() - mounts_before
                 if any(mark in m for mark in marks)}
        assert not stray, f"gluster mounts left on the node: {sorted(stray)}"
