"""The registration socket: served with grpclib, created again whenever it disappears.

Kubelet's plugin watcher reacts to socket files appearing in its plugins_registry
directory. When the file is removed (a kubelet restart can wipe the directory), kubelet
forgets the plugin; only a new socket file makes it register the plugin again. So the
watcher here replaces a vanished socket with a fresh listener, not just a new name for the
old one.

The socket file appears in plugins_registry exactly once, under its own name, and stays:
kubelet's watcher logs an error for every file that appears there and is gone by the time
it looks (a temporary name renamed or linked into place is such a file, dot or not), and it
watches every directory below plugins_registry too. A socket file cannot be moved to
another mount, and plugins_registry is the registrar's only mount of that file system, so
the socket is bound at its final name and listening within the same synchronous step
(bind, chmod, listen: no await, microseconds); kubelet's registration attempt comes from
its reconciler, at the earliest on its next one-second tick.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import socket
from pathlib import Path

from grpclib.server import Server

from services.common.logging import get_logger
from services.common.rpc import InFlight, Servable
from services.common.server import StartupError, prepare_socket_path
from services.registrar.metrics import SOCKET_RECREATED

_log = get_logger("registrar.listener")

# After the last in-flight call has returned its answer, grpclib still writes the trailers;
# give that a moment before the connections are closed.
_FLUSH_PAUSE = 0.05
_BACKLOG = 100


def _bind_listening(path: Path, mode: int) -> socket.socket:
    """A unix socket bound at `path` and listening; never replaces a file already there
    (bind refuses an existing name)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        try:
            sock.bind(str(path))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise StartupError(f"{path} appeared while the registration socket was being "
                                   "created; another registrar?") from None
            raise
        try:
            os.chmod(path, mode)
            sock.listen(_BACKLOG)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
    except BaseException:
        sock.close()
        raise
    return sock


class RegistrationSocket:
    """Serves `servables` on the unix socket at `path` and keeps that socket in place."""

    def __init__(self, path: Path, servables: list[Servable], socket_mode: int = 0o660) -> None:
        self.path = path
        self._servables = servables
        self._mode = socket_mode
        self.tracker = InFlight()
        for item in servables:
            item.tracker = self.tracker
        self._server: Server | None = None
        self._identity: tuple[int, int] | None = None  # (st_dev, st_ino) of our socket file

    async def open(self) -> None:
        """Start serving; removes a stale socket, refuses one a live process answers on."""
        await prepare_socket_path(self.path)
        await self._listen()
        _log.info("serving registration socket", path=str(self.path))

    def present(self) -> bool:
        """True when the socket file exists (whoever made it)."""
        return os.path.exists(self.path)

    def _ours(self) -> bool:
        try:
            st = os.stat(self.path)
        except OSError:
            return False
        return (st.st_dev, st.st_ino) == self._identity

    async def _listen(self) -> None:
        """Listen on a fresh socket at `path` (see the module's doc), then stop the previous
        listener."""
        sock = _bind_listening(self.path, self._mode)
        st = os.stat(self.path)
        server = Server(self._servables)
        try:
            await server.start(sock=sock)
        except BaseException:
            sock.close()
            if _same_file(self.path, st):
                self.path.unlink(missing_ok=True)
            raise
        self._identity = (st.st_dev, st.st_ino)
        old, self._server = self._server, server
        if old is not None:
            old.close()
            await old.wait_closed()

    async def recreate(self) -> None:
        """Listen on a new socket at `path` (the old listener's file is gone)."""
        await prepare_socket_path(self.path)
        await self._listen()
        SOCKET_RECREATED.inc()
        _log.warning("registration socket was missing; created it again", path=str(self.path))

    async def watch(self, interval: float) -> None:
        """Every `interval` seconds, re-create the socket when its file has disappeared."""
        while True:
            await asyncio.sleep(interval)
            if self.present():
                continue
            try:
                await self.recreate()
            except (OSError, StartupError) as exc:
                _log.error("cannot re-create the registration socket; will retry",
                           path=str(self.path), error=str(exc))

    async def close(self, grace: float) -> None:
        """Remove our socket file, let calls in flight finish (up to `grace` s), stop."""
        if self._ours():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
        self.tracker.draining = True
        try:
            await asyncio.wait_for(self.tracker.wait_idle(), grace)
        except TimeoutError:
            _log.warning("grace period over; cancelling calls still running",
                         in_flight=self.tracker.count)
        await asyncio.sleep(_FLUSH_PAUSE)
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        # The file may have been re-created by a listener that is now closed: ours, remove.
        if self._ours():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)


def _same_file(path: Path, st: os.stat_result) -> bool:
    try:
        now = os.stat(path)
    except OSError:
        return False
    return (now.st_dev, now.st_ino) == (st.st_dev, st.st_ino)
