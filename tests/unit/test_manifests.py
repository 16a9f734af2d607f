"""The Kubernetes manifests under k8s/: they build, validate, agree with each other, and pass
the heketi-csi processes exactly the flags the CLI accepts.

Every kustomization directory is rendered with `kubectl kustomize`, by the kubectl of the
Kubernetes version the local cluster builds (`python -m devtools.k8s build`; .ci/run builds it
before the tests), so patches and generators are rendered for real. Built-in kinds are
validated offline with `kubernetes-validate` (strict: unknown fields are errors) for the oldest
Kubernetes we support and the newest the package knows. The VolumeSnapshot kinds are CRDs
the package has no schema for; they are checked structurally.
"""

from __future__ import annotations

import base64
import functools
import json
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "k8s"

DRIVER_NAME = "glusterfs.heketi.csi.io"
DRIVER_IMAGE = "ghcr.io/heketi-csi/heketi-csi"
DEV_IMAGE = "ghcr.io/heketi-csi/heketi-csi-dev"
LOCAL_REGISTRY = "127.0.0.1:23850"  # devtools/k8s/config.py REGISTRY
SNAPSHOT_GROUP = "snapshot.storage.k8s.io"
OLDEST_KUBERNETES = "1.26"
NEWEST_KUBERNETES = kubernetes_validate.utils.latest_version()
KUBELET_PLUGIN_DIR = f"/var/lib/kubelet/plugins/{DRIVER_NAME}"
# Secrets the operator creates (docs/deploy.md); a build may reference them without
# containing them.
EXTERNAL_SECRETS = {"heketi-admin", "heketi-jwt"}

# The flags each process takes (contracts: "Flags per process", plus the controller's
# node check the CLI added since). Manifests must use only these;
# test_driver_flags_exist_in_cli_help checks them against the real CLI.
_COMMON = {"--endpoint", "--driver-name", "--log-level", "--log-format", "--metrics-port",
           "--grace-period"}
CONTRACT_FLAGS: dict[str, set[str]] = {
    "controller": _COMMON | {
        "--http-endpoint", "--heketi-url", "--heketi-user", "--heketi-key-file", "--backends-file",
        "--heketi-ca-file", "--heketi-max-inflight", "--heketi-timeout",
        "--node-check", "--static-node-ids", "--brick-health-timeout",
    },
    "node": _COMMON | {
        "--http-endpoint", "--node-id", "--kubelet-root", "--gluster-log-dir",
        "--gluster-log-level", "--mount-timeout", "--stats-timeout", "--repair-interval",
        "--health-timeout", "--client-cgroup-root", "--delete-stale-pods",
    },
    "registrar": {
        "--csi-address", "--kubelet-registration-path", "--plugin-registration-dir",
        "--http-endpoint", "--driver-name", "--wait-timeout", "--log-level", "--log-format",
    },
}

# StorageClass parameter keys of the in-tree kubernetes.io/glusterfs plugin (lower case;
# matched case-insensitively, as the plugin did). csi.storage.k8s.io/* belong to sidecars.
INTREE_PARAMETERS = {
    "resturl", "restuser", "restuserkey", "secretname", "secretnamespace", "restauthenabled",
    "clusterid", "gidmin", "gidmax", "volumetype", "volumeoptions", "volumenameprefix",
    "snapfactor", "customepnameprefix",
}
SIDECAR_PREFIX = "csi.storage.k8s.io/"
SECRET_KINDS = ("provisioner", "controller-publish", "controller-expand", "node-stage")

# Sidecar image -> its version variable in devtools/k8s/versions.env: k8s/base deploys the
# releases the local Kubernetes harness builds and runs them against (issue 12). No
# livenessprobe: the controller and node serve their own /healthz.
SIDECAR_VERSIONS = {
    "registry.k8s.io/sig-storage/csi-provisioner": "EXTERNAL_PROVISIONER",
    "registry.k8s.io/sig-storage/csi-attacher": "EXTERNAL_ATTACHER",
    "registry.k8s.io/sig-storage/csi-snapshotter": "EXTERNAL_SNAPSHOTTER",
    "registry.k8s.io/sig-storage/csi-resizer": "EXTERNAL_RESIZER",
}
HARNESS_VERSIONS = REPO / "devtools/k8s/versions.env"
# The Heketi simulator's address on the local cluster (devtools/k8s: the node's bridge IP).
LOCAL_HEKETI_URL = "http://10.244.0.1:18080"


def harness_versions() -> dict[str, str]:
    pairs = (line.split("=", 1) for line in HARNESS_VERSIONS.read_text().splitlines()
             if "=" in line and not line.lstrip().startswith("#"))
    return {key.strip(): value.strip() for key, value in pairs}

Obj = dict[str, Any]

# --------------------------------------------------------------------------- discovery


def kustomization_dirs() -> list[Path]:
    return sorted(p.parent for p in K8S.rglob("kustomization.yaml"))


def _rel(path: Path) -> str:
    return str(path.relative_to(REPO))


def load_docs(path: Path) -> list[Obj]:
    with path.open(encoding="utf-8") as handle:
        return [doc for doc in yaml.safe_load_all(handle) if doc is not None]


def load_kustomization(directory: Path) -> Obj:
    docs = load_docs(directory / "kustomization.yaml")
    assert len(docs) == 1, f"{_rel(directory)}/kustomization.yaml: expected one document"
    return docs[0]


# ------------------------------------------------------------------------------ render


@functools.cache
def kubectl() -> str:
    """The kubectl of the local cluster's Kubernetes version (built once, cached)."""
    from devtools.k8s.build import binary

    path = binary("kubectl")
    if not path.is_file():
        pytest.fail(f"{path} is not built: `make k8s-build` (or .ci/run) builds it",
                    pytrace=False)
    return str(path)


def _split_image(image: str) -> tuple[str, str | None]:
    """('registry/name', 'tag') of an image reference; digests count as tags."""
    if "@" in image:
        name, digest = image.split("@", 1)
        return name, "@" + digest
    head, _, last = image.rpartition("/")
    if ":" in last:
        name, tag = last.split(":", 1)
        return (f"{head}/{name}" if head else name), tag
    return image, None


def containers_of(obj: Obj) -> list[Obj]:
    spec = pod_spec(obj)
    if spec is None:
        return []
    return [*spec.get("initContainers", []), *spec.get("containers", [])]


def pod_spec(obj: Obj) -> Obj | None:
    kind = obj.get("kind")
    if kind == "Pod":
        spec: Obj = obj["spec"]
        return spec
    if kind in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"):
        template: Obj = obj["spec"]["template"]["spec"]
        return template
    if kind == "CronJob":
        job: Obj = obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        return job
    return None


@functools.cache
def _build_cached(directory: Path) -> str:
    """The rendered YAML of a kustomization directory."""
    result = subprocess.run(
        [kubectl(), "kustomize", str(directory)], capture_output=True, text=True, timeout=120,
        check=False,
    )
    if result.returncode != 0:
        raise AssertionError(f"kubectl kustomize {_rel(directory)} failed:\n{result.stderr}")
    return result.stdout


def build(directory: Path) -> list[Obj]:
    """The objects of a kustomization directory (a fresh copy each call)."""
    text = _build_cached(directory)
    return [doc for doc in yaml.safe_load_all(text) if doc is not None]


def all_objects() -> Iterator[tuple[Path, Obj]]:
    for directory in kustomization_dirs():
        for obj in build(directory):
            yield directory, obj


def find(objects: list[Obj], kind: str, name: str | None = None) -> list[Obj]:
    return [o for o in objects
            if o.get("kind") == kind and (name is None or o["metadata"]["name"] == name)]


def one(objects: list[Obj], kind: str, name: str) -> Obj:
    found = find(objects, kind, name)
    assert len(found) == 1, f"expected exactly one {kind}/{name}, found {len(found)}"
    return found[0]


def secret_data(secret: Obj) -> dict[str, str]:
    data = {k: base64.b64decode(v).decode() for k, v in secret.get("data", {}).items()}
    return {**data, **secret.get("stringData", {})}


def obj_id(obj: Obj) -> str:
    meta = obj.get("metadata", {})
    ns = meta.get("namespace")
    return f"{obj.get('kind')}/{(ns + '/') if ns else ''}{meta.get('name')}"


# ------------------------------------------------------------------------- flag helpers


def flags_of(args: list[str]) -> list[str]:
    """The `--flag` names in an argument list (`--a=b` and `--a b` forms)."""
    return [arg.split("=", 1)[0] for arg in args if arg.startswith("--")]


def flag_value(args: list[str], flag: str) -> str | None:
    for index, arg in enumerate(args):
        if arg == flag and index + 1 < len(args):
            return args[index + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None


def _is_driver_image(image: str) -> bool:
    """The driver image under any registry (k8s/local pulls it from the cluster's own)."""
    repository = _split_image(image)[0]
    return repository == DRIVER_IMAGE or repository == f"{LOCAL_REGISTRY}/heketi-csi"


def driver_invocation(container: Obj) -> tuple[str, list[str]] | None:
    """(subcommand, arguments) when the container runs heketi-csi, else None.

    The image's entrypoint is `heketi-csi`; a container may also spell it out in
    `command`.
    """
    command = list(container.get("command", []))
    args = list(container.get("args", []))
    if command[:1] == ["heketi-csi"]:
        argv = command[1:] + args
    elif not command and _is_driver_image(container.get("image", "")):
        argv = args
    else:
        return None
    assert argv, f"container {container['name']} runs heketi-csi without a subcommand"
    return argv[0], argv[1:]


def driver_containers(objects: list[Obj]) -> Iterator[tuple[Obj, Obj, str, list[str]]]:
    for obj in objects:
        for container in containers_of(obj):
            invocation = driver_invocation(container)
            if invocation is not None:
                yield obj, container, invocation[0], invocation[1]


_FLAG_IN_HELP = re.compile(r"(?<![\w-])(--[a-z0-9][a-z0-9-]*)")


def help_flags(module: str, *args: str) -> set[str]:
    """The flags `python -m <module> <args> --help` prints; fails with its stderr."""
    result = subprocess.run(
        [sys.executable, "-m", module, *args, "--help"], cwd=REPO, capture_output=True,
        text=True, timeout=60, check=False,
    )
    assert result.returncode == 0, (
        f"python -m {module} {' '.join(args)} --help exited {result.returncode}:\n"
        f"{result.stderr[-3000:]}"
    )
    return set(_FLAG_IN_HELP.findall(result.stdout))


@functools.cache
def cli_help_flags(subcommand: str) -> frozenset[str]:
    return frozenset(help_flags("services.cli", subcommand))


# ----------------------------------------------------------------------- parse & layout


def manifest_files() -> list[Path]:
    return sorted(p for p in K8S.rglob("*.y*ml") if p.suffix in (".yaml", ".yml"))


def test_every_manifest_parses_and_names_itself() -> None:
    files = manifest_files()
    assert len(files) > 10
    for path in files:
        docs = load_docs(path)
        assert docs, f"{_rel(path)} is empty"
        if path.name == "kustomization.yaml":
            continue
        for doc in docs:
            for key in ("apiVersion", "kind", "metadata"):
                assert key in doc, f"{_rel(path)}: a document without {key}"
            assert doc["metadata"].get("name"), f"{_rel(path)}: an object without a name"


def test_every_manifest_belongs_to_a_kustomization() -> None:
    """No orphan file that `kubectl apply -k` would silently leave out."""
    referenced: set[Path] = set()
    for directory in kustomization_dirs():
        kustomization = load_kustomization(directory)
        referenced.add(directory / "kustomization.yaml")
        for entry in kustomization.get("resources", []):
            referenced.add((directory / entry).resolve())
        for patch in kustomization.get("patches", []):
            if "path" in patch:
                referenced.add((directory / patch["path"]).resolve())
    orphans = [_rel(p) for p in manifest_files() if p.resolve() not in referenced]
    assert not orphans, f"manifests no kustomization lists: {orphans}"


@pytest.mark.parametrize("directory", kustomization_dirs(), ids=lambda p: _rel(p))
def test_kustomization_references_exist(directory: Path) -> None:
    """What kustomize needs on disk."""
    kustomization = load_kustomization(directory)
    assert kustomization.get("apiVersion") == "kustomize.config.k8s.io/v1beta1"
    assert kustomization.get("kind") == "Kustomization"
    assert kustomization.get("resources"), "a kustomization without resources"
    for entry in kustomization.get("resources", []):
        target = directory / entry
        assert target.exists(), f"resource {entry} does not exist"
        if target.is_dir():
            assert (target / "kustomization.yaml").is_file(), f"{entry}: no kustomization.yaml"
        else:
            load_docs(target)
    for patch in kustomization.get("patches", []):
        assert "path" in patch or "patch" in patch
        if "path" in patch:
            assert (directory / patch["path"]).is_file(), f"patch {patch['path']} is missing"
        if "patch" in patch:
            assert yaml.safe_load(patch["patch"]), "an empty inline patch"
    for generator in [*kustomization.get("configMapGenerator", []),
                      *kustomization.get("secretGenerator", [])]:
        for entry in generator.get("files", []):
            source = entry.split("=", 1)[-1]
            assert (directory / source).is_file(), f"generator file {source} is missing"


@pytest.mark.parametrize("directory", kustomization_dirs(), ids=lambda p: _rel(p))
def test_kustomize_build(directory: Path) -> None:
    objects = build(directory)
    assert objects, f"kubectl kustomize {_rel(directory)} rendered nothing"
    ids = [obj_id(o) for o in objects]
    assert len(ids) == len(set(ids)), f"duplicate objects: {sorted(ids)}"


# -------------------------------------------------------------------------- validation


def _builtin(obj: Obj) -> bool:
    return not str(obj.get("apiVersion", "")).startswith(SNAPSHOT_GROUP + "/")


@pytest.mark.parametrize("version", [OLDEST_KUBERNETES, NEWEST_KUBERNETES])
@pytest.mark.parametrize("directory", kustomization_dirs(), ids=lambda p: _rel(p))
def test_builtin_kinds_validate_strictly(directory: Path, version: str) -> None:
    failures = []
    checked = 0
    for obj in build(directory):
        if not _builtin(obj):
            continue
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = ".".join(str(p) for p in exc.path)
            failures.append(f"{obj_id(obj)}: {where}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            failures.append(f"{obj_id(obj)}: {exc.message}")
        checked += 1
    assert checked, "no built-in objects to validate"
    assert not failures, f"against Kubernetes {version}:\n" + "\n".join(failures)


@pytest.mark.parametrize("version", [OLDEST_KUBERNETES, NEWEST_KUBERNETES])
def test_strict_validation_catches_a_misspelt_field(version: str) -> None:
    """The validation above can fail: a typo in a container is an error."""
    statefulset = one(build(K8S / "base"), "StatefulSet", "heketi-csi-controller")
    kubernetes_validate.validate(statefulset, version, strict=True)
    statefulset["spec"]["template"]["spec"]["containers"][0]["volumeMount"] = []
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(statefulset, version, strict=True)


def _snapshot_objects() -> list[tuple[Path, Obj]]:
    return [(d, o) for d, o in all_objects() if not _builtin(o)]


def test_snapshot_kinds_are_well_formed() -> None:
    seen = set()
    classes = {o["metadata"]["name"] for _, o in _snapshot_objects()
               if o["kind"] == "VolumeSnapshotClass"}
    for directory, obj in _snapshot_objects():
        where = f"{_rel(directory)}: {obj_id(obj)}"
        assert obj["apiVersion"] == f"{SNAPSHOT_GROUP}/v1", where
        kind = obj["kind"]
        seen.add(kind)
        if kind == "VolumeSnapshotClass":
            assert set(obj) <= {"apiVersion", "kind", "metadata", "driver", "deletionPolicy",
                                "parameters"}, where
            assert obj["driver"] == DRIVER_NAME, where
            assert obj["deletionPolicy"] in ("Delete", "Retain"), where
            params = obj.get("parameters", {})
            assert set(params) <= {f"{SIDECAR_PREFIX}snapshotter-secret-name",
                                   f"{SIDECAR_PREFIX}snapshotter-secret-namespace"}, where
            assert params, f"{where}: the snapshotter needs the Heketi key"
        elif kind == "VolumeSnapshot":
            assert set(obj) <= {"apiVersion", "kind", "metadata", "spec"}, where
            assert obj["metadata"].get("namespace"), f"{where}: namespaced kind"
            spec = obj["spec"]
            assert set(spec) <= {"source", "volumeSnapshotClassName"}, where
            source = spec["source"]
            assert len(source) == 1, f"{where}: exactly one source"
            assert set(source) <= {"persistentVolumeClaimName", "volumeSnapshotContentName"}
            assert spec["volumeSnapshotClassName"] in classes, f"{where}: unknown class"
        else:
            pytest.fail(f"{where}: unexpected snapshot kind")
    assert seen == {"VolumeSnapshotClass", "VolumeSnapshot"}


# ---------------------------------------------------------------- heketi-csi processes


def _driver_containers_everywhere() -> list[tuple[str, Obj, Obj, str, list[str]]]:
    found = []
    for directory in kustomization_dirs():
        for obj, container, sub, args in driver_containers(build(directory)):
            found.append((_rel(directory), obj, container, sub, args))
    return found


def test_manifests_run_all_three_processes() -> None:
    subcommands = {sub for _, _, _, sub, _ in _driver_containers_everywhere()}
    assert subcommands == {"controller", "node", "registrar"}


def test_driver_flags_follow_the_contract() -> None:
    problems = []
    for where, obj, container, sub, args in _driver_containers_everywhere():
        assert sub in CONTRACT_FLAGS, f"{where}: unknown subcommand {sub!r}"
        unknown = sorted(set(flags_of(args)) - CONTRACT_FLAGS[sub])
        if unknown:
            problems.append(f"{where} {obj_id(obj)} {container['name']}: {sub} {unknown}")
        duplicated = sorted({f for f in flags_of(args) if flags_of(args).count(f) > 1})
        if duplicated:
            problems.append(f"{where} {obj_id(obj)}: {duplicated} given twice")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("subcommand", sorted(CONTRACT_FLAGS))
def test_driver_flags_exist_in_cli_help(subcommand: str) -> None:
    """Manifests and CLI cannot drift apart: every flag is in `heketi-csi <cmd> --help`."""
    used = {flag for _, _, _, sub, args in _driver_containers_everywhere() if sub == subcommand
            for flag in flags_of(args)}
    assert used, f"no manifest runs heketi-csi {subcommand}"
    missing = sorted(used - cli_help_flags(subcommand))
    assert not missing, f"heketi-csi {subcommand} --help does not list {missing}"


def cli_parse_error(subcommand: str, args: list[str], env: dict[str, str]) -> str | None:
    """Parse `heketi-csi <subcommand> <args>` with the real parser (types, choices, required
    flags); None when it parses, else argparse's message. `$(VAR)` is expanded from `env`
    as kubelet would."""
    import contextlib
    import io

    from services.cli import build_parser

    expanded = [re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), a)
                for a in args]
    try:
        # The CLI builds only the named subcommand's flags (short start-up).
        parser = build_parser(subcommand)  # type: ignore[call-arg,unused-ignore]
    except TypeError:
        parser = build_parser()  # type: ignore[call-arg,unused-ignore]
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            parser.parse_args([subcommand, *expanded])
    except SystemExit:
        return stderr.getvalue().strip() or "argparse exited"
    return None


def test_driver_arguments_parse() -> None:
    for where, obj, container, sub, args in _driver_containers_everywhere():
        env = {e["name"]: e.get("value", "node-1") for e in container.get("env", [])}
        error = cli_parse_error(sub, args, env)
        assert error is None, f"{where} {obj_id(obj)} {container['name']}: {error}"


def _by_name(items: list[Obj]) -> dict[str, Obj]:
    return {item["name"]: item for item in items}


def _mount_for(container: Obj, path: str) -> Obj | None:
    """The volumeMount of `container` whose mountPath is `path` or a parent of it."""
    best = None
    for mount in container.get("volumeMounts", []):
        prefix = mount["mountPath"].rstrip("/") + "/"
        if (path == mount["mountPath"] or path.startswith(prefix)) and (
                best is None or len(mount["mountPath"]) > len(best["mountPath"])):
            best = mount
    return best


def _socket_path(endpoint: str) -> str:
    return endpoint.removeprefix("unix://")


def test_csidriver() -> None:
    driver = one(build(K8S / "base"), "CSIDriver", DRIVER_NAME)
    assert driver["apiVersion"] == "storage.k8s.io/v1"
    assert driver["spec"] == {
        "attachRequired": True,
        "podInfoOnMount": False,
        "fsGroupPolicy": "None",
        "volumeLifecycleModes": ["Persistent"],
    }


def test_controller_statefulset_runs_the_sidecars_on_one_socket() -> None:
    objects = build(K8S / "base")
    statefulset = one(objects, "StatefulSet", "heketi-csi-controller")
    assert statefulset["spec"]["replicas"] == 1
    assert statefulset["metadata"]["namespace"] == "heketi-csi"
    spec = statefulset["spec"]["template"]["spec"]
    containers = _by_name(spec["containers"])
    controller = containers["heketi-csi-controller"]
    sub, args = driver_invocation(controller) or ("", [])
    assert sub == "controller"
    for flag in ("--endpoint", "--heketi-url", "--heketi-key-file"):
        assert flag_value(args, flag), f"controller without {flag}"
    socket = _socket_path(flag_value(args, "--endpoint") or "")
    socket_mount = _mount_for(controller, socket)
    assert socket_mount is not None, "the controller socket is not on a shared volume"
    volumes = _by_name(spec["volumes"])
    assert "emptyDir" in volumes[socket_mount["name"]]

    sidecars = {}
    versions = harness_versions()
    for container in spec["containers"]:
        repo, tag = _split_image(container["image"])
        if repo not in SIDECAR_VERSIONS:
            continue
        sidecars[repo] = container
        assert tag == versions[SIDECAR_VERSIONS[repo]], container["image"]
        address = flag_value(container["args"], "--csi-address") or ""
        for env in container.get("env", []):
            address = address.replace(f"$({env['name']})", env.get("value", ""))
        assert address == socket, f"{container['name']} talks to {address}, not {socket}"
        mount = _mount_for(container, address)
        assert mount is not None and mount["name"] == socket_mount["name"], container["name"]
    assert set(sidecars) == set(SIDECAR_VERSIONS), "a sidecar is missing"
    assert len(spec["containers"]) == len(sidecars) + 1, "only the sidecars and the controller"

    for repo, container in sidecars.items():
        assert "--leader-election" in flags_of(container["args"]), repo
    provisioner = flags_of(sidecars["registry.k8s.io/sig-storage/csi-provisioner"]["args"])
    for flag in ("--extra-create-metadata", "--timeout", "--worker-threads",
                 "--retry-interval-start"):
        assert flag in provisioner, f"csi-provisioner without {flag}"
    # v2: --resize-timeout is the ControllerExpandVolume deadline.
    resizer = sidecars["registry.k8s.io/sig-storage/csi-resizer"]["args"]
    assert flag_value(resizer, "--resize-timeout") == "120s"
    # The driver has no group snapshots, and the RBAC grants nothing for them.
    snapshotter = sidecars["registry.k8s.io/sig-storage/csi-snapshotter"]["args"]
    assert flag_value(snapshotter, "--feature-gates") == "CSIVolumeGroupSnapshot=false"

    key_file = flag_value(args, "--heketi-key-file") or ""
    key_mount = _mount_for(controller, key_file)
    assert key_mount is not None and key_mount.get("readOnly") is True
    secret = volumes[key_mount["name"]]["secret"]
    assert secret["secretName"] == "heketi-admin"
    assert {"key": "key", "path": Path(key_file).name} in secret["items"]


def test_controller_heketi_url_is_the_storage_service() -> None:
    controller = one(build(K8S / "base"), "StatefulSet", "heketi-csi-controller")
    container = _by_name(controller["spec"]["template"]["spec"]["containers"])
    _, args = driver_invocation(container["heketi-csi-controller"]) or ("", [])
    url = flag_value(args, "--heketi-url") or ""
    match = re.fullmatch(r"http://([a-z0-9-]+)\.([a-z0-9-]+)\.svc:(\d+)", url)
    assert match, url
    name, namespace, port = match.group(1), match.group(2), int(match.group(3))
    for overlay in ("storage", "e2e"):
        service = one(build(K8S / overlay), "Service", name)
        assert service["metadata"]["namespace"] == namespace, overlay
        assert port in [p["port"] for p in service["spec"]["ports"]], overlay


def _controller_heketi_url(objects: list[Obj]) -> str | None:
    controller = one(objects, "StatefulSet", "heketi-csi-controller")
    container = _by_name(controller["spec"]["template"]["spec"]["containers"])
    _, args = driver_invocation(container["heketi-csi-controller"]) or ("", [])
    return flag_value(args, "--heketi-url")


def test_example_classes_use_the_controllers_heketi_url() -> None:
    """A resturl equal to --heketi-url selects the configured backend (and its key file);
    any other URL becomes an ad-hoc backend of its own, named in every volume id. A build
    with the controller in it is checked against its own controller, others against base."""
    base_url = _controller_heketi_url(build(K8S / "base"))
    for directory, storage_class in _storage_classes():
        objects = build(directory)
        url = (_controller_heketi_url(objects)
               if find(objects, "StatefulSet", "heketi-csi-controller") else base_url)
        assert storage_class["parameters"]["resturl"] == url, (
            f"{_rel(directory)}: {obj_id(storage_class)}")


def test_node_daemonset_mounts_as_kubelet_needs() -> None:
    objects = build(K8S / "base")
    daemonset = one(objects, "DaemonSet", "heketi-csi-node")
    spec = daemonset["spec"]["template"]["spec"]
    assert spec["hostNetwork"] is True
    # The FUSE client reads callers' groups from /proc/<pid>: pods' processes must be visible.
    assert spec["hostPID"] is True
    volumes = _by_name(spec["volumes"])
    containers = {sub: (c, args) for _, c, sub, args in driver_containers([daemonset])}
    assert set(containers) == {"node", "registrar"}

    node, node_args = containers["node"]
    security = node["securityContext"]
    assert security["privileged"] is True and security["runAsUser"] == 0
    propagation = {m["mountPath"]: m.get("mountPropagation") for m in node["volumeMounts"]}
    assert propagation.get("/var/lib/kubelet/pods") == "Bidirectional"
    assert propagation.get("/var/lib/kubelet/plugins") == "Bidirectional"
    for mount in node["volumeMounts"]:
        host = volumes[mount["name"]].get("hostPath", {}).get("path")
        if mount["mountPath"].startswith("/var/lib/kubelet"):
            assert host == mount["mountPath"], "kubelet paths must be the same inside"
    assert flag_value(node_args, "--kubelet-root") == "/var/lib/kubelet"
    fuse = _mount_for(node, "/dev/fuse")
    assert fuse is not None
    assert volumes[fuse["name"]]["hostPath"] == {"path": "/dev/fuse", "type": "CharDevice"}
    log_dir = flag_value(node_args, "--gluster-log-dir") or ""
    log_mount = _mount_for(node, log_dir)
    assert log_mount is not None and "hostPath" in volumes[log_mount["name"]]
    assert flag_value(node_args, "--node-id") == "$(KUBE_NODE_NAME)"
    env = _by_name(node.get("env", []))
    assert env["KUBE_NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"

    node_socket = _socket_path(flag_value(node_args, "--endpoint") or "")
    node_socket_mount = _mount_for(node, node_socket)
    assert node_socket_mount is not None
    plugin_dir = volumes[node_socket_mount["name"]]["hostPath"]["path"]
    assert plugin_dir == KUBELET_PLUGIN_DIR

    registrar, registrar_args = containers["registrar"]
    address = flag_value(registrar_args, "--csi-address") or ""
    registrar_mount = _mount_for(registrar, address)
    assert registrar_mount is not None
    assert registrar_mount["name"] == node_socket_mount["name"], "registrar sees another dir"
    assert Path(address).name == Path(node_socket).name
    assert flag_value(registrar_args, "--kubelet-registration-path") == (
        f"{plugin_dir}/{Path(node_socket).name}")
    registration = flag_value(registrar_args, "--plugin-registration-dir") or ""
    registration_mount = _mount_for(registrar, registration)
    assert registration_mount is not None
    assert volumes[registration_mount["name"]]["hostPath"]["path"] == (
        "/var/lib/kubelet/plugins_registry")
    port = (flag_value(registrar_args, "--http-endpoint") or "").rpartition(":")[2]
    probe = registrar["livenessProbe"]["httpGet"]
    ports = {p["name"]: p["containerPort"] for p in registrar.get("ports", [])}
    assert probe["path"] == "/healthz"
    assert ports.get(probe["port"], probe["port"]) == int(port)


def test_liveness_probes_point_at_the_processes_own_endpoint() -> None:
    """No livenessprobe sidecar: each process's probe GETs /healthz on its --http-endpoint."""
    objects = build(K8S / "base")
    probed = set()
    for obj, container, sub, args in driver_containers(objects):
        endpoint = flag_value(args, "--http-endpoint")
        assert endpoint, f"{obj_id(obj)} {sub} serves no /healthz"
        probe = container["livenessProbe"]["httpGet"]
        ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
        assert probe["path"] == "/healthz", sub
        assert ports.get(probe["port"], probe["port"]) == int(endpoint.rpartition(":")[2]), sub
        probed.add(sub)
    assert probed == {"controller", "node", "registrar"}
    for obj in objects:
        for container in containers_of(obj):
            assert not _split_image(container["image"])[0].endswith("/livenessprobe"), obj_id(obj)


def test_images_are_pinned() -> None:
    for directory, obj in all_objects():
        for container in containers_of(obj):
            _repo, tag = _split_image(container["image"])
            where = f"{_rel(directory)}: {obj_id(obj)} {container['name']}"
            assert tag, f"{where}: {container['image']} has no tag"
            assert tag != "latest", f"{where}: {container['image']}"


def test_driver_image_can_be_overridden_by_kustomize() -> None:
    for name in ("base", "e2e", "local"):
        images = {i["name"] for i in load_kustomization(K8S / name).get("images", [])}
        assert DRIVER_IMAGE in images, name
    for name, prefix in (("e2e", "ghcr.io/heketi-csi"), ("local", LOCAL_REGISTRY)):
        objects = build(K8S / name)
        driver, dev = f"{prefix}/heketi-csi", f"{prefix}/heketi-csi-dev"
        tags = {_split_image(c["image"]) for o in objects for c in containers_of(o)
                if _split_image(c["image"])[0] in (driver, dev)}
        assert tags == {(driver, name), (dev, name)}, name


def _memory_mib(value: str) -> float:
    units = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024}
    match = re.fullmatch(r"(\d+)(Ki|Mi|Gi)", value)
    assert match, f"memory {value!r}: use Ki, Mi or Gi"
    return int(match.group(1)) * units[match.group(2)]


# Containers deliberately without a memory limit, and why.
NO_MEMORY_LIMIT = {
    # Brick processes and self-heal grow with the volumes on the node; an OOM kill of
    # glusterd's cgroup takes every brick on the node offline at once.
    ("DaemonSet", "glusterd", "glusterd"),
}


def test_every_container_has_requests_and_a_memory_limit() -> None:
    for directory, obj in all_objects():
        for container in containers_of(obj):
            where = f"{_rel(directory)}: {obj_id(obj)} {container['name']}"
            resources = container.get("resources", {})
            assert {"cpu", "memory"} <= set(resources.get("requests", {})), where
            if (obj["kind"], obj["metadata"]["name"], container["name"]) in NO_MEMORY_LIMIT:
                assert "limits" not in resources, f"{where}: update NO_MEMORY_LIMIT"
            else:
                assert "memory" in resources.get("limits", {}), where


def test_driver_memory_limits_are_four_times_the_measured_rss() -> None:
    """Requests = measured RSS, limits = 4x (the node gets more: its FUSE clients)."""
    for _, obj, container, sub, _ in _driver_containers_everywhere():
        resources = container["resources"]
        request = _memory_mib(resources["requests"]["memory"])
        limit = _memory_mib(resources["limits"]["memory"])
        if sub == "node":
            assert limit >= 4 * request, obj_id(obj)
        else:
            assert limit == 4 * request, f"{obj_id(obj)} {sub}: {limit} != 4 x {request}"


def test_pod_references_resolve() -> None:
    """Mounts name volumes; ServiceAccounts, ConfigMaps, claims and Secrets exist."""
    for directory in kustomization_dirs():
        objects = build(directory)
        present = {(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"])
                   for o in objects}
        for obj in objects:
            spec = pod_spec(obj)
            if spec is None:
                continue
            ns = obj["metadata"].get("namespace")
            where = f"{_rel(directory)}: {obj_id(obj)}"
            volumes = _by_name(spec.get("volumes", []))
            for container in containers_of(obj):
                for mount in container.get("volumeMounts", []):
                    assert mount["name"] in volumes, f"{where}: no volume {mount['name']}"
                for env in container.get("env", []):
                    ref = env.get("valueFrom", {}).get("secretKeyRef")
                    if ref and ("Secret", ns, ref["name"]) not in present:
                        assert ref["name"] in EXTERNAL_SECRETS, f"{where}: {ref['name']}"
            account = spec.get("serviceAccountName")
            if account:
                assert ("ServiceAccount", ns, account) in present, f"{where}: {account}"
            for volume in volumes.values():
                if "configMap" in volume:
                    name = volume["configMap"]["name"]
                    assert ("ConfigMap", ns, name) in present, f"{where}: {name}"
                if "secret" in volume and ("Secret", ns, volume["secret"]["secretName"]) \
                        not in present:
                    assert volume["secret"]["secretName"] in EXTERNAL_SECRETS, where
                if "persistentVolumeClaim" in volume:
                    claim = volume["persistentVolumeClaim"]["claimName"]
                    assert ("PersistentVolumeClaim", ns, claim) in present, f"{where}: {claim}"


# --------------------------------------------------------------------------------- RBAC


def _granted(objects: list[Obj], namespace: str, account: str) -> set[tuple[str, str, str]]:
    """(apiGroup, resource, verb) the ServiceAccount gets from the bindings in `objects`."""
    roles = {(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]): o
             for o in objects if o["kind"] in ("Role", "ClusterRole")}
    granted = set()
    for binding in objects:
        if binding["kind"] not in ("RoleBinding", "ClusterRoleBinding"):
            continue
        if not any(s["kind"] == "ServiceAccount" and s["name"] == account
                   and s.get("namespace") == namespace for s in binding["subjects"]):
            continue
        ref = binding["roleRef"]
        role_ns = binding["metadata"].get("namespace") if ref["kind"] == "Role" else None
        role = roles.get((ref["kind"], role_ns, ref["name"]))
        assert role is not None, f"{obj_id(binding)} refers to a missing {ref['name']}"
        for rule in role["rules"]:
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    for verb in rule["verbs"]:
                        granted.add((group, resource, verb))
    return granted


CONTROLLER_NEEDS = [
    # external-provisioner
    ("", "persistentvolumes", "create"), ("", "persistentvolumes", "delete"),
    ("", "persistentvolumeclaims", "watch"), ("", "persistentvolumeclaims", "update"),
    ("storage.k8s.io", "storageclasses", "list"), ("", "events", "create"),
    ("", "secrets", "get"), ("snapshot.storage.k8s.io", "volumesnapshots", "get"),
    # heketi-csi controller (--node-check=kubernetes)
    ("storage.k8s.io", "csinodes", "get"),
    ("snapshot.storage.k8s.io", "volumesnapshotcontents", "get"),
    # external-attacher
    ("storage.k8s.io", "volumeattachments", "patch"),
    ("storage.k8s.io", "volumeattachments/status", "patch"),
    ("storage.k8s.io", "csinodes", "get"), ("", "persistentvolumes", "patch"),
    # csi-snapshotter
    ("snapshot.storage.k8s.io", "volumesnapshotclasses", "list"),
    ("snapshot.storage.k8s.io", "volumesnapshotcontents", "update"),
    ("snapshot.storage.k8s.io", "volumesnapshotcontents/status", "update"),
    # csi-resizer
    ("", "persistentvolumeclaims/status", "patch"), ("", "pods", "list"),
    # leader election
    ("coordination.k8s.io", "leases", "create"), ("coordination.k8s.io", "leases", "update"),
    ("coordination.k8s.io", "leases", "get"),
]


def test_controller_service_account_has_what_the_sidecars_need() -> None:
    objects = build(K8S / "base")
    granted = _granted(objects, "heketi-csi", "heketi-csi-controller")
    missing = [need for need in CONTROLLER_NEEDS if need not in granted]
    assert not missing, f"missing grants: {missing}"
    assert ("", "secrets", "list") not in granted or ("", "secrets", "get") in granted
    assert all(verb != "*" and resource != "*" for _, resource, verb in granted)
    leases = [o for o in find(objects, "Role") if any(
        "leases" in rule["resources"] for rule in o["rules"])]
    assert leases and all(o["metadata"]["namespace"] == "heketi-csi" for o in leases)


def test_node_service_account_may_only_look_at_pods_tell_them_and_evict_them() -> None:
    """After a repair the node reads the pods of the volume, records Events on them and,
    with --delete-stale-pods, evicts them; only its own container gets the token."""
    objects = build(K8S / "base")
    assert _granted(objects, "heketi-csi", "heketi-csi-node") == {
        ("", "pods", "get"), ("", "pods", "list"), ("", "persistentvolumeclaims", "get"),
        ("", "events", "create"), ("", "events", "patch"), ("", "pods/eviction", "create"),
    }
    daemonset = one(objects, "DaemonSet", "heketi-csi-node")
    spec = daemonset["spec"]["template"]["spec"]
    assert spec["automountServiceAccountToken"] is False
    tokens = {c["name"] for c in spec["containers"] for m in c.get("volumeMounts", [])
              if m["mountPath"] == "/var/run/secrets/kubernetes.io/serviceaccount"}
    assert tokens == {"heketi-csi-node"}


def test_heketi_may_exec_into_the_glusterd_pods() -> None:
    objects = build(K8S / "storage")
    granted = _granted(objects, "glusterfs", "heketi")
    assert {("", "pods", "list"), ("", "pods", "get"), ("", "pods/exec", "create")} <= granted
    assert not find(objects, "ClusterRoleBinding"), "Heketi needs nothing cluster-wide"


# ------------------------------------------------------------------------------ storage


def test_glusterd_daemonset() -> None:
    objects = build(K8S / "storage")
    daemonset = one(objects, "DaemonSet", "glusterd")
    template = daemonset["spec"]["template"]
    spec = template["spec"]
    assert spec["nodeSelector"] == {"storagenode": "glusterfs"}
    assert spec["hostNetwork"] is True
    # Heketi's kubernetes executor: pods with the label key glusterfs-node, first container.
    assert "glusterfs-node" in template["metadata"]["labels"]
    glusterd = spec["containers"][0]
    assert glusterd["securityContext"]["privileged"] is True
    assert "readinessProbe" in glusterd and "livenessProbe" in glusterd
    volumes = _by_name(spec["volumes"])
    host_paths = {m["mountPath"]: volumes[m["name"]].get("hostPath", {}).get("path")
                  for m in glusterd["volumeMounts"]}
    for path in ("/var/lib/glusterd", "/var/log/glusterfs", "/etc/glusterfs", "/dev",
                 "/var/lib/heketi", "/run/lvm"):
        assert host_paths.get(path) == path, f"glusterd needs host {path}"


def test_heketi_deployment() -> None:
    objects = build(K8S / "storage")
    deployment = one(objects, "Deployment", "heketi")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"]["type"] == "Recreate"
    spec = deployment["spec"]["template"]["spec"]
    heketi = spec["containers"][0]
    assert _split_image(heketi["image"])[0] == "heketi/heketi"
    env = _by_name(heketi["env"])
    assert env["HEKETI_EXECUTOR"]["value"] == "kubernetes"
    for variable, key in (("HEKETI_ADMIN_KEY", "admin-key"), ("HEKETI_USER_KEY", "user-key")):
        ref = env[variable]["valueFrom"]["secretKeyRef"]
        assert (ref["name"], ref["key"]) == ("heketi-jwt", key)
    db = _mount_for(heketi, "/var/lib/heketi/heketi.db")
    assert db is not None
    assert "persistentVolumeClaim" in _by_name(spec["volumes"])[db["name"]]
    config = json.loads(one(objects, "ConfigMap", "heketi-config")["data"]["heketi.json"])
    assert config["glusterfs"]["executor"] == "kubernetes"
    assert config["glusterfs"]["db"] == "/var/lib/heketi/heketi.db"
    assert config["use_auth"] is True
    assert heketi["readinessProbe"]["httpGet"]["path"] == "/hello"


def test_topology_example_and_its_loader() -> None:
    topology = json.loads((K8S / "storage/topology/topology.json").read_text())
    nodes = [n for cluster in topology["clusters"] for n in cluster["nodes"]]
    assert len(nodes) >= 3
    for node in nodes:
        assert node["node"]["hostnames"]["manage"] and node["node"]["hostnames"]["storage"]
        assert node["devices"] and all(d["name"].startswith("/dev/") for d in node["devices"])
    objects = build(K8S / "storage/topology")
    job = one(objects, "Job", "heketi-topology-load")
    container = job["spec"]["template"]["spec"]["containers"][0]
    command = container["command"]
    assert command[:3] == ["heketi-cli", "topology", "load"]
    json_path = next(a.split("=", 1)[1] for a in command if a.startswith("--json="))
    mount = _mount_for(container, json_path)
    assert mount is not None
    volume = _by_name(job["spec"]["template"]["spec"]["volumes"])[mount["name"]]
    configmap = one(objects, "ConfigMap", volume["configMap"]["name"])
    assert json.loads(configmap["data"][Path(json_path).name]) == topology
    env = _by_name(container["env"])
    assert set(env) >= {"HEKETI_CLI_SERVER", "HEKETI_CLI_USER", "HEKETI_CLI_KEY"}


# ----------------------------------------------------------------------------- examples


def _storage_classes() -> list[tuple[Path, Obj]]:
    return [(d, o) for d, o in all_objects()
            if o["kind"] == "StorageClass" and o.get("provisioner") == DRIVER_NAME]


def test_storage_class_parameters_are_in_tree_keys() -> None:
    classes = _storage_classes()
    assert classes
    for directory, storage_class in classes:
        where = f"{_rel(directory)}: {obj_id(storage_class)}"
        assert storage_class["allowVolumeExpansion"] is True, where
        params = storage_class["parameters"]
        own = {k.lower(): v for k, v in params.items() if not k.startswith(SIDECAR_PREFIX)}
        assert set(own) <= INTREE_PARAMETERS, f"{where}: {sorted(set(own) - INTREE_PARAMETERS)}"
        assert "resturl" in own, where
        assert "_" not in own.get("volumenameprefix", ""), where
        for cluster in filter(None, own.get("clusterid", "").replace(" ", "").split(",")):
            assert re.fullmatch(r"[0-9a-f]{32}", cluster), f"{where}: clusterid {cluster}"
        assert re.fullmatch(r"none|replicate(:[1-3])?|disperse:\d+:\d+",
                            own.get("volumetype", "none")), where
        if "gidmin" in own and "gidmax" in own:
            assert int(own["gidmin"]) <= int(own["gidmax"]), where
        sidecar = {k.removeprefix(SIDECAR_PREFIX) for k in params if k.startswith(SIDECAR_PREFIX)}
        for kind in SECRET_KINDS[:3]:
            assert {f"{kind}-secret-name", f"{kind}-secret-namespace"} <= sidecar, (
                f"{where}: {kind} secret")
        # The node never uses the Heketi key: kubelet must not hand it to NodeStageVolume.
        assert not {k for k in sidecar if k.startswith("node-stage-")}, where
        secret_key = re.compile(f"({'|'.join(SECRET_KINDS)})-secret-(name|namespace)")
        for key in sidecar:
            assert secret_key.fullmatch(key), f"{where}: {key}"
            pair = key.rsplit("-", 1)[0] + ("-namespace" if key.endswith("-name") else "-name")
            assert pair in sidecar, f"{where}: {key} without {pair}"


def test_secrets_named_by_the_classes_hold_the_key() -> None:
    for directory, obj in all_objects():
        if obj["kind"] not in ("StorageClass", "VolumeSnapshotClass"):
            continue
        params = obj.get("parameters", {})
        objects = build(directory)
        for key, name in params.items():
            if not key.endswith("-secret-name"):
                continue
            namespace = params[key.removesuffix("-name") + "-namespace"]
            secrets = [s for s in find(objects, "Secret", name)
                       if s["metadata"].get("namespace") == namespace]
            if not secrets and name in EXTERNAL_SECRETS and _user_facing(directory):
                continue  # the operator's (docs/deploy.md, step 3)
            assert len(secrets) == 1, f"{_rel(directory)}: {obj_id(obj)} names {name}"
            data = secret_data(secrets[0])
            assert data.get("key"), f"Secret {name} has no data key `key`"


def _user_facing(directory: Path) -> bool:
    """Directories users apply on their clusters (docs/deploy.md), not test overlays."""
    return not directory.is_relative_to(K8S / "e2e") and not directory.is_relative_to(
        K8S / "local")


def test_what_users_apply_never_overwrites_the_operators_secrets() -> None:
    """`kubectl apply -k k8s/examples` (or any user-facing directory) after creating the
    heketi-admin Secret must leave it alone: a placeholder key there made every create 401."""
    for directory in kustomization_dirs():
        if not _user_facing(directory):
            continue
        made = {o["metadata"]["name"] for o in find(build(directory), "Secret")}
        assert not made & EXTERNAL_SECRETS, f"{_rel(directory)} creates {made & EXTERNAL_SECRETS}"


def test_examples_reference_each_other() -> None:
    objects = build(K8S / "examples")
    classes = {o["metadata"]["name"] for o in find(objects, "StorageClass")}
    claims = {(o["metadata"]["namespace"], o["metadata"]["name"]): o
              for o in find(objects, "PersistentVolumeClaim")}
    snapshots = {(o["metadata"]["namespace"], o["metadata"]["name"])
                 for o in find(objects, "VolumeSnapshot")}
    assert len(claims) >= 3 and snapshots
    kinds = set()
    for (namespace, name), claim in claims.items():
        assert claim["spec"]["storageClassName"] in classes, name
        source = claim["spec"].get("dataSource")
        if source is None:
            continue
        kinds.add(source["kind"])
        if source["kind"] == "VolumeSnapshot":
            assert source["apiGroup"] == SNAPSHOT_GROUP
            assert (namespace, source["name"]) in snapshots, name
        else:
            assert source["kind"] == "PersistentVolumeClaim"
            assert (namespace, source["name"]) in claims, name
    assert kinds == {"VolumeSnapshot", "PersistentVolumeClaim"}, "restore and clone examples"
    for snapshot in find(objects, "VolumeSnapshot"):
        source = snapshot["spec"]["source"]["persistentVolumeClaimName"]
        assert (snapshot["metadata"]["namespace"], source) in claims
    pods = find(objects, "Pod")
    assert pods
    for pod in pods:
        for volume in pod["spec"]["volumes"]:
            claim = volume.get("persistentVolumeClaim", {}).get("claimName")
            if claim:
                assert (pod["metadata"]["namespace"], claim) in claims


def test_expansion_example_grows_the_claim() -> None:
    before = one(build(K8S / "examples"), "PersistentVolumeClaim", "data")
    after = one(build(K8S / "examples/expand"), "PersistentVolumeClaim", "data")
    size_before = before["spec"]["resources"]["requests"]["storage"]
    size_after = after["spec"]["resources"]["requests"]["storage"]
    assert _memory_mib(size_after) > _memory_mib(size_before)
    assert after["spec"]["storageClassName"] == before["spec"]["storageClassName"]


# ----------------------------------------------------------------------------------- e2e


def _simulator_container() -> Obj:
    deployment = one(build(K8S / "e2e"), "Deployment", "heketi-sim")
    containers = _by_name(deployment["spec"]["template"]["spec"]["containers"])
    return containers["heketi-sim"]


def test_e2e_overlay_replaces_heketi_with_the_simulator() -> None:
    objects = build(K8S / "e2e")
    assert not find(objects, "Deployment", "heketi"), "real Heketi cannot run in kind"
    container = _simulator_container()
    assert container["command"] == ["python", "-m", "devtools.heketi_sim"]
    assert _split_image(container["image"])[0] == DEV_IMAGE
    assert "--glusterd" in container["args"]
    port = int(flag_value(container["args"], "--port") or 0)
    service = one(objects, "Service", "heketi")
    assert service["spec"]["selector"].items() <= (
        one(objects, "Deployment", "heketi-sim")["spec"]["template"]["metadata"]["labels"]
        .items())
    target = service["spec"]["ports"][0]["targetPort"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports.get(target, target) == port
    # The simulator and the driver agree on the admin key.
    env = _by_name(container["env"])
    admin_variable = (flag_value(container["args"], "--admin-key") or "").strip("$()")
    assert env[admin_variable]["valueFrom"]["secretKeyRef"] == {
        "name": "heketi-jwt", "key": "admin-key"}
    jwt = one(objects, "Secret", "heketi-jwt")
    admin = one(objects, "Secret", "heketi-admin")
    assert secret_data(jwt)["admin-key"] == secret_data(admin)["key"]
    params = one(objects, "StorageClass", "glusterfs-csi")["parameters"]
    assert params["volumetype"] == "none", "one node: no replication"


def test_e2e_simulator_uses_the_hosts_glusterd() -> None:
    """No glusterd in the pod: the host's, through its CLI socket and its process table."""
    deployment = one(build(K8S / "e2e"), "Deployment", "heketi-sim")
    spec = deployment["spec"]["template"]["spec"]
    assert spec["hostNetwork"] is True and spec["hostPID"] is True
    for container in spec["containers"]:
        argv = [*container.get("command", []), *container.get("args", [])]
        assert not any(Path(a).name == "glusterd" for a in argv), container["name"]
    volumes = _by_name(spec["volumes"])
    container = _simulator_container()
    socket = _mount_for(container, "/run/glusterd.socket")
    assert socket is not None
    assert volumes[socket["name"]]["hostPath"] == {"path": "/run/glusterd.socket",
                                                  "type": "Socket"}
    # The host's glusterd makes the bricks the simulator removes: same path on both sides.
    bricks = flag_value(container["args"], "--brick-root") or ""
    mount = _mount_for(container, bricks)
    assert mount is not None and mount["mountPath"] == bricks
    assert volumes[mount["name"]]["hostPath"]["path"] == bricks


def test_local_overlay_fits_the_local_cluster() -> None:
    """k8s/local: e2e with the images built here pulled from the cluster's own registry
    (never imported) and Heketi at the node IP, since that cluster has neither DNS nor
    kube-proxy."""
    objects = build(K8S / "local")
    ours = [c for o in objects for c in containers_of(o)
            if _split_image(c["image"])[0] in (f"{LOCAL_REGISTRY}/heketi-csi",
                                               f"{LOCAL_REGISTRY}/heketi-csi-dev")]
    assert len(ours) == 4, "controller, node, registrar, simulator"
    assert all(c["imagePullPolicy"] == "IfNotPresent" for c in ours)
    assert _controller_heketi_url(objects) == LOCAL_HEKETI_URL
    port = int(flag_value(_simulator_container()["args"], "--port") or 0)
    assert LOCAL_HEKETI_URL.endswith(f":{port}")
    assert {obj_id(o) for o in objects} == {obj_id(o) for o in build(K8S / "e2e")}


def test_local_overlay_runs_the_simulator_on_the_clusters_gluster_pool() -> None:
    """k8s/local: the simulator in pool mode on the pool `devtools.k8s up` starts (same
    name), with the pool's directory at the same path as on the host (its state file names
    the servers' PIDs and brick images there), the host's PIDs and /dev (loop devices made
    after the pod started), no host glusterd; replica 3 classes and brick health on."""
    from devtools.gluster_pool.state import DEFAULT_ROOT
    from devtools.k8s.config import POOL_NAME

    objects = build(K8S / "local")
    deployment = one(objects, "Deployment", "heketi-sim")
    spec = deployment["spec"]["template"]["spec"]
    assert spec["hostNetwork"] is True and spec["hostPID"] is True
    container = _by_name(spec["containers"])["heketi-sim"]
    assert container["securityContext"]["privileged"] is True
    args = container["args"]
    assert flag_value(args, "--gluster-pool") == POOL_NAME
    assert "--glusterd" not in args and flag_value(args, "--brick-root") is None
    assert flag_value(args, "--op-latency") == "2"  # plus the ~4 s its real bricks take
    volumes = _by_name(spec["volumes"])
    pool_dir = _mount_for(container, str(DEFAULT_ROOT))
    assert pool_dir is not None and pool_dir["mountPath"] == str(DEFAULT_ROOT)
    assert volumes[pool_dir["name"]]["hostPath"]["path"] == str(DEFAULT_ROOT)
    dev = _mount_for(container, "/dev")
    assert dev is not None and volumes[dev["name"]]["hostPath"]["path"] == "/dev"
    assert not any(v.get("hostPath", {}).get("path") == "/run/glusterd.socket"
                   for v in volumes.values())
    assert one(objects, "StorageClass", "glusterfs-csi")["parameters"]["volumetype"] == \
        "replicate:3"
    controller = one(objects, "StatefulSet", "heketi-csi-controller")
    plugin = _by_name(controller["spec"]["template"]["spec"]["containers"])[
        "heketi-csi-controller"]
    assert flag_value(plugin["args"], "--brick-health-timeout") == "1"


def test_e2e_simulator_flags_exist_in_its_help() -> None:
    flags = help_flags("devtools.heketi_sim")
    used = set(flags_of(_simulator_container()["args"]))
    assert used <= flags, f"python -m devtools.heketi_sim --help lacks {used - flags}"


def test_flag_helpers() -> None:
    args = shlex.split("--a=1 --b 2 plain --c")
    assert flags_of(args) == ["--a", "--b", "--c"]
    assert flag_value(args, "--a") == "1"
    assert flag_value(args, "--b") == "2"
    assert flag_value(args, "--d") is None
    assert _split_image("registry.k8s.io/sig-storage/csi-attacher:v4.11.0") == (
        "registry.k8s.io/sig-storage/csi-attacher", "v4.11.0")
    assert _split_image("localhost:5000/x") == ("localhost:5000/x", None)
    assert driver_invocation({"name": "c", "image": f"{DRIVER_IMAGE}:1",
                              "args": ["node", "--x=1"]}) == ("node", ["--x=1"])
    assert driver_invocation({"name": "c", "image": "busybox:1", "args": ["node"]}) is None
