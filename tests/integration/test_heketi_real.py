"""`python -m devtools.heketi_real up|status|down`: a real Heketi by hand, gone without a trace."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import sys
from pathlib import Path

from devtools.heketi_real import RealHeketiError
from devtools.heketi_real.server import binaries
from services.controller.heketi import HeketiClient

CLI = [sys.executable, "-m", "devtools.heketi_real"]


async def _run(state: Path, *args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *CLI, "--state-dir", str(state), *args, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_up_loads_the_topology_with_heketi_cli_and_down_leaves_nothing(tmp_path: Path
                                                                              ) -> None:
    try:
        binaries()
    except RealHeketiError as exc:
        raise AssertionError(str(exc)) from None
    state = tmp_path / "state"
    try:
        code, out = await _run(state, "up", "--nodes", "2", "--devices", "2",
                               "--device-size-gib", "100")
        assert code == 0, out
        admin_key = (state / "admin.key").read_text()
        user_key = (state / "user.key").read_text()
        assert admin_key not in out and user_key not in out, "up printed a key"
        for key_file in ("admin.key", "user.key", "heketi.json"):
            assert stat.S_IMODE((state / key_file).stat().st_mode) == 0o600, key_file
        url = (state / "url").read_text()
        assert url.startswith("http://127.0.0.1:") and url in out
        pid = int((state / "pid").read_text())
        assert json.loads((state / "topology.json").read_text())["clusters"][0]["nodes"]

        async with HeketiClient(url, "admin", admin_key) as client:
            clusters = await client.list_cluster_ids()
            assert len(clusters) == 1
            nodes = (await client.cluster_info(clusters[0])).nodes
            assert len(nodes) == 2
            for node_id in nodes:
                devices = (await client.node_info(node_id)).devices
                assert [d.storage.total_kib for d in devices] == [100 << 20] * 2
        code, out = await _run(state, "up")
        assert code == 1 and "already runs" in out, out
        code, out = await _run(state, "status")
        assert code == 0 and url in out, out
    finally:
        code, out = await _run(state, "down")
    assert code == 0, out
    assert not state.exists(), "down left the state directory"
    assert not _alive(pid), "down left the heketi process"
    code, out = await _run(state, "status")
    assert code == 1 and "down" in out
