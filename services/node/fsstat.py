"""Usage, health and existence of volume paths, asked without hanging on a dead mount.

`stat`/`statvfs` (and a mere lookup) on a FUSE mount whose client is stuck block in the
kernel, possibly for ever. They run in the node's `stats` lane (`offloop.Lane`), never on the
event loop nor on the default executor:

- the caller waits at most its timeout; a path that does not answer in time is reported as
  an abnormal condition ("did not answer within N s") instead of an error or a hang;
- at most one call per path is in flight: a caller that arrives while a probe of the same path
  is still running joins that probe instead of starting another thread, so a hung path costs
  one blocked thread, not one per kubelet poll, and the lane's bound caps them all;
- errors that mean "the mount is broken" (ENOTCONN, ESTALE, EIO, ...) are reported as an
  abnormal condition with a message, not raised.
"""

from __future__ import annotations

import errno
import functools
import os
from collections.abc import Callable
from dataclasses import dataclass

from services.node.offloop import Hung, Lane

# Threads the stats lane may hold: paths that hang at once before polls answer at once.
STATS_THREADS = 32

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
    """Outcome of looking at a path: its usage when it answers, the reason when it is
    abnormal; both when it answers but is degraded (`client_bricks.degraded`)."""

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
    """Blocking: stat + statvfs of `path`. Run it through `FsProbe`, never on the loop."""
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


class FsProbe:
    """Health, usage and existence of volume paths, with a timeout and one call per path in
    flight."""

    def __init__(
        self, seconds: float, func: Callable[[str], Usage] = usage_of, lane: Lane | None = None
    ) -> None:
        self.seconds = seconds
        self._func = func
        self._lane = lane or Lane("stats", STATS_THREADS)

    def in_flight(self) -> int:
        return self._lane.in_flight()

    async def probe(self, path: str, seconds: float | None = None) -> Probe:
        """Usage of `path`, or why it is abnormal. Raises PathMissing when `path` does not
        exist; never raises for a broken or hanging mount."""
        limit = self.seconds if seconds is None else seconds
        try:
            usage = await self._lane.run(
                f"statvfs {path}", functools.partial(self._func, path), limit, share=True
            )
        except Hung:
            return Probe(abnormal=f"{path} did not answer within {limit:g} s (hung mount?)")
        except FileNotFoundError as exc:
            raise PathMissing(errno.ENOENT, f"{path} does not exist") from exc
        except OSError as exc:
            if is_broken_errno(exc.errno):
                reason = os.strerror(exc.errno) if exc.errno else str(exc)
                return Probe(abnormal=f"{path}: {reason}", errno=exc.errno)
            raise
        return Probe(usage=usage)

    async def exists(self, path: str, seconds: float | None = None) -> bool | None:
        """Whether `path` exists (lstat: a link is not followed; an error counts as "no");
        None when it did not answer in time."""
        limit = self.seconds if seconds is None else seconds
        try:
            return await self._lane.run(
                f"lexists {path}", functools.partial(os.path.lexists, path), limit, share=True
            )
        except Hung:
            return None
