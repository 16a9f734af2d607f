"""The registrar as kubelet meets it: real processes (node plugin, registrar, kubelet
simulator) on real unix sockets in a temporary directory, /healthz over TCP."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from devtools.kubelet_sim import KubeletSimulator
from devtools.localcluster.processes import HEKETI_CSI, ManagedProcess
from services.common.config import DEFAULT_DRIVER_NAME as DRIVER
from services.registrar.driver import NoAnswer, driver_name
from tests.support.conditions import first, until

NODE_ID = "node-reg-1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Env:
    """One node's worth of paths, and everything started for it (stopped by the fixture)."""

    root: Path
    port: int
    procs: list[ManagedProcess] = field(default_factory=list)

    @property
    def csi(self) -> Path:
        return self.root / "plugins" / DRIVER / "csi.sock"

    @property
    def reg_dir(self) -> Path:
        return self.root / "plugins_registry"

    @property
    def reg_sock(self) -> Path:
        return self.reg_dir / f"{DRIVER}-reg.sock"

    async def start_node(self) -> None:
        """Start `heketi-csi node` and wait until it answers GetPluginInfo."""
        proc = ManagedProcess(
            "node",
            [*HEKETI_CSI, "node", "--endpoint", f"unix://{self.csi}", "--node-id", NODE_ID,
             "--kubelet-root", str(self.root / "kubelet"),
             "--gluster-log-dir", str(self.root / "glusterlog"), "--log-format", "json"],
            self.root / f"node-{len(self.procs)}.log",
        )
        self.procs.append(await proc.start())

        async def answers() -> bool:
            try:
                await driver_name(self.csi, 1.0)
                return True
            except NoAnswer:
                assert proc.running, f"node plugin not up:\n{proc.log_text()[-3000:]}"
                return False

        await until(answers, logged("the node plugin answering GetPluginInfo", proc), 30)

    async def stop_node(self) -> None:
        """Stop the node plugin the way a pod deletion does: SIGTERM."""
        node = [p for p in self.procs if p.name == "node"][-1]
        assert await node.stop() == 0

    def registrar(self, *extra: str) -> ManagedProcess:
        proc = ManagedProcess(
            "registrar",
            [*HEKETI_CSI, "registrar", "--csi-address", f"unix://{self.csi}",
             "--kubelet-registration-path", str(self.csi),
             "--plugin-registration-dir", str(self.reg_dir),
             "--http-endpoint", f"127.0.0.1:{self.port}", "--log-format", "json", *extra],
            self.root / f"registrar-{len(self.procs)}.log",
        )
        self.procs.append(proc)
        return proc

    def kubelet(self, *extra: str) -> ManagedProcess:
        proc = ManagedProcess(
            "kubelet-sim",
            [sys.executable, "-m", "devtools.kubelet_sim",
             "--registration-dir", str(self.reg_dir), *extra],
            self.root / f"kubelet-{len(self.procs)}.log",
        )
        self.procs.append(proc)
        return proc

    async def get(self, path: str) -> tuple[int, str]:
        async with aiohttp.ClientSession() as session, session.get(
            f"http://127.0.0.1:{self.port}{path}", timeout=aiohttp.ClientTimeout(total=5)
        ) as response:
            return response.status, await response.text()


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    # Short paths: a unix socket path must fit in 108 bytes.
    root = Path(tempfile.mkdtemp(prefix="hcsi-reg-", dir="/tmp"))
    state = Env(root, free_port())
    try:
        yield state
    finally:
        for proc in state.procs:
            await proc.kill()
        shutil.rmtree(root, ignore_errors=True)


def sim_events(proc: ManagedProcess) -> list[dict[str, Any]]:
    """The JSON event lines the kubelet simulator process printed."""
    events = []
    for line in proc.log_text().splitlines():
        if line.startswith("{"):
            events.append(json.loads(line))
    return events


def logged(what: str, *logs: ManagedProcess) -> Callable[[], str]:
    """`what`, followed (when a wait fails) by the tails of the processes' logs."""
    def text() -> str:
        return "\n".join([what, *(f"--- {p.name}:\n{p.log_text()[-3000:]}" for p in logs)])
    return text


def count(proc: ManagedProcess, kind: str) -> int:
    return sum(1 for e in sim_events(proc) if e.get("kind") == kind)


async def wait_health(env: Env, status: int, timeout: float = 10.0) -> str:
    """The text of the first /healthz answer with `status`."""
    answers: list[tuple[int, str]] = []

    async def answer() -> tuple[int, str] | None:
        answers.append(await env.get("/healthz"))
        return answers[-1] if answers[-1][0] == status else None

    _, text = await first(answer, lambda: f"/healthz is {answers[-1][0]} {answers[-1][1]!r}, "
                                          f"wanted {status}", timeout)
    return text


async def test_registers_with_kubelet_is_healthy_and_sigterm_leaves_no_socket(env: Env) -> None:
    await env.start_node()
    kubelet = await env.kubelet().start()
    registrar = await env.registrar().start()
    await until(lambda: count(kubelet, "registered") == 1,
                logged("registration", registrar, kubelet), 15)
    [event] = [e for e in sim_events(kubelet) if e["kind"] == "registered"]
    assert event == {"kind": "registered", "driver": DRIVER, "node_id": NODE_ID,
                     "socket": str(env.reg_sock)}
    assert env.reg_sock.is_socket()

    assert await env.get("/healthz") == (200, "ok")
    status, metrics = await env.get("/metrics")
    assert status == 200
    assert "heketi_csi_registrar_registered 1.0" in metrics
    assert 'heketi_csi_rpc_total{code="OK",method="NotifyRegistrationStatus"} 1.0' in metrics

    assert await registrar.stop() == 0
    assert not env.reg_sock.exists()
    await until(lambda: count(kubelet, "deregistered") == 1,
                logged("deregistration", kubelet), 5)
    assert count(kubelet, "notify_failed") == 0
    assert await kubelet.stop() == 0


async def test_registrar_started_first_waits_for_the_node_plugin(env: Env) -> None:
    registrar = await env.registrar().start()
    async with KubeletSimulator(env.reg_dir) as sim:
        await until(lambda: "waiting for the CSI driver" in registrar.log_text(),
                logged("a log line saying what the registrar waits for", registrar), 10)
        # While it waits it serves /healthz, answering that it has no registration socket.
        text = await wait_health(env, 404)
        assert "not created yet" in text
        assert registrar.running
        assert not env.reg_sock.exists()
        await env.start_node()
        assert await sim.wait_registered(DRIVER, 10) == NODE_ID
    assert await registrar.stop() == 0


async def test_rejected_registration_is_answered_then_exits_1(env: Env) -> None:
    await env.start_node()
    async with KubeletSimulator(env.reg_dir, reject="CSINode update failed: test") as sim:
        registrar = await env.registrar().start()
        assert await registrar.wait(15) == 1
        await sim.wait_event("rejected", DRIVER, 1, 5)
        assert sim.count("notify_failed", DRIVER) == 0, "kubelet must get the answer first"
    assert not env.reg_sock.exists()
    log = registrar.log_text()
    assert "CSINode update failed: test" in log
    assert "rejected" in log


async def test_deleted_socket_is_recreated_and_registered_again(env: Env) -> None:
    await env.start_node()
    kubelet = await env.kubelet().start()
    registrar = await env.registrar("--socket-check-interval", "1.5").start()
    await until(lambda: count(kubelet, "registered") == 1,
                logged("registration", registrar, kubelet), 15)
    before = env.reg_sock.stat()
    env.reg_sock.unlink()
    status, text = await env.get("/healthz")
    assert status == 404 and "missing" in text
    await until(lambda: count(kubelet, "registered") == 2,
                logged("re-registration", registrar, kubelet), 10)
    assert count(kubelet, "deregistered") == 1
    after = env.reg_sock.stat()
    assert (after.st_ino, after.st_mtime_ns) != (before.st_ino, before.st_mtime_ns)
    assert await env.get("/healthz") == (200, "ok")
    assert "created it again" in registrar.log_text()
    assert await registrar.stop() == 0
    assert not env.reg_sock.exists()


async def test_healthz_is_500_while_the_node_plugin_does_not_answer(env: Env) -> None:
    await env.start_node()
    registrar = await env.registrar().start()
    async with KubeletSimulator(env.reg_dir) as sim:
        await sim.wait_registered(DRIVER, 15)
        assert await env.get("/healthz") == (200, "ok")
        await env.stop_node()
        text = await wait_health(env, 500)
        assert str(env.csi) in text
        await env.start_node()
        assert await wait_health(env, 200) == "ok"
    assert await registrar.stop() == 0


async def test_gives_up_when_the_driver_never_answers(env: Env) -> None:
    registrar = await env.registrar("--wait-timeout", "1").start()
    started = time.monotonic()
    assert await registrar.wait(15) == 1
    assert time.monotonic() - started < 10
    log = registrar.log_text()
    assert f"{env.csi} did not answer GetPluginInfo within 1 s" in log


async def test_a_driver_with_another_name_is_refused(env: Env) -> None:
    await env.start_node()
    registrar = await env.registrar("--driver-name", "other.example.com").start()
    assert await registrar.wait(15) == 1
    log = registrar.log_text()
    assert "other.example.com" in log and DRIVER in log
    assert not env.reg_sock.exists()


async def test_sigterm_while_waiting_exits_0(env: Env) -> None:
    registrar = await env.registrar().start()
    await until(lambda: "waiting for the CSI driver" in registrar.log_text(),
                logged("waiting", registrar), 10)
    started = time.monotonic()
    assert await registrar.stop(sig=signal.SIGTERM) == 0
    assert time.monotonic() - started < 2


async def test_a_busy_http_port_fails_start_up_clearly(env: Env) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", env.port))
        busy.listen(1)
        registrar = await env.registrar().start()
        assert await registrar.wait(15) == 1
    assert f"cannot serve --http-endpoint 127.0.0.1:{env.port}" in registrar.log_text()
