"""The Heketi a controller test talks to: a fresh real Heketi or a fresh simulator.

    async def test_x(ctl, heketi):          # runs twice: [real] and [sim]
        ...
        assert list((await heketi.our_volumes()).values()) == [1]

`heketi` (tests/integration/conftest.py) is a `HeketiBackend`: what the test may ask of either
backend goes through Heketi's REST API (`volumes()`, `our_volumes()`, `storage_hosts()`), so
the same assertions judge the real server and the simulator. A test that needs the
simulator's fault injection or bookkeeping asks for `sim` instead and runs on the simulator
only (mark it `@pytest.mark.sim_only("why")` so the run says why).

The real one is a new process per test (devtools/heketi_real, about 0.3 s with its topology of
3 nodes x 3 devices of 1024 GiB, like the simulator's), so a test starts from an empty Heketi
on both backends.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from devtools.heketi_real import HeketiNotBuilt, RealHeketi, RealHeketiConfig
from devtools.heketi_sim.latency import INSTANT
from devtools.heketi_sim.server import HeketiSimulator
from services.controller.heketi import HeketiClient, HeketiNotFound, VolumeInfo
from services.controller.heketi.auth import authorization_header, make_token
from services.controller.ids import parse_owned_name
from tests.support.sim_process import SimProcess


@dataclass
class HeketiBackend:
    name: str  # "real" or "sim"
    url: str
    admin_key: str
    sim: HeketiSimulator | None = None
    real: RealHeketi | None = None
    proc: SimProcess | None = None  # the simulator as a process on a state file

    def __repr__(self) -> str:
        return f"HeketiBackend({self.name}, {self.url})"

    def require_sim(self, why: str) -> HeketiSimulator:
        if self.sim is None:
            pytest.skip(f"simulator only: {why}")
        return self.sim

    async def go_offline(self) -> None:
        """Unreachable (connection refused): the simulator closes its listener, the real
        Heketi (or the simulator's process, see `crashable`) is SIGKILLed (its database
        stays)."""
        if self.sim is not None:
            await self.sim.go_offline()
        elif self.real is not None:
            await asyncio.to_thread(self.real.kill)
        elif self.proc is not None:
            await self.proc.kill()

    async def go_online(self) -> None:
        """Back on the same address: the real Heketi restarts on its BoltDB."""
        if self.sim is not None:
            await self.sim.go_online()
        elif self.real is not None:
            await asyncio.to_thread(self.real.restart)
        elif self.proc is not None:
            await self.proc.start()

    @contextlib.asynccontextmanager
    async def crashable(self, directory: Path, *, sim_latency: float = 2.0,
                        sim_cleaner_start: float = 1.0) -> AsyncIterator[HeketiBackend]:
        """A backend whose `go_offline` is a SIGKILL that keeps its database and whose
        `go_online` starts it again on it: the real Heketi itself (its BoltDB, the cleaner
        1 s after a start), or for `sim` a simulator process on a state file
        (`--db`, operations of `sim_latency` s, the cleaner `sim_cleaner_start` s after a
        start, then every second)."""
        if self.real is not None:
            yield self
            return
        proc = SimProcess(directory, admin_key=self.admin_key, op_latency=sim_latency,
                          cleaner_start_s=sim_cleaner_start, cleaner_refresh_s=1.0)
        await proc.start()
        try:
            yield HeketiBackend("sim", proc.url, self.admin_key, proc=proc)
        finally:
            await proc.stop()

    @contextlib.asynccontextmanager
    async def client(self) -> AsyncIterator[HeketiClient]:
        async with HeketiClient(self.url, "admin", self.admin_key, name="test") as client:
            yield client

    async def volumes(self) -> list[VolumeInfo]:
        """Every volume Heketi shows (GET /volumes, then each one)."""
        async with self.client() as client:
            found = []
            for volume_id in await client.list_volume_ids():
                with contextlib.suppress(HeketiNotFound):  # deleted in between
                    found.append(await client.volume_info(volume_id))
            return found

    async def volume(self, volume_id: str) -> VolumeInfo:
        async with self.client() as client:
            return await client.volume_info(volume_id)

    async def our_volumes(self) -> Counter[str]:
        """Heketi volume names of the driver's, counted (a name counted twice is a duplicate)."""
        return Counter(v.name for v in await self.volumes() if parse_owned_name(v.name))

    async def get_json(self, path: str) -> Any:
        """`GET path` as admin through Heketi's REST API (e.g. `/operations`, which the
        driver never reads, so its client has no call for it)."""
        headers = {"Authorization": authorization_header(
            make_token("GET", path, "admin", self.admin_key))}
        async with aiohttp.ClientSession() as session, session.get(
                self.url + path, headers=headers) as resp:
            assert resp.status == 200, (path, resp.status, await resp.text())
            return await resp.json()

    async def free_kib(self) -> int:
        """Free space of every device, as Heketi reports it."""
        total = 0
        for cluster_id in (await self.get_json("/clusters"))["clusters"]:
            for node_id in (await self.get_json(f"/clusters/{cluster_id}"))["nodes"]:
                node = await self.get_json(f"/nodes/{node_id}")
                total += sum(int(d["storage"]["free"]) for d in node["devices"])
        return total

    async def set_state(self, kind: str, item_id: str, state: str,
                        timeout: float = 30.0) -> None:
        """`POST /{kind}s/{id}/state` (kind `node` or `device`) to its end, through Heketi's
        REST API (the driver never changes states, so its client has no call for it)."""
        def auth(method: str, path: str) -> dict[str, str]:
            return {"Authorization": authorization_header(
                make_token(method, path, "admin", self.admin_key))}

        path = f"/{kind}s/{item_id}/state"
        async with aiohttp.ClientSession() as session:
            async with session.post(self.url + path, json={"state": state},
                                    headers=auth("POST", path)) as resp:
                assert resp.status == 202, (resp.status, await resp.text())
                queue = resp.headers["Location"]
            deadline = time.monotonic() + timeout
            while True:
                async with session.get(self.url + queue, headers=auth("GET", queue),
                                       allow_redirects=False) as resp:
                    if resp.status != 200:
                        assert resp.status == 204, (resp.status, await resp.text())
                        return
                assert time.monotonic() < deadline, f"{path} {state}: still pending"
                await asyncio.sleep(0.01)

    async def storage_hosts(self, cluster_id: str) -> list[str]:
        """The storage hostnames of the cluster's nodes, in Heketi's order."""
        async with self.client() as client:
            cluster = await client.cluster_info(cluster_id)
            hosts: list[str] = []
            for node_id in cluster.nodes:
                hosts.extend((await client.node_info(node_id)).storage_hostnames)
            return hosts


@contextlib.asynccontextmanager
async def open_backend(name: str, admin_key: str) -> AsyncIterator[HeketiBackend]:
    """A fresh Heketi of kind `name`, stopped (and its directory removed) at the end."""
    if name == "sim":
        async with HeketiSimulator(admin_key=admin_key, op_latency=INSTANT) as sim:
            yield HeketiBackend("sim", sim.url, admin_key, sim=sim)
        return
    if name != "real":
        raise ValueError(f"unknown Heketi backend {name!r}")
    # the background cleaner rolls back stale operations (a crash's) 1 s after a (re)start
    heketi = RealHeketi(RealHeketiConfig(admin_key=admin_key, load_with_cli=False,
                                         cleaner_start_s=1, cleaner_refresh_s=1))
    try:
        await asyncio.to_thread(heketi.start)
    except HeketiNotBuilt as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield HeketiBackend("real", heketi.url, admin_key, real=heketi)
    finally:
        await asyncio.to_thread(heketi.stop)
