"""The simulator is not kinder than a real Heketi v10 where the driver can tell.

Each test checks one behaviour observed on a real Heketi v10.4.1 and read in its source
(`../shared/reference/heketi-api.md`, last section): the expansion-out-of-space text, no two
bricks of a set on one node, thin-pool metadata in the space accounting, and the JSON shapes
of `glustervolumeoptions`, `snapshot.factor` and a replicate block without a replica count.
These talk to the simulator over HTTP only, as the controller does.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp

from devtools.heketi_sim import HeketiSimulator
from devtools.heketi_sim.latency import INSTANT
from devtools.heketi_sim.model import GIB_KIB
from services.controller.heketi.auth import authorization_header, make_token

KEY = "fidelity-admin"
MIB_KIB = 1024
NO_SPACE = "Failed to allocate new volume: No space"


@asynccontextmanager
async def _sim(**options: Any) -> AsyncIterator[HeketiSimulator]:
    async with HeketiSimulator(op_latency=INSTANT, admin_key=KEY, **options) as sim:
        yield sim


async def _call(sim: HeketiSimulator, method: str, path: str,
                body: object = None) -> tuple[int, str]:
    """One request, following a 202 through the queue to its result, as Heketi's client."""
    async with aiohttp.ClientSession() as session:
        async def one(m: str, p: str, b: object = None) -> aiohttp.ClientResponse:
            headers = {"Authorization": authorization_header(make_token(m, p, "admin", KEY))}
            resp = await session.request(m, sim.url + p, json=b, headers=headers,
                                         allow_redirects=False)
            await resp.read()
            return resp

        resp = await one(method, path, body)
        if resp.status == 202:
            queue = resp.headers["Location"]
            while True:
                resp = await one("GET", queue)
                if resp.status != 200 or resp.headers.get("X-Pending") != "true":
                    break
            if resp.status == 303:
                resp = await one("GET", resp.headers["Location"])
        return resp.status, (await resp.text()).strip()


async def _create(sim: HeketiSimulator, **body: Any) -> dict[str, Any]:
    status, text = await _call(sim, "POST", "/volumes", {"size": 1, **body})
    assert status == 200, text
    volume: dict[str, Any] = json.loads(text)
    return volume


async def _free_kib_by_node(sim: HeketiSimulator) -> dict[str, int]:
    _, text = await _call(sim, "GET", "/clusters")
    free: dict[str, int] = {}
    for cluster_id in json.loads(text)["clusters"]:
        _, cluster = await _call(sim, "GET", f"/clusters/{cluster_id}")
        for node_id in json.loads(cluster)["nodes"]:
            _, node = await _call(sim, "GET", f"/nodes/{node_id}")
            free[node_id] = sum(d["storage"]["free"] for d in json.loads(node)["devices"])
    return free


# --- running out of space ------------------------------------------------------------------


async def test_expanding_beyond_free_space_is_maximum_bricks_reached() -> None:
    async with _sim() as sim:  # three nodes of three 1 TiB devices
        volume = await _create(sim, durability={"type": "replicate",
                                                "replicate": {"replica": 3}})
        free = await _free_kib_by_node(sim)
        status, text = await _call(sim, "POST", f"/volumes/{volume['id']}/expand",
                                   {"expand_size": 10_000})
        assert (status, text) == (
            500, "Failed to allocate volume expansion: Maximum number of bricks reached.")
        # A create of the same size reports the same shortage as `No space`.
        assert await _call(sim, "POST", "/volumes", {"size": 10_000}) == (500, NO_SPACE)
        assert await _free_kib_by_node(sim) == free
        _, after = await _call(sim, "GET", f"/volumes/{volume['id']}")
        assert json.loads(after)["size"] == 1 and len(json.loads(after)["bricks"]) == 3


async def test_expanding_a_full_cluster_by_little_is_minimum_brick_size() -> None:
    # Heketi halves the bricks until they would be smaller than 1 GiB.
    async with _sim(devices_per_node=1, device_size_gib=10) as sim:
        volume = await _create(sim, size=5, durability={"type": "replicate",
                                                        "replicate": {"replica": 3}})
        status, text = await _call(sim, "POST", f"/volumes/{volume['id']}/expand",
                                   {"expand_size": 6})
        assert (status, text) == (500, "Failed to allocate volume expansion: Minimum brick "
                                       "size limit reached.  Out of space.")


# --- placement ------------------------------------------------------------------------------


async def test_no_two_bricks_of_a_set_share_a_node() -> None:
    disperse = {"type": "disperse", "disperse": {"data": 4, "redundancy": 2}}
    async with _sim(nodes=3, devices_per_node=3) as sim:
        assert await _call(sim, "POST", "/volumes", {"size": 4, "durability": disperse}) \
            == (500, NO_SPACE)
        assert sim.visible_volumes() == []
    async with _sim(nodes=2) as sim:
        replica3 = {"type": "replicate", "replicate": {"replica": 3}}
        assert await _call(sim, "POST", "/volumes", {"size": 1, "durability": replica3}) \
            == (500, NO_SPACE)
    async with _sim(nodes=6, devices_per_node=1) as sim:
        volume = await _create(sim, size=4, durability=disperse)
        assert len({b["node"] for b in volume["bricks"]}) == 6


async def test_nodes_sharing_one_storage_host_stay_distinct_nodes() -> None:
    # The glusterd mode runs every brick on this host; the simulated nodes keep their own
    # identities, so the placement rules hold there too.
    async with _sim(storage_host="one-host.test") as sim:
        volume = await _create(sim, durability={"type": "replicate",
                                                "replicate": {"replica": 3}})
        assert len({b["node"] for b in volume["bricks"]}) == 3
        assert volume["mount"]["glusterfs"]["hosts"] == ["one-host.test"] * 3
        disperse = {"type": "disperse", "disperse": {"data": 4, "redundancy": 2}}
        assert await _call(sim, "POST", "/volumes", {"size": 4, "durability": disperse}) \
            == (500, NO_SPACE)


# --- space accounting ------------------------------------------------------------------------


async def test_each_brick_costs_its_thin_pool_metadata_too() -> None:
    async with _sim() as sim:
        cases = [
            # (size GiB, snapshot, KiB per brick: pool + 0.5 % metadata, each to 4 MiB)
            (1, None, GIB_KIB + 8 * MIB_KIB),
            (1, {"enable": True, "factor": 1.5}, GIB_KIB * 3 // 2 + 8 * MIB_KIB),
            (100, None, 100 * GIB_KIB + 512 * MIB_KIB),
        ]
        for size, snapshot, per_brick in cases:
            before = await _free_kib_by_node(sim)
            body: dict[str, Any] = {"size": size, "durability": {
                "type": "replicate", "replicate": {"replica": 3}}}
            if snapshot:
                body["snapshot"] = snapshot
            volume = await _create(sim, **body)
            after = await _free_kib_by_node(sim)
            assert {n: before[n] - after[n] for n in before} == \
                {n: per_brick for n in before}, (size, snapshot)
            assert {b["size"] for b in volume["bricks"]} == {size * GIB_KIB}
            await _call(sim, "DELETE", f"/volumes/{volume['id']}")
            assert await _free_kib_by_node(sim) == before


async def test_a_device_exactly_the_brick_size_does_not_hold_it() -> None:
    async with _sim(nodes=1, devices_per_node=1, device_size_gib=2) as sim:
        assert await _call(sim, "POST", "/volumes", {"size": 2}) == (500, NO_SPACE)
        await _create(sim, size=1)


# --- JSON shapes -----------------------------------------------------------------------------


async def test_gluster_volume_options_are_always_sent_between_empty_strings() -> None:
    async with _sim() as sim:
        plain = await _create(sim)
        assert plain["glustervolumeoptions"] == ["", ""]
        given = await _create(sim, glustervolumeoptions=["performance.read-ahead off",
                                                         "client.ssl on"])
        assert given["glustervolumeoptions"] == ["", "performance.read-ahead off",
                                                 "client.ssl on", ""]
        assert await _call(sim, "POST", "/volumes", {"size": 1, "glustervolumeoptions": [1]}) \
            == (422, "request unable to be parsed")


async def test_snapshot_factor_is_a_json_integer_when_whole() -> None:
    async with _sim() as sim:
        for snapshot, factor_text in ((None, '"factor": 1}'),
                                      ({"enable": True, "factor": 2}, '"factor": 2}'),
                                      ({"enable": True, "factor": 1.5}, '"factor": 1.5}')):
            volume = await _create(sim, **({"snapshot": snapshot} if snapshot else {}))
            _, text = await _call(sim, "GET", f"/volumes/{volume['id']}")
            assert factor_text in text, (snapshot, text)
            assert json.loads(text)["snapshot"]["enable"] is bool(snapshot)


async def test_replicate_without_a_count_reads_back_empty_with_two_bricks() -> None:
    async with _sim() as sim:
        volume = await _create(sim, durability={"type": "replicate"})
        assert volume["durability"]["replicate"] == {}
        assert len(volume["bricks"]) == 2


async def test_unknown_routes_and_non_hex_ids_are_invalid_paths() -> None:
    async with _sim() as sim:
        for method, path in (("GET", "/volumes/not-hex"), ("GET", "/nonsense"),
                             ("DELETE", "/volumes/xyz")):
            assert await _call(sim, method, path) == (404, "Invalid path or request"), path


# --- clones and thin pools -------------------------------------------------------------------


async def test_a_clone_takes_no_space_and_its_pools_outlive_the_source() -> None:
    """Heketi's rule (the mock executor panics on clone, so it cannot be compared): a clone's
    bricks live in the source's thin pools (size x snapshot factor, reserved by the source's
    create) and take nothing more; a pool's space comes back with its last brick only."""
    async with _sim() as sim:
        start = await _free_kib_by_node(sim)
        source = await _create(sim, size=2, durability={"type": "replicate",
                                                         "replicate": {"replica": 3}},
                               snapshot={"enable": True, "factor": 2})
        spent = {n: start[n] - f for n, f in (await _free_kib_by_node(sim)).items()}
        assert all(s >= 4 * GIB_KIB for s in spent.values()), spent  # 2 GiB x factor 2
        status, text = await _call(sim, "POST", f"/volumes/{source['id']}/clone",
                                   {"name": "clone_a"})
        assert status == 200, text
        clone = json.loads(text)
        after_clone = await _free_kib_by_node(sim)
        assert {n: start[n] - f for n, f in after_clone.items()} == spent
        # the source goes: its pools stay, the clone's bricks are in them
        assert (await _call(sim, "DELETE", f"/volumes/{source['id']}"))[0] == 204
        assert await _free_kib_by_node(sim) == after_clone
        # the last brick of each pool goes: all the space is back
        assert (await _call(sim, "DELETE", f"/volumes/{clone['id']}"))[0] == 204
        assert await _free_kib_by_node(sim) == start
