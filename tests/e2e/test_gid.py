"""Non-root pods and the per-volume GID of `gidMin`/`gidMax`, as the in-tree plugin gave it:
kubelet adds the PV's `pv.beta.kubernetes.io/gid` to the pod's groups, and nothing re-owns
the volume: the controller annotates its PVs, and the CSIDriver's fsGroupPolicy is None."""

from __future__ import annotations

import pytest

from tests.e2e.kube import Kube, PodUser, bound_pv, busybox_pod, claim, run_pod, wait_for

pytestmark = pytest.mark.e2e

NON_ROOT = PodUser(uid=1000, gid=1000)
GID_ANNOTATION = "pv.beta.kubernetes.io/gid"


async def test_a_non_root_pod_without_fs_group_writes_through_the_volume_gid(
        kube: Kube, namespace: str) -> None:
    await kube.core.create_namespaced_persistent_volume_claim(namespace, claim("shared"))
    pv = await bound_pv(kube, namespace, "shared")
    gid = pv.spec.csi.volume_attributes["gid"]

    async def annotated() -> str | None:
        current = await kube.core.read_persistent_volume(pv.metadata.name)
        value: str | None = (current.metadata.annotations or {}).get(GID_ANNOTATION)
        return value

    # The controller adds it as soon as it sees the PV (a watch): well before a pod mounts.
    assert await wait_for(f"{GID_ANNOTATION} on PV {pv.metadata.name}", annotated,
                          timeout=30) == gid
    phase, log = await run_pod(kube, namespace, busybox_pod(
        "non-root", {"/data": "shared"}, "id -G; echo hello > /data/mine && echo wrote",
        user=NON_ROOT))
    assert phase == "Succeeded" and log.split()[-1] == "wrote", log
    assert gid in log.split()[:-1], f"the pod's groups lack the volume's GID {gid}: {log}"


async def test_a_pod_with_an_fs_group_does_not_change_the_volume_group(
        kube: Kube, namespace: str) -> None:
    await kube.core.create_namespaced_persistent_volume_claim(namespace, claim("owned"))
    pv = await bound_pv(kube, namespace, "owned")
    gid = pv.spec.csi.volume_attributes.get("gid")
    assert gid, "the volume has no GID (gidMin/gidMax are set in the example class)"
    phase, log = await run_pod(kube, namespace, busybox_pod(
        "with-fsgroup", {"/data": "owned"}, "stat -c %g /data",
        user=PodUser(uid=1000, gid=1000, fs_group=3456)))
    assert phase == "Succeeded", log
    assert log.strip() == gid, f"the volume root's group is {log.strip()}, not the volume's {gid}"
