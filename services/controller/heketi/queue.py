"""Following one of Heketi's asynchronous operations on its queue to the end.

A mutating request that Heketi accepts answers `202` with `Location: /queue/<id>`. Polling
that path answers `200` while the operation runs, then once only `303` (see the object),
`204` (done, nothing to see) or an error with Heketi's text; after that the queue no longer
knows the id (`404`). A result lost on the way (a dropped connection) cannot be read again:
`HeketiResultLost` says so, and the queue is never polled again for it.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from services.common.logging import get_logger
from services.controller.heketi.errors import HeketiResultLost, error_for
from services.controller.heketi.http import HeketiHttp, TransportError
from services.controller.heketi.types import ROUTE_ID_RE

_log = get_logger("heketi")

OnProgress = Callable[[float], Awaitable[None] | None]

_POLL_MIN_S = 0.1  # shortest pause between queue polls
# How often a queue poll may fail to connect (the server is restarting?) before the outcome
# is declared unknown.
_POLL_CONNECT_RETRIES = 5


def op_id_from(location: str | None) -> str | None:
    """The operation id of a `202`'s queue Location, or None when it names no queue entry."""
    if not location:
        return None
    path = urlsplit(location).path.rstrip("/")
    head, _, op_id = path.rpartition("/")
    return op_id if head.endswith("/queue") and ROUTE_ID_RE.match(op_id) else None


class QueuePoller:
    """Polls operations of one backend: soon at first, then every ~10 % of the time spent.

    The first poll comes after `initial` s; later ones wait `factor` times the time already
    spent, between 0.1 s and `maximum` s. So a finished operation is seen within about 10 %
    of its length (and its throttling slot freed promptly), and a long one is not polled
    more often than every `maximum` s.
    """

    def __init__(self, http: HeketiHttp, *, initial: float, factor: float,
                 maximum: float) -> None:
        self._http = http
        self._initial = initial
        self._factor = factor
        self._maximum = maximum

    async def wait(self, op_id: str, what: str, on_progress: OnProgress | None) -> str | None:
        """Poll until operation `op_id` ends; return the 303's path (without the URL's
        path prefix), or None for a 204. Raises Heketi's error, or HeketiResultLost."""
        name = self._http.name
        queue_path = f"/queue/{op_id}"
        started = time.monotonic()
        delay = self._initial
        connect_failures = 0
        _log.info("heketi operation started", backend=name, what=what, op_id=op_id)
        while True:
            await asyncio.sleep(delay)
            spent = time.monotonic() - started
            delay = min(self._maximum, max(_POLL_MIN_S, spent * self._factor))
            try:
                answer = await self._http.send("GET", queue_path)
            except TransportError as exc:
                if exc.kind == "connect" and connect_failures < _POLL_CONNECT_RETRIES:
                    # Never reached Heketi, so the result (if any) is still unread.
                    connect_failures += 1
                    continue
                raise self._lost(op_id, what, exc.detail) from None
            connect_failures = 0
            elapsed = time.monotonic() - started
            if answer.status == 200:
                if on_progress is not None:
                    await self._report(on_progress, elapsed)
                continue
            if answer.status in (303, 204):
                location = urlsplit(answer.location or "").path if answer.status == 303 else None
                _log.info("heketi operation finished", backend=name, what=what, op_id=op_id,
                          seconds=round(elapsed, 2), location=location)
                prefix = self._http.prefix
                if location and prefix and location.startswith(prefix + "/"):
                    location = location[len(prefix):]
                return location
            if answer.status == 404:
                raise self._lost(op_id, what, "the queue no longer knows the operation")
            _log.info("heketi operation failed", backend=name, what=what, op_id=op_id,
                      seconds=round(elapsed, 2), status=answer.status)
            raise error_for(name, f"{what} (operation {op_id})", answer.status, answer.text)

    def _lost(self, op_id: str, what: str, detail: str) -> HeketiResultLost:
        name = self._http.name
        _log.warning("heketi operation result lost", backend=name, what=what, op_id=op_id,
                     detail=detail)
        return HeketiResultLost(
            f"Heketi backend {name!r}: {what}: result of operation {op_id} was lost "
            f"({detail}); look the object up to learn the outcome", op_id=op_id)

    async def _report(self, on_progress: OnProgress, elapsed: float) -> None:
        try:
            outcome = on_progress(elapsed)
            if inspect.isawaitable(outcome):
                await outcome
        except Exception as exc:  # a progress hook must not break the operation
            _log.warning("progress callback failed", backend=self._http.name, error=repr(exc))
