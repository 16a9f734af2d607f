"""Whether a volume's bricks are up, asked the way a gluster client finds them.

For each brick (its server from Heketi's node, its path from Heketi's brick): glusterd's port
mapper on that server (TCP 24007, SunRPC program 34123456 version 1, procedure PORTBYBRICK,
no credentials) says on which port the brick process listens, or that none is running; a TCP
connect to that port says whether it accepts. Nothing here is a gluster transaction: unlike
`gluster volume status`, which with a server powered off held glusterd's cluster lock for
minutes on our pool (every create and delete failed meanwhile; docs/deploy.md), asking
cannot block glusterd, and a server down or cut off costs one deadline. Each server is asked
once per look, however many bricks it holds, and every brick is asked at once, within
`seconds`.

A brick is down when its server does not answer, knows no process for it, or its port does
not accept. The verdict: healthy; degraded (some bricks down, every set still has enough to
write: a majority of a replica set, the data count of a disperse set); or quorum lost. The
sets are known for a volume of one set (its bricks are its replica or disperse count); for
more sets, the count of down bricks is reported without a verdict on each set.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from services.controller.heketi.types import Durability

GLUSTERD_PORT = 24007
PMAP_PROGRAM = 34123456
PMAP_VERSION = 1
PMAP_PORTBYBRICK = 1
# An answer larger than this is not the port mapper's (it is 40 bytes).
MAX_REPLY = 1024
# Bounds on one look: bricks asked, characters of a path sent.
MAX_BRICKS = 512
MAX_PATH = 4096
_XID = 0x68637369  # any: one call per connection


class PortMapError(Exception):
    """The port mapper's answer could not be read (not glusterd, or a broken reply)."""


@dataclass(frozen=True)
class BrickState:
    host: str
    path: str
    up: bool
    reason: str = ""  # why it is down

    def label(self) -> str:
        return f"{self.host}:{self.path}"


def _xdr_string(value: str) -> bytes:
    data = value.encode("utf-8")
    return struct.pack(">I", len(data)) + data + b"\0" * (-len(data) % 4)


def portbybrick_call(path: str) -> bytes:
    """The record-marked SunRPC call asking for the port of brick `path`."""
    body = struct.pack(">6I", _XID, 0, 2, PMAP_PROGRAM, PMAP_VERSION, PMAP_PORTBYBRICK)
    body += struct.pack(">4I", 0, 0, 0, 0)  # AUTH_NULL credentials and verifier
    body += _xdr_string(path)
    return struct.pack(">I", 0x80000000 | len(body)) + body


def parse_portbybrick_reply(record: bytes) -> int | None:
    """The brick's port from the port mapper's reply, None when no process serves it."""
    try:
        xid, kind, reply_stat = struct.unpack_from(">3I", record, 0)
        if xid != _XID or kind != 1 or reply_stat != 0:
            raise PortMapError("the call was not accepted")
        _flavor, length = struct.unpack_from(">2I", record, 12)
        offset = 20 + length + (-length % 4)
        (accept_stat,) = struct.unpack_from(">I", record, offset)
        if accept_stat != 0:
            raise PortMapError(f"the call failed (accept status {accept_stat})")
        op_ret, _op_errno, _status, port = struct.unpack_from(">4i", record, offset + 4)
    except struct.error:
        raise PortMapError("the reply is truncated") from None
    if op_ret != 0 or not 0 < port < 65536:
        return None
    return int(port)


async def _read_record(reader: asyncio.StreamReader) -> bytes:
    record = b""
    while True:
        (mark,) = struct.unpack(">I", await reader.readexactly(4))
        length = mark & 0x7FFFFFFF
        if len(record) + length > MAX_REPLY:
            raise PortMapError(f"a reply of more than {MAX_REPLY} bytes")
        record += await reader.readexactly(length)
        if mark & 0x80000000:
            return record


async def _ports(host: str, paths: Sequence[str], port: int) -> dict[str, int | None]:
    """The port of each brick path on `host`, over one connection to its glusterd."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        found: dict[str, int | None] = {}
        for path in paths:
            writer.write(portbybrick_call(path))
            await writer.drain()
            found[path] = parse_portbybrick_reply(await _read_record(reader))
        return found
    finally:
        writer.close()


async def _accepts(host: str, port: int) -> bool:
    try:
        _reader, writer = await asyncio.open_connection(host, port)
    except OSError:
        return False
    writer.close()
    return True


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "its server's glusterd did not answer in time"
    if isinstance(exc, ConnectionRefusedError):
        return "its server's glusterd refused the connection"
    if isinstance(exc, OSError):
        return f"its server is unreachable ({exc.strerror or exc})"
    if isinstance(exc, asyncio.IncompleteReadError):
        return "its server's glusterd closed the connection"
    if isinstance(exc, UnicodeError):
        return "Heketi names its server with a hostname that cannot be looked up"
    return f"its server's glusterd answered oddly ({exc})"


async def _server(host: str, paths: list[str], glusterd_port: int) -> list[BrickState]:
    try:
        ports = await _ports(host, paths, glusterd_port)
    except (OSError, TimeoutError, ValueError, asyncio.IncompleteReadError, PortMapError) as exc:
        return [BrickState(host, p, False, _reason(exc)) for p in paths]
    states = []
    for path in paths:
        port = ports[path]
        if port is None:
            states.append(BrickState(host, path, False, "no brick process (glusterd knows no "
                                     "port for it: stopped, or never started)"))
        elif not await _accepts(host, port):
            states.append(BrickState(host, path, False, f"its port {port} does not accept"))
        else:
            states.append(BrickState(host, path, True))
    return states


async def look(bricks: Sequence[tuple[str, str]], seconds: float,
               glusterd_port: int = GLUSTERD_PORT) -> list[BrickState]:
    """The state of each (server, path) brick, in the order given, within `seconds`."""
    bricks = [(h, p[:MAX_PATH]) for h, p in bricks[:MAX_BRICKS]]
    by_host: dict[str, list[str]] = {}
    for host, path in bricks:
        by_host.setdefault(host, []).append(path)

    async def bounded(host: str, paths: list[str]) -> list[BrickState]:
        try:
            return await asyncio.wait_for(_server(host, paths, glusterd_port), seconds)
        except TimeoutError as exc:
            return [BrickState(host, p, False, _reason(exc)) for p in paths]

    answers = await asyncio.gather(*(bounded(h, ps) for h, ps in by_host.items()))
    state = {(s.host, s.path): s for answer in answers for s in answer}
    return [state[b] for b in bricks]


def _set_needs(durability: Durability) -> tuple[int, int] | None:
    """(bricks per set, bricks a set needs up to write), or None for plain distribute."""
    if durability.type == "replicate" and durability.replica > 1:
        return durability.replica, durability.replica // 2 + 1
    if durability.type == "disperse" and durability.data > 0:
        return durability.data + durability.redundancy, durability.data
    return None


def verdict(states: Sequence[BrickState], durability: Durability) -> tuple[bool, str]:
    """(abnormal, message) for a volume whose bricks are in `states`."""
    down = [s for s in states if not s.up]
    if not states:
        return True, "Heketi reports the volume without bricks"
    if not down:
        return False, f"all {len(states)} bricks are up"
    listed = "; ".join(f"{s.label()}: {s.reason}" for s in down)
    head = f"{len(down)} of {len(states)} bricks down"
    shape = _set_needs(durability)
    if shape is not None and len(states) == shape[0]:
        up = len(states) - len(down)
        if up >= shape[1]:
            return True, f"degraded: {head}, the volume still writes ({listed})"
        return True, (f"quorum lost: {head}, writes fail until {shape[1] - up} more "
                      f"{'is' if shape[1] - up == 1 else 'are'} up ({listed})")
    if shape is None:
        return True, f"{head}: the files on them are unavailable ({listed})"
    return True, f"{head} ({listed})"
