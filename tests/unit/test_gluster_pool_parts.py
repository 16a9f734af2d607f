"""The pure parts of devtools/gluster_pool: names, subnets, the writer's log, mountinfo."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from devtools.gluster_pool import reaper
from devtools.gluster_pool.network import check_subnet_free
from devtools.gluster_pool.pool import GlusterPool, PoolConfig, check_volume_name
from devtools.gluster_pool.processes import PoolError
from devtools.gluster_pool.state import PoolState, Server, merge
from devtools.gluster_pool.writer_log import Writer


@pytest.mark.parametrize("name", ["", "Gpool", "1pool", "a" * 11, "g-pool", "g/p"])
def test_bad_pool_names_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="pool name"):
        PoolConfig(name=name)


@pytest.mark.parametrize("subnet", ["192.168.1", "10.1", "10.300.0", "10.1.2.3", "x"])
def test_subnets_outside_ten_slash_eight_are_refused(subnet: str) -> None:
    with pytest.raises(ValueError, match="subnet"):
        PoolConfig(subnet=subnet)


@pytest.mark.parametrize("servers", [0, 10])
def test_server_counts_are_bounded(servers: int) -> None:
    with pytest.raises(ValueError, match="servers"):
        PoolConfig(servers=servers)


@pytest.mark.parametrize("name", ["../x", "a b", "", "v" * 129, "a/b"])
def test_volume_names_that_would_leave_the_brick_directory_are_refused(name: str) -> None:
    with pytest.raises(PoolError, match="volume name"):
        check_volume_name(name)


ROUTES = json.dumps([
    {"dst": "default", "dev": "eth0"},
    {"dst": "192.0.2.0/24", "dev": "eth0"},
    {"dst": "10.244.0.0/24", "dev": "cni0"},
    {"dst": "10.231.0.0/24", "dev": "hcsi-gpool"},
])
ADDRS = json.dumps([{"ifname": "eth0", "addr_info": [{"family": "inet", "local": "192.0.2.2"}]},
                    {"ifname": "hcsi-gpool",
                     "addr_info": [{"family": "inet", "local": "10.231.0.1"}]}])


def test_a_free_subnet_passes_and_our_own_route_does_not_count() -> None:
    check_subnet_free("10.231.0", "hcsi-gpool", ROUTES, ADDRS)


def test_a_subnet_clashing_with_a_route_is_refused() -> None:
    with pytest.raises(PoolError, match=r"overlaps the host's route to 10\.244\.0\.0/24"):
        check_subnet_free("10.244.0", "hcsi-gpool", ROUTES, ADDRS)


def test_a_subnet_holding_a_host_address_is_refused() -> None:
    addrs = json.dumps([{"ifname": "dummy0",
                         "addr_info": [{"family": "inet", "local": "10.231.9.7"}]}])
    with pytest.raises(PoolError, match=r"holds the host.s address 10\.231\.9\.7"):
        check_subnet_free("10.231.9", "hcsi-gpool", "[]", addrs)


def test_state_round_trips(tmp_path: Path) -> None:
    state = PoolState("gpool", "10.231.0", 3, 1 << 30, switch_pid=12,
                      members={"1": Server(1, "running", 34, "pid:[1]", "net:[2]", "/dev/loop3",
                                           {"b1": "/dev/loop4"})},
                      pid_namespaces=["pid:[1]"])
    state.save(tmp_path / "state.json")
    assert PoolState.load(tmp_path / "state.json") == state
    assert PoolState.load(tmp_path / "missing.json") is None


def test_two_processes_changing_one_pool_keep_each_others_changes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The simulator adds a brick file system on server 2 while a test, which read the
    state before, powers server 3 off: the state file ends with both, and the Server the
    test holds is still the pool's."""
    monkeypatch.setenv("HCSI_GLUSTER_POOL_ROOT", str(tmp_path))
    first = GlusterPool(PoolConfig(name="gmerge", subnet="10.231.99"), log=lambda _l: None)
    for i in first.indexes:
        first.state.server(i).status = "running"
        first.state.server(i).filesystems = {"old": f"/dev/loop{i}"}
    first._save()
    simulator = GlusterPool(PoolConfig(name="gmerge"), log=lambda _l: None)
    test = GlusterPool(PoolConfig(name="gmerge"), log=lambda _l: None)
    held = test.state.server(3)

    simulator.state.server(2).filesystems["brick_new"] = "/dev/loop7"
    del simulator.state.server(1).filesystems["old"]
    simulator._save()
    held.status = "off"
    test._save()
    held.pid = 99  # changed after the merge: still the pool's Server
    test._save()

    on_disk = PoolState.load(test.state_path)
    assert on_disk is not None
    assert on_disk.server(2).filesystems == {"old": "/dev/loop2", "brick_new": "/dev/loop7"}
    assert on_disk.server(1).filesystems == {}
    assert (on_disk.server(3).status, on_disk.server(3).pid) == ("off", 99)
    assert test.state == on_disk
    simulator.reload()
    assert simulator.state == on_disk


def test_the_merge_takes_this_processs_changes_over_the_files() -> None:
    base = {"a": 1, "b": 2, "gone": 0, "list": ["x", "y"], "d": {"k": 1}}
    mine = {"a": 1, "b": 3, "new": 4, "list": ["x", "z"], "d": {"k": 2}}
    theirs = {"a": 5, "b": 2, "gone": 0, "theirs": 6, "list": ["x", "y", "w"], "d": {"k": 1}}
    assert merge(base, mine, theirs) == {
        "a": 5, "b": 3, "new": 4, "theirs": 6, "list": ["x", "w", "z"], "d": {"k": 2}}


def test_the_writer_log_is_read_line_by_line(tmp_path: Path) -> None:
    log = tmp_path / "w.log"
    log.write_text("OK 0 100.000 0.010\nOK 1 100.100 4.500\nERR 2 104.600 0.001 ENOTCONN\n"
                   "OK 3 104.7")  # a line being written
    writer = Writer(tmp_path / "f", log)
    assert writer.acked() == [0, 1]
    assert [(e.n, e.error) for e in writer.errors()] == [(2, "ENOTCONN")]
    assert writer.longest() == 4.5
    assert writer.longest(since=100.05) == 4.5
    assert writer.oks_after(100.05) == 1


def test_mountinfo_escapes_are_undone_and_the_kept_mounts_kept() -> None:
    assert reaper._unescape(r"/mnt/a\040b\011c") == "/mnt/a b\tc"
    assert reaper._unescape("/plain") == "/plain"
    assert reaper._kept("/") and reaper._kept("/proc/sys/fs/binfmt_misc")
    assert not reaper._kept("/run") and not reaper._kept("/procfoo")


def test_heketi_length_volume_names_are_accepted() -> None:
    # the driver's snapshot clones: snap_<32 hex>_<time>_hcss-<hash>, ~80 characters
    name = "snap_" + "c" * 32 + "_1796612651_hcss-" + "a" * 28
    assert check_volume_name(name) == name
