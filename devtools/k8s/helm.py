"""Helm for charts/heketi-csi: the cached binary (built by ``python -m devtools.k8s build
helm``), ``helm lint`` and ``helm template`` as parsed objects.

The chart's unit tests (tests/unit/test_chart.py) and the install e2e
(tests/e2e/test_install_paths.py) both go through here.
"""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from devtools.k8s.build import binary

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "heketi-csi"
RELEASE = "heketi-csi"
NAMESPACE = "heketi-csi"
SNAPSHOT_CLASS_API = "snapshot.storage.k8s.io/v1/VolumeSnapshotClass"
SERVICE_MONITOR_API = "monitoring.coreos.com/v1/ServiceMonitor"


class HelmNotBuilt(RuntimeError):
    pass


class HelmFailed(RuntimeError):
    pass


def helm_path() -> Path:
    """The cached helm binary; HelmNotBuilt (saying how to build it) when it is missing."""
    path = binary("helm")
    if not path.is_file():
        raise HelmNotBuilt(f"{path} is not built: `python -m devtools.k8s build helm` "
                           "(or `make helm`) builds it from the Go module proxy")
    return path


def values_args(values: dict[str, Any] | None, tmp: Path) -> list[str]:
    """``--values <file>`` for ``values`` (written into directory ``tmp``)."""
    if not values:
        return []
    path = tmp / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    return ["--values", str(path)]


def run(args: Sequence[str], timeout: float = 120) -> str:
    proc = subprocess.run([str(helm_path()), *args], capture_output=True, text=True,
                          timeout=timeout, check=False)
    if proc.returncode != 0:
        raise HelmFailed(f"helm {' '.join(args[:2])} failed (exit {proc.returncode}):\n"
                         f"{proc.stderr.strip()}")
    return proc.stdout


def lint(values: dict[str, Any] | None = None, kube_version: str | None = None) -> str:
    with tempfile.TemporaryDirectory(prefix="helm-lint-") as tmp:
        args = ["lint", "--strict", str(CHART), *values_args(values, Path(tmp))]
        if kube_version:
            args += ["--kube-version", kube_version]
        return run(args)


def template(values: dict[str, Any] | None = None, *, kube_version: str,
             api_versions: Sequence[str] = (SNAPSHOT_CLASS_API,),
             chart: Path = CHART) -> list[dict[str, Any]]:
    """The chart's objects as ``helm template`` renders them for ``kube_version``, in
    namespace ``heketi-csi``, with ``api_versions`` as the cluster's extra APIs."""
    with tempfile.TemporaryDirectory(prefix="helm-template-") as tmp:
        args = ["template", RELEASE, str(chart), "--namespace", NAMESPACE,
                "--kube-version", kube_version, *values_args(values, Path(tmp))]
        for api in api_versions:
            args += ["--api-versions", api]
        text = run(args)
    return [doc for doc in yaml.safe_load_all(text) if doc is not None]
