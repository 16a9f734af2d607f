"""CSI conformance: csi-sanity (the version tools/test-setup.sh builds) against the controller and
node of a local cluster.

The local cluster (devtools/localcluster/) runs the Heketi simulator on the local glusterd,
so every node spec mounts a real GlusterFS volume. The test fails (never skips) when the
csi-sanity binary is missing, when any spec fails, and when a spec is skipped for a reason
not listed in ALLOWED_SKIPS.

The node accepts only the staging and target paths kubelet sends (services/node/paths.py):
`<root>/plugins/kubernetes.io/csi/<driver>/<sha256>/globalmount` and
`<root>/pods/<pod-uid>/volumes/kubernetes.io~csi/<pv-name>/mount`. csi-sanity stages at
`-csi.stagingdir`, which is given that shape, but publishes at `<-csi.mountdir>/target`, a
name it hard-codes; so it reaches the node through `KubeletTargets`, which renames that
target `<-csi.mountdir>/mount` on the way (the mount directory is `.../<pv-name>`), and checks
paths with a command that does the same.

Reproduce by hand: `make up`, then run csi-sanity with the flags `sanity_argv` builds (the
paths are printed by `make up`) against a `KubeletTargets` of the node socket, or run
`pytest -s tests/conformance`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import shutil
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.message import Message
from grpclib.client import Channel
from grpclib.server import Server, Stream

from devtools.csi_client import GIB
from devtools.heketi_sim.latency import INSTANT
from devtools.localcluster import LocalCluster
from services.common.proto import csi_grpc

pytestmark = pytest.mark.gluster

SETUP_SCRIPT = Path(__file__).resolve().parents[2] / "tools" / "test-setup.sh"


def setup_sanity_version(script: Path = SETUP_SCRIPT) -> str:
    """The csi-sanity version tools/test-setup.sh builds (its `CSI_SANITY_VERSION=` line): the one
    place the version is set, read by the Makefile too."""
    match = re.search(r"^CSI_SANITY_VERSION=(v[0-9][^\s]*)$", script.read_text(), re.MULTILINE)
    if match is None:
        raise RuntimeError(f"{script} sets no CSI_SANITY_VERSION")
    return match.group(1)


CSI_SANITY_VERSION = setup_sanity_version()
# Cached by version, so that a version bump builds anew instead of reusing an older binary.
DEFAULT_BINARY = (Path.home() / ".cache" / "heketi-csi" / f"csi-sanity-{CSI_SANITY_VERSION}"
                  / "bin" / "csi-sanity")
TEST_VOLUME_SIZE = 1 * GIB
TEST_VOLUME_EXPAND_SIZE = 2 * GIB
# The whole suite; a Heketi create through the simulator takes seconds, and csi-sanity
# creates a volume in most of its ~90 specs.
SANITY_TIMEOUT = 3600.0

# StorageClass parameters for the volumes csi-sanity creates. replicate:3 is the in-tree
# default and what most clusters use; the simulator places three bricks on its three
# simulated nodes, backed by one real directory brick on this host.
TEST_VOLUME_PARAMETERS = {"volumetype": "replicate:3"}

# Specs csi-sanity may skip: (spec name pattern, skip message pattern) -> why that is right.
# Only what Heketi/GlusterFS cannot do, or what csi-sanity itself never runs, belongs here; a
# skip caused by the driver (e.g. a capability it forgot to advertise) must fail the test.
ALLOWED_SKIPS: dict[tuple[str, str], str] = {
    (r"ListVolumes pagination should detect volumes added between pages", r"pending"): (
        "marked pending (PIt) in csi-sanity itself (v5.3.1 to v5.6.0): it runs for no driver"),
    (r"volume attribute class", r"[Mm]odify [Vv]olume not supported"): (
        "VolumeAttributesClass needs ControllerModifyVolume; Heketi cannot change a volume's "
        "durability or options after creation (only its size)"),
    (r"^\[It\] ModifyVolume \[Controller Server\]", r"ControllerModifyVolume not supported"): (
        "ControllerModifyVolume: Heketi cannot modify a volume after creation (only expand)"),
    (r"GroupController", r"GroupControllerService not supported"): (
        "volume group snapshots: Heketi has no consistent multi-volume snapshot or clone"),
    (r"more volumes than the node max attach limit", r"testnodevolumeattachlimit not enabled"): (
        "GlusterFS FUSE mounts have no per-node attach limit (NodeGetInfo max_volumes_per_node "
        "is 0 = unlimited), so there is no limit to exceed"),
    (r"VolumeHealth|StorageHealth",
     r"(Controller(Get|List)VolumeHealth|NodeGet(Volume|Storage)Health) not supported"): (
        "the volume-health RPCs are CSI 1.13's (alpha), which removes VOLUME_CONDITION; kubelet "
        "up to v1.37 is built on CSI <= 1.12 and reads a volume's health from "
        "NodeGetVolumeStats' VolumeCondition, so the driver keeps CSI 1.12 and reports health "
        "there and in ControllerGetVolume (VOLUME_CONDITION, still accepted by csi-sanity)"),
    (r"creating a snapshot with accessibility requirements",
     r"SNAPSHOT_ACCESSIBILITY_CONSTRAINTS not supported"): (
        "Heketi volumes have no topology (the driver offers no VOLUME_ACCESSIBILITY_CONSTRAINTS), "
        "so a snapshot has none to be constrained to; the capability is CSI 1.13's"),
    (r"already published but is incompatible", r"readonly field not supported"): (
        "only once the controller stops advertising PUBLISH_READONLY (README.md, section "
        "Conformance): ControllerPublishVolume attaches nothing in Heketi, read-only is "
        "enforced per pod by NodePublishVolume(readonly)"),
}

HOW_TO_BUILD = (
    f"csi-sanity {CSI_SANITY_VERSION} is needed for the CSI conformance suite and was not found "
    "at {path}.\nBuild it with `make test-setup` (tools/test-setup.sh), or by hand:\n"
    f"  GOBIN=$HOME/.cache/heketi-csi/csi-sanity-{CSI_SANITY_VERSION}/bin go install "
    f"github.com/kubernetes-csi/csi-test/v5/cmd/csi-sanity@{CSI_SANITY_VERSION}\n"
    "or point CSI_SANITY at an existing binary."
)


@dataclass
class SpecResult:
    name: str
    status: str  # passed, failed, skipped
    seconds: float
    message: str = ""


@dataclass
class SanityReport:
    specs: list[SpecResult] = field(default_factory=list)

    def with_status(self, status: str) -> list[SpecResult]:
        return [s for s in self.specs if s.status == status]

    def counts(self) -> dict[str, int]:
        return {status: len(self.with_status(status))
                for status in ("passed", "failed", "skipped")}

    def summary(self) -> str:
        c = self.counts()
        return f"csi-sanity {CSI_SANITY_VERSION}: {c['passed']} passed, {c['failed']} failed, " \
               f"{c['skipped']} skipped"


def sanity_binary() -> Path:
    path = Path(os.environ.get("CSI_SANITY") or DEFAULT_BINARY)
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(HOW_TO_BUILD.format(path=path), pytrace=False)
    return path


def parse_junit(path: Path) -> SanityReport:
    """Ginkgo v2's junit report: one <testcase> per spec (and per suite node)."""
    report = SanityReport()
    for case in ET.parse(path).getroot().iter("testcase"):
        name = case.get("name", "")
        failure = case.find("failure")
        if failure is None:
            failure = case.find("error")
        skipped = case.find("skipped")
        status = case.get("status", "")
        if failure is not None or status in ("failed", "panicked", "interrupted", "timedout"):
            text = (failure.get("message", "") + "\n" + (failure.text or "")
                    if failure is not None else status)
            report.specs.append(SpecResult(name, "failed", float(case.get("time", 0)),
                                           text.strip()))
        elif skipped is not None or status in ("skipped", "pending"):
            message = skipped.get("message", "") if skipped is not None else status
            report.specs.append(SpecResult(name, "skipped", float(case.get("time", 0)),
                                           message))
        else:
            report.specs.append(SpecResult(name, "passed", float(case.get("time", 0))))
    return report


def skip_reason(spec: SpecResult) -> str | None:
    """Why skipping `spec` is right, or None when the skip is not allowed."""
    for (name, message), reason in ALLOWED_SKIPS.items():
        if re.search(name, spec.name) and re.search(message, spec.message):
            return reason
    return None


def unexplained_skips(report: SanityReport) -> list[SpecResult]:
    return [s for s in report.with_status("skipped") if skip_reason(s) is None]


# The pod and PV that csi-sanity's paths name.
SANITY_POD_UID = "c5a17e57-0000-4000-8000-000000000001"
SANITY_PV = "csi-sanity-pv"
SANITY_TARGET = "target"  # what csi-sanity appends to -csi.mountdir
KUBELET_TARGET = "mount"  # what kubelet's target paths end with
# csi-sanity's second target (`<mountdir>/other_target`, in a SINGLE_NODE_SINGLE_WRITER spec)
# is this second pod's target path.
OTHER_TARGET = "other_target"
OTHER_POD_UID = "c5a17e57-0000-4000-8000-000000000002"

# csi-sanity's -csi.checkpathcmd: what is at a path, csi-sanity's target named as kubelet's.
CHECK_PATH = f"""#!/bin/sh
case "$1" in */{SANITY_TARGET}) p="${{1%/{SANITY_TARGET}}}/{KUBELET_TARGET}" ;; *) p="$1" ;; esac
if [ -f "$p" ]; then echo file; elif [ -d "$p" ]; then echo directory
elif [ -e "$p" ]; then echo other; else echo not_found; fi
"""


def pod_volume_dir(cluster: LocalCluster, pod_uid: str) -> Path:
    """Kubelet's directory of csi-sanity's PV in a pod; the target is `<it>/mount`."""
    return cluster.kubelet_root / "pods" / pod_uid / "volumes" / "kubernetes.io~csi" / SANITY_PV


def sanity_dirs(cluster: LocalCluster) -> tuple[Path, Path]:
    """csi-sanity's mount and staging directories, with kubelet's shapes (their parents
    made: csi-sanity creates them with os.Mkdir before each spec, removes them after)."""
    mount_dir = pod_volume_dir(cluster, SANITY_POD_UID)
    digest = hashlib.sha256(b"csi-sanity").hexdigest()
    staging_dir = (cluster.kubelet_root / "plugins" / "kubernetes.io" / "csi"
                   / cluster.driver_name / digest / "globalmount")
    for path in (mount_dir, staging_dir):
        path.parent.mkdir(parents=True, exist_ok=True)
    pod_volume_dir(cluster, OTHER_POD_UID).mkdir(parents=True, exist_ok=True)
    return mount_dir, staging_dir


class KubeletTargets:
    """A unix socket that forwards csi-sanity's Identity and Node calls to the node, with
    the target `<mount_dir>/target` (and paths below it) named `<mount_dir>/mount`, and
    `<mount_dir>/other_target` named `<other_dir>/mount` (another pod's target)."""

    def __init__(self, node_socket: Path, mount_dir: Path, socket: Path,
                 other_dir: Path) -> None:
        self.channel = Channel(path=str(node_socket))
        self.socket = socket
        self.renames = [  # the first that matches applies
            (f"{mount_dir}/{OTHER_TARGET}", f"{other_dir}/{KUBELET_TARGET}"),
            (f"{mount_dir}/{SANITY_TARGET}", f"{mount_dir}/{KUBELET_TARGET}"),
        ]
        self.server = Server([self._forwarding(csi_grpc.IdentityBase, csi_grpc.IdentityStub),
                              self._forwarding(csi_grpc.NodeBase, csi_grpc.NodeStub)])

    @property
    def endpoint(self) -> str:
        return f"unix://{self.socket}"

    def _renamed(self, request: Message) -> Message:
        for name in ("target_path", "volume_path"):
            if name in request.DESCRIPTOR.fields_by_name:
                value = getattr(request, name)
                for old, new in self.renames:
                    if value == old or value.startswith(old + "/"):
                        setattr(request, name, new + value[len(old):])
                        break
        return request

    def _forwarding(self, base: Any, stub_type: Any) -> Any:
        stub = stub_type(self.channel)
        renamed = self._renamed

        class Collector:
            def __getattr__(self, method: str) -> Callable[[Stream[Any, Any]], Awaitable[None]]:
                async def forward(stream: Stream[Any, Any]) -> None:
                    request = await stream.recv_message()
                    assert request is not None
                    await stream.send_message(await getattr(stub, method)(renamed(request)))
                return forward

        mapping = base.__mapping__(Collector())

        class Service:
            def __mapping__(self) -> Any:
                return mapping

        return Service()

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[KubeletTargets]:
        await self.server.start(path=str(self.socket))
        try:
            yield self
        finally:
            self.server.close()
            await self.server.wait_closed()
            self.channel.close()


def sanity_argv(binary: Path, cluster: LocalCluster, work: Path, node_endpoint: str) -> list[str]:
    """csi-sanity's command line for `cluster`, reaching the node at `node_endpoint` (a
    `KubeletTargets`); `work` holds the parameter file, the check-path command and the
    report."""
    params = work / "volume-parameters.yaml"
    params.write_text("".join(f"{k}: {v!r}\n" for k, v in TEST_VOLUME_PARAMETERS.items()))
    check_path = work / "check-path"
    check_path.write_text(CHECK_PATH)
    check_path.chmod(0o755)
    mount_dir, staging_dir = sanity_dirs(cluster)
    return [
        str(binary),
        "-csi.endpoint", node_endpoint,
        "-csi.checkpathcmd", str(check_path),
        "-csi.controllerendpoint", cluster.controller_endpoint,
        "-csi.mountdir", str(mount_dir),
        "-csi.stagingdir", str(staging_dir),
        "-csi.testvolumeparameters", str(params),
        "-csi.testvolumesize", str(TEST_VOLUME_SIZE),
        "-csi.testvolumeexpandsize", str(TEST_VOLUME_EXPAND_SIZE),
        "-ginkgo.junit-report", str(work / "junit.xml"),
        "-ginkgo.no-color",
        "-ginkgo.v",
        "-ginkgo.timeout", f"{int(SANITY_TIMEOUT)}s",
    ]


async def run_sanity(argv: list[str], log: Path) -> int:
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=out)
        try:
            return await asyncio.wait_for(proc.wait(), SANITY_TIMEOUT + 60)
        finally:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()


def describe_failures(report: SanityReport) -> str:
    parts = []
    for spec in report.with_status("failed"):
        parts.append(f"FAILED: {spec.name}\n    " + spec.message[:1500].replace("\n", "\n    "))
    return "\n".join(parts)


async def test_csi_sanity(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    binary = sanity_binary()
    log = tmp_path / "csi-sanity.log"
    # storage="glusterd", named: csi-sanity checks the CSI protocol (ids, errors, idempotency)
    # with many creates and deletes; on the pool (three brick file systems and a replica 3
    # volume each) the run took 271 s, on the host's glusterd 115 s (measured here, 2 cores),
    # and replication is what tests/integration/test_heketi_sim_pool.py and the pool suites
    # test, not csi-sanity.
    async with LocalCluster(keep_logs=False, storage="glusterd",
                            heketi_op_latency=INSTANT) as cluster:
        mount_dir, _ = sanity_dirs(cluster)
        proxy = KubeletTargets(cluster.node_socket, mount_dir, tmp_path / "node.sock",
                               pod_volume_dir(cluster, OTHER_POD_UID))
        async with proxy.serving():
            argv = sanity_argv(binary, cluster, tmp_path, proxy.endpoint)
            code = await run_sanity(argv, log)
        junit = tmp_path / "junit.xml"
        if not junit.exists():
            pytest.fail(f"csi-sanity exited with {code} without a junit report:\n"
                        f"{log.read_text(errors='replace')[-5000:]}")
        report = parse_junit(junit)
        # The cluster's directory goes away with it; keep the driver's logs with the report.
        logs = tmp_path / "cluster-logs"
        shutil.copytree(cluster.log_dir, logs)

    failed = report.with_status("failed")
    with capsys.disabled():  # the counts are the point of this test: always show them
        print(f"\n{report.summary()} (details: {junit})")
        for spec in report.with_status("skipped"):
            print(f"  skipped: {spec.name} ({spec.message})")
        if failed:
            print(describe_failures(report))
    where = f"csi-sanity output: {log}\ndriver logs: {logs}"
    assert report.specs, f"the junit report lists no specs; {where}"
    assert not failed, f"{report.summary()}\n{describe_failures(report)}\n{where}"
    odd = unexplained_skips(report)
    assert not odd, "specs skipped without an allowed reason:\n" + "\n".join(
        f"  {s.name}: {s.message}" for s in odd) + f"\n{where}"
    assert code == 0, f"csi-sanity exited with {code} although no spec failed; {where}"
