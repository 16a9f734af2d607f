"""The registration socket: served with grpclib, created again whenever it disappears.

Kubelet's plugin watcher reacts to socket files appearing in its plugins_registry
directory. When the file is removed (a kubelet restart can wipe the directory), kubelet
forgets the plugin; only a new socket file makes it register the plugin again. So the
watcher here replaces a vanished socket with a fresh listener, not just a new name for the
old one.
"""

from __future__ import annotations

import asyncio
import contextlib
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


def _publish(staging: Path, path: Path) -> None:
    """Give the socket at `staging` the name `path`; never replaces a file already there."""
    try:
        os.link(staging, path)
    except FileExistsError:
        raise StartupError(f"{path} appeared while the registration socket was being "
                           "created; another registrar?") from None
    except OSError:
        # A file system without hard links: rename, after checking nothing is in the way.
        if os.path.lexists(path):
            raise StartupError(f"{path} exists; refusing to replace it") from None
        os.rename(staging, path)


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
        """Listen on a fresh socket and put it at `path`, then stop the previous listener.

        The socket is bound and listening under a hidden name first (kubelet ignores dot
        files) and only then linked to `path`: kubelet's watcher reacts the moment the file
        appears, and a socket that is not yet accepting would make its first attempt fail.
        """
        staging = self.path.with_name(f".{self.path.name}.new")
        staging.unlink(missing_ok=True)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server = Server(self._servables)
        started = False
        try:
            sock.bind(str(staging))
            os.chmod(staging, self._mode)
            sock.listen(_BACKLOG)
            await server.start(sock=sock)
            started = True
            _publish(staging, self.path)
        except BaseException:
            if started:  # the server owns the socket now
                server.close()
                await server.wait_closed()
            else:
                sock.close()
            raise
        finally:
            staging.unlink(missing_ok=True)
        st = os.stat(self.path)
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
