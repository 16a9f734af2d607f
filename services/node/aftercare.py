"""After a repair: which running pods see the new mount, and what is done about those that
do not.

A container sees a volume through the bind mount its runtime made from the publish target
when the container started, in the container's own mount namespace. The repair binds the new
mount on top of the dead target (`repair.py`); that new mount reaches a container only when
the container's volume mount receives mounts from the host: `mountPropagation:
HostToContainer` (or Bidirectional). For every re-bound target the node looks the pod up:

- it receives mounts (or every container using the volume started after the repair): it has
  its data back. A Normal Event `VolumeRemounted` says what happened.
- it does not: its containers still see the dead mount (`Transport endpoint is not
  connected`), and no node action can reach into them. The target is recorded as stale, so
  NodeGetVolumeStats reports the volume condition abnormal with what to do, and a Warning
  Event `StaleVolumeMount` tells the pod's users. With `--delete-stale-pods` the node also
  evicts the pod when a controller owns it (its Deployment, StatefulSet, ... re-creates it
  with a fresh mount), after a Warning Event `EvictingPodWithStaleMount` saying why; never a
  pod without a controller.

Stale targets are looked at again on every health pass: a pod whose containers have all
restarted since (a crash-looping writer does) is healthy again; an eviction a
PodDisruptionBudget refused is tried again. Without API access (outside a cluster) nothing
can be looked up: targets re-bound in place are assumed to reach their pods.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

from services.common.logging import get_logger
from services.node.pods import Pods, PodsUnavailable, PodView
from services.node.state import StageRecord, StateStore

_log = get_logger("node.aftercare")

PROPAGATION_HINT = (
    "set mountPropagation: HostToContainer on the pod's mounts of this volume so that "
    "repairs reach running containers"
)


def pod_of_target(kubelet_root: str, target: str) -> tuple[str, str] | None:
    """(pod uid, volume name) of a kubelet publish target path
    `<root>/pods/<uid>/volumes/kubernetes.io~csi/<volume>/mount`, or None."""
    prefix = kubelet_root.rstrip("/") + "/pods/"
    if not target.startswith(prefix):
        return None
    parts = target[len(prefix):].split("/")
    if len(parts) != 5 or parts[1] != "volumes" or parts[2] != "kubernetes.io~csi" or (
            parts[4] != "mount"):
        return None
    return parts[0], parts[3]


def _when(since: float) -> str:
    return datetime.fromtimestamp(since, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def stale_message(volume: str, node: str, since: float, extra: str = "") -> str:
    return (
        f"the gluster client serving volume {volume} on node {node} died and was restarted "
        f"at {_when(since)}, but this pod's containers still see the dead mount (Transport "
        "endpoint is not connected): they mount the volume without mountPropagation: "
        "HostToContainer, which is the only way a new mount reaches a running container. "
        f"Delete the pod (its controller re-creates it) or restart its containers; "
        f"{PROPAGATION_HINT}.{extra}"
    )


class Aftercare:
    def __init__(
        self,
        pods: Pods | None,
        store: StateStore,
        kubelet_root: str,
        node_id: str,
        delete_stale: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.pods = pods
        self.store = store
        self.kubelet_root = kubelet_root
        self.node_id = node_id
        self.delete_stale = delete_stale
        self.clock = clock

    async def after_repair(
        self, record: StageRecord, in_place: tuple[str, ...], replaced: tuple[str, ...]
    ) -> None:
        """Judge the pods of targets re-bound on top of their dead mount (`in_place`) or
        unmounted and bound anew (`replaced`: no running container can see that one)."""
        since = self.clock()
        for target in (*in_place, *replaced):
            await self._judge(record, target, since, target in in_place, first=True)

    async def recheck(self) -> None:
        """Look at the stale targets again (every health pass)."""
        for record in self.store.all():
            for target, (since, _why) in list(record.stale.items()):
                await self._judge(record, target, since, False, first=False)

    async def _judge(
        self, record: StageRecord, target: str, since: float, in_place: bool, first: bool
    ) -> None:
        found = pod_of_target(self.kubelet_root, target)
        staging = record.staging_path
        if found is None or self.pods is None:
            if not in_place and first:
                await self._mark(staging, target, since, found[1] if found else target, "")
            elif first:
                _log.info("re-bound a publish target in place; no API to check its pod",
                          target=target)
            return
        uid, volume = found
        try:
            pod = await self.pods.pod_of(uid, volume)
        except PodsUnavailable as exc:
            _log.error("cannot look up the pod of a re-bound target", target=target,
                       error=str(exc))
            if first:
                await self._mark(staging, target, since, volume,
                                 f" (The node could not read the pod: {exc}.)")
            return
        if pod is None:  # gone: kubelet unpublishes its target
            await self.store.clear_stale(staging, target)
            return
        if (in_place and pod.receives) or pod.restarted_since(since):
            await self.store.clear_stale(staging, target)
            if first:
                _log.info("a repaired volume reaches its pod", pod=pod.ref, target=target)
                await self.pods.event(pod, False, "VolumeRemounted", (
                    f"The gluster client serving volume {volume} on node {self.node_id} died "
                    "and was restarted; the volume was mounted again and reaches this pod's "
                    "containers (mountPropagation: HostToContainer)."))
            elif record.stale.get(target):
                _log.info("the containers of a pod with a stale mount restarted", pod=pod.ref)
            return
        message = await self._mark(staging, target, since, volume, "")
        if first:
            _log.warning("a pod still sees the dead mount of a repaired volume", pod=pod.ref,
                         target=target)
            await self.pods.event(pod, True, "StaleVolumeMount", message)
        if self.delete_stale:
            await self._evict(pod, volume, first)

    async def _mark(self, staging: str, target: str, since: float, volume: str,
                    extra: str) -> str:
        message = stale_message(volume, self.node_id, since, extra)
        await self.store.mark_stale(staging, target, since, message)
        return message

    async def _evict(self, pod: PodView, volume: str, first: bool) -> None:
        assert self.pods is not None
        if not pod.controlled:
            if first:
                await self.pods.event(pod, True, "StaleVolumeMount", (
                    f"Not deleting this pod although its mount of volume {volume} is stale "
                    "(--delete-stale-pods): no controller owns it, so nothing would "
                    "re-create it. Delete and re-create it yourself."))
            return
        if first:
            await self.pods.event(pod, True, "EvictingPodWithStaleMount", (
                f"Evicting this pod (heketi-csi node --delete-stale-pods): its containers see "
                f"a dead mount of volume {volume} that cannot be repaired in place; its "
                f"controller re-creates it with a working mount. To keep such pods running "
                f"instead, {PROPAGATION_HINT}."))
        try:
            refused = await self.pods.evict(pod)
        except PodsUnavailable as exc:
            _log.error("cannot evict a pod with a stale mount", pod=pod.ref, error=str(exc))
            return
        if refused:
            _log.warning("eviction of a pod with a stale mount refused; will retry",
                         pod=pod.ref, reason=refused)
        else:
            _log.warning("evicted a pod with a stale mount", pod=pod.ref)
