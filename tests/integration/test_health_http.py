"""/healthz of the controller and node processes, which replaces the livenessprobe sidecar:
the real process, its own CSI socket, and HTTP over TCP as kubelet's livenessProbe sends it."""

from __future__ import annotations

import socket
from pathlib import Path

import aiohttp
import pytest

from devtools.heketi_sim.server import HeketiSimulator
from devtools.localcluster.processes import (
    HEKETI_CSI,
    ManagedProcess,
    free_port,
    wait_for_path,
    wait_ready,
)
from tests.support.conditions import first
from tests.support.controller_harness import start_controller

STATUS_TIMEOUT = 20.0


async def get(url: str) -> tuple[int, str]:
    timeout = aiohttp.ClientTimeout(total=5)
    async with aiohttp.ClientSession(timeout=timeout) as session, session.get(url) as reply:
        return reply.status, await reply.text()


async def wait_answer(proc: ManagedProcess, url: str) -> tuple[int, str]:
    """The first answer `url` gives once the server listens (while `proc` keeps running)."""
    async def answer() -> tuple[int, str] | None:
        try:
            return await get(url)
        except aiohttp.ClientConnectionError:
            assert proc.running, f"{url} never answered:\n{proc.log_text()[-3000:]}"
            return None

    return await first(answer, lambda: f"{url} answering\n{proc.log_text()[-3000:]}",
                       STATUS_TIMEOUT)


def port_closed(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


async def test_controller_healthz_answers_ok_then_500_when_its_socket_is_gone(
        tmp_path: Path, sim: HeketiSimulator) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/healthz"
    ctl = await start_controller(tmp_path, sim.url, "controller",
                                 "--http-endpoint", f"127.0.0.1:{port}")
    try:
        await wait_ready(ctl.proc, ctl.socket)
        assert await wait_answer(ctl.proc, url) == (200, "ok")
        status, metrics = await get(f"http://127.0.0.1:{port}/metrics")
        assert status == 200
        assert "heketi_csi_rpc_total" in metrics
        # The livenessprobe sidecar would fail here too: nobody can reach the driver.
        ctl.socket.unlink()
        status, text = await get(url)
        assert status == 500
        assert str(ctl.socket) in text
    finally:
        ctl.channel.close()
        code = await ctl.proc.stop()
    assert code == 0
    assert port_closed(port)


async def test_controller_healthz_is_500_while_not_ready(tmp_path: Path) -> None:
    # Nothing listens at this Heketi URL: the controller never finishes its warm-up, and its
    # Probe says not ready, which the livenessprobe sidecar answered with 500 as well.
    port = free_port()
    url = f"http://127.0.0.1:{port}/healthz"
    ctl = await start_controller(tmp_path, f"http://127.0.0.1:{free_port()}", "controller",
                                 "--http-endpoint", f"127.0.0.1:{port}")
    try:
        await wait_ready(ctl.proc, ctl.socket, need_ready=False)
        assert await wait_answer(ctl.proc, url) == (500, "driver responded but is not ready")
    finally:
        ctl.channel.close()
        await ctl.proc.stop()


async def test_controller_refuses_an_http_endpoint_it_cannot_serve(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        ctl = await start_controller(tmp_path, "http://127.0.0.1:1", "controller",
                                     "--http-endpoint", f"127.0.0.1:{port}")
        code = await ctl.proc.wait(30)
        ctl.channel.close()
    assert code == 1
    assert f"cannot serve --http-endpoint 127.0.0.1:{port}" in ctl.proc.log_text()
    assert not ctl.socket.exists()


async def test_node_refuses_a_malformed_http_endpoint(tmp_path: Path) -> None:
    proc = await ManagedProcess(
        "node",
        [*HEKETI_CSI, "node", "--endpoint", f"unix://{tmp_path / 'csi.sock'}",
         "--node-id", "n1", "--kubelet-root", str(tmp_path / "kubelet"),
         "--http-endpoint", "9808"],
        tmp_path / "node.log").start()
    assert await proc.wait(30) == 1
    assert "--http-endpoint '9808' must be host:port" in proc.log_text()


@pytest.mark.gluster
async def test_node_healthz_answers_ok_and_stops_with_the_process(tmp_path: Path) -> None:
    # Ready needs mount.glusterfs and /dev/fuse, which the gluster marker promises.
    sock = tmp_path / "plugin" / "csi.sock"
    port = free_port()
    url = f"http://127.0.0.1:{port}/healthz"
    proc = await ManagedProcess(
        "node",
        [*HEKETI_CSI, "node", "--endpoint", f"unix://{sock}", "--node-id", "n1",
         "--kubelet-root", str(tmp_path / "kubelet"),
         "--gluster-log-dir", str(tmp_path / "glusterlog"),
         "--http-endpoint", f"127.0.0.1:{port}", "--log-format", "json"],
        tmp_path / "node.log").start()
    try:
        await wait_for_path(sock, STATUS_TIMEOUT)
        assert await wait_answer(proc, url) == (200, "ok")
    finally:
        code = await proc.stop()
    assert code == 0
    assert port_closed(port)
    assert not sock.exists()
