"""Both install paths of the driver on a real cluster: the Helm chart (install, then
`helm upgrade` under a pod that keeps writing) and the kustomize install (k8s/local, what
`python -m devtools.k8s deploy` applies and the rest of the suite runs against).

The two cannot run side by side (one CSIDriver name), so the Helm test removes the kustomize
driver's objects (saved as they were; Heketi, the Secret and the classes stay), installs the
chart with the very images that were running, and in any case (pass or fail) uninstalls the
chart and re-creates the saved objects. The kustomize test then checks that driver end to
end. Local cluster only
(devtools/k8s); run it under the cluster lock like the rest of the suite.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from devtools.k8s import deploy, images, registry
from devtools.k8s.build import binary
from devtools.k8s.cluster import kubectl
from devtools.k8s.config import REGISTRY
from devtools.k8s.helm import CHART, NAMESPACE, RELEASE, helm_path
from services.common.commands import run_command
from tests.e2e.conftest import Cluster
from tests.e2e.kube import (
    DRIVER_NAMESPACE,
    STORAGE_CLASS,
    Kube,
    bound_pv,
    busybox_pod,
    claim,
    delete_pod,
    pod_log,
    pod_phase,
    read_file,
    run_pod,
    unique,
    wait_for,
    wait_gone,
    wait_registered,
)

pytestmark = pytest.mark.e2e

HELM_CLASS = "glusterfs-csi-helm"
CONTROLLER, NODE = "heketi-csi-controller", "heketi-csi-node"
# Appends a numbered line until /data/stop appears, then checks that every line it wrote is
# there, in order. `set -e`: an I/O error ends it with a non-zero exit.
WRITER = """set -e
i=0
while [ ! -e /data/stop ]; do echo "$i" >> /data/log; i=$((i+1)); sleep 0.05; done
test "$(wc -l < /data/log)" -eq "$i"
seq 0 $((i-1)) > /tmp/expected
cmp /tmp/expected /data/log
echo "writer done: $i lines"
"""


async def helm(cluster: Cluster, *args: str, timeout: float = 420) -> str:
    result = await run_command([str(helm_path()), "--kubeconfig", str(cluster.kubeconfig),
                                "--namespace", NAMESPACE, *args], timeout)
    assert result.returncode == 0, f"helm {' '.join(args[:2])}: {result.output}"
    return result.output


async def running_install(kube: Kube) -> tuple[str, str, bool]:
    """(driver image, controller --heketi-url, installed by Helm) of the running driver."""
    sts = await kube.apps.read_namespaced_stateful_set(CONTROLLER, DRIVER_NAMESPACE)
    ctl = next(c for c in sts.spec.template.spec.containers if c.name == CONTROLLER)
    url = next(a.split("=", 1)[1] for a in ctl.args if a.startswith("--heketi-url="))
    by_helm = (sts.metadata.labels or {}).get("app.kubernetes.io/managed-by") == "Helm"
    return ctl.image, url, by_helm


async def driver_serving(kube: Kube) -> None:
    """Controller and node plugins ready (of the current generation), driver on CSINode."""
    async def ready() -> bool:
        sts = await kube.apps.read_namespaced_stateful_set(CONTROLLER, DRIVER_NAMESPACE)
        ds = await kube.apps.read_namespaced_daemon_set(NODE, DRIVER_NAMESPACE)
        return bool(sts.status.ready_replicas == 1
                    and sts.status.updated_replicas == 1
                    and sts.status.current_revision == sts.status.update_revision
                    and ds.status.observed_generation == ds.metadata.generation
                    and ds.status.number_ready == ds.status.desired_number_scheduled
                    == ds.status.updated_number_scheduled >= 1)

    await wait_for("the driver's pods to be ready", ready, timeout=300)
    await wait_registered(kube)


def helm_values(image: str, heketi_url: str, log_level: str) -> dict[str, Any]:
    repository, tag = image.rsplit(":", 1)
    return {
        # Always: every pod start resolves the tag at the cluster's registry, as a user's
        # cluster does with theirs (the e2e test reads containerd's requests in its log).
        "image": {"repository": repository, "tag": tag, "pullPolicy": "Always"},
        "heketi": {"url": heketi_url, "secret": {"name": "heketi-admin"}},
        "logLevel": log_level,
        # The kustomize install's classes stay (k8s/examples): own names here.
        "storageClasses": [{"name": HELM_CLASS, "parameters": {
            "volumetype": "none", "volumenameprefix": "helm"}}],
        "volumeSnapshotClass": {"create": False},
    }


@pytest.fixture
async def helm_driver(kube: Kube, cluster: Cluster,
                      driver_ready: None) -> AsyncIterator[dict[str, Any]]:
    """The driver installed by the chart instead of kustomize; afterwards (whatever
    happened) the chart uninstalled and the kustomize install back, same images."""
    if not cluster.local:
        pytest.skip("swaps the driver's install: needs the local cluster (devtools/k8s)")
    helm_path()  # fails before anything is touched when helm is not built
    image, heketi_url, by_helm = await running_install(kube)
    assert not by_helm, "the driver is not the kustomize install: restore it first"
    values = helm_values(image, heketi_url, "info")
    saved = await asyncio.to_thread(deploy.saved_driver)
    try:
        await asyncio.to_thread(deploy.remove_driver)
        await install_or_upgrade(cluster, "install", values)
        await driver_serving(kube)
        yield values
    finally:
        try:
            await helm_uninstall(cluster)
        finally:
            await asyncio.to_thread(deploy.restore_driver, saved)
        await driver_serving(kube)
        assert await running_install(kube) == (image, heketi_url, False)


async def install_or_upgrade(cluster: Cluster, verb: str, values: dict[str, Any]) -> None:
    with tempfile.TemporaryDirectory(prefix="helm-e2e-") as tmp:
        path = Path(tmp) / "values.yaml"
        path.write_text(yaml.safe_dump(values))
        await helm(cluster, verb, RELEASE, str(CHART), "--values", str(path),
                   "--wait", "--timeout", "5m")


async def helm_uninstall(cluster: Cluster) -> None:
    listed = await helm(cluster, "list", "--all", "--short", "--filter", f"^{RELEASE}$")
    if RELEASE in listed.split():
        await helm(cluster, "uninstall", RELEASE, "--wait", "--timeout", "5m")
    await asyncio.to_thread(kubectl, "-n", NAMESPACE, "wait", "--for=delete", "pod",
                            "-l", "app.kubernetes.io/part-of=heketi-csi", "--timeout=300s")


def manifest_path(image: str) -> str:
    """The registry API path of an image reference's manifest (`<registry>/<repo>:<tag>`)."""
    assert image.startswith(f"{REGISTRY}/"), f"{image} is not from the cluster's registry"
    repository, tag = image.removeprefix(f"{REGISTRY}/").rsplit(":", 1)
    return f"/v2/{repository}/manifests/{tag}"


def containerd_requests(image: str) -> list[tuple[str, int, str]]:
    """containerd's requests for the image's manifest, from the registry's access log."""
    return [r for r in registry.requests_for(manifest_path(image)) if "containerd" in r[2]]


async def test_helm_install_and_upgrade_under_a_writer(kube: Kube, cluster: Cluster,
                                                       helm_driver: dict[str, Any],
                                                       namespace: str) -> None:
    sts = await kube.apps.read_namespaced_stateful_set(CONTROLLER, DRIVER_NAMESPACE)
    assert sts.metadata.labels["app.kubernetes.io/managed-by"] == "Helm"
    image = f"{helm_driver['image']['repository']}:{helm_driver['image']['tag']}"
    asked_before = len(await asyncio.to_thread(containerd_requests, image))
    await kube.core.create_namespaced_persistent_volume_claim(
        namespace, claim("data", storage_class=HELM_CLASS))
    pv = await bound_pv(kube, namespace, "data")
    writer = unique("writer")
    await kube.core.create_namespaced_pod(namespace, busybox_pod(
        writer, {"/data": "data"}, WRITER))
    await pod_phase(kube, namespace, writer, {"Running"})
    node_pods = await kube.core.list_namespaced_pod(
        DRIVER_NAMESPACE, label_selector=f"app.kubernetes.io/name={NODE}")
    old_node_pods = {p.metadata.uid for p in node_pods.items}

    # A changed value under the running writer: both the controller and the node plugin
    # roll (their args change), the node plugin while the writer's volume is mounted.
    await install_or_upgrade(cluster, "upgrade", {**helm_driver, "logLevel": "debug"})
    await driver_serving(kube)
    ds = await kube.apps.read_namespaced_daemon_set(NODE, DRIVER_NAMESPACE)
    node = next(c for c in ds.spec.template.spec.containers if c.name == NODE)
    assert "--log-level=debug" in node.args
    node_pods = await kube.core.list_namespaced_pod(
        DRIVER_NAMESPACE, label_selector=f"app.kubernetes.io/name={NODE}")
    assert not old_node_pods & {p.metadata.uid for p in node_pods.items}, \
        "the upgrade did not replace the node plugin"
    # pullPolicy Always: the replaced pods asked the cluster's registry for the image again.
    asked = await asyncio.to_thread(containerd_requests, image)
    assert len(asked) > asked_before and asked[-1][1] == 200, \
        f"the upgraded pods did not pull {image} from the registry: {asked[asked_before:]}"

    before = await lines_written(cluster, namespace, writer)

    async def more() -> bool:
        return await lines_written(cluster, namespace, writer) > before

    await wait_for("the writer to write after the upgrade", more, timeout=60)
    await pod_exec(cluster, namespace, writer, "touch /data/stop")
    phase = await pod_phase(kube, namespace, writer, {"Succeeded", "Failed"})
    log = await pod_log(kube, namespace, writer)
    assert phase == "Succeeded", f"the writer failed across the upgrade: {log}"
    assert "writer done:" in log and "error" not in log.lower(), log
    written = int(log.split("writer done:")[1].split()[0])
    await delete_pod(kube, namespace, writer)
    # The data, read back by a fresh pod: every line, in order.
    text = await read_file(kube, namespace, "data", "log")
    assert text.split() == [str(i) for i in range(written)]

    await kube.core.delete_namespaced_persistent_volume_claim("data", namespace)
    await wait_gone(f"PV {pv.metadata.name}",
                    lambda: kube.core.read_persistent_volume(pv.metadata.name), 300)


async def lines_written(cluster: Cluster, namespace: str, pod: str) -> int:
    return int(await pod_exec(cluster, namespace, pod, "wc -l < /data/log"))


async def pod_exec(cluster: Cluster, namespace: str, pod: str, script: str) -> str:
    result = await run_command([str(binary("kubectl")), "--kubeconfig", str(cluster.kubeconfig),
                                "-n", namespace, "exec", pod, "--", "sh", "-c", script], 30)
    assert result.returncode == 0, f"exec {script!r} in {pod}: {result.output}"
    return result.output.strip()


async def test_kustomize_install_serves_a_volume(kube: Kube, namespace: str) -> None:
    """The kustomize install (as the Helm test left it, or as deployed) provisions, mounts,
    writes and reads a volume; the rest of the suite (test_volumes.py) goes further."""
    _image, _url, by_helm = await running_install(kube)
    assert not by_helm
    await kube.core.create_namespaced_persistent_volume_claim(
        namespace, claim("data", storage_class=STORAGE_CLASS))
    await bound_pv(kube, namespace, "data")
    phase, log = await run_pod(kube, namespace, busybox_pod(
        unique("writer"), {"/data": "data"}, "echo kustomize > /data/f && cat /data/f"))
    assert phase == "Succeeded" and log.strip() == "kustomize", log
    assert await read_file(kube, namespace, "data", "f") == "kustomize"


async def test_the_driver_image_is_pulled_from_the_registry(kube: Kube, cluster: Cluster,
                                                            driver_ready: None) -> None:
    """The driver's pods run the image `deploy` pushed to the cluster's registry, pulled by
    containerd from there (as a user's cluster pulls the image they pushed), not an image
    imported into containerd's store."""
    if not cluster.local:
        pytest.fail("reads the local cluster's registry and containerd (make k8s-up)",
                    pytrace=False)
    image, _url, _by_helm = await running_install(kube)
    repository, tag = image.removeprefix(f"{REGISTRY}/").rsplit(":", 1)
    assert image.startswith(f"{REGISTRY}/heketi-csi:ctx-"), image
    digest = await asyncio.to_thread(registry.manifest_digest, repository, tag)
    assert digest, f"the registry has no {image}"

    pods = await kube.core.list_namespaced_pod(
        DRIVER_NAMESPACE, label_selector="app.kubernetes.io/part-of=heketi-csi")
    statuses = [s for p in pods.items for s in p.status.container_statuses or []
                if s.image == image]
    assert len(statuses) >= 3, "controller, node plugin and registrar run the driver image"
    for status in statuses:
        # kubelet reports the repository digest containerd resolved at the registry
        assert status.image_id == f"{REGISTRY}/{repository}@{digest}", status.image_id

    names = await asyncio.to_thread(images.image_names)
    assert image in names
    assert not {f"ghcr.io/heketi-csi/heketi-csi:{tag}",
                f"docker.io/library/heketi-csi:{tag}"} & names, \
        "the driver image was imported into containerd"
    requests = await asyncio.to_thread(containerd_requests, image)
    assert any(status == 200 for _method, status, _agent in requests), \
        f"no successful manifest request by containerd for {image}: {requests}"
