"""Reads of Kubernetes objects whose "required" fields are null, against a private API
server (aiohttp on loopback) answering what a live one sends: a CSINode with
`spec.drivers: null`, as kubelet leaves it while a driver is being replaced.

The generated client call refuses that answer (`ValueError: Invalid value for drivers`,
the error that failed an e2e run); the JSON reads the suite, the controller and migrate use
now return it."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from kubernetes_asyncio import client
from kubernetes_asyncio.client.api_client import ApiClient
from kubernetes_asyncio.client.exceptions import ApiException

from services.common.errors import NotFound
from services.common.kube_json import csinode_drivers, csinode_path, get_object
from services.controller.nodes import KubernetesNodes
from services.migrate.kube import Kube as MigrateKube
from services.migrate.kube import KubeError
from tests.e2e import kube as e2e_kube

DRIVER = e2e_kube.DRIVER_NAME
NODE = "node-a"


def csinode(drivers: list[dict[str, Any]] | None) -> dict[str, Any]:
    return {"apiVersion": "storage.k8s.io/v1", "kind": "CSINode",
            "metadata": {"name": NODE, "uid": "u-1"}, "spec": {"drivers": drivers}}


@dataclass
class FakeApiServer:
    """Answers GETs from `objects` (path -> JSON); other paths are 404 Status objects."""

    objects: dict[str, Any] = field(default_factory=dict)
    # Answers served in turn for a path before its entry in `objects` (a changing object).
    sequences: dict[str, list[Any]] = field(default_factory=dict)
    seen: list[str] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        path = request.rel_url.raw_path
        self.seen.append(path)
        if path == "/fail":
            return web.json_response({"kind": "Status", "message": "etcd is down"}, status=500)
        if self.sequences.get(path):
            return web.json_response(self.sequences[path].pop(0))
        if path in self.objects:
            body = self.objects[path]
            if isinstance(body, str):
                return web.Response(text=body, content_type="application/json")
            return web.json_response(body)
        return web.json_response({"kind": "Status", "code": 404, "reason": "NotFound",
                                  "message": f"{path} not found"}, status=404)


@pytest.fixture
async def server() -> AsyncIterator[tuple[FakeApiServer, ApiClient]]:
    fake = FakeApiServer()
    app = web.Application()
    app.router.add_route("GET", "/{tail:.*}", fake.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    configuration = client.Configuration(host=f"http://127.0.0.1:{port}")
    api = ApiClient(configuration)
    try:
        yield fake, api
    finally:
        await api.close()
        await runner.cleanup()


async def test_the_generated_read_refuses_a_csinode_without_drivers(
        server: tuple[FakeApiServer, ApiClient]) -> None:
    """The failure the JSON reads exist for (if the client ever accepts null here, this
    test says so and the workaround can go)."""
    fake, api = server
    fake.objects[csinode_path(NODE)] = csinode(None)
    with pytest.raises(ValueError, match="drivers"):
        await client.StorageV1Api(api).read_csi_node(NODE)


async def test_get_object_returns_the_null_drivers_as_sent(
        server: tuple[FakeApiServer, ApiClient]) -> None:
    fake, api = server
    fake.objects[csinode_path(NODE)] = csinode(None)
    obj = await get_object(api, csinode_path(NODE))
    assert obj["spec"]["drivers"] is None
    assert csinode_drivers(obj) == []
    assert csinode_drivers({"spec": None}) == []
    with pytest.raises(ApiException) as raised:
        await get_object(api, csinode_path("elsewhere"))
    assert raised.value.status == 404


async def test_get_object_refuses_an_answer_that_is_not_an_object(
        server: tuple[FakeApiServer, ApiClient]) -> None:
    fake, api = server
    fake.objects["/list"] = "[1, 2]"
    fake.objects["/text"] = "not json"
    for path in ("/list", "/text"):
        with pytest.raises(ValueError, match="not an object"):
            await get_object(api, path)


def test_a_node_name_cannot_leave_the_csinode_path() -> None:
    assert csinode_path("../../api/v1/secrets") == (
        "/apis/storage.k8s.io/v1/csinodes/..%2F..%2Fapi%2Fv1%2Fsecrets")


async def test_the_controller_node_check_reads_a_csinode_without_drivers(
        server: tuple[FakeApiServer, ApiClient]) -> None:
    fake, api = server
    nodes = KubernetesNodes(DRIVER, api=api)
    fake.objects[csinode_path(NODE)] = csinode(None)
    with pytest.raises(NotFound, match="has not registered"):
        await nodes.require(NODE)
    fake.objects[csinode_path(NODE)] = csinode([{"name": "other.csi.io", "nodeID": NODE}])
    with pytest.raises(NotFound, match="has not registered"):
        await nodes.require(NODE)
    fake.objects[csinode_path(NODE)] = csinode([{"name": DRIVER, "nodeID": NODE}])
    await nodes.require(NODE)
    with pytest.raises(NotFound, match="no CSINode"):
        await nodes.require("node-b")


async def test_the_suite_waits_through_a_csinode_without_drivers(
        server: tuple[FakeApiServer, ApiClient]) -> None:
    """wait_registered (the e2e driver_ready wait) keeps polling while kubelet replaces
    the driver, instead of failing on the null list."""
    fake, api = server
    fake.objects["/api/v1/nodes"] = {"kind": "NodeList", "apiVersion": "v1",
                                     "metadata": {}, "items": [{"metadata": {"name": NODE}}]}
    path = csinode_path(NODE)
    fake.sequences[path] = [csinode(None), csinode(None)]
    fake.objects[path] = csinode([{"name": DRIVER, "nodeID": NODE}])
    await e2e_kube.wait_registered(e2e_kube.Kube(api), timeout=30)
    assert fake.seen.count(path) == 3


async def test_migrate_reads_are_json_with_unknown_fields_kept(
        server: tuple[FakeApiServer, ApiClient]) -> None:
    fake, api = server
    pv = {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "pv-1"},
          "spec": {"glusterfs": {"endpoints": None, "path": "vol"}, "fieldFromTheFuture": 1}}
    fake.objects["/api/v1/persistentvolumes/pv-1"] = pv
    fake.objects["/api/v1/persistentvolumes"] = {"kind": "PersistentVolumeList",
                                                 "items": [json.loads(json.dumps(pv))]}
    kube = MigrateKube(api)
    assert await kube.pv("pv-1") == pv
    assert await kube.pv("missing") is None
    assert [p["metadata"]["name"] for p in await kube.list_pvs()] == ["pv-1"]
    assert await kube.pvc("ns/../x", "y") is None
    assert "/api/v1/namespaces/ns%2F..%2Fx/persistentvolumeclaims/y" in fake.seen
    kube_failing = MigrateKube(api)
    with pytest.raises(KubeError, match="etcd is down"):
        await kube_failing._get("reading", "/fail")


async def test_a_failing_snapshot_fails_the_wait_at_once_with_its_message(
        server: tuple[FakeApiServer, ApiClient]) -> None:
    """create_snapshot's wait ends on the snapshot's status.error, not in a bare timeout;
    an optimistic-concurrency conflict the controllers retry by themselves is not one."""
    fake, api = server
    kube = e2e_kube.Kube(api)
    path = "/apis/snapshot.storage.k8s.io/v1/namespaces/ns/volumesnapshots/snap"

    def snapshot(status: dict[str, Any]) -> dict[str, Any]:
        return {"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
                "metadata": {"name": "snap", "namespace": "ns"}, "status": status}

    fake.objects[path] = snapshot({"readyToUse": False, "error": {
        "message": "Operation cannot be fulfilled: the object has been modified; please "
                   "apply your changes to the latest version"}})
    assert await e2e_kube.snapshot_status(kube, "ns", "snap") is None
    fake.objects[path] = snapshot({"readyToUse": False, "error": {
        "message": "failed to take snapshot of the volume: No space"}})
    with pytest.raises(e2e_kube.SnapshotFailed, match=r"ns/snap failed: .*No space"):
        await e2e_kube.wait_for("snapshot", lambda: e2e_kube.snapshot_status(kube, "ns", "snap"),
                                timeout=600)
    fake.objects[path] = snapshot({"readyToUse": True})
    assert await e2e_kube.snapshot_status(kube, "ns", "snap") == {"readyToUse": True}
