"""The upstream Kubernetes storage suite for external drivers against the local cluster.

``e2e.test`` (k8s.io/kubernetes test/e2e at the cluster's version, ``build kubernetes-e2e``)
runs the External.Storage specs for the driver ``tests/e2e/testdriver.yaml`` declares, in
parallel with the ginkgo CLI of the same module graph, after the stand-in images of
``devtools/k8s/e2e_images`` are imported. The driver must be deployed (``devtools.k8s
deploy``). A run passes when no spec fails and every spec skipped at run time was skipped for
a reason listed in ``EXPECTED_SKIPS``; the summary (counts, wall time, each skipped spec and
why) is printed and written next to ginkgo's reports. docs/conformance.md has the results.

    python -m devtools.k8s e2e-upstream [--subset ci] [--procs N]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from devtools.k8s import build, e2e_images
from devtools.k8s.config import HERE, KUBECONFIG

REPO = HERE.parents[1]
TESTDRIVER = REPO / "tests" / "e2e" / "testdriver.yaml"
DEFAULT_OUT = REPO / "build" / "e2e-upstream"
FOCUS = r"External.Storage"

# Not selected: spec name pattern -> why. Everything else External.Storage is run, and what
# the driver's capabilities rule out is skipped by the specs themselves (EXPECTED_SKIPS).
EXCLUDED: dict[str, str] = {
    r"\[Disruptive\]": "stops kubelet over SSH (the skeleton provider has none; kubelet here is "
    "a host process, not a service the specs can restart)",
    r"\[Flaky\]": "marked flaky upstream (VolumeAttributesClass recovery; the driver has no "
    "ModifyVolume anyway)",
    r"provisioning should provision storage with any volume data source": "a volume populator "
    "(hello-populator, volume-data-source-validator images) fills the claim, not the driver; "
    "their images have no stand-ins here",
}

# The fixed subset CI runs (within the real-cluster budget): one spec or more of each suite
# the driver's capabilities select, the [Slow] snapshot, clone and expansion specs included.
CI_FOCUS: list[str] = [
    r"\(default fs\)\] provisioning should provision storage with (mount options|pvc data "
    r"source( in parallel \[Slow\])?|snapshot data source \[Feature:VolumeSnapshotDataSource\])$",
    r"\(default fs\)\] provisioning should mount multiple PV pointing to the same storage",
    r"\(default fs\)\] provisioning should provision correct filesystem size when restoring "
    r"snapshot to larger size pvc",
    r"\(default fs\)\] volumes should (store data|allow exec of files on the volume)$",
    r"\(default fs\)\] subPath should support existing directory$",
    r"\(default fs\)\(allowExpansion\)\] volume-expand should resize volume when PVC is "
    r"edited while pod is using it",
    r"\(filesystem volmode\)\] multiVolume \[Slow\] should concurrently access the single "
    r"read-only volume from pods on the same node",
    r"\(filesystem volmode\)\] multiVolume \[Slow\] should concurrently access the single "
    r"volume from pods on the same node$",
    r"read-write-once-pod .* should block a second pod",
    r"Dynamic Snapshot \(delete policy\)\] snapshottable \[Feature:VolumeSnapshotDataSource\] "
    r"volume snapshot controller +should check snapshot fields",
    r"\(default fs\)\] volumeIO should write files of various sizes",
    r"Generic Ephemeral-volume \(default fs\) \(immediate-binding\)\] ephemeral should create "
    r"read/write inline ephemeral volume$",
]

# Why the specs skip themselves (pattern on ginkgo's skip message -> reason shown). A skip
# that matches none of these fails the run: a new spec, or a capability that stopped applying.
EXPECTED_SKIPS: dict[str, str] = {
    r'does not support volume type "PreprovisionedPV"': "pre-provisioned PVs: the suite's "
    "external-driver definition offers dynamic provisioning and generic ephemeral volumes only",
    r"doesn't support (ntfs|ext3|ext4|xfs) -- skipping": "an fsType other than the default: a "
    "gluster FUSE mount has no file system type to choose",
    r'does not support volume type "(InlineVolume|CSIInlineVolume)"': "in-tree inline and CSI "
    "ephemeral inline volumes (volumeLifecycleModes: Persistent)",
    r"doesn't support Block|does not provide raw block|does not support block volume mode": (
        "raw block volumes: not offered"
    ),
    r"does not support FsGroup": "fsGroup ownership: fsGroupPolicy is None, as in-tree "
    "(kubelet never re-owns the volume; pods get its GID instead)",
    r"has no configured VolumeAttributesClass|doesn't specify volume modify stress": (
        "VolumeAttributesClass: no ControllerModifyVolume (Heketi cannot change a volume)"
    ),
    r"does not support group snapshots": "group snapshots: Heketi has no consistent "
    "multi-volume snapshot",
    r"does not support topology|Number of available nodes is less than 2": "topology and "
    "multi-node specs: no topology keys, and the local cluster has one node",
    r"does not support volume limits": "volume limits: FUSE mounts have no per-node limit",
    r"doesn't publish storage capacity": "storage capacity: no CSIStorageCapacity objects "
    "(external-provisioner runs without --enable-capacity)",
    (
        r'volume type "DynamicPV" is not ephemeral|volume type "GenericEphemeralVolume" is '
        r'ephemeral|Suite "volumeLimits" does not support GenericEphemeralVolume|Filesystem '
        r"volume case should be covered by block volume case|Multiple generic ephemeral volumes "
        r"with immediate binding|Driver \S+ does not support snapshots - skipping"
    ): "combinations of test pattern and suite that the suite itself leaves out",
}


@dataclass
class Spec:
    name: str
    state: str
    seconds: float
    message: str = ""


@dataclass
class Summary:
    specs: list[Spec]
    excluded: int
    wall: float
    procs: int
    unexpected_skips: list[Spec] = field(default_factory=list)

    def by_state(self, state: str) -> list[Spec]:
        return [s for s in self.specs if s.state == state]

    @property
    def failed(self) -> list[Spec]:
        return [s for s in self.specs if s.state not in ("passed", "skipped")]

    @property
    def ok(self) -> bool:
        return not self.failed and not self.unexpected_skips and bool(self.by_state("passed"))


def log(msg: str) -> None:
    print(f"[e2e-upstream] {msg}", flush=True)


def short_name(name: str) -> str:
    """The spec name without the suite's common prefix."""
    return re.sub(r"^.*?External Storage \[Driver: [^\]]+\] ", "", name)


def skip_reason(message: str) -> str | None:
    for pattern, reason in EXPECTED_SKIPS.items():
        if re.search(pattern, message):
            return reason
    return None


def parse_report(report: Path) -> tuple[list[Spec], int]:
    """Specs of the External.Storage suite from ginkgo's JSON report: the selected ones, and
    how many were filtered out (skipped with no message: not selected)."""
    specs: list[Spec] = []
    filtered = 0
    for suite in json.loads(report.read_text()):
        for r in suite.get("SpecReports") or []:
            if r.get("LeafNodeType") != "It":
                continue
            name = " ".join([*r.get("ContainerHierarchyTexts", []), r.get("LeafNodeText", "")])
            if "External Storage" not in name:
                continue
            failure = r.get("Failure") or {}
            message = str(failure.get("Message", "")).strip()
            if r["State"] == "skipped" and not message:
                filtered += 1
                continue
            specs.append(Spec(name, r["State"], r.get("RunTime", 0) / 1e9, message))
    return specs, filtered


def summarize(specs: list[Spec], excluded: int, wall: float, procs: int) -> Summary:
    s = Summary(specs, excluded, wall, procs)
    s.unexpected_skips = [x for x in s.by_state("skipped") if skip_reason(x.message) is None]
    return s


def unmatched_focus(specs: list[Spec]) -> list[str]:
    """The CI subset's patterns that no passed spec matches (a renamed or vanished spec would
    otherwise shrink the subset without anyone noticing)."""
    passed = [x.name for x in specs if x.state == "passed"]
    return [p for p in CI_FOCUS if not any(re.search(p, name) for name in passed)]


def render(s: Summary) -> str:
    ran = [x for x in s.specs if x.state != "skipped"]
    skipped = s.by_state("skipped")
    lines = [
        f"External.Storage specs selected: {len(s.specs)} (not selected: {s.excluded})",
        f"ran {len(ran)}, passed {len(s.by_state('passed'))}, failed {len(s.failed)}, "
        f"skipped {len(skipped)}; wall time {s.wall / 60:.1f} min with {s.procs} procs",
    ]
    for x in s.failed:
        lines.append(f"FAILED ({x.state}) {short_name(x.name)}\n    {x.message[:2000]}")
    by_reason: dict[str, list[Spec]] = {}
    for x in skipped:
        by_reason.setdefault(skip_reason(x.message) or "UNEXPECTED: " + x.message, []).append(x)
    for reason, group in sorted(by_reason.items(), key=lambda kv: -len(kv[1])):
        lines.append(f"skipped ({len(group)}): {reason}")
        lines += [f"    {short_name(x.name)}" for x in sorted(group, key=lambda x: x.name)]
    slowest = sorted(ran, key=lambda x: -x.seconds)[:10]
    lines.append("slowest: " + "; ".join(f"{x.seconds:.0f}s {short_name(x.name)}" for x in slowest))
    return "\n".join(lines)


def ginkgo_argv(procs: int, subset: str, out: Path, timeout: str) -> list[str]:
    comp = build.component("kubernetes-e2e")
    argv = [
        str(comp.bin_dir / "ginkgo"),
        f"--procs={procs}",
        "--no-color",
        f"--timeout={timeout}",
        f"--output-dir={out}",
        "--json-report=report.json",
        "--junit-report=junit.xml",
    ]
    focus = FOCUS if subset == "all" else f"{FOCUS}.*({'|'.join(CI_FOCUS)})"
    argv.append(f"--focus={focus}")
    argv += [f"--skip={pattern}" for pattern in EXCLUDED]
    argv += [
        str(comp.bin_dir / "e2e.test"),
        "--",
        f"-kubeconfig={KUBECONFIG}",
        "-provider=skeleton",
        f"-storage.testdriver={TESTDRIVER}",
    ]
    return argv


def run(procs: int, subset: str, out: Path, timeout: str) -> Summary:
    if not build.component("kubernetes-e2e").built():
        build.build_all(["kubernetes-e2e"])
    imported = e2e_images.ensure_e2e_images(force=True)
    log(f"images imported: {', '.join(imported)}")
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").unlink(missing_ok=True)
    argv = ginkgo_argv(procs, subset, out, timeout)
    log(" ".join(argv))
    t0 = time.monotonic()
    with open(out / "ginkgo.log", "wb") as logf:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        assert proc.stdout is not None
        # chunks, not lines: ginkgo's progress is a dot per spec with no newline
        while chunk := os.read(proc.stdout.fileno(), 65536):
            sys.stdout.buffer.write(chunk)
            sys.stdout.flush()
            logf.write(chunk)
        rc = proc.wait()
    wall = time.monotonic() - t0
    if not (out / "report.json").is_file():
        raise RuntimeError(f"ginkgo wrote no report (exit {rc}); see {out / 'ginkgo.log'}")
    specs, filtered = parse_report(out / "report.json")
    summary = summarize(specs, filtered, wall, procs)
    if subset == "ci":
        summary.specs += [Spec(f"CI subset pattern {p!r} (no passed spec matches it)",
                               "unmatched", 0.0) for p in unmatched_focus(specs)]
    text = render(summary)
    (out / "summary.txt").write_text(text + "\n")
    print(text, flush=True)
    if rc != 0 and summary.ok:
        log(f"ginkgo exited {rc} although every spec passed; see {out / 'ginkgo.log'}")
        summary.specs.append(Spec("ginkgo run", f"exit {rc}", wall))
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m devtools.k8s e2e-upstream", description=__doc__)
    p.add_argument("--subset", choices=("all", "ci"), default="all")
    p.add_argument("--procs", type=int, default=4)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--timeout", default="2h", help="ginkgo's suite timeout")
    a = p.parse_args(argv)
    summary = run(a.procs, a.subset, a.out, a.timeout)
    counts = Counter(x.state for x in summary.specs)
    log(f"{'PASS' if summary.ok else 'FAIL'}: {dict(counts)}; reports in {a.out}")
    return 0 if summary.ok else 1


if __name__ == "__main__":
    sys.exit(main())
