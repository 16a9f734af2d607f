"""charts/heketi-csi: lint, strict validation against the oldest and newest Kubernetes we
support, parity with k8s/base, and what each value changes.

Needs the cached helm (`python -m devtools.k8s build helm`) and the module sources of
`chart_validation_sources` (the same build fetches them); without helm every test FAILS
saying how to build it. No cluster.
"""

from __future__ import annotations

import copy
import functools
import shutil
from pathlib import Path
from typing import Any

import pytest

from devtools.k8s import helm, schemas
from devtools.k8s.build import snapshot_crds_dir
from devtools.k8s.config import read_versions_file
from tests.unit.test_manifests import (
    _split_image,
    build,
    cli_parse_error,
    containers_of,
    driver_containers,
    flag_value,
    pod_spec,
)

REPO = Path(__file__).resolve().parents[2]
ENV = read_versions_file()
OLDEST, NEWEST = ENV["SUPPORTED_KUBERNETES_OLDEST"], ENV["SUPPORTED_KUBERNETES_NEWEST"]
ALL_APIS = (helm.SNAPSHOT_CLASS_API, helm.SERVICE_MONITOR_API)
# Labels Helm adds to every object that k8s/base does not have.
CHART_LABELS = {"helm.sh/chart", "app.kubernetes.io/managed-by", "app.kubernetes.io/instance",
                "app.kubernetes.io/version"}
SIDECARS = {"csi-provisioner": "EXTERNAL_PROVISIONER", "csi-attacher": "EXTERNAL_ATTACHER",
            "csi-snapshotter": "EXTERNAL_SNAPSHOTTER", "csi-resizer": "EXTERNAL_RESIZER"}
CA_PEM = "-----BEGIN CERTIFICATE-----\nMIIBtest\n-----END CERTIFICATE-----\n"
Obj = dict[str, Any]

# Every value away from its default at once.
FULL: Obj = {
    "driverName": "glusterfs2.heketi.csi.io",
    "image": {"repository": "registry.example.com/heketi-csi", "tag": "9.9.9",
              "pullPolicy": "Always"},
    "imagePullSecrets": [{"name": "pull"}],
    "logLevel": "debug", "logFormat": "text",
    "kubeletDir": "/var/lib/k0s/kubelet",
    "heketi": {"url": "https://heketi.example.com:8080", "user": "admin",
               "secret": {"name": "heketi-key", "create": True, "key": "s3cret"},
               "caBundle": CA_PEM, "maxInflight": 4, "timeout": 10},
    "backends": [{"name": "east", "url": "https://heketi-east.example.com:8080",
                  "user": "admin", "secret": {"name": "heketi-east", "create": True,
                                              "key": "east-key"}, "caBundle": CA_PEM},
                 {"name": "west", "url": "http://heketi-west:8080",
                  "secret": {"name": "heketi-west"}}],
    "storageClasses": [
        {"name": "gluster", "isDefault": True, "reclaimPolicy": "Retain",
         "volumeBindingMode": "WaitForFirstConsumer", "allowVolumeExpansion": False,
         "mountOptions": ["log-level=WARNING"],
         "parameters": {"volumetype": "replicate:3", "gidMin": 40000, "gidMax": 49999}},
        {"name": "gluster-east", "secret": {"name": "heketi-east"},
         "parameters": {"resturl": "https://heketi-east.example.com:8080",
                        "clusterid": "0123456789abcdef0123456789abcdef",
                        "volumetype": "disperse:4:2"}},
    ],
    "volumeSnapshotClass": {"create": True, "name": "gluster-snap", "isDefault": True,
                            "deletionPolicy": "Retain"},
    "metrics": {"controllerPort": 19810, "nodePort": 19840,
                "serviceMonitor": {"enabled": True, "interval": "1m",
                                   "labels": {"release": "prometheus"}}},
    "sidecars": {"logLevel": 5, "resources": {"requests": {"cpu": "50m"}}},
    "controller": {"priorityClassName": "high", "nodeSelector": {"role": "infra"},
                   "tolerations": [{"key": "infra", "operator": "Exists",
                                    "effect": "NoSchedule"}],
                   "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                       "nodeSelectorTerms": [{"matchExpressions": [
                           {"key": "role", "operator": "In", "values": ["infra"]}]}]}}},
                   "resources": {"requests": {"cpu": "100m", "memory": "100Mi"}},
                   "nodeCheck": "none", "adhocHeketiUrls": "http://other:8080",
                   "brickHealthTimeout": 2.5,
                   "extraArgs": ["--resync-interval=60"]},
    "node": {"priorityClassName": "", "nodeSelector": {"storage": "gluster"},
             "tolerations": [], "resources": {"limits": {"memory": "1Gi"}},
             "clientCgroupRoot": "", "repairInterval": 10, "healthTimeout": 3,
             "deleteStalePods": True, "extraArgs": ["--grace-period=5"]},
}


@functools.cache
def _helm_ok() -> str | None:
    try:
        helm.helm_path()
    except helm.HelmNotBuilt as exc:
        return str(exc)
    return None


def render(values: Obj | None = None, version: str = NEWEST,
           apis: tuple[str, ...] = ALL_APIS, chart: Path = helm.CHART) -> list[Obj]:
    problem = _helm_ok()
    if problem:
        pytest.fail(problem, pytrace=False)
    return helm.template(values, kube_version=version, api_versions=apis, chart=chart)


@functools.cache
def validator(version: str) -> schemas.Validator:
    crd_files = [*sorted(snapshot_crds_dir().glob("*.yaml")),
                 schemas.service_monitor_crd(ENV["PROMETHEUS_OPERATOR"])]
    return schemas.Validator(version, schemas.load_crds(crd_files))


def invalid(objects: list[Obj], version: str) -> list[str]:
    return [f"{o['kind']}/{o['metadata']['name']}: {e}"
            for o in objects for e in validator(version).errors(o)]


def by_id(objects: list[Obj]) -> dict[tuple[str, str], Obj]:
    return {(o["kind"], o["metadata"]["name"]): o for o in objects}


def one(objects: list[Obj], kind: str, name: str) -> Obj:
    return by_id(objects)[(kind, name)]


def container(obj: Obj, name: str) -> Obj:
    return next(c for c in containers_of(obj) if c["name"] == name)


def without_chart_labels(obj: Obj) -> Obj:
    obj = copy.deepcopy(obj)
    labels = obj["metadata"].get("labels", {})
    for key in CHART_LABELS:
        labels.pop(key, None)
    return obj


# ------------------------------------------------------------------------ lint, validity


@pytest.mark.parametrize("version", [OLDEST, NEWEST])
@pytest.mark.parametrize("values", [None, FULL], ids=["defaults", "full"])
def test_helm_lint_is_clean(values: Obj | None, version: str) -> None:
    if _helm_ok():
        pytest.fail(str(_helm_ok()), pytrace=False)
    out = helm.lint(values, kube_version=version.lstrip("v"))
    assert "[WARNING]" not in out and "[ERROR]" not in out, out


@pytest.mark.parametrize("version", [OLDEST, NEWEST])
@pytest.mark.parametrize("values", [None, FULL], ids=["defaults", "full"])
def test_rendered_objects_validate_strictly(values: Obj | None, version: str) -> None:
    objects = render(values, version)
    assert objects
    assert not invalid(objects, version)


@pytest.mark.parametrize("version", [OLDEST, NEWEST])
def test_a_broken_template_fails_validation(tmp_path: Path, version: str) -> None:
    """The validation is real: a misspelt field, a wrong type and a missing required field
    in the templates are each reported."""
    chart = tmp_path / "heketi-csi"
    shutil.copytree(helm.CHART, chart)
    controller = chart / "templates" / "controller.yaml"
    text = controller.read_text()
    broken = (text.replace("serviceAccountName:", "serviceAcountName:", 1)
              .replace("terminationGracePeriodSeconds: 30", 'terminationGracePeriodSeconds: "30"')
              .replace("        - name: csi-attacher\n", "        - nam: csi-attacher\n"))
    assert broken != text
    controller.write_text(broken)
    errors = "\n".join(invalid(render(version=version, chart=chart), version))
    assert "'serviceAcountName' was unexpected" in errors
    assert "terminationGracePeriodSeconds: '30' is not of type 'integer'" in errors
    assert "'name' is a required property" in errors
    snapshot_class = chart / "templates" / "volumesnapshotclass.yaml"
    text = snapshot_class.read_text()
    snapshot_class.write_text(text.replace("deletionPolicy:", "deletePolicy:"))
    errors = "\n".join(invalid(render(version=version, chart=chart), version))
    assert "VolumeSnapshotClass/glusterfs-csi: <root>: 'deletionPolicy' is a required" in errors


def test_chart_declares_the_supported_range() -> None:
    import yaml
    chart = yaml.safe_load((helm.CHART / "Chart.yaml").read_text())
    oldest_minor = ".".join(OLDEST.lstrip("v").split(".")[:2])
    assert chart["kubeVersion"] == f">={oldest_minor}.0-0"
    with pytest.raises(helm.HelmFailed, match="kubeVersion"):
        render(version="v1.33.9")


# ------------------------------------------------------------------ parity with k8s/base


def test_defaults_render_what_k8s_base_renders() -> None:
    """Where chart and kustomize install overlap, they install the same objects (names,
    specs, every field; the chart only adds Helm's labels)."""
    base = by_id(build(REPO / "k8s/base"))
    chart = by_id(render())
    namespace = ("Namespace", "heketi-csi")
    assert set(base) - set(chart) == {namespace}, "k8s/base objects the chart lacks"
    assert set(chart) - set(base) == {("StorageClass", "glusterfs-csi"),
                                      ("VolumeSnapshotClass", "glusterfs-csi")}
    for key in base.keys() - {namespace}:
        assert without_chart_labels(chart[key]) == base[key], f"{key} differs"
    # The release namespace must exist before `helm install` (Helm stores the release in it
    # first), so the chart never renders it: docs/helm.md creates and labels it.


def test_default_classes_are_the_example_classes() -> None:
    examples = by_id(build(REPO / "k8s/examples/classes"))
    chart = render()
    for key in (("StorageClass", "glusterfs-csi"), ("VolumeSnapshotClass", "glusterfs-csi")):
        ours = without_chart_labels(by_id(chart)[key])
        assert ours["metadata"].pop("labels") == {"app.kubernetes.io/part-of": "heketi-csi"}
        assert ours == examples[key]


def test_sidecar_images_are_those_of_versions_env() -> None:
    images = {_split_image(c["image"]) for o in render() for c in containers_of(o)}
    sidecars = {name.rsplit("/", 1)[1]: tag for name, tag in images if "sig-storage" in name}
    assert sidecars == {name: ENV[var] for name, var in SIDECARS.items()}


def test_snapshot_class_only_where_the_api_is_served() -> None:
    kinds = {o["kind"] for o in render(apis=())}
    assert "VolumeSnapshotClass" not in kinds and "StorageClass" in kinds


# ------------------------------------------------------------------------------ values


def test_full_values_reach_the_objects() -> None:
    objects = render(FULL)
    sts = one(objects, "StatefulSet", "heketi-csi-controller")
    ds = one(objects, "DaemonSet", "heketi-csi-node")
    driver = "glusterfs2.heketi.csi.io"
    kubelet = "/var/lib/k0s/kubelet"
    assert one(objects, "CSIDriver", driver)
    # images
    for obj in (sts, ds):
        for c in containers_of(obj):
            if not c["name"].startswith("csi-"):
                assert c["image"] == "registry.example.com/heketi-csi:9.9.9"
                assert c["imagePullPolicy"] == "Always"
        assert pod_spec(obj)["imagePullSecrets"] == [{"name": "pull"}]  # type: ignore[index]
    # scheduling
    spec = pod_spec(sts)
    assert spec is not None
    assert spec["priorityClassName"] == "high" and spec["nodeSelector"] == {"role": "infra"}
    assert spec["tolerations"][0]["key"] == "infra" and "nodeAffinity" in spec["affinity"]
    node_spec = pod_spec(ds)
    assert node_spec is not None
    assert "priorityClassName" not in node_spec and "tolerations" not in node_spec
    assert node_spec["nodeSelector"] == {"storage": "gluster"}
    # kubelet root everywhere
    registrar = container(ds, "registrar")
    assert flag_value(registrar["args"], "--kubelet-registration-path") == \
        f"{kubelet}/plugins/{driver}/csi.sock"
    assert flag_value(registrar["args"], "--driver-name") == driver
    node = container(ds, "heketi-csi-node")
    assert flag_value(node["args"], "--kubelet-root") == kubelet
    assert {m["mountPath"] for m in node["volumeMounts"]} >= {f"{kubelet}/pods",
                                                              f"{kubelet}/plugins"}
    paths = {v["hostPath"]["path"] for v in node_spec["volumes"] if "hostPath" in v}
    assert {p for p in paths if p.startswith("/var/lib/kubelet")} == set()
    assert f"{kubelet}/plugins/{driver}" in paths and f"{kubelet}/plugins_registry" in paths
    # node recovery options
    assert "--client-cgroup-root" not in " ".join(node["args"])
    assert "/sys/fs/cgroup" not in paths
    assert flag_value(node["args"], "--repair-interval") == "10"
    assert flag_value(node["args"], "--health-timeout") == "3"
    assert {e["name"]: e.get("value") for e in node["env"]}["DELETE_STALE_PODS"] == "true"
    assert flag_value(node["args"], "--metrics-port") == "19840"
    # controller: default backend with its CA, more backends in a file, logs, metrics
    ctl = container(sts, "heketi-csi-controller")
    args = ctl["args"]
    assert flag_value(args, "--heketi-url") == "https://heketi.example.com:8080"
    assert flag_value(args, "--brick-health-timeout") == "2.5"
    assert flag_value(args, "--heketi-ca-file") == "/etc/heketi-csi-ca/ca.crt"
    assert flag_value(args, "--backends-file") == "/etc/heketi-csi-backends/backends.yaml"
    assert flag_value(args, "--driver-name") == driver
    assert flag_value(args, "--log-level") == "debug" and flag_value(args, "--log-format") == "text"
    assert flag_value(args, "--metrics-port") == "19810"
    assert "--resync-interval=60" in args
    assert {c["name"]: flag_value(c["args"], "--v") for c in containers_of(sts)
            if c["name"].startswith("csi-")} == dict.fromkeys(SIDECARS, "5")
    backends_cm = one(objects, "ConfigMap", "heketi-csi-backends")
    import yaml
    backends = yaml.safe_load(backends_cm["data"]["backends.yaml"])
    assert backends == [
        {"name": "east", "url": "https://heketi-east.example.com:8080", "user": "admin",
         "key_file": "/etc/heketi-csi-backend/east/key",
         "ca_file": "/etc/heketi-csi-backend-ca/east/ca.crt"},
        {"name": "west", "url": "http://heketi-west:8080", "user": "admin",
         "key_file": "/etc/heketi-csi-backend/west/key"}]
    mounts = {m["mountPath"]: m["name"] for m in ctl["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    for file in ("/etc/heketi-csi/key", "/etc/heketi-csi-ca/ca.crt",
                 "/etc/heketi-csi-backends/backends.yaml", "/etc/heketi-csi-backend/east/key",
                 "/etc/heketi-csi-backend-ca/east/ca.crt", "/etc/heketi-csi-backend/west/key"):
        directory, name = file.rsplit("/", 1)
        volume = volumes[mounts[directory]]
        source = volume.get("secret") or volume.get("configMap")
        assert source is not None, file
        items = source.get("items")
        assert items is None or name in {i["path"] for i in items}, file
    assert volumes[mounts["/etc/heketi-csi-backend/west"]]["secret"]["secretName"] == "heketi-west"
    # Secrets the chart makes (and none it must not)
    secrets = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Secret"}
    assert set(secrets) == {"heketi-key", "heketi-east"}
    assert secrets["heketi-key"]["stringData"] == {"key": "s3cret"}
    assert one(objects, "ConfigMap", "heketi-csi-ca-default")["data"]["ca.crt"] == CA_PEM
    # classes
    gluster = one(objects, "StorageClass", "gluster")
    assert gluster["provisioner"] == driver and gluster["reclaimPolicy"] == "Retain"
    assert gluster["allowVolumeExpansion"] is False
    assert gluster["metadata"]["annotations"] == {
        "storageclass.kubernetes.io/is-default-class": "true"}
    assert gluster["parameters"]["gidMin"] == "40000"
    assert gluster["parameters"]["resturl"] == "https://heketi.example.com:8080"
    assert gluster["parameters"]["csi.storage.k8s.io/provisioner-secret-name"] == "heketi-key"
    east = one(objects, "StorageClass", "gluster-east")
    assert east["parameters"]["csi.storage.k8s.io/controller-expand-secret-name"] == "heketi-east"
    assert east["parameters"]["csi.storage.k8s.io/provisioner-secret-namespace"] == "heketi-csi"
    snap = one(objects, "VolumeSnapshotClass", "gluster-snap")
    assert snap["driver"] == driver and snap["deletionPolicy"] == "Retain"
    # monitoring
    monitors = {o["metadata"]["name"]: o for o in objects if o["kind"] == "ServiceMonitor"}
    assert set(monitors) == {"heketi-csi-controller", "heketi-csi-node"}
    services = {o["metadata"]["labels"]["app.kubernetes.io/name"]: o for o in objects
                if o["kind"] == "Service"}
    for monitor in monitors.values():
        assert monitor["metadata"]["labels"]["release"] == "prometheus"
        service = services[monitor["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"]]
        assert service["spec"]["ports"][0]["name"] == monitor["spec"]["endpoints"][0]["port"]
    assert not [o for o in objects if o["kind"] == "Namespace"], "the release namespace is "\
        "made before `helm install`, never by the chart"


@pytest.mark.parametrize("values", [None, FULL], ids=["defaults", "full"])
def test_driver_arguments_parse(values: Obj | None) -> None:
    for obj, c, sub, args in driver_containers(render(values)):
        env = {e["name"]: e.get("value", "node-1") for e in c.get("env", [])}
        error = cli_parse_error(sub, args, env)
        assert error is None, f"{obj['kind']} {c['name']}: {error}"


def test_values_errors_are_reported() -> None:
    with pytest.raises(helm.HelmFailed, match=r"secret\.create needs secret\.key"):
        render({"heketi": {"secret": {"create": True}}})
    with pytest.raises(helm.HelmFailed, match=r"parameters\.resturl"):
        render({"heketi": {"url": ""}})


@pytest.mark.parametrize(("values", "name"), [
    ({"logFormat": "fancy"}, "logFormat"), ({"logLevel": "loud"}, "logLevel"),
    ({"controller": {"nodeCheck": "sometimes"}}, "nodeCheck"),
    ({"controller": {"brickHealthTimeout": -1}}, "brickHealthTimeout"),
    ({"controller": {"brickHealthTimeout": 61}}, "brickHealthTimeout")])
def test_values_the_processes_would_refuse_are_refused_by_helm(values: Obj, name: str) -> None:
    """values.schema.json: `helm install` fails naming the value, instead of pods that
    crash-loop on a flag their CLI refuses."""
    with pytest.raises(helm.HelmFailed, match=name):
        render(values)


def test_the_schemas_choices_are_the_clis() -> None:
    import json

    from services.common.logging import LOG_FORMATS, LOG_LEVELS
    from services.controller.nodes import make_node_check
    schema = json.loads((helm.CHART / "values.schema.json").read_text())["properties"]
    assert set(schema["logFormat"]["enum"]) <= set(LOG_FORMATS)
    assert set(schema["logLevel"]["enum"]) == set(LOG_LEVELS)
    for mode in schema["controller"]["properties"]["nodeCheck"]["enum"]:
        make_node_check(mode, "node-1", "glusterfs.heketi.csi.io")  # raises for a wrong one
    with pytest.raises(ValueError, match="sometimes"):
        make_node_check("sometimes", None, "glusterfs.heketi.csi.io")
