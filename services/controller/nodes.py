"""Which node ids ControllerPublishVolume accepts.

In Kubernetes a node is known when its CSINode object lists this driver with that node id
(kubelet writes it after our registrar registered the node plugin). Outside Kubernetes (the
local cluster, csi-sanity) the ids are given on the command line. `none` accepts any id.
"""

from __future__ import annotations

import time
from typing import Protocol

from services.common.errors import NotFound, Unavailable
from services.common.logging import get_logger

_log = get_logger("nodes")


class NodeCheck(Protocol):
    async def require(self, node_id: str) -> None: ...

    async def close(self) -> None: ...


class AnyNode:
    async def require(self, node_id: str) -> None:
        return None

    async def close(self) -> None:
        return None


class StaticNodes:
    def __init__(self, node_ids: list[str]) -> None:
        self._ids = frozenset(node_ids)

    async def require(self, node_id: str) -> None:
        if node_id not in self._ids:
            raise NotFound(f"node {node_id!r} is not known to this driver")

    async def close(self) -> None:
        return None


class KubernetesNodes:
    """Looks the node up in CSINode objects; positive answers are cached for a minute."""

    def __init__(self, driver_name: str, ttl: float = 60.0) -> None:
        self._driver = driver_name
        self._ttl = ttl
        self._known: dict[str, float] = {}
        self._api: object | None = None

    async def _storage_api(self) -> object:
        if self._api is None:
            from kubernetes_asyncio import client, config

            try:
                config.load_incluster_config()  # type: ignore[no-untyped-call]
            except config.ConfigException:
                await config.load_kube_config()
            self._api = client.StorageV1Api()
        return self._api

    async def require(self, node_id: str) -> None:
        seen = self._known.get(node_id)
        if seen is not None and time.monotonic() - seen < self._ttl:
            return
        from kubernetes_asyncio.client.exceptions import ApiException

        api = await self._storage_api()
        try:
            # CSINode objects are named after the Kubernetes node; our node id is that name.
            csinode = await api.read_csi_node(node_id)  # type: ignore[attr-defined]
        except ApiException as exc:
            if exc.status == 404:
                raise NotFound(f"node {node_id!r} has no CSINode object") from None
            raise Unavailable(f"cannot read CSINode {node_id!r}: HTTP {exc.status}") from None
        for driver in csinode.spec.drivers or []:
            if driver.name == self._driver and driver.node_id == node_id:
                self._known[node_id] = time.monotonic()
                return
        raise NotFound(f"node {node_id!r} has not registered driver {self._driver}")

    async def close(self) -> None:
        if self._api is not None:
            await self._api.api_client.close()  # type: ignore[attr-defined]


def make_node_check(mode: str, static_ids: str | None, driver_name: str) -> NodeCheck:
    if mode == "none":
        return AnyNode()
    if mode == "static":
        ids = [n.strip() for n in (static_ids or "").split(",") if n.strip()]
        if not ids:
            raise ValueError("--node-check static needs --static-node-ids")
        return StaticNodes(ids)
    if mode == "kubernetes":
        return KubernetesNodes(driver_name)
    raise ValueError(f"unknown --node-check {mode!r}; use kubernetes, static or none")
