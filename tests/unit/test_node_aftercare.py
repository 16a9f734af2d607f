"""After a repair: which pods see the new mount, the volume condition and Events of those that
do not, and the opt-in eviction (the node against the mounter fake and a fake API)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from devtools.fake_mounter import FakeMounter
from services.node.aftercare import Aftercare, pod_of_target
from services.node.pods import PodsUnavailable, PodView, view_of
from services.node.service import NodeService
from tests.support.conditions import until
from tests.unit.test_node_service import (
    Ctx,
    make,
    publish,
    stage_request,
    stats,
    target_path,
    unpublish,
    unstage,
)


@dataclass
class FakePods:
    pods: dict[str, PodView] = field(default_factory=dict)
    events: list[tuple[str, bool, str, str]] = field(default_factory=list)  # pod, warning, ...
    evicted: list[str] = field(default_factory=list)
    refuse: str | None = None  # an eviction a PodDisruptionBudget refuses
    down: bool = False

    async def pod_of(self, uid: str, volume_name: str) -> PodView | None:
        if self.down:
            raise PodsUnavailable("HTTP 403 Forbidden")
        assert volume_name == "pv"
        return self.pods.get(uid)

    async def event(self, pod: PodView, warning: bool, reason: str, message: str) -> None:
        self.events.append((pod.name, warning, reason, message))

    async def evict(self, pod: PodView) -> str | None:
        if self.refuse:
            return self.refuse
        self.evicted.append(pod.name)
        return None

    async def close(self) -> None:
        pass

    def reasons(self, pod: str) -> list[str]:
        return [reason for name, _, reason, _ in self.events if name == pod]


def pod(name: str, receives: bool, controlled: bool = True, started: float = 1.0) -> PodView:
    return PodView("ns", name, name, controlled, receives, (started,))


def with_pods(root: Path, fake: FakeMounter, pods: FakePods, delete: bool = False
              ) -> NodeService:
    service = make(root, fake)
    service.repairer.aftercare = Aftercare(pods, service.store, str(root), "node-1",
                                           delete_stale=delete)
    return service


async def published_to(service: NodeService, root: Path, *pods: str) -> tuple[str, list[str]]:
    await service.NodeStageVolume(stage_request(root), Ctx())
    targets = [target_path(root, name) for name in pods]
    for target in targets:
        await publish(service, root, target)
    return stage_request(root).staging_target_path, targets


async def repaired(service: NodeService, fake: FakeMounter, staging: str,
                   pods: FakePods, events: int) -> None:
    fake.kill_client(staging)
    await until(lambda: len(pods.events) >= events and len(fake.clients) == 1,
                "the event and one client", 5, 0.01)


async def test_a_pod_that_receives_mounts_has_its_data_back(root, fake):
    pods = FakePods({"a": pod("a", receives=True)})
    service = with_pods(root, fake, pods)
    staging, [target] = await published_to(service, root, "a")

    await repaired(service, fake, staging, pods, 1)

    assert pods.reasons("a") == ["VolumeRemounted"]
    assert not (await stats(service, target)).volume_condition.abnormal


async def test_a_pod_without_propagation_is_told_and_its_volume_is_abnormal(root, fake):
    pods = FakePods({"b": pod("b", receives=False)})
    service = with_pods(root, fake, pods)
    staging, [target] = await published_to(service, root, "b")

    await repaired(service, fake, staging, pods, 1)

    assert pods.reasons("b") == ["StaleVolumeMount"]
    answer = await stats(service, target)
    condition = answer.volume_condition
    assert condition.abnormal and "HostToContainer" in condition.message
    assert "Delete the pod" in condition.message
    assert answer.usage  # the host's view of it works: usage is still reported
    assert pods.evicted == []
    # Known across a restart of the node process, until kubelet unpublishes the target.
    again = make(root, fake)
    await again.store.load()
    assert (await stats(again, target)).volume_condition.abnormal
    await unpublish(again, target)
    assert again.store.get(staging).stale == {}  # type: ignore[union-attr]
    await unstage(again, root)


async def test_the_remedy_evicts_a_controlled_pod_and_never_one_without_a_controller(root,
                                                                                    fake):
    pods = FakePods({"c": pod("c", receives=False), "d": pod("d", False, controlled=False)})
    service = with_pods(root, fake, pods, delete=True)
    staging, _ = await published_to(service, root, "c", "d")

    await repaired(service, fake, staging, pods, 4)

    assert pods.evicted == ["c"]
    assert pods.reasons("c") == ["StaleVolumeMount", "EvictingPodWithStaleMount"]
    assert pods.reasons("d") == ["StaleVolumeMount", "StaleVolumeMount"]
    assert "no controller" in pods.events[-1][3]


async def test_a_refused_eviction_is_tried_again_on_the_next_pass(root, fake):
    pods = FakePods({"c": pod("c", receives=False)}, refuse="a PodDisruptionBudget ...")
    service = with_pods(root, fake, pods, delete=True)
    staging, _ = await published_to(service, root, "c")
    await repaired(service, fake, staging, pods, 2)
    assert pods.evicted == []

    pods.refuse = None
    await service.repairer.health_pass()

    assert pods.evicted == ["c"]
    assert pods.reasons("c") == ["StaleVolumeMount", "EvictingPodWithStaleMount"]


async def test_a_pod_whose_containers_restarted_since_is_healthy_again(root, fake):
    pods = FakePods({"e": pod("e", receives=False)})
    service = with_pods(root, fake, pods)
    staging, [target] = await published_to(service, root, "e")
    await repaired(service, fake, staging, pods, 1)
    assert (await stats(service, target)).volume_condition.abnormal

    pods.pods["e"] = replace(pods.pods["e"], started=(4e9,))  # restarted after the repair
    await service.repairer.health_pass()

    assert not (await stats(service, target)).volume_condition.abnormal


async def test_without_an_answer_from_the_api_the_volume_is_called_stale(root, fake):
    pods = FakePods({"f": pod("f", receives=True)}, down=True)
    service = with_pods(root, fake, pods)
    staging, [target] = await published_to(service, root, "f")
    fake.kill_client(staging)
    await until(lambda: bool(service.store.get(staging).stale), "the record marked stale", 5, 0.01)  # type: ignore[union-attr]

    condition = (await stats(service, target)).volume_condition
    assert condition.abnormal and "could not read the pod: HTTP 403" in condition.message
    pods.down = False
    await service.repairer.health_pass()  # still stale: only restarted containers clear it
    assert (await stats(service, target)).volume_condition.abnormal


def test_publish_targets_name_their_pod_and_volume():
    root = "/var/lib/kubelet"
    assert pod_of_target(root, f"{root}/pods/u-1/volumes/kubernetes.io~csi/pv-9/mount") == (
        "u-1", "pv-9")
    for other in (f"{root}/pods/u-1/volumes/kubernetes.io~csi/pv-9/mount/x",
                  f"{root}/plugins/kubernetes.io/csi/d/h/globalmount",
                  f"{root}/pods/u-1/volumes/kubernetes.io~nfs/pv-9/mount"):
        assert pod_of_target(root, other) is None


def test_a_pod_receives_mounts_only_when_every_mount_of_the_volume_propagates():
    def body(*mounts: dict[str, str], other_claim: bool = False) -> dict[str, object]:
        return {
            "metadata": {"namespace": "ns", "name": "p", "uid": "u",
                         "ownerReferences": [{"controller": True, "kind": "ReplicaSet"}]},
            "spec": {
                "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "c"}},
                            {"name": "tmp", "ephemeral": {}}],
                "containers": [{"name": f"c{i}", "volumeMounts": [m]}
                               for i, m in enumerate(mounts)],
            },
            "status": {"containerStatuses": [
                {"name": "c0", "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}}}]},
        }

    h2c = {"name": "data", "mountPath": "/d", "mountPropagation": "HostToContainer"}
    plain = {"name": "data", "mountPath": "/e"}
    claims = {"c": "pv", "p-tmp": "other"}
    view = view_of(body(h2c, {"name": "tmp", "mountPath": "/t"}), claims, "pv")
    assert view.receives and view.controlled
    assert view.started[0] == 1767225600.0
    assert not view_of(body(h2c, plain), claims, "pv").receives
    # The ephemeral volume's claim is <pod>-<volume>; its mount without propagation counts.
    assert not view_of(body(h2c, {"name": "tmp", "mountPath": "/t"}), claims, "other").receives
    assert not view_of(body(h2c), {"c": "elsewhere"}, "pv").receives  # not this PV's pod
