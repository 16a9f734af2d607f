"""Versions, paths and names of the local Kubernetes harness.

Everything the harness creates on the host lives under ``STATE_DIR`` and ``RUN_DIR`` (plus the
kubelet root, a bridge and iptables chains that ``down`` removes); built binaries are cached
under ``cache_root()`` keyed by component and version.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
VERSIONS_FILE = HERE / "versions.env"
GOMOD_DIR = HERE / "gomod"

STATE_DIR = Path("/var/lib/heketi-csi-k8s")
RUN_DIR = Path("/run/heketi-csi-k8s")
KUBELET_ROOT = Path("/var/lib/kubelet")
# The e2e Heketi simulator's bricks (k8s/e2e/heketi-sim.yaml): a shared mount that deploy
# makes and down removes, so that the brick file systems mounted in the pod reach the host.
SIM_BRICK_ROOT = Path("/var/lib/heketi-sim/bricks")

CONTAINERD_SOCKET = RUN_DIR / "containerd" / "containerd.sock"
KUBECONFIG = STATE_DIR / "admin.kubeconfig"
CNI_CONF_DIR = STATE_DIR / "cni" / "net.d"
CNI_BIN_DIR = Path("/usr/lib/cni")

NODE_NAME = "hcsi-node"
BRIDGE = "hcsi0"
POD_CIDR = "10.244.0.0/24"
BRIDGE_IP = "10.244.0.1"
SERVICE_CIDR = "10.96.0.0/24"
SERVICE_IP = "10.96.0.1"
APISERVER_HOST = "127.0.0.1"
APISERVER_PORT = 6443
ETCD_CLIENT_PORT = 23790
ETCD_PEER_PORT = 23800
# The container registry (registry.py): plain HTTP on loopback, where the host's containerd
# (and so kubelet's pulls) and the private dockerd's pushes reach it.
REGISTRY_HOST = "127.0.0.1"
REGISTRY_PORT = 23850
REGISTRY = f"{REGISTRY_HOST}:{REGISTRY_PORT}"
NODE_LABELS = {"storagenode": "glusterfs"}
# The cluster's GlusterFS pool (storage_pool.py; devtools/gluster_pool): three servers the
# Heketi simulator's pod makes volumes on (k8s/local names it) and the node plugin mounts.
POOL_NAME = "k8spool"
POOL_SUBNET = "10.231.40"
POOL_SERVERS = 3


def cache_root() -> Path:
    """``$HEKETI_CSI_CACHE`` or ``~/.cache/heketi-csi``."""
    base = os.environ.get("HEKETI_CSI_CACHE") or str(Path.home() / ".cache" / "heketi-csi")
    return Path(base) / "k8s"


def read_versions_file(path: Path = VERSIONS_FILE) -> dict[str, str]:
    out: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        out[key.strip()] = value.strip().strip('"').strip("'")
    return out


@dataclass(frozen=True)
class Versions:
    kubernetes: str
    etcd: str
    provisioner: str
    attacher: str
    snapshotter: str
    snapshotter_client: str
    resizer: str
    pause_image: str
    busybox_image: str
    helm: str
    heketi: str
    distribution: str

    @property
    def k8s_minor(self) -> int:
        return int(self.kubernetes.lstrip("v").split(".")[1])

    @property
    def staging_version(self) -> str:
        """Published version of the staging modules: v1.34.4 -> v0.34.4."""
        _major, minor, patch = self.kubernetes.lstrip("v").split(".", 2)
        return f"v0.{minor}.{patch}"


def versions() -> Versions:
    """The versions file, overridden by environment variables of the same names."""
    v = read_versions_file()

    def get(key: str, *aliases: str) -> str:
        for k in (*aliases, key):
            if os.environ.get(k):
                return os.environ[k]
        return v[key]

    return Versions(
        kubernetes=get("KUBERNETES_VERSION", "K8S_VERSION"),
        etcd=get("ETCD_VERSION"),
        provisioner=get("EXTERNAL_PROVISIONER"),
        attacher=get("EXTERNAL_ATTACHER"),
        snapshotter=get("EXTERNAL_SNAPSHOTTER"),
        snapshotter_client=get("SNAPSHOTTER_CLIENT"),
        resizer=get("EXTERNAL_RESIZER"),
        pause_image=get("PAUSE_IMAGE"),
        busybox_image=get("BUSYBOX_IMAGE"),
        helm=get("HELM_VERSION"),
        heketi=get("HEKETI_VERSION"),
        distribution=get("DISTRIBUTION_VERSION"),
    )
