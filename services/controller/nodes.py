"""Which node ids ControllerPublishVolume accepts.

In Kubernetes a node is known when its CSINode object lists this driver with that node id
(kubelet writes it after our registrar registered the node plugin). Outside Kubernetes (the
local cluster, csi-sanity) the ids are given on the command line. `none` accepts any id.
"""

from __future__ import annotations

import time
from typing import Any, Protocol

from services.common.errors import NotFound, Unavailable
from services.common.kube_json import csinode_drivers, csinode_path, get_object
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

    def __init__(self, driver_name: str, ttl: float = 60.0, api: Any = None) -> None:
        self._driver = driver_name
        self._ttl = ttl
        self._known: dict[str, float] = {}
        # A kubernetes_asyncio ApiClient; made from the in-cluster config (or the default
        # kubeconfig) on first use unless one is given.
        self._api: Any = api

    async def _api_client(self) -> Any:
        if self._api is None:
            from kubernetes_asyncio import client, config

            configuration = client.Configuration()
            try:
                config.load_incluster_config(  # type: ignore[no-untyped-call]
                    client_configuration=configuration)
            except config.ConfigException:
                await config.load_kube_config(client_configuration=configuration)
            self._api = client.ApiClient(configuration)
        return self._api

    async def require(self, node_id: str) -> None:
        seen = self._known.get(node_id)
        if seen is not None and time.monotonic() - seen < self._ttl:
            return
        from kubernetes_asyncio.client.exceptions import ApiException

        api = await self._api_client()
        try:
            # CSINode objects are named after the Kubernetes node; our node id is that name.
            # Read as JSON: the client's model refuses the null `spec.drivers` a CSINode has
            # while kubelet replaces a driver.
            csinode = await get_object(api, csinode_path(node_id))
        except ApiException as exc:
            if exc.status == 404:
                raise NotFound(f"node {node_id!r} has no CSINode object") from None
            raise Unavailable(f"cannot read CSINode {node_id!r}: HTTP {exc.status}") from None
        except ValueError as exc:
            raise Unavailable(f"cannot read CSINode {node_id!r}: {exc}") from None
        for driver in csinode_drivers(csinode):
            if driver.get("name") == self._driver and driver.get("nodeID") == node_id:
                self._known[node_id] = time.monotonic()
                return
        raise NotFound(f"node {node_id!r} has not registered driver {self._driver}")

    async def close(self) -> None:
        if self._api is not None:
            await self._api.close()


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
