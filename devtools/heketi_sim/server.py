"""The Heketi simulator: an aiohttp server speaking Heketi v10's REST API.

Start it in-process (`async with HeketiSimulator(admin_key=...) as sim: sim.url`) or as a
process (`python -m devtools.heketi_sim`). What it reproduces, with Heketi's texts:
JWT checks, asynchronous operations through `/queue/<id>` with one-shot results, throttling
(429 beyond `max_inflight` running operations), synchronous allocation failures, name
clashes, the per-cluster volume limit, pending volumes hidden from reads, maintenance mode.
Fault injection (latency, failures, dropped results, hanging, going offline) is available as methods
and, for the separate-process mode, as admin-only routes under `/_sim/`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import socket
import ssl
import sys
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from devtools.heketi_sim import jwtcheck, pending, statefile, states
from devtools.heketi_sim.gluster_backend import GlusterBackend
from devtools.heketi_sim.latency import REALISTIC
from devtools.heketi_sim.model import BRICK_MIN_KIB, GIB_KIB, NoSpace, Topology, Volume, new_id
from devtools.heketi_sim.node_health import HEKETI_INTERVAL, HEKETI_START_DELAY, NodeHealthMonitor
from devtools.heketi_sim.pending import PendingOp
from devtools.heketi_sim.pool_backend import PoolBackend, PoolBackendError, pool_hosts

MUTATING_KINDS = ("create", "delete", "expand", "clone")
FAULT_KINDS = (*MUTATING_KINDS, "get", "queue")
_NO_AUTH_PATHS = ("/hello", "/metrics")
_ID = "{id:[A-Fa-f0-9]+}"
_VOLUME_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")
_BUSY_TEXT = "Server busy. Retry operation later."
_CONFLICT_TEXT = "The target exists, contains other items, or is in use."
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _log(line: str) -> None:
    print(f"heketi-sim: {line}", file=sys.stderr, flush=True)


def text_response(status: int, text: str) -> web.Response:
    """Go's http.Error: plain text with a trailing newline."""
    resp = web.Response(status=status, text=text + "\n", content_type="text/plain",
                        charset="utf-8")
    resp.headers["X-Content-Type-Options"] = "nosniff"
    return resp


def json_response(body: Any) -> web.Response:
    return web.Response(status=200, text=json.dumps(body) + "\n",
                        content_type="application/json", charset="UTF-8")


@dataclass
class FailRule:
    """Answer the next `count` matching requests with `status`/`text`.

    With `on_queue`, a matching operation is accepted (202) and then fails on the queue,
    changing nothing, after its latency.
    """

    count: int
    status: int = 500
    text: str = "simulated failure"
    kinds: tuple[str, ...] = MUTATING_KINDS
    on_queue: bool = False


_QUEUE_FAILURE = web.RequestKey("queue_failure", FailRule)


@dataclass
class Operation:
    id: str
    kind: str
    done: bool = False
    location: str | None = None
    error: str | None = None
    status: int = 500


@dataclass
class SimConfig:
    admin_key: str = "admin-secret"
    user_key: str = "user-secret"
    use_auth: bool = True
    host: str = "127.0.0.1"
    port: int = 0
    max_inflight: int = 8
    # seconds each asynchronous operation takes (latency.py: REALISTIC, or INSTANT for the
    # fast tests, which ask for it by name)
    op_latency: float = REALISTIC
    retry_after: int | None = None  # seconds to send with a 429 (Heketi sends none)
    clusters: int = 1
    nodes: int = 3
    devices_per_node: int = 3
    device_size_gib: int = 1024
    max_volumes_per_cluster: int = 1000
    iat_leeway: int = 120
    clone_requires_snapshot: bool = True
    # Heketi v10 refuses a clashing name synchronously (500 from POST /volumes); older
    # versions reported it on the queue. True gives the older behaviour.
    name_clash_on_queue: bool = False
    tls_cert: Path | None = None  # serve HTTPS with this certificate chain and key
    tls_key: Path | None = None
    glusterd: bool = False
    brick_root: Path | None = None
    # Glusterd mode: each brick on an XFS file system of the volume's size (brick_fs.py).
    # False: plain directory bricks, and every volume reports the host disk's size.
    sized_bricks: bool = True
    # Every node's storage hostname (the nodes stay distinct: own ids, manage names and
    # zones, so placement rules hold). Glusterd mode defaults it to socket.gethostname().
    storage_host: str | None = None
    # Pool mode (pool_backend.py): volumes made across the servers of this gluster pool.
    gluster_pool: str | None = None
    # State file (statefile.py): the topology, volumes and pending operations survive a
    # kill and restart as in Heketi's BoltDB (memory mode only). None: nothing is kept.
    db: Path | None = None
    # Heketi's background cleaner of stale pending operations (with `db`): seconds after
    # start, then between runs (Heketi's start_time_/refresh_time_background_cleaner)
    cleaner_start_s: float = 60.0
    cleaner_refresh_s: float = 3600.0
    # Pool mode: Heketi's node health monitor (node_health.py), its first check and period.
    health_start: float = HEKETI_START_DELAY
    health_interval: float = HEKETI_INTERVAL


@dataclass
class Stats:
    request_counts: Counter[str] = field(default_factory=Counter)
    throttled: int = 0
    max_inflight_seen: int = 0
    ops_started: Counter[str] = field(default_factory=Counter)
    results_dropped: int = 0


class HeketiSimulator:
    """A Heketi v10 look-alike. See the module docstring and README.md."""

    def __init__(self, config: SimConfig | None = None, **overrides: Any) -> None:
        cfg = dataclasses.replace(config or SimConfig(), **overrides)
        if cfg.glusterd and cfg.brick_root is None:
            raise ValueError("glusterd mode needs brick_root")
        if cfg.db is not None and (cfg.glusterd or cfg.gluster_pool):
            raise ValueError("a state file (db) is for the in-memory simulator only: its "
                             "gluster volumes would not survive a restart with it")
        self.config = cfg
        hosts = None
        if cfg.glusterd or cfg.storage_host:
            hosts = [cfg.storage_host or socket.gethostname()]
        if cfg.gluster_pool:
            hosts = pool_hosts(cfg.gluster_pool)
        self.topology = Topology.build(
            clusters=cfg.clusters, nodes=cfg.nodes, devices_per_node=cfg.devices_per_node,
            device_size_gib=cfg.device_size_gib, storage_hosts=hosts)
        self.gluster = GlusterBackend(cfg.brick_root, sized=cfg.sized_bricks) \
            if cfg.glusterd and cfg.brick_root else None
        self.health: NodeHealthMonitor | None = None
        if cfg.gluster_pool:
            self.gluster = PoolBackend(cfg.gluster_pool, self.topology)
            self.health = NodeHealthMonitor(self.topology, cfg.health_start,
                                            cfg.health_interval, log=_log)
        self.stats = Stats()
        self.queue: dict[str, Operation] = {}
        self.inflight = 0
        self.pending: dict[str, PendingOp] = {}  # Heketi's pending operation entries
        self._save_lock = asyncio.Lock()
        # fault injection
        self.latency: dict[str, float] = {}
        self._configured_latency = cfg.op_latency  # what reset_faults() returns to
        self.holds: dict[str, asyncio.Event] = {}  # kind -> released when set (see hold)
        self.fail_rules: list[FailRule] = []
        self.drop_results = 0
        # Heketi's admin state (POST /admin): normal, read-only (every request but GET and
        # HEAD answers 503, POST /admin too: only a restart ends it) or local-client (only
        # loopback clients may change anything)
        self.admin_state = "normal"
        self.offline = False
        self.answering = asyncio.Event()  # cleared by hang(): requests wait, unanswered
        self.answering.set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._runner: web.AppRunner | None = None
        self._port = cfg.port
        self._online_timer: asyncio.TimerHandle | None = None

    # --- lifetime --------------------------------------------------------------------
    @property
    def url(self) -> str:
        scheme = "https" if self.config.tls_cert else "http"
        return f"{scheme}://{self.config.host}:{self._port}"

    @property
    def port(self) -> int:
        return self._port

    @property
    def request_counts(self) -> Counter[str]:
        return self.stats.request_counts

    async def start(self) -> None:
        if self.gluster is not None:
            await self.gluster.start()
        if self.config.db is not None:
            await self._load_db(self.config.db)
        await self._listen()
        if self.health is not None:
            self.health.start()

    async def _load_db(self, path: Path) -> None:
        """Heketi's start on an existing BoltDB: every pending operation left is stale
        (ServerReset), a warning says so, and the background cleaner starts."""
        loaded = await asyncio.to_thread(statefile.read, path)
        if loaded is not None:
            self.topology, ops = loaded
            for op in ops:
                op.status = pending.STALE
            self.pending = {op.id: op for op in ops}
            if ops:
                print(f"heketi-sim: WARNING: {pending.STARTUP_WARNING}", file=sys.stderr,
                      flush=True)
        await self._persist()
        self._spawn(self._background_cleaner())

    async def _persist(self) -> None:
        """Write the state file (with `db`): the state as it is when the write begins."""
        path = self.config.db
        if path is None:
            return
        async with self._save_lock:
            text = statefile.dumps(self.topology, list(self.pending.values()))
            await asyncio.to_thread(statefile.write, path, text)

    async def _background_cleaner(self) -> None:
        await asyncio.sleep(self.config.cleaner_start_s)
        while True:
            await self.clean_stale()
            await asyncio.sleep(self.config.cleaner_refresh_s)

    async def clean_stale(self, ids: set[str] | None = None) -> int:
        """Roll back the stale operations (those of `ids`, or all), as Heketi's cleaner."""
        cleaned = 0
        for op in sorted(self.pending.values(), key=lambda o: o.id):
            if op.status == pending.STALE and (not ids or op.id in ids):
                pending.clean(self.topology, op)
                del self.pending[op.id]
                cleaned += 1
        if cleaned:
            await self._persist()
        return cleaned

    async def close(self) -> None:
        if self._online_timer is not None:
            self._online_timer.cancel()
        await self._stop_listening()
        if self.health is not None:
            await self.health.stop()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.gluster is not None:
            await self.gluster.delete_all()

    async def __aenter__(self) -> HeketiSimulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _listen(self) -> None:
        runner = web.AppRunner(self._make_app(), shutdown_timeout=0.5, access_log=None)
        await runner.setup()
        tls = None
        if self.config.tls_cert:
            tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            tls.load_cert_chain(self.config.tls_cert, self.config.tls_key)
        site = web.TCPSite(runner, self.config.host, self._port, reuse_address=True,
                           ssl_context=tls)
        await site.start()
        self._runner = runner
        server = site._server  # the bound socket tells which port port=0 got
        if self._port == 0 and server is not None:
            sockets = getattr(server, "sockets", None) or []
            self._port = sockets[0].getsockname()[1]

    async def _stop_listening(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    # --- fault injection -------------------------------------------------------------
    def set_latency(self, seconds: float, kind: str | None = None) -> None:
        """Seconds each asynchronous operation (of `kind`, or all) takes before it ends."""
        if kind is None:
            self.config.op_latency = seconds
            self.latency.clear()
        else:
            self._check_kind(kind, MUTATING_KINDS)
            self.latency[kind] = seconds

    def hold(self, kind: str) -> asyncio.Event:
        """Keep operations of `kind` that start from now on pending (after their latency) until
        the returned event is set: a test acts while one is in progress, without timing it."""
        self._check_kind(kind, MUTATING_KINDS)
        if kind not in self.holds or self.holds[kind].is_set():
            self.holds[kind] = asyncio.Event()
        return self.holds[kind]

    def fail_next(self, count: int = 1, status: int = 500, text: str = "simulated failure",
                  *, kinds: tuple[str, ...] | list[str] = MUTATING_KINDS,
                  on_queue: bool = False) -> None:
        """Fail the next `count` requests of these kinds (see FailRule)."""
        for kind in kinds:
            self._check_kind(kind, FAULT_KINDS)
        self.fail_rules.append(FailRule(count, status, text, tuple(kinds), on_queue))

    def drop_next_results(self, count: int = 1) -> None:
        """Drop the connection while answering the next `count` finished queue results.

        The result is consumed, as in Heketi when the answer is lost on the wire: a later
        poll answers 404 `Id not found`.
        """
        self.drop_results += count

    def set_maintenance(self, on: bool = True) -> None:
        """Heketi's read-only admin state: POST/DELETE answer 503, reads still work."""
        self.admin_state = "read-only" if on else "normal"

    @property
    def maintenance(self) -> bool:
        return self.admin_state == "read-only"

    async def go_offline(self, seconds: float | None = None) -> None:
        """Close the listener and every connection (clients get connection refused).

        Running operations carry on. With `seconds`, come back online after that long.
        """
        self.offline = True
        await self._stop_listening()
        if seconds is not None:
            loop = asyncio.get_running_loop()
            self._online_timer = loop.call_later(
                seconds, lambda: self._spawn(self.go_online()))

    def hang(self, on: bool = True) -> None:
        """A Heketi that accepts connections and reads requests but never answers them (a
        hung process, a stuck database): every request but /_sim/ waits until `hang(False)`,
        then is served. Unlike go_offline, connecting succeeds."""
        if on:
            self.answering.clear()
        else:
            self.answering.set()

    async def go_online(self) -> None:
        if self._runner is None:
            await self._listen()
        self.offline = False

    def reset_faults(self) -> None:
        self.config.op_latency = self._configured_latency
        self.latency.clear()
        self.fail_rules.clear()
        self.drop_results = 0
        self.admin_state = "normal"
        self.answering.set()

    @staticmethod
    def _check_kind(kind: str, allowed: tuple[str, ...]) -> None:
        if kind not in allowed:
            raise ValueError(f"unknown operation kind {kind!r}; use one of {allowed}")

    def _take_failure(self, kind: str) -> FailRule | None:
        for rule in self.fail_rules:
            if rule.count > 0 and kind in rule.kinds:
                rule.count -= 1
                if rule.count == 0:
                    self.fail_rules.remove(rule)
                return rule
        return None

    def add_volume_now(self, name: str, size_gib: int = 1) -> Volume:
        """A replicate-3 volume placed and finished at once, without a request or a queue
        (for tests and benchmarks that need many volumes present). Not in glusterd mode:
        it makes no real gluster volume."""
        if self.gluster is not None:
            raise ValueError("add_volume_now makes no real gluster volume; use the API")
        volume, error = self._build_volume({"name": name, "size": size_gib,
                                            "durability": {"type": "replicate",
                                                           "replicate": {"replica": 3}}})
        if volume is None:
            raise ValueError(error)
        volume.pending = None
        return volume

    # --- inspection ------------------------------------------------------------------
    def volume_by_name(self, name: str) -> Volume | None:
        for volume in self.topology.volumes.values():
            if volume.name == name:
                return volume
        return None

    def visible_volumes(self) -> list[Volume]:
        return [v for v in self.topology.volumes.values() if v.visible]

    def stats_json(self) -> dict[str, Any]:
        return {
            "request_counts": dict(self.stats.request_counts),
            "throttled": self.stats.throttled,
            "max_inflight_seen": self.stats.max_inflight_seen,
            "inflight": self.inflight,
            "op_latency": self.config.op_latency,
            "ops_started": dict(self.stats.ops_started),
            "results_dropped": self.stats.results_dropped,
            "volumes": len(self.visible_volumes()),
            # pool mode: what the node health monitor last found (null: not checked yet)
            "nodes_up": {n.storage: n.up for n in self.topology.nodes.values()}
            if self.health is not None else {},
        }

    # --- the application -------------------------------------------------------------
    def _make_app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware])
        r = app.router
        r.add_get("/hello", self._hello)
        r.add_get("/metrics", self._metrics)
        r.add_get("/clusters", self._cluster_list)
        r.add_get(f"/clusters/{_ID}", self._cluster_info)
        r.add_get(f"/nodes/{_ID}", self._node_info)
        r.add_get(f"/devices/{_ID}", self._device_info)
        r.add_post(f"/nodes/{_ID}/state", self._node_state)
        r.add_post(f"/devices/{_ID}/state", self._device_state)
        r.add_get("/volumes", self._volume_list)
        r.add_post("/volumes", self._volume_create)
        r.add_get(f"/volumes/{_ID}", self._volume_info)
        r.add_delete(f"/volumes/{_ID}", self._volume_delete)
        r.add_post(f"/volumes/{_ID}/expand", self._volume_expand)
        r.add_post(f"/volumes/{_ID}/clone", self._volume_clone)
        r.add_get(f"/queue/{_ID}", self._queue)
        r.add_get("/operations", self._operations_info)
        r.add_get("/operations/pending", self._pending_list)
        r.add_get(f"/operations/pending/{_ID}", self._pending_details)
        r.add_post("/operations/pending/cleanup", self._pending_cleanup)
        r.add_get("/admin", self._admin_get)
        r.add_post("/admin", self._admin_set)
        r.add_get("/_sim/stats", self._sim_stats)
        r.add_post("/_sim/faults", self._sim_faults)
        return app

    @staticmethod
    def _route_key(request: web.Request) -> str:
        route = request.match_info.route
        resource = route.resource
        template = resource.canonical if resource is not None else request.path
        return f"{request.method} {template.replace(_ID, '{id}')}"

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        path = request.path
        if not path.startswith("/_sim/"):
            self.stats.request_counts[self._route_key(request)] += 1
        if self.config.use_auth and path not in _NO_AUTH_PATHS:
            verdict = jwtcheck.check(
                request.headers.get("Authorization"), request.method, path,
                {"admin": self.config.admin_key, "user": self.config.user_key},
                iat_leeway=self.config.iat_leeway)
            if isinstance(verdict, jwtcheck.AuthFailure):
                return text_response(verdict.status, verdict.text)
        if path.startswith("/_sim/"):
            return await handler(request)
        await self.answering.wait()
        if not self._admin_allows(request):
            return text_response(503, "Service disabled for maintenance")
        kind = self._kind(request)
        if kind is not None:
            rule = self._take_failure(kind)
            if rule is not None:
                if rule.on_queue and kind in MUTATING_KINDS:
                    request[_QUEUE_FAILURE] = rule
                else:
                    return text_response(rule.status, rule.text)
        try:
            return await handler(request)
        except web.HTTPNotFound:
            return text_response(404, "Invalid path or request")
        except web.HTTPMethodNotAllowed:
            return web.Response(status=405)  # gorilla/mux: no body

    def _admin_allows(self, request: web.Request) -> bool:
        """Heketi's ServerState.AllowRequest."""
        if self.admin_state == "normal" or request.method in ("GET", "HEAD"):
            return True
        if self.admin_state == "local-client":
            return request.remote in ("127.0.0.1", "::1")
        return False

    async def _admin_get(self, _request: web.Request) -> web.StreamResponse:
        return json_response({"state": self.admin_state})

    async def _admin_set(self, request: web.Request) -> web.StreamResponse:
        msg = await _read_json(request)
        if not isinstance(msg, dict):
            return text_response(400, "request unable to be parsed")
        state = msg.get("state")
        if not state:
            return text_response(400, "validation failed: state: cannot be blank.")
        if state not in ("normal", "read-only", "local-client"):
            return text_response(400, "validation failed: state: must be a valid value.")
        self.admin_state = state
        return web.Response(status=204)

    @staticmethod
    def _kind(request: web.Request) -> str | None:
        path, method = request.path, request.method
        if path in _NO_AUTH_PATHS:
            return None
        if method == "GET":
            return "queue" if path.startswith("/queue/") else "get"
        if method == "DELETE" and path.startswith("/volumes/"):
            return "delete"
        if method == "POST":
            if path == "/volumes":
                return "create"
            if path.endswith("/expand"):
                return "expand"
            if path.endswith("/clone"):
                return "clone"
        return None

    # --- asynchronous operations -----------------------------------------------------
    def _throttled(self) -> web.Response | None:
        if self.inflight < self.config.max_inflight:
            return None
        self.stats.throttled += 1
        resp = text_response(429, _BUSY_TEXT)
        if self.config.retry_after is not None:
            resp.headers["Retry-After"] = str(self.config.retry_after)
        return resp

    async def _start(self, request: web.Request, kind: str,
                     work: Callable[[], Awaitable[str | None]],
                     rollback: Callable[[], Awaitable[None]], *, counted: bool = True,
                     latency: float | None = None,
                     record: PendingOp | None = None) -> web.Response:
        """Register an accepted operation, run `work` after the latency, answer 202.

        `record` is the operation's pending entry (volume operations): kept while it runs,
        written to the state file before the 202, dropped when the operation ends.

        `work` returns the location for a 303 (or None for 204) and raises on failure;
        `rollback` undoes the synchronous part (allocation) when the operation fails.
        An operation not `counted` does not take a throttle slot (Heketi's cheap state
        changes).
        """
        op = Operation(new_id(), kind)
        self.queue[op.id] = op
        if record is not None:
            self.pending[record.id] = record
        slots = 1 if counted else 0
        self.inflight += slots
        self.stats.max_inflight_seen = max(self.stats.max_inflight_seen, self.inflight)
        self.stats.ops_started[kind] += 1
        failure = request.get(_QUEUE_FAILURE)
        if latency is None:
            latency = self.latency.get(kind, self.config.op_latency)
        held = self.holds.get(kind)

        async def undo() -> None:
            try:
                await rollback()
            except Exception as exc:  # the operation's own error is what the client sees
                op.error = f"{op.error}; cleaning up failed too: {exc}"

        async def run() -> None:
            try:
                try:
                    if latency > 0:
                        await asyncio.sleep(latency)
                    if held is not None:
                        await held.wait()
                    if failure is not None:
                        raise _OpFailed(failure.status, failure.text)
                    op.location = await work()
                except _OpFailed as exc:
                    op.error, op.status = exc.text, exc.status
                    await undo()
                except asyncio.CancelledError:
                    op.error = "simulator shut down"  # its pending entry stays, as in Heketi
                    raise
                except Exception as exc:
                    op.error = str(exc) or type(exc).__name__
                    await undo()
                if record is not None:
                    self.pending.pop(record.id, None)
                try:
                    await self._persist()  # the result shows once it is in the file
                except OSError as exc:
                    op.error = f"cannot write the state file: {exc}"
            finally:
                # Heketi frees the throttle slot when the operation ends, before the
                # result is read; the result then waits in the queue.
                self.inflight -= slots
                op.done = True

        self._spawn(run())
        await self._persist()  # Heketi commits its Build step before the 202
        resp = web.Response(status=202)
        resp.headers["Location"] = f"/queue/{op.id}"
        return resp

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _queue(self, request: web.Request) -> web.StreamResponse:
        op = self.queue.get(request.match_info["id"])
        if op is None:
            return text_response(404, "Id not found")
        if not op.done:
            resp = web.Response(status=200)
            resp.headers["X-Pending"] = "true"
            return resp
        del self.queue[op.id]  # one-shot
        if self.drop_results > 0:
            self.drop_results -= 1
            self.stats.results_dropped += 1
            transport = request.transport
            if transport is not None:
                transport.abort()
            raise _Dropped()
        if op.error is not None:
            return text_response(op.status, op.error)
        if op.location is None:
            return web.Response(status=204)
        resp = web.Response(status=303, text=f'<a href="{op.location}">See Other</a>.\n\n',
                            content_type="text/html", charset="utf-8")
        resp.headers["Location"] = op.location
        return resp

    # --- plain routes ----------------------------------------------------------------
    async def _hello(self, request: web.Request) -> web.StreamResponse:
        return web.Response(text="Hello from Heketi", content_type="text/plain",
                            charset="UTF-8")

    async def _metrics(self, request: web.Request) -> web.StreamResponse:
        topo = self.topology
        lines = ["# TYPE heketi_up gauge", "heketi_up 1",
                 "# TYPE heketi_cluster_count gauge",
                 f"heketi_cluster_count {len(topo.clusters)}"]
        for cluster in topo.clusters.values():
            count = sum(1 for v in cluster.volumes if topo.volumes.get(v, None) is not None)
            lines.append(f'heketi_volumes_count{{cluster="{cluster.id}"}} {count}')
        return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")

    async def _cluster_list(self, request: web.Request) -> web.StreamResponse:
        return json_response({"clusters": sorted(self.topology.clusters)})

    async def _cluster_info(self, request: web.Request) -> web.StreamResponse:
        cluster = self.topology.clusters.get(request.match_info["id"])
        if cluster is None:
            return text_response(404, "Id not found")
        return json_response(self.topology.cluster_json(cluster))

    async def _node_info(self, request: web.Request) -> web.StreamResponse:
        node = self.topology.nodes.get(request.match_info["id"])
        if node is None:
            return text_response(404, "Id not found")
        return json_response(self.topology.node_json(node))

    async def _device_info(self, request: web.Request) -> web.StreamResponse:
        device = self.topology.devices.get(request.match_info["id"])
        if device is None:
            return text_response(404, "Id not found")
        return json_response(self.topology.device_json(device))

    async def _volume_list(self, request: web.Request) -> web.StreamResponse:
        # Heketi leaves out volumes being created, deleted or made by a clone, but lists a
        # clone's source (its MapPendingVolumes), which GET /volumes/{id} hides.
        listed = (v.id for v in self.topology.volumes.values()
                  if v.pending in (None, "clone-source"))
        return json_response({"volumes": sorted(listed)})

    async def _volume_info(self, request: web.Request) -> web.StreamResponse:
        volume = self.topology.volumes.get(request.match_info["id"])
        if volume is None or not volume.visible:
            return text_response(404, "Id not found")
        return json_response(self.topology.volume_json(volume))

    # --- pending operations (pending.py) ---------------------------------------------
    async def _operations_info(self, request: web.Request) -> web.StreamResponse:
        return json_response(pending.counts(list(self.pending.values()), self.inflight))

    async def _pending_list(self, request: web.Request) -> web.StreamResponse:
        ops = sorted(self.pending.values(), key=lambda o: o.id)
        return json_response({"pendingoperations": [
            op.info(op.status == pending.NEW) for op in ops]})

    async def _pending_details(self, request: web.Request) -> web.StreamResponse:
        op_id = request.match_info["id"]
        op = self.pending.get(op_id)
        if op is None:
            return text_response(404, f"Id not found: {op_id}")
        return json_response({**op.info(op.status == pending.NEW), "changes": op.changes()})

    async def _pending_cleanup(self, request: web.Request) -> web.StreamResponse:
        msg = await _read_json(request)
        if not isinstance(msg, dict):
            return text_response(422, "request unable to be parsed")
        ids = msg.get("operations") or []
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            return text_response(422, "request unable to be parsed")
        problem = pending.invalid_ids(ids)
        if problem is not None:
            return text_response(400, f"validation failed: operations: {problem}.")

        async def work() -> str | None:
            await self.clean_stale(set(ids))
            return None

        async def rollback() -> None:
            return None

        return await self._start(request, "cleanup", work, rollback, counted=False,
                                 latency=0.0)

    # --- node and device states (states.py) -------------------------------------------
    async def _node_state(self, request: web.Request) -> web.StreamResponse:
        return await self._set_state(request, "node")

    async def _device_state(self, request: web.Request) -> web.StreamResponse:
        return await self._set_state(request, "device")

    async def _set_state(self, request: web.Request, what: str) -> web.StreamResponse:
        msg = await _read_json(request)
        if not states.parsable(msg):
            return text_response(422, "request unable to be parsed")
        problem = states.validate(msg)
        if problem is not None:
            return text_response(400, problem)
        topo, item_id, state = self.topology, request.match_info["id"], msg["state"]
        if item_id not in (topo.nodes if what == "node" else topo.devices):
            return text_response(404, "Id not found")
        # Failing a node or device moves bricks (long, throttled); online/offline is a
        # database update, neither throttled nor slow.
        failing = state == "failed"
        if failing:
            busy = self._throttled()
            if busy is not None:
                return busy

        async def work() -> str | None:
            try:
                if what == "node":
                    states.set_node_state(topo, item_id, state)
                else:
                    states.set_device_state(topo, topo.devices[item_id], state)
            except states.StateRefused as exc:
                raise _OpFailed(500, str(exc)) from None
            return None

        async def rollback() -> None:
            return None

        return await self._start(request, "state", work, rollback, counted=failing,
                           latency=None if failing else 0.0)

    # --- volume create ---------------------------------------------------------------
    async def _volume_create(self, request: web.Request) -> web.StreamResponse:
        msg = await _read_json(request)
        if not isinstance(msg, dict) or not _parsable_create(msg):
            return text_response(422, "request unable to be parsed")
        problem = _validate_create(msg)
        if problem is not None:
            return text_response(400, problem)
        topo = self.topology
        if not topo.clusters:
            return text_response(400, "No clusters configured")
        for cluster_id in msg.get("clusters") or []:
            if cluster_id not in topo.clusters:
                return text_response(400, f"Cluster id {cluster_id} not found")
        minimum = _min_volume_kib(_normalised_durability(msg.get("durability") or {}))
        if int(msg["size"]) * GIB_KIB < minimum:
            return text_response(400, f"Requested volume size ({int(msg['size'])} GB) is smaller "
                                      f"than the minimum supported volume size ({minimum})")
        busy = self._throttled()
        if busy is not None:
            return busy
        clash = self.config.name_clash_on_queue and any(
            (msg.get("name") or "") in topo.names_in(c) for c in topo.clusters)
        volume, error = self._build_volume(msg)
        if volume is None:
            return text_response(500, f"Failed to allocate new volume: {error}")

        async def work() -> str | None:
            if clash:
                raise _OpFailed(500, f"Volume name '{volume.name}' already in use")
            if self.gluster is not None:
                volume.real_brick = str(await self.gluster.create(
                    volume.name, volume.gid, volume.size_gib))
            volume.pending = None
            return f"/volumes/{volume.id}"

        async def rollback() -> None:
            if self.gluster is not None and volume.real_brick:
                await self.gluster.delete(volume.name)
            topo.remove_volume(volume)

        record = PendingOp(new_id(), "create", volume.id, list(volume.bricks))
        return await self._start(request, "create", work, rollback, record=record)

    def _build_volume(self, msg: dict[str, Any]) -> tuple[Volume | None, str]:
        """Heketi's Build step: pick a cluster, check name and limits, place bricks."""
        topo = self.topology
        volume_id = new_id()
        name = msg.get("name") or f"vol_{volume_id}"
        durability = _normalised_durability(msg.get("durability") or {})
        snapshot = msg.get("snapshot") or {}
        enable = bool(snapshot.get("enable"))
        factor = float(snapshot.get("factor") or 0)
        factor = (factor or 1.5) if enable else 1.0  # Heketi's defaults
        candidates = list(msg.get("clusters") or sorted(topo.clusters))
        errors: dict[str, str] = {}
        for cluster_id in candidates:
            if name in topo.names_in(cluster_id) and not self.config.name_clash_on_queue:
                errors[cluster_id] = f"Volume name '{name}' already in use"
                continue
            count = len(topo.clusters[cluster_id].volumes)
            if count >= self.config.max_volumes_per_cluster:
                errors[cluster_id] = (f"Cluster has {count} volumes and limit is "
                                      f"{self.config.max_volumes_per_cluster}")
                continue
            volume = Volume(volume_id, name, cluster_id, int(msg["size"]), durability,
                            {"enable": enable, "factor": factor}, gid=int(msg.get("gid") or 0),
                            options=["", *(msg.get("glustervolumeoptions") or []), ""],
                            pending="create")
            try:
                bricks = topo.allocate(volume, volume.size_gib, factor)
            except NoSpace:
                # Heketi reports too many or too small bricks as `No space` on create.
                errors[cluster_id] = str(NoSpace())
                continue
            volume.bricks = [b.id for b in bricks]
            topo.volumes[volume.id] = volume
            topo.clusters[cluster_id].volumes.append(volume.id)
            return volume, ""
        return None, _cluster_errors("No eligible cluster for volume", errors)

    # --- volume delete ---------------------------------------------------------------
    async def _volume_delete(self, request: web.Request) -> web.StreamResponse:
        volume = self.topology.volumes.get(request.match_info["id"])
        if volume is None:
            return text_response(404, "Id not found")
        busy = self._throttled()
        if busy is not None:
            return busy
        if volume.pending is not None:
            return text_response(500, f"Failed to set up volume delete: {_CONFLICT_TEXT}")
        volume.pending = "delete"

        async def work() -> str | None:
            if self.gluster is not None and volume.real_brick:
                try:
                    await self.gluster.delete(volume.name)
                except PoolBackendError as exc:
                    raise _OpFailed(500, self._delete_failed(volume, str(exc))) from None
            self.topology.remove_volume(volume)
            return None

        async def rollback() -> None:
            volume.pending = None

        record = PendingOp(new_id(), "delete", volume.id, list(volume.bricks))
        return await self._start(request, "delete", work, rollback, record=record)

    def _delete_failed(self, volume: Volume, gluster_text: str) -> str:
        """Heketi's text for a volume delete gluster refused (e.g. `Some of the peers are
        down`): tried on each node of the cluster the health monitor does not know to be down
        (`tryOnHosts`), each wrapped `Unable to delete volume <name>: <gluster's words>`, and
        `All <n> hosts: ...` when several hosts said the same."""
        said = f"Unable to delete volume {volume.name}: {gluster_text}"
        tried = [n for n in self.topology.clusters[volume.cluster_id].nodes
                 if self.topology.nodes[n].up is not False]
        return f"All {len(tried)} hosts: {said}" if len(tried) > 1 else said

    # --- volume expand ---------------------------------------------------------------
    async def _volume_expand(self, request: web.Request) -> web.StreamResponse:
        msg = await _read_json(request)
        if not isinstance(msg, dict):
            return text_response(422, "request unable to be parsed")
        size = msg.get("expand_size")
        if not isinstance(size, int) or isinstance(size, bool):
            if size is not None:
                return text_response(422, "request unable to be parsed")
            size = 0
        if size < 1:
            rule = "cannot be blank" if size == 0 else "must be no less than 1"
            return text_response(400, f"validation failed: expand_size: {rule}.")
        volume = self.topology.volumes.get(request.match_info["id"])
        if volume is None:
            return text_response(404, "Id not found")
        busy = self._throttled()
        if busy is not None:
            return busy
        try:
            bricks = self.topology.allocate(volume, size, float(volume.snapshot["factor"]))
        except NoSpace as exc:  # as it is: `Maximum number of bricks reached.`, ...
            return text_response(500, f"Failed to allocate volume expansion: {exc}")
        new_ids = [b.id for b in bricks]
        # Heketi's Build adds the bricks to the volume: a read shows them at once, the size
        # only when the expansion ends (and a crash leaves them there, see pending.py)
        volume.bricks.extend(new_ids)

        async def work() -> str | None:
            if self.gluster is not None and volume.real_brick:
                await self.gluster.grow(volume.name, volume.size_gib + size, new_ids)
            volume.size_gib += size
            return f"/volumes/{volume.id}"

        async def rollback() -> None:
            pending.drop_bricks(self.topology, volume, new_ids)

        record = PendingOp(new_id(), "expand", volume.id, list(new_ids))
        return await self._start(request, "expand", work, rollback, record=record)

    # --- volume clone ----------------------------------------------------------------
    async def _volume_clone(self, request: web.Request) -> web.StreamResponse:
        msg = await _read_json(request)
        if not isinstance(msg, dict):
            return text_response(422, "request unable to be parsed")
        name = msg.get("name") or ""
        if not isinstance(name, str):
            return text_response(422, "request unable to be parsed")
        if name and not set(name) <= _VOLUME_NAME_CHARS:
            return text_response(400, "validation failed: name: must be in a valid format.")
        topo = self.topology
        source = topo.volumes.get(request.match_info["id"])
        if source is None or not source.visible:
            return text_response(404, "Id not found")
        busy = self._throttled()
        if busy is not None:
            return busy
        clone_id = new_id()
        clone = Volume(clone_id, name or f"vol_{clone_id}", source.cluster_id, source.size_gib,
                       dict(source.durability), dict(source.snapshot), gid=source.gid,
                       options=list(source.options), pending="clone")
        # Heketi does not check a clone's name up front; gluster refuses it during the clone.
        clash = clone.name in topo.names_in(source.cluster_id)
        clone.bricks = [b.id for b in topo.clone_bricks(source, clone)]
        topo.volumes[clone.id] = clone
        topo.clusters[clone.cluster_id].volumes.append(clone.id)
        source.pending = "clone-source"

        async def work() -> str | None:
            if self.config.clone_requires_snapshot and not source.snapshot.get("enable"):
                raise _OpFailed(500, _snapshot_refused(source.name))
            if clash:
                raise _OpFailed(500, f"Unable to clone snapshot of volume {source.name}: "
                                     f"volume {clone.name} already exists")
            if self.gluster is not None:
                copy_from = Path(source.real_brick) if source.real_brick else None
                clone.real_brick = str(await self.gluster.clone(
                    source.name, clone.name, clone.gid, clone.size_gib, copy_from))
            source.pending = None
            clone.pending = None
            return f"/volumes/{clone.id}"

        async def rollback() -> None:
            source.pending = None
            if self.gluster is not None and clone.real_brick:
                await self.gluster.delete(clone.name)
            topo.remove_volume(clone)

        record = PendingOp(new_id(), "clone", clone.id, list(clone.bricks),
                           source_id=source.id)
        return await self._start(request, "clone", work, rollback, record=record)

    # --- /_sim/ (admin only) ---------------------------------------------------------
    async def _sim_stats(self, request: web.Request) -> web.StreamResponse:
        return json_response(self.stats_json())

    async def _sim_faults(self, request: web.Request) -> web.StreamResponse:
        """Body keys (all optional): reset, op_latency, latency {kind: s}, fail_next
        {count, status, text, kinds, on_queue}, drop_results, maintenance, hang, offline_for."""
        msg = await _read_json(request)
        if not isinstance(msg, dict):
            return text_response(422, "request unable to be parsed")
        try:
            if msg.get("reset"):
                self.reset_faults()
            if "op_latency" in msg:
                self.set_latency(float(msg["op_latency"]))
            for kind, seconds in (msg.get("latency") or {}).items():
                self.set_latency(float(seconds), kind)
            if "fail_next" in msg:
                f = msg["fail_next"]
                self.fail_next(int(f.get("count", 1)), int(f.get("status", 500)),
                               str(f.get("text", "simulated failure")),
                               kinds=tuple(f.get("kinds") or MUTATING_KINDS),
                               on_queue=bool(f.get("on_queue", False)))
            if "drop_results" in msg:
                self.drop_next_results(int(msg["drop_results"]))
            if "maintenance" in msg:
                self.set_maintenance(bool(msg["maintenance"]))
            if "hang" in msg:
                self.hang(bool(msg["hang"]))
        except (TypeError, ValueError, AttributeError) as exc:
            return text_response(400, f"bad fault request: {exc}")
        if "offline_for" in msg:
            seconds = float(msg["offline_for"])
            # Answer first, then drop off the network.
            asyncio.get_running_loop().call_later(
                0.05, lambda: self._spawn(self.go_offline(seconds)))
        return json_response(self.stats_json())


class _OpFailed(Exception):
    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.text = text


class _Dropped(web.HTTPException):
    """Raised after aborting the transport: nothing more is written."""

    status_code = 500


async def _read_json(request: web.Request) -> Any:
    try:
        return json.loads(await request.read() or b"null")
    except ValueError:
        return None


def _parsable_create(msg: dict[str, Any]) -> bool:
    """Would Go's JSON decoder accept these field types?"""
    size, name, gid = msg.get("size", 0), msg.get("name", ""), msg.get("gid", 0)
    durability, snapshot = msg.get("durability") or {}, msg.get("snapshot") or {}
    return (isinstance(size, int) and not isinstance(size, bool) and isinstance(name, str)
            and isinstance(gid, int) and not isinstance(gid, bool)
            and isinstance(durability, dict) and isinstance(snapshot, dict)
            and isinstance(msg.get("clusters") or [], list)
            and isinstance(msg.get("glustervolumeoptions") or [], list)
            and all(isinstance(o, str) for o in msg.get("glustervolumeoptions") or []))


def _validate_create(msg: dict[str, Any]) -> str | None:
    """The synchronous checks of Heketi's VolumeCreate handler, in its order and words."""
    size, name, gid = msg.get("size", 0), msg.get("name", ""), msg.get("gid", 0)
    problems = []
    if name and not set(name) <= _VOLUME_NAME_CHARS:
        problems.append("name: must be in a valid format")
    if size == 0:
        problems.append("size: cannot be blank")
    elif size < 1:
        problems.append("size: must be no less than 1")
    if problems:
        return "validation failed: " + "; ".join(sorted(problems)) + "."
    if gid < 0:
        return "Bad group id less than zero"
    if gid >= 2**31 - 1:
        return "Bad group id equal or greater than 2**32"
    durability = msg.get("durability") or {}
    kind = durability.get("type", "")
    if kind not in ("", "none", "replicate", "disperse"):
        return "Unknown durability type"
    snapshot = msg.get("snapshot") or {}
    if snapshot.get("enable"):
        factor = snapshot.get("factor", 0)
        if not isinstance(factor, int | float) or not 1 <= factor <= 100:
            return "Invalid snapshot factor"
    if kind == "replicate":
        replica = (durability.get("replicate") or {}).get("replica", 0)
        if not isinstance(replica, int) or replica > 3:
            return "Invalid replica value"
    if kind == "disperse":
        d = durability.get("disperse") or {}
        data, redundancy = d.get("data", 0), d.get("redundancy", 0)
        if (data, redundancy) not in ((2, 1), (4, 2), (8, 3), (8, 4)):
            return f"Invalid dispersion combination: {data}+{redundancy}"
    return None


def _normalised_durability(durability: dict[str, Any]) -> dict[str, Any]:
    kind = durability.get("type") or "none"
    if kind == "replicate":
        # Stored as sent: without a replica count it reads back as `"replicate": {}`, and
        # placement uses Heketi's default of 2 (durability_shape).
        replica = (durability.get("replicate") or {}).get("replica")
        return {"type": "replicate", "replicate": {"replica": replica} if replica else {}}
    if kind == "disperse":
        d = durability.get("disperse") or {}
        return {"type": "disperse",
                "disperse": {"data": d.get("data", 4), "redundancy": d.get("redundancy", 2)}}
    return {"type": "none"}


def _min_volume_kib(durability: dict[str, Any]) -> int:
    """Heketi's MinVolumeSize: one minimum brick (1 GiB), times the data bricks of a
    disperse set."""
    if durability["type"] == "disperse":
        return BRICK_MIN_KIB * int(durability["disperse"]["data"])
    return BRICK_MIN_KIB


def _cluster_errors(prefix: str, errors: dict[str, str]) -> str:
    """Heketi's ClusterErrorMap.ToError: one error alone, or prefix + one line each."""
    if not errors:
        return "No space"
    if len(errors) == 1:
        return next(iter(errors.values()))
    return "\n".join([prefix, *(f"Cluster {c}: {e}" for c, e in errors.items())])


def _snapshot_refused(volume: str) -> str:
    # Gluster's refusal to snapshot bricks that are not thin LVs, as Heketi's executor
    # wraps it ("Unable to create snapshot of volume <name>: <gluster's error>").
    return (f"Unable to create snapshot of volume {volume}: snapshot create: failed: "
            f"Snapshot is supported only for thin provisioned LV. Ensure that all bricks "
            f"of {volume} are thinly provisioned LV.")

