"""The Kubernetes API as migrate uses it: plain dicts in and out, 404 as None, deletes
guarded by the uid that was read, and waits on conditions with deadlines."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import quote

from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.api_client import ApiClient
from kubernetes_asyncio.client.exceptions import ApiException

from services.common.kube_json import get_object

Obj = dict[str, Any]
T = TypeVar("T")


class KubeError(Exception):
    """An API call failed in a way a retry of the command will not fix by itself."""


async def connect(kubeconfig: str | None, context: str | None) -> ApiClient:
    """An API client from a kubeconfig (default search) or, in a pod, the in-cluster config."""
    configuration = client.Configuration()
    try:
        await config.load_kube_config(config_file=kubeconfig, context=context,
                                      client_configuration=configuration)
    except (config.ConfigException, OSError, TypeError):
        if kubeconfig:
            raise
        config.load_incluster_config(  # type: ignore[no-untyped-call]
            client_configuration=configuration)
    return ApiClient(configuration)


_STORAGE = "/apis/storage.k8s.io/v1"


def _seg(value: str) -> str:
    """One path segment: every character that is not unreserved is escaped."""
    return quote(value, safe="")


def _core(namespace: str) -> str:
    return f"/api/v1/namespaces/{_seg(namespace)}"


def _what(exc: ApiException) -> str:
    return f"HTTP {exc.status} {exc.reason or ''}".strip()


class Kube:
    """The calls migrate makes. Every object is a dict in the API's JSON form."""

    def __init__(self, api: ApiClient, poll_interval: float = 0.5) -> None:
        self.api = api
        # Any: the bodies are plain dicts, which the client serialises as they are.
        self.core: Any = client.CoreV1Api(api)
        self.apps: Any = client.AppsV1Api(api)
        self.storage: Any = client.StorageV1Api(api)
        self.poll_interval = poll_interval

    def _dict(self, model: Any) -> Obj:
        data: Obj = self.api.sanitize_for_serialization(model)
        return data

    async def _do(self, what: str, call: Awaitable[Any]) -> Obj:
        try:
            return self._dict(await call)
        except ApiException as exc:
            raise KubeError(f"{what}: {_what(exc)}: {_message(exc)}") from None

    async def _get(self, what: str, path: str) -> Obj:
        # Reads are JSON as the API server sent it, never the client's models: those refuse
        # null in any field the schema calls required (a CSINode's spec.drivers is null
        # while kubelet replaces a driver) and drop fields newer than the client.
        try:
            return await get_object(self.api, path)
        except ApiException as exc:
            raise KubeError(f"{what}: {_what(exc)}: {_message(exc)}") from None
        except ValueError as exc:
            raise KubeError(f"{what}: {exc}") from None

    async def _get_maybe(self, what: str, path: str) -> Obj | None:
        try:
            return await get_object(self.api, path)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise KubeError(f"{what}: {_what(exc)}: {_message(exc)}") from None
        except ValueError as exc:
            raise KubeError(f"{what}: {exc}") from None

    async def _items(self, what: str, path: str) -> list[Obj]:
        items = (await self._get(what, path)).get("items")
        return [item for item in items or [] if isinstance(item, dict)]

    # --- reads ---------------------------------------------------------------------
    async def list_pvs(self) -> list[Obj]:
        items = await self._items("listing PVs", "/api/v1/persistentvolumes")
        # List items come without kind and apiVersion; a PV read on its own has them.
        return [{"apiVersion": "v1", "kind": "PersistentVolume", **pv} for pv in items]

    async def pv(self, name: str) -> Obj | None:
        return await self._get_maybe(f"reading PV {name}",
                                     f"/api/v1/persistentvolumes/{_seg(name)}")

    async def pvc(self, namespace: str, name: str) -> Obj | None:
        return await self._get_maybe(
            f"reading PVC {namespace}/{name}",
            f"{_core(namespace)}/persistentvolumeclaims/{_seg(name)}")

    async def pods(self, namespace: str) -> list[Obj]:
        return await self._items(f"listing pods in {namespace}", f"{_core(namespace)}/pods")

    async def storage_class(self, name: str) -> Obj | None:
        return await self._get_maybe(f"reading StorageClass {name}",
                                     f"{_STORAGE}/storageclasses/{_seg(name)}")

    async def secret(self, namespace: str, name: str) -> Obj | None:
        return await self._get_maybe(f"reading Secret {namespace}/{name}",
                                     f"{_core(namespace)}/secrets/{_seg(name)}")

    async def endpoints(self, namespace: str, name: str) -> Obj | None:
        return await self._get_maybe(f"reading Endpoints {namespace}/{name}",
                                     f"{_core(namespace)}/endpoints/{_seg(name)}")

    async def service(self, namespace: str, name: str) -> Obj | None:
        return await self._get_maybe(f"reading Service {namespace}/{name}",
                                     f"{_core(namespace)}/services/{_seg(name)}")

    async def replica_set(self, namespace: str, name: str) -> Obj | None:
        return await self._get_maybe(
            f"reading ReplicaSet {namespace}/{name}",
            f"/apis/apps/v1/namespaces/{_seg(namespace)}/replicasets/{_seg(name)}")

    # --- writes --------------------------------------------------------------------
    async def create_pv(self, body: Obj, dry_run: bool = False) -> Obj:
        return await self._do(f"creating PV {body['metadata']['name']}",
                              self.core.create_persistent_volume(
                                  body, dry_run="All" if dry_run else None))

    async def patch_pv(self, name: str, patch: Obj) -> Obj:
        return await self._do(f"patching PV {name}",
                              self.core.patch_persistent_volume(name, patch))

    async def create_pvc(self, body: Obj) -> Obj:
        meta = body["metadata"]
        return await self._do(f"creating PVC {meta['namespace']}/{meta['name']}",
                              self.core.create_namespaced_persistent_volume_claim(
                                  meta["namespace"], body))

    async def create_endpoints(self, body: Obj) -> Obj:
        meta = body["metadata"]
        return await self._do(f"creating Endpoints {meta['name']}",
                              self.core.create_namespaced_endpoints(meta["namespace"], body))

    async def create_service(self, body: Obj) -> Obj:
        meta = body["metadata"]
        return await self._do(f"creating Service {meta['name']}",
                              self.core.create_namespaced_service(meta["namespace"], body))

    async def delete(self, kind: str, name: str, namespace: str | None, uid: str) -> None:
        """Delete exactly the object that was read (uid precondition); gone is done."""
        options = {"preconditions": {"uid": uid}}
        calls: dict[str, Callable[[], Awaitable[Any]]] = {
            "PersistentVolume": lambda: self.core.delete_persistent_volume(name, body=options),
            "PersistentVolumeClaim": lambda: self.core.delete_namespaced_persistent_volume_claim(
                name, namespace, body=options),
            "Endpoints": lambda: self.core.delete_namespaced_endpoints(name, namespace,
                                                                       body=options),
            "Service": lambda: self.core.delete_namespaced_service(name, namespace, body=options),
        }
        try:
            await calls[kind]()
        except ApiException as exc:
            if exc.status == 404:
                return
            raise KubeError(f"deleting {kind} {name}: {_what(exc)}: {_message(exc)}") from None

    # --- waiting -------------------------------------------------------------------
    async def wait(self, what: str, probe: Callable[[], Awaitable[T | None]],
                   timeout: float) -> T:
        """Poll `probe` until it returns something truthy; KubeError after `timeout`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            result = await probe()
            if result:
                return result
            if loop.time() >= deadline:
                raise KubeError(f"timed out after {timeout:.0f} s waiting for {what}")
            await asyncio.sleep(self.poll_interval)


def _message(exc: ApiException) -> str:
    """The API server's own message (bounded), from the Status body."""
    import json

    try:
        body = json.loads(exc.body or "{}")
    except (TypeError, ValueError):
        return str(exc.body or "")[:300]
    return str(body.get("message", ""))[:300]


def uid(obj: Obj) -> str:
    return str((obj.get("metadata") or {}).get("uid") or "")


def name(obj: Obj) -> str:
    return str((obj.get("metadata") or {}).get("name") or "")
