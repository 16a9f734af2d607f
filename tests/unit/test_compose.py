"""docker-compose.yml and the Dockerfile, checked without a Docker engine.

docker-compose.yml is validated against the Compose Specification JSON schema, read from the
PyPI wheel of docker-compose 1.29.2 (`compose/config/compose_spec.json`, the 2021 revision,
draft 2019-09) that tools/setup.sh downloads with `pip download --no-deps` into the cache (the
package itself is not installed: it pins PyYAML<6 and jsonschema<4). Then against what
the stack needs to work: images that get built, volumes that exist, the node's privileges and
shared mount propagation, the simulator sharing glusterd's namespaces, and heketi-csi flags
that the CLI accepts.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import zipfile
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.unit.test_manifests import (
    CONTRACT_FLAGS,
    REPO,
    cli_help_flags,
    cli_parse_error,
    flag_value,
    flags_of,
    help_flags,
)

COMPOSE_FILE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"
SCHEMA_WHEEL = Path(os.environ.get("HEKETI_CSI_CACHE", Path.home() / ".cache/heketi-csi")) \
    / "wheels/docker_compose-1.29.2-py2.py3-none-any.whl"
SCHEMA_MEMBER = "compose/config/compose_spec.json"
SCHEMA_SHA256 = "0dc04bd346dcfee1b1419628fff79937bbf076925f298f272a2b490e2b112bac"
DRIVER_SOCKET_DIR = "/var/lib/kubelet/plugins/glusterfs.heketi.csi.io"

Obj = dict[str, Any]


def compose() -> Obj:
    doc: Obj = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    return doc


def services() -> dict[str, Obj]:
    found: dict[str, Obj] = compose()["services"]
    return found


def schema_bytes() -> bytes:
    if not SCHEMA_WHEEL.exists():
        pytest.fail(f"{SCHEMA_WHEEL} is missing: run `bash tools/setup.sh` (it downloads the "
                    "Compose schema's wheel from PyPI)")
    with zipfile.ZipFile(SCHEMA_WHEEL) as wheel:
        return wheel.read(SCHEMA_MEMBER)


def schema() -> Obj:
    loaded: Obj = json.loads(schema_bytes())
    return loaded


def schema_errors(document: Obj) -> list[str]:
    # The file declares draft 2019-09 (with an http URI jsonschema does not recognise).
    validator = jsonschema.Draft201909Validator(schema())
    return [f"{'/'.join(str(p) for p in e.absolute_path)}: {e.message}"
            for e in validator.iter_errors(document)]


# ------------------------------------------------------------------------------- schema


def test_compose_file_matches_the_compose_specification() -> None:
    errors = schema_errors(compose())
    assert not errors, "\n".join(errors)


def test_schema_rejects_what_compose_would_reject() -> None:
    """The validation above can fail."""
    broken = compose()
    broken["services"]["node"]["privilegd"] = True
    assert schema_errors(broken)
    broken = compose()
    broken["services"]["demo"]["depends_on"]["controller"]["condition"] = "service_ready"
    assert schema_errors(broken)


def test_schema_is_the_expected_revision() -> None:
    assert hashlib.sha256(schema_bytes()).hexdigest() == SCHEMA_SHA256


# ------------------------------------------------------------------------------ helpers


def command_of(service: Obj) -> list[str]:
    command = service.get("command", [])
    assert isinstance(command, list), "use the list form: no shell, no word splitting"
    return [str(part) for part in command]


def image_of(name: str) -> str:
    image: str = services()[name]["image"]
    return image


def volume_entries(service: Obj) -> list[tuple[str, str, str]]:
    """(source, target, options) of each volume, short or long syntax."""
    entries = []
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            parts = volume.split(":")
            if parts[0].startswith("${"):
                # ${VAR:-default}/path contains a colon of its own.
                closing = next(i for i, p in enumerate(parts) if "}" in p)
                parts = [":".join(parts[:closing + 1]), *parts[closing + 1:]]
            source, target = parts[0], parts[1]
            options = parts[2] if len(parts) > 2 else ""
        else:
            source, target = volume.get("source", ""), volume["target"]
            options = volume.get("bind", {}).get("propagation", "")
            if volume.get("read_only"):
                options = ",".join(filter(None, [options, "ro"]))
        entries.append((source, target, options))
    return entries


def is_named(source: str) -> bool:
    return bool(source) and not source.startswith(("/", ".", "${", "~"))


def mount_source(service: Obj, path: str) -> tuple[str, str, str] | None:
    """The volume entry whose target is `path` or a parent of it (longest wins)."""
    best = None
    for source, target, options in volume_entries(service):
        if (path == target or path.startswith(target.rstrip("/") + "/")) and (
                best is None or len(target) > len(best[1])):
            best = (source, target, options)
    return best


def driver_services() -> dict[str, tuple[str, list[str]]]:
    """Services running heketi-csi: name -> (subcommand, arguments)."""
    found = {}
    for name, service in services().items():
        command = command_of(service)
        if service.get("image", "").startswith("ghcr.io/heketi-csi/heketi-csi:") and command:
            found[name] = (command[0], command[1:])
    return found


def dockerfile_stages() -> dict[str, list[str]]:
    """Stage name -> its instruction lines (continuations joined)."""
    text = DOCKERFILE.read_text(encoding="utf-8").replace("\\\n", " ")
    stages: dict[str, list[str]] = {}
    current: list[str] = []
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        match = re.match(r"FROM\s+(\S+)(?:\s+AS\s+(\S+))?", stripped, re.IGNORECASE)
        if match:
            current = []
            stages[match.group(2) or f"<unnamed {len(stages)}>"] = current
        current.append(stripped)
    return stages


# ----------------------------------------------------------------------------- services


def test_every_service_has_an_image_that_gets_built() -> None:
    stages = dockerfile_stages()
    built = {}
    for name, service in services().items():
        assert "image" in service or "build" in service, name
        if "build" in service:
            build = service["build"]
            assert build["context"] == "."
            assert build["target"] in stages, f"{name}: no Dockerfile stage {build['target']}"
            built[service["image"]] = build["target"]
    for name, service in services().items():
        assert service["image"] in built, f"{name}: {service['image']} is built by no service"
    assert built == {"ghcr.io/heketi-csi/heketi-csi:local": "runtime",
                     "heketi-csi-dev:local": "dev"}


def test_volumes_are_declared_and_used() -> None:
    declared = set(compose().get("volumes", {}))
    used = set()
    for name, service in services().items():
        for source, _target, _options in volume_entries(service):
            if is_named(source):
                assert source in declared, f"{name}: undeclared volume {source}"
                used.add(source)
    assert used == declared, f"declared but unused: {declared - used}"


def test_service_references_exist() -> None:
    names = set(services())
    for name, service in services().items():
        depends = service.get("depends_on", [])
        for other in depends if isinstance(depends, list) else depends.keys():
            assert other in names, f"{name} depends on unknown {other}"
        for key in ("network_mode", "pid"):
            value = service.get(key, "")
            if value.startswith("service:"):
                assert value.removeprefix("service:") in names, f"{name}: {key}"


def test_glusterd_and_the_simulator_share_host_name_processes_and_sockets() -> None:
    glusterd, heketi = services()["glusterd"], services()["heketi"]
    assert glusterd["privileged"] is True
    # The simulator names bricks after its host name; mounts use that name, so it must be
    # resolvable by the other services: the compose service name.
    assert glusterd["hostname"] == "glusterd"
    assert heketi["network_mode"] == "service:glusterd"
    assert heketi["pid"] == "service:glusterd", "the simulator must see glusterd running"
    glusterd_volumes = {t: s for s, t, _ in volume_entries(glusterd)}
    heketi_volumes = {t: s for s, t, _ in volume_entries(heketi)}
    brick_root = flag_value(command_of(heketi), "--brick-root") or ""
    assert brick_root in heketi_volumes
    assert glusterd_volumes.get(brick_root) == heketi_volumes[brick_root]
    assert glusterd_volumes.get("/run") == heketi_volumes.get("/run"), "CLI socket in /run"
    assert command_of(heketi)[:3] == ["python", "-m", "devtools.heketi_sim"]
    assert "--glusterd" in command_of(heketi)
    assert command_of(glusterd)[0] == "glusterd"
    assert "--no-daemon" in command_of(glusterd)


def test_simulator_flags_exist_in_its_help() -> None:
    used = set(flags_of(command_of(services()["heketi"])))
    flags = help_flags("devtools.heketi_sim")
    assert used <= flags, f"python -m devtools.heketi_sim --help lacks {used - flags}"


def test_controller_reaches_the_simulator() -> None:
    subcommand, args = driver_services()["controller"]
    assert subcommand == "controller"
    url = flag_value(args, "--heketi-url") or ""
    port = flag_value(command_of(services()["heketi"]), "--port")
    # The simulator lives in glusterd's network namespace.
    assert url == f"http://glusterd:{port}"
    environment = services()["controller"]["environment"]
    admin_key = flag_value(command_of(services()["heketi"]), "--admin-key")
    assert admin_key and environment["HEKETI_KEY"] == admin_key


def test_controller_publishes_to_the_compose_node() -> None:
    """No CSINode objects without Kubernetes: the controller accepts the node's id."""
    _sub, controller = driver_services()["controller"]
    _sub, node = driver_services()["node"]
    assert flag_value(controller, "--node-check") == "static"
    accepted = (flag_value(controller, "--static-node-ids") or "").split(",")
    assert flag_value(node, "--node-id") in accepted


def test_node_mounts_with_shared_propagation() -> None:
    node = services()["node"]
    assert node["privileged"] is True
    assert str(node.get("user", "")).split(":")[0] == "0"
    assert any(d.split(":")[0] == "/dev/fuse" for d in node["devices"])
    subcommand, args = driver_services()["node"]
    assert subcommand == "node"
    kubelet_root = flag_value(args, "--kubelet-root") or ""
    entry = mount_source(node, kubelet_root)
    assert entry is not None and entry[1] == kubelet_root
    source, _target, options = entry
    assert not is_named(source), "a host directory, so that mounts propagate"
    assert "rshared" in options.split(","), "the node's mounts must propagate out"
    endpoint = (flag_value(args, "--endpoint") or "").removeprefix("unix://")
    assert endpoint == f"{DRIVER_SOCKET_DIR}/csi.sock"
    # The registrar and the demo look at the same host directory and see the mounts.
    for other in ("registrar", "demo"):
        seen = mount_source(services()[other], kubelet_root)
        assert seen is not None and seen[0] == source, other
        assert seen[2] in ("rslave", "rshared"), f"{other} would not see the node's mounts"


def test_registrar_serves_the_node_socket() -> None:
    _node, node_args = driver_services()["node"]
    subcommand, args = driver_services()["registrar"]
    assert subcommand == "registrar"
    node_socket = (flag_value(node_args, "--endpoint") or "").removeprefix("unix://")
    assert flag_value(args, "--csi-address") == node_socket
    assert flag_value(args, "--kubelet-registration-path") == node_socket
    health = services()["registrar"]["healthcheck"]["test"]
    port = (flag_value(args, "--http-endpoint") or "").rpartition(":")[2]
    assert f":{port}/healthz" in " ".join(health)


def test_controller_socket_is_shared_with_the_demo() -> None:
    _sub, args = driver_services()["controller"]
    socket = (flag_value(args, "--endpoint") or "").removeprefix("unix://")
    controller_volume = mount_source(services()["controller"], socket)
    demo_volume = mount_source(services()["demo"], socket)
    assert controller_volume is not None and is_named(controller_volume[0])
    assert demo_volume is not None and demo_volume[:2] == controller_volume[:2]
    assert services()["demo"]["environment"]["CSI_CONTROLLER_ENDPOINT"] == f"unix://{socket}"


def test_demo_runs_once_after_the_stack_is_up() -> None:
    demo = services()["demo"]
    assert command_of(demo) == ["python", "-m", "devtools.demo"]
    # The demo drives the stack's own sockets (it mounts nothing, so it is not privileged).
    env = demo["environment"]
    assert env["CSI_NODE_ENDPOINT"] == \
        f"unix://{DRIVER_SOCKET_DIR}/csi.sock"
    assert "privileged" not in demo and "devices" not in demo
    assert demo["restart"] == "no"
    assert image_of("demo") == "heketi-csi-dev:local"
    assert set(demo["depends_on"]) >= {"heketi", "controller", "registrar"}
    assert demo["depends_on"]["registrar"]["condition"] == "service_healthy"
    # The registrar waits for the node, the node and the simulator for glusterd.
    assert "node" in services()["registrar"]["depends_on"]


def test_driver_flags_follow_the_contract_and_the_cli() -> None:
    assert set(driver_services()) == {"controller", "node", "registrar"}
    for name, (subcommand, args) in driver_services().items():
        used = set(flags_of(args))
        assert used <= CONTRACT_FLAGS[subcommand], f"{name}: {used - CONTRACT_FLAGS[subcommand]}"
        missing = used - cli_help_flags(subcommand)
        assert not missing, f"{name}: heketi-csi {subcommand} --help lacks {sorted(missing)}"
        error = cli_parse_error(subcommand, args, {})
        assert error is None, f"{name}: {error}"


# ---------------------------------------------------------------------------- Dockerfile


def test_dockerfile_stages() -> None:
    stages = dockerfile_stages()
    assert {"base", "builder", "runtime", "dev"} <= set(stages)
    # One base for all: BASE_IMAGE, the Python image unless the build passes another Debian.
    assert stages["base"][0].split()[1] == "${BASE_IMAGE}"
    for name in ("builder", "runtime"):
        assert stages[name][0].split()[1] == "base"
    text = DOCKERFILE.read_text(encoding="utf-8")
    assert "ARG BASE_IMAGE=python:3.11-slim-bookworm" in text
    # The default target (last stage) is the driver image.
    last = list(stages.values())[-1]
    assert last[0].split()[1] == "runtime"


def test_runtime_image_is_small_and_runs_heketi_csi_as_non_root() -> None:
    runtime = " \n".join(dockerfile_stages()["runtime"])
    assert "glusterfs-client" in runtime
    assert "--no-install-recommends" in runtime
    assert "rm -rf /var/lib/apt/lists/*" in runtime
    for tool in ("build-essential", "gcc", "glusterfs-server", "COPY tests", "COPY services"):
        assert tool not in runtime, f"{tool} does not belong in the runtime image"
    assert re.search(r"pip install .*--no-index", runtime), "install only the built wheels"
    assert 'ENTRYPOINT ["heketi-csi"]' in runtime
    user = [line for line in dockerfile_stages()["runtime"] if line.startswith("USER")]
    assert user and user[-1].split()[1].split(":")[0] not in ("0", "root")


def test_dev_image_has_the_simulator_and_gluster_server() -> None:
    dev = " \n".join(dockerfile_stages()["dev"])
    assert dev.startswith("FROM runtime AS dev")
    assert "glusterfs-server" in dev
    assert "COPY devtools ./devtools" in dev
    assert "PYTHONPATH=" in dev


def test_dockerignore_keeps_the_context_to_what_the_build_copies() -> None:
    lines = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    assert lines[0] == "*", "allow-list: exclude everything, then re-include"
    included = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    copied: set[str] = set()
    for stage in dockerfile_stages().values():
        for line in stage:
            if line.startswith("COPY") and "--from" not in line:
                copied.update(part.rstrip("/") for part in line.split()[1:-1])
    assert copied <= included, f"COPY of files .dockerignore leaves out: {copied - included}"
