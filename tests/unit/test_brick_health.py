"""services/controller/brick_health.py: glusterd's port mapper asked over real loopback
sockets. The stand-in port mapper reads the call as glusterd does (record mark, SunRPC
header, program 34123456 v1 PORTBYBRICK, an XDR string) and answers with the 40-byte reply a
glusterd 10.3 sends (seen on the pool: tests/integration/test_server_down.py runs the real one).
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest

from services.controller import brick_health
from services.controller.brick_health import BrickState, PortMapError, verdict
from services.controller.heketi.types import Durability

# What glusterd answered for a running brick on port 57560 (op_ret 0, port 0xe0d8), with our xid.
REAL_REPLY = bytes.fromhex(
    "6863736900000001000000000000000000000000000000000000000000000000000000000000e0d8")


def _reply(port: int, op_ret: int = 0) -> bytes:
    body = struct.pack(">3I", brick_health._XID, 1, 0) + struct.pack(">3I", 0, 0, 0)
    return body + struct.pack(">4i", op_ret, 0, 0, port)


def test_the_call_is_what_glusterd_reads() -> None:
    call = brick_health.portbybrick_call("/b/brick1")
    (mark,) = struct.unpack_from(">I", call)
    assert mark & 0x80000000 and mark & 0x7FFFFFFF == len(call) - 4
    assert struct.unpack_from(">6I", call, 4) == (brick_health._XID, 0, 2, 34123456, 1, 1)
    assert struct.unpack_from(">I", call, 4 + 40)[0] == len("/b/brick1")
    assert call[48:57] == b"/b/brick1" and call[57:] == b"\0" * 3 and len(call) % 4 == 0


def test_the_reply_of_a_real_glusterd_gives_the_port() -> None:
    assert brick_health.parse_portbybrick_reply(REAL_REPLY) == 57560
    assert brick_health.parse_portbybrick_reply(_reply(0, op_ret=-1)) is None


@pytest.mark.parametrize("broken", [REAL_REPLY[:20], b"\0" * 40,
                                    REAL_REPLY[:20] + b"\0\0\0\x01" + REAL_REPLY[24:]])
def test_a_broken_reply_is_an_error(broken: bytes) -> None:
    with pytest.raises(PortMapError):
        brick_health.parse_portbybrick_reply(broken)


Answer = Callable[[str], bytes | None]  # brick path -> reply record (None: stay silent)


@asynccontextmanager
async def port_mapper(answer: Answer) -> AsyncIterator[int]:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                (mark,) = struct.unpack(">I", await reader.readexactly(4))
                call = await reader.readexactly(mark & 0x7FFFFFFF)
                (length,) = struct.unpack_from(">I", call, 40)
                reply = answer(call[44:44 + length].decode())
                if reply is None:
                    await asyncio.sleep(3600)
                writer.write(struct.pack(">I", 0x80000000 | len(reply)) + reply)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


async def _free_port() -> int:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port: int = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    return port


async def test_each_brick_is_up_down_or_unanswered_and_why() -> None:
    brick = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    live = brick.sockets[0].getsockname()[1]
    closed = await _free_port()
    replies = {"/up": _reply(live), "/gone": _reply(0, op_ret=-1), "/closed": _reply(closed)}
    try:
        async with port_mapper(replies.get) as pmap:
            states = await brick_health.look(
                [("127.0.0.1", p) for p in ("/up", "/gone", "/closed")], 2.0, pmap)
    finally:
        brick.close()
    assert states == [
        BrickState("127.0.0.1", "/up", True),
        BrickState("127.0.0.1", "/gone", False,
                   "no brick process (glusterd knows no port for it: stopped, or never started)"),
        BrickState("127.0.0.1", "/closed", False, f"its port {closed} does not accept")]


async def test_a_silent_or_absent_glusterd_costs_one_deadline() -> None:
    async with port_mapper(lambda path: None) as silent:
        loop = asyncio.get_running_loop()
        started = loop.time()
        [state] = await brick_health.look([("127.0.0.1", "/b")], 0.3, silent)
        assert loop.time() - started < 1.0
    assert state == BrickState("127.0.0.1", "/b", False,
                               "its server's glusterd did not answer in time")
    [refused] = await brick_health.look([("127.0.0.1", "/b")], 1.0, await _free_port())
    assert refused.reason == "its server's glusterd refused the connection"


async def test_an_oversized_reply_is_refused() -> None:
    async with port_mapper(lambda path: b"\0" * (brick_health.MAX_REPLY + 4)) as pmap:
        [state] = await brick_health.look([("127.0.0.1", "/b")], 1.0, pmap)
    assert not state.up and "answered oddly" in state.reason


def _states(up: list[bool]) -> list[BrickState]:
    return [BrickState(f"10.0.0.{i + 1}", f"/b{i}", u, "" if u else "its server is unreachable")
            for i, u in enumerate(up)]


def test_the_verdict_of_a_replica_3_volume() -> None:
    r3 = Durability.replicate(3)
    assert verdict(_states([True] * 3), r3) == (False, "all 3 bricks are up")
    assert verdict(_states([True, True, False]), r3) == (True, (
        "degraded: 1 of 3 bricks down, the volume still writes "
        "(10.0.0.3:/b2: its server is unreachable)"))
    abnormal, message = verdict(_states([True, False, False]), r3)
    assert abnormal and message.startswith(
        "quorum lost: 2 of 3 bricks down, writes fail until 1 more is up")


def test_the_verdict_of_disperse_distribute_and_many_sets() -> None:
    d = Durability.disperse(4, 2)
    assert verdict(_states([True] * 4 + [False] * 2), d)[1].startswith("degraded: 2 of 6")
    assert verdict(_states([True] * 3 + [False] * 3), d)[1].startswith("quorum lost: 3 of 6")
    assert verdict(_states([True, False]), Durability())[1].startswith(
        "1 of 2 bricks down: the files on them are unavailable")
    assert verdict(_states([True] * 5 + [False]), Durability.replicate(3))[1].startswith(
        "1 of 6 bricks down (")
    assert verdict([], Durability.replicate(3)) == (
        True, "Heketi reports the volume without bricks")
