"""The Heketi client over real HTTP, against a real Heketi and against the simulator.

Every test runs on both backends (`heketi_backend`, tests/conftest.py): the session's real
Heketi v10.3.0 with its mock executor (or the one HEKETI_TEST_URL names) and a fresh
simulator per test. Tests that need fault injection or the simulator's bookkeeping skip on
the real one, saying so; so do clones (the mock executor panics on clone).
See devtools/heketi_sim/README.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from structlog.testing import capture_logs

from devtools.heketi_sim import HeketiSimulator
from devtools.heketi_sim.model import GIB_KIB
from devtools.heketi_sim.testing import (
    Endpoint,
    HeketiTarget,
    fresh_target,
    real_target,
    sim_target,
    unique_name,
)
from services.controller.heketi import (
    Durability,
    HeketiAdminRequired,
    HeketiAuthError,
    HeketiBadRequest,
    HeketiBusy,
    HeketiClient,
    HeketiMaintenance,
    HeketiNameInUse,
    HeketiNoSpace,
    HeketiNotFound,
    HeketiOperationFailed,
    HeketiResultLost,
    HeketiThrottled,
    HeketiTimeout,
    HeketiUnavailable,
    Snapshot,
    VolumeCreateRequest,
    VolumeInfo,
)
from services.controller.heketi import http as http_module
from services.controller.heketi.auth import authorization_header, make_token
from services.controller.heketi.errors import error_for
from tests.support.conditions import pending_operations, until

ZERO_ID = "0" * 32


@pytest.fixture
async def target(heketi_backend: str, request: pytest.FixtureRequest
                 ) -> AsyncIterator[HeketiTarget]:
    if heketi_backend == "real":
        endpoint: Endpoint = request.getfixturevalue("real_heketi")
        async with real_target(endpoint) as t:
            yield t
    else:
        async with sim_target() as t:
            yield t


@pytest.fixture
async def sim(target: HeketiTarget) -> HeketiSimulator:
    """The simulator behind `target`, for fault injection and its bookkeeping."""
    return target.require_sim("fault injection or the simulator's bookkeeping")


async def _create(target: HeketiTarget, client: HeketiClient, label: str = "v",
                  **fields: Any) -> VolumeInfo:
    """Create a uniquely named volume (1 GiB unless `size_gib` says otherwise), tracked."""
    req = VolumeCreateRequest(name=unique_name(label), **{"size_gib": 1, **fields})
    info = await client.create_volume(req)
    target.track(info.id)
    return info


async def _find_by_name(client: HeketiClient, name: str) -> list[VolumeInfo]:
    found = []
    for volume_id in await client.list_volume_ids():
        with contextlib.suppress(HeketiNotFound):
            info = await client.volume_info(volume_id)
            if info.name == name:
                found.append(info)
    return found


async def _cluster_free_kib(client: HeketiClient, cluster_id: str) -> int:
    cluster = await client.cluster_info(cluster_id)
    free = 0
    for node_id in cluster.nodes:
        node = await client.node_info(node_id)
        free += sum(d.storage.free_kib for d in node.devices)
    return free


async def _raw(target: HeketiTarget, method: str, path: str, *, issuer: str = "admin",
               key: str | None = None, body: object = None,
               token: bool = True) -> tuple[int, dict[str, str], str]:
    """One request outside the client, to look at Heketi's exact answers."""
    headers = {}
    if token:
        secret = key if key is not None else (target.admin_key or "")
        headers["Authorization"] = authorization_header(make_token(method, path, issuer, secret))
    async with aiohttp.ClientSession() as session, session.request(
            method, target.url + path, json=body, headers=headers,
            allow_redirects=False) as resp:
        return resp.status, dict(resp.headers), await resp.text()


# --- the basics -------------------------------------------------------------------------


async def test_hello(target: HeketiTarget) -> None:
    assert "Hello from Heketi" in await target.client().hello()


async def test_create_read_list_delete(target: HeketiTarget) -> None:
    client = target.client()
    req = VolumeCreateRequest(size_gib=2, name=unique_name("crud"),
                              durability=Durability.replicate(3), gid=2001,
                              snapshot=Snapshot(enable=True, factor=1.5))
    info = await client.create_volume(req)
    target.track(info.id)
    assert len(info.id) == 32 and int(info.id, 16) >= 0
    assert (info.name, info.size_gib, info.gid) == (req.name, 2, 2001)
    assert info.durability == Durability.replicate(3)
    assert info.snapshot == Snapshot(enable=True, factor=1.5)
    hosts = info.mount.hosts
    assert info.mount.device == f"{hosts[0]}:{info.name}"
    assert info.mount.options["backup-volfile-servers"] == ",".join(hosts[1:])
    assert len(info.bricks) % 3 == 0
    assert sum(b.size_kib for b in info.bricks) == 3 * 2 * GIB_KIB
    assert info.id in await client.list_volume_ids()
    assert await client.volume_info(info.id) == info

    await client.delete_volume(info.id)
    assert info.id not in await client.list_volume_ids()
    with pytest.raises(HeketiNotFound):
        await client.volume_info(info.id)


async def test_default_name_is_vol_and_id(target: HeketiTarget) -> None:
    info = await target.client().create_volume(VolumeCreateRequest(size_gib=1))
    target.track(info.id)
    assert info.name == f"vol_{info.id}"


async def test_free_space_goes_down_by_replica_times_size(target: HeketiTarget) -> None:
    client = target.client()
    cluster = (await client.list_cluster_ids())[0]
    before = await _cluster_free_kib(client, cluster)
    info = await _create(target, client, "space", size_gib=3,
                         durability=Durability.replicate(3), clusters=(cluster,))
    after = await _cluster_free_kib(client, cluster)
    # Each brick also reserves thin-pool metadata (0.5 %, in 4 MiB extents).
    assert 3 * 3 * GIB_KIB <= before - after <= 3 * 3 * GIB_KIB * 1.01
    await client.delete_volume(info.id)
    assert await _cluster_free_kib(client, cluster) == before


async def test_disperse_takes_data_plus_redundancy_over_data(heketi_backend: str) -> None:
    # Heketi puts no two bricks of a disperse set on one node: 4+2 needs six nodes.
    async with fresh_target(heketi_backend, nodes=6) as wide:
        client = wide.client()
        cluster = (await client.list_cluster_ids())[0]
        before = await _cluster_free_kib(client, cluster)
        info = await _create(wide, client, "ec", size_gib=4,
                             durability=Durability.disperse(4, 2))
        assert len(info.bricks) == 6 and {b.size_kib for b in info.bricks} == {GIB_KIB}
        spent = before - await _cluster_free_kib(client, cluster)
        assert 4 * GIB_KIB * 6 // 4 <= spent <= 4 * GIB_KIB * 6 // 4 * 1.01


async def test_expand_adds_bricks_and_size(target: HeketiTarget) -> None:
    client = target.client()
    info = await _create(target, client, "grow", size_gib=1, durability=Durability.replicate(3))
    grown = await client.expand_volume(info.id, 2)
    assert grown.id == info.id and grown.size_gib == 3
    assert sum(b.size_kib for b in grown.bricks) == 3 * 3 * GIB_KIB
    assert (await client.volume_info(info.id)).size_gib == 3


async def test_clone_of_snapshot_enabled_volume(target: HeketiTarget) -> None:
    target.require_sim("clones (the real Heketi's mock executor panics on clone)")
    client = target.client()
    source = await _create(target, client, "src", snapshot=Snapshot(True, 1.5),
                           durability=Durability.replicate(3))
    unnamed = await client.clone_volume(source.id)
    target.track(unnamed.id)
    assert unnamed.name == f"vol_{unnamed.id}" and unnamed.id != source.id
    assert unnamed.size_gib == source.size_gib and unnamed.cluster == source.cluster
    name = unique_name("clone")
    named = await client.clone_volume(source.id, name)
    target.track(named.id)
    assert named.name == name
    assert named.mount.device.endswith(f":{name}")


async def test_clone_needs_snapshot_enabled(sim: HeketiSimulator, target: HeketiTarget) -> None:
    client = target.client()
    source = await _create(target, client, "nosnap")
    with pytest.raises(HeketiOperationFailed, match="Unable to create snapshot"):
        await client.clone_volume(source.id)
    assert [v.name for v in sim.visible_volumes()] == [source.name]
    assert (await client.volume_info(source.id)).name == source.name  # visible again


async def test_cluster_node_device_info(target: HeketiTarget) -> None:
    client = target.client()
    clusters = await client.list_cluster_ids()
    assert clusters
    cluster = await client.cluster_info(clusters[0])
    assert cluster.id == clusters[0] and cluster.nodes
    node = await client.node_info(cluster.nodes[0])
    assert node.cluster == cluster.id and node.storage_hostnames and node.manage_hostnames
    assert node.devices
    device = await client.device_info(node.devices[0].id)
    assert device.id == node.devices[0].id and device.name.startswith("/")
    storage = device.storage
    assert storage.total_kib == storage.free_kib + storage.used_kib > 0


# --- errors ------------------------------------------------------------------------------


async def test_unknown_ids_are_not_found(target: HeketiTarget) -> None:
    client = target.client()
    with pytest.raises(HeketiNotFound):
        await client.volume_info(ZERO_ID)
    with pytest.raises(HeketiNotFound, match="Id not found"):
        await client.delete_volume(ZERO_ID)
    with pytest.raises(HeketiNotFound):
        await client.expand_volume(ZERO_ID, 1)
    with pytest.raises(HeketiNotFound):
        await client.node_info(ZERO_ID)
    with pytest.raises(HeketiNotFound):
        await client.volume_info("not-an-id")


async def test_name_in_use(target: HeketiTarget) -> None:
    client = target.client()
    info = await _create(target, client, "dup")
    count = len(await client.list_volume_ids())
    with pytest.raises(HeketiNameInUse, match=f"Volume name '{info.name}' already in use"):
        await client.create_volume(VolumeCreateRequest(size_gib=1, name=info.name))
    assert len(await client.list_volume_ids()) == count


async def test_no_space(target: HeketiTarget) -> None:
    client = target.client()
    count = len(await client.list_volume_ids())
    with pytest.raises(HeketiNoSpace, match="No space"):
        await client.create_volume(VolumeCreateRequest(size_gib=10_000_000,
                                                       name=unique_name("huge")))
    assert len(await client.list_volume_ids()) == count


async def test_volume_limit_per_cluster(target: HeketiTarget) -> None:
    target.require_sim("a small volume limit")
    async with sim_target(max_volumes_per_cluster=2) as small:
        client = small.client()
        for _ in range(2):
            await _create(small, client, "lim")
        with pytest.raises(HeketiNoSpace, match="Cluster has 2 volumes and limit is 2"):
            await client.create_volume(VolumeCreateRequest(size_gib=1))


async def test_heketi_rejects_unknown_cluster(target: HeketiTarget) -> None:
    client = target.client()
    with pytest.raises(HeketiBadRequest, match=r"Cluster id f+ not found"):
        await client.create_volume(VolumeCreateRequest(size_gib=1, clusters=("f" * 32,)))


async def test_bad_input_is_refused_before_sending(target: HeketiTarget) -> None:
    client = target.client()
    with pytest.raises(HeketiBadRequest, match="may only hold"):
        await client.create_volume(VolumeCreateRequest(size_gib=1, name="no spaces"))
    with pytest.raises(HeketiBadRequest):
        await client.expand_volume(ZERO_ID, 0)
    assert client.requests_sent == 0


async def test_heketi_validation_texts(target: HeketiTarget) -> None:
    status, _, text = await _raw(target, "POST", "/volumes", body={"size": 1, "name": "a b"})
    assert (status, text.strip()) == (400, "validation failed: name: must be in a valid format.")
    status, _, text = await _raw(target, "POST", "/volumes",
                                 body={"size": 1, "durability": {"type": "mirror"}})
    assert (status, text.strip()) == (400, "Unknown durability type")
    status, _, text = await _raw(target, "POST", "/volumes", body={"size": "big"})
    assert (status, text.strip()) == (422, "request unable to be parsed")


# --- authentication ---------------------------------------------------------------------


async def test_wrong_key(target: HeketiTarget) -> None:
    client = target.client(key="definitely-not-the-key")
    with pytest.raises(HeketiAuthError, match="secrets may not match"):
        await client.list_volume_ids()


async def test_expired_token(target: HeketiTarget, monkeypatch: pytest.MonkeyPatch) -> None:
    def stale_token(method: str, path: str, issuer: str, key: str) -> str:
        return make_token(method, path, issuer, key, now=time.time() - 3600)

    monkeypatch.setattr(http_module, "make_token", stale_token)
    with pytest.raises(HeketiAuthError, match="Token is expired"):
        await target.client().list_volume_ids()


async def test_token_from_the_future(target: HeketiTarget, monkeypatch: pytest.MonkeyPatch) -> None:
    def early_token(method: str, path: str, issuer: str, key: str) -> str:
        return make_token(method, path, issuer, key, now=time.time() + 600)

    monkeypatch.setattr(http_module, "make_token", early_token)
    with pytest.raises(HeketiAuthError, match="clocks may differ"):
        await target.client().list_volume_ids()


async def test_missing_token(target: HeketiTarget) -> None:
    status, _, text = await _raw(target, "GET", "/volumes", token=False)
    assert (status, text.strip()) == (401, "Required authorization token not found")


async def test_user_key_lists_but_is_not_admin(target: HeketiTarget) -> None:
    user_key = target.require_user_key()
    user = target.client("user", user_key)
    assert isinstance(await user.list_volume_ids(), list)
    sent = user.requests_sent
    with pytest.raises(HeketiAdminRequired, match="needs the admin key"):
        await user.volume_info(ZERO_ID)
    with pytest.raises(HeketiAdminRequired):
        await user.create_volume(VolumeCreateRequest(size_gib=1))
    with pytest.raises(HeketiAdminRequired):
        await user.delete_volume(ZERO_ID)
    assert user.requests_sent == sent  # refused before anything was sent

    # What Heketi itself answers a user token on an admin route, and how that maps.
    status, _, text = await _raw(target, "GET", "/clusters", issuer="user", key=user_key)
    assert (status, text.strip()) == (401, "Administrator access required")
    assert isinstance(error_for("t", "GET /clusters", status, text), HeketiAdminRequired)


async def test_server_without_auth(heketi_backend: str) -> None:
    async with fresh_target(heketi_backend, use_auth=False) as open_target:
        client = HeketiClient(open_target.url, "admin", None)
        try:
            info = await client.create_volume(VolumeCreateRequest(size_gib=1))
            assert info.id in await client.list_volume_ids()
        finally:
            await client.close()


async def test_secrets_stay_out_of_reprs_errors_and_logs(target: HeketiTarget) -> None:
    secret = "Sup3r-Secret-Heketi-Key"
    client = target.client(key=secret)
    assert secret not in repr(client)
    with capture_logs() as logs:
        with pytest.raises(HeketiAuthError) as caught:
            await client.list_volume_ids()
        good = target.client()
        await _create(target, good, "logs")
    assert secret not in str(caught.value)
    assert "eyJ" not in str(caught.value)  # no JWT either
    assert logs, "the client logs its calls"
    for entry in logs:
        assert secret not in repr(entry) and "eyJ" not in repr(entry)
    assert any(e.get("op_id") for e in logs), "operations are logged with their id"


# --- the asynchronous queue -------------------------------------------------------------


async def test_queue_result_is_one_shot(target: HeketiTarget) -> None:
    status, headers, _ = await _raw(target, "POST", "/volumes",
                                    body={"size": 1, "name": unique_name("queue")})
    assert status == 202
    queue_path = headers["Location"]
    assert queue_path.startswith("/queue/")
    deadline = time.monotonic() + 60
    while True:
        status, headers, _ = await _raw(target, "GET", queue_path)
        if status != 200:
            break
        assert headers.get("X-Pending") == "true"
        assert time.monotonic() < deadline
        await asyncio.sleep(0.1)
    assert status == 303
    target.track(headers["Location"].rsplit("/", 1)[-1])
    status, _, text = await _raw(target, "GET", queue_path)
    assert (status, text.strip()) == (404, "Id not found")


async def test_progress_is_reported_while_pending(sim: HeketiSimulator,
                                                  target: HeketiTarget) -> None:
    sim.set_latency(1.0, "create")
    seen: list[float] = []

    async def progress(elapsed: float) -> None:
        seen.append(elapsed)

    await target.client().create_volume(VolumeCreateRequest(size_gib=1), on_progress=progress)
    assert len(seen) >= 2 and seen == sorted(seen) and seen[-1] < 1.5


async def test_pending_volume_is_hidden(sim: HeketiSimulator, target: HeketiTarget) -> None:
    sim.set_latency(1.0, "create")
    client = target.client()
    name = unique_name("hidden")
    task = asyncio.create_task(client.create_volume(VolumeCreateRequest(size_gib=1, name=name)))
    await until(lambda: pending_operations(sim, "create") == 1, "the create is pending")
    pending = sim.volume_by_name(name)
    assert pending is not None
    assert pending.id not in await client.list_volume_ids()
    with pytest.raises(HeketiNotFound):
        await client.volume_info(pending.id)
    with pytest.raises(HeketiNameInUse):  # the name is taken while the create runs
        await client.create_volume(VolumeCreateRequest(size_gib=1, name=name))
    info = await task
    assert info.id == pending.id


async def test_delete_while_deleting_is_busy(sim: HeketiSimulator, target: HeketiTarget) -> None:
    client = target.client()
    info = await _create(target, client, "busy")
    sim.set_latency(1.0, "delete")
    first = asyncio.create_task(client.delete_volume(info.id))
    await until(lambda: pending_operations(sim, "delete") == 1, "the delete is pending")
    with pytest.raises(HeketiBusy, match="in use"):
        await client.delete_volume(info.id)
    await first
    assert info.id not in await client.list_volume_ids()


async def test_lost_create_result_then_find_by_name(sim: HeketiSimulator,
                                                     target: HeketiTarget) -> None:
    client = target.client()
    name = unique_name("lost")
    sim.drop_next_results(1)
    with pytest.raises(HeketiResultLost) as caught:
        await client.create_volume(VolumeCreateRequest(size_gib=1, name=name))
    assert len(caught.value.op_id) == 32
    assert sim.request_counts["GET /queue/{id}"] == 1, "never polls again after the drop"
    found = await _find_by_name(client, name)
    assert [v.name for v in found] == [name]
    assert sim.stats.ops_started["create"] == 1


async def test_lost_delete_result(sim: HeketiSimulator, target: HeketiTarget) -> None:
    client = target.client()
    info = await _create(target, client, "lostdel")
    sim.drop_next_results(1)
    with pytest.raises(HeketiResultLost):
        await client.delete_volume(info.id)
    with pytest.raises(HeketiNotFound):
        await client.volume_info(info.id)


async def test_an_operation_pending_for_ever_ends_at_its_deadline(sim: HeketiSimulator,
                                                                    target: HeketiTarget) -> None:
    """A queue that answers "pending" for ever must not hold the throttling slot for ever:
    at the operation deadline the operation ends like a lost result (look it up by name)."""
    client = target.client(max_inflight=1, operation_timeout=1.0)
    sim.set_latency(3600, "create")
    started = time.monotonic()
    with pytest.raises(HeketiResultLost) as caught:
        await client.create_volume(VolumeCreateRequest(size_gib=1, name=unique_name("stuck")))
    assert 1.0 <= time.monotonic() - started < 4.0
    assert "did not finish within 1 s" in caught.value.message
    assert len(caught.value.op_id) == 32
    # The one throttling slot is free again: the next operation runs at once.
    sim.set_latency(0, "create")
    await asyncio.wait_for(_create(target, client, "after"), 5)


async def test_failure_on_the_queue_carries_heketis_text(sim: HeketiSimulator,
                                                         target: HeketiTarget) -> None:
    client = target.client()
    before = len(sim.visible_volumes())
    # (`Commit failed on <peer>` is a server going away: retryable, HeketiServerDown)
    text = ("volume create: vol_x: failed: Brick: sim-node-2:/b/x not available. Brick may "
            "be containing or be contained by an existing brick.")
    sim.fail_next(1, 500, text, kinds=["create"], on_queue=True)
    with pytest.raises(HeketiOperationFailed, match="Brick: sim-node-2:/b/x not available") \
            as caught:
        await client.create_volume(VolumeCreateRequest(size_gib=1))
    assert "'test'" in str(caught.value)  # names the backend
    assert len(sim.visible_volumes()) == before
    assert len(sim.topology.volumes) == before, "a failed create leaves nothing behind"


async def test_name_clash_on_the_queue_is_name_in_use(sim: HeketiSimulator,
                                                      target: HeketiTarget) -> None:
    # Heketi v10 finds a clash synchronously; older versions reported it on the queue.
    sim.fail_next(1, 500, "Volume name 'x' already in use", kinds=["create"], on_queue=True)
    with pytest.raises(HeketiNameInUse):
        await target.client().create_volume(VolumeCreateRequest(size_gib=1))


async def test_5xx_on_a_read_is_unavailable(sim: HeketiSimulator, target: HeketiTarget) -> None:
    sim.fail_next(1, 502, "Bad Gateway", kinds=["get"])
    with pytest.raises(HeketiUnavailable, match="502"):
        await target.client().list_volume_ids()


async def test_maintenance_mode(sim: HeketiSimulator, target: HeketiTarget) -> None:
    client = target.client()
    sim.set_maintenance(True)
    with pytest.raises(HeketiMaintenance, match="Service disabled for maintenance"):
        await client.create_volume(VolumeCreateRequest(size_gib=1))
    assert isinstance(await client.list_volume_ids(), list)  # reads still work
    sim.set_maintenance(False)
    await _create(target, client, "after")


async def test_unreachable_then_back(sim: HeketiSimulator, target: HeketiTarget) -> None:
    client = target.client()
    await client.list_volume_ids()  # a pooled connection exists
    await sim.go_offline()
    started = time.monotonic()
    with pytest.raises(HeketiUnavailable, match="cannot connect"):
        await client.list_volume_ids()
    with pytest.raises(HeketiUnavailable):
        await client.create_volume(VolumeCreateRequest(size_gib=1))
    assert time.monotonic() - started < 5
    await sim.go_online()
    await _create(target, client, "back")


async def test_nothing_listening_is_unavailable(target: HeketiTarget) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = target.client()
    dead = HeketiClient(f"http://127.0.0.1:{port}", "admin", "k", name="dead")
    try:
        with pytest.raises(HeketiUnavailable, match=r"'dead'.*cannot connect"):
            await dead.volume_info(ZERO_ID)
    finally:
        await dead.close()
    assert client.requests_sent == 0


async def test_request_deadline(target: HeketiTarget) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(30)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = HeketiClient(f"http://127.0.0.1:{port}", "admin", "k", request_timeout=0.3)
    try:
        started = time.monotonic()
        with pytest.raises(HeketiTimeout, match=r"no answer within 0\.3 s"):
            await client.list_volume_ids()
        with pytest.raises(HeketiTimeout, match="may have started"):
            await client.delete_volume(ZERO_ID)
        assert time.monotonic() - started < 3
    finally:
        await client.close()
        server.close()


async def test_client_counts_its_requests(sim: HeketiSimulator, target: HeketiTarget) -> None:
    client = target.client()
    info = await _create(target, client, "count")
    await client.delete_volume(info.id)
    assert client.requests_sent == sum(sim.request_counts.values())
    assert sim.request_counts["POST /volumes"] == 1
    assert sim.request_counts["DELETE /volumes/{id}"] == 1
    assert sim.request_counts["GET /volumes/{id}"] == 1  # the 303 followed once


# --- throttling -------------------------------------------------------------------------

STORM = 200


async def _storm(target: HeketiTarget, sim: HeketiSimulator, client_limit: int) -> float:
    sim.set_latency(0.05)
    client = target.client(max_inflight=client_limit)
    names = [unique_name(f"storm{i}") for i in range(STORM)]
    started = time.monotonic()
    results = await asyncio.gather(
        *(client.create_volume(VolumeCreateRequest(size_gib=1, name=n)) for n in names))
    seconds = time.monotonic() - started
    assert sorted(v.name for v in results) == sorted(names)
    assert len({v.id for v in results}) == STORM
    assert len(sim.visible_volumes()) == STORM, "no duplicates, none missing"
    assert sim.stats.ops_started["create"] == STORM
    assert sim.stats.max_inflight_seen <= sim.config.max_inflight
    print(f"\nstorm: {STORM} creates, client limit {client_limit}, sim limit "
          f"{sim.config.max_inflight}: {seconds:.2f} s, 429s seen by client "
          f"{client.throttled_responses}, requests {client.requests_sent}, "
          f"sim counts {dict(sim.request_counts)}", file=sys.stderr)
    return seconds


async def test_storm_with_matching_limits_sees_no_429(sim: HeketiSimulator,
                                                       target: HeketiTarget) -> None:
    await _storm(target, sim, client_limit=8)
    assert sim.stats.throttled == 0
    assert sim.request_counts["POST /volumes"] == STORM


async def test_storm_above_heketis_limit_retries_429s(sim: HeketiSimulator,
                                                      target: HeketiTarget) -> None:
    await _storm(target, sim, client_limit=32)
    assert sim.stats.throttled > 0
    assert sim.request_counts["POST /volumes"] == STORM + sim.stats.throttled


async def test_throttled_too_long_is_unavailable(sim: HeketiSimulator,
                                                 target: HeketiTarget) -> None:
    sim.fail_next(10, 429, "Server busy. Retry operation later.", kinds=["create"])
    client = target.client(throttle_retries=3, throttle_backoff=0.01)
    with pytest.raises(HeketiThrottled, match="still busy after 3 tries") as caught:
        await client.create_volume(VolumeCreateRequest(size_gib=1))
    assert isinstance(caught.value, HeketiUnavailable)
    assert sim.request_counts["POST /volumes"] == 3
    assert not sim.visible_volumes()


async def test_a_storm_on_a_one_at_a_time_heketi_ends_with_every_volume_once(
        heketi_backend: str) -> None:
    # Heketi runs one operation at a time; the client sends 12 at once: every 429 is
    # retried until each create is done, exactly once. (The real one's creates take
    # milliseconds; the simulator's take 50 ms here, or none would overlap.)
    options: dict[str, Any] = {"max_inflight": 1}
    if heketi_backend == "sim":
        options["op_latency"] = 0.05
    async with fresh_target(heketi_backend, **options) as busy:
        # (it lowers its own limit on a 429 and holds a slot until the queue says done:
        # quick polls keep the test short)
        client = busy.client(max_inflight=12, throttle_retries=200, throttle_backoff=0.01,
                             throttle_backoff_max=0.05, poll_initial=0.01, poll_max=0.05)
        names = [unique_name(f"busy{i}") for i in range(12)]
        results = await asyncio.gather(
            *(client.create_volume(VolumeCreateRequest(size_gib=1, name=n)) for n in names))
        for info in results:
            busy.track(info.id)
        assert sorted(v.name for v in results) == sorted(names)
        listed = [(await client.volume_info(i)).name for i in await client.list_volume_ids()]
        assert sorted(listed) == sorted(names), "no duplicates, none missing"
        assert client.throttled_responses > 0, "Heketi answered 429 and the client retried"


async def test_retry_after_is_honoured(target: HeketiTarget) -> None:
    target.require_sim("a throttling simulator")
    async with sim_target(max_inflight=1, retry_after=1, op_latency=0.5) as busy:
        assert busy.sim is not None
        first, second = busy.client(), busy.client()  # two controllers, one Heketi
        started = time.monotonic()
        a, b = await asyncio.gather(
            first.create_volume(VolumeCreateRequest(size_gib=1)),
            second.create_volume(VolumeCreateRequest(size_gib=1)))
        assert a.id != b.id
        assert busy.sim.stats.throttled >= 1
        assert time.monotonic() - started >= 1.0


# --- TLS -------------------------------------------------------------------------------


async def test_tls_with_a_ca_bundle(heketi_backend: str, tmp_path: Path) -> None:
    if shutil.which("openssl") is None:
        pytest.fail("openssl is not installed: it makes this test's certificate "
                    "(tools/setup.sh installs it)", pytrace=False)
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    proc = await asyncio.create_subprocess_exec(
        "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
        "-keyout", str(key), "-out", str(cert),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    assert await proc.wait() == 0
    async with fresh_target(heketi_backend, tls_cert=cert, tls_key=key) as tls:
        assert tls.url.startswith("https://")
        trusting = tls.client(ca_file=str(cert))
        assert isinstance(await trusting.list_volume_ids(), list)
        stranger = tls.client()
        with pytest.raises(HeketiUnavailable, match="certificate not trusted"):
            await stranger.list_volume_ids()
