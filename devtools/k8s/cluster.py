"""Bring the local single-node cluster up and tear it down (host processes, no systemd).

What ``up`` changes on the host, and ``down`` undoes: Debian packages (installed if missing,
left installed), ``STATE_DIR`` and ``RUN_DIR`` (everything of ours: containerd root/state/
socket, certificates, logs, PIDs), the kubelet root made a shared bind mount, the bridge
``hcsi0``, iptables chains (ours ``HCSI-*``, kubelet's ``KUBE-*``, CNI's ``CNI-*``), the
``kubepods`` cgroups, CNI netns files in /run/netns, /var/log/pods and /var/log/containers,
and the sysctls kubelet sets (recorded before, restored after).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

from devtools import host
from devtools.k8s import build, certs, images, registry
from devtools.k8s.config import (
    APISERVER_PORT,
    BRIDGE,
    BRIDGE_IP,
    CNI_BIN_DIR,
    CNI_CONF_DIR,
    CONTAINERD_SOCKET,
    ETCD_CLIENT_PORT,
    ETCD_PEER_PORT,
    KUBECONFIG,
    KUBELET_ROOT,
    NODE_LABELS,
    NODE_NAME,
    POD_CIDR,
    RUN_DIR,
    SERVICE_CIDR,
    SERVICE_IP,
    SIM_BRICK_ROOT,
    STATE_DIR,
    cache_root,
    versions,
)

PACKAGES = [
    "containerd",
    "runc",
    "containernetworking-plugins",
    "iptables",
    "conntrack",
    "socat",
    "ethtool",
    "busybox-static",
    "openssl",
    "gcc",
    "libc6-dev",
    "iproute2",
    "util-linux",
    # The driver image (devtools/k8s/driver_image.py): the Debian base and docker build.
    "debootstrap",
    "docker.io",
]
SYSCTLS = [
    "kernel.panic",
    "kernel.panic_on_oops",
    "vm.overcommit_memory",
    "net.ipv4.ip_forward",
    "kernel.keys.root_maxkeys",
    "kernel.keys.root_maxbytes",
]
HOST_RECORD = STATE_DIR / "host-before.json"
LOG_DIR = STATE_DIR / "logs"
PID_DIR = RUN_DIR / "pids"
HOST_PATHS = [
    "/var/lib/kubelet",
    "/var/lib/cni",
    "/run/netns",
    "/var/log/pods",
    "/var/log/containers",
    "/run/containerd",
    "/var/run/kubernetes",
]
OUR_CHAINS = ("HCSI-",)
FOREIGN_CHAINS = ("KUBE-", "CNI-")
POD_CGROUP = "kubepods"


def log(msg: str) -> None:
    print(f"[k8s] {msg}", flush=True)


def run(
    args: Sequence[str], check: bool = True, quiet: bool = True
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(args), capture_output=quiet, text=True, check=False)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: exit {proc.returncode}: {proc.stderr}")
    return proc


class Phases:
    def __init__(self) -> None:
        self.times: dict[str, float] = {}
        self.t = time.monotonic()

    def done(self, name: str) -> None:
        now = time.monotonic()
        self.times[name] = now - self.t
        log(f"phase {name}: {now - self.t:.1f}s")
        self.t = now


# ---------------------------------------------------------------- host preparation


def ensure_packages(packages: Sequence[str] = PACKAGES) -> None:
    missing = []
    for pkg in packages:
        q = run(["dpkg-query", "-W", "-f=${Status}", pkg], check=False)
        if "install ok installed" not in q.stdout:
            missing.append(pkg)
    if not missing:
        return
    log(f"installing Debian packages: {' '.join(missing)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing],
        check=True,
        env=env,
    )


def sysctl_get(key: str) -> str | None:
    p = Path("/proc/sys") / key.replace(".", "/")
    try:
        return p.read_text().strip()
    except OSError:
        return None


def sysctl_set(key: str, value: str) -> None:
    p = Path("/proc/sys") / key.replace(".", "/")
    try:
        if p.read_text().strip() != value:
            p.write_text(value)
    except OSError as e:
        log(f"cannot restore {key}={value}: {e}")


def record_host() -> None:
    """Remember what the host looked like before the first ``up`` (kept across re-ups)."""
    if HOST_RECORD.is_file():
        return
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    kubelet_entries = sorted(os.listdir(KUBELET_ROOT)) if KUBELET_ROOT.is_dir() else None
    record = {
        "sysctls": {k: sysctl_get(k) for k in SYSCTLS},
        "existed": {p: os.path.lexists(p) for p in HOST_PATHS},
        "kubelet_entries": kubelet_entries,
    }
    HOST_RECORD.write_text(json.dumps(record, indent=2))


def is_mountpoint(path: Path) -> bool:
    return host.is_mount_point(path)


def shared_kubelet_root() -> None:
    KUBELET_ROOT.mkdir(parents=True, exist_ok=True)
    if not is_mountpoint(KUBELET_ROOT):
        run(["mount", "--bind", str(KUBELET_ROOT), str(KUBELET_ROOT)])
    run(["mount", "--make-rshared", str(KUBELET_ROOT)])


def ensure_bridge() -> None:
    if not Path(f"/sys/class/net/{BRIDGE}").exists():
        run(["ip", "link", "add", BRIDGE, "type", "bridge"])
    addrs = run(["ip", "-o", "-4", "addr", "show", "dev", BRIDGE]).stdout
    if f" {BRIDGE_IP}/" not in addrs:
        prefix = POD_CIDR.split("/")[1]
        run(["ip", "addr", "add", f"{BRIDGE_IP}/{prefix}", "dev", BRIDGE])
    run(["ip", "link", "set", BRIDGE, "up"])


def _ipt(table: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run(["iptables", "-w", "-t", table, *args], check=check)


def ensure_iptables() -> None:
    """Keep pods on this machine; route the ``kubernetes`` Service IP to the apiserver."""
    if _ipt("filter", "-n", "-L", "HCSI-FORWARD", check=False).returncode != 0:
        _ipt("filter", "-N", "HCSI-FORWARD")
        _ipt("filter", "-A", "HCSI-FORWARD", "-i", BRIDGE, "-o", BRIDGE, "-j", "ACCEPT")
        _ipt("filter", "-A", "HCSI-FORWARD", "-i", BRIDGE, "-j", "DROP")
        _ipt("filter", "-A", "HCSI-FORWARD", "-o", BRIDGE, "-j", "DROP")
        _ipt("filter", "-I", "FORWARD", "-j", "HCSI-FORWARD")
    if _ipt("nat", "-n", "-L", "HCSI-SERVICES", check=False).returncode != 0:
        _ipt("nat", "-N", "HCSI-SERVICES")
        _ipt(
            "nat",
            "-A",
            "HCSI-SERVICES",
            "-d",
            f"{SERVICE_IP}/32",
            "-p",
            "tcp",
            "--dport",
            "443",
            "-j",
            "DNAT",
            "--to-destination",
            f"{BRIDGE_IP}:{APISERVER_PORT}",
        )
        _ipt("nat", "-I", "PREROUTING", "-j", "HCSI-SERVICES")
        _ipt("nat", "-I", "OUTPUT", "-j", "HCSI-SERVICES")


# ---------------------------------------------------------------- processes


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    st = Path(f"/proc/{pid}/stat")
    try:
        return st.read_text().split(") ", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def pidof(name: str) -> int | None:
    f = PID_DIR / f"{name}.pid"
    try:
        pid = int(f.read_text())
    except (OSError, ValueError):
        return None
    return pid if _pid_alive(pid) and _is_ours(pid) else None


def start(name: str, args: Sequence[str], env: dict[str, str] | None = None) -> int:
    """Start a host process in its own session (no-op if it already runs)."""
    pid = pidof(name)
    if pid:
        return pid
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    PID_DIR.mkdir(parents=True, exist_ok=True)
    with open(LOG_DIR / f"{name}.log", "ab") as logf:
        proc = subprocess.Popen(
            list(args),
            stdout=logf,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env={**os.environ, **(env or {})},
            cwd="/",
        )
    (PID_DIR / f"{name}.pid").write_text(str(proc.pid))
    return proc.pid


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def _is_ours(pid: int) -> bool:
    """A process of this harness: a cached binary, or an argument naming our dirs."""
    cmd = _cmdline(pid)
    if not cmd or pid == os.getpid():
        return False
    try:
        exe = os.readlink(f"/proc/{pid}/exe")
    except OSError:
        exe = ""
    cache = str(cache_root())
    if exe.startswith(cache + "/"):
        return True
    joined = " ".join(cmd)
    return str(RUN_DIR) in joined or str(STATE_DIR) in joined


def _in_pod_cgroup(pid: int) -> bool:
    try:
        return f"/{POD_CGROUP}" in Path(f"/proc/{pid}/cgroup").read_text()
    except OSError:
        return False


def our_processes() -> list[int]:
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            pid = int(d.name)
            if _is_ours(pid) or _in_pod_cgroup(pid):
                pids.append(pid)
    return pids


def stop_pids(pids: Sequence[int], timeout: float = 10.0) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(_pid_alive(p) for p in pids):
        time.sleep(0.2)
    for pid in pids:
        if _pid_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def stop(name: str, timeout: float = 10.0) -> None:
    pid = pidof(name)
    if pid:
        stop_pids([pid], timeout)
    (PID_DIR / f"{name}.pid").unlink(missing_ok=True)


def wait_for(
    what: str, check: Callable[[], bool], timeout: float = 120.0, proc: str | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception:
            pass
        if proc and pidof(proc) is None:
            raise RuntimeError(f"{proc} exited; see {LOG_DIR / (proc + '.log')}")
        time.sleep(0.3)
    raise TimeoutError(
        f"timed out waiting for {what}" + (f"; see {LOG_DIR / (proc + '.log')}" if proc else "")
    )


# ---------------------------------------------------------------- containerd


def containerd_config() -> str:
    v = versions()
    root = STATE_DIR / "containerd"
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    return f"""version = 2
root = "{root}"
state = "{RUN_DIR / "containerd" / "state"}"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.devmapper"]

[grpc]
  address = "{CONTAINERD_SOCKET}"

[ttrpc]
  address = "{CONTAINERD_SOCKET}.ttrpc"

[plugins."io.containerd.internal.v1.opt"]
  path = "{root / "opt"}"

[{cri}]
  sandbox_image = "{v.pause_image}"
  restrict_oom_score_adj = true
  enable_selinux = false

[{cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"

[{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[{cri}.containerd.runtimes.runc.options]
  SystemdCgroup = false
  Root = "{RUN_DIR / "runc"}"

[{cri}.registry]
  config_path = "{registry.HOSTS_DIR}"

[{cri}.cni]
  bin_dir = "{CNI_BIN_DIR}"
  conf_dir = "{CNI_CONF_DIR}"
  max_conf_num = 1
"""


def cni_config() -> str:
    return json.dumps(
        {
            "cniVersion": "1.0.0",
            "name": "hcsi",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": BRIDGE,
                    "isGateway": False,
                    "ipMasq": False,
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": POD_CIDR, "gateway": BRIDGE_IP}]],
                        "routes": [{"dst": "0.0.0.0/0", "gw": BRIDGE_IP}],
                        "dataDir": str(STATE_DIR / "cni" / "ipam"),
                    },
                }
            ],
        },
        indent=2,
    )


def start_registry() -> None:
    """The container registry the driver image is pushed to and pulled from (registry.py)."""
    registry.write_files()
    start(registry.PROCESS, registry.argv(), env=registry.ENV)
    wait_for(f"the registry on {registry.url()}", registry.answers, timeout=30,
             proc=registry.PROCESS)


def start_containerd() -> None:
    registry.write_files()  # its hosts.toml, before containerd reads config_path
    cfg = STATE_DIR / "containerd.toml"
    cfg.write_text(containerd_config())
    CNI_CONF_DIR.mkdir(parents=True, exist_ok=True)
    (CNI_CONF_DIR / "10-hcsi.conflist").write_text(cni_config())
    start("containerd", ["containerd", "--config", str(cfg)])
    wait_for(
        "containerd",
        lambda: (
            run(["ctr", "--address", str(CONTAINERD_SOCKET), "version"], check=False).returncode
            == 0
        ),
        timeout=30,
        proc="containerd",
    )


# ---------------------------------------------------------------- control plane


def kubectl(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run([str(build.binary("kubectl")), "--kubeconfig", str(KUBECONFIG), *args], check=check)


def _https_ok(path: str) -> bool:
    import ssl

    ctx = ssl.create_default_context(cafile=str(certs.PKI / "ca.crt"))
    url = f"https://{BRIDGE_IP}:{APISERVER_PORT}{path}"
    with urllib.request.urlopen(url, context=ctx, timeout=2) as r:
        return bool(r.status == 200)


def start_etcd() -> None:
    data = STATE_DIR / "etcd"
    start(
        "etcd",
        [
            str(build.binary("etcd")),
            "--name",
            "hcsi",
            "--data-dir",
            str(data),
            "--listen-client-urls",
            f"http://127.0.0.1:{ETCD_CLIENT_PORT}",
            "--advertise-client-urls",
            f"http://127.0.0.1:{ETCD_CLIENT_PORT}",
            "--listen-peer-urls",
            f"http://127.0.0.1:{ETCD_PEER_PORT}",
            "--initial-advertise-peer-urls",
            f"http://127.0.0.1:{ETCD_PEER_PORT}",
            "--initial-cluster",
            f"hcsi=http://127.0.0.1:{ETCD_PEER_PORT}",
            "--listen-metrics-urls",
            "",
            "--log-level",
            "warn",
        ],
    )

    def healthy() -> bool:
        url = f"http://127.0.0.1:{ETCD_CLIENT_PORT}/health"
        with urllib.request.urlopen(url, timeout=2) as r:
            return b'"true"' in r.read()

    wait_for("etcd", healthy, timeout=60, proc="etcd")


def start_control_plane() -> None:
    pki = certs.PKI
    start(
        "kube-apiserver",
        [
            str(build.binary("kube-apiserver")),
            f"--etcd-servers=http://127.0.0.1:{ETCD_CLIENT_PORT}",
            f"--bind-address={BRIDGE_IP}",
            f"--advertise-address={BRIDGE_IP}",
            f"--secure-port={APISERVER_PORT}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            f"--client-ca-file={pki / 'ca.crt'}",
            f"--tls-cert-file={pki / 'apiserver.crt'}",
            f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--kubelet-client-certificate={pki / 'apiserver-kubelet-client.crt'}",
            f"--kubelet-client-key={pki / 'apiserver-kubelet-client.key'}",
            f"--kubelet-certificate-authority={pki / 'ca.crt'}",
            "--kubelet-preferred-address-types=InternalIP,Hostname",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            "--authorization-mode=Node,RBAC",
            "--enable-admission-plugins=NodeRestriction",
            "--allow-privileged=true",
            f"--cert-dir={STATE_DIR / 'apiserver'}",
            "--profiling=false",
            "--v=1",
        ],
    )
    wait_for(
        "kube-apiserver /readyz", lambda: _https_ok("/readyz"), timeout=120, proc="kube-apiserver"
    )
    common = ["--bind-address=127.0.0.1", "--leader-elect=false", "--profiling=false", "--v=1"]
    cm_kc = str(certs.kubeconfig_path("controller-manager"))
    start(
        "kube-controller-manager",
        [
            str(build.binary("kube-controller-manager")),
            *common,
            f"--kubeconfig={cm_kc}",
            f"--authentication-kubeconfig={cm_kc}",
            f"--authorization-kubeconfig={cm_kc}",
            f"--cluster-signing-cert-file={pki / 'ca.crt'}",
            f"--cluster-signing-key-file={pki / 'ca.key'}",
            f"--root-ca-file={pki / 'ca.crt'}",
            f"--service-account-private-key-file={pki / 'sa.key'}",
            "--use-service-account-credentials=true",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--allocate-node-cidrs=false",
        ],
    )
    sc_kc = str(certs.kubeconfig_path("scheduler"))
    start(
        "kube-scheduler",
        [
            str(build.binary("kube-scheduler")),
            *common,
            f"--kubeconfig={sc_kc}",
            f"--authentication-kubeconfig={sc_kc}",
            f"--authorization-kubeconfig={sc_kc}",
        ],
    )


def kubelet_config() -> str:
    v = versions()
    pki = certs.PKI
    cfg: dict[str, object] = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": BRIDGE_IP,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": 10248,
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(pki / "ca.crt")},
        },
        "authorization": {"mode": "Webhook"},
        "tlsCertFile": str(pki / "kubelet-serving.crt"),
        "tlsPrivateKeyFile": str(pki / "kubelet-serving.key"),
        "cgroupDriver": "cgroupfs",
        "failSwapOn": False,
        "containerRuntimeEndpoint": f"unix://{CONTAINERD_SOCKET}",
        "resolvConf": "/etc/resolv.conf",
        "clusterDomain": "cluster.local",
        "protectKernelDefaults": False,
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "evictionHard": {
            "memory.available": "100Mi",
            "nodefs.available": "1%",
            "imagefs.available": "1%",
            "nodefs.inodesFree": "1%",
        },
        "serializeImagePulls": False,
    }
    if v.k8s_minor >= 31:
        cfg["failCgroupV1"] = False
    return json.dumps(cfg, indent=2)


def start_kubelet() -> None:
    cfg = STATE_DIR / "kubelet-config.json"
    cfg.write_text(kubelet_config())
    labels = ",".join(f"{k}={v}" for k, v in NODE_LABELS.items())
    start(
        "kubelet",
        [
            str(build.binary("kubelet")),
            f"--config={cfg}",
            f"--kubeconfig={certs.kubeconfig_path('kubelet')}",
            f"--hostname-override={NODE_NAME}",
            f"--node-ip={BRIDGE_IP}",
            f"--node-labels={labels}",
            f"--root-dir={KUBELET_ROOT}",
            "--v=1",
        ],
    )

    def ready() -> bool:
        out = kubectl(
            "get",
            "node",
            NODE_NAME,
            "-o",
            "jsonpath={.status.conditions[?(@.type=='Ready')].status}",
            check=False,
        )
        return out.stdout.strip() == "True"

    wait_for(f"node {NODE_NAME} Ready", ready, timeout=180, proc="kubelet")


def restart_kubelet() -> None:
    """Stop kubelet (SIGTERM) and start it again, as a node's service manager would; the
    containers keep running meanwhile. Returns when the node is Ready again."""
    stop("kubelet")
    started = time.time()
    start_kubelet()

    def serving() -> bool:
        # The node's Ready condition is still the old kubelet's until a new heartbeat, and
        # kubelet serves exec/logs only once it is fully up: wait for both.
        try:
            with urllib.request.urlopen("http://127.0.0.1:10248/healthz", timeout=2) as r:
                if r.status != 200:
                    return False
        except OSError:
            return False
        out = kubectl("get", "node", NODE_NAME, "-o",
                      "jsonpath={.status.conditions[?(@.type=='Ready')].lastHeartbeatTime}",
                      check=False)
        try:
            beat = datetime.datetime.fromisoformat(out.stdout.strip().replace("Z", "+00:00"))
        except ValueError:
            return False
        return beat.timestamp() >= started - 1

    wait_for("kubelet serving again", serving, timeout=120, proc="kubelet")


def finish_cluster() -> None:
    for k, v in NODE_LABELS.items():
        kubectl("label", "node", NODE_NAME, f"{k}={v}", "--overwrite")
    kubectl("apply", "--server-side", "-f", str(build.snapshot_crds_dir()))
    crds = [f"crd/{kind}.snapshot.storage.k8s.io"
            for kind in ("volumesnapshots", "volumesnapshotcontents", "volumesnapshotclasses")]

    def established() -> bool:
        # Not `kubectl wait --for=condition=Established`: it fails at once ("accessor error")
        # on a CRD the API server has not yet given a status.
        out = kubectl("get", *crds, "-o", "jsonpath={range .items[*]}"
                      "{.status.conditions[?(@.type=='Established')].status} {end}", check=False)
        return out.returncode == 0 and out.stdout.split() == ["True"] * len(crds)

    wait_for("the snapshot CRDs established", established, timeout=60)
    start(
        "snapshot-controller",
        [
            str(build.binary("snapshot-controller")),
            f"--kubeconfig={KUBECONFIG}",
            "--leader-election=false",
            "--v=2",
        ],
    )
    wait_for(
        "default ServiceAccount",
        lambda: (
            kubectl("get", "serviceaccount", "default", "-n", "default", check=False).returncode
            == 0
        ),
        timeout=60,
    )


# ---------------------------------------------------------------- up / down / status


def up(skip_build: bool = False) -> dict[str, float]:
    if os.geteuid() != 0:
        raise SystemExit("devtools.k8s up must run as root")
    ph = Phases()
    ensure_packages()
    ph.done("packages")
    if not skip_build:
        build.build_all()
    ph.done("build")
    record_host()
    for d in (STATE_DIR, RUN_DIR):
        d.mkdir(parents=True, exist_ok=True)
        d.chmod(0o700)
    shared_kubelet_root()
    ensure_bridge()
    ensure_iptables()
    ph.done("host")
    from devtools.k8s import storage_pool  # it uses this module's helpers
    storage_pool.up()
    ph.done("gluster pool")
    start_registry()
    ph.done("registry")
    start_containerd()
    imported = images.ensure_images()
    if imported:
        log(f"imported images: {', '.join(imported)}")
    ph.done("containerd+images")
    if certs.ensure_pki():
        log(f"certificates in {certs.PKI}")
    ph.done("certs")
    start_etcd()
    start_control_plane()
    ph.done("control-plane")
    start_kubelet()
    ph.done("node-ready")
    finish_cluster()
    ph.done("crds+snapshot-controller")
    total = sum(ph.times.values())
    log(f"cluster up in {total:.1f}s; KUBECONFIG={KUBECONFIG}")
    return ph.times


def _delete_pods() -> None:
    if pidof("kube-apiserver") is None or build.binary("kubectl").is_file() is False:
        return
    if not KUBECONFIG.is_file():
        return
    r = kubectl(
        "delete",
        "pods",
        "--all",
        "--all-namespaces",
        "--wait=true",
        "--timeout=60s",
        "--grace-period=5",
        check=False,
    )
    if r.returncode != 0:
        log(f"deleting pods: {r.stderr.strip()[:300]}")


def _stop_containers() -> None:
    if pidof("containerd") is None:
        return
    ctr = ["ctr", "--address", str(CONTAINERD_SOCKET), "-n", "k8s.io"]
    tasks = run([*ctr, "tasks", "ls", "-q"], check=False).stdout.split()
    for t in tasks:
        run([*ctr, "tasks", "kill", "-s", "SIGKILL", t], check=False)
    time.sleep(0.5 if tasks else 0)
    for t in tasks:
        run([*ctr, "tasks", "delete", "-f", t], check=False)
    for c in run([*ctr, "containers", "ls", "-q"], check=False).stdout.split():
        run([*ctr, "containers", "delete", c], check=False)


def _unmount_under(prefixes: Sequence[str], include_self: bool = False) -> list[str]:
    _unmounted, left = host.unmount_under(prefixes, include_self=include_self)
    return left


def _delete_chains(cmd: str) -> list[str]:
    """Remove every HCSI-/KUBE-/CNI- chain and the rules that jump to them."""
    left: list[str] = []
    if shutil.which(cmd) is None:
        return left
    prefixes = OUR_CHAINS + FOREIGN_CHAINS
    for table in ("filter", "nat", "mangle", "raw"):
        save = run([f"{cmd}-save", "-t", table], check=False)
        if save.returncode != 0:
            continue
        chains = [ln[1:].split()[0] for ln in save.stdout.splitlines() if ln.startswith(":")]
        ours = [c for c in chains if c.startswith(prefixes)]
        if not ours:
            continue
        for ln in save.stdout.splitlines():
            if (
                ln.startswith("-A ")
                and not ln.split()[1].startswith(prefixes)
                and any(f"-j {c}" in ln or f"-g {c}" in ln for c in ours)
            ):
                run([cmd, "-w", "-t", table, "-D", *ln.split()[1:]], check=False)
        for c in ours:
            run([cmd, "-w", "-t", table, "-F", c], check=False)
        for c in ours:
            if run([cmd, "-w", "-t", table, "-X", c], check=False).returncode != 0:
                left.append(f"{cmd} {table} {c}")
    return left


def _remove_cgroups() -> list[str]:
    left = []
    base = Path("/sys/fs/cgroup")
    roots = [base / POD_CGROUP] + [d / POD_CGROUP for d in base.iterdir() if d.is_dir()]
    for root in roots:
        if not root.is_dir():
            continue
        dirs = sorted(
            (p for p in root.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True
        )
        for d in [*dirs, root]:
            with contextlib.suppress(OSError):
                d.rmdir()
        if root.exists():
            left.append(str(root))
    return left


def down() -> list[str]:
    """Tear everything down; idempotent. Returns what could not be removed."""
    if os.geteuid() != 0:
        raise SystemExit("devtools.k8s down must run as root")
    t0 = time.monotonic()
    record: dict[str, object] = {}
    if HOST_RECORD.is_file():
        record = json.loads(HOST_RECORD.read_text())
    _delete_pods()
    stop("snapshot-controller")
    stop("kubelet")
    _stop_containers()
    for name in (
        "kube-scheduler",
        "kube-controller-manager",
        "kube-apiserver",
        "etcd",
        "containerd",
        registry.PROCESS,
    ):
        stop(name)
    stop_pids(our_processes(), timeout=5)
    left: list[str] = [f"process {p}: {' '.join(_cmdline(p))[:120]}" for p in our_processes()]
    # network namespaces of pods (containerd 1.6 keeps them in /run/netns, named cni-*)
    netns = Path("/run/netns")
    if netns.is_dir():
        for f in netns.glob("cni-*"):
            run(["umount", str(f)], check=False)
            run(["umount", "-l", str(f)], check=False)
            f.unlink(missing_ok=True)
    left += _unmount_under([str(KUBELET_ROOT), str(STATE_DIR), str(RUN_DIR)])
    left += _unmount_under([str(SIM_BRICK_ROOT)], include_self=True)
    while is_mountpoint(KUBELET_ROOT):
        if run(["umount", str(KUBELET_ROOT)], check=False).returncode != 0:
            run(["umount", "-l", str(KUBELET_ROOT)], check=False)
            if is_mountpoint(KUBELET_ROOT):
                left.append(f"mount {KUBELET_ROOT}")
                break
    existed = record.get("existed", {})
    assert isinstance(existed, dict)
    if KUBELET_ROOT.is_dir() and not left:
        before = record.get("kubelet_entries")
        if not existed.get(str(KUBELET_ROOT), False) and record:
            shutil.rmtree(KUBELET_ROOT, ignore_errors=True)
        elif isinstance(before, list):
            for e in os.listdir(KUBELET_ROOT):
                if e not in before:
                    p = KUBELET_ROOT / e
                    shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
    for hp in (
        "/var/lib/cni",
        "/run/netns",
        "/var/log/pods",
        "/var/log/containers",
        "/run/containerd",
        "/var/run/kubernetes",
    ):
        if (
            record
            and not existed.get(hp, True)
            and os.path.lexists(hp)
            and not host.mount_points_under([hp])
        ):
            shutil.rmtree(hp, ignore_errors=True)
    from devtools.k8s import storage_pool  # it uses this module's helpers
    left += storage_pool.down()
    for cmd in ("iptables", "ip6tables"):
        left += _delete_chains(cmd)
    if Path(f"/sys/class/net/{BRIDGE}").exists():
        run(["ip", "link", "del", BRIDGE], check=False)
        if Path(f"/sys/class/net/{BRIDGE}").exists():
            left.append(f"bridge {BRIDGE}")
    left += _remove_cgroups()
    sysctls = record.get("sysctls", {})
    assert isinstance(sysctls, dict)
    for k, val in sysctls.items():
        if val is not None:
            sysctl_set(k, str(val))
    if not host.mount_points_under([STATE_DIR, RUN_DIR], include_self=True):
        shutil.rmtree(STATE_DIR, ignore_errors=True)
        shutil.rmtree(RUN_DIR, ignore_errors=True)
    else:
        left.append(f"mounts under {STATE_DIR} or {RUN_DIR}: state kept")
    log(
        f"down in {time.monotonic() - t0:.1f}s"
        + ("; left: " + "; ".join(left) if left else "; nothing left")
    )
    return left


def status() -> bool:
    names = [
        "containerd",
        "etcd",
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
        "kubelet",
        "snapshot-controller",
        registry.PROCESS,
    ]
    ok = True
    for n in names:
        pid = pidof(n)
        ok &= pid is not None
        print(f"{n:24} {'running pid ' + str(pid) if pid else 'stopped'}")
    if pidof("kube-apiserver"):
        r = kubectl("get", "nodes", "-o", "wide", check=False)
        print(r.stdout or r.stderr)
    print(f"kubeconfig: {KUBECONFIG}")
    return ok


SMOKE_POD = "hcsi-smoke"


def smoke(timeout: float = 120.0) -> float:
    """Run a busybox pod that writes to an emptyDir and exits 0; returns seconds it took."""
    v = versions()
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": SMOKE_POD, "namespace": "default"},
        "spec": {
            "restartPolicy": "Never",
            "containers": [
                {
                    "name": "writer",
                    "image": v.busybox_image,
                    "imagePullPolicy": "Never",
                    "command": ["sh", "-c", "echo hello > /data/f && cat /data/f && ls -l /data"],
                    "volumeMounts": [{"name": "scratch", "mountPath": "/data"}],
                }
            ],
            "volumes": [{"name": "scratch", "emptyDir": {}}],
        },
    }
    t0 = time.monotonic()
    kubectl("delete", "pod", SMOKE_POD, "--ignore-not-found", "--wait=true")
    path = STATE_DIR / "smoke-pod.json"
    path.write_text(json.dumps(pod))
    kubectl("create", "-f", str(path))

    def phase() -> str:
        return kubectl("get", "pod", SMOKE_POD, "-o", "jsonpath={.status.phase}").stdout

    wait_for("smoke pod to finish", lambda: phase() in ("Succeeded", "Failed"), timeout)
    took = time.monotonic() - t0
    result, logs = phase(), kubectl("logs", SMOKE_POD, check=False).stdout
    kubectl("delete", "pod", SMOKE_POD, "--wait=true")
    if result != "Succeeded" or "hello" not in logs:
        raise RuntimeError(f"smoke pod {result}: {logs}")
    log(f"smoke pod Succeeded in {took:.1f}s: {logs.splitlines()[0]}")
    return took
