"""The local cluster's container registry: `registry` of distribution/distribution v3, built
from the Go module proxy (build.py component `distribution`), on loopback.

The driver image reaches the cluster the way it reaches a user's: pushed to a registry and
pulled by kubelet (containerd), not imported. `up` starts it (`cluster.start_registry`),
`deploy` pushes the images built by the private dockerd (`driver_image.publish`), `down`
stops it and removes its data with the state directory.

- address: `http://127.0.0.1:23850` (config.REGISTRY), plain HTTP on loopback: the host's
  containerd (which pulls for kubelet) and the private dockerd (which pushes; Docker treats
  127.0.0.0/8 as an insecure registry by itself) both reach it;
- config and data: `STATE_DIR/registry/config.yml`, `STATE_DIR/registry/data`;
- log: `STATE_DIR/logs/registry.log`, an access-log line per request (the e2e test reads
  containerd's manifest GET there);
- containerd: `config_path` is `STATE_DIR/containerd-hosts`, whose
  `127.0.0.1:23850/hosts.toml` says the registry speaks plain HTTP.
"""

from __future__ import annotations

import json
import re
import secrets
import urllib.error
import urllib.request
from pathlib import Path

from devtools.k8s import build
from devtools.k8s.config import REGISTRY, STATE_DIR

REGISTRY_DIR = STATE_DIR / "registry"
CONFIG_FILE = REGISTRY_DIR / "config.yml"
DATA_DIR = REGISTRY_DIR / "data"
# containerd's registry host directory (`config_path` of the CRI registry config)
HOSTS_DIR = STATE_DIR / "containerd-hosts"
LOG_FILE = STATE_DIR / "logs" / "registry.log"
PROCESS = "registry"
# The registry's own tracing would try to export to a collector that is not there.
ENV = {"OTEL_TRACES_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "none",
       "OTEL_LOGS_EXPORTER": "none", "OTEL_SDK_DISABLED": "true"}


def url(path: str = "") -> str:
    return f"http://{REGISTRY}{path}"


def config_text(data_dir: Path = DATA_DIR, address: str = REGISTRY) -> str:
    """The registry's configuration (YAML; JSON is YAML). The upload secret is new each time
    (one registry, nothing behind a load balancer) and the file lives in the 0700 state dir."""
    config = {
        "version": 0.1,
        "log": {"level": "info", "formatter": "text", "accesslog": {"disabled": False}},
        "storage": {"filesystem": {"rootdirectory": str(data_dir)},
                    "delete": {"enabled": True},
                    "maintenance": {"uploadpurging": {"enabled": False}}},
        "http": {"addr": address, "secret": secrets.token_hex(16),
                 "headers": {"X-Content-Type-Options": ["nosniff"]}},
    }
    return json.dumps(config, indent=2) + "\n"


def hosts_toml(address: str = REGISTRY) -> str:
    """containerd's host configuration for the registry: plain HTTP, pull and resolve."""
    return (f'server = "http://{address}"\n\n'
            f'[host."http://{address}"]\n'
            '  capabilities = ["pull", "resolve"]\n')


def write_files() -> None:
    """The registry's config and containerd's hosts.toml (before containerd starts)."""
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    CONFIG_FILE.write_text(config_text())
    host_dir = HOSTS_DIR / REGISTRY
    host_dir.mkdir(parents=True, exist_ok=True)
    (host_dir / "hosts.toml").write_text(hosts_toml())


def argv() -> list[str]:
    return [str(build.binary("registry")), "serve", str(CONFIG_FILE)]


def answers() -> bool:
    """The registry serves the v2 API (GET /v2/ is 200 without authentication)."""
    try:
        with urllib.request.urlopen(url("/v2/"), timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


MANIFEST_TYPES = ", ".join((
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json"))


def has_manifest(repository: str, tag: str) -> bool:
    return manifest_digest(repository, tag) is not None


def manifest_digest(repository: str, tag: str) -> str | None:
    """The digest the registry serves for repository:tag; None when it has no such tag."""
    request = urllib.request.Request(
        url(f"/v2/{repository}/manifests/{tag}"), method="HEAD",
        headers={"Accept": MANIFEST_TYPES})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            digest = response.headers.get("Docker-Content-Digest")
            return str(digest) if digest else None
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise


ACCESS_LINE = re.compile(r'"(?P<method>[A-Z]+) (?P<path>\S+) HTTP/[0-9.]+" (?P<status>\d{3}) '
                         r'\S+ "[^"]*" "(?P<agent>[^"]*)"')


def requests_for(path: str, log_file: Path = LOG_FILE) -> list[tuple[str, int, str]]:
    """(method, status, user agent) of each request for `path` in the registry's access log."""
    try:
        text = log_file.read_text(errors="replace")
    except FileNotFoundError:
        return []
    found = []
    for line in text.splitlines():
        match = ACCESS_LINE.search(line)
        if match and match["path"] == path:
            found.append((match["method"], int(match["status"]), match["agent"]))
    return found
