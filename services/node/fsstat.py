"""Filesystem calls that may hang on a dead network mount, made safely.

`stat`/`statvfs` on a FUSE mount whose client is stuck block in the kernel, possibly for
ever. They therefore run in a thread of their own, never on the event loop, and:

- the caller waits at most its timeout; a path that does not answer in time is reported as
  an abnormal condition ("did not answer within N s") instead of an error or a hang;
- at most one call per path is in flight: a caller that arrives while a probe of the same path
  is still running joins that probe instead of starting another thread, so a hung path costs
  one blocked thread, not one per kubelet poll;
- errors that mean "the mount is broken" (ENOTCONN, ESTALE, EIO, ...) are reported as an
  abnormal condition with a message, not raised.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")

# errno values that say the filesystem behind a path is broken rather than the path wrong.
BROKEN_ERRNOS = frozenset(
    {
        errno.ENOTCONN,
        errno.ESTALE,
        errno.EIO,
        errno.ECONNABORTED,
        errno.ECONNREFUSED,
        errno.EHOSTDOWN,
        errno.ETIMEDOUT,
    }
)


@dataclass(frozen=True)
class Usage:
    """What statvfs says about a filesystem, in bytes and inodes."""

    total_bytes: int
    available_bytes: int
    used_bytes: int
    total_inodes: int
    free_inodes: int
    used_inodes: int


@dataclass(frozen=True)
class Probe:
    """Outcome of looking at a path: usage when healthy, else the reason it is abnormal."""

    usage: Usage | None = None
    abnormal: str | None = None
    errno: int | None = None

    @property
    def healthy(self) -> bool:
        return self.abnormal is None


class PathMissing(FileNotFoundError):
    """The path does not exist (as opposed to existing on a broken mount)."""


def is_broken_errno(code: int | None) -> bool:
    return code in BROKEN_ERRNOS


def usage_of(path: str) -> Usage:
    """Blocking: stat + statvfs of `path`. Run it through `SingleFlight`, never on the loop."""
    os.stat(path)
    st = os.statvfs(path)
    total = st.f_blocks * st.f_frsize
    free = st.f_bfree * st.f_frsize
    return Usage(
        total_bytes=total,
        available_bytes=st.f_bavail * st.f_frsize,
        used_bytes=max(0, total - free),
        total_inodes=st.f_files,
        free_inodes=st.f_ffree,
        used_inodes=max(0, st.f_files - st.f_ffree),
    )


class SingleFlight(Generic[T]):
    """Run a blocking function per key in its own daemon thread, one at a time per key.

    `await call(key, seconds)` returns the function's result, re-raises its exception, or
    raises TimeoutError after `seconds` (the thread keeps running; its eventual result goes
    to whoever waits then, and the key is free again once it finished).
    """

    def __init__(self, func: Callable[[str], T], name: str = "fsprobe") -> None:
        self._func = func
        self._name = name
        self._inflight: dict[str, asyncio.Future[T]] = {}

    def in_flight(self) -> int:
        return len(self._inflight)

    async def call(self, key: str, seconds: float) -> T:
        future = self._inflight.get(key)
        if future is None:
            future = self._start(key)
        # shield: a caller that times out or is cancelled must not cancel the shared future.
        return await asyncio.wait_for(asyncio.shield(future), seconds)

    def _start(self, key: str) -> asyncio.Future[T]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._inflight[key] = future

        def settle(value: T | None, exc: BaseException | None) -> None:
            self._inflight.pop(key, None)
            if future.done():
                return
            if exc is not None:
                future.set_exception(exc)
            else:
                future.set_result(value)  # type: ignore[arg-type]

        def work() -> None:
            value: T | None = None
            error: BaseException | None = None
            try:
                value = self._func(key)
            except BaseException as exc:
                error = exc
            # RuntimeError: the loop closed while the call hung; nobody waits any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(settle, value, error)

        # Nobody may be awaiting the future when it fails (every caller timed out already);
        # mark the exception as retrieved so asyncio does not log it as never retrieved.
        future.add_done_callback(lambda f: f.cancelled() or f.exception())
        threading.Thread(target=work, name=f"{self._name}:{key}", daemon=True).start()
        return future


class FsProbe:
    """Health and usage of mounted paths, with a timeout and one probe per path in flight."""

    def __init__(self, seconds: float, func: Callable[[str], Usage] = usage_of) -> None:
        self.seconds = seconds
        self._flight: SingleFlight[Usage] = SingleFlight(func)

    def in_flight(self) -> int:
        return self._flight.in_flight()

    async def probe(self, path: str, seconds: float | None = None) -> Probe:
        """Usage of `path`, or why it is abnormal. Raises PathMissing when `path` does not
        exist; never raises for a broken or hanging mount."""
        limit = self.seconds if seconds is None else seconds
        try:
            usage = await self._flight.call(path, limit)
        except TimeoutError:
            return Probe(abnormal=f"{path} did not answer within {limit:g} s (hung mount?)")
        except FileNotFoundError as exc:
            raise PathMissing(errno.ENOENT, f"{path} does not exist") from exc
        except OSError as exc:
            if is_broken_errno(exc.errno):
                reason = os.strerror(exc.errno) if exc.errno else str(exc)
                return Probe(abnormal=f"{path}: {reason}", errno=exc.errno)
            raise
        return Probe(usage=usage)
