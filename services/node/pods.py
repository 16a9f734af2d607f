"""The Kubernetes API as the node uses it: the pod behind a publish target, whether its
containers receive the mounts the node makes after they started, Events on it, its eviction.

The node calls the API only after a repair, for the pods whose volume it re-mounted
(`aftercare.py`), never on the path of a CSI call. Its ServiceAccount may list and get pods,
get claims, create Events and create evictions (k8s/base/rbac-node.yaml); the token is
mounted into the node container only. Outside a cluster (no KUBERNETES_SERVICE_HOST) there is
no API and `connect` answers None. The API client (kubernetes_asyncio, about 37 MiB of
resident memory) is loaded on the first call, so a node that never repairs a volume never
pays for it.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from services.common.logging import get_logger

_log = get_logger("node.pods")

Obj = dict[str, Any]
# Propagation modes under which a container receives mounts made below its volume later.
RECEIVING = frozenset({"HostToContainer", "Bidirectional"})
COMPONENT = "heketi-csi-node"


class PodsUnavailable(Exception):
    """The API did not answer, or refused (RBAC)."""


@dataclass(frozen=True)
class PodView:
    """What the node needs to know of a pod that uses one of its volumes."""

    namespace: str
    name: str
    uid: str
    controlled: bool  # an ownerReference with controller: true (a controller re-creates it)
    receives: bool  # every container mounting the volume uses HostToContainer/Bidirectional
    # Start time (epoch s) of the running container of each container mounting the volume;
    # None for one that is not running.
    started: tuple[float | None, ...]

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"

    def restarted_since(self, since: float) -> bool:
        """Whether every container that mounts the volume started after `since` (their
        mounts were made afresh from the host's, repaired, target)."""
        return bool(self.started) and all(t is not None and t > since for t in self.started)


class Pods(Protocol):
    async def pod_of(self, uid: str, volume_name: str) -> PodView | None:
        """The pod with `uid` on this node, as it uses PV `volume_name`; None when gone.
        Raises PodsUnavailable."""
        ...

    async def event(self, pod: PodView, warning: bool, reason: str, message: str) -> None:
        """Record an Event on the pod (best effort: failures are logged)."""
        ...

    async def evict(self, pod: PodView) -> str | None:
        """Evict the pod (a delete that honours PodDisruptionBudgets); None when done,
        else why not. Raises PodsUnavailable."""
        ...

    async def close(self) -> None: ...


def _time(value: Any) -> float | None:
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, str):
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    return None


def view_of(pod: Obj, claims: dict[str, str], volume_name: str) -> PodView:
    """A PodView of `pod` (API JSON) for PV `volume_name`; `claims` maps the names of the
    pod's claims to the PVs they are bound to."""
    meta, spec = pod["metadata"], pod.get("spec", {})
    volumes = set()
    for volume in spec.get("volumes", []):
        claim = (volume.get("persistentVolumeClaim") or {}).get("claimName")
        if claim is None and volume.get("ephemeral") is not None:
            claim = f"{meta['name']}-{volume['name']}"
        if claim is not None and claims.get(claim) == volume_name:
            volumes.add(volume["name"])
    containers = [
        *spec.get("containers", []),
        *(c for c in spec.get("initContainers", []) if c.get("restartPolicy") == "Always"),
    ]
    using = [c for c in containers
             if any(m["name"] in volumes for m in c.get("volumeMounts", []))]
    receives = bool(using) and all(
        m.get("mountPropagation") in RECEIVING
        for c in using for m in c.get("volumeMounts", []) if m["name"] in volumes
    )
    statuses = {s["name"]: s for s in (pod.get("status") or {}).get(
        "containerStatuses", []) + (pod.get("status") or {}).get("initContainerStatuses", [])}
    started = tuple(
        _time(((statuses.get(c["name"]) or {}).get("state") or {}).get("running", {})
              .get("startedAt"))
        for c in using
    )
    controlled = any(ref.get("controller") for ref in meta.get("ownerReferences") or [])
    return PodView(meta["namespace"], meta["name"], meta["uid"], controlled, receives, started)


def claims_of(pod: Obj) -> list[str]:
    names = []
    for volume in pod.get("spec", {}).get("volumes", []):
        claim = (volume.get("persistentVolumeClaim") or {}).get("claimName")
        if claim is None and volume.get("ephemeral") is not None:
            claim = f"{pod['metadata']['name']}-{volume['name']}"
        if claim is not None:
            names.append(claim)
    return names


class KubePods:
    """`Pods` through kubernetes_asyncio (in-cluster configuration), plain dicts in and out;
    the client is made on the first call."""

    def __init__(self, node_id: str) -> None:
        self.node_id = node_id
        self.api: Any = None
        self._core: Any = None

    @property
    def core(self) -> Any:
        if self._core is None:
            from kubernetes_asyncio import client, config

            configuration = client.Configuration()
            try:
                config.load_incluster_config(  # type: ignore[no-untyped-call]
                    client_configuration=configuration)
            except config.ConfigException as exc:
                raise PodsUnavailable(f"no API access (no ServiceAccount token?): {exc}"
                                      ) from None
            self.api = client.ApiClient(configuration)
            self._core = client.CoreV1Api(self.api)
        return self._core

    def _dict(self, model: Any) -> Obj:
        data: Obj = self.api.sanitize_for_serialization(model)
        return data

    async def pod_of(self, uid: str, volume_name: str) -> PodView | None:
        from kubernetes_asyncio.client.exceptions import ApiException

        try:
            pods = self._dict(await self.core.list_pod_for_all_namespaces(
                field_selector=f"spec.nodeName={self.node_id}"))
            pod = next((p for p in pods.get("items", []) if p["metadata"]["uid"] == uid), None)
            if pod is None:
                return None
            namespace = pod["metadata"]["namespace"]
            claims = {}
            for name in claims_of(pod):
                try:
                    claim = self._dict(await self.core.read_namespaced_persistent_volume_claim(
                        name, namespace))
                except ApiException as exc:
                    if exc.status != 404:
                        raise
                    continue
                claims[name] = (claim.get("spec") or {}).get("volumeName") or ""
        except ApiException as exc:
            raise PodsUnavailable(f"HTTP {exc.status} {exc.reason or ''}".strip()) from None
        except OSError as exc:
            raise PodsUnavailable(str(exc)) from None
        return view_of(pod, claims, volume_name)

    async def event(self, pod: PodView, warning: bool, reason: str, message: str) -> None:
        now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        body = {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": f"{pod.name}.{uuid.uuid4().hex[:16]}",
                         "namespace": pod.namespace},
            "involvedObject": {"apiVersion": "v1", "kind": "Pod", "name": pod.name,
                               "namespace": pod.namespace, "uid": pod.uid},
            "reason": reason, "message": message[:1024],
            "type": "Warning" if warning else "Normal",
            "source": {"component": COMPONENT, "host": self.node_id},
            "reportingComponent": COMPONENT, "reportingInstance": self.node_id,
            "firstTimestamp": now, "lastTimestamp": now, "count": 1,
        }
        try:
            await self.core.create_namespaced_event(pod.namespace, body)
        except Exception as exc:  # an event is worth a log line, never a failure
            _log.error("cannot record an event", pod=pod.ref, reason=reason, error=str(exc))

    async def evict(self, pod: PodView) -> str | None:
        from kubernetes_asyncio.client.exceptions import ApiException

        body = {"apiVersion": "policy/v1", "kind": "Eviction",
                "metadata": {"name": pod.name, "namespace": pod.namespace},
                "deleteOptions": {"preconditions": {"uid": pod.uid}}}
        try:
            await self.core.create_namespaced_pod_eviction(pod.name, pod.namespace, body)
        except ApiException as exc:
            if exc.status == 404:
                return None  # gone already
            if exc.status == 429:
                return "a PodDisruptionBudget does not allow it now"
            raise PodsUnavailable(f"HTTP {exc.status} {exc.reason or ''}".strip()) from None
        return None

    async def close(self) -> None:
        if self.api is not None:
            await self.api.close()


# Where the in-cluster configuration finds the ServiceAccount token.
TOKEN_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/token"


def connect(node_id: str) -> KubePods | None:
    """The API as seen from the node's pod (in-cluster configuration); None outside a
    cluster or without a token (the node then cannot tell pods about stale mounts)."""
    if not os.environ.get("KUBERNETES_SERVICE_HOST"):
        return None
    if not os.path.exists(TOKEN_FILE):
        _log.warning("no Kubernetes API access (no ServiceAccount token): pods whose volume "
                     "was repaired get no events", token_file=TOKEN_FILE)
        return None
    return KubePods(node_id)
