"""What a pod sees of a volume's size: `df` shows the claim's size, the expanded size after
an online expansion (same pod, no restart), and the larger size of a snapshot restored to a
larger claim. (The simulator's bricks are file systems of the volume's size, as Heketi's
LVs are; with directory bricks `df` would show the node's disk in all three.)"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.e2e.kube import (
    Kube,
    bound_pv,
    busybox_pod,
    claim,
    create_snapshot,
    delete_pod,
    log_line,
    pod_phase,
    run_pod,
)

pytestmark = pytest.mark.e2e

GIB_KIB = 1024 * 1024
# XFS keeps its log (64 MiB) and metadata inside the brick, as on a real Heketi.
OVERHEAD = 0.08
DF_LOOP = ("while true; do echo size $(df -P -k /data | awk 'NR==2 {print $2}'); "
           "sleep 1; done")


def about(gib: int) -> Callable[[str], bool]:
    """A predicate on a `size <KiB>` log line: about `gib` GiB, never more."""
    def matches(line: str) -> bool:
        word, _, kib = line.partition(" ")
        return word == "size" and kib.isdigit() and \
            gib * GIB_KIB * (1 - OVERHEAD) <= int(kib) <= gib * GIB_KIB
    return matches


async def test_df_in_a_pod_shows_the_claim_size_and_the_expanded_size(
        kube: Kube, namespace: str) -> None:
    await kube.core.create_namespaced_persistent_volume_claim(namespace, claim("sized"))
    await bound_pv(kube, namespace, "sized")
    await kube.core.create_namespaced_pod(namespace, busybox_pod(
        "watcher", {"/data": "sized"}, DF_LOOP))
    await pod_phase(kube, namespace, "watcher", {"Running"})
    await log_line(kube, namespace, "watcher", about(1), "df showing about 1 GiB")
    before = await kube.core.read_namespaced_pod("watcher", namespace)

    await kube.core.patch_namespaced_persistent_volume_claim(
        "sized", namespace, {"spec": {"resources": {"requests": {"storage": "3Gi"}}}})
    await log_line(kube, namespace, "watcher", about(3), "df showing about 3 GiB",
                   timeout=180)
    after = await kube.core.read_namespaced_pod("watcher", namespace)
    assert after.metadata.uid == before.metadata.uid
    assert after.status.container_statuses[0].restart_count == 0
    await delete_pod(kube, namespace, "watcher")


async def test_snapshot_restored_to_a_larger_claim_has_the_larger_size(
        kube: Kube, namespace: str) -> None:
    await kube.core.create_namespaced_persistent_volume_claim(namespace, claim("small"))
    await bound_pv(kube, namespace, "small")
    phase, log = await run_pod(kube, namespace, busybox_pod(
        "writer", {"/data": "small"}, "echo kept > /data/state && sync"))
    assert phase == "Succeeded", log
    await create_snapshot(kube, namespace, "snap", "small")

    await kube.core.create_namespaced_persistent_volume_claim(namespace, claim(
        "larger", size="2Gi", data_source={"apiGroup": "snapshot.storage.k8s.io",
                                           "kind": "VolumeSnapshot", "name": "snap"}))
    await bound_pv(kube, namespace, "larger")
    phase, log = await run_pod(kube, namespace, busybox_pod(
        "reader", {"/data": "larger"},
        "cat /data/state; echo size $(df -P -k /data | awk 'NR==2 {print $2}')"))
    assert phase == "Succeeded", log
    lines = log.split("\n")
    assert lines[0] == "kept", log
    assert any(about(2)(line) for line in lines), log
