"""The simulator's state file (`--db`, devtools/heketi_sim/statefile.py): what a restart keeps,
what a crash leaves pending, the background cleaner's timing, and the refusals.

The SIGKILL case against the real Heketi is tests/integration/test_heketi_differential.py
(`test_a_crash_leaves_*`); here the simulator is closed in-process with an operation held
(its task cancelled, as a kill ends it) and a new one is started on the same file.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from devtools.heketi_sim import HeketiSimulator
from devtools.heketi_sim.latency import INSTANT
from devtools.heketi_sim.statefile import MAX_BYTES, StateFileError, read
from services.controller.heketi.auth import authorization_header, make_token
from tests.support.conditions import until

KEY = "statefile-admin"
REPO = Path(__file__).resolve().parents[2]
REPLICA_3 = {"type": "replicate", "replicate": {"replica": 3}}


async def _call(sim: HeketiSimulator, method: str, path: str,
                body: object = None) -> tuple[int, Any]:
    """One request (no redirects followed): status and JSON or text."""
    headers = {"Authorization": authorization_header(make_token(method, path, "admin", KEY))}
    async with aiohttp.ClientSession() as session, session.request(
            method, sim.url + path, json=body, headers=headers,
            allow_redirects=False) as resp:
        if resp.content_type == "application/json":
            return resp.status, await resp.json()
        return resp.status, (await resp.text()).strip()


async def _finish(sim: HeketiSimulator, method: str, path: str, body: object = None) -> str:
    """An operation to its end through the queue: the result's Location ("" for 204)."""
    async with aiohttp.ClientSession() as session:
        async def one(m: str, p: str, b: object = None) -> aiohttp.ClientResponse:
            headers = {"Authorization": authorization_header(make_token(m, p, "admin", KEY))}
            resp = await session.request(m, sim.url + p, json=b, headers=headers,
                                         allow_redirects=False)
            await resp.read()
            return resp

        resp = await one(method, path, body)
        assert resp.status == 202, resp.status
        queue = resp.headers["Location"]
        result: list[aiohttp.ClientResponse] = []

        async def ended() -> bool:
            result[:] = [await one("GET", queue)]
            return result[0].status != 200
        await until(ended, f"{method} {path} ended")
        assert result[0].status in (303, 204), result[0].status
        return result[0].headers.get("Location", "")


async def _free(sim: HeketiSimulator) -> int:
    return sum(d.free_kib for d in sim.topology.devices.values())


async def test_a_restart_keeps_volumes_and_ids(tmp_path: Path) -> None:
    db = tmp_path / "sim.json"
    async with HeketiSimulator(admin_key=KEY, op_latency=INSTANT, db=db) as sim:
        location = await _finish(sim, "POST", "/volumes", {"size": 1, "name": "kept",
                                                           "durability": REPLICA_3})
        _, before = await _call(sim, "GET", location)
        free = await _free(sim)
        _, clusters = await _call(sim, "GET", "/clusters")
    async with HeketiSimulator(admin_key=KEY, op_latency=INSTANT, db=db) as again:
        assert await _call(again, "GET", location) == (200, before)
        assert await _call(again, "GET", "/clusters") == (200, clusters)
        assert await _free(again) == free
        status, text = await _call(again, "POST", "/volumes", {"size": 1, "name": "kept"})
        assert (status, text) == (500, "Failed to allocate new volume: Volume name 'kept' "
                                       "already in use")
        assert await _call(again, "GET", "/operations") == (200, {
            "total": 0, "in_flight": 0, "stale": 0, "failed": 0, "new": 0})


async def test_an_operation_cut_off_is_stale_until_the_cleaner_runs(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "sim.json"
    async with HeketiSimulator(admin_key=KEY, op_latency=INSTANT, db=db) as sim:
        free = await _free(sim)
        sim.hold("create")
        status, _ = await _call(sim, "POST", "/volumes", {"size": 1, "name": "cut",
                                                          "durability": REPLICA_3})
        assert status == 202
        assert (await _call(sim, "GET", "/operations"))[1]["new"] == 1
    # what the file holds is what a SIGKILL would have left: the Build step, not its end
    loaded = read(db)
    assert loaded is not None and [op.kind for op in loaded[1]] == ["create"]
    async with HeketiSimulator(admin_key=KEY, op_latency=INSTANT, db=db,
                               cleaner_start_s=0.5, cleaner_refresh_s=3600) as again:
        assert "Heketi has existing pending operations in the db" in capsys.readouterr().err
        assert (await _call(again, "GET", "/operations"))[1] == {
            "total": 1, "in_flight": 0, "stale": 1, "failed": 0, "new": 0}
        assert await _call(again, "GET", "/volumes") == (200, {"volumes": []})
        assert await _free(again) < free  # the space is held
        status, text = await _call(again, "POST", "/volumes", {"size": 1, "name": "cut"})
        assert (status, text) == (500, "Failed to allocate new volume: Volume name 'cut' "
                                       "already in use")

        async def cleaned() -> bool:
            return (await _call(again, "GET", "/operations"))[1]["total"] == 0
        await until(cleaned, "the background cleaner rolled the create back", timeout=10)
        assert await _free(again) == free
        await _finish(again, "POST", "/volumes", {"size": 1, "name": "cut"})
    loaded = read(db)
    assert loaded is not None and loaded[1] == []


@pytest.mark.parametrize("content, why", [
    (b"not json", "unreadable state file"),
    (json.dumps({"version": 99}).encode(), "not a version 1 simulator state file"),
    (json.dumps({"version": 1, "volumes": [{"id": "x"}]}).encode(), "unreadable state file"),
    (b" " * (MAX_BYTES + 1), f"larger than {MAX_BYTES} bytes"),
])
async def test_an_unreadable_state_file_is_refused(tmp_path: Path, content: bytes,
                                                   why: str) -> None:
    db = tmp_path / "sim.json"
    db.write_bytes(content)
    with pytest.raises(StateFileError, match=why):
        read(db)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "devtools.heketi_sim", "--port", "0", "--db", str(db),
        cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2 and out == b""
    assert why in err.decode()
    assert db.read_bytes() == content  # left as it was


async def test_a_state_file_is_for_the_in_memory_simulator_only(tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "devtools.heketi_sim", "--port", "0", "--db",
        str(tmp_path / "sim.json"), "--gluster-pool", "gpnone", cwd=REPO,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2
    assert "--db is for the in-memory simulator only" in err.decode()
    with pytest.raises(ValueError, match="in-memory simulator only"):
        HeketiSimulator(db=tmp_path / "sim.json", glusterd=True, brick_root=tmp_path)
    assert await asyncio.to_thread(os.listdir, tmp_path) == []  # no file made


async def test_a_stale_clone_is_removed_and_its_source_readable_again(tmp_path: Path) -> None:
    """Not comparable with the real one (its mock executor panics on clone): Heketi's
    cleaner removes a stale clone's volume and bricks; the source is described again."""
    db = tmp_path / "sim.json"
    async with HeketiSimulator(admin_key=KEY, op_latency=INSTANT, db=db) as sim:
        location = await _finish(sim, "POST", "/volumes", {
            "size": 1, "name": "src", "durability": REPLICA_3,
            "snapshot": {"enable": True, "factor": 1.5}})
        free = await _free(sim)
        sim.hold("clone")
        status, _ = await _call(sim, "POST", f"{location}/clone", {"name": "copy"})
        assert status == 202
        assert (await _call(sim, "GET", location))[0] == 404  # the source, while cloned
    async with HeketiSimulator(admin_key=KEY, op_latency=INSTANT, db=db,
                               cleaner_start_s=3600) as again:
        [op] = (await _call(again, "GET", "/operations/pending"))[1]["pendingoperations"]
        assert (op["type_name"], op["status"]) == ("clone-volume", "stale")
        assert (await _call(again, "GET", location))[0] == 404
        assert len(again.topology.volumes) == 2
        await _finish(again, "POST", "/operations/pending/cleanup", {"operations": [op["id"]]})
        assert (await _call(again, "GET", location))[0] == 200
        assert [v.name for v in again.topology.volumes.values()] == ["src"]
        assert await _free(again) == free
