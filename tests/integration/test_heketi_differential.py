"""The simulator, judged by the real Heketi: the same scripted requests to both, answers compared.

Each scenario runs against a fresh real Heketi v10.3.0 (mock executor, devtools/heketi_real)
and a fresh simulator with the same topology (3 nodes x 3 devices of 1024 GiB), sending raw
HTTP requests, and writes a transcript: per step the status, the `Location` (ids replaced by
`<id>`), `X-Pending` and `Retry-After`, the body (error texts as they are; JSON as its shape:
keys and value types) and facts worth comparing (sizes, brick counts, free space spent,
placement). The two transcripts must be equal, except for the differences listed in
KNOWN_DIFFERENCES, each kept for the reason given there and in docs/simulator.md; a listed
difference that no longer shows fails too, so the list stays true.

Invariants checked on both, whatever the other says: the queue answers 200 only with
`X-Pending: true` and an empty body, and a finished result once (then 404 `Id not found`); no
two bricks of one replica/disperse set share a node; free space falls by at least the bricks'
size and at most 0.5 % metadata (in 4 MiB extents) more, and comes back on delete.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import secrets
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest

from devtools.heketi_real import HeketiNotBuilt, RealHeketi, RealHeketiConfig
from devtools.heketi_real.server import binaries
from devtools.heketi_sim.latency import INSTANT
from devtools.heketi_sim.server import HeketiSimulator
from services.controller.heketi.auth import authorization_header, make_token
from tests.support.sim_process import SimProcess

# random per run: the real Heketi listens on every address of the host
ADMIN_KEY, USER_KEY = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
ZERO = "0" * 32
EXTENT_KIB = 4096
_ID_RE = re.compile(r"\b[0-9a-f]{32}\b")


# --- one backend on the wire ------------------------------------------------------------


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    text: str

    def json(self) -> Any:
        return json.loads(self.text)


@dataclass
class Wire:
    """Raw HTTP to one Heketi, with the transcript of what it answered."""

    name: str
    url: str
    session: aiohttp.ClientSession
    sim: HeketiSimulator | None = None
    real: RealHeketi | None = None
    transcript: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    async def call(self, method: str, path: str, body: Any = None, *, issuer: str = "admin",
                   key: str | None = None, token: bool = True, now: float | None = None,
                   signed_for: str | None = None) -> Reply:
        headers = {}
        if token:
            secret = key if key is not None else (ADMIN_KEY if issuer == "admin" else USER_KEY)
            signed = signed_for or f"{method} {path.split('?')[0]}"
            s_method, s_path = signed.split(" ", 1)
            headers["Authorization"] = authorization_header(
                make_token(s_method, s_path, issuer, secret, now=now))
        async with self.session.request(method, self.url + path, json=body, headers=headers,
                                        allow_redirects=False) as resp:
            return Reply(resp.status, dict(resp.headers), await resp.text())

    def record(self, label: str, reply: Reply | None = None, **facts: Any) -> None:
        obs: dict[str, Any] = {}
        if reply is not None:
            obs = observe(reply)
        obs.update(facts)
        self.transcript.append((label, obs))

    async def step(self, label: str, method: str, path: str, body: Any = None,
                   **kwargs: Any) -> Reply:
        reply = await self.call(method, path, body, **kwargs)
        self.record(label, reply)
        return reply

    async def operation(self, label: str, method: str, path: str, body: Any = None) -> str:
        """An asynchronous operation to its end, recorded: 202, the polls, the one-shot
        result and its re-read. Returns the result's Location ("" for 204, None-like "")."""
        first = await self.step(f"{label}: request", method, path, body)
        if first.status != 202:
            return ""
        queue = first.headers["Location"]
        deadline = time.monotonic() + 30
        pending_ok = True
        while True:
            reply = await self.call("GET", queue)
            if reply.status != 200:
                break
            pending_ok &= reply.headers.get("X-Pending") == "true" and reply.text == ""
            assert time.monotonic() < deadline, f"{self.name}: {label} pending for 30 s"
            await asyncio.sleep(0.01)
        self.record(f"{label}: result", reply)
        assert pending_ok, f"{self.name}: a 200 from the queue without X-Pending or with a body"
        again = await self.call("GET", queue)
        self.record(f"{label}: result re-read", again)
        assert (again.status, again.text.strip()) == (404, "Id not found"), self.name
        return reply.headers.get("Location", "") if reply.status == 303 else ""

    async def finish(self, queue: str, timeout: float = 30.0) -> Reply:
        """Poll `queue` until it answers anything but 200 (pending)."""
        deadline = time.monotonic() + timeout
        while True:
            reply = await self.call("GET", queue)
            if reply.status != 200 or time.monotonic() > deadline:
                return reply
            await asyncio.sleep(0.01)

    async def free_kib(self) -> int:
        cluster = (await self.call("GET", "/clusters")).json()["clusters"][0]
        total = 0
        for node_id in (await self.call("GET", f"/clusters/{cluster}")).json()["nodes"]:
            node = (await self.call("GET", f"/nodes/{node_id}")).json()
            total += sum(d["storage"]["free"] for d in node["devices"])
        return total


def shape(value: Any) -> Any:
    """Keys and value types of a JSON document (a list by the shape of its elements)."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in sorted(value.items())}
    if isinstance(value, list):
        return sorted({json.dumps(shape(v), sort_keys=True) for v in value})
    return type(value).__name__


def norm(text: str) -> str:
    text = _ID_RE.sub("<id>", text.strip())
    return re.sub(r"expired by [0-9hms.]+", "expired by <t>", text)


def observe(reply: Reply) -> dict[str, Any]:
    obs: dict[str, Any] = {"status": reply.status}
    for header in ("Location", "X-Pending", "Retry-After"):
        if header in reply.headers:
            obs[header] = norm(reply.headers[header])
    ctype = reply.headers.get("Content-Type", "")
    if "json" in ctype:
        obs["json"] = shape(reply.json())
    elif reply.status == 303:
        obs["body"] = "(303 page)" if reply.text else ""
    elif reply.status != 200 or reply.text:
        obs["text"] = norm(reply.text)
    return obs


# --- the two backends, fresh per scenario ---------------------------------------------


@contextlib.asynccontextmanager
async def wires(nodes: int = 3, max_inflight: int = 8,
                sim_latency: float = INSTANT) -> AsyncIterator[tuple[Wire, Wire]]:
    real = RealHeketi(RealHeketiConfig(nodes=nodes, max_inflight=max_inflight,
                                       admin_key=ADMIN_KEY, user_key=USER_KEY,
                                       load_with_cli=False))
    try:
        await asyncio.to_thread(real.start)
    except HeketiNotBuilt as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        async with HeketiSimulator(admin_key=ADMIN_KEY, user_key=USER_KEY, nodes=nodes,
                                   max_inflight=max_inflight, op_latency=sim_latency) as sim, \
                aiohttp.ClientSession() as session:
            yield (Wire("real", real.url, session, real=real),
                   Wire("sim", sim.url, session, sim=sim))
    finally:
        await asyncio.to_thread(real.stop)


Scenario = Callable[[Wire], Awaitable[None]]


async def run_both(scenario: Scenario, **options: Any) -> tuple[Wire, Wire]:
    async with wires(**options) as (real, sim):
        await scenario(real)
        await scenario(sim)
        return real, sim


def differences(real: Wire, sim: Wire) -> list[str]:
    out = []
    r_steps, s_steps = dict(real.transcript), dict(sim.transcript)
    assert list(r_steps) == [k for k, _ in real.transcript], "step labels are unique"
    for label in dict.fromkeys([*r_steps, *s_steps]):
        r, s = r_steps.get(label, {}), s_steps.get(label, {})
        for key in dict.fromkeys([*r, *s]):
            if r.get(key) != s.get(key):
                out.append(f"{label} | {key}")
    return out


def detail(real: Wire, sim: Wire, diff: str) -> str:
    label, key = diff.split(" | ")
    r, s = dict(real.transcript).get(label, {}), dict(sim.transcript).get(label, {})
    return f"{diff}: real={r.get(key)!r} sim={s.get(key)!r}"


# Differences kept, by scenario: "step | field" -> why (docs/simulator.md says the same).
KNOWN_DIFFERENCES: dict[str, dict[str, str]] = {}


async def compare(name: str, scenario: Scenario, **options: Any) -> None:
    real, sim = await run_both(scenario, **options)
    found = differences(real, sim)
    known = KNOWN_DIFFERENCES.get(name, {})
    for diff in found:
        print(f"[{name}] {detail(real, sim, diff)}"
              + (f"  (kept: {known[diff]})" if diff in known else ""), file=sys.stderr)
    new = [detail(real, sim, d) for d in found if d not in known]
    gone = [d for d in known if d not in found]
    assert not new, "the simulator answers differently from the real Heketi:\n" + "\n".join(new)
    assert not gone, f"listed differences that no longer show (remove them): {gone}"


# --- scenarios --------------------------------------------------------------------------

DURABILITIES: dict[str, dict[str, Any]] = {
    "none": {"type": "none"},
    "replicate-2": {"type": "replicate", "replicate": {"replica": 2}},
    "replicate-3": {"type": "replicate", "replicate": {"replica": 3}},
    "replicate-default": {"type": "replicate"},
    "disperse-2+1": {"type": "disperse", "disperse": {"data": 2, "redundancy": 1}},
}


def set_width(durability: dict[str, Any], volume: dict[str, Any]) -> int:
    kind = volume["durability"]["type"]
    if kind == "replicate":
        return int(volume["durability"]["replicate"].get("replica") or 2)
    if kind == "disperse":
        d = volume["durability"]["disperse"]
        return int(d["data"]) + int(d["redundancy"])
    return 1


def check_space(w: Wire, spent: int, bricks: list[dict[str, Any]], factor: float) -> None:
    """Each brick costs its thin pool (size x snapshot factor) plus 0.5 % metadata, in 4 MiB
    extents (one extent of slack per brick for the rounding)."""
    pools = [b["size"] * factor for b in bricks]
    least = sum(pools)
    most = sum(-(-(p + p / 200) // EXTENT_KIB) * EXTENT_KIB for p in pools)
    assert least <= spent <= most + EXTENT_KIB * len(bricks), (w.name, least, spent, most)


def check_placement(w: Wire, volume: dict[str, Any], width: int) -> None:
    per_node: dict[str, int] = {}
    for brick in volume["bricks"]:
        per_node[brick["node"]] = per_node.get(brick["node"], 0) + 1
    sets = len(volume["bricks"]) // width
    assert len(volume["bricks"]) == sets * width, (w.name, volume["bricks"])
    # no two bricks of a set on one node: a node holds at most one brick per set
    assert max(per_node.values()) <= sets, (w.name, per_node)
    if sets == 1:
        assert len(per_node) == width, (w.name, per_node)


def lifecycle(kind: str) -> Scenario:
    durability = DURABILITIES[kind]

    async def run(w: Wire) -> None:
        before = await w.free_kib()
        body = {"size": 2, "name": f"diff_{kind.replace('-', '_').replace('+', '_')}",
                "durability": durability, "gid": 2001,
                "snapshot": {"enable": True, "factor": 1.5},
                "glustervolumeoptions": ["performance.readdir-ahead off"]}
        location = await w.operation("create", "POST", "/volumes", body)
        volume = (await w.step("read", "GET", location)).json()
        width = set_width(durability, volume)
        spent = before - await w.free_kib()
        check_space(w, spent, volume["bricks"], float(volume["snapshot"]["factor"]))
        check_placement(w, volume, width)
        w.record("created", size=volume["size"], bricks=len(volume["bricks"]),
                 brick_kib=sorted({b["size"] for b in volume["bricks"]}), spent_kib=spent,
                 durability=volume["durability"], gid=volume.get("gid"),
                 snapshot=volume["snapshot"], options=volume["glustervolumeoptions"],
                 hosts=len(volume["mount"]["glusterfs"]["hosts"]),
                 device=norm(volume["mount"]["glusterfs"]["device"]).split(":")[1])
        await w.operation("expand", "POST", f"{location}/expand", {"expand_size": 1})
        grown = (await w.step("read grown", "GET", location)).json()
        check_placement(w, grown, width)
        w.record("expanded", size=grown["size"], bricks=len(grown["bricks"]),
                 brick_kib=sorted({b["size"] for b in grown["bricks"]}))
        await w.operation("delete", "DELETE", location)
        await w.step("read deleted", "GET", location)
        assert await w.free_kib() == before, f"{w.name}: space not given back"
    return run


@pytest.mark.parametrize("kind", list(DURABILITIES))
async def test_create_expand_delete(kind: str) -> None:
    await compare(f"lifecycle-{kind}", lifecycle(kind))


async def _refusals(w: Wire) -> None:
    await w.step("disperse 4+2 of 1 GiB", "POST", "/volumes", {
        "size": 1, "durability": {"type": "disperse", "disperse": {"data": 4, "redundancy": 2}}})
    await w.step("disperse 4+2 on 3 nodes", "POST", "/volumes", {
        "size": 4, "durability": {"type": "disperse", "disperse": {"data": 4, "redundancy": 2}}})
    await w.step("disperse 3+1", "POST", "/volumes", {
        "size": 4, "durability": {"type": "disperse", "disperse": {"data": 3, "redundancy": 1}}})
    await w.step("replica 4", "POST", "/volumes", {
        "size": 1, "durability": {"type": "replicate", "replicate": {"replica": 4}}})
    await w.step("no space", "POST", "/volumes", {"size": 10_000_000})
    await w.step("size 0", "POST", "/volumes", {"size": 0})
    await w.step("bad name", "POST", "/volumes", {"size": 1, "name": "a b"})
    await w.step("unknown durability", "POST", "/volumes",
                 {"size": 1, "durability": {"type": "mirror"}})
    await w.step("unparsable", "POST", "/volumes", {"size": "big"})
    await w.step("unknown cluster", "POST", "/volumes", {"size": 1, "clusters": ["f" * 32]})
    await w.step("gid negative", "POST", "/volumes", {"size": 1, "gid": -1})
    await w.step("snapshot factor 200", "POST", "/volumes",
                 {"size": 1, "snapshot": {"enable": True, "factor": 200}})
    location = await w.operation("create", "POST", "/volumes", {"size": 1, "name": "diff_dup"})
    await w.step("name clash", "POST", "/volumes", {"size": 1, "name": "diff_dup"})
    await w.step("expand beyond free space", "POST", f"{location}/expand",
                 {"expand_size": 100_000})
    await w.step("expand by 0", "POST", f"{location}/expand", {"expand_size": 0})
    volumes = (await w.step("list", "GET", "/volumes")).json()["volumes"]
    w.record("volumes after refusals", count=len(volumes))


async def test_refusals_name_clash_and_no_space() -> None:
    await compare("refusals", _refusals)


async def _ids_and_routes(w: Wire) -> None:
    await w.step("hello", "GET", "/hello", token=False)
    await w.step("volume, unknown id", "GET", f"/volumes/{ZERO}")
    await w.step("volume, non-hex id", "GET", "/volumes/not-an-id")
    await w.step("delete, unknown id", "DELETE", f"/volumes/{ZERO}")
    await w.step("expand, unknown id", "POST", f"/volumes/{ZERO}/expand", {"expand_size": 1})
    await w.step("node, unknown id", "GET", f"/nodes/{ZERO}")
    await w.step("device, unknown id", "GET", f"/devices/{ZERO}")
    await w.step("cluster, unknown id", "GET", f"/clusters/{ZERO}")
    await w.step("queue, unknown id", "GET", f"/queue/{ZERO}")
    await w.step("unknown route", "GET", "/nope")
    await w.step("unknown route under volumes", "GET", f"/volumes/{ZERO}/nope")
    await w.step("wrong method", "PUT", "/volumes", {"size": 1})
    cluster = (await w.step("clusters", "GET", "/clusters")).json()["clusters"][0]
    info = (await w.step("cluster", "GET", f"/clusters/{cluster}")).json()
    node = (await w.step("node", "GET", f"/nodes/{info['nodes'][0]}")).json()
    await w.step("device", "GET", f"/devices/{node['devices'][0]['id']}")
    w.record("topology", nodes=len(info["nodes"]), devices=len(node["devices"]),
             zone=type(node["zone"]).__name__, state=node["state"],
             device_state=node["devices"][0]["state"])


async def test_bad_ids_and_unknown_routes() -> None:
    await compare("ids-and-routes", _ids_and_routes)


async def _auth(w: Wire) -> None:
    await w.step("no token", "GET", "/volumes", token=False)
    await w.step("wrong key", "GET", "/volumes", key="not-the-key")
    await w.step("expired", "GET", "/volumes", now=time.time() - 3600)
    await w.step("from the future", "GET", "/volumes", now=time.time() + 600)
    await w.step("signed for another path", "GET", "/volumes", signed_for="GET /clusters")
    await w.step("unknown issuer", "GET", "/volumes", issuer="bob", key=ADMIN_KEY)
    await w.step("user lists volumes", "GET", "/volumes", issuer="user")
    await w.step("user reads a cluster list", "GET", "/clusters", issuer="user")
    await w.step("user reads a volume", "GET", f"/volumes/{ZERO}", issuer="user")
    await w.step("user deletes", "DELETE", f"/volumes/{ZERO}", issuer="user")
    await w.step("user with the admin key", "GET", "/volumes", issuer="user", key=ADMIN_KEY)
    metrics = await w.call("GET", "/metrics", token=False)
    w.record("metrics without a token", status=metrics.status,
             text_plain=metrics.headers.get("Content-Type", "").startswith("text/plain"),
             heketi_up="heketi_up 1" in metrics.text.splitlines())


async def test_auth_failures() -> None:
    await compare("auth", _auth)


async def _admin_states(w: Wire) -> None:
    await w.step("state", "GET", "/admin")
    await w.step("bogus state", "POST", "/admin", {"state": "bogus"})
    await w.step("local-client", "POST", "/admin", {"state": "local-client"})
    await w.operation("create from loopback", "POST", "/volumes", {"size": 1})
    await w.step("normal", "POST", "/admin", {"state": "normal"})
    await w.step("read-only", "POST", "/admin", {"state": "read-only"})
    await w.step("create when read-only", "POST", "/volumes", {"size": 1})
    await w.step("delete when read-only", "DELETE", f"/volumes/{ZERO}")
    await w.step("list when read-only", "GET", "/volumes")
    await w.step("state when read-only", "GET", "/admin")
    await w.step("back to normal", "POST", "/admin", {"state": "normal"})


async def test_read_only_and_local_client_states() -> None:
    await compare("admin-states", _admin_states)


STORM = 24


async def _storm(w: Wire) -> None:
    statuses: list[int] = []
    texts: set[str] = set()
    retry_after = False
    queues: list[str] = []
    for _burst in range(5):  # the real one's creates take milliseconds: burst until a 429
        replies = await asyncio.gather(*(w.call("POST", "/volumes", {"size": 1})
                                         for _ in range(STORM)))
        for r in replies:
            statuses.append(r.status)
            if r.status == 429:
                texts.add(r.text.strip())
                retry_after |= "Retry-After" in r.headers
            elif r.status == 202:
                queues.append(r.headers["Location"])
        if 429 in statuses:
            break
    for queue in queues:  # every accepted create ends in a volume
        assert (await w.finish(queue)).status == 303, w.name
    volumes = (await w.call("GET", "/volumes")).json()["volumes"]
    assert len(volumes) == len(queues), (w.name, len(volumes), len(queues))
    w.record("storm", saw_429=429 in statuses, texts=sorted(texts), retry_after=retry_after,
             statuses=sorted(set(statuses)))


async def test_429_storm() -> None:
    # The simulator's operations take no time unless told: 50 ms makes the storm overlap.
    await compare("storm", _storm, max_inflight=1, sim_latency=0.05)


async def _pending(w: Wire) -> None:
    pending: list[Reply] = []
    finals: list[Reply] = []  # each operation's one-shot result
    running: list[str] = []
    for _burst in range(10):  # the real one's creates take milliseconds: burst until seen
        replies = await asyncio.gather(*(w.call("POST", "/volumes", {"size": 1})
                                         for _ in range(8)))
        burst = [r.headers["Location"] for r in replies if r.status == 202]
        polls = await asyncio.gather(*(w.call("GET", q) for q in burst))  # still running?
        for queue, poll in zip(burst, polls, strict=True):
            if poll.status == 200:
                pending.append(poll)
                running.append(queue)
            else:
                finals.append(poll)
        if pending:
            break
    assert all(p.headers.get("X-Pending") == "true" and p.text == "" for p in pending), w.name
    if pending:
        w.record("a pending poll", pending[0])
    finals += [await w.finish(q) for q in running]
    w.record("pending", saw_pending=bool(pending), results=sorted({f.status for f in finals}))


async def test_queue_answers_x_pending_while_running() -> None:
    # The real one's creates take milliseconds: a poll sent with the create still finds most
    # of them running; the simulator's take 200 ms here.
    await compare("pending", _pending, sim_latency=0.2)


async def _wait_state(w: Wire, label: str, path: str, state: str, **body: Any) -> None:
    """POST a state change and follow it to its one-shot result."""
    await w.operation(label, "POST", path, {"state": state, **body})


async def _node_and_device_states(w: Wire) -> None:
    cluster = (await w.call("GET", "/clusters")).json()["clusters"][0]
    nodes = (await w.call("GET", f"/clusters/{cluster}")).json()["nodes"]
    first = (await w.call("GET", f"/nodes/{nodes[0]}")).json()
    device = first["devices"][0]["id"]
    replica3 = {"size": 1, "durability": {"type": "replicate", "replicate": {"replica": 3}}}
    # refusals before anything changes
    await w.step("node state, unknown id", "POST", f"/nodes/{ZERO}/state", {"state": "offline"})
    await w.step("device state, unknown id", "POST", f"/devices/{ZERO}/state",
                 {"state": "offline"})
    await w.step("node state, bogus", "POST", f"/nodes/{nodes[0]}/state", {"state": "bogus"})
    await w.step("node state, blank", "POST", f"/nodes/{nodes[0]}/state", {})
    await w.step("node state, bad heal check", "POST", f"/nodes/{nodes[0]}/state",
                 {"state": "offline", "healcheck": "bogus"})
    await w.step("node state, unparsable", "POST", f"/nodes/{nodes[0]}/state", {"state": 3})
    await w.step("device state, bogus", "POST", f"/devices/{device}/state", {"state": "up"})
    await _wait_state(w, "node online to failed", f"/nodes/{nodes[0]}/state", "failed")
    await _wait_state(w, "device online to failed", f"/devices/{device}/state", "failed")
    # one node of three offline: replica 3 has too few nodes, replica 2 still fits
    await _wait_state(w, "node offline", f"/nodes/{nodes[0]}/state", "offline")
    node = (await w.step("read offline node", "GET", f"/nodes/{nodes[0]}")).json()
    w.record("offline node", state=node["state"],
             devices={d["state"] for d in node["devices"]})
    await w.step("replica 3, a node offline", "POST", "/volumes", replica3)
    two = await w.operation("replica 2, a node offline", "POST", "/volumes",
                            {"size": 1, "durability": DURABILITIES["replicate-2"]})
    placed = (await w.call("GET", two)).json()
    w.record("replica 2 avoids the offline node",
             on_it=sum(1 for b in placed["bricks"] if b["node"] == nodes[0]))
    await _wait_state(w, "node offline again", f"/nodes/{nodes[0]}/state", "offline")
    await _wait_state(w, "node online", f"/nodes/{nodes[0]}/state", "online")
    three = await w.operation("replica 3, all online", "POST", "/volumes", replica3)
    # every device of one node offline (the node online): the same refusal
    for d in first["devices"]:
        await _wait_state(w, f"device {d['name']} offline", f"/devices/{d['id']}/state",
                          "offline")
    await w.step("replica 3, a node's devices offline", "POST", "/volumes", replica3)
    await w.step("expand replica 3, a node's devices offline", "POST", f"{three}/expand",
                 {"expand_size": 1})
    for d in first["devices"]:
        await _wait_state(w, f"device {d['name']} online", f"/devices/{d['id']}/state",
                          "online")
    # an empty device fails (removed) and never comes back online; offline it may
    # (node 0 holds one brick at most, of replica 3, so two of its devices are empty)
    empties = []
    for d in first["devices"]:
        if not (await w.call("GET", f"/devices/{d['id']}")).json()["bricks"]:
            empties.append(d)
    empty = empties[0]
    await _wait_state(w, "empty device offline", f"/devices/{empty['id']}/state", "offline")
    await _wait_state(w, "empty device failed", f"/devices/{empty['id']}/state", "failed")
    info = (await w.step("read failed device", "GET", f"/devices/{empty['id']}")).json()
    w.record("failed device", state=info["state"], bricks=len(info["bricks"]))
    await _wait_state(w, "failed device online", f"/devices/{empty['id']}/state", "online")
    await _wait_state(w, "failed device offline", f"/devices/{empty['id']}/state", "offline")
    await w.operation("delete replica 2", "DELETE", two)
    await w.operation("delete replica 3", "DELETE", three)


async def test_node_and_device_states() -> None:
    await compare("states", _node_and_device_states)


async def _brick_moves(w: Wire) -> None:
    """`failed` on a device or node that holds bricks: Heketi moves them (replace-brick)."""
    two = await w.operation("replica 2", "POST", "/volumes",
                            {"size": 1, "durability": DURABILITIES["replicate-2"]})
    three = await w.operation("replica 3", "POST", "/volumes",
                              {"size": 1, "durability": DURABILITIES["replicate-3"]})
    vol3 = (await w.call("GET", three)).json()
    brick = vol3["bricks"][0]
    node = (await w.call("GET", f"/nodes/{brick['node']}")).json()
    others = [d["id"] for d in node["devices"] if d["id"] != brick["device"]]
    # no replacement: the node's other devices offline, the other nodes hold its siblings
    for n, other in enumerate(others):
        await _wait_state(w, f"other device {n} offline", f"/devices/{other}/state",
                          "offline")
    await _wait_state(w, "device offline", f"/devices/{brick['device']}/state", "offline")
    await _wait_state(w, "device failed, nowhere to go", f"/devices/{brick['device']}/state",
                      "failed")
    still = (await w.call("GET", f"/devices/{brick['device']}")).json()
    w.record("device left as it was", state=still["state"], bricks=len(still["bricks"]))
    for n, other in enumerate(others):
        await _wait_state(w, f"other device {n} online", f"/devices/{other}/state", "online")
    before = await w.free_kib()
    await _wait_state(w, "device failed, bricks moved", f"/devices/{brick['device']}/state",
                      "failed")
    gone = (await w.call("GET", f"/devices/{brick['device']}")).json()
    moved = (await w.call("GET", three)).json()
    w.record("after the move", state=gone["state"], bricks_left=len(gone["bricks"]),
             on_same_node=sum(1 for b in moved["bricks"] if b["node"] == brick["node"]),
             nodes=len({b["node"] for b in moved["bricks"]}),
             free_change=await w.free_kib() - before)
    # a node with bricks fails when each brick finds a place on another node
    vol2 = (await w.call("GET", two)).json()
    holder = vol2["bricks"][0]["node"]
    await _wait_state(w, "node offline", f"/nodes/{holder}/state", "offline")
    # its replica 3 brick cannot go to a node without a sibling: refused, node still offline
    await _wait_state(w, "node failed, replica 3 on it", f"/nodes/{holder}/state", "failed")
    w.record("node refused", state=(await w.call("GET", f"/nodes/{holder}")).json()["state"])
    await w.operation("delete replica 3", "DELETE", three)
    await _wait_state(w, "node failed", f"/nodes/{holder}/state", "failed")
    failed = (await w.call("GET", f"/nodes/{holder}")).json()
    after = (await w.call("GET", two)).json()
    w.record("failed node", state=failed["state"],
             devices=sorted({d["state"] for d in failed["devices"]}),
             bricks_on_it=sum(len(d["bricks"]) for d in failed["devices"]),
             replica2_on_it=sum(1 for b in after["bricks"] if b["node"] == holder))
    await _wait_state(w, "failed node online", f"/nodes/{holder}/state", "online")
    await w.operation("delete replica 2", "DELETE", two)


async def test_failing_devices_and_nodes_moves_bricks() -> None:
    """Not comparable: the mock executor cannot move a brick (every `failed` of a device or
    node holding bricks ends 500 `Id not found`, leaving it offline). The real one is held
    to that, so the test fails when it can; the simulator moves bricks as Heketi with a
    real executor does (docs/simulator.md)."""
    real, sim = await run_both(_brick_moves)
    r, s = dict(real.transcript), dict(sim.transcript)
    for step in ("device failed, nowhere to go", "device failed, bricks moved",
                 "node failed, replica 3 on it", "node failed"):
        assert (r[f"{step}: result"]["status"], r[f"{step}: result"]["text"]) == (
            500, "Id not found"), (step, r[f"{step}: result"])
    # (the device keeps its bricks: one or two, as the ring put replica 2's there too)
    assert r["after the move"]["bricks_left"] >= 1 and r["failed node"]["state"] == "offline"
    # the simulator: no replacement leaves the device as it was, with Heketi's text ...
    nowhere = s["device failed, nowhere to go: result"]
    assert nowhere["status"] == 500 and nowhere["text"] == (
        "Unable to delete device [<id>] as no device was found to replace it: "
        "No Replacement was found for resource requested to be removed"), nowhere
    assert s["device left as it was"] == {"state": "offline", "bricks": 1}
    # ... a replacement moves the brick to another device of the same node (the other nodes
    # hold its siblings), space moving with it ...
    assert s["device failed, bricks moved: result"]["status"] == 204
    assert s["after the move"] == {"state": "failed", "bricks_left": 0, "on_same_node": 1,
                                   "nodes": 3, "free_change": 0}
    # ... a node fails only when each of its bricks finds a node without a sibling ...
    refused = s["node failed, replica 3 on it: result"]
    assert refused["status"] == 500 and refused["text"].startswith(
        "Unable to remove node [<id>] as no device was found to replace device"), refused
    assert s["node refused"] == {"state": "offline"}
    # ... and then stays failed
    assert s["node failed: result"]["status"] == 204
    assert s["failed node"] == {"state": "failed", "devices": ["failed"], "bricks_on_it": 0,
                                "replica2_on_it": 0}
    assert s["failed node online: result"] == {
        "status": 500, "text": "Cannot move a failed/removed node to online state"}


# --- a crash with operations pending ----------------------------------------------------


@dataclass
class Crashable:
    """A Heketi that can be SIGKILLed and started again on the same port and database."""

    wire: Wire
    kill: Callable[[], Awaitable[None]]
    restart: Callable[[], Awaitable[None]]
    log: Callable[[], str]

    async def lasting(self, on: bool) -> None:
        """The simulator's operations last 30 s (for a kill to find them pending) or none;
        the real one's take what they take."""
        if self.wire.name == "sim":
            reply = await self.wire.call("POST", "/_sim/faults",
                                         {"op_latency": 30 if on else 0})
            assert reply.status == 200, reply

    async def quietly(self, method: str, path: str, body: Any = None) -> str:
        """An operation to its end, not recorded (set-up): the result's Location."""
        reply = await self.wire.call(method, path, body)
        assert reply.status == 202, (self.wire.name, method, path, reply.status, reply.text)
        result = await self.wire.finish(reply.headers["Location"])
        assert result.status in (303, 204), (self.wire.name, result.status, result.text)
        return result.headers.get("Location", "")

    async def crash_during(self, what: str,
                           attempt: Callable[[int], Awaitable[Reply]]) -> int:
        """`attempt(i)` sends an operation (202); SIGKILL at once, restart; again until the
        restarted Heketi holds one stale operation. Returns the attempt that left it."""
        for i in range(20):
            await self.lasting(False)
            accepted = await attempt(i)
            assert accepted.status == 202, (self.wire.name, what, accepted.status,
                                            accepted.text)
            await self.kill()
            await self.restart()
            await self.lasting(False)
            if (await self.wire.call("GET", "/operations")).json()["stale"] == 1:
                print(f"{self.wire.name}: a stale {what} after {i + 1} kill(s)",
                      file=sys.stderr)
                return i
        pytest.fail(f"{self.wire.name}: no {what} was left pending by 20 kills")


@contextlib.asynccontextmanager
async def crashables(tmp_path: Any) -> AsyncIterator[tuple[Crashable, Crashable]]:
    """A fresh real Heketi and a simulator process on a state file (`--db`), both with the
    background cleaner an hour away, so that only the scenario cleans."""
    real = RealHeketi(RealHeketiConfig(admin_key=ADMIN_KEY, user_key=USER_KEY,
                                       load_with_cli=False, cleaner_start_s=3600,
                                       cleaner_refresh_s=3600))
    try:
        await asyncio.to_thread(real.start)
    except HeketiNotBuilt as exc:
        pytest.fail(str(exc), pytrace=False)
    # the simulator's operations run 30 s: the kill always finds them pending
    proc = SimProcess(tmp_path / "sim", admin_key=ADMIN_KEY, user_key=USER_KEY, op_latency=30)
    try:
        await proc.start()
        async with aiohttp.ClientSession() as session:
            yield (Crashable(Wire("real", real.url, session, real=real),
                             lambda: asyncio.to_thread(real.kill),
                             lambda: asyncio.to_thread(real.restart), real.log_tail),
                   Crashable(Wire("sim", proc.url, session), proc.kill, proc.restart,
                             proc.log))
    finally:
        await proc.stop()
        await asyncio.to_thread(real.stop)


REPLICA_3 = DURABILITIES["replicate-3"]


async def _stale_create(c: Crashable) -> None:
    w = c.wire
    free_before = await w.free_kib()
    # Kill at once after the 202: the Build step (bricks placed, pending entry) is committed;
    # the real mock executor may still finish first, then the volume is deleted and another
    # name tried (not recorded: only the run that left a stale operation is compared).
    for attempt in range(20):
        name = f"stale_{attempt}"
        accepted = await w.call("POST", "/volumes", {"size": 1, "name": name,
                                                     "durability": REPLICA_3})
        assert accepted.status == 202, (w.name, accepted.status, accepted.text)
        await c.kill()
        await c.restart()
        if (await w.call("GET", "/operations")).json()["stale"] == 1:
            break
        ids = (await w.call("GET", "/volumes")).json()["volumes"]
        for volume_id in ids:
            await w.operation(f"{name} finished before the kill, deleted", "DELETE",
                              f"/volumes/{volume_id}")
        w.transcript = [(k, v) for k, v in w.transcript if "before the kill" not in k]
    else:
        pytest.fail(f"{w.name}: no create was left pending by 20 kills")
    print(f"{w.name}: a stale operation after {attempt + 1} kill(s)", file=sys.stderr)
    if w.name == "sim":  # from here on its operations need not last (the real one's do not)
        assert (await w.call("POST", "/_sim/faults", {"op_latency": 0})).status == 200
    w.record("start-up warning",
             logged="Heketi has existing pending operations in the db" in c.log())
    info = await w.step("operations info", "GET", "/operations")
    w.record("operations counts", **info.json())
    listing = await w.step("pending list", "GET", "/operations/pending")
    [op] = listing.json()["pendingoperations"]
    w.record("the stale operation", type_name=op["type_name"], status=op["status"],
             sub_status=op["sub_status"])
    w.record("heketi-cli server operations info",
             out=await _heketi_cli(w, "server", "operations", "info"))
    details = await w.step("pending details", "GET", f"/operations/pending/{op['id']}")
    changes = details.json()["changes"]
    w.record("its changes", changes=[ch["description"] for ch in changes])
    await w.step("pending details, unknown id", "GET", f"/operations/pending/{ZERO}")
    await w.step("the lost queue entry", "GET", accepted.headers["Location"])
    listed = await w.step("volume list", "GET", "/volumes")
    w.record("volumes listed", count=len(listed.json()["volumes"]))
    [volume_id] = [ch["id"] for ch in changes if ch["description"] == "Add volume"]
    await w.step("GET the pending volume", "GET", f"/volumes/{volume_id}")
    await w.step("DELETE the pending volume", "DELETE", f"/volumes/{volume_id}")
    clash = await w.call("POST", "/volumes", {"size": 1, "name": name,
                                              "durability": REPLICA_3})
    w.record("create the same name", status=clash.status,
             text=norm(clash.text).replace(name, "<name>"))
    w.record("space held", spent=free_before - await w.free_kib())
    other = await w.operation("create another name meanwhile", "POST", "/volumes",
                              {"size": 1, "name": "other", "durability": REPLICA_3})
    w.record("listed meanwhile", count=len((await w.call("GET", "/volumes")).json()["volumes"]))
    await w.operation("delete it", "DELETE", other)
    await w.step("cleanup, unparsable", "POST", "/operations/pending/cleanup", "[1]")
    await w.step("cleanup, a bad id", "POST", "/operations/pending/cleanup",
                 {"operations": ["xyz"]})
    await w.step("cleanup, 33 ids", "POST", "/operations/pending/cleanup",
                 {"operations": [ZERO] * 33})
    await w.operation("cleanup of another id", "POST", "/operations/pending/cleanup",
                      {"operations": [ZERO]})
    w.record("still stale", **(await w.call("GET", "/operations")).json())
    await w.operation("cleanup", "POST", "/operations/pending/cleanup", {})
    after = await w.call("GET", "/operations")
    w.record("operations after the cleanup", **after.json())
    w.record("space after the cleanup", spent=free_before - await w.free_kib())
    location = await w.operation("create the same name again", "POST", "/volumes",
                                 {"size": 1, "name": name, "durability": REPLICA_3})
    volume = (await w.call("GET", location)).json()
    w.record("the new volume", name_matches=volume["name"] == name, size=volume["size"],
             bricks=len(volume["bricks"]))


async def test_a_crash_leaves_a_stale_create_until_cleaned(tmp_path: Any) -> None:
    """Heketi killed with a create pending (SIGKILL right after its 202), restarted on its
    database: no refusal to start, a warning, the operation `stale`, its volume hidden but
    its name in use and its space held, the queue entry gone, a delete of the volume refused;
    `POST /operations/pending/cleanup` rolls it back and the name can be used again. The
    simulator on a state file (`--db`) must answer the same."""
    async with crashables(tmp_path) as (real, sim):
        await _stale_create(real)
        await _stale_create(sim)
        found = differences(real.wire, sim.wire)
        for diff in found:
            print(f"[stale-create] {detail(real.wire, sim.wire, diff)}", file=sys.stderr)
        assert not found, "the simulator answers differently from the real Heketi:\n" + \
            "\n".join(detail(real.wire, sim.wire, d) for d in found)
        r = dict(real.wire.transcript)
        assert r["operations counts"] == {"total": 1, "in_flight": 0, "stale": 1,
                                          "failed": 0, "new": 0}
        assert r["start-up warning"] == {"logged": True}
        assert r["space held"]["spent"] > 0 and r["space after the cleanup"]["spent"] == 0


async def _heketi_cli(w: Wire, *args: str) -> str:
    """What the real heketi-cli prints (ids as <id>) when pointed at `w`."""
    _heketi, cli = binaries()
    proc = await asyncio.create_subprocess_exec(
        str(cli), "--server", w.url, "--user", "admin", "--secret", ADMIN_KEY, *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    return f"exit {proc.returncode}: {norm(out.decode(errors='replace'))}"


async def _stale_after(c: Crashable, label: str) -> dict[str, Any]:
    """Record the one stale operation's summary; returns it with its changes."""
    w = c.wire
    w.record(f"{label}: operations counts", **(await w.call("GET", "/operations")).json())
    [op] = (await w.call("GET", "/operations/pending")).json()["pendingoperations"]
    details = (await w.call("GET", f"/operations/pending/{op['id']}")).json()
    w.record(f"{label}: the stale operation", type_name=op["type_name"],
             status=op["status"], changes=[ch["description"] for ch in details["changes"]])
    return dict(details)


async def _stale_delete_and_expand(c: Crashable) -> None:
    w = c.wire
    names: dict[int, str] = {}
    volume_ids: dict[int, str] = {}

    async def delete(i: int) -> Reply:
        names[i] = f"del_{i}"
        location = await c.quietly("POST", "/volumes", {"size": 1, "name": names[i],
                                                        "durability": REPLICA_3})
        volume_ids[i] = location.rsplit("/", 1)[-1]
        await c.lasting(True)
        return await w.call("DELETE", f"/volumes/{volume_ids[i]}")

    free_before = await w.free_kib()
    i = await c.crash_during("delete", delete)
    for j in range(i):  # the attempts whose delete finished before the kill: gone
        assert (await w.call("GET", f"/volumes/{volume_ids[j]}")).status == 404, w.name
    name, volume_id = names[i], volume_ids[i]
    await _stale_after(c, "delete")
    await w.step("delete: GET the volume", "GET", f"/volumes/{volume_id}")
    listed = (await w.call("GET", "/volumes")).json()["volumes"]
    w.record("delete: listed", listed=volume_id in listed)
    await w.step("delete: DELETE it again", "DELETE", f"/volumes/{volume_id}")
    clash = await w.call("POST", "/volumes", {"size": 1, "name": name})
    w.record("delete: create the same name", status=clash.status,
             text=norm(clash.text).replace(name, "<name>"))
    w.record("delete: space held", spent=free_before - await w.free_kib())
    await w.operation("delete: cleanup", "POST", "/operations/pending/cleanup", {})
    await w.step("delete: GET the volume after the cleanup", "GET", f"/volumes/{volume_id}")
    w.record("delete: after the cleanup", spent=free_before - await w.free_kib(),
             **(await w.call("GET", "/operations")).json())

    expanded: dict[int, str] = {}

    async def expand(i: int) -> Reply:
        location = await c.quietly("POST", "/volumes", {"size": 1, "name": f"exp_{i}",
                                                        "durability": REPLICA_3})
        expanded[i] = location.rsplit("/", 1)[-1]
        await c.lasting(True)
        return await w.call("POST", f"/volumes/{expanded[i]}/expand", {"expand_size": 1})

    i = await c.crash_during("expansion", expand)
    volume_id = expanded[i]
    for j in range(i):  # expanded before the kill: out of the way
        await c.quietly("DELETE", f"/volumes/{expanded[j]}")
    free_before = await w.free_kib()
    await _stale_after(c, "expand")
    info = await w.step("expand: GET the volume", "GET", f"/volumes/{volume_id}")
    if info.status == 200:
        w.record("expand: the volume", size=info.json()["size"],
                 bricks=len(info.json()["bricks"]))
    listed = (await w.call("GET", "/volumes")).json()["volumes"]
    w.record("expand: listed", listed=volume_id in listed)
    await w.step("expand: expand it again", "POST", f"/volumes/{volume_id}/expand",
                 {"expand_size": 1})
    await w.operation("expand: cleanup", "POST", "/operations/pending/cleanup", {})
    info = await w.step("expand: GET the volume after the cleanup", "GET",
                        f"/volumes/{volume_id}")
    if info.status == 200:
        w.record("expand: the volume after the cleanup", size=info.json()["size"],
                 bricks=len(info.json()["bricks"]))
    w.record("expand: after the cleanup", freed=await w.free_kib() - free_before,
             **(await w.call("GET", "/operations")).json())


async def test_a_crash_leaves_stale_deletes_and_expansions(tmp_path: Any) -> None:
    """The same with a delete, then an expansion, pending at the kill."""
    async with crashables(tmp_path) as (real, sim):
        await _stale_delete_and_expand(real)
        await _stale_delete_and_expand(sim)
        found = differences(real.wire, sim.wire)
        for diff in found:
            print(f"[stale-delete-expand] {detail(real.wire, sim.wire, diff)}",
                  file=sys.stderr)
        assert not found, "the simulator answers differently from the real Heketi:\n" + \
            "\n".join(detail(real.wire, sim.wire, d) for d in found)
