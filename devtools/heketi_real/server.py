"""Start and stop a real Heketi (the binary `devtools.k8s build` makes) with its mock executor.

The mock executor runs the whole real server (REST API, JWT, the asynchronous queue, BoltDB,
the allocator and its placement, throttling) and touches no storage: its bricks are
bookkeeping, so its volumes cannot be mounted, and it panics on clone.

    heketi = RealHeketi(RealHeketiConfig(nodes=3))
    heketi.start()      # config + BoltDB in a fresh directory, topology loaded by heketi-cli
    ... heketi.url, heketi.admin_key, heketi.user_key ...
    heketi.stop()       # process ended, directory removed

The calls block (a process start, a few HTTP polls): from a coroutine, run them with
`asyncio.to_thread`.

Heketi listens on every address of the host (`":" + port`; it has no setting for the
address): the port is a free one picked at start, the keys are random per start, and the
client side talks to 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.controller.heketi.auth import authorization_header, make_token

HOST = "127.0.0.1"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
_PORT_ATTEMPTS = 3


class RealHeketiError(RuntimeError):
    """The real Heketi could not be found, started, loaded or stopped."""


class HeketiNotBuilt(RealHeketiError):
    pass


def binaries() -> tuple[Path, Path]:
    """The cached `heketi` and `heketi-cli`, or HeketiNotBuilt saying how to build them."""
    from devtools.k8s.build import component  # the build module reads versions.env

    comp = component("heketi")
    heketi, cli = comp.bin_dir / "heketi", comp.bin_dir / "heketi-cli"
    if not (heketi.is_file() and cli.is_file()):
        raise HeketiNotBuilt(
            f"the real Heketi {comp.version} is not built ({comp.bin_dir} has no heketi and "
            "heketi-cli): run `.venv/bin/python -m devtools.k8s build heketi` "
            "(about a minute; a plain `build` makes it too)")
    return heketi, cli


@dataclass(frozen=True)
class RealHeketiConfig:
    nodes: int = 3
    devices_per_node: int = 3
    device_size_gib: int = 1024
    max_inflight: int = 8
    use_auth: bool = True
    admin_key: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    user_key: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    # where the config, the BoltDB and the log go; None: a fresh temporary directory
    state_dir: Path | None = None
    port: int = 0  # 0: a free port
    # load the topology with heketi-cli (as a deployment does; it polls every 400 ms, ~5 s
    # for 3x3) or with the REST API directly, polling every 10 ms (what the tests use)
    load_with_cli: bool = True
    # Heketi's background cleaner of stale pending operations (left by a crash): seconds
    # after start and between runs; 0 keeps Heketi's defaults (60 s, then hourly)
    cleaner_start_s: int = 0
    cleaner_refresh_s: int = 0
    # serve HTTPS with this certificate (also the CA the helpers here trust) and key
    tls_cert: Path | None = None
    tls_key: Path | None = None
    # a session of its own, to outlive the caller (`up`); otherwise it stays in the caller's
    # process group, so that an interrupted test run (Ctrl-C) ends it too
    detached: bool = False

    def __repr__(self) -> str:  # keeps the keys out of reprs and tracebacks
        return (f"RealHeketiConfig(nodes={self.nodes}, devices_per_node={self.devices_per_node}"
                f", device_size_gib={self.device_size_gib}, max_inflight={self.max_inflight})")

    def validate(self) -> None:
        if not 1 <= self.nodes <= 64:
            raise ValueError(f"nodes must be 1..64, not {self.nodes}")
        if not 1 <= self.devices_per_node <= 32:
            raise ValueError(f"devices per node must be 1..32, not {self.devices_per_node}")
        if not 1 <= self.device_size_gib <= 1 << 20:
            raise ValueError(f"device size must be 1..{1 << 20} GiB, not {self.device_size_gib}")
        if not 1 <= self.max_inflight <= 1024:
            raise ValueError(f"max inflight must be 1..1024, not {self.max_inflight}")


def node_names(number: int) -> tuple[str, str]:
    """(manage hostname, storage address) of node `number` (1-based): documentation ranges."""
    return f"heketi-node-{number}.heketi-real.test", f"192.0.2.{number}"


def topology(cfg: RealHeketiConfig) -> dict[str, Any]:
    """The `heketi-cli topology load` document: one cluster, one zone per node."""
    nodes = []
    for n in range(1, cfg.nodes + 1):
        manage, storage = node_names(n)
        nodes.append({
            "node": {"hostnames": {"manage": [manage], "storage": [storage]}, "zone": n},
            "devices": [{"name": f"/dev/vd{chr(ord('b') + d)}", "destroydata": False}
                        for d in range(cfg.devices_per_node)],
        })
    return {"clusters": [{"nodes": nodes}]}


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_NO_REDIRECTS = urllib.request.build_opener(_NoRedirect)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


class RealHeketi:
    """One real Heketi process with its own directory. See the module docstring."""

    def __init__(self, config: RealHeketiConfig | None = None) -> None:
        self.config = config or RealHeketiConfig()
        self.config.validate()
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self._dir: Path | None = None
        self._own_dir = False
        self.startup_seconds = 0.0

    # --- what clients need ------------------------------------------------------------
    @property
    def url(self) -> str:
        scheme = "https" if self.config.tls_cert else "http"
        return f"{scheme}://{HOST}:{self.port}"

    def _ssl(self) -> ssl.SSLContext | None:
        if self.config.tls_cert is None:
            return None
        return ssl.create_default_context(cafile=str(self.config.tls_cert))

    @property
    def admin_key(self) -> str:
        return self.config.admin_key

    @property
    def user_key(self) -> str:
        return self.config.user_key

    @property
    def state_dir(self) -> Path:
        if self._dir is None:
            raise RealHeketiError("the real Heketi is not started")
        return self._dir

    @property
    def log_path(self) -> Path:
        return self.state_dir / "heketi.log"

    def log_tail(self, chars: int = 3000) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-chars:]
        return ""

    # --- lifecycle ----------------------------------------------------------------------
    def start(self) -> None:
        heketi, cli = binaries()
        t0 = time.monotonic()
        cfg = self.config
        if cfg.state_dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="heketi-real-"))
            self._own_dir = True
        else:
            cfg.state_dir.mkdir(parents=True, exist_ok=True)
            self._dir = cfg.state_dir
        os.chmod(self._dir, 0o700)
        try:
            for attempt in range(_PORT_ATTEMPTS):
                self.port = cfg.port or _free_port()
                self._spawn(heketi)
                if self._wait_hello():
                    break
                if cfg.port or attempt == _PORT_ATTEMPTS - 1 or "in use" not in self.log_tail():
                    raise RealHeketiError(f"the real Heketi did not start:\n{self.log_tail()}")
            if cfg.load_with_cli:
                self._load_topology(cli)
            else:
                self._load_topology_rest()
            self._check_topology()
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - t0

    def _spawn(self, heketi: Path) -> None:
        cfg = self.config
        conf: dict[str, Any] = {
            "port": str(self.port),
            "jwt": {"admin": {"key": cfg.admin_key}, "user": {"key": cfg.user_key}},
            "glusterfs": {
                "executor": "mock",
                "db": str(self.state_dir / "heketi.db"),
                "loglevel": "info",
                "max_inflight_operations": cfg.max_inflight,
                "start_time_background_cleaner": cfg.cleaner_start_s,
                "refresh_time_background_cleaner": cfg.cleaner_refresh_s,
            },
        }
        if cfg.tls_cert is not None and cfg.tls_key is not None:
            conf.update(enable_tls=True, cert_file=str(cfg.tls_cert), key_file=str(cfg.tls_key))
        conf_path = self.state_dir / "heketi.json"
        fd = os.open(conf_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(conf, f)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
               "HEKETI_MOCK_DEVICE_SIZE_GB": str(cfg.device_size_gib)}
        # v10.3.0 ignores the config's `use_auth` (deprecated): only the flag turns JWT off
        argv = [str(heketi), f"--config={conf_path}"]
        if not cfg.use_auth:
            argv.append("--disable-auth")
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                argv, cwd=self.state_dir, env=env,
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=cfg.detached)

    def _wait_hello(self) -> bool:
        """True once /hello answers; False if the process ended first."""
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                return False
            with (contextlib.suppress(OSError),
                  urllib.request.urlopen(f"{self.url}/hello", timeout=2,
                                         context=self._ssl()) as resp):
                if resp.status == 200:
                    return True
            time.sleep(0.05)
        raise RealHeketiError(f"the real Heketi did not answer /hello within {START_TIMEOUT}s:"
                              f"\n{self.log_tail()}")

    def _load_topology(self, cli: Path) -> None:
        topo_path = self.state_dir / "topology.json"
        topo_path.write_text(json.dumps(topology(self.config), indent=1))
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
               "HEKETI_CLI_SERVER": self.url, "HEKETI_CLI_USER": "admin",
               "HEKETI_CLI_KEY": self.admin_key}
        proc = subprocess.run([str(cli), "topology", "load", f"--json={topo_path}"],
                              env=env, capture_output=True, text=True, timeout=120,
                              check=False)
        if proc.returncode != 0:
            raise RealHeketiError(f"heketi-cli topology load failed ({proc.returncode}):\n"
                                  f"{proc.stdout[-2000:]}{proc.stderr[-2000:]}")

    def request(self, method: str, path: str,
                body: Any = None) -> tuple[int, dict[str, str], bytes]:
        """One admin request (blocking), redirects not followed: status, headers, body."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"{self.url}{path}", data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if self.config.use_auth:
            token = make_token(method, path, "admin", self.admin_key)
            req.add_header("Authorization", authorization_header(token))
        try:
            opener = _NO_REDIRECTS if self._ssl() is None else urllib.request.build_opener(
                _NoRedirect, urllib.request.HTTPSHandler(context=self._ssl()))
            with opener.open(req, timeout=10) as resp:
                return resp.status, dict(resp.headers), resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read()

    def get_json(self, path: str) -> Any:
        """GET `path` as admin (blocking): the parsed JSON body."""
        status, _headers, body = self.request("GET", path)
        if status != 200:
            raise RealHeketiError(f"GET {path}: {status} {body[:500]!r}")
        return json.loads(body)

    def _async_op(self, method: str, path: str, body: Any) -> str:
        """POST an asynchronous operation and poll its queue: the result's Location ("")."""
        status, headers, text = self.request(method, path, body)
        if status != 202:
            raise RealHeketiError(f"{method} {path}: {status} {text[:500]!r}")
        queue = headers["Location"]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            status, headers, text = self.request("GET", queue)
            if status == 303:
                return headers["Location"]
            if status == 204:
                return ""
            if status != 200:
                raise RealHeketiError(f"{method} {path}: {status} {text[:500]!r}")
            time.sleep(0.01)
        raise RealHeketiError(f"{method} {path}: still pending after 60s")

    def _load_topology_rest(self) -> None:
        status, _headers, text = self.request("POST", "/clusters", {"file": True, "block": True})
        if status != 201:
            raise RealHeketiError(f"POST /clusters: {status} {text[:500]!r}")
        cluster_id = json.loads(text)["id"]
        for entry in topology(self.config)["clusters"][0]["nodes"]:
            node = {**entry["node"], "cluster": cluster_id}
            node_id = self._async_op("POST", "/nodes", node).rsplit("/", 1)[-1]
            for device in entry["devices"]:
                self._async_op("POST", "/devices", {**device, "node": node_id})

    def _check_topology(self) -> None:
        """Ready: one cluster with every node, each with every device and its full size."""
        cfg = self.config
        clusters = self.get_json("/clusters")["clusters"]
        if len(clusters) != 1:
            raise RealHeketiError(f"expected one cluster after the topology load, got {clusters}")
        nodes = self.get_json(f"/clusters/{clusters[0]}")["nodes"]
        if len(nodes) != cfg.nodes:
            raise RealHeketiError(f"expected {cfg.nodes} nodes, got {len(nodes)}")
        for node_id in nodes:
            node = self.get_json(f"/nodes/{node_id}")
            devices = node["devices"]
            total = [d["storage"]["total"] for d in devices]
            if len(devices) != cfg.devices_per_node or any(
                    t != cfg.device_size_gib << 20 for t in total):
                raise RealHeketiError(f"node {node_id}: devices {total} KiB, expected "
                                      f"{cfg.devices_per_node} of {cfg.device_size_gib} GiB")

    def restart(self) -> None:
        """End the process and start it again on the same port and BoltDB."""
        heketi, _cli = binaries()
        self._end_process()
        self._spawn(heketi)
        if not self._wait_hello():
            raise RealHeketiError(f"the real Heketi did not restart:\n{self.log_tail()}")

    def kill(self) -> None:
        """SIGKILL the process (the directory stays, for `restart`)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def _end_process(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def stop(self) -> None:
        """End the process and remove the directory if it was ours. Safe to call twice."""
        self._end_process()
        if self._dir is not None and self._own_dir:
            shutil.rmtree(self._dir, ignore_errors=True)
        self._dir = None if self._own_dir else self._dir

    def __enter__(self) -> RealHeketi:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
