"""A pool of GlusterFS servers on this machine, each in namespaces of its own.

    pool = GlusterPool(PoolConfig(name="gpool", servers=3))
    await pool.up()                       # servers, switch, host veth, trusted pool
    await pool.volume_create("r3", "replica")
    await pool.mount("r3", target)        # a FUSE mount from the host
    await pool.partition(2); await pool.restore(2); await pool.heal("r3")
    await pool.down()                     # everything, also what a killed `up` left

Server i (1-based) is `<subnet>.<10+i>`, the host `<subnet>.1`. Each server has a private
`/run` (a tmpfs: its glusterd must not replace the host's `/run/glusterd.socket`),
`/var/lib/glusterd`, `/var/log/glusterfs`, `/etc/hosts`, `/etc/resolv.conf` (no nameserver)
and its brick file system mounted at `<pool dir>/servers/<i>/bricks` in its own mount
namespace only. The host's glusterd and its files are never touched. Every operation prints
what it did and how long it took (through `log`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from devtools import glusterd as host_gluster
from devtools.gluster_pool import bricks, network
from devtools.gluster_pool.gluster import GlusterError, cli_text, cli_xml
from devtools.gluster_pool.processes import (
    ALL_NS,
    MARKER_PREFIX,
    PoolError,
    kill_namespace,
    marker,
    members_of,
    ns_id,
    nsenter,
    processes_named,
    reapers,
    run,
    signal_all,
    spawn_reaper,
    wait_gone,
)
from devtools.gluster_pool.state import (
    MAX_SERVERS,
    PoolState,
    Server,
    check_name,
    check_subnet,
    locked,
    merge,
    root,
)
from services.node import mountinfo

GIB = 1024 ** 3
GLUSTERD_TIMEOUT = 60.0
POOL_TIMEOUT = 60.0
HEAL_TIMEOUT = 180.0
MOUNT_TIMEOUT = 180.0
KINDS = ("distribute", "replica", "arbiter", "disperse")
FS_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# Heketi's names (the driver's snapshot clones are ~80 characters); gluster allows more.
VOLUME_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


@dataclass(frozen=True)
class PoolConfig:
    name: str = "gpool"
    servers: int = 3
    subnet: str = "10.231.0"
    image_bytes: int = GIB

    def __post_init__(self) -> None:
        check_name(self.name)
        check_subnet(self.subnet)
        if not 1 <= self.servers <= MAX_SERVERS:
            raise ValueError(f"servers: 1 to {MAX_SERVERS}, not {self.servers}")


@dataclass(frozen=True)
class Brick:
    host: str
    path: str


@dataclass(frozen=True)
class VolumeInfo:
    name: str
    type: str
    status: str
    bricks: list[Brick]
    options: dict[str, str]
    replica: int = 1
    arbiter: int = 0
    disperse: int = 0
    redundancy: int = 0


def check_volume_name(name: str) -> str:
    """Volume names become brick paths: letters, digits, `_` and `-` only (gluster's own
    rule is wider; nothing wider is needed here)."""
    if not VOLUME_NAME_RE.match(name):
        raise PoolError(f"volume name {name[:140]!r}: 1-128 letters, digits, _ and -")
    return name


def _under(path: str, base: Path) -> bool:
    return path == str(base) or path.startswith(str(base).rstrip("/") + "/")


class GlusterPool:
    def __init__(self, config: PoolConfig | None = None,
                 log: Callable[[str], None] = print) -> None:
        self.config = config or PoolConfig()
        self.log = log
        self.dir = root() / self.config.name
        self.state_path = self.dir / "state.json"
        loaded = PoolState.load(self.state_path)
        self.state = loaded or PoolState(self.config.name, self.config.subnet,
                                         self.config.servers, self.config.image_bytes)
        # the state as this process last read or wrote it (None: write ours over the file)
        self._read: dict[str, Any] | None = asdict(self.state)

    # --- names and places -------------------------------------------------------------

    @property
    def host_veth(self) -> str:
        return f"hcsi-{self.config.name}"

    @property
    def host_address(self) -> str:
        return f"{self.state.subnet}.1"

    def address(self, index: int) -> str:
        return f"{self.state.subnet}.{10 + index}"

    def hostname(self, index: int) -> str:
        return f"{self.config.name}-{index}"

    @property
    def indexes(self) -> list[int]:
        return list(range(1, self.state.servers + 1))

    def server_dir(self, index: int) -> Path:
        return self.dir / "servers" / str(index)

    def bricks_dir(self, index: int) -> Path:
        """Where server `index`'s brick file system is mounted (in its namespace only)."""
        return self.server_dir(index) / "bricks"

    @property
    def mounts_dir(self) -> Path:
        """A place for the host's FUSE mounts of pool volumes (`down` unmounts them)."""
        return self.dir / "mnt"

    def brick_path(self, index: int, volume: str) -> str:
        return f"{self.bricks_dir(index)}/{volume}/brick"

    def server_pid(self, index: int) -> int:
        server = self.state.members.get(str(index))
        if server is None or server.pid is None or server.status in ("off", "stopped"):
            raise PoolError(f"server {index} is not running (status "
                            f"{server.status if server else 'off'})")
        return server.pid

    def brick_file(self, index: int, volume: str, relative: str) -> Path:
        """A file of `volume`'s brick on server `index`, as seen in that server's mount
        namespace (through its PID 1's root)."""
        return Path(f"/proc/{self.server_pid(index)}/root{self.brick_path(index, volume)}") \
            / relative

    def reload(self) -> None:
        """Read the state file again (another process may have changed the pool)."""
        loaded = PoolState.load(self.state_path)
        if loaded is not None:
            self.state.take(loaded)
            self._read = asdict(self.state)

    def _save(self) -> None:
        """Write this process's changes to the state file, merged with what another process
        wrote since this one read it (the simulator adds brick file systems while a test
        stops and starts servers)."""
        with locked(self.state_path):
            theirs = PoolState.load(self.state_path)
            if theirs is not None and self._read is not None:
                self.state.take(PoolState.from_json(
                    merge(self._read, asdict(self.state), asdict(theirs))))
            self.state.save(self.state_path)
            self._read = asdict(self.state)

    @contextlib.contextmanager
    def _timed(self, what: str) -> Iterator[None]:
        self.log(f"{what} ...")
        start = time.monotonic()
        try:
            yield
        except BaseException as exc:
            self.log(f"{what}: FAILED after {time.monotonic() - start:.2f} s: {exc}")
            raise
        self.log(f"{what}: done in {time.monotonic() - start:.2f} s")

    def _fresh(self, index: int) -> None:
        """Before acting on server `index`: read the state again (another process, the
        Heketi simulator in pool mode, may have added brick file systems a start must
        mount), then check the index."""
        self.reload()
        self._check_index(index)

    def _check_index(self, index: int) -> None:
        if index not in self.indexes:
            raise PoolError(f"no server {index}: the pool has servers 1 to {self.state.servers}")

    # --- up -----------------------------------------------------------------------------

    async def up(self) -> None:
        """Start the switch, the host veth and every server, and form the trusted pool."""
        with self._timed(f"pool {self.config.name}: up ({self.config.servers} servers, "
                         f"{self.config.subnet}.0/24)"):
            await self._preflight()
            left = await self.leftovers()
            if left:
                raise PoolError(f"pool {self.config.name} is (partly) up already: run `down` "
                                "first. Found: " + "; ".join(left))
            self.state = PoolState(self.config.name, self.config.subnet, self.config.servers,
                                   self.config.image_bytes)
            self._read = None  # a new pool: nothing of an earlier state file is kept
            self.dir.mkdir(parents=True, exist_ok=True)
            self._save()
            await network.ensure_subnet_free(self.config.subnet, self.host_veth)
            self._write_files()
            pid = await spawn_reaper(self.config.name, "switch", self.dir / "switch.ready",
                                     self.dir / "logs" / "namespaces.log", new_pid_ns=False)
            self.state.switch_pid = pid
            self._save()
            await network.switch_up(pid)
            await network.host_link_up(pid, self.host_veth, self.host_address)
            self.log(f"  switch and host veth {self.host_veth} ({self.host_address}) up")
            await asyncio.gather(*(self._start_server(i) for i in self.indexes))
            await self._form_pool()

    async def _preflight(self) -> None:
        if os.geteuid() != 0:
            raise PoolError("the pool needs root (namespaces, loop devices, mounts)")
        missing = [b for b in ("glusterd", "gluster", "mkfs.xfs", "losetup", "unshare",
                               "nsenter", "ip", "setsid", "mount.glusterfs")
                   if shutil.which(b) is None]
        if missing:
            raise PoolError(f"missing {', '.join(missing)}: run `bash tools/setup.sh` "
                            "(glusterfs-server, glusterfs-client, xfsprogs)")

    def _write_files(self) -> None:
        hosts = ["127.0.0.1 localhost"]
        hosts += [f"{self.address(i)} {self.hostname(i)}" for i in self.indexes]
        (self.dir / "hosts").write_text("\n".join(hosts) + "\n")
        # no nameserver: glibc asks 127.0.0.1 inside the server's netns, no packet leaves
        (self.dir / "resolv.conf").write_text("options timeout:1 attempts:1\n")

    async def _start_server(self, index: int) -> None:
        start = time.monotonic()
        server = self.state.server(index)
        sdir = self.server_dir(index)
        for sub in ("lib", "log", "bricks"):
            (sdir / sub).mkdir(parents=True, exist_ok=True)
        image = sdir / "brick.img"
        await bricks.ensure_image(image, self.state.image_bytes)
        server.loop = await bricks.attach(image, server.loop)
        self._save()
        pid = await spawn_reaper(self.config.name, f"server{index}", sdir / "ready",
                                 self.dir / "logs" / "namespaces.log", new_pid_ns=True)
        server.pid, server.status = pid, "running"
        server.pid_ns, server.net_ns = ns_id(pid, "pid"), ns_id(pid, "net")
        if server.pid_ns and server.pid_ns not in self.state.pid_namespaces:
            self.state.pid_namespaces.append(server.pid_ns)
        self._save()
        assert self.state.switch_pid is not None
        await network.server_link_up(self.state.switch_pid, index, pid, self.hostname(index),
                                     self.address(index))
        mnt = nsenter(pid, "mount")
        await run([*mnt, "mount", "-t", "tmpfs", "-o", "mode=755", "tmpfs", "/run"],
                  f"server {index}: private /run")
        await run([*mnt, "mkdir", "-p", "/run/gluster", "/run/lock"], f"server {index}: /run")
        for source, target in ((sdir / "lib", "/var/lib/glusterd"),
                               (sdir / "log", "/var/log/glusterfs"),
                               (self.dir / "hosts", "/etc/hosts"),
                               (self.dir / "resolv.conf", "/etc/resolv.conf")):
            await run([*mnt, "mount", "--bind", str(source), target],
                      f"server {index}: bind {target}")
        await run([*mnt, "mount", "-t", "xfs", "-o", "noatime,inode64", server.loop,
                   str(self.bricks_dir(index))], f"server {index}: mount bricks")
        for fs_name in list(server.filesystems):
            await self._mount_fs(index, fs_name)
        # only the option groups: the hooks act on the shared /etc
        await asyncio.to_thread(_copy_groups, sdir / "lib" / "groups")
        await run([*nsenter(pid, *ALL_NS), "glusterd", "-p", "/run/glusterd.pid"],
                  f"server {index}: glusterd")
        await self._wait_glusterd(index)
        self.log(f"  server {index} ({self.address(index)}, {server.loop}) up in "
                 f"{time.monotonic() - start:.2f} s")

    async def _wait_glusterd(self, index: int) -> None:
        deadline = time.monotonic() + GLUSTERD_TIMEOUT
        last = ""
        while time.monotonic() < deadline:
            try:
                await cli_xml(self.server_pid(index), "pool", "list", seconds=10)
                return
            except PoolError as exc:
                last = str(exc)
            await asyncio.sleep(0.2)
        raise PoolError(f"glusterd on server {index} did not answer within "
                        f"{GLUSTERD_TIMEOUT:.0f} s: {last}")

    async def _form_pool(self) -> None:
        start = time.monotonic()
        first = self.server_pid(1)
        for i in self.indexes[1:]:
            await cli_xml(first, "peer", "probe", self.address(i))
        if len(self.indexes) > 1:
            # so that server 1 is known by its address too, not only by where it came from
            with contextlib.suppress(GlusterError):
                await cli_xml(self.server_pid(2), "peer", "probe", self.address(1))
        await self.wait_connected(self.indexes)
        self.log(f"  trusted pool of {len(self.indexes)} formed in "
                 f"{time.monotonic() - start:.2f} s")

    async def connected_peers(self, index: int) -> set[str]:
        """Addresses of the servers that server `index` sees connected (itself included)."""
        root_el = await cli_xml(self.server_pid(index), "pool", "list", seconds=20)
        seen = set()
        for peer in root_el.iterfind("peerStatus/peer"):
            if peer.findtext("connected") != "1":
                continue
            host = peer.findtext("hostname") or ""
            names = {self.hostname(i): self.address(i) for i in self.indexes}
            names["localhost"] = self.address(index)
            seen.add(names.get(host, host))
        return seen

    async def wait_connected(self, indexes: Sequence[int], timeout: float = POOL_TIMEOUT) -> None:
        """Wait until each of `indexes` sees all of them connected."""
        want = {self.address(i) for i in indexes}
        deadline = time.monotonic() + timeout
        while True:
            views = {}
            for i in indexes:
                try:
                    views[i] = await self.connected_peers(i)
                except PoolError:
                    views[i] = set()
            if all(want <= v for v in views.values()):
                return
            if time.monotonic() > deadline:
                raise PoolError(f"servers {list(indexes)} do not all see each other connected "
                                f"within {timeout:.0f} s: {views}")
            await asyncio.sleep(0.3)

    # --- one server ---------------------------------------------------------------------

    async def stop(self, index: int) -> None:
        """Stop server `index` cleanly: bricks and daemons get SIGTERM (clients see their
        connections close), the brick file system is unmounted, then the namespaces end."""
        self._fresh(index)
        with self._timed(f"stop server {index}"):
            server = self.state.server(index)
            pid = self.server_pid(index)
            assert server.pid_ns is not None
            for name in ("glusterfsd", "glusterfs", "glusterd"):
                procs = processes_named(server.pid_ns, name)
                await signal_all(procs, signal.SIGTERM)
                left = await wait_gone(procs, 15.0)
                await signal_all(left, signal.SIGKILL)
                await wait_gone(left, 5.0)
            await run([*nsenter(pid, "mount"), "umount", str(self.bricks_dir(index))],
                      f"server {index}: unmount bricks", check=False)
            await self._end_namespaces(server)
            server.status = "stopped"
            self._save()

    async def kill(self, index: int) -> None:
        """Power server `index` off: its link goes down first (nobody hears a FIN or RST),
        then every process in its namespaces is killed and its veth deleted."""
        self._fresh(index)
        with self._timed(f"kill (power off) server {index}"):
            server = self.state.server(index)
            self.server_pid(index)
            assert self.state.switch_pid is not None
            await network.set_port(self.state.switch_pid, index, up=False)
            await self._end_namespaces(server)
            server.status = "off"
            self._save()

    async def _end_namespaces(self, server: Server) -> None:
        if server.pid is not None:
            await kill_namespace(server.pid, server.pid_ns)
        if self.state.switch_pid is not None:
            await network.delete_port(self.state.switch_pid, server.index)
        server.pid = None
        server.net_ns = None

    async def start(self, index: int) -> None:
        """Start a stopped or killed server again (same address, same glusterd state,
        same brick file system); wait until it sees the other running servers."""
        self._fresh(index)
        server = self.state.server(index)
        if server.status in ("running", "partitioned"):
            raise PoolError(f"server {index} is {server.status}: nothing to start")
        with self._timed(f"start server {index}"):
            await self._start_server(index)
            running = [i for i in self.indexes if self.state.server(i).status == "running"]
            await self.wait_connected(running)

    async def partition(self, index: int) -> None:
        """Take server `index`'s link down: its packets are dropped silently."""
        self._fresh(index)
        with self._timed(f"partition server {index} (link down)"):
            server = self.state.server(index)
            if server.status != "running":
                raise PoolError(f"server {index} is {server.status}, not running")
            assert self.state.switch_pid is not None
            await network.set_port(self.state.switch_pid, index, up=False)
            server.status = "partitioned"
            self._save()

    async def restore(self, index: int) -> None:
        """Bring a partitioned server's link up again."""
        self._fresh(index)
        with self._timed(f"restore server {index} (link up)"):
            server = self.state.server(index)
            if server.status != "partitioned":
                raise PoolError(f"server {index} is {server.status}, not partitioned "
                                "(`start` starts a stopped or killed one)")
            assert self.state.switch_pid is not None
            await network.set_port(self.state.switch_pid, index, up=True)
            server.status = "running"
            self._save()

    # --- extra brick file systems (one per brick, as Heketi makes them) -------------------

    def fs_dir(self, index: int, name: str) -> Path:
        return self.server_dir(index) / "fs" / name

    async def _mount_fs(self, index: int, name: str) -> None:
        server = self.state.server(index)
        image = self.server_dir(index) / "fs-images" / f"{name}.img"
        server.filesystems[name] = await bricks.attach(image, server.filesystems.get(name))
        self._save()
        target = self.fs_dir(index, name)
        await asyncio.to_thread(target.mkdir, parents=True, exist_ok=True)
        await run([*nsenter(self.server_pid(index), "mount"), "mount", "-t", "xfs", "-o",
                   "noatime,inode64", server.filesystems[name], str(target)],
                  f"server {index}: mount file system {name}")

    async def brick_fs_add(self, index: int, name: str, size: int) -> str:
        """An XFS file system of `size` bytes (at least 300 MiB) of its own for one brick
        on server `index`, mounted there (again at every start); the brick's path."""
        self._check_index(index)
        if not FS_NAME_RE.match(name):
            raise PoolError(f"file system name {name[:80]!r}: letters, digits, _ and -")
        self.server_pid(index)
        image = self.server_dir(index) / "fs-images" / f"{name}.img"
        await bricks.ensure_image(image, max(size, bricks.MIN_IMAGE_BYTES))
        await self._mount_fs(index, name)
        return f"{self.fs_dir(index, name)}/brick"

    async def brick_fs_remove(self, index: int, name: str) -> None:
        """Unmount (on a running server), detach and delete a brick's file system."""
        server = self.state.server(index)
        if server.pid is not None and server.status in ("running", "partitioned"):
            await run([*nsenter(server.pid, "mount"), "umount", str(self.fs_dir(index, name))],
                      f"server {index}: unmount {name}", check=False)
        loop = server.filesystems.pop(name, None)
        if loop is not None and loop in await bricks.ours(self.dir):
            await bricks.detach(loop)
        self._save()
        image = self.server_dir(index) / "fs-images" / f"{name}.img"
        await asyncio.to_thread(image.unlink, missing_ok=True)
        await asyncio.to_thread(shutil.rmtree, self.fs_dir(index, name), True)

    async def gluster(self, *args: str) -> ET.Element:
        """`gluster --xml ARGS` on a running server; the parsed answer (GlusterError if
        gluster refuses, with its own text)."""
        return await cli_xml(self._any_running(), *args)

    def index_of(self, address: str) -> int:
        for i in self.indexes:
            if self.address(i) == address:
                return i
        raise PoolError(f"{address} is no server of pool {self.config.name}")

    def running(self) -> list[int]:
        return [i for i in self.indexes if self.state.server(i).status == "running"]

    def _any_running(self) -> int:
        running = self.running()
        if not running:
            raise PoolError("no server is running")
        return self.server_pid(running[0])

    # --- volumes ------------------------------------------------------------------------

    async def volume_create(self, name: str, kind: str = "replica",
                            servers: Sequence[int] | None = None,
                            options: dict[str, str] | None = None,
                            redundancy: int | None = None) -> VolumeInfo:
        """Create and start a volume with one brick on each of `servers` (all by default):
        `replica` (replica N), `arbiter` (replica 3 arbiter 1), `disperse` (disperse N
        redundancy R, R 1 for N ≤ 5 else 2) or `distribute`; then set `options`."""
        check_volume_name(name)
        if kind not in KINDS:
            raise PoolError(f"volume kind {kind!r}: one of {', '.join(KINDS)}")
        chosen = list(servers or self.indexes)
        for i in chosen:
            self._check_index(i)
        n = len(chosen)
        with self._timed(f"volume create {name} ({kind}, servers {chosen})"):
            args = ["volume", "create", name]
            if kind == "replica" and n > 1:
                args += ["replica", str(n)]
            elif kind == "arbiter":
                if n != 3:
                    raise PoolError("an arbiter volume needs 3 servers")
                args += ["replica", "3", "arbiter", "1"]
            elif kind == "disperse":
                r = redundancy if redundancy is not None else (1 if n <= 5 else 2)
                args += ["disperse", str(n), "redundancy", str(r)]
            args += [f"{self.address(i)}:{self.brick_path(i, name)}" for i in chosen]
            for i in chosen:
                await run([*nsenter(self.server_pid(i), "mount"), "mkdir", "-p",
                           str(Path(self.brick_path(i, name)).parent)],
                          f"server {i}: brick directory")
            pid = self._any_running()
            await cli_xml(pid, *args)
            try:
                for key, value in (options or {}).items():
                    await cli_xml(pid, "volume", "set", name, key, value)
                await cli_xml(pid, "volume", "start", name)
            except PoolError:
                await self.volume_delete(name)
                raise
            return await self.volume_info(name)

    async def volume_info(self, name: str) -> VolumeInfo:
        check_volume_name(name)
        root_el = await cli_xml(self._any_running(), "volume", "info", name)
        vol = root_el.find("volInfo/volumes/volume")
        if vol is None:
            raise PoolError(f"volume {name} not in `volume info`")
        return _volume_info(vol)

    async def volume_delete(self, name: str) -> None:
        """Stop (force) and delete a volume, and remove its brick directories."""
        check_volume_name(name)
        with self._timed(f"volume delete {name}"):
            pid = self._any_running()
            try:
                info = await self.volume_info(name)
            except GlusterError as exc:
                if "does not exist" in exc.gluster_message:
                    return
                raise
            with contextlib.suppress(GlusterError):
                await cli_xml(pid, "volume", "stop", name, "force")
            await cli_xml(pid, "volume", "delete", name)
            for i in self.running():
                ours = [b for b in info.bricks if b.host == self.address(i)]
                for brick in ours:
                    parent = str(Path(brick.path).parent)
                    if _under(parent, self.bricks_dir(i)) and parent != str(self.bricks_dir(i)):
                        await run([*nsenter(self.server_pid(i), "mount"), "rm", "-rf", parent],
                                  f"server {i}: remove bricks of {name}")

    async def volume_set(self, name: str, key: str, value: str) -> None:
        await cli_xml(self._any_running(), "volume", "set", name, key, value)

    async def heal(self, name: str, timeout: float = HEAL_TIMEOUT) -> float:
        """Trigger an index heal of `name` (again every 5 s) and wait until every brick
        reports no entry to heal; return the seconds it took."""
        check_volume_name(name)
        with self._timed(f"heal {name}"):
            start = time.monotonic()
            bricks_n = len((await self.volume_info(name)).bricks)
            last_trigger = -10.0
            last = ""
            while True:
                pid = self._any_running()
                if time.monotonic() - last_trigger >= 5.0:
                    await cli_text(pid, "volume", "heal", name)
                    last_trigger = time.monotonic()
                code, out = await cli_text(pid, "volume", "heal", name, "info", seconds=60)
                counts = [line.split(":", 1)[1].strip() for line in out.splitlines()
                          if line.startswith("Number of entries:")]
                if code == 0 and len(counts) == bricks_n and all(c == "0" for c in counts):
                    seconds = time.monotonic() - start
                    self.log(f"  {name} healed in {seconds:.2f} s")
                    return seconds
                last = out[-600:]
                if time.monotonic() - start > timeout:
                    raise PoolError(f"{name} not healed within {timeout:.0f} s: {last}")
                await asyncio.sleep(0.5)

    # --- the host's mounts ----------------------------------------------------------------

    async def mount(self, volume: str, target: Path, first: int = 1,
                    backups: Sequence[int] | None = None,
                    options: Sequence[str] = ()) -> float:
        """FUSE-mount `volume` on the host at `target` from server `first`, the others (or
        `backups`) as backup volfile servers; return the seconds mount took."""
        self._check_index(first)
        check_volume_name(volume)
        others = [i for i in (backups if backups is not None else self.indexes) if i != first]
        opts = [f"log-file={self.dir / 'logs' / ('client-' + target.name + '.log')}",
                *options]
        if others:
            opts.append("backup-volfile-servers=" + ":".join(self.address(i) for i in others))
        await asyncio.to_thread(target.mkdir, parents=True, exist_ok=True)
        with self._timed(f"mount {volume} from server {first} (backups {others})"):
            start = time.monotonic()
            await run(["mount", "-t", "glusterfs", "-o", ",".join(opts),
                       f"{self.address(first)}:/{volume}", str(target)],
                      f"mount {volume}", MOUNT_TIMEOUT)
            return time.monotonic() - start

    def client_connections(self, target: Path) -> dict[str, bool]:
        """For the FUSE mount at `target`: each brick client (`<vol>-client-<n>`) and
        whether it is connected, from the client's own `.meta` tree."""
        active = target / ".meta" / "graphs" / "active"
        out = {}
        for entry in sorted(active.iterdir()):
            if "-client-" not in entry.name:
                continue
            text = (entry / "private").read_text(errors="replace")
            out[entry.name] = any(line.replace(" ", "") == "connected=1"
                                  for line in text.splitlines())
        return out

    async def wait_client_connected(self, target: Path, timeout: float = 60.0) -> float:
        """Wait until the mount at `target` is connected to every brick; the seconds."""
        start = time.monotonic()
        while True:
            state = await asyncio.to_thread(self.client_connections, target)
            if state and all(state.values()):
                return time.monotonic() - start
            if time.monotonic() - start > timeout:
                raise PoolError(f"the mount at {target} is not connected to every brick "
                                f"within {timeout:.0f} s: {state}")
            await asyncio.sleep(0.1)

    async def unmount(self, target: Path) -> None:
        await host_gluster.cleanup_mounts_under(target)
        with contextlib.suppress(OSError):
            await run(["umount", "-l", str(target)], f"umount {target}", 15, check=False)

    # --- status, down and what is left ---------------------------------------------------

    async def status(self) -> list[str]:
        lines = [f"pool {self.state.name}: {self.state.servers} servers, "
                 f"{self.state.subnet}.0/24, host {self.host_address} on {self.host_veth}, "
                 f"files in {self.dir}"]
        for i in self.indexes:
            s = self.state.server(i)
            procs = ""
            if s.pid_ns and s.status in ("running", "partitioned"):
                counts = {n: len(processes_named(s.pid_ns, n))
                          for n in ("glusterd", "glusterfsd", "glusterfs")}
                procs = " ".join(f"{n}={c}" for n, c in counts.items())
            lines.append(f"  server {i} {self.address(i)}: {s.status} pid={s.pid} "
                         f"loop={s.loop} {procs}".rstrip())
        return lines

    async def leftovers(self) -> list[str]:
        """Everything of this pool present on the machine (empty once `down` is done)."""
        found = []
        prefix = f"{MARKER_PREFIX}{self.config.name}:"
        found += [f"process {pid} ({m})" for pid, m in reapers(prefix)]
        for pid_ns in self.state.pid_namespaces:
            members = members_of(pid_ns)
            if members:
                found.append(f"processes {members} in PID namespace {pid_ns}")
        if await network.host_link_exists(self.host_veth):
            found.append(f"host veth {self.host_veth}")
        found += [f"loop device {d}" for d in await bricks.ours(self.dir)]
        found += [f"mount {m.mount_point}" for m in mountinfo.read()
                  if _under(m.mount_point, self.dir)]
        return found

    async def down(self, keep_files: bool = False) -> list[str]:
        """Remove everything of the pool; from its state file and, should that be gone,
        from names alone. Returns what could not be removed (empty when clean)."""
        with self._timed(f"pool {self.config.name}: down"):
            unmounted = await host_gluster.cleanup_mounts_under(self.dir)
            if unmounted:
                self.log(f"  unmounted {', '.join(unmounted)}")
            await network.host_link_down(self.host_veth)
            # the switch first: its veths go with it, so a server namespace that lingers on
            # orphaned sockets keeps no address; then every server
            prefix = f"{MARKER_PREFIX}{self.config.name}:"
            found = reapers(prefix)
            switch = [p for p, m in found if m == marker(self.config.name, "switch")]
            for pid in switch:
                await kill_namespace(pid, None)
            for pid, _m in found:
                if pid not in switch:
                    await kill_namespace(pid, ns_id(pid, "pid"))
            for pid_ns in self.state.pid_namespaces:
                members = members_of(pid_ns)
                await signal_all(members, signal.SIGKILL)
                await wait_gone(members, 10.0)
            self.log(f"  ended {len(found)} namespace sets")
            await self._detach_loops()
            left = await self.leftovers()
            if not left and not keep_files:
                await asyncio.to_thread(shutil.rmtree, self.dir, True)
            elif not left:
                for server in self.state.members.values():
                    server.status, server.pid, server.loop = "off", None, None
                self.state.switch_pid = None
                self._save()
            for item in left:
                self.log(f"  LEFT: {item}")
            return left

    async def _detach_loops(self) -> None:
        deadline = time.monotonic() + 20.0
        while True:
            devices = await bricks.ours(self.dir)
            if not devices:
                return
            for device in devices:
                await bricks.detach(device)
                self.log(f"  detached {device}")
            if time.monotonic() > deadline:
                return
            await asyncio.sleep(0.2)


def _copy_groups(target: Path) -> None:
    groups = Path("/var/lib/glusterd/groups")
    if groups.is_dir() and not target.exists():
        shutil.copytree(groups, target)


def _volume_info(vol: ET.Element) -> VolumeInfo:
    found = []
    for brick in vol.iterfind("bricks/brick"):
        host, _, path = (brick.findtext("name") or "").partition(":")
        found.append(Brick(host, path))
    options = {o.findtext("name") or "": o.findtext("value") or ""
               for o in vol.iterfind("options/option")}
    def count(tag: str) -> int:
        text = vol.findtext(tag) or "0"
        return int(text) if text.isdigit() else 0

    return VolumeInfo(vol.findtext("name") or "", vol.findtext("typeStr") or "",
                      vol.findtext("statusStr") or "", found, options,
                      replica=count("replicaCount"), arbiter=count("arbiterCount"),
                      disperse=count("disperseCount"), redundancy=count("redundancyCount"))
