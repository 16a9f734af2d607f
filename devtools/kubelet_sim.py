"""A stand-in for kubelet's plugin watcher: registers CSI plugins from a registration directory.

Like kubelet, it polls the directory for socket files, asks each new socket GetInfo, checks
the plugin type (`CSIPlugin`) and version (`1.0.0`), calls NodeGetInfo on the CSI endpoint
the plugin announces, and reports the verdict with NotifyRegistrationStatus. A socket that is
removed deregisters its driver; a socket that is re-created (new inode or mtime) registers
again. `reject` makes it refuse every registration with that reason.

In-process:
    async with KubeletSimulator(reg_dir) as sim:
        node_id = await sim.wait_registered("glusterfs.heketi.csi.io", timeout=10)

As a process (one JSON line per event on stdout; SIGTERM/SIGINT stop it with exit code 0):
    python -m devtools.kubelet_sim --registration-dir DIR [--reject REASON]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import stat
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from grpclib.client import Channel
from grpclib.exceptions import GRPCError, StreamTerminatedError

from services.common.proto import csi_grpc, csi_pb2
from services.common.proto.pluginregistration import api_grpc, api_pb2

CSI_PLUGIN_TYPE = "CSIPlugin"
REQUIRED_VERSION = "1.0.0"
# Kubelet gives NodeGetInfo two minutes; tests want to hear about a hang sooner.
DEFAULT_CALL_TIMEOUT = 10.0
# Kubelet's reconciler retries a registration that could not talk to the socket.
RETRY_INTERVAL = 1.0

# st_dev, st_ino, st_mtime_ns: a re-created socket differs (ctime would also change on chmod).
SocketKey = tuple[int, int, int]


@dataclass(frozen=True)
class RegistrationEvent:
    """One thing that happened: registered, rejected, failed, deregistered or notify_failed."""

    kind: str
    socket: str
    driver: str = ""
    node_id: str = ""
    error: str = ""
    at: float = 0.0  # time.monotonic()

    def as_dict(self) -> dict[str, str]:
        data = asdict(self)
        data.pop("at")
        return {k: v for k, v in data.items() if v != ""}


class _Retry(Exception):
    """Talking to the registration socket failed; try again while it is unchanged."""


def _describe(exc: BaseException) -> str:
    if isinstance(exc, GRPCError):
        return f"{exc.status.name}: {exc.message or ''}".rstrip(": ")
    if isinstance(exc, TimeoutError):
        return "timed out"
    return f"{type(exc).__name__}: {exc}"


class KubeletSimulator:
    """Registers the plugins whose sockets appear in `registration_dir`."""

    def __init__(
        self,
        registration_dir: Path | str,
        reject: str | None = None,
        *,
        poll_interval: float = 0.2,
        call_timeout: float = DEFAULT_CALL_TIMEOUT,
        on_event: Callable[[RegistrationEvent], None] | None = None,
    ) -> None:
        self.registration_dir = Path(registration_dir)
        self.reject = reject
        self.poll_interval = poll_interval
        self.call_timeout = call_timeout
        self.on_event = on_event
        self.registered: dict[str, str] = {}  # driver name -> node id
        self.events: list[RegistrationEvent] = []
        self._seen: dict[Path, SocketKey] = {}
        self._driver_of: dict[Path, str] = {}  # socket -> driver it registered
        self._attempts: dict[Path, asyncio.Task[None]] = {}
        self._changed = asyncio.Condition()
        self._watcher: asyncio.Task[None] | None = None

    async def __aenter__(self) -> KubeletSimulator:
        self.registration_dir.mkdir(parents=True, exist_ok=True)
        self._watcher = asyncio.create_task(self._watch())
        return self

    async def __aexit__(self, *_exc: object) -> None:
        tasks = [t for t in (self._watcher, *self._attempts.values()) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # --- waiting, for tests -------------------------------------------------------------

    async def wait_for(self, predicate: Callable[[], bool], timeout: float) -> None:
        """Wait until `predicate()` holds; re-raises the watcher's crash, if it crashed."""

        async def until() -> None:
            async with self._changed:
                await self._changed.wait_for(predicate)

        waiter = asyncio.create_task(until())
        pending: set[asyncio.Task[None]] = {waiter}
        if self._watcher is not None:
            pending.add(self._watcher)
        try:
            done, _ = await asyncio.wait(pending, timeout=timeout,
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
        if waiter in done:
            return
        if self._watcher is not None and self._watcher in done:
            self._watcher.result()  # raises what the watcher died of
            raise RuntimeError("the kubelet simulator's watcher stopped")
        raise TimeoutError

    async def wait_registered(self, driver: str, timeout: float) -> str:
        """Wait until `driver` is registered; returns its node id."""
        try:
            await self.wait_for(lambda: driver in self.registered, timeout)
        except TimeoutError:
            raise TimeoutError(f"{driver} not registered after {timeout} s; events: "
                               f"{[e.as_dict() for e in self.events]}") from None
        return self.registered[driver]

    async def wait_deregistered(self, driver: str, timeout: float) -> None:
        await self.wait_for(lambda: driver not in self.registered, timeout)

    async def wait_event(self, kind: str, driver: str, count: int, timeout: float) -> None:
        """Wait until `count` events of `kind` for `driver` have happened."""
        try:
            await self.wait_for(lambda: self.count(kind, driver) >= count, timeout)
        except TimeoutError:
            raise TimeoutError(f"fewer than {count} {kind} events for {driver} after "
                               f"{timeout} s; events: {[e.as_dict() for e in self.events]}"
                               ) from None

    def count(self, kind: str, driver: str) -> int:
        return sum(1 for e in self.events if e.kind == kind and e.driver == driver)

    # --- the watcher ----------------------------------------------------------------------

    def _scan(self) -> dict[Path, SocketKey]:
        found: dict[Path, SocketKey] = {}
        try:
            entries = list(os.scandir(self.registration_dir))
        except FileNotFoundError:
            return found
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            if stat.S_ISSOCK(st.st_mode):
                found[Path(entry.path)] = (st.st_dev, st.st_ino, st.st_mtime_ns)
        return found

    async def _watch(self) -> None:
        while True:
            current = self._scan()
            for path in [p for p in self._seen if current.get(p) != self._seen[p]]:
                await self._forget(path)
            for path, key in current.items():
                if self._seen.get(path) != key:
                    self._seen[path] = key
                    self._attempts[path] = asyncio.create_task(self._register(path, key))
            await asyncio.sleep(self.poll_interval)

    async def _forget(self, path: Path) -> None:
        """The socket at `path` is gone or replaced: stop trying it, deregister its driver."""
        del self._seen[path]
        attempt = self._attempts.pop(path, None)
        if attempt is not None and not attempt.done():
            attempt.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await attempt
        driver = self._driver_of.pop(path, None)
        if driver is not None:
            self.registered.pop(driver, None)
            await self._record(RegistrationEvent("deregistered", str(path), driver))

    async def _record(self, event: RegistrationEvent) -> None:
        event = RegistrationEvent(**{**asdict(event), "at": time.monotonic()})
        self.events.append(event)
        if self.on_event is not None:
            self.on_event(event)
        async with self._changed:
            self._changed.notify_all()

    async def _register(self, path: Path, key: SocketKey) -> None:
        while self._seen.get(path) == key:
            try:
                await self._register_once(path)
                return
            except _Retry as exc:
                await self._record(RegistrationEvent("failed", str(path), error=str(exc)))
            await asyncio.sleep(RETRY_INTERVAL)

    async def _register_once(self, path: Path) -> None:
        channel = Channel(path=str(path))
        try:
            stub = api_grpc.RegistrationStub(channel)
            try:
                info = await stub.GetInfo(api_pb2.InfoRequest(), timeout=self.call_timeout)
            except (OSError, GRPCError, StreamTerminatedError, TimeoutError) as exc:
                raise _Retry(f"GetInfo: {_describe(exc)}") from None
            error = self._validate(info)
            node_id = ""
            if not error:
                node_id, error = await self._node_get_info(info.endpoint or str(path))
            if not error and self.reject is not None:
                error = self.reject
            notify_error = ""
            try:
                await stub.NotifyRegistrationStatus(
                    api_pb2.RegistrationStatus(plugin_registered=not error, error=error),
                    timeout=self.call_timeout)
            except (OSError, GRPCError, StreamTerminatedError, TimeoutError) as exc:
                notify_error = f"NotifyRegistrationStatus: {_describe(exc)}"
        finally:
            channel.close()
        if error:
            await self._record(RegistrationEvent("rejected", str(path), info.name, error=error))
        else:
            self.registered[info.name] = node_id
            self._driver_of[path] = info.name
            await self._record(RegistrationEvent("registered", str(path), info.name, node_id))
        if notify_error:
            await self._record(RegistrationEvent("notify_failed", str(path), info.name,
                                                 error=notify_error))

    @staticmethod
    def _validate(info: api_pb2.PluginInfo) -> str:
        if info.type != CSI_PLUGIN_TYPE:
            return f"no handler registered for plugin type: {info.type}"
        if not info.name:
            return "plugin announced an empty name"
        if REQUIRED_VERSION not in info.supported_versions:
            return (f"none of the versions {list(info.supported_versions)} is supported; "
                    f"need {REQUIRED_VERSION}")
        return ""

    async def _node_get_info(self, endpoint: str) -> tuple[str, str]:
        """(node id, "") from the plugin's NodeGetInfo, or ("", error)."""
        endpoint = endpoint.removeprefix("unix://")
        channel = Channel(path=endpoint)
        try:
            reply = await csi_grpc.NodeStub(channel).NodeGetInfo(
                csi_pb2.NodeGetInfoRequest(), timeout=self.call_timeout)
        except (OSError, GRPCError, StreamTerminatedError, TimeoutError) as exc:
            return "", f"NodeGetInfo on {endpoint}: {_describe(exc)}"
        finally:
            channel.close()
        if not reply.node_id:
            return "", f"NodeGetInfo on {endpoint} answered an empty node id"
        return reply.node_id, ""


def _print_event(event: RegistrationEvent) -> None:
    print(json.dumps(event.as_dict(), sort_keys=True), flush=True)


async def _serve(args: argparse.Namespace) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with KubeletSimulator(args.registration_dir, args.reject,
                                poll_interval=args.poll_interval, on_event=_print_event):
        print(json.dumps({"kind": "watching", "registration_dir": args.registration_dir}),
              flush=True)
        await stop.wait()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.kubelet_sim",
        description="Register CSI plugins from a registration directory, like kubelet.")
    parser.add_argument("--registration-dir", required=True,
                        help="directory to watch for <driver>-reg.sock files")
    parser.add_argument("--reject", default=None, metavar="REASON",
                        help="refuse every registration with this error")
    parser.add_argument("--poll-interval", type=float, default=0.2,
                        help="seconds between scans of the directory")
    return asyncio.run(_serve(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
