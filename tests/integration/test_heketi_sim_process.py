"""The simulator as its own process: start-up line, /_sim/ fault routes, clean SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from services.controller.heketi import (
    HeketiClient,
    HeketiResultLost,
    HeketiUnavailable,
    VolumeCreateRequest,
)
from services.controller.heketi.auth import authorization_header, make_token
from tests.support.conditions import until

REPO = Path(__file__).resolve().parents[2]
# Keys that begin with "-" (secrets.token_urlsafe makes such keys one time in 64) must
# reach the simulator as keys, not as options.
ADMIN, USER = "-proc-admin", "-proc-user"


@pytest.fixture
async def sim_process() -> AsyncIterator[tuple[asyncio.subprocess.Process, str]]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "devtools.heketi_sim", "--port", "0",
        f"--admin-key={ADMIN}", f"--user-key={USER}", "--op-latency", "0.1",
        cwd=REPO, stdout=asyncio.subprocess.PIPE)
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode().strip()
        assert line.startswith("heketi-sim listening on http://127.0.0.1:"), line
        yield proc, line.rsplit(" ", 1)[-1]
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def _sim_call(url: str, method: str, path: str, issuer: str = "admin",
                    key: str = ADMIN, body: object = None) -> tuple[int, object]:
    headers = {"Authorization": authorization_header(make_token(method, path, issuer, key))}
    async with aiohttp.ClientSession() as session, session.request(
            method, url + path, json=body, headers=headers) as resp:
        if resp.content_type == "application/json":
            return resp.status, await resp.json()
        return resp.status, (await resp.text()).strip()


async def test_fault_routes_and_clean_exit(
        sim_process: tuple[asyncio.subprocess.Process, str]) -> None:
    proc, url = sim_process
    async with HeketiClient(url, "admin", ADMIN) as client:
        await client.create_volume(VolumeCreateRequest(size_gib=1, name="proc_a"))

        status, _ = await _sim_call(url, "POST", "/_sim/faults", body={"drop_results": 1})
        assert status == 200
        with pytest.raises(HeketiResultLost):
            await client.create_volume(VolumeCreateRequest(size_gib=1, name="proc_b"))

        status, stats = await _sim_call(url, "GET", "/_sim/stats")
        assert status == 200 and isinstance(stats, dict)
        assert stats["results_dropped"] == 1 and stats["volumes"] == 2
        assert stats["request_counts"]["POST /volumes"] == 2

        status, text = await _sim_call(url, "POST", "/_sim/faults", issuer="user", key=USER,
                                       body={"maintenance": True})
        assert (status, text) == (401, "Administrator access required")

        async def volumes_listed() -> int | None:
            """How many volumes the simulator lists; None while it refuses connections."""
            try:
                return len(await client.list_volume_ids())
            except HeketiUnavailable:
                return None

        status, _ = await _sim_call(url, "POST", "/_sim/faults", body={"offline_for": 1.0})
        assert status == 200

        async def offline() -> bool:
            return await volumes_listed() is None

        async def back_with_both() -> bool:
            return await volumes_listed() == 2

        await until(offline, "the simulator goes offline (offline_for: 1 s)", timeout=10)
        await until(back_with_both, "the simulator is back online, both volumes listed",
                    timeout=10)

    proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(proc.wait(), 15) == 0
