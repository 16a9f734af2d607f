"""The node's filesystem boundary: staging and target paths resolved beneath the kubelet root.

The node runs privileged, and mkdir, mount and mount --bind follow symbolic links, so the
lexical check of a path (`paths.validate`) says nothing about where it leads. Every staging
and target path is resolved here, one component at a time, from a descriptor of the kubelet
root, and what is done there is done through descriptors of what was verified:

- each directory is opened with O_PATH|O_NOFOLLOW|O_DIRECTORY relative to the descriptor of
  its parent (openat), so the kernel never follows a link on the node's behalf;
- a symbolic link met on the way is read (readlinkat) and followed by hand, and only while
  it stays below the root: `..` may not climb above it, an absolute target must name a path
  below it, and more than 40 links is an error. A link leading out is INVALID_ARGUMENT
  naming it; so is a staging or target path that is itself a link;
- missing directories are created with mkdirat in their verified parent
  (`os.mkdir(name, dir_fd=...)`), which does not follow a link either, and removed with
  unlinkat (`os.rmdir(name, dir_fd=...)`), which does not follow one.

The result is a `Place`: the canonical (link-free) path, the last name, and the parent
directory held open. A caller that requires a shape of path (`paths.validate_target`...)
passes it as `check`: a canonical path that differs from the requested one must pass it too,
so that a link inside the root cannot turn a target path into a staging path or kubelet's
own directory. Acting on what was verified, with no check-then-use gap:

- bind mounts and unmounts go through `/proc/<pid>/fd/<n>` of a descriptor opened from the
  held parent (`Place.look`): the kernel resolves such a magic link to the very directory or
  mount that descriptor holds, not to whatever the path names by then, and the descriptor's
  mount id (fdinfo) says which mount it is. Unmounts are lazy as a consequence: the node's
  own descriptor keeps the mount busy.
- the FUSE mount cannot go through a descriptor: the glusterfs client keeps its mount point
  as a path for its whole life (it unmounts by that path when it exits, and the node finds
  the client by it), and `/proc/<pid>/fd/<n>` would name something else later. So it is
  mounted by the canonical path (`mount -c`: no canonicalization) and verified after: the
  mount seen through the held parent must be the new one. A mount that a link swapped into
  the path in between sent elsewhere is found by its mount id, unmounted through a
  descriptor checked against that id, and the RPC fails (`mounter.py`). Verifying after is
  sound because nothing reads or writes through the mount before the check, and the undo
  acts on the mount id, not on a path.

Every blocking call runs in a lane (`offloop.Lane`) with a deadline: a path through a hung
mount answers DEADLINE_EXCEEDED ("hung") instead of blocking a shared thread.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import posixpath
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TypeVar

from services.common.errors import DeadlineExceeded, FailedPrecondition, InvalidArgument
from services.node.offloop import Hung, Lane
from services.node.paths import validate

T = TypeVar("T")
# A check of a path's shape: (path, field) -> path, or InvalidArgument naming the field.
Check = Callable[[str, str], str]

MAX_LINKS = 40
DIR_MODE = 0o750
_SHOWN = 200  # characters of a link's target shown in an error
_OPEN_DIR = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NOT_A_DIR = (errno.ENOTDIR, errno.ELOOP)


class PathHung(DeadlineExceeded):
    """Resolving or changing a path did not answer in time: a hung mount on the way."""


class ParentMissing(FailedPrecondition):
    """A directory above the path does not exist (and was not to be created)."""


def mount_id_of(fd: int) -> int:
    """The id (as in mountinfo) of the mount an open descriptor lies on. Blocking; procfs of
    this process only."""
    with open(f"/proc/self/fdinfo/{fd}", "rb") as info:
        for line in info:
            if line.startswith(b"mnt_id:"):
                return int(line.split()[1])
    raise OSError(errno.EINVAL, f"no mnt_id in the fdinfo of descriptor {fd}")


@dataclass(frozen=True)
class Look:
    """What is at a place now, held open: the directory, or the root of the mount on it."""

    fd: int
    mount_id: int

    @property
    def proc_path(self) -> str:
        """A path naming exactly this open directory for a command the node starts (mount,
        umount): the kernel resolves it to what `fd` holds, whatever the path says now."""
        return f"/proc/{os.getpid()}/fd/{self.fd}"


def open_look(path: str) -> Look:
    """Blocking: open `path` as the kernel resolves it and say which mount it shows. Only
    for a path outside the boundary whose mount id the caller checks before acting."""
    fd = os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        return Look(fd, mount_id_of(fd))
    except BaseException:
        os.close(fd)
        raise


def close_look(look: Look | None) -> None:
    if look is not None:
        with contextlib.suppress(OSError):
            os.close(look.fd)


@dataclass
class Place:
    """A verified directory entry below the kubelet root: its canonical path, its name and
    its parent directory held open. Use within `Tree.place(...)`, which closes it."""

    path: str
    name: str
    parent_fd: int
    exists: bool
    lane: Lane
    seconds: float

    @contextlib.asynccontextmanager
    async def look(self) -> AsyncIterator[Look | None]:
        """Open what is at the place now (None when nothing is): the top mount's root when
        something is mounted there, else the directory."""
        look = await run(
            self.lane, f"look {self.path}", self._look, self.seconds, discard=close_look
        )
        try:
            yield look
        finally:
            close_look(look)

    def _look(self) -> Look | None:
        try:
            fd = os.open(self.name, _OPEN_DIR, dir_fd=self.parent_fd)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno in _NOT_A_DIR:
                raise _not_a_directory(self.parent_fd, self.name, "path", self.path) from None
            raise
        try:
            return Look(fd, mount_id_of(fd))
        except BaseException:
            os.close(fd)
            raise

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.parent_fd)


async def run(
    lane: Lane,
    key: str,
    func: Callable[[], T],
    seconds: float,
    discard: Callable[[T], None] | None = None,
) -> T:
    """`func()` in `lane`; PathHung (DEADLINE_EXCEEDED) when it does not answer in time."""
    try:
        return await lane.run(key, func, seconds, discard=discard)
    except Hung as exc:
        raise PathHung(str(exc)) from None


def _shown(text: str) -> str:
    return repr(text if len(text) <= _SHOWN else text[:_SHOWN] + "...")


def _link_target(dir_fd: int, name: str) -> str | None:
    """The target of the link `name` in `dir_fd`, or None when `name` is no link."""
    try:
        return os.readlink(name, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in (errno.EINVAL, errno.ENOENT):
            return None
        raise


def _cannot(field: str, path: str, name: str, exc: OSError) -> FailedPrecondition:
    reason = os.strerror(exc.errno) if exc.errno else str(exc)
    return FailedPrecondition(f"{field} {path}: cannot open {name!r}: {reason}")


def _not_a_directory(
    dir_fd: int, name: str, field: str, path: str
) -> InvalidArgument | FailedPrecondition:
    if _link_target(dir_fd, name) is not None:
        return InvalidArgument(
            f"{field} {path} is a symbolic link; the node does not mount on or through a "
            "link it cannot trust"
        )
    return FailedPrecondition(f"{field} {path} exists and is not a directory")


class Tree:
    """The kubelet root: resolves paths below it (`place`), creates and removes the last
    directory of a place, all in `lane` with a deadline of `seconds`."""

    def __init__(self, root: str, lane: Lane, seconds: float) -> None:
        self.root = root
        self.lane = lane
        self.seconds = seconds

    @contextlib.asynccontextmanager
    async def place(
        self, path: str, field: str, *, make_parents: bool = False, check: Check | None = None
    ) -> AsyncIterator[Place]:
        """Resolve `path` (lexically valid and below the root: `paths.validate`).

        The last component may be missing (`Place.exists`); the directories above it must
        exist unless `make_parents`, else ParentMissing. INVALID_ARGUMENT for a link that
        leads out of the root or a path that is itself a link, or for a canonical path that
        fails `check(path, field)`; FAILED_PRECONDITION for a component that is not a
        directory.
        """
        resolve = functools.partial(self._resolve, path, field, make_parents, check)
        place = await run(self.lane, f"resolve {path}", resolve, self.seconds, Place.close)
        try:
            yield place
        finally:
            place.close()

    async def mkdir(self, place: Place, field: str) -> None:
        """Create the place's directory if it is missing (mkdirat: no link followed)."""
        if not place.exists:
            await run(
                self.lane,
                f"mkdir {place.path}",
                functools.partial(self._mkdir, place, field),
                self.seconds,
            )
            place.exists = True

    async def rmdir(self, place: Place, field: str) -> None:
        """Remove the place's directory if it is there and empty; never a file, a link or a
        directory with something in it (FAILED_PRECONDITION)."""
        await run(
            self.lane,
            f"rmdir {place.path}",
            functools.partial(self._rmdir, place, field),
            self.seconds,
        )

    # ---- blocking, in the lane ---------------------------------------------------------------

    def _resolve(self, path: str, field: str, make_parents: bool, check: Check | None) -> Place:
        relative = validate(path, field, self.root)[len(self.root) :].strip("/")
        parts = deque(relative.split("/"))
        last = parts.pop()  # the path's own name: never followed, may be missing
        if make_parents:
            os.makedirs(self.root, exist_ok=True)  # the configured root itself is trusted
        try:
            root_fd = os.open(self.root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise ParentMissing(f"{field} {path}: the kubelet root does not exist") from None
        stack: list[tuple[int, str]] = [(root_fd, "")]
        try:
            self._walk(stack, parts, path, field, make_parents)
            names = [name for _, name in stack[1:]]
            parent_fd = stack.pop()[0]
        finally:
            for fd, _ in stack:
                os.close(fd)
        canonical = posixpath.join(self.root, *names, last)
        try:
            if check is not None and canonical != path:
                check(canonical, f"{field} (resolved through symbolic links)")
            exists = self._final_exists(parent_fd, last, field, path)
        except BaseException:
            os.close(parent_fd)
            raise
        return Place(canonical, last, parent_fd, exists, self.lane, self.seconds)

    def _walk(
        self,
        stack: list[tuple[int, str]],
        parts: deque[str],
        path: str,
        field: str,
        make_parents: bool,
    ) -> None:
        """Descend through `parts`, pushing (descriptor, name) of each directory; links are
        followed by hand while they stay below the root."""
        links = 0
        link = ""  # the last link followed: `..` only ever comes from a link's target
        while parts:
            name = parts.popleft()
            if name in ("", "."):
                continue
            if name == "..":
                if len(stack) == 1:
                    raise self._outside(path, field, link)
                os.close(stack.pop()[0])
                continue
            step = self._step(stack[-1][0], name, path, field, make_parents)
            if isinstance(step, int):
                stack.append((step, name))
                continue
            links += 1
            if links > MAX_LINKS:
                raise InvalidArgument(f"{field} {path}: more than {MAX_LINKS} symbolic links")
            link = posixpath.join(self.root, *[n for _, n in stack[1:]], name)
            if step.startswith("/"):
                below = _below(step, self.root)
                if below is None:
                    raise self._outside(path, field, link, step)
                while len(stack) > 1:
                    os.close(stack.pop()[0])
                step = below
            parts.extendleft(reversed(step.split("/")))

    def _outside(
        self, path: str, field: str, link: str, target: str | None = None
    ) -> InvalidArgument:
        to = "" if target is None else f" to {_shown(target)}"
        return InvalidArgument(
            f"{field} {path}: {_shown(link)} is a symbolic link{to} that leads outside the "
            f"kubelet root {self.root}"
        )

    def _step(self, dir_fd: int, name: str, path: str, field: str, make: bool) -> int | str:
        """Open directory `name` in `dir_fd` (creating it if `make`): its descriptor, or the
        target of the link `name` is."""
        try:
            return os.open(name, _OPEN_DIR, dir_fd=dir_fd)
        except FileNotFoundError:
            if not make:
                raise ParentMissing(
                    f"{field} {path}: the directory above it does not exist"
                ) from None
            with contextlib.suppress(FileExistsError):
                os.mkdir(name, DIR_MODE, dir_fd=dir_fd)
            # Open what is there now: the new directory, or a link that raced in.
            return self._step(dir_fd, name, path, field, make=False)
        except OSError as exc:
            if exc.errno not in _NOT_A_DIR:
                raise _cannot(field, path, name, exc) from None
        target = _link_target(dir_fd, name)
        if target is None:
            raise FailedPrecondition(f"{field} {path}: {name!r} above it is not a directory")
        return target

    def _final_exists(self, parent_fd: int, name: str, field: str, path: str) -> bool:
        try:
            fd = os.open(name, _OPEN_DIR, dir_fd=parent_fd)
        except FileNotFoundError:
            return False
        except OSError as exc:
            if exc.errno in _NOT_A_DIR:
                raise _not_a_directory(parent_fd, name, field, path) from None
            raise _cannot(field, path, name, exc) from None
        os.close(fd)
        return True

    def _mkdir(self, place: Place, field: str) -> None:
        try:
            os.mkdir(place.name, DIR_MODE, dir_fd=place.parent_fd)
        except FileExistsError:
            self._final_exists(place.parent_fd, place.name, field, place.path)

    def _rmdir(self, place: Place, field: str) -> None:
        try:
            os.rmdir(place.name, dir_fd=place.parent_fd)
        except FileNotFoundError:
            return
        except OSError as exc:
            if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
                raise FailedPrecondition(
                    f"{place.path} is not empty after unmounting it; refusing to delete files in it"
                ) from None
            if exc.errno == errno.ENOTDIR:
                raise _not_a_directory(place.parent_fd, place.name, field, place.path) from None
            if exc.errno == errno.EBUSY:
                raise FailedPrecondition(f"{place.path} is still a mount point") from None
            raise


def _below(target: str, root: str) -> str | None:
    """`target` relative to `root` when it names a path below it (lexically), else None."""
    prefix = root.rstrip("/") + "/"
    if target == root or target.rstrip("/") == root.rstrip("/"):
        return "."
    if target.startswith(prefix):
        return target[len(prefix) :]
    return None
