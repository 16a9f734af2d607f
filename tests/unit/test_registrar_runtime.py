"""The registrar's parts in one process, over real unix sockets: waiting for the driver,
the registration service, the self-healing registration socket and the health checks."""

from __future__ import annotations

import asyncio
import ctypes
import os
import shutil
import socket
import struct
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
import structlog
from grpclib.server import Server
from prometheus_client import REGISTRY

from services.common.identity import IdentityService
from services.common.proto import csi_grpc
from services.common.proto.pluginregistration import api_grpc, api_pb2
from services.common.rpc import RpcContext, servable
from services.common.server import StartupError
from services.registrar import driver
from services.registrar.driver import NoAnswer, driver_name, wait_for_driver
from services.registrar.health import HealthState, check, registration_name
from services.registrar.listener import RegistrationSocket, _bind_listening
from services.registrar.service import RegistrationService
from tests.support.conditions import until

DRIVER = "glusterfs.heketi.csi.io"


@pytest.fixture
def sockdir() -> Iterator[Path]:
    """A short directory: unix socket paths must stay under 108 bytes."""
    path = Path(tempfile.mkdtemp(prefix="hcsi-reg-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


class Identity:
    """CSI Identity only; enough for the registrar's GetPluginInfo calls."""

    def __init__(self, path: Path, name: str = DRIVER) -> None:
        self.path = path
        self.name = name
        self.server: Server | None = None

    async def start(self) -> Identity:
        async def ready() -> bool:
            return True

        self.server = Server([servable(IdentityService(self.name, readiness=ready),
                                       csi_grpc.IdentityBase)])
        await self.server.start(path=str(self.path))
        return self

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
            self.server = None


@pytest.fixture
async def identity(sockdir: Path) -> AsyncIterator[Identity]:
    plugin = await Identity(sockdir / "csi.sock").start()
    yield plugin
    await plugin.stop()


def ctx() -> RpcContext:
    return RpcContext(method="test", request_id="r1", log=structlog.get_logger("test"))


def make_service(rejections: list[str]) -> RegistrationService:
    return RegistrationService(DRIVER, "/host/plugins/csi.sock", rejections.append)


# --- waiting for the driver ----------------------------------------------------------------

def looks_at_the_socket(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Record every time the waiter looks whether the driver's socket exists."""
    looks: list[Path] = []
    exists = driver._exists

    def looking(path: Path) -> bool:
        looks.append(path)
        return exists(path)

    monkeypatch.setattr(driver, "_exists", looking)
    return looks


async def test_driver_name_comes_from_get_plugin_info(identity: Identity) -> None:
    assert await driver_name(identity.path, 1.0) == DRIVER


async def test_waits_for_a_driver_that_starts_later(
    sockdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plugin = Identity(sockdir / "late.sock")
    stop = asyncio.Event()
    looks = looks_at_the_socket(monkeypatch)
    waiting = asyncio.create_task(wait_for_driver(plugin.path, 10.0, stop))
    await until(lambda: len(looks) >= 3, "no socket found, and looked for again, and again",
                5, 0.01)
    assert not waiting.done()
    started = time.monotonic()
    await plugin.start()
    try:
        assert await asyncio.wait_for(waiting, 5) == DRIVER
        assert time.monotonic() - started < 0.5, "a new socket is noticed within a poll"
    finally:
        await plugin.stop()


async def test_gives_up_after_the_wait_timeout_naming_the_socket(sockdir: Path) -> None:
    path = sockdir / "never.sock"
    started = time.monotonic()
    with pytest.raises(StartupError) as err:
        await wait_for_driver(path, 0.5, asyncio.Event())
    assert 0.5 <= time.monotonic() - started < 2.0
    assert str(path) in str(err.value) and "0.5 s" in str(err.value)
    assert "socket does not exist" in str(err.value)


async def test_a_dead_socket_file_is_retried_and_reported(sockdir: Path) -> None:
    path = sockdir / "dead.sock"
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(path))
    listener.close()  # the file stays; nobody listens
    with pytest.raises(StartupError) as err:
        await wait_for_driver(path, 0.6, asyncio.Event())
    assert "connection refused" in str(err.value)


async def test_stop_ends_the_wait_without_error(
    sockdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stop = asyncio.Event()
    looks = looks_at_the_socket(monkeypatch)
    waiting = asyncio.create_task(wait_for_driver(sockdir / "x.sock", 30.0, stop))
    await until(lambda: len(looks) >= 1, "waiting for the socket", 5, 0.01)
    assert not waiting.done()
    stop.set()
    assert await asyncio.wait_for(waiting, 1.0) is None


async def test_a_server_without_identity_is_not_a_driver(sockdir: Path) -> None:
    server = Server([servable(object(), csi_grpc.IdentityBase)])
    await server.start(path=str(sockdir / "empty.sock"))
    try:
        with pytest.raises(NoAnswer) as err:
            await driver_name(sockdir / "empty.sock", 1.0)
        assert "UNIMPLEMENTED" in str(err.value)
    finally:
        server.close()
        await server.wait_closed()


# --- the registration service --------------------------------------------------------------

async def test_get_info_announces_the_host_side_endpoint() -> None:
    info = await make_service([]).GetInfo(api_pb2.InfoRequest(), ctx())
    assert (info.type, info.name, info.endpoint, list(info.supported_versions)) == (
        "CSIPlugin", DRIVER, "/host/plugins/csi.sock", ["1.0.0"])


async def test_a_rejection_is_answered_and_reported() -> None:
    rejections: list[str] = []
    service = make_service(rejections)
    await service.NotifyRegistrationStatus(api_pb2.RegistrationStatus(plugin_registered=True),
                                           ctx())
    assert rejections == []
    assert REGISTRY.get_sample_value("heketi_csi_registrar_registered") == 1
    reply = await service.NotifyRegistrationStatus(
        api_pb2.RegistrationStatus(plugin_registered=False, error="version mismatch"), ctx())
    assert isinstance(reply, api_pb2.RegistrationStatusResponse)
    assert rejections == ["version mismatch"]
    assert REGISTRY.get_sample_value("heketi_csi_registrar_registered") == 0


# --- the registration socket ---------------------------------------------------------------

def registration(sockdir: Path, rejections: list[str] | None = None) -> RegistrationSocket:
    service = make_service([] if rejections is None else rejections)
    return RegistrationSocket(sockdir / f"{DRIVER}-reg.sock",
                              [servable(service, api_grpc.RegistrationBase)])


def names(directory: Path) -> list[str]:
    return sorted(os.listdir(directory))


def identity_of(path: Path) -> tuple[int, int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino, st.st_mtime_ns


async def test_serves_get_info_and_removes_its_socket_on_close(sockdir: Path) -> None:
    reg = registration(sockdir)
    await reg.open()
    try:
        assert reg.path.is_socket()
        assert oct(reg.path.stat().st_mode & 0o777) == oct(0o660)
        assert await registration_name(reg.path, 1.0) == DRIVER
    finally:
        await reg.close(1.0)
    assert not reg.path.exists()


async def test_a_deleted_socket_is_created_again_with_a_new_listener(sockdir: Path) -> None:
    reg = registration(sockdir)
    await reg.open()
    watcher = asyncio.create_task(reg.watch(0.05))
    try:
        before = identity_of(reg.path)
        reg.path.unlink()
        for _ in range(100):
            if reg.path.exists():
                break
            await asyncio.sleep(0.02)
        assert reg.path.is_socket()
        assert identity_of(reg.path) != before
        assert await registration_name(reg.path, 1.0) == DRIVER
    finally:
        watcher.cancel()
        await reg.close(1.0)
    assert not reg.path.exists()


async def test_a_wiped_registration_directory_is_recreated(sockdir: Path) -> None:
    reg = RegistrationSocket(sockdir / "registry" / f"{DRIVER}-reg.sock",
                             [servable(make_service([]), api_grpc.RegistrationBase)])
    await reg.open()
    watcher = asyncio.create_task(reg.watch(0.05))
    try:
        shutil.rmtree(sockdir / "registry")
        for _ in range(100):
            if reg.path.exists():
                break
            await asyncio.sleep(0.02)
        assert await registration_name(reg.path, 1.0) == DRIVER
    finally:
        watcher.cancel()
        await reg.close(1.0)


async def test_stale_socket_is_replaced_and_a_live_one_refused(sockdir: Path) -> None:
    path = sockdir / f"{DRIVER}-reg.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()
    first = registration(sockdir)
    await first.open()
    try:
        assert await registration_name(path, 1.0) == DRIVER
        second = registration(sockdir)
        with pytest.raises(StartupError, match="already serving"):
            await second.open()
        assert await registration_name(path, 1.0) == DRIVER
    finally:
        await first.close(1.0)


async def test_close_leaves_a_socket_that_is_not_ours(sockdir: Path) -> None:
    reg = registration(sockdir)
    await reg.open()
    reg.path.unlink()
    other = socket.socket(socket.AF_UNIX)
    other.bind(str(reg.path))
    try:
        await reg.close(1.0)
        assert reg.path.is_socket(), "somebody else's socket must survive our shutdown"
    finally:
        other.close()


# --- /healthz --------------------------------------------------------------------------------

async def test_health_status_codes(sockdir: Path, identity: Identity) -> None:
    state = HealthState(identity.path)
    status, text = await check(state)
    assert status == 404 and "not created yet" in text

    reg = registration(sockdir)
    await reg.open()
    state.driver_name, state.registration = DRIVER, reg
    try:
        assert await check(state) == (200, "ok")

        reg.path.unlink()
        status, text = await check(state)
        assert status == 404 and "missing" in text

        await reg.recreate()
        assert (await check(state))[0] == 200

        state.driver_name = "other.csi.io"  # both sockets now name another driver
        status, text = await check(state)
        assert status == 500
        assert "registration socket" in text and "driver socket" in text
        state.driver_name = DRIVER

        await identity.stop()
        status, text = await check(state)
        assert status == 500 and "connection refused" in text
    finally:
        await reg.close(1.0)


async def test_health_answers_quickly_when_the_driver_hangs(sockdir: Path) -> None:
    path = sockdir / "hung.sock"
    hung = socket.socket(socket.AF_UNIX)
    hung.bind(str(path))
    hung.listen(8)  # accepts connections, never speaks HTTP/2
    reg = registration(sockdir)
    await reg.open()
    try:
        state = HealthState(path, DRIVER, reg)
        started = time.monotonic()
        status, text = await check(state, timeout=0.3)
        assert status == 500 and "did not answer" in text
        assert time.monotonic() - started < 1.0
    finally:
        hung.close()
        await reg.close(1.0)


def replace_with_file(path: Path) -> None:
    path.unlink()
    path.write_text("not ours")


async def test_the_socket_appears_only_once_it_accepts(sockdir: Path) -> None:
    reg = registration(sockdir)
    await reg.open()
    try:
        assert names(sockdir) == [reg.path.name], "no staging file is left behind"
        # Accepting right away: a connect made the moment the file exists succeeds.
        with socket.socket(socket.AF_UNIX) as probe:
            probe.connect(str(reg.path))
    finally:
        await reg.close(1.0)


async def test_a_file_that_appears_meanwhile_is_never_replaced(sockdir: Path) -> None:
    reg = registration(sockdir)
    await reg.open()
    try:
        replace_with_file(reg.path)
        with pytest.raises(StartupError, match="not a socket"):
            await reg.recreate()
        assert reg.path.read_text() == "not ours"
        assert names(sockdir) == [reg.path.name]
    finally:
        await reg.close(1.0)
    assert reg.path.read_text() == "not ours"


def test_binding_never_overwrites(sockdir: Path) -> None:
    path = sockdir / "x.sock"
    path.write_text("somebody else's")
    with pytest.raises(StartupError, match="appeared"):
        _bind_listening(path, 0o660)
    assert path.read_text() == "somebody else's"


def created_in(directory: Path) -> tuple[int, Callable[[], set[str]]]:
    """Watch `directory` for created entries (inotify, as kubelet's plugin watcher does):
    the descriptor, and a function that returns the names created so far."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
    assert fd >= 0 and libc.inotify_add_watch(fd, bytes(directory), 0x100) >= 0  # IN_CREATE

    def names() -> set[str]:
        found: set[str] = set()
        while True:
            try:
                data = os.read(fd, 65536)
            except BlockingIOError:
                return found
            offset = 0
            while offset < len(data):
                _wd, _mask, _cookie, size = struct.unpack_from("iIII", data, offset)
                name = data[offset + 16:offset + 16 + size].rstrip(b"\0").decode()
                found.add(name)
                offset += 16 + size

    return fd, names


async def test_no_other_file_ever_appears_in_the_registration_directory(sockdir: Path) -> None:
    """Kubelet's watcher logs an error for a file that appears and vanishes there."""
    fd, created = created_in(sockdir)
    reg = registration(sockdir)
    try:
        await reg.open()
        reg.path.unlink()
        await reg.recreate()
    finally:
        await reg.close(1.0)
        seen = created()
        os.close(fd)
    assert seen == {reg.path.name}
