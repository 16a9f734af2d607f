"""The volfile server probe against real sockets on loopback: a glusterd that answers (a
listening socket), one that is dead (a closed port: refused) and one that is silent (a
listening socket whose backlog is full: the kernel drops the SYN, as for a host whose link is
down), all on one port on different loopback addresses; a name that cannot be resolved, in a
network namespace of its own (no DNS packet can leave it)."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass

import pytest

from services.node.mountopts import plan_mount
from services.node.volfile_servers import (
    MAX_SERVERS,
    REFUSED,
    TIMED_OUT,
    UNRESOLVABLE,
    VolfileProber,
)

UP, DEAD, SILENT, SILENT2 = "127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"


@dataclass
class Servers:
    port: int


def _listen(stack: ExitStack, address: str, port: int, backlog: int) -> socket.socket:
    sock = stack.enter_context(socket.socket())
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((address, port))
    sock.listen(backlog)
    return sock


def _fill_backlog(stack: ExitStack, address: str, port: int) -> None:
    """Connect to a `listen(0)` socket that never accepts until a connect is not answered:
    its accept queue is full and the kernel drops every further SYN."""
    for _ in range(8):
        client = socket.socket()
        client.settimeout(0.3)
        try:
            client.connect((address, port))
        except TimeoutError:
            client.close()
            return
        stack.enter_context(client)
    raise AssertionError(f"the backlog of {address}:{port} did not fill")


@pytest.fixture
def servers() -> Iterator[Servers]:
    with ExitStack() as stack:
        up = _listen(stack, UP, 0, 16)
        port = up.getsockname()[1]
        for silent in (SILENT, SILENT2):
            _listen(stack, silent, port, 0)
            _fill_backlog(stack, silent, port)
        # Nothing listens on DEAD:port: a connect is refused.
        yield Servers(port)


async def test_the_server_that_answers_goes_first_and_the_others_stay_backups(
        servers: Servers) -> None:
    prober = VolfileProber(0.5, port=servers.port)
    started = time.monotonic()
    order = await prober.order([SILENT, DEAD, UP, SILENT2])
    took = time.monotonic() - started
    assert order.servers == (UP, SILENT, DEAD, SILENT2)  # the others in their given order
    assert {s.server: s.reason for s in order.skipped} == {
        SILENT: TIMED_OUT, DEAD: REFUSED, SILENT2: TIMED_OUT}
    assert not order.none_answered
    # All at once: two silent servers cost one deadline, not two.
    assert took < 0.5 + 0.4


async def test_every_server_that_answers_keeps_its_place(servers: Servers) -> None:
    with ExitStack() as stack:
        _listen(stack, "127.0.0.6", servers.port, 16)
        order = await VolfileProber(0.5, port=servers.port).order(
            [DEAD, "127.0.0.6", SILENT, UP])
    assert order.servers == ("127.0.0.6", UP, DEAD, SILENT)
    assert [s.server for s in order.skipped] == [DEAD, SILENT]


async def test_when_none_answers_the_order_is_kept(servers: Servers) -> None:
    order = await VolfileProber(0.3, port=servers.port).order([SILENT, DEAD])
    assert order.none_answered
    assert order.servers == (SILENT, DEAD)
    assert [s.reason for s in order.skipped] == [TIMED_OUT, REFUSED]


async def test_at_most_sixteen_servers_are_probed(servers: Servers) -> None:
    many = [f"127.0.1.{i}" for i in range(1, MAX_SERVERS + 5)]  # all refused
    started = time.monotonic()
    order = await VolfileProber(0.5, port=servers.port).order([*many, UP])
    assert len(order.skipped) == MAX_SERVERS
    assert order.unprobed == (*many[MAX_SERVERS:], UP)
    # The one that answers is beyond the bound: not looked at, so nothing answered.
    assert order.none_answered and order.servers == (*many, UP)
    assert time.monotonic() - started < 0.5 + 0.4


async def test_a_mount_plan_takes_the_new_order(servers: Servers) -> None:
    plan = plan_mount("vol", [SILENT, DEAD], [UP], [], log_file="/var/log/x.log",
                      log_level="ERROR")
    order = await VolfileProber(0.3, port=servers.port).order(plan.servers)
    moved = plan.with_servers(order.servers)
    assert moved.source == f"{UP}:vol"
    assert f"backup-volfile-servers={SILENT}:{DEAD}" in moved.options
    assert [o for o in moved.options if not o.startswith("backup-")] == \
        [o for o in plan.options if not o.startswith("backup-")]
    with pytest.raises(ValueError):
        plan.with_servers([UP, "127.0.0.9"])


_IN_NAMESPACE = """
import asyncio, json, sys
from services.node.volfile_servers import VolfileProber
order = asyncio.run(VolfileProber(1.0).order(["gluster-x.invalid", "127.0.0.1"]))
print(json.dumps({"servers": order.servers, "skipped": [[s.server, s.reason]
                  for s in order.skipped]}))
"""


def test_a_name_that_does_not_resolve_is_skipped_as_unresolvable() -> None:
    """In a network namespace of its own (only a loopback that is down), a DNS lookup fails at
    once and nothing leaves the machine; 127.0.0.1 is unreachable there too."""
    result = subprocess.run(
        ["unshare", "--net", sys.executable, "-c", _IN_NAMESPACE],
        capture_output=True, text=True, timeout=30, cwd=os.getcwd(), check=False)
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout)
    reasons = dict(outcome["skipped"])
    assert reasons["gluster-x.invalid"].startswith(UNRESOLVABLE)
    assert not reasons["127.0.0.1"].startswith(UNRESOLVABLE)
    assert outcome["servers"] == ["gluster-x.invalid", "127.0.0.1"]


async def test_the_probe_does_not_use_the_default_executor(servers: Servers) -> None:
    """Name lookups run in the prober's own lane: a default executor whose only thread is
    busy does not delay them."""
    loop = asyncio.get_running_loop()
    from concurrent.futures import ThreadPoolExecutor
    busy = ThreadPoolExecutor(max_workers=1)
    loop.set_default_executor(busy)
    blocker = loop.run_in_executor(None, time.sleep, 2)
    try:
        started = time.monotonic()
        order = await VolfileProber(0.5, port=servers.port).order(["localhost", UP])
        assert time.monotonic() - started < 0.9
        assert UP in order.servers[:2]
    finally:
        await blocker
        busy.shutdown()
