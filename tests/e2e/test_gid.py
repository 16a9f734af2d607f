"""Non-root pods and the per-volume GID of `gidMin`/`gidMax`, as the in-tree plugin gave it:
kubelet adds the PV's `pv.beta.kubernetes.io/gid` to the pod's groups, and nothing re-owns
the volume (issue "In-tree parity")."""

from __future__ import annotations

import pytest

from tests.e2e.kube import Kube, PodUser, bound_pv, busybox_pod, claim, run_pod

pytestmark = pytest.mark.e2e

IN_TREE_PARITY = ("issue 'In-tree parity and a way off the in-tree plugin: GIDs that kubelet "
                  "honours, and heketi-csi migrate for existing PVs'")
NON_ROOT = PodUser(uid=1000, gid=1000)


@pytest.mark.xfail(reason=IN_TREE_PARITY, strict=True)
async def test_a_non_root_pod_without_fs_group_writes_through_the_volume_gid(
        kube: Kube, namespace: str) -> None:
    await kube.core.create_namespaced_persistent_volume_claim(namespace, claim("shared"))
    pv = await bound_pv(kube, namespace, "shared")
    assert "pv.beta.kubernetes.io/gid" in (pv.metadata.annotations or {}), \
        "the PV carries no pv.beta.kubernetes.io/gid annotation"
    phase, log = await run_pod(kube, namespace, busybox_pod(
        "non-root", {"/data": "shared"}, "id -G; echo hello > /data/mine && echo wrote",
        user=NON_ROOT))
    assert phase == "Succeeded" and log.split()[-1] == "wrote", log


@pytest.mark.xfail(reason=IN_TREE_PARITY, strict=True)
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
