"""Which of a volume's servers to ask for its volfile first: the ones whose glusterd answers.

`mount -t glusterfs` asks its first server for the volume's description (the volfile) and
tries a `backup-volfile-servers` entry only after that one failed. A server that refuses the
connection (glusterd dead, the host up) costs about 3 s; one that is silently gone (link
down, powered off) costs gluster's whole connect timeout, ~45 s, on every NodeStage of the
node. So before mounting, the node connects to each server's management port (glusterd,
TCP 24007) at once, all within one short deadline, and hands the mount the servers that
answered first, in the order it was given (Heketi's), then the others (they stay backups: a
server that comes back is still tried). When none answers, the order stays as it was and
the mount's own error is what the caller sees.

Bounds: at most `MAX_SERVERS` servers are probed (later ones are kept, unprobed, at the
end); names are resolved in a lane of a few threads of its own (`offloop.Lane`, one lookup
per name in flight), never on the event loop nor on the default executor, and a lookup
that hangs counts as timed out at the deadline like a silent connect.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import socket
from collections.abc import Sequence
from dataclasses import dataclass

from services.node.offloop import Hung, Lane

# glusterd's management port: what a mount asks for the volfile.
MANAGEMENT_PORT = 24007
# Seconds all servers together are given to answer, by default (--volfile-probe-timeout).
DEFAULT_DEADLINE = 1.0
# Servers probed at most (a volume's hosts plus its backup volfile servers).
MAX_SERVERS = 16
# Threads that resolve names (IP addresses need none).
RESOLVE_THREADS = 4

REFUSED = "refused"
TIMED_OUT = "timed out"
UNRESOLVABLE = "unresolvable"
UNREACHABLE = "unreachable"


@dataclass(frozen=True)
class Skipped:
    """A server that did not answer, and why: refused, timed out, unresolvable or
    unreachable (with the system's words for the last two)."""

    server: str
    reason: str


@dataclass(frozen=True)
class Ordering:
    """The servers in the order to hand to the mount, and those that did not answer."""

    servers: tuple[str, ...]
    skipped: tuple[Skipped, ...]
    unprobed: tuple[str, ...] = ()  # beyond MAX_SERVERS, kept at the end as they came

    @property
    def none_answered(self) -> bool:
        """True when every probed server was skipped: `servers` is then the given order."""
        return len(self.skipped) == len(self.servers) - len(self.unprobed)


class VolfileProber:
    """Connects to each server's management port within `deadline` seconds, all at once."""

    def __init__(self, deadline: float = DEFAULT_DEADLINE, port: int = MANAGEMENT_PORT,
                 lane: Lane | None = None) -> None:
        if deadline <= 0:
            raise ValueError("the volfile probe deadline must be positive")
        self.deadline = deadline
        self.port = port
        self._lane = lane or Lane("resolve", RESOLVE_THREADS)

    async def order(self, servers: Sequence[str]) -> Ordering:
        """`servers` reachable first (each group in its given order); see the module text."""
        probed, unprobed = tuple(servers[:MAX_SERVERS]), tuple(servers[MAX_SERVERS:])
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.deadline
        reasons = await asyncio.gather(*(self._probe(s, deadline) for s in probed))
        skipped = tuple(Skipped(s, r) for s, r in zip(probed, reasons, strict=True)
                        if r is not None)
        answered = [s for s, r in zip(probed, reasons, strict=True) if r is None]
        if not answered:
            return Ordering((*probed, *unprobed), skipped, unprobed)
        others = [s for s, r in zip(probed, reasons, strict=True) if r is not None]
        return Ordering((*answered, *others, *unprobed), skipped, unprobed)

    async def _probe(self, server: str, deadline: float) -> str | None:
        """None when `server`'s glusterd accepts a connection by `deadline`, else why not."""
        loop = asyncio.get_running_loop()
        try:
            addresses = await self._lane.run(
                f"resolve {server}", functools.partial(_addresses, server, self.port),
                max(0.0, deadline - loop.time()), share=True)
        except Hung:
            return f"{TIMED_OUT} (resolving the name)"
        except socket.gaierror as exc:
            return f"{UNRESOLVABLE} ({exc.strerror or exc})"
        except (OSError, UnicodeError) as exc:
            return f"{UNRESOLVABLE} ({exc})"
        if not addresses:
            return f"{UNRESOLVABLE} (no address)"
        refused: str | None = None
        for family, address in addresses:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                reason = await asyncio.wait_for(self._connect(family, address), remaining)
            except TimeoutError:
                return TIMED_OUT
            if reason is None:
                return None
            refused = refused or reason
        return refused or TIMED_OUT

    async def _connect(self, family: int, address: tuple[str, int]) -> str | None:
        try:
            _, writer = await asyncio.open_connection(
                address[0], address[1], family=family, proto=socket.IPPROTO_TCP)
        except ConnectionRefusedError:
            return REFUSED
        except OSError as exc:
            return f"{UNREACHABLE} ({exc.strerror or exc})"
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return None


def _addresses(server: str, port: int) -> list[tuple[int, tuple[str, int]]]:
    """Blocking: the TCP addresses of `server` (an IP address needs no lookup)."""
    found = socket.getaddrinfo(server, port, type=socket.SOCK_STREAM,
                               proto=socket.IPPROTO_TCP)
    out: list[tuple[int, tuple[str, int]]] = []
    for family, _, _, _, sockaddr in found:
        entry = (int(family), (str(sockaddr[0]), int(sockaddr[1])))
        if entry not in out:
            out.append(entry)
    return out


def describe(skipped: Sequence[Skipped]) -> list[str]:
    """`server: reason` for each skipped server, for a log line."""
    return [f"{s.server}: {s.reason}" for s in skipped]
