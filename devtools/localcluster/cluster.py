"""The local cluster: every process of the driver, plus its surroundings, on unix sockets.

One harness for the demo, the integration tests, the conformance run and the benchmarks.
`LocalCluster` starts, as separate processes in a fresh base directory:

1. the Heketi simulator (`python -m devtools.heketi_sim`), by default in pool mode on a
   GlusterFS pool of three servers the cluster brings up first (devtools/gluster_pool, pool
   `gpool` on 10.231.0.0/24 unless told otherwise): a replica 3 volume has its three bricks
   on three servers and the node plugin mounts it from their addresses, the other servers as
   backup volfile servers. `storage="glusterd"` is the explicit fast option (one brick per
   volume on this host's glusterd, bricks under `<base>/bricks`), `storage="memory"` keeps
   volumes in the simulator's memory (nothing mounts). Or a real Heketi given by URL and
   key instead;
2. the controller (`heketi-csi controller`), on `<base>/controller/csi.sock`;
3. the node plugin (`heketi-csi node`) with its kubelet root `<base>/kubelet`, on
   `<base>/kubelet/plugins/<driver>/csi.sock`, as kubelet would find it;
4. the registrar (`heketi-csi registrar`), on `<base>/kubelet/plugins_registry/`, with
   /healthz on a free local port;
5. the kubelet simulator (`python -m devtools.kubelet_sim`), which registers the node
   plugin through the registrar.

It waits until each answers (Probe, /hello, /healthz, the registration), and tears everything
down on exit, also after a failure or a cancellation (Ctrl-C): see `teardown.py`; the pool
last, with its own `down` (nothing of it is left: `GlusterPool.leftovers()`).

    async with LocalCluster() as cluster:
        print(cluster.summary())
        async with CsiClient(cluster.controller_socket) as csi: ...
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from devtools import glusterd
from devtools.gluster_pool import GlusterPool, PoolConfig, PoolError
from devtools.gluster_pool.pool import VolumeInfo
from devtools.heketi_sim.latency import REALISTIC
from devtools.localcluster.processes import (
    HEKETI_CSI,
    READY_TIMEOUT,
    ClusterError,
    ManagedProcess,
    free_port,
    json_line,
    log_tail,
    wait_http,
    wait_log_line,
    wait_ready,
)
from devtools.localcluster.teardown import (
    TeardownReport,
    gluster_volumes_with_bricks_under,
    mounts_under,
    unmount_all_under,
)
from services.common.config import DEFAULT_DRIVER_NAME
from services.common.errors import InvalidArgument
from services.node.paths import validate_for_helper

REPO_ROOT = Path(__file__).resolve().parents[2]
SIM_MODULE = "devtools.heketi_sim"
KUBELET_SIM_MODULE = "devtools.kubelet_sim"
# The longest path a unix socket address can hold (sun_path is 108 bytes with the NUL).
MAX_SOCKET_PATH = 107
# Order in which processes start; teardown stops them in reverse (the simulator last).
START_ORDER = ("heketi-sim", "controller", "node", "registrar", "kubelet-sim")
STOP_TIMEOUT = 10.0
SIM_STOP_TIMEOUT = 120.0  # it stops and deletes each of its gluster volumes
# Where the simulator's volumes live: a GlusterFS pool (the default), this host's glusterd
# (one brick per volume: fast, no replication), or nowhere (the simulator's memory).
STORAGE_MODES = ("pool", "glusterd", "memory")
DEFAULT_POOL = PoolConfig(name="gpool", servers=3, subnet="10.231.0")


def _new_base_dir() -> Path:
    """A fresh private directory with a short name the gluster mount helper accepts."""
    parent = Path(tempfile.gettempdir())
    for _ in range(100):
        path = parent / f"hcsi-{secrets.token_hex(4)}"
        try:
            path.mkdir(mode=0o700)
        except FileExistsError:
            continue
        return path
    raise ClusterError(f"cannot create a directory in {parent}")


# --- the cluster ------------------------------------------------------------------------------
@dataclass(frozen=True)
class KubeletPaths:
    """The paths kubelet hands a CSI driver, under one kubelet root."""

    kubelet_root: Path
    driver_name: str = DEFAULT_DRIVER_NAME

    def staging_path(self, volume_id: str) -> Path:
        """Where kubelet would stage `volume_id` (its parent exists after this call)."""
        digest = hashlib.sha256(volume_id.encode()).hexdigest()
        path = (self.kubelet_root / "plugins" / "kubernetes.io" / "csi" / self.driver_name
                / digest / "globalmount")
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def pod_target_path(self, pod_uid: str, pv_name: str) -> Path:
        """Where kubelet would publish `pv_name` for pod `pod_uid` (parent created)."""
        path = (self.kubelet_root / "pods" / pod_uid / "volumes" / "kubernetes.io~csi"
                / pv_name / "mount")
        path.parent.mkdir(parents=True, exist_ok=True)
        return path


class LocalCluster:
    """The driver's processes and their surroundings, in one base directory.

    base_dir: where everything lives (default: a fresh `$TMPDIR/hcsi-<random>`); it must be
      short (socket paths) and made of characters the gluster mount helper accepts
      (letters, digits and `._~@%+:=/-`: pytest's `tmp_path` does not qualify).
    storage: where the simulator makes volumes: "pool" (default: a GlusterFS pool of
      `pool`'s servers, brought up first and taken down last; volumes are made as Heketi
      makes them, replica 3 across three servers), "glusterd" (the explicit fast option:
      this host's glusterd, one brick per volume whatever durability was asked) or "memory"
      (no real volumes: controller-only work; stage fails).
    pool: the pool's name, servers and subnet (default `gpool`, 3 servers, 10.231.0.0/24);
      two clusters at once need two names and subnets.
    heketi_url/admin_key: use this (real) Heketi instead of starting the simulator.
    heketi_op_latency: seconds each simulator operation takes (default
      `devtools.heketi_sim.latency.REALISTIC`, as a real create; the fast tests pass
      `INSTANT`).
    sim_args/controller_args/node_args/registrar_args: extra command-line arguments.
    kubelet: start the registrar and the kubelet simulator (on by default).
    keep_logs: leave `<base>/logs` behind at teardown (everything else is removed).
    """

    def __init__(
        self,
        base_dir: Path | str | None = None,
        *,
        storage: str = "pool",
        pool: PoolConfig = DEFAULT_POOL,
        sim_args: Sequence[str] = (),
        controller_args: Sequence[str] = (),
        node_args: Sequence[str] = (),
        registrar_args: Sequence[str] = (),
        kubelet: bool = True,
        heketi_url: str | None = None,
        admin_key: str | None = None,
        heketi_op_latency: float = REALISTIC,
        driver_name: str = DEFAULT_DRIVER_NAME,
        node_id: str | None = None,
        keep_logs: bool = False,
        ready_timeout: float = READY_TIMEOUT,
        log_format: str = "console",
    ) -> None:
        self._given_base = Path(base_dir).absolute() if base_dir is not None else None
        if storage not in STORAGE_MODES:
            raise ValueError(f"storage: one of {', '.join(STORAGE_MODES)}, not {storage!r}")
        self.external_heketi = heketi_url is not None
        self.storage = storage if heketi_url is None else "external"
        self.use_glusterd = self.storage == "glusterd"
        self.use_pool = self.storage == "pool"
        self.pool_config = pool
        self.pool: GlusterPool | None = None
        self.pool_log: list[str] = []
        self._own_pool = False
        self.sim_args = list(sim_args)
        self.heketi_op_latency = heketi_op_latency
        self.controller_args = list(controller_args)
        self.node_args = list(node_args)
        self.registrar_args = list(registrar_args)
        self.with_kubelet = kubelet
        self.driver_name = driver_name
        self.node_id = node_id or socket.gethostname()
        self.keep_logs = keep_logs
        self.ready_timeout = ready_timeout
        self.log_format = log_format
        self.heketi_url = heketi_url.rstrip("/") if heketi_url else ""
        self.admin_key = admin_key if admin_key is not None else secrets.token_hex(16)
        self.user_key = secrets.token_hex(16)
        self.processes: dict[str, ManagedProcess] = {}
        self.teardown_report: TeardownReport | None = None
        self.started = False
        self._created_base = False
        self._base: Path | None = None
        self._registrar_port = 0

    # --- paths --------------------------------------------------------------------------
    @property
    def base_dir(self) -> Path:
        if self._base is None:
            raise RuntimeError("the cluster has not been started")
        return self._base

    @property
    def kubelet_root(self) -> Path:
        return self.base_dir / "kubelet"

    @property
    def controller_socket(self) -> Path:
        return self.base_dir / "controller" / "csi.sock"

    @property
    def node_socket(self) -> Path:
        return self.kubelet_root / "plugins" / self.driver_name / "csi.sock"

    @property
    def controller_endpoint(self) -> str:
        return f"unix://{self.controller_socket}"

    @property
    def node_endpoint(self) -> str:
        return f"unix://{self.node_socket}"

    @property
    def registration_dir(self) -> Path:
        return self.kubelet_root / "plugins_registry"

    @property
    def registration_socket(self) -> Path:
        return self.registration_dir / f"{self.driver_name}-reg.sock"

    @property
    def registrar_health_url(self) -> str:
        return f"http://127.0.0.1:{self._registrar_port}/healthz" if self._registrar_port else ""

    @property
    def brick_root(self) -> Path:
        return self.base_dir / "bricks"

    @property
    def log_dir(self) -> Path:
        return self.base_dir / "logs"

    @property
    def gluster_log_dir(self) -> Path:
        return self.base_dir / "gluster-logs"

    @property
    def key_file(self) -> Path:
        return self.base_dir / "heketi-admin.key"

    def staging_path(self, volume_id: str) -> Path:
        """Where kubelet would stage `volume_id` (its parent exists after this call)."""
        return KubeletPaths(self.kubelet_root, self.driver_name).staging_path(volume_id)

    def pod_target_path(self, pod_uid: str, pv_name: str) -> Path:
        """Where kubelet would publish `pv_name` for pod `pod_uid` (parent created)."""
        return KubeletPaths(self.kubelet_root, self.driver_name).pod_target_path(pod_uid,
                                                                                 pv_name)

    # --- process handles ----------------------------------------------------------------
    @property
    def heketi_sim(self) -> ManagedProcess | None:
        return self.processes.get("heketi-sim")

    @property
    def controller(self) -> ManagedProcess:
        return self.processes["controller"]

    @property
    def node(self) -> ManagedProcess:
        return self.processes["node"]

    @property
    def registrar(self) -> ManagedProcess | None:
        return self.processes.get("registrar")

    @property
    def kubelet_sim(self) -> ManagedProcess | None:
        return self.processes.get("kubelet-sim")

    # --- lifetime -----------------------------------------------------------------------
    async def __aenter__(self) -> LocalCluster:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        report = await self.stop()
        if exc_type is None and not report.clean:
            raise ClusterError("local cluster teardown left things behind:\n" + report.text())

    async def start(self) -> None:
        """Start every process and wait until each is ready; on any failure (or
        cancellation) tear down what was started, then raise."""
        if self.started:
            raise RuntimeError("the cluster is already started")
        self.started = True
        try:
            self._prepare_dirs()
            await self._start_all()
        except BaseException:
            report = await self.stop()
            if not report.clean:
                print("local cluster: teardown after a failed start left things behind:\n"
                      + report.text(), file=sys.stderr)
            raise

    def _prepare_dirs(self) -> None:
        if self._given_base is None:
            self._base = _new_base_dir()
            self._created_base = True
        else:
            self._base = self._given_base
            self._created_base = not self._base.exists()
            self._base.mkdir(parents=True, exist_ok=True)
        self._check_paths()
        for path in (self.kubelet_root / "pods", self.registration_dir, self.node_socket.parent,
                     self.kubelet_root / "plugins" / "kubernetes.io" / "csi",
                     self.controller_socket.parent, self.log_dir, self.gluster_log_dir):
            path.mkdir(parents=True, exist_ok=True)
        if self.use_glusterd:
            self.brick_root.mkdir(exist_ok=True)
        fd = os.open(self.key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as key:
            key.write(self.admin_key + "\n")

    def _check_paths(self) -> None:
        try:
            validate_for_helper(str(self.base_dir), "base_dir")
        except InvalidArgument as exc:
            self._abandon_base()
            raise ClusterError(f"{exc}; leave base_dir unset for a fresh temporary "
                               "directory") from None
        longest = max((self.node_socket, self.controller_socket,
                       self.registration_socket), key=lambda p: len(str(p)))
        if len(str(longest)) > MAX_SOCKET_PATH:
            message = (f"base_dir {self.base_dir} is too long: the socket path {longest} "
                       f"exceeds {MAX_SOCKET_PATH} bytes")
            self._abandon_base()
            raise ClusterError(message)

    def _abandon_base(self) -> None:
        if self._created_base and self._base is not None:
            shutil.rmtree(self._base, ignore_errors=True)
        self._base = None

    def _process(self, name: str, argv: Sequence[str]) -> ManagedProcess:
        env = {"PYTHONPATH": os.pathsep.join(
            p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p)}
        proc = ManagedProcess(name, argv, self.log_dir / f"{name}.log", env=env)
        self.processes[name] = proc
        return proc

    def _logging(self) -> list[str]:
        return ["--log-format", self.log_format, "--log-level", "info"]

    async def _start_pool(self) -> None:
        pool = GlusterPool(self.pool_config, log=self.pool_log.append)
        try:
            left = await pool.leftovers()
        except (OSError, PoolError) as exc:
            raise ClusterError(f"gluster pool {self.pool_config.name}: {exc}") from None
        if left:
            raise ClusterError(
                f"gluster pool {self.pool_config.name} is (partly) up already, not ours to "
                f"use or remove: {'; '.join(left[:5])}. If nothing uses it: `python -m "
                f"devtools.gluster_pool down --name {self.pool_config.name}`; or give the "
                "cluster another pool name and subnet")
        self.pool, self._own_pool = pool, True
        try:
            await pool.up()
        except (OSError, PoolError) as exc:
            raise ClusterError(f"the gluster pool did not come up: {exc}\n"
                               + "\n".join(self.pool_log[-10:])) from None

    async def _start_all(self) -> None:
        if self.use_pool:
            await self._start_pool()
        if self.use_glusterd:
            try:
                await asyncio.to_thread(glusterd.ensure_glusterd)
            except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
                raise ClusterError(f"glusterd is not available ({exc}); `make setup` installs "
                                   "and starts it") from exc
        if not self.external_heketi:
            await self._start_sim()
        controller = await self._process("controller", [
            *HEKETI_CSI, "controller", "--endpoint", self.controller_endpoint,
            "--heketi-url", self.heketi_url, "--heketi-key-file", str(self.key_file),
            "--node-check", "static", "--static-node-ids", self.node_id,
            "--driver-name", self.driver_name, *self._logging(), *self._brick_health(),
            *self.controller_args,
        ]).start()
        node = await self._process("node", [
            *HEKETI_CSI, "node", "--endpoint", self.node_endpoint, "--node-id", self.node_id,
            "--kubelet-root", str(self.kubelet_root),
            "--gluster-log-dir", str(self.gluster_log_dir),
            "--driver-name", self.driver_name, *self._logging(), *self.node_args,
        ]).start()
        await self._ready(controller, self.controller_socket)
        await self._ready(node, self.node_socket)
        if self.with_kubelet:
            await self._start_kubelet_side()

    async def _ready(self, proc: ManagedProcess, sock: Path) -> None:
        try:
            await wait_ready(proc, sock, timeout=self.ready_timeout)
        except (RuntimeError, TimeoutError) as exc:
            raise ClusterError(str(exc)) from None

    async def _start_sim(self) -> None:
        args = ["--port", "0", f"--admin-key={self.admin_key}", f"--user-key={self.user_key}",
                "--op-latency", f"{self.heketi_op_latency:g}"]
        if self.use_glusterd:
            args += ["--glusterd", "--brick-root", str(self.brick_root)]
        if self.use_pool:
            args += ["--gluster-pool", self.pool_config.name]
        sim = await self._process("heketi-sim", [
            sys.executable, "-m", SIM_MODULE, *args, *self.sim_args]).start()
        marker = "heketi-sim listening on "
        line = await wait_log_line(sim, lambda text: text.startswith(marker),
                                   "'heketi-sim listening on' line", self.ready_timeout)
        self.heketi_url = line[len(marker):].strip().rstrip("/")
        await wait_http(sim, f"{self.heketi_url}/hello", self.ready_timeout)

    async def _start_kubelet_side(self) -> None:
        self._registrar_port = free_port()
        registrar = await self._process("registrar", [
            *HEKETI_CSI, "registrar", "--csi-address", self.node_endpoint,
            "--kubelet-registration-path", str(self.node_socket),
            "--plugin-registration-dir", str(self.registration_dir),
            "--http-endpoint", f"127.0.0.1:{self._registrar_port}",
            "--driver-name", self.driver_name, *self._logging(), *self.registrar_args,
        ]).start()
        kubelet = await self._process("kubelet-sim", [
            sys.executable, "-m", KUBELET_SIM_MODULE,
            "--registration-dir", str(self.registration_dir),
        ]).start()

        def registered(line: str) -> bool:
            event = json_line(line)
            if event.get("kind") == "rejected" and event.get("driver") == self.driver_name:
                raise ClusterError(f"kubelet simulator rejected the registration: "
                                   f"{event.get('error')}\n{log_tail(registrar)}")
            return event.get("kind") == "registered" and event.get("driver") == self.driver_name

        line = await wait_log_line(kubelet, registered, f"registration of {self.driver_name}",
                                   self.ready_timeout)
        node_id = json_line(line).get("node_id")
        if node_id != self.node_id:
            raise ClusterError(f"kubelet simulator registered node id {node_id!r}, "
                               f"expected {self.node_id!r}")
        await wait_http(registrar, self.registrar_health_url, self.ready_timeout)

    async def restart(self, name: str, *, kill: bool = False) -> ManagedProcess:
        """Stop process `name` (SIGTERM, or SIGKILL with kill=True) and start it again with
        the same command line; waits until it is ready (controller and node only)."""
        proc = self.processes[name]
        if kill:
            await proc.kill()
        else:
            await proc.stop(STOP_TIMEOUT)
        fresh = ManagedProcess(proc.name, proc.argv, proc.log_path,
                               env={k: v for k, v in proc.env.items()})
        self.processes[name] = await fresh.start()
        if name == "controller":
            await self._ready(fresh, self.controller_socket)
        elif name == "node":
            await self._ready(fresh, self.node_socket)
        return fresh

    async def stop(self) -> TeardownReport:
        """Tear everything down; never raises. Returns (and keeps) what it did."""
        if self.teardown_report is not None:
            return self.teardown_report
        report = TeardownReport()
        self.teardown_report = report
        for name in reversed(START_ORDER):
            proc = self.processes.get(name)
            if proc is None or name == "heketi-sim":
                continue
            await self._stop_process(proc, STOP_TIMEOUT, report)
        if self._base is None:
            return report
        try:
            # The bricks' own file systems stay: the simulator removes them with its volumes.
            await unmount_all_under(self.base_dir, report, keep=self.brick_root)
        except Exception as exc:
            report.problems.append(f"unmounting: {exc}")
        sim = self.heketi_sim
        if sim is not None:
            await self._stop_process(sim, SIM_STOP_TIMEOUT, report)
        if self.use_glusterd:
            await self._delete_leftover_volumes(report)
            if mounts_under(self.brick_root):  # a simulator that died left them
                try:
                    await unmount_all_under(self.brick_root, report)
                except Exception as exc:
                    report.problems.append(f"unmounting bricks: {exc}")
        if self._own_pool:
            await self._pool_down(report)
        self._remove_base(report)
        return report

    async def _pool_down(self, report: TeardownReport) -> None:
        """The pool's own `down`: every server, namespace, veth, loop device and mount of it.
        Volumes a simulator that died left go with it (reported as deleted)."""
        assert self.pool is not None
        with contextlib.suppress(OSError, PoolError):  # one that did not come up has none
            report.deleted_volumes.extend(await self.pool_volumes())
        try:
            left = await self.pool.down()
        except Exception as exc:
            report.problems.append(f"gluster pool {self.pool_config.name} down: {exc}")
            return
        finally:
            await asyncio.to_thread(self._write_pool_log)
        report.problems.extend(f"gluster pool {self.pool_config.name}: left {item}"
                               for item in left)
        self._own_pool = False

    def _write_pool_log(self) -> None:
        if self._base is not None and self.log_dir.is_dir():
            (self.log_dir / "gluster-pool.log").write_text("\n".join(self.pool_log) + "\n")

    async def pool_volumes(self) -> list[str]:
        """The gluster volumes on the cluster's pool (pool mode)."""
        if self.pool is None:
            return []
        self.pool.reload()
        if not self.pool.running():
            return []
        root = await self.pool.gluster("volume", "list")
        return sorted(v.text or "" for v in root.iterfind("volList/volume"))

    async def _stop_process(self, proc: ManagedProcess, timeout: float,
                            report: TeardownReport) -> None:
        try:
            code = await proc.stop(timeout)
        except Exception as exc:
            report.problems.append(f"stopping {proc.name}: {exc}")
            await proc.kill()
            return
        if code is None:
            return
        report.stopped.append(f"{proc.name} (exit {code})")
        if code not in (0, -signal.SIGTERM):
            report.crashed.append(f"{proc.name} (exit {code}, log {proc.log_path})")

    async def _delete_leftover_volumes(self, report: TeardownReport) -> None:
        try:
            names = await gluster_volumes_with_bricks_under(self.base_dir)
        except Exception as exc:
            report.problems.append(f"listing gluster volumes: {exc}")
            return
        for name in names:
            try:
                await glusterd.delete_volume(name)
                report.deleted_volumes.append(name)
            except Exception as exc:
                report.problems.append(f"deleting gluster volume {name}: {exc}")

    def _remove_base(self, report: TeardownReport) -> None:
        base = self.base_dir
        if mounts_under(base):
            report.problems.append(f"not removing {base}: something is still mounted in it")
            return
        keep = {self.log_dir} if self.keep_logs else set()
        if self._created_base and not keep:
            shutil.rmtree(base, ignore_errors=True)
        else:
            for child in (self.kubelet_root, self.brick_root, self.gluster_log_dir,
                          self.controller_socket.parent, self.key_file, self.log_dir):
                if child in keep:
                    continue
                if child.is_dir():
                    shutil.rmtree(child, ignore_errors=True)
                else:
                    child.unlink(missing_ok=True)
        if base.exists() and not keep and self._created_base:
            report.problems.append(f"could not remove {base}")

    # --- reporting ----------------------------------------------------------------------
    def summary(self) -> str:
        def pid(name: str) -> str:
            proc = self.processes.get(name)
            return f"pid {proc.pid}" if proc is not None and proc.proc is not None else "-"

        mode = {"pool": " (pool)", "glusterd": " (glusterd)", "memory": " (in memory)"}
        heketi = ("real Heketi" if self.external_heketi else
                  "Heketi simulator" + mode[self.storage])
        lines = [
            f"heketi-csi local cluster in {self.base_dir}",
            f"  {heketi:<27} {self.heketi_url}  {pid('heketi-sim')}",
            f"    admin key file            {self.key_file}",
            f"  controller                  {self.controller_endpoint}  {pid('controller')}",
            f"  node (id {self.node_id})".ljust(30) + f"{self.node_endpoint}  {pid('node')}",
            f"    kubelet root              {self.kubelet_root}",
        ]
        if self.with_kubelet:
            lines += [
                f"  registrar                   {self.registration_socket}  {pid('registrar')}",
                f"    health                    {self.registrar_health_url}",
                f"  kubelet simulator           watching {self.registration_dir}  "
                f"{pid('kubelet-sim')}",
            ]
        if self.use_glusterd:
            lines.append(f"  gluster bricks              {self.brick_root} (this host's glusterd)")
        if self.pool is not None:
            servers = ", ".join(self.pool.address(i) for i in self.pool.indexes)
            lines.append(f"  gluster pool {self.pool_config.name:<15}{servers}  (host "
                         f"{self.pool.host_address}, files {self.pool.dir})")
        lines.append(f"  logs                        {self.log_dir}")
        return "\n".join(lines)

    def examples(self) -> str:
        client = "python -m devtools.csi_client"
        return "\n".join([
            "Talk to it (from the repository root):",
            f"  {client} --endpoint {self.controller_endpoint} info",
            f"  {client} --endpoint {self.controller_endpoint} create my-volume 1",
            f"  {client} --endpoint {self.controller_endpoint} list",
            f"  {client} --endpoint {self.controller_endpoint} delete <VOLUME_ID>",
            f"  {client} --endpoint {self.node_endpoint} info",
            f"  tail -f {self.log_dir}/*.log",
        ])

    async def volume_layout(self, volume: str) -> VolumeInfo | None:
        """Pool mode: the volume's type and bricks (with their servers) as gluster says."""
        if self.pool is None:
            return None
        return await self.pool.volume_info(volume)

    def _brick_health(self) -> list[str]:
        """The controller asks the bricks only where they are real (the pool): with the
        host's glusterd or in memory the simulator records three bricks it never made, which
        brick health would rightly report down. An external Heketi's bricks are real."""
        if self.use_pool or self.external_heketi:
            return []
        return ["--brick-health-timeout", "0"]

    async def leftovers(self) -> list[str]:
        """What is mounted under the base directory, and which gluster volumes are the
        simulator's (glusterd mode: with a brick there; pool mode: on the cluster's pool):
        after a test has deleted all its volumes, both should be empty (the simulator's own
        volumes are the test's volumes)."""
        found = [f"mount {m.mount_point}" for m in mounts_under(self.base_dir)]
        if self.use_glusterd:
            found += [f"gluster volume {v}"
                      for v in await gluster_volumes_with_bricks_under(self.base_dir)]
        if self.use_pool:
            found += [f"gluster volume {v} (pool {self.pool_config.name})"
                      for v in await self.pool_volumes()]
        return found

    def dead_processes(self) -> list[ManagedProcess]:
        return [p for p in self.processes.values() if p.proc is not None and not p.running]
