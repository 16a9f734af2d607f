"""How the conformance test reads csi-sanity's junit report and judges its skips (no cluster)."""

from __future__ import annotations

from pathlib import Path

from tests.conformance.test_csi_sanity import (
    ALLOWED_SKIPS,
    parse_junit,
    skip_reason,
    unexplained_skips,
)

# The shape ginkgo v2 (csi-sanity v5.3.1 to v5.6.0) writes, trimmed: one <testcase> per spec.
REPORT = """<?xml version="1.0" encoding="UTF-8"?>
<testsuites tests="6" disabled="1" errors="0" failures="1" time="3.2">
  <testsuite name="CSI Driver Test Suite" tests="6" skipped="3" failures="1">
    <testcase name="[It] Node Service should work" classname="CSI Driver Test Suite"
              status="passed" time="1.5"><system-err>STEP: ...</system-err></testcase>
    <testcase name="[It] ListVolumes pagination should detect volumes added between pages and
 accept tokens" classname="CSI Driver Test Suite" status="pending" time="0">
      <skipped message="pending"></skipped></testcase>
    <testcase name="[It] GroupController Service [GroupController Server] capabilities"
              classname="CSI Driver Test Suite" status="skipped" time="0.002">
      <skipped message="skipped - GroupControllerService not supported"></skipped></testcase>
    <testcase name="[It] Node Service should be idempotent" classname="CSI Driver Test Suite"
              status="skipped" time="0.006">
      <skipped message="skipped - Controller Service not provided: CreateVolume not supported">
      </skipped></testcase>
    <testcase name="[It] Controller Service ControllerPublishVolume should fail when the volume
 is already published but is incompatible" classname="CSI Driver Test Suite" status="failed"
              time="0.5">
      <failure message="Expected an error to have occurred." type="failed">[FAILED] Got nil
      </failure></testcase>
    <testcase name="[It] Identity Service Probe should return appropriate information"
              classname="CSI Driver Test Suite" status="passed" time="0.001"></testcase>
  </testsuite>
</testsuites>
"""


def test_counts_statuses_and_keeps_failure_text(tmp_path: Path) -> None:
    path = tmp_path / "junit.xml"
    path.write_text(REPORT)
    report = parse_junit(path)
    assert report.counts() == {"passed": 2, "failed": 1, "skipped": 3}
    (failed,) = report.with_status("failed")
    assert "Expected an error to have occurred" in failed.message
    assert "Got nil" in failed.message
    assert report.summary().endswith("2 passed, 1 failed, 3 skipped")


def test_a_skip_is_allowed_only_with_the_expected_reason(tmp_path: Path) -> None:
    path = tmp_path / "junit.xml"
    path.write_text(REPORT)
    report = parse_junit(path)
    odd = unexplained_skips(report)
    # The node plugin not advertising CONTROLLER_SERVICE is the driver's fault: never allowed.
    assert [s.name for s in odd] == ["[It] Node Service should be idempotent"]
    group = next(s for s in report.with_status("skipped") if "GroupController" in s.name)
    assert skip_reason(group) is not None
    # Same spec, skipped for another reason: not allowed.
    group.message = "skipped - some other reason"
    assert skip_reason(group) is None


def test_every_allowed_skip_has_a_reason() -> None:
    for (name, message), reason in ALLOWED_SKIPS.items():
        assert name and message and len(reason) > 30, (name, message)
