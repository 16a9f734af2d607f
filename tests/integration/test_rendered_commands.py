"""Our containers as the chart and k8s/base render them, started for real.

`helm template` of charts/heketi-csi (default values, and every value of values.yaml away
from its default) and `kubectl kustomize k8s/base` give the pod templates; every container
that runs heketi-csi (controller; node and registrar) is started as a process with the
arguments and environment of the rendered manifest. What kubelet would provide is played
here, under one short temporary root:

- volumes become directories: a hostPath is `<root>/host/<path>` (so pods that share a host
  path share the directory), any other volume `<root>/pods/<pod>/<volume>`; Secret and
  ConfigMap volumes get their items from the rendered objects, or a test key for a Secret
  the operator creates (heketi-admin, ...);
- every absolute path in the arguments is remapped through the container's volumeMounts
  (or, for a host path such as `--kubelet-registration-path`, through the pod's hostPath
  volumes); a path no volume provides is an error of the manifest;
- ports become free ones, Heketi URLs name Heketi simulators that check the key the Secret
  carries, `$(VAR)` is expanded from the container's env (fieldRef spec.nodeName = NODE);
- kubelet's plugin watcher is devtools.kubelet_sim on the registration directory.

Each process must serve (Probe ready and GetPluginInfo on its socket, /healthz 200, /metrics
where enabled; the registrar registered by the kubelet stand-in with the node's id) and stop
cleanly on SIGTERM (exit 0, its socket gone). `--help` or parsing alone would not have caught
`logFormat: text` crash-looping every pod.

Needs helm and kubectl (`python -m devtools.k8s build`); without them the tests FAIL saying so.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from grpclib.client import Channel

from devtools.heketi_sim.latency import INSTANT
from devtools.heketi_sim.server import HeketiSimulator
from devtools.k8s import helm
from devtools.kubelet_sim import KubeletSimulator
from devtools.localcluster.processes import (
    HEKETI_CSI,
    ManagedProcess,
    free_port,
    wait_http,
    wait_ready,
)
from services.common.proto import csi_grpc, csi_pb2
from tests.unit.test_chart import CA_PEM, FULL, NEWEST, render
from tests.unit.test_manifests import DRIVER_IMAGE, _split_image, build, pod_spec

REPO = Path(__file__).resolve().parents[2]
NODE = "live-node-1"
NAMESPACE = "heketi-csi"
# The key in every Secret the operator creates (the chart and k8s/base only name them).
OPERATOR_KEY = "rendered-commands-admin-key"
DEFAULT_HEKETI_URL = "http://heketi.glusterfs.svc:8080"
# Arguments that carry a port of this machine: made free ones.
PORT_FLAGS = ("--http-endpoint", "--metrics-port")
STOP_TIMEOUT = 20.0
Obj = dict[str, Any]


# ------------------------------------------------------------------ values under test


def leaves(tree: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted path, value) of every leaf of a values tree; a list counts as one leaf."""
    if isinstance(tree, dict) and tree:
        for key, value in tree.items():
            yield from leaves(value, f"{prefix}.{key}" if prefix else key)
    else:
        yield prefix, tree


def lookup(tree: Any, dotted: str) -> Any:
    for key in dotted.split("."):
        if not isinstance(tree, dict) or key not in tree:
            return KeyError
        tree = tree[key]
    return tree


def chart_defaults() -> Obj:
    values: Obj = yaml.safe_load((helm.CHART / "values.yaml").read_text())
    return values


def every_value(default_url: str, east_url: str, west_url: str, ca_pem: str) -> Obj:
    """test_chart's FULL plus the values it leaves at their defaults, with the Heketi URLs
    and CA of the simulators: every value of values.yaml changed."""
    values = copy.deepcopy(FULL)
    values["nameOverride"] = "gluster-csi"
    values["fullnameOverride"] = "live-csi"
    values["heketi"].update(url=default_url, caBundle=ca_pem, user="admin")
    values["backends"][0].update(url=east_url, caBundle=ca_pem)
    values["backends"][1].update(url=west_url)
    values["storageClasses"][1]["parameters"]["resturl"] = east_url
    values["controller"].update(healthPort=19808, nodeCheck="none",
                                adhocHeketiUrls="http://other:8080")
    values["node"].update(healthPort=19838, registrarPort=19839, mountTimeout=30,
                          statsTimeout=3, glusterLogDir="/var/log/gluster-csi",
                          glusterLogLevel="WARNING", affinity={"nodeAffinity": {
                              "requiredDuringSchedulingIgnoredDuringExecution": {
                                  "nodeSelectorTerms": [{"matchExpressions": [
                                      {"key": "storage", "operator": "Exists"}]}]}}})
    values["metrics"]["serviceMonitor"]["enabled"] = True
    resources = {"requests": {"cpu": "30m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}}
    values["sidecars"]["resources"] = resources
    values["controller"]["resources"] = resources
    values["node"]["resources"] = resources
    values["node"]["registrarResources"] = resources
    for sidecar in ("provisioner", "attacher", "snapshotter", "resizer"):
        values["sidecars"][sidecar] = {"image": f"registry.example.com/csi-{sidecar}",
                                       "tag": "v0.0.1"}
    return values


def test_every_value_is_changed_by_the_live_values() -> None:
    """The all-values render below really changes every value values.yaml has (a value
    added to the chart and not here fails this)."""
    live = every_value("https://a:1", "https://b:2", "http://c:3", "PEM")
    same = [path for path, default in leaves(chart_defaults())
            if lookup(live, path) in (KeyError, default)]
    # heketi.user: the driver needs Heketi's admin (`user` may only list and create).
    # volumeSnapshotClass.create: false would render no class for its other values to reach.
    assert same == ["heketi.user", "volumeSnapshotClass.create"], \
        f"values the live render leaves at their default: {same}"


def test_the_values_test_chart_leaves_alone_reach_their_flags() -> None:
    """Of the values above, those test_chart's FULL does not change: each reaches its field
    (the live run below remaps ports and paths, so it cannot tell)."""
    objects = render(every_value("https://a:1", "https://b:2", "http://c:3", CA_PEM))
    names = {(o["kind"], o["metadata"]["name"]) for o in objects}
    assert {("StatefulSet", "live-csi-controller"), ("DaemonSet", "live-csi-node")} <= names
    args = {(o["kind"], c["name"]): c.get("args", []) for o in objects
            for c in (pod_spec(o) or {}).get("containers", [])}
    controller = args[("StatefulSet", "heketi-csi-controller")]
    node = args[("DaemonSet", "heketi-csi-node")]
    registrar = args[("DaemonSet", "registrar")]
    assert {"--http-endpoint=:19808", "--node-check=none",
            "--adhoc-heketi-urls=http://other:8080"} <= set(controller)
    assert {"--http-endpoint=:19838", "--mount-timeout=30", "--stats-timeout=3",
            "--gluster-log-dir=/var/log/gluster-csi", "--gluster-log-level=WARNING"} <= set(node)
    assert "--http-endpoint=:19839" in registrar
    ds = next(o for o in objects if o["kind"] == "DaemonSet")
    paths = {v["hostPath"]["path"] for v in pod_spec(ds)["volumes"]  # type: ignore[index]
             if "hostPath" in v}
    assert "/var/log/gluster-csi" in paths and "/var/log/glusterfs/csi" not in paths


# ------------------------------------------------------------------------ the sandbox


@dataclass
class Sandbox:
    """Kubelet's part for one rendering: directories for volumes, paths and ports."""

    root: Path
    objects: list[Obj]
    url_map: dict[str, str]
    image: str = DRIVER_IMAGE  # containers of this image (entrypoint heketi-csi) are ours

    def host(self, path: str) -> Path:
        return self.root / "host" / path.lstrip("/")

    def secret(self, name: str) -> dict[str, str]:
        for obj in self.objects:
            if obj["kind"] == "Secret" and obj["metadata"]["name"] == name:
                data = {k: base64.b64decode(v).decode() for k, v in obj.get("data", {}).items()}
                return {**data, **obj.get("stringData", {})}
        return {"key": OPERATOR_KEY}  # one the operator creates (docs/deploy.md)

    def driver_name(self) -> str:
        """The name of the rendered CSIDriver: what every process must call itself."""
        names = [o["metadata"]["name"] for o in self.objects if o["kind"] == "CSIDriver"]
        assert len(names) == 1, f"CSIDriver objects: {names}"
        return str(names[0])

    def config_map(self, name: str) -> dict[str, str]:
        for obj in self.objects:
            if obj["kind"] == "ConfigMap" and obj["metadata"]["name"] == name:
                data: dict[str, str] = obj.get("data", {})
                return data
        raise AssertionError(f"ConfigMap {name} is mounted but not rendered")


@dataclass
class Container:
    pod: str
    name: str
    subcommand: str
    argv: list[str]
    env: dict[str, str]
    mounts: list[tuple[str, Path]]  # (mountPath, directory here), longest first
    sockets: list[Path] = field(default_factory=list)
    ports: dict[str, int] = field(default_factory=dict)

    def flag(self, name: str) -> str | None:
        for index, arg in enumerate(self.argv):
            if arg.startswith(name + "="):
                return arg.split("=", 1)[1]
            if arg == name and index + 1 < len(self.argv):
                return self.argv[index + 1]
        return None


def _write_items(directory: Path, data: dict[str, str], items: list[Obj] | None) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    chosen = [(i["key"], i["path"]) for i in items] if items else [(k, k) for k in data]
    for key, path in chosen:
        assert key in data, f"volume item {key!r} is not in its source ({sorted(data)})"
        target = directory / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(data[key])


def _volume_dirs(box: Sandbox, pod: str, spec: Obj) -> dict[str, Path]:
    dirs: dict[str, Path] = {}
    for volume in spec.get("volumes", []):
        name = volume["name"]
        if "hostPath" in volume:
            path = box.host(volume["hostPath"]["path"])
            if volume["hostPath"].get("type") not in ("CharDevice", "BlockDevice", "File",
                                                      "Socket"):
                path.mkdir(parents=True, exist_ok=True)
            dirs[name] = path
            continue
        path = box.root / "pods" / pod / name
        if "secret" in volume:
            _write_items(path, box.secret(volume["secret"]["secretName"]),
                         volume["secret"].get("items"))
        elif "configMap" in volume:
            _write_items(path, box.config_map(volume["configMap"]["name"]),
                         volume["configMap"].get("items"))
        else:  # emptyDir; projected (API token: no cluster here, the processes see none)
            path.mkdir(parents=True, exist_ok=True)
        dirs[name] = path
    return dirs


def _remap(path: str, mounts: list[tuple[str, Path]], host_paths: list[str],
           box: Sandbox, where: str) -> str:
    for mount_path, directory in mounts:
        if path == mount_path or path.startswith(mount_path.rstrip("/") + "/"):
            return str(directory / path[len(mount_path):].lstrip("/"))
    for host_path in host_paths:
        # A host path (what kubelet sees), or a directory above host paths (kubelet's root).
        if path == host_path or path.startswith(host_path.rstrip("/") + "/") \
                or host_path.startswith(path.rstrip("/") + "/"):
            return str(box.host(path))
    raise AssertionError(f"{where}: {path} is provided by no volume of the pod")


def _env(box: Sandbox, container: Obj) -> dict[str, str]:
    env: dict[str, str] = {}
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = str(item["value"])
            continue
        source = item["valueFrom"]
        if "fieldRef" in source:
            env[item["name"]] = {"spec.nodeName": NODE, "metadata.namespace": NAMESPACE}[
                source["fieldRef"]["fieldPath"]]
        elif "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            env[item["name"]] = box.secret(ref["name"])[ref["key"]]
        else:
            raise AssertionError(f"env {item['name']}: no stand-in for {source}")
    return env


def _expand(arg: str, env: dict[str, str]) -> str:
    return re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), arg)


def containers(box: Sandbox) -> list[Container]:
    """Our containers of every rendered workload, their command lines made local."""
    found: list[Container] = []
    for obj in box.objects:
        spec = pod_spec(obj)
        if spec is None:
            continue
        pod = obj["metadata"]["name"]
        dirs = _volume_dirs(box, pod, spec)
        host_paths = [v["hostPath"]["path"] for v in spec.get("volumes", []) if "hostPath" in v]
        for raw in [*spec.get("initContainers", []), *spec.get("containers", [])]:
            if raw.get("command") or _split_image(raw.get("image", ""))[0] != box.image:
                continue
            sub, args = raw["args"][0], raw["args"][1:]
            where = f"{obj['kind']}/{pod} {raw['name']}"
            mounts = sorted(((m["mountPath"], dirs[m["name"]] / m.get("subPath", ""))
                             for m in raw.get("volumeMounts", [])),
                            key=lambda m: len(m[0]), reverse=True)
            env = _env(box, raw)
            made = Container(pod, raw["name"], sub, [], env, mounts)
            made.argv = [_local_arg(box, made, host_paths, _expand(a, env), where)
                         for a in args]
            found.append(made)
    return found


def _local_arg(box: Sandbox, made: Container, host_paths: list[str], arg: str,
               where: str) -> str:
    if not arg.startswith("--") or "=" not in arg:
        assert not arg.startswith("/"), f"{where}: use --flag=value forms ({arg})"
        return arg
    flag, value = arg.split("=", 1)
    if flag in PORT_FLAGS and value not in ("", "0"):
        port = free_port()
        made.ports[flag] = port
        host = value.rsplit(":", 1)[0] if ":" in value else None
        return f"{flag}={port}" if host is None else f"{flag}={host}:{port}"
    if value in box.url_map:
        return f"{flag}={box.url_map[value]}"
    scheme = "unix://" if value.startswith("unix:///") else ""
    path = value[len(scheme):]
    if path.startswith("/"):
        local = _remap(path, made.mounts, host_paths, box, where)
        if flag in ("--endpoint", "--csi-address") and made.subcommand != "registrar":
            made.sockets.append(Path(local))
        if flag == "--backends-file":
            _localize_backends_file(box, made, host_paths, Path(local), where)
        return f"{flag}={scheme}{local}"
    return arg


def _localize_backends_file(box: Sandbox, made: Container, host_paths: list[str],
                            path: Path, where: str) -> None:
    """The backends file names container paths (keys, CAs) and URLs: make them local."""
    backends = yaml.safe_load(path.read_text())
    for backend in backends:
        for key in ("key_file", "ca_file"):
            if key in backend:
                backend[key] = _remap(backend[key], made.mounts, host_paths, box, where)
        backend["url"] = box.url_map.get(backend["url"], backend["url"])
    path.write_text(yaml.safe_dump(backends))


# ------------------------------------------------------------------- running them


def clean_env(extra: dict[str, str]) -> dict[str, str]:
    """Nothing of this test process's environment but what Python needs: no variable the
    driver reads (HEKETI_*, KUBERNETES_SERVICE_HOST, LOG_FORMAT, ...) leaks in."""
    keep = {k: os.environ[k] for k in ("PATH", "LANG", "LC_ALL") if k in os.environ}
    return {**keep, "HOME": "/nonexistent", **extra}


async def start(box: Sandbox, c: Container) -> ManagedProcess:
    proc = ManagedProcess(f"{c.pod}/{c.name}", [*HEKETI_CSI, c.subcommand, *c.argv],
                          box.root / "logs" / f"{c.pod}-{c.name}.log")
    proc.env = clean_env(c.env)
    return await proc.start()


async def plugin_name(socket: Path) -> str:
    channel = Channel(path=str(socket))
    try:
        info = await csi_grpc.IdentityStub(channel).GetPluginInfo(
            csi_pb2.GetPluginInfoRequest(), timeout=10)
        return str(info.name)
    finally:
        channel.close()


async def serves(proc: ManagedProcess, c: Container, driver: str) -> None:
    """Probe, GetPluginInfo (the CSIDriver's name), /healthz and /metrics of a controller or
    node process."""
    assert c.sockets, f"{proc.name}: no --endpoint"
    await wait_ready(proc, c.sockets[0], timeout=60)
    assert await plugin_name(c.sockets[0]) == driver
    await serves_http(proc, c)


async def serves_http(proc: ManagedProcess, c: Container) -> None:
    assert "--http-endpoint" in c.ports, f"{proc.name}: no /healthz (--http-endpoint)"
    await wait_http(proc, f"http://127.0.0.1:{c.ports['--http-endpoint']}/healthz", timeout=60)
    if "--metrics-port" in c.ports:
        url = f"http://127.0.0.1:{c.ports['--metrics-port']}/metrics"
        await wait_http(proc, url, timeout=30)
        async with aiohttp.ClientSession() as session, session.get(url) as reply:
            assert "# TYPE" in await reply.text(), f"{proc.name}: {url} is no Prometheus page"


async def stops_cleanly(proc: ManagedProcess, paths: list[Path]) -> None:
    code = await proc.stop(timeout=STOP_TIMEOUT, sig=signal.SIGTERM)
    assert code == 0, f"{proc.name} exited {code} on SIGTERM:\n{proc.log_text()[-3000:]}"
    left = [str(p) for p in paths if p.exists()]
    assert not left, f"{proc.name} left {left} behind"


def check_log_format(proc: ManagedProcess, c: Container) -> None:
    lines = [line for line in proc.log_text().splitlines() if line.strip()]
    assert lines, f"{proc.name} logged nothing"
    fmt = c.flag("--log-format")

    def is_json(line: str) -> bool:
        try:
            return isinstance(json.loads(line), dict)
        except ValueError:
            return False

    if fmt == "json":
        assert all(map(is_json, lines)), f"{proc.name}: not JSON lines:\n{lines[:3]}"
    else:
        assert not any(map(is_json, lines)), f"{proc.name}: --log-format={fmt} wrote JSON"


def sockets_in(directory: Path) -> list[Path]:
    return [p for p in directory.iterdir() if p.is_socket()]


async def run_all(box: Sandbox) -> list[str]:
    """Start every container of ours, check that each serves, stop each; the names run."""
    ours = containers(box)
    by_kind = {c.subcommand: [x for x in ours if x.subcommand == c.subcommand] for c in ours}
    assert {k: len(v) for k, v in by_kind.items()} == {
        "controller": 1, "node": 1, "registrar": 1}, [f"{c.pod}/{c.name}" for c in ours]
    controller, node, registrar = (by_kind[k][0] for k in ("controller", "node", "registrar"))
    assert registrar.pod == node.pod, "the registrar must run in the node plugin's pod"
    procs: list[ManagedProcess] = []
    try:
        for c in (controller, node):
            procs.append(await start(box, c))
            await serves(procs[-1], c, box.driver_name())
        registration_dir = Path(str(registrar.flag("--plugin-registration-dir")))
        async with KubeletSimulator(registration_dir) as kubelet:
            reg = await start(box, registrar)
            procs.append(reg)
            node_id = await kubelet.wait_registered(box.driver_name(), timeout=60)
            assert node_id == NODE
            await serves_http(reg, registrar)
            reg_sockets = sockets_in(registration_dir)
            assert reg_sockets, "the registrar made no registration socket"
            await stops_cleanly(reg, reg_sockets)
        await stops_cleanly(procs[1], node.sockets)
        await stops_cleanly(procs[0], controller.sockets)
        for proc, c in zip(procs, (controller, node, registrar), strict=True):
            check_log_format(proc, c)
    finally:
        for proc in procs:
            await proc.kill()
    return [f"{c.pod}/{c.name}" for c in (controller, node, registrar)]


# ------------------------------------------------------------------------- fixtures


@pytest.fixture
def root() -> Iterator[Path]:
    # Short: unix socket paths (kubelet root + plugins/<driver>/csi.sock) must fit 107 bytes.
    path = Path(tempfile.mkdtemp(prefix="hcsi-live-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key (openssl; it is a test dependency)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.fail("openssl is not installed (tools/setup.sh installs it)", pytrace=False)
    cert, key = directory / "heketi.crt", directory / "heketi.key"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True,
                   timeout=60)
    return cert, key


@pytest.fixture
async def sims(root: Path) -> AsyncIterator[dict[str, HeketiSimulator]]:
    """Heketi stand-ins: the default backend and FULL's east (both HTTPS) and west; each
    accepts only the admin key its Secret carries in the renders below."""
    cert, key = self_signed(root)
    made = {
        "default-operator": HeketiSimulator(op_latency=INSTANT, admin_key=OPERATOR_KEY),
        "default-full": HeketiSimulator(op_latency=INSTANT,
                                        admin_key=FULL["heketi"]["secret"]["key"],
                                        tls_cert=cert, tls_key=key),
        "east": HeketiSimulator(op_latency=INSTANT,
                                admin_key=FULL["backends"][0]["secret"]["key"],
                                tls_cert=cert, tls_key=key),
        "west": HeketiSimulator(op_latency=INSTANT, admin_key=OPERATOR_KEY),
    }
    started: list[HeketiSimulator] = []
    try:
        for sim in made.values():
            await sim.start()
            started.append(sim)
        yield made
    finally:
        for sim in started:
            await sim.close()


async def _render(values: Obj | None) -> list[Obj]:
    return await asyncio.to_thread(render, values, NEWEST)


# ---------------------------------------------------------------------------- tests


async def test_chart_defaults_start_and_serve(root: Path,
                                              sims: dict[str, HeketiSimulator]) -> None:
    box = Sandbox(root, await _render(None), {DEFAULT_HEKETI_URL: sims["default-operator"].url})
    assert await run_all(box) == ["heketi-csi-controller/heketi-csi-controller",
                                  "heketi-csi-node/heketi-csi-node", "heketi-csi-node/registrar"]
    assert sims["default-operator"].request_counts, "the controller never asked Heketi"


async def test_chart_with_every_value_changed_starts_and_serves(
        root: Path, sims: dict[str, HeketiSimulator]) -> None:
    values = every_value(sims["default-full"].url, sims["east"].url, sims["west"].url,
                         (root / "heketi.crt").read_text())
    box = Sandbox(root, await _render(values), {}, image=values["image"]["repository"])
    assert await run_all(box) == ["live-csi-controller/heketi-csi-controller",
                                  "live-csi-node/heketi-csi-node", "live-csi-node/registrar"]
    for name in ("default-full", "east", "west"):
        assert sims[name].request_counts, f"the controller never asked backend {name}"


async def test_k8s_base_starts_and_serves(root: Path, sims: dict[str, HeketiSimulator]) -> None:
    objects = await asyncio.to_thread(build, REPO / "k8s/base")
    box = Sandbox(root, objects, {DEFAULT_HEKETI_URL: sims["default-operator"].url})
    assert await run_all(box) == ["heketi-csi-controller/heketi-csi-controller",
                                  "heketi-csi-node/heketi-csi-node", "heketi-csi-node/registrar"]
    assert sims["default-operator"].request_counts


async def test_a_flag_value_the_cli_refuses_is_caught(root: Path,
                                                     sims: dict[str, HeketiSimulator]) -> None:
    """The check is real: a value the processes refuse (as `logFormat: text` was) fails it.
    values.schema.json refuses a wrong logFormat at install; extraArgs gets past it."""
    box = Sandbox(root, await _render({"controller": {"extraArgs": ["--log-format=fancy"]}}),
                  {DEFAULT_HEKETI_URL: sims["default-operator"].url})
    with pytest.raises(RuntimeError, match=r"(?s)exited with 2:.*unknown log format 'fancy'"):
        await run_all(box)
