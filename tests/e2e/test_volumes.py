"""A volume's life through the real Kubernetes: provisioning, sharing, read-only, expansion,
snapshots, restores and clones, asserted on the API objects, on what pods read and on the
gluster bricks."""

from __future__ import annotations

import pytest

from services.controller.heketi.client import HeketiClient
from tests.e2e.conftest import Cluster, heketi_id
from tests.e2e.kube import (
    DRIVER_NAME,
    Kube,
    bound_pv,
    busybox_pod,
    claim,
    create_snapshot,
    delete_pod,
    log_line,
    pod_log,
    pod_phase,
    read_file,
    run_pod,
    unique,
    wait_for,
    wait_gone,
)
from tests.e2e.pool import need_pool, read_bricks

pytestmark = pytest.mark.e2e

WRITE_FILE = "echo {token} > /data/{path} && sync && echo written && exec sleep 3600"


async def test_driver_is_deployed_and_registered(kube: Kube, driver_ready: None) -> None:
    driver = await kube.storage.read_csi_driver(DRIVER_NAME)
    assert driver.spec.attach_required is True
    assert "Persistent" in driver.spec.volume_lifecycle_modes


async def test_two_pods_share_a_rwx_volume_and_a_read_only_mount_cannot_write(
        kube: Kube, namespace: str, heketi: HeketiClient, cluster: Cluster) -> None:
    token = unique("token")
    await kube.core.create_namespaced_persistent_volume_claim(namespace, claim("shared"))
    pv = await bound_pv(kube, namespace, "shared")

    await kube.core.create_namespaced_pod(namespace, busybox_pod(
        "writer", {"/data": "shared"}, WRITE_FILE.format(token=token, path="token")))
    await log_line(kube, namespace, "writer", lambda line: line == "written", "'written'")

    # A second pod on the same claim, while the first still has it mounted, reads it.
    assert await read_file(kube, namespace, "shared", "token") == token

    # The data is on the three bricks, one on each server of the local cluster's pool.
    if cluster.local:
        info = await heketi.volume_info(heketi_id(pv.spec.csi.volume_handle))
        gluster_volume = info.mount.device.partition(":")[2]
        on_bricks = await read_bricks(need_pool(cluster), gluster_volume, "token")
        assert sorted(on_bricks) == [1, 2, 3], f"bricks of {gluster_volume}: {on_bricks}"
        assert all(b.decode().strip() == token for b in on_bricks.values()), \
            f"{token} is not on every brick of {gluster_volume}: {on_bricks}"

    # Mounted read-only, the volume can be read and not written.
    phase, log = await run_pod(kube, namespace, busybox_pod(
        "read-only", {"/data": "shared"},
        "cat /data/token; if touch /data/other 2>/dev/null; then echo WROTE; "
        "else echo refused; fi", read_only=frozenset({"/data"})))
    assert phase == "Succeeded", log
    assert log.split() == [token, "refused"], log

    # A ReadOnlyMany claim cloned from it: readable, not writable.
    await kube.core.create_namespaced_persistent_volume_claim(namespace, claim(
        "rox", modes=("ReadOnlyMany",),
        data_source={"kind": "PersistentVolumeClaim", "name": "shared"}))
    await bound_pv(kube, namespace, "rox")
    phase, log = await run_pod(kube, namespace, busybox_pod(
        "rox-reader", {"/data": "rox"},
        "cat /data/token; if touch /data/other 2>/dev/null; then echo WROTE; "
        "else echo refused; fi", read_only=frozenset({"/data"})))
    assert phase == "Succeeded", log
    assert log.split() == [token, "refused"], log
    await delete_pod(kube, namespace, "writer")


async def test_online_expansion_reaches_heketi_without_restarting_the_pod(
        kube: Kube, namespace: str, heketi: HeketiClient) -> None:
    await kube.core.create_namespaced_persistent_volume_claim(namespace, claim("grow"))
    pv = await bound_pv(kube, namespace, "grow")
    assert (await heketi.volume_info(heketi_id(pv.spec.csi.volume_handle))).size_gib == 1
    await kube.core.create_namespaced_pod(namespace, busybox_pod(
        "user", {"/data": "grow"},
        "i=0; while true; do i=$((i+1)); echo $i > /data/tick || echo IOERROR; "
        "echo tick $i; sleep 0.5; done"))
    await pod_phase(kube, namespace, "user", {"Running"})
    before = await kube.core.read_namespaced_pod("user", namespace)

    await kube.core.patch_namespaced_persistent_volume_claim(
        "grow", namespace, {"spec": {"resources": {"requests": {"storage": "2Gi"}}}})

    async def claim_grown() -> bool:
        pvc = await kube.core.read_namespaced_persistent_volume_claim("grow", namespace)
        return bool((pvc.status.capacity or {}).get("storage") == "2Gi")

    await wait_for("the claim's capacity to reach 2Gi", claim_grown, timeout=180)
    current = await kube.core.read_persistent_volume(pv.metadata.name)
    assert current.spec.capacity["storage"] == "2Gi"
    assert (await heketi.volume_info(heketi_id(pv.spec.csi.volume_handle))).size_gib == 2

    after = await kube.core.read_namespaced_pod("user", namespace)
    assert after.metadata.uid == before.metadata.uid
    assert after.status.container_statuses[0].restart_count == 0
    seen = (await pod_log(kube, namespace, "user")).split("\n")
    assert "IOERROR" not in seen
    await delete_pod(kube, namespace, "user")


async def test_snapshot_restore_clone_and_deleting_the_source(
        kube: Kube, namespace: str, heketi: HeketiClient) -> None:
    await kube.core.create_namespaced_persistent_volume_claim(namespace, claim("origin"))
    await bound_pv(kube, namespace, "origin")
    phase, log = await run_pod(kube, namespace, busybox_pod(
        "first", {"/data": "origin"}, "echo old > /data/state && sync"))
    assert phase == "Succeeded", log

    status = await create_snapshot(kube, namespace, "snap", "origin")
    content = await kube.custom.get_cluster_custom_object(
        "snapshot.storage.k8s.io", "v1", "volumesnapshotcontents",
        status["boundVolumeSnapshotContentName"])
    assert content["spec"]["driver"] == DRIVER_NAME

    phase, log = await run_pod(kube, namespace, busybox_pod(
        "second", {"/data": "origin"}, "echo new > /data/state && sync"))
    assert phase == "Succeeded", log

    await kube.core.create_namespaced_persistent_volume_claim(namespace, claim(
        "restored", data_source={"apiGroup": "snapshot.storage.k8s.io",
                                 "kind": "VolumeSnapshot", "name": "snap"}))
    await kube.core.create_namespaced_persistent_volume_claim(namespace, claim(
        "cloned", data_source={"kind": "PersistentVolumeClaim", "name": "origin"}))
    await bound_pv(kube, namespace, "restored")
    await bound_pv(kube, namespace, "cloned")
    assert await read_file(kube, namespace, "restored", "state") == "old"
    assert await read_file(kube, namespace, "cloned", "state") == "new"

    # The source goes while its snapshot, restore and clone exist; they keep their data.
    origin_pv = (await kube.core.read_namespaced_persistent_volume_claim(
        "origin", namespace)).spec.volume_name
    await kube.core.delete_namespaced_persistent_volume_claim("origin", namespace)
    await wait_gone("the source PV", lambda: kube.core.read_persistent_volume(origin_pv), 180)
    assert await read_file(kube, namespace, "restored", "state") == "old"
    assert await read_file(kube, namespace, "cloned", "state") == "new"

    await kube.custom.delete_namespaced_custom_object(
        "snapshot.storage.k8s.io", "v1", namespace, "volumesnapshots", "snap")
    await wait_gone("the snapshot content", lambda: kube.custom.get_cluster_custom_object(
        "snapshot.storage.k8s.io", "v1", "volumesnapshotcontents",
        status["boundVolumeSnapshotContentName"]), timeout=180)
