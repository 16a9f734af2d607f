"""services/node/client_bricks.py: the bricks a gluster client reaches, from its mount's .meta
tree and from its statedump. The trees and dumps here have the layout a glusterfs 10.3 client
writes (seen on the real pool, tests/integration/test_node_on_pool.py); the statedump is written
by a real process whose comm is `glusterfs`, on SIGUSR1, as the client does."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.node import client_bricks
from services.node.client_bricks import Brick, ClientBricks, dump_connections, parse_statedump
from tests.support.conditions import until


def _brick_dir(active: Path, name: str, host: str, path: str, connected: int) -> None:
    here = active / name
    (here / "options").mkdir(parents=True)
    (here / "type").write_text("protocol/client\n")
    (here / "options" / "remote-host").write_text(f"{host}\n")
    (here / "options" / "remote-subvolume").write_text(f"{path}\n")
    (here / "private").write_text(
        f"connected = {connected}\ntotal_bytes_read = 3048\nping_timeout = 5\n")


def _meta_tree(mount: Path, states: list[int]) -> Path:
    active = mount / ".meta" / "graphs" / "active"
    active.mkdir(parents=True)
    for i, up in enumerate(states):
        _brick_dir(active, f"vq-client-{i}", f"10.0.0.{i + 1}", f"/bricks/{i}/brick", up)
    replicate = active / "vq-replicate-0"
    replicate.mkdir()
    (replicate / "type").write_text("cluster/replicate\n")
    (replicate / "private").write_text("child_count = 3\nup = 1\n")
    (active / "meta-autoload").mkdir()
    (active / "top").symlink_to("meta-autoload")
    return active


def test_read_meta_gives_each_client_translator_with_its_server_and_connection(
        tmp_path: Path) -> None:
    _meta_tree(tmp_path, [1, 0, 1])
    assert client_bricks.read_meta(str(tmp_path)) == [
        Brick("vq-client-0", "10.0.0.1", "/bricks/0/brick", True),
        Brick("vq-client-1", "10.0.0.2", "/bricks/1/brick", False),
        Brick("vq-client-2", "10.0.0.3", "/bricks/2/brick", True),
    ]


def test_read_meta_follows_no_link(tmp_path: Path) -> None:
    active = _meta_tree(tmp_path / "mnt", [1])
    outside = tmp_path / "outside"
    _brick_dir(outside, "evil", "10.9.9.9", "/evil", 0)
    (active / "zz-link").symlink_to(outside / "evil")
    bricks = client_bricks.read_meta(str(tmp_path / "mnt"))
    assert bricks is not None and [b.name for b in bricks] == ["vq-client-0"]


def test_read_meta_of_a_mount_without_meta_is_none(tmp_path: Path) -> None:
    assert client_bricks.read_meta(str(tmp_path)) is None


def test_read_meta_bounds_what_it_reads(tmp_path: Path) -> None:
    active = _meta_tree(tmp_path, [1])
    (active / "vq-client-0" / "options" / "remote-host").write_text("h" * 100_000)
    bricks = client_bricks.read_meta(str(tmp_path))
    assert bricks is not None and len(bricks[0].host) == client_bricks.META_FILE_BYTES


DUMP = textwrap.dedent("""\
    DUMP-START-TIME: 2026-12-07 16:25:41.976950 +0000

    [xlator.protocol.client.vq-client-0.priv]
    connected=1
    total_bytes_read=3596
    ping_timeout=5

    [vq-client-0.latency]
    connected=0

    [xlator.protocol.client.vq-client-1.priv]
    connected=0
    total_bytes_read=3596

    [xlator.protocol.client.vq-client-2.priv]
    total_bytes_read=3596
    connected=0

    [xlator.cluster.replicate.vq-replicate-0.priv]
    connected=1

    DUMP-END-TIME: 2026-12-07 16:25:41.978485 +0000""")


def test_parse_statedump_reads_only_the_client_sections() -> None:
    assert parse_statedump(DUMP.splitlines()) == {
        "vq-client-0": True, "vq-client-1": False, "vq-client-2": False}


def test_parse_statedump_keeps_at_most_max_bricks() -> None:
    lines = []
    for i in range(client_bricks.MAX_BRICKS + 50):
        lines += [f"[xlator.protocol.client.v-client-{i}.priv]", "connected=1"]
    assert len(parse_statedump(lines)) == client_bricks.MAX_BRICKS


# A stand-in client: a process named `glusterfs` (prctl PR_SET_NAME) that writes its dump on
# SIGUSR1 the way the client does: the start first, the end a moment later.
FAKE_CLIENT = textwrap.dedent("""\
    import ctypes, os, signal, sys, time
    ctypes.CDLL(None).prctl(15, b"glusterfs", 0, 0, 0)
    dump_dir, body = sys.argv[1], open(sys.argv[2]).read()
    def dump(signum, frame):
        path = os.path.join(dump_dir, f"glusterdump.{os.getpid()}.dump.{int(time.time())}")
        with open(path, "w") as out:
            out.write(body[: len(body) // 2]); out.flush(); time.sleep(0.1)
            out.write(body[len(body) // 2 :])
    signal.signal(signal.SIGUSR1, dump)
    print("ready", flush=True)
    while True:
        time.sleep(1)
""")


@pytest.fixture
def fake_client(tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    (tmp_path / "dumps").mkdir()
    (tmp_path / "body").write_text(DUMP)
    proc = subprocess.Popen(
        [sys.executable, "-c", FAKE_CLIENT, str(tmp_path / "dumps"), str(tmp_path / "body")],
        stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    yield proc
    proc.kill()
    proc.wait()


def test_dump_connections_asks_the_client_and_removes_its_dump(
        tmp_path: Path, fake_client: subprocess.Popen[str]) -> None:
    dumps = tmp_path / "dumps"
    (dumps / "glusterdump.1.dump.1").write_text("someone else's")
    assert dump_connections(fake_client.pid, dumps) == {
        "vq-client-0": True, "vq-client-1": False, "vq-client-2": False}
    assert [p.name for p in dumps.iterdir()] == ["glusterdump.1.dump.1"]
    assert fake_client.poll() is None


def test_dump_connections_never_signals_a_process_that_is_not_glusterfs(tmp_path: Path) -> None:
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        assert dump_connections(sleeper.pid, tmp_path) is None
        assert sleeper.poll() is None  # SIGUSR1 would have ended it
    finally:
        sleeper.kill()
        sleeper.wait()


async def test_dump_connections_gives_up_on_a_client_that_writes_no_dump(
        tmp_path: Path, fake_client: subprocess.Popen[str]) -> None:
    os.kill(fake_client.pid, signal.SIGSTOP)
    try:
        assert dump_connections(fake_client.pid, tmp_path / "dumps", seconds=0.3) is None
    finally:
        os.kill(fake_client.pid, signal.SIGCONT)
    # the dump it writes once continued is removed by the next ask of that client
    await until(lambda: any((tmp_path / "dumps").iterdir()), "the late dump", 5.0)
    late = next((tmp_path / "dumps").iterdir())
    os.utime(late, (1, 1))  # as if it came a few seconds earlier (another name then)
    late.rename(late.with_name(f"glusterdump.{fake_client.pid}.dump.1"))
    assert dump_connections(fake_client.pid, tmp_path / "dumps", late=True) is not None
    assert list((tmp_path / "dumps").iterdir()) == []


async def test_a_dump_is_named_after_the_last_meta_reading(
        tmp_path: Path, fake_client: subprocess.Popen[str]) -> None:
    mount = tmp_path / "mnt"
    _meta_tree(mount, [1, 1, 1])
    bricks = ClientBricks(2.0, dump_dir=tmp_path / "dumps")
    assert [b.connected for b in await bricks.view(str(mount)) or []] == [True, True, True]
    dumped = await bricks.dumped(str(mount), [fake_client.pid])
    assert dumped == [Brick("vq-client-0", "10.0.0.1", "/bricks/0/brick", True),
                      Brick("vq-client-1", "10.0.0.2", "/bricks/1/brick", False),
                      Brick("vq-client-2", "10.0.0.3", "/bricks/2/brick", False)]
    bricks.forget(str(mount))
    unnamed = await bricks.dumped(str(mount), [fake_client.pid])
    assert unnamed is not None and [b.label() for b in unnamed] == [
        "vq-client-0", "vq-client-1", "vq-client-2"]


def test_the_messages_name_the_unreachable_bricks() -> None:
    up = Brick("v-client-0", "10.0.0.1", "/b0", True)
    down = [Brick(f"v-client-{i}", f"10.0.0.{i + 1}", f"/b{i}", False) for i in (1, 2)]
    assert client_bricks.degraded([up, up]) is None
    assert client_bricks.degraded([up, up, down[0]]) == (
        "degraded: 1 of 3 bricks unreachable from this node (10.0.0.2:/b1); I/O goes on with "
        "the others while the volume's quorum holds")
    assert client_bricks.lost([7], [up, *down]) == (
        "the gluster client (pid 7) is running but reaches only 1 of 3 bricks (too few for "
        "the volume's quorum), unreachable: 10.0.0.2:/b1, 10.0.0.3:/b2; I/O fails until "
        "enough of its servers return")
    assert "client quorum lost" in client_bricks.lost([7], None)
