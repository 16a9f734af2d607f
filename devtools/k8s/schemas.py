"""Strict, offline validation of Kubernetes objects, as a ``--validate=strict`` API server.

Built-in kinds are checked against the OpenAPI v3 documents a Kubernetes release ships
(``api/openapi-spec/v3/*.json`` of the k8s.io/kubernetes module, fetched with
``go mod download``: nothing is compiled); custom resources against the ``openAPIV3Schema``
of their CustomResourceDefinition (``metadata`` as ObjectMeta). Strict means: an unknown field
is an error (every object schema with properties gets ``additionalProperties: false`` unless
it preserves unknown fields), as are a wrong type or a missing required field.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from devtools.k8s.build import module_download

Obj = dict[str, Any]
PROMETHEUS_OPERATOR = "github.com/prometheus-operator/prometheus-operator"
OBJECT_META = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"


def strict(node: Any) -> Any:
    """A copy of a schema with unknown fields forbidden and OpenAPI's ``nullable`` mapped."""
    if isinstance(node, list):
        return [strict(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: (v if k in ("enum", "default", "example") else strict(v)) for k, v in node.items()}
    if ("properties" in out and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    if out.get("nullable") and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    return out


@functools.cache
def _kubernetes_components(version: str) -> tuple[dict[str, Any], dict[tuple[str, str, str], str]]:
    """Every component schema of a release, and (group, version, kind) -> schema name."""
    spec_dir = Path(module_download("k8s.io/kubernetes", version)["Dir"]) / "api/openapi-spec/v3"
    schemas: dict[str, Any] = {}
    for path in sorted(spec_dir.glob("*.json")):
        schemas.update(json.loads(path.read_text()).get("components", {}).get("schemas", {}))
    if not schemas:
        raise RuntimeError(f"no OpenAPI v3 schemas in {spec_dir}")
    kinds = {(g["group"], g["version"], g["kind"]): name
             for name, schema in schemas.items()
             for g in schema.get("x-kubernetes-group-version-kind", [])}
    return strict(schemas), kinds


class Validator:
    """Validates objects for one Kubernetes release plus the given CRDs."""

    def __init__(self, kubernetes_version: str, crds: Iterable[Obj] = ()) -> None:
        self.version = kubernetes_version
        self.schemas, self.kinds = _kubernetes_components(kubernetes_version)
        self.crds: dict[tuple[str, str, str], Obj] = {}
        for crd in crds:
            spec = crd["spec"]
            for v in spec["versions"]:
                if v.get("served"):
                    schema = strict(v["schema"]["openAPIV3Schema"])
                    schema["properties"]["metadata"] = {
                        "$ref": f"#/components/schemas/{OBJECT_META}"}
                    key = (spec["group"], v["name"], spec["names"]["kind"])
                    self.crds[key] = schema

    def errors(self, obj: Obj) -> list[str]:
        """What a strict API server would refuse in ``obj`` (empty: valid)."""
        group, _, version = obj.get("apiVersion", "").rpartition("/")
        key = (group, version, obj.get("kind", ""))
        if key in self.crds:
            schema: Obj = dict(self.crds[key])
        elif key in self.kinds:
            schema = {"$ref": f"#/components/schemas/{self.kinds[key]}"}
        else:
            return [f"{obj.get('apiVersion')}/{obj.get('kind')}: no such kind in "
                    f"Kubernetes {self.version} or the given CRDs"]
        schema["components"] = {"schemas": self.schemas}
        validator = jsonschema.Draft202012Validator(schema)
        return [f"{'/'.join(str(p) for p in e.absolute_path) or '<root>'}: {e.message}"
                for e in validator.iter_errors(obj)]


def load_crds(paths: Iterable[Path]) -> Iterator[Obj]:
    for path in paths:
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == "CustomResourceDefinition":
                yield doc


def service_monitor_crd(version: str) -> Path:
    """The ServiceMonitor CRD of a prometheus-operator release (module source via the proxy)."""
    crd = (Path(module_download(PROMETHEUS_OPERATOR, version)["Dir"])
           / "example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml")
    if not crd.is_file():
        raise RuntimeError(f"{crd} is missing from the prometheus-operator module")
    return crd
