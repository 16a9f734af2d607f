"""An asyncio client for Heketi's REST API (one `aiohttp.ClientSession` per backend).

What it takes care of, so that callers do not have to:

- a fresh JWT for every request (admin operations are refused locally when only a user key
  is configured: Heketi lets `iss=user` call nothing but `GET`/`POST /volumes`, and even a
  create needs the admin-only queue to learn its outcome);
- Heketi's asynchronous operations: `202` → poll `/queue/<id>` with backoff → `303` (follow
  it and return the object) / `204` / `500` (raise with Heketi's text). A finished result
  can be read once; if it is lost on the way, `HeketiResultLost` says so and the queue is
  never polled again;
- throttling: at most `max_inflight` mutating operations per backend, each holding its slot
  from the POST until its result is read. A 429 that still arrives lowers the client's own
  limit to what Heketi accepted and is retried after a jittered pause (or Retry-After), at
  most `throttle_retries` times;
- a deadline on every HTTP request, and one on every operation as a whole (queueing for a
  throttling slot, the request, the queue polls): an operation that Heketi keeps "pending"
  beyond it ends like a lost result (`HeketiResultLost`), so its slot and the caller's
  operation key are freed and the caller looks the object up;
- TLS with an optional CA bundle, connection pooling;
- typed exceptions (`errors.py`) whose messages name the backend and quote Heketi.

The HTTP request itself is in `http.py`, the queue poller in `queue.py`, the throttling
limiter in `limiter.py`; this module is the API and how an operation uses the three.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from typing import Any
from urllib.parse import urlsplit

from services.common.logging import get_logger
from services.controller.heketi.errors import (
    HeketiAdminRequired,
    HeketiBadRequest,
    HeketiNotFound,
    HeketiOperationFailed,
    HeketiResultLost,
    HeketiThrottled,
    HeketiTimeout,
    HeketiUnavailable,
    error_for,
)
from services.controller.heketi.http import Answer, HeketiHttp, TransportError
from services.controller.heketi.limiter import OpLimiter
from services.controller.heketi.queue import OnProgress, QueuePoller, op_id_from
from services.controller.heketi.types import (
    ROUTE_ID_RE,
    ClusterInfo,
    DeviceInfo,
    NodeInfo,
    VolumeCreateRequest,
    VolumeInfo,
)
from services.controller.heketi.urls import url_problem
from services.controller.metrics import HEKETI_INFLIGHT, HEKETI_OPERATIONS, HEKETI_THROTTLED

_log = get_logger("heketi")

ADMIN = "admin"

# Attempts to read the object a 303 points to (a plain GET, safe to repeat).
_FOLLOW_ATTEMPTS = 3
_RETRY_AFTER_MAX_S = 60.0


class HeketiClient:
    """One Heketi backend. Use as `async with HeketiClient(...) as c:` or call `close()`.

    `key=None` sends no token (for a Heketi with `use_auth: false`). `requests_sent` counts
    HTTP requests put on the wire (benchmarks read it); `throttled_responses` counts 429s.
    """

    def __init__(
        self,
        url: str,
        user: str = ADMIN,
        key: str | None = None,
        *,
        ca_file: str | None = None,
        max_inflight: int = 8,
        request_timeout: float = 30.0,
        operation_timeout: float = 1800.0,
        name: str = "default",
        poll_initial: float = 0.2,
        poll_factor: float = 0.1,
        poll_max: float = 2.0,
        throttle_retries: int = 6,
        throttle_backoff: float = 0.5,
        throttle_backoff_max: float = 8.0,
        pool_size: int = 32,
    ) -> None:
        problem = url_problem(url)
        if problem is not None:  # the URL is not quoted: it may carry a credential
            raise ValueError(f"the Heketi URL {problem}")
        if max_inflight < 1:
            raise ValueError("max_inflight must be at least 1")
        if request_timeout <= 0 or operation_timeout <= 0:
            raise ValueError("request_timeout and operation_timeout must be positive")
        self.name = name
        self.url = url.rstrip("/")
        self.user = user
        self.max_inflight = max_inflight
        self._operation_timeout = operation_timeout
        self._http = HeketiHttp(url, user, key, name=name, ca_file=ca_file,
                                request_timeout=request_timeout, pool_size=pool_size)
        self._poller = QueuePoller(self._http, initial=poll_initial, factor=poll_factor,
                                   maximum=poll_max)
        self._throttle_retries = throttle_retries
        self._throttle_backoff = throttle_backoff
        self._throttle_backoff_max = throttle_backoff_max
        self._limiter = OpLimiter(max_inflight)
        HEKETI_INFLIGHT.labels(name).set_function(lambda: self._limiter.in_use)
        self.throttled_responses = 0

    @property
    def requests_sent(self) -> int:
        """HTTP requests put on the wire (benchmarks read it)."""
        return self._http.requests_sent

    def __repr__(self) -> str:
        return (f"HeketiClient(name={self.name!r}, url={self.url!r}, "
                f"key={'<set>' if self._http.signs else None}, "
                f"max_inflight={self.max_inflight})")

    # --- lifetime --------------------------------------------------------------------
    async def __aenter__(self) -> HeketiClient:
        self._http.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.close()

    # --- one HTTP request ------------------------------------------------------------
    async def _call(self, method: str, path: str, body: Any = None, *, what: str,
                    auth: bool = True, mutating: bool = False) -> Answer:
        """One request, with transport failures turned into the client's exceptions.

        A read (never a queue poll: see `queue.py`) that finds its pooled connection closed by
        the server is sent once more; a mutating request never is, since it may have
        reached Heketi.
        """
        attempts = 1 if mutating else 2
        for attempt in range(1, attempts + 1):
            try:
                return await self._http.send(method, path, body, auth=auth)
            except TransportError as exc:
                if exc.kind == "dropped" and attempt < attempts:
                    continue
                raise self._transport_failure(exc, what, mutating) from None
        raise AssertionError("unreachable")

    def _transport_failure(self, exc: TransportError, what: str,
                           mutating: bool) -> HeketiUnavailable | HeketiTimeout:
        maybe = "; the operation may have started" if mutating and exc.kind != "connect" else ""
        message = f"Heketi backend {self.name!r}: {what}: {exc.detail}{maybe}"
        if exc.kind == "timeout":
            return HeketiTimeout(message)
        return HeketiUnavailable(message)

    async def _get_json(self, path: str, what: str) -> Any:
        answer = await self._call("GET", path, what=what)
        if answer.status != 200:
            raise error_for(self.name, what, answer.status, answer.text)
        try:
            return json.loads(answer.text)
        except ValueError:
            raise HeketiOperationFailed(
                f"Heketi backend {self.name!r}: {what}: answer is not JSON") from None

    def _require_admin(self, what: str) -> None:
        if self._http.signs and self.user != ADMIN:
            raise HeketiAdminRequired(
                f"Heketi backend {self.name!r}: {what} needs the admin key, but the "
                "credentials name another user; Heketi lets a user-level key only list and "
                "create volumes, and a create cannot be followed without the admin-only queue")

    def _check_id(self, object_id: str, kind: str) -> None:
        if not ROUTE_ID_RE.match(object_id):
            raise HeketiNotFound(
                f"Heketi backend {self.name!r}: {kind} id {object_id!r} is not a Heketi id")

    # --- asynchronous operations -----------------------------------------------------
    async def _operation(self, method: str, path: str, body: Any, *, what: str,
                         on_progress: OnProgress | None) -> str | None:
        """`_run_operation`, timed for the operation metrics."""
        kind = "delete" if method == "DELETE" else path.rsplit("/", 1)[-1]
        kind = kind if kind in ("expand", "clone") else ("create" if method == "POST" else kind)
        started = time.monotonic()
        outcome = "error"
        try:
            result = await self._run_operation(method, path, body, what=what,
                                               on_progress=on_progress)
            outcome = "ok"
            return result
        finally:
            HEKETI_OPERATIONS.labels(self.name, kind, outcome).observe(
                time.monotonic() - started)

    async def _run_operation(self, method: str, path: str, body: Any, *, what: str,
                             on_progress: OnProgress | None) -> str | None:
        """`_until_done` within the operation deadline; past it, `HeketiResultLost`."""
        self._require_admin(what)
        accepted: list[str] = []  # the queue's operation id, once Heketi took the request
        deadline = asyncio.timeout(self._operation_timeout)
        try:
            async with deadline:
                return await self._until_done(method, path, body, what, on_progress, accepted)
        except TimeoutError:
            if not deadline.expired():
                raise
            op_id = accepted[0] if accepted else ""
            where = f"operation {op_id}" if op_id else "no operation id seen"
            _log.warning("heketi operation past its deadline", backend=self.name, what=what,
                         op_id=op_id or None, seconds=self._operation_timeout)
            raise HeketiResultLost(
                f"Heketi backend {self.name!r}: {what}: did not finish within "
                f"{self._operation_timeout:g} s ({where}); look the object up to learn the "
                "outcome", op_id=op_id) from None

    async def _until_done(self, method: str, path: str, body: Any, what: str,
                          on_progress: OnProgress | None, accepted: list[str]) -> str | None:
        """Run one asynchronous operation to its end; return the 303's path, or None.

        Holds a throttling slot from the request until the queue says the operation is
        done. A 429 gives the slot back before pausing, and the retry queues in front.
        """
        throttled = 0
        while True:
            await self._limiter.acquire(front=throttled > 0)
            pause: float | None = None
            try:
                answer = await self._call(method, path, body, what=what, mutating=True)
                if answer.status == 429:
                    throttled += 1
                    self.throttled_responses += 1
                    HEKETI_THROTTLED.labels(self.name).inc()
                    self._limiter.throttled()
                    if throttled >= self._throttle_retries:
                        raise HeketiThrottled(
                            f"Heketi backend {self.name!r}: {what}: still busy after "
                            f"{throttled} tries (HTTP 429: {answer.text.strip()})")
                    pause = self._throttle_pause(throttled, answer.retry_after)
                    _log.info("heketi busy; retrying", backend=self.name, what=what,
                              attempt=throttled, pause_s=round(pause, 2),
                              limit=self._limiter.limit)
                elif answer.status == 202:
                    op_id = op_id_from(answer.location)
                    if op_id is None:
                        raise HeketiOperationFailed(
                            f"Heketi backend {self.name!r}: {what}: 202 without a queue "
                            f"Location (got {answer.location!r})")
                    accepted.append(op_id)
                    self._limiter.succeeded()
                    self._limiter.accepted += 1
                    try:
                        return await self._poller.wait(op_id, what, on_progress)
                    finally:
                        self._limiter.accepted -= 1
                elif answer.status in (200, 201, 204):
                    return None
                elif answer.status == 303:
                    return urlsplit(answer.location or "").path or None
                else:
                    raise error_for(self.name, what, answer.status, answer.text)
            finally:
                self._limiter.release()
            if pause is not None:
                await asyncio.sleep(pause)

    def _throttle_pause(self, attempt: int, retry_after: str | None) -> float:
        if retry_after:
            with contextlib.suppress(ValueError):
                return min(float(retry_after), _RETRY_AFTER_MAX_S) + random.uniform(0, 0.5)
        ceiling = min(self._throttle_backoff_max, self._throttle_backoff * 2 ** (attempt - 1))
        return random.uniform(ceiling / 2, ceiling)

    async def _follow_volume(self, location: str | None, what: str) -> VolumeInfo:
        """Read the volume a finished operation points to (a plain GET: safe to repeat)."""
        if not location or not location.startswith("/volumes/"):
            raise HeketiOperationFailed(
                f"Heketi backend {self.name!r}: {what}: finished without a volume "
                f"location (got {location!r})")
        for attempt in range(1, _FOLLOW_ATTEMPTS + 1):
            try:
                return VolumeInfo.from_json(await self._get_json(location, what))
            except (HeketiUnavailable, HeketiTimeout) as exc:
                if attempt == _FOLLOW_ATTEMPTS:
                    op_hint = location.rsplit("/", 1)[-1]
                    raise HeketiResultLost(
                        f"Heketi backend {self.name!r}: {what}: finished, but {location} "
                        f"could not be read ({exc.message})",
                        op_id=op_hint, location=location) from None
                await asyncio.sleep(0.2 * attempt)
        raise AssertionError("unreachable")

    # --- the API ---------------------------------------------------------------------
    async def hello(self) -> str:
        """`GET /hello` (no auth): Heketi's liveness answer."""
        answer = await self._call("GET", "/hello", what="GET /hello", auth=False)
        if answer.status != 200:
            raise error_for(self.name, "GET /hello", answer.status, answer.text)
        return answer.text

    async def create_volume(self, req: VolumeCreateRequest, *,
                            on_progress: OnProgress | None = None) -> VolumeInfo:
        req.validate()
        what = f"create volume {req.name!r}" if req.name else "create volume"
        location = await self._operation("POST", "/volumes", req.to_json(), what=what,
                                         on_progress=on_progress)
        return await self._follow_volume(location, what)

    async def volume_info(self, volume_id: str) -> VolumeInfo:
        self._check_id(volume_id, "volume")
        self._require_admin("read volume")
        path = f"/volumes/{volume_id}"
        return VolumeInfo.from_json(await self._get_json(path, f"GET {path}"))

    async def list_volume_ids(self) -> list[str]:
        data = await self._get_json("/volumes", "GET /volumes")
        ids = data.get("volumes") if isinstance(data, dict) else None
        if ids is None:
            return []
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise HeketiOperationFailed(
                f"Heketi backend {self.name!r}: GET /volumes: 'volumes' is not a list of ids")
        return list(ids)

    async def delete_volume(self, volume_id: str, *,
                            on_progress: OnProgress | None = None) -> None:
        """Delete a volume; `HeketiNotFound` when Heketi does not know it (already gone)."""
        self._check_id(volume_id, "volume")
        await self._operation("DELETE", f"/volumes/{volume_id}", None,
                              what=f"delete volume {volume_id}", on_progress=on_progress)

    async def expand_volume(self, volume_id: str, add_gib: int, *,
                            on_progress: OnProgress | None = None) -> VolumeInfo:
        """Grow a volume by `add_gib` GiB (Heketi adds bricks); returns the new info."""
        self._check_id(volume_id, "volume")
        if isinstance(add_gib, bool) or not isinstance(add_gib, int) or add_gib < 1:
            raise HeketiBadRequest(f"expand size must be a whole number of GiB >= 1, "
                                   f"not {add_gib!r}")
        what = f"expand volume {volume_id} by {add_gib} GiB"
        location = await self._operation("POST", f"/volumes/{volume_id}/expand",
                                         {"expand_size": add_gib}, what=what,
                                         on_progress=on_progress)
        return await self._follow_volume(location, what)

    async def clone_volume(self, volume_id: str, name: str | None = None, *,
                           on_progress: OnProgress | None = None) -> VolumeInfo:
        """Clone a volume (Heketi snapshots it and clones the snapshot into a new volume)."""
        self._check_id(volume_id, "volume")
        if name is not None:
            VolumeCreateRequest(size_gib=1, name=name).validate()
        what = f"clone volume {volume_id}" + (f" as {name!r}" if name else "")
        body = {"name": name} if name else {}
        location = await self._operation("POST", f"/volumes/{volume_id}/clone", body,
                                         what=what, on_progress=on_progress)
        return await self._follow_volume(location, what)

    async def list_cluster_ids(self) -> list[str]:
        self._require_admin("list clusters")
        data = await self._get_json("/clusters", "GET /clusters")
        ids = data.get("clusters") if isinstance(data, dict) else None
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise HeketiOperationFailed(
                f"Heketi backend {self.name!r}: GET /clusters: 'clusters' is not a list of ids")
        return list(ids)

    async def cluster_info(self, cluster_id: str) -> ClusterInfo:
        self._check_id(cluster_id, "cluster")
        self._require_admin("read cluster")
        path = f"/clusters/{cluster_id}"
        return ClusterInfo.from_json(await self._get_json(path, f"GET {path}"))

    async def node_info(self, node_id: str) -> NodeInfo:
        self._check_id(node_id, "node")
        self._require_admin("read node")
        path = f"/nodes/{node_id}"
        return NodeInfo.from_json(await self._get_json(path, f"GET {path}"))

    async def device_info(self, device_id: str) -> DeviceInfo:
        self._check_id(device_id, "device")
        self._require_admin("read device")
        path = f"/devices/{device_id}"
        return DeviceInfo.from_json(await self._get_json(path, f"GET {path}"))
