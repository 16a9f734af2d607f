"""Blocking filesystem calls off the event loop, each with a deadline, in bounded lanes.

A call on a path inside a FUSE mount whose client hangs (stopped, or cut off from its
servers) blocks in the kernel, possibly for ever, and a thread cannot be interrupted. Such
calls therefore never run on the event loop, nor on the loop's default executor, where a few
hung calls would starve every other `to_thread` of the process. Each purpose has a `Lane`:

- every call runs in a daemon thread of its lane and its caller waits at most its deadline;
  a call that overruns raises `Hung`. The thread is abandoned, not killed: it ends when the
  kernel lets it, and a result nobody waits for any more is handed to `discard`;
- at most one call per key (a path) is in flight: a second caller either shares the running
  call (`share=True`, for probes that answer the same for everyone) or waits for it to end
  within its own deadline. A hung path holds one thread, never one per retry;
- a lane runs at most `threads` calls at once; when all are stuck, a new call waits for a
  free thread within its deadline, then answers `Hung` instead of queueing behind them.

The node's lanes: `stats` (statvfs and existence checks of volume paths, `fsstat`), `paths`
and `repair-paths` (resolving, creating and removing staging and target directories,
`boundary`), `mounter` (scans of /proc for gluster clients). A hung mount thus costs the
lanes one thread per path it hangs, and the RPCs that do not touch it go on. The default
executor keeps only calls on local files (the state store, gluster client logs).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


class Hung(TimeoutError):
    """A call did not end by its deadline, or could not start: its key or its lane is stuck."""


class Lane:
    """At most `threads` blocking calls at once, one per key, each awaited with a deadline."""

    def __init__(self, name: str, threads: int) -> None:
        if threads < 1:
            raise ValueError("a lane needs at least one thread")
        self.name = name
        self.threads = threads
        self._calls: dict[str, asyncio.Future[Any]] = {}
        self._changed: asyncio.Event | None = None

    def in_flight(self) -> int:
        """Calls running now (hung ones included): the threads this lane holds."""
        return len(self._calls)

    async def run(
        self,
        key: str,
        func: Callable[[], T],
        seconds: float,
        *,
        share: bool = False,
        discard: Callable[[T], None] | None = None,
    ) -> T:
        """`func()` in a thread of this lane; its result, its exception, or `Hung`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while True:
            current = self._calls.get(key)
            if current is not None and share:
                break
            if current is None and len(self._calls) < self.threads:
                current = self._start(key, func, loop)
                break
            changed = self._event()
            try:
                await asyncio.wait_for(changed.wait(), max(0.0, deadline - loop.time()))
            except TimeoutError:
                raise Hung(self._stuck(key, seconds)) from None
        try:
            # shield: a caller that gives up must not cancel a call others share.
            return await asyncio.wait_for(asyncio.shield(current), max(0.0, deadline - loop.time()))
        except TimeoutError:
            if discard is not None and not share:
                current.add_done_callback(_discarding(discard))
            raise Hung(f"{key} did not answer within {seconds:g} s (hung mount?)") from None
        except asyncio.CancelledError:
            if discard is not None and not share:
                current.add_done_callback(_discarding(discard))
            raise

    def _stuck(self, key: str, seconds: float) -> str:
        if key in self._calls:
            return (
                f"{key}: an earlier call has not returned and this one could not start "
                f"within {seconds:g} s (hung mount?)"
            )
        return (
            f"{key}: all {self.threads} threads for {self.name} calls are stuck on hung "
            f"paths; gave up after {seconds:g} s"
        )

    def _event(self) -> asyncio.Event:
        if self._changed is None:
            self._changed = asyncio.Event()
        return self._changed

    def _start(
        self, key: str, func: Callable[[], T], loop: asyncio.AbstractEventLoop
    ) -> asyncio.Future[T]:
        future: asyncio.Future[T] = loop.create_future()
        self._calls[key] = future
        # Nobody may be awaiting the future when it fails (every caller gave up already):
        # mark the exception as retrieved so that asyncio does not log it.
        future.add_done_callback(lambda f: f.cancelled() or f.exception())

        def settle(value: T | None, error: BaseException | None) -> None:
            if self._calls.get(key) is future:
                del self._calls[key]
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(value)  # type: ignore[arg-type]
            changed, self._changed = self._changed, None
            if changed is not None:
                changed.set()

        def work() -> None:
            value: T | None = None
            error: BaseException | None = None
            try:
                value = func()
            except BaseException as exc:
                error = exc
            # RuntimeError: the loop closed while the call hung; nobody waits any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(settle, value, error)

        threading.Thread(target=work, name=f"{self.name}:{key}", daemon=True).start()
        return future


def _discarding(discard: Callable[[T], None]) -> Callable[[asyncio.Future[T]], None]:
    def done(future: asyncio.Future[T]) -> None:
        if not future.cancelled() and future.exception() is None:
            discard(future.result())

    return done
