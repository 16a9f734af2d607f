"""The upstream-suite runner (devtools/k8s/upstream.py), its driver definition and the agnhost
stand-in, without a cluster: what a report counts as failed, skipped as expected or not, the
capabilities declared against the deployed CSIDriver, and agnhost's mounttest output that the
subPath specs match."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from devtools.k8s import upstream
from devtools.k8s.e2e_images import agnhost_binary

REPO = Path(__file__).resolve().parents[3]
PREFIX = "[sig-storage] CSI Volumes External Storage [Driver: glusterfs.heketi.csi.io] "


def _report(tmp_path: Path, specs: list[tuple[str, str, str]]) -> Path:
    reports = [
        {
            "LeafNodeType": "It",
            "ContainerHierarchyTexts": [PREFIX.strip()],
            "LeafNodeText": name,
            "State": state,
            "RunTime": 2_000_000_000,
            **({"Failure": {"Message": msg}} if msg else {}),
        }
        for name, state, msg in specs
    ]
    reports.append({"LeafNodeType": "SynchronizedBeforeSuite", "State": "passed"})
    reports.append(
        {"LeafNodeType": "It", "ContainerHierarchyTexts": ["[sig-node] Pods"],
         "LeafNodeText": "x", "State": "skipped"}
    )
    path = tmp_path / "report.json"
    path.write_text(json.dumps([{"SpecReports": reports}]))
    return path


def test_report_counts_and_classifies_skips(tmp_path: Path) -> None:
    known = next(iter(upstream.EXPECTED_SKIPS))
    sample = re.sub(r"\\(.)", r"\1", known).replace(".*", " ")
    specs, filtered = upstream.parse_report(
        _report(
            tmp_path,
            [
                ("[Testpattern: A] a", "passed", ""),
                ("[Testpattern: B] b", "failed", "timed out waiting"),
                ("[Testpattern: C] c", "skipped", sample),
                ("[Testpattern: D] d", "skipped", "a reason nobody listed"),
                ("[Testpattern: E] e", "skipped", ""),
            ],
        )
    )
    assert filtered == 1  # the unselected External.Storage spec; other suites are not counted
    summary = upstream.summarize(specs, filtered, 60.0, 3)
    assert [s.name for s in summary.failed] == [PREFIX + "[Testpattern: B] b"]
    assert [s.name for s in summary.unexpected_skips] == [PREFIX + "[Testpattern: D] d"]
    assert not summary.ok
    text = upstream.render(summary)
    assert "ran 2, passed 1, failed 1, skipped 2" in text
    assert "UNEXPECTED: a reason nobody listed" in text


def test_all_passed_and_expected_skips_is_ok(tmp_path: Path) -> None:
    known = next(iter(upstream.EXPECTED_SKIPS))
    sample = re.sub(r"\\(.)", r"\1", known).replace(".*", " ")
    specs, filtered = upstream.parse_report(
        _report(tmp_path, [("a", "passed", ""), ("c", "skipped", sample)])
    )
    assert upstream.summarize(specs, filtered, 1.0, 1).ok
    # nothing ran at all is not a pass
    specs, filtered = upstream.parse_report(_report(tmp_path, [("c", "skipped", sample)]))
    assert not upstream.summarize(specs, filtered, 1.0, 1).ok


def test_ci_subset_is_anchored_to_external_storage() -> None:
    argv = upstream.ginkgo_argv(2, "ci", Path("/out"), "30m")
    focus = next(a for a in argv if a.startswith("--focus="))
    assert focus.startswith("--focus=External.Storage.*(")
    assert re.compile(focus.removeprefix("--focus="))  # RE2 is stricter; no look-arounds used
    assert "(?" not in focus.replace("(?:", "")


# The specs the CI subset passed in a real run, one a line.
CI_PASSED = [line for line in (Path(__file__).parent / "ci_passed.txt").read_text().splitlines()
             if line and not line.startswith("#")]
PREFIX = "External Storage [Driver: glusterfs.heketi.csi.io] "


def test_every_ci_pattern_must_match_a_passed_spec() -> None:
    passed = [upstream.Spec(PREFIX + n, "passed", 1.0) for n in CI_PASSED]
    assert upstream.unmatched_focus(passed) == []
    without_volume_io = [s for s in passed if "volumeIO" not in s.name]
    missing = upstream.unmatched_focus(without_volume_io)
    assert len(missing) == 1 and "volumeIO" in missing[0]
    failed_instead = [*without_volume_io,
                      upstream.Spec(PREFIX + next(n for n in CI_PASSED if "volumeIO" in n),
                                    "failed", 1.0)]
    assert upstream.unmatched_focus(failed_instead) == missing


def test_testdriver_matches_the_deployed_driver() -> None:
    driver = yaml.safe_load((REPO / "tests/e2e/testdriver.yaml").read_text())
    csidriver = yaml.safe_load((REPO / "k8s/base/csidriver.yaml").read_text())
    info = driver["DriverInfo"]
    assert info["Name"] == csidriver["metadata"]["name"]
    caps = info["Capabilities"]
    # kubelet applies a pod's fsGroup only with File (or ReadWriteOnceWithFSType and an fsType)
    assert caps["fsGroup"] is (csidriver["spec"]["fsGroupPolicy"] == "File")
    for cap in ("persistence", "exec", "multipods", "RWX", "capReadOnlyMany", "readWriteOncePod",
                "multiplePVsSameID", "controllerExpansion", "onlineExpansion",
                "snapshotDataSource", "pvcDataSource"):
        assert caps[cap] is True, cap
    assert caps["block"] is False
    classes = {
        doc["kind"]: doc["metadata"]["name"]
        for f in ("storageclass.yaml", "volumesnapshotclass.yaml")
        for doc in [yaml.safe_load((REPO / "k8s/examples/classes" / f).read_text())]
    }
    assert driver["StorageClass"]["FromExistingClassName"] == classes["StorageClass"]
    assert driver["SnapshotClass"]["FromExistingClassName"] == classes["VolumeSnapshotClass"]


@pytest.fixture(scope="module")
def agnhost() -> Path:
    if shutil.which("gcc") is None:
        pytest.fail("gcc is needed to build the agnhost stand-in (apt-get install gcc libc6-dev)")
    return agnhost_binary()


def test_agnhost_mounttest_writes_and_reads_like_the_subpath_specs_expect(
    agnhost: Path, tmp_path: Path
) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    out = subprocess.run(
        [str(agnhost), "mounttest", f"--new_file_0644={a}", f"--file_mode={a}",
         "--new_file_0666", str(b)],
        capture_output=True, text=True, timeout=10, check=True,
    ).stdout
    assert f'content of file "{a}": mount-tester new file\n' in out
    assert f'content of file "{b}": mount-tester new file\n' in out
    assert f'mode of file "{a}": -rw-r--r--' in out
    assert (a.stat().st_mode & 0o777, b.stat().st_mode & 0o777) == (0o644, 0o666)
    loop = subprocess.run(
        [str(agnhost), "mounttest", f"--file_content_in_loop={a}", "--retry_time=20"],
        capture_output=True, text=True, timeout=10, check=True,
    ).stdout
    assert loop == f'content of file "{a}": mount-tester new file\n\n'


def test_agnhost_mounttest_fails_on_a_missing_file_after_retrying(
    agnhost: Path, tmp_path: Path
) -> None:
    proc = subprocess.run(
        [str(agnhost), "mounttest", f"--file_content_in_loop={tmp_path / 'none'}",
         "--retry_time=1"],
        capture_output=True, text=True, timeout=10, check=False,
    )
    assert proc.returncode == 1
    assert "retrying" in proc.stdout


def test_agnhost_pause_exits_zero_on_sigterm(agnhost: Path) -> None:
    proc = subprocess.Popen([str(agnhost), "pause"], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline() == "Paused\n"  # signal handlers are set before this line
    proc.terminate()
    assert proc.wait(timeout=5) == 0
