"""The local cluster harness: ready when it says so, and nothing left behind, whatever happens.

Also `make up` (the launcher as a process, with the csi_client CLI it advertises) and
`make demo` (the demo must run every step and exit 0).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import re
import signal
import stat
import sys
from pathlib import Path
from typing import cast

import aiohttp
import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from devtools.csi_client import GIB, CsiClient
from devtools.demo import Demo, DemoFailed, Reporter
from devtools.heketi_sim.latency import INSTANT
from devtools.localcluster import REPO_ROOT, ClusterError, LocalCluster, mounts_under
from tests.support.demo_output import demo_problems

pytestmark = pytest.mark.gluster

DEMO_TIMEOUT = 900.0


async def http_status(url: str) -> int:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session, \
            session.get(url) as reply:
        return reply.status


async def mount_a_volume(cluster: LocalCluster, csi_ctl: CsiClient, csi_node: CsiClient,
                         name: str) -> tuple[str, Path, Path]:
    """Create, stage and publish a volume, write a file: (gluster name, staging, target)."""
    volume = await csi_ctl.create_volume(name, GIB)
    context = dict(volume.volume_context)
    staging = cluster.staging_path(volume.volume_id)
    target = cluster.pod_target_path("pod-1", name)
    await csi_node.stage(volume.volume_id, staging, volume_context=context)
    await csi_node.publish(volume.volume_id, staging, target, volume_context=context)
    (target / "data").write_text("x")
    assert cluster.pool is not None
    info = await cluster.pool.volume_info(context["volume"])
    assert (info.type, len({b.host for b in info.bricks})) == ("Replicate", 3), \
        "a replica 3 volume across the pool's three servers"
    assert len(mounts_under(cluster.base_dir)) == 2  # the staging and pod mounts
    return context["volume"], staging, target


async def pool_has(cluster: LocalCluster, name: str) -> bool:
    return name in await cluster.pool_volumes()


def assert_all_exited(cluster: LocalCluster) -> None:
    running = [name for name, proc in cluster.processes.items() if proc.running]
    assert running == [], f"still running after teardown: {running}"


# --- the shared session cluster (conftest.py) ----------------------------------------------------
async def test_shared_cluster_is_ready_on_every_endpoint(
    cluster: LocalCluster, controller_client: CsiClient, node_client: CsiClient,
) -> None:
    assert await controller_client.probe()
    assert await node_client.probe()
    assert (await node_client.node_info()).node_id == cluster.node_id
    assert (await controller_client.plugin_info()).name == cluster.driver_name
    assert await http_status(cluster.heketi_url + "/hello") == 200
    assert await http_status(cluster.registrar_health_url) == 200
    assert cluster.registration_socket.exists()
    assert cluster.kubelet_sim is not None
    assert '"kind": "registered"' in cluster.kubelet_sim.log_text()
    mode = stat.S_IMODE(cluster.key_file.stat().st_mode)
    assert mode == 0o600, oct(mode)
    assert cluster.key_file.read_text().strip() == cluster.admin_key
    for path in (cluster.controller_socket, cluster.node_socket, cluster.kubelet_root,
                 cluster.registration_dir):
        assert str(path) in cluster.summary()
    assert str(cluster.node_socket).startswith(str(cluster.kubelet_root) + "/")


# --- teardown ----------------------------------------------------------------------------------
async def test_teardown_undoes_what_a_careless_test_left() -> None:
    async with LocalCluster(heketi_op_latency=INSTANT) as cluster:
        async with CsiClient(cluster.controller_socket) as ctl, \
                CsiClient(cluster.node_socket) as node:
            name, staging, target = await mount_a_volume(cluster, ctl, node, "pvc-careless")
        assert await pool_has(cluster, name)
        base = cluster.base_dir
    report = cluster.teardown_report
    assert report is not None and report.clean, report and report.text()
    assert sorted(report.unmounted) == sorted([str(target), str(staging)])
    assert report.deleted_volumes == [], "the simulator deletes its volumes on SIGTERM"
    assert mounts_under(base) == []
    assert cluster.pool is not None and await cluster.pool.leftovers() == []
    assert not base.exists()
    assert_all_exited(cluster)


async def test_teardown_after_crashes_still_cleans_mounts_volumes_and_dir() -> None:
    cluster = LocalCluster(heketi_op_latency=INSTANT)
    await cluster.start()
    try:
        async with CsiClient(cluster.controller_socket) as ctl, \
                CsiClient(cluster.node_socket) as node:
            name, _, _ = await mount_a_volume(cluster, ctl, node, "pvc-crash")
        sim = cluster.heketi_sim
        assert sim is not None
        await sim.kill()  # it cannot delete its gluster volume now
        await cluster.node.kill()  # its mounts stay
        base = cluster.base_dir
    finally:
        report = await cluster.stop()
    assert report.clean, report.text()
    assert len(report.unmounted) == 2  # staging and pod
    assert report.deleted_volumes == [name]  # it went with the pool's own `down`
    assert {c.split()[0] for c in report.crashed} == {"heketi-sim", "node"}
    assert mounts_under(base) == []
    assert cluster.pool is not None and await cluster.pool.leftovers() == []
    assert not base.exists()
    assert_all_exited(cluster)


async def test_failed_start_reports_the_log_and_leaves_nothing() -> None:
    cluster = LocalCluster(controller_args=["--heketi-max-inflight", "0"],
                           heketi_op_latency=INSTANT)
    with pytest.raises(ClusterError) as failure:
        await cluster.start()
    assert "--heketi-max-inflight must be at least 1" in str(failure.value)
    assert cluster.heketi_sim is not None and not cluster.heketi_sim.running
    assert_all_exited(cluster)
    report = cluster.teardown_report
    assert report is not None and report.clean
    assert not cluster.base_dir.exists()


async def test_cancelled_start_leaves_nothing() -> None:
    cluster = LocalCluster(heketi_op_latency=INSTANT)
    task = asyncio.create_task(cluster.start())
    for _ in range(600):
        if "controller" in cluster.processes:
            break
        await asyncio.sleep(0.05)
    assert "controller" in cluster.processes
    base = cluster.base_dir
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert_all_exited(cluster)
    assert not base.exists()


async def test_refuses_a_base_dir_the_mount_helper_or_sockets_cannot_use(tmp_path: Path) -> None:
    bad = tmp_path / "has space"
    with pytest.raises(ClusterError, match="characters"):
        await LocalCluster(bad).start()
    assert not bad.exists(), "a refused base dir that did not exist is not left behind"
    long = Path("/tmp") / ("hcsi-" + "x" * 90)
    with pytest.raises(ClusterError, match="too long"):
        await LocalCluster(long).start()
    assert not long.exists()


# --- `make up` and the csi_client CLI ----------------------------------------------------------
async def _read_until(stream: asyncio.StreamReader, marker: str, timeout: float) -> str:
    seen: list[str] = []

    async def read() -> None:
        while True:
            line = (await stream.readline()).decode()
            if not line:
                raise AssertionError("output ended before " + repr(marker) + ":\n" + "".join(seen))
            seen.append(line)
            if marker in line:
                return

    await asyncio.wait_for(read(), timeout)
    return "".join(seen)


async def _client(*args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "devtools.csi_client", *args, cwd=REPO_ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def test_make_up_prints_how_to_talk_to_it_and_stops_clean_on_ctrl_c() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "devtools.localcluster", "--instant-heketi", cwd=REPO_ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    assert proc.stdout is not None
    try:
        printed = await _read_until(proc.stdout, "Running.", 120)
        base = Path(re.search(r"local cluster in (\S+)", printed).group(1))  # type: ignore[union-attr]
        endpoint = re.search(r"--endpoint (unix://\S+/controller/csi\.sock) info",
                             printed).group(1)  # type: ignore[union-attr]
        assert "heketi-csi local cluster in" in printed
        assert "/kubelet/plugins/" in printed

        code, out = await _client("--endpoint", endpoint, "create", "pvc-up", "1")
        assert code == 0, out
        volume_id = out.split()[0]
        code, out = await _client("--endpoint", endpoint, "list")
        assert code == 0 and volume_id in out and "1 volume(s)" in out, out
        code, out = await _client("--endpoint", endpoint, "delete", volume_id)
        assert code == 0, out
        code, out = await _client("--endpoint", endpoint, "info")
        assert code == 0 and "CREATE_DELETE_VOLUME" in out and "ready     True" in out, out

        proc.send_signal(signal.SIGINT)
        rest, _ = await asyncio.wait_for(proc.communicate(), 180)
        assert proc.returncode == 0, rest.decode()
        assert "nothing left behind" in rest.decode()
        assert not await asyncio.to_thread(base.exists)
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), 180)
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


# --- `make demo` -------------------------------------------------------------------------------
async def test_demo_fails_on_an_unimplemented_step_and_on_a_step_whose_need_failed() -> None:
    out = io.StringIO()
    demo = Demo(cast(LocalCluster, None), cast(CsiClient, None), cast(CsiClient, None),
                Reporter(out))

    async def unimplemented() -> str:
        raise GRPCError(Status.UNIMPLEMENTED, "Method not implemented")

    async def broken() -> None:
        raise GRPCError(Status.INTERNAL, "boom")

    async def fine() -> str:
        return "done"

    with pytest.raises(DemoFailed, match="CreateSnapshot: UNIMPLEMENTED: Method not impl"):
        await demo.step("snapshot", "CreateSnapshot", unimplemented)
    with pytest.raises(DemoFailed, match="needs snapshot, which did not succeed"):
        await demo.step("restore", "restore", fine, needs=["snapshot"])
    assert await demo.step("other", "other", fine, detail=str) == "done"
    with pytest.raises(DemoFailed, match="INTERNAL: boom"):
        await demo.step("bad", "bad step", broken)
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("[FAIL]") and "UNIMPLEMENTED: Method not implemented" in lines[0]
    assert "does not implement" in lines[0]
    assert lines[1].startswith("[FAIL]") and "needs snapshot" in lines[1]
    assert lines[2].startswith("[ ok ]") and lines[2].endswith("done")
    assert lines[3].startswith("[FAIL]") and "INTERNAL: boom" in lines[3]
    assert demo.not_built == ["snapshot"]
    assert demo.done == {"other"}


async def test_demo_plays_every_step_and_exits_0_leaving_nothing() -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "devtools.demo", "--instant-heketi", cwd=REPO_ROOT, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), DEMO_TIMEOUT)
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            await proc.wait()
    text = out.decode()
    assert proc.returncode == 0, text
    assert not demo_problems(text), "\n".join(demo_problems(text)) + "\n" + text
    assert "Check before teardown: no mounts" in text, text
    assert "Check after teardown: nothing left behind" in text, text
    assert "pod-c reads greeting.txt (restored volume)" in text
