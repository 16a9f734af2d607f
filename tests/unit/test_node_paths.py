"""Staging/target path validation: absolute, normalized, under the kubelet root, and in the
shapes kubelet gives staging and target paths."""

from __future__ import annotations

import pytest

from services.common.errors import InvalidArgument
from services.node.paths import (
    normalize_root,
    validate,
    validate_for_helper,
    validate_staging,
    validate_target,
)

ROOT = "/var/lib/kubelet"
DRIVER = "glusterfs.heketi.csi.io"
SHA = "6a0b3e4f" * 8
TARGET = f"{ROOT}/pods/0f1e2d3c-aaaa-bbbb-cccc-123456789abc/volumes/kubernetes.io~csi/pvc-1/mount"
STAGING = f"{ROOT}/plugins/kubernetes.io/csi/{DRIVER}/{SHA}/globalmount"
OLD_STAGING = f"{ROOT}/plugins/kubernetes.io/csi/pv/pvc-1/globalmount"


@pytest.mark.parametrize(
    "path",
    [
        "/var/lib/kubelet/plugins/kubernetes.io/csi/d/abc/globalmount",
        "/var/lib/kubelet/pods/uid/volumes/kubernetes.io~csi/pv/mount",
        "/var/lib/kubelet/x",
    ],
)
def test_accepted(path):
    assert validate(path, "target_path", ROOT) == path


@pytest.mark.parametrize(
    "path, reason",
    [
        ("", "required"),
        ("var/lib/kubelet/x", "absolute"),
        ("/var/lib/kubelet/../../etc", "normalized"),
        ("/var/lib/kubelet/a/./b", "normalized"),
        ("/var/lib/kubelet//a", "normalized"),
        ("/var/lib/kubelet/a/", "normalized"),
        ("//var/lib/kubelet/a", "normalized"),
        ("/var/lib/kubelet", "not below"),
        ("/var/lib/kubeletX/a", "not below"),
        ("/etc/passwd", "not below"),
        ("/var/lib/kubelet/a\0b", "NUL"),
        ("/var/lib/kubelet/a\nb", "newline"),
    ],
)
def test_refused(path, reason):
    with pytest.raises(InvalidArgument) as exc:
        validate(path, "staging_target_path", ROOT)
    assert reason in exc.value.message
    assert "staging_target_path" in exc.value.message


def test_root_with_trailing_slash():
    root = normalize_root("/var/lib/kubelet/")
    assert root == ROOT
    assert validate("/var/lib/kubelet/a", "p", root) == "/var/lib/kubelet/a"


def test_relative_root_is_refused():
    with pytest.raises(ValueError):
        normalize_root("var/lib/kubelet")


@pytest.mark.parametrize("path", ["/var/lib/kubelet/a b", "/var/lib/kubelet/a*", "/x/$(id)"])
def test_helper_unsafe_characters(path):
    with pytest.raises(InvalidArgument):
        validate_for_helper(path, "staging_target_path")


def test_kubelet_shaped_paths_are_accepted():
    assert validate_target(TARGET, "target_path", ROOT, DRIVER) == TARGET
    for staging in (STAGING, OLD_STAGING):
        assert validate_staging(staging, "staging_target_path", ROOT, DRIVER) == staging


@pytest.mark.parametrize(
    "path",
    [
        f"{ROOT}/pods",
        f"{ROOT}/pods/uid",
        f"{ROOT}/pods/uid/volumes",
        f"{ROOT}/pods/uid/volumes/kubernetes.io~csi",
        f"{ROOT}/pods/uid/volumes/kubernetes.io~csi/pv",
        f"{ROOT}/pods/uid/volumes/kubernetes.io~csi/pv/mount/deeper",
        f"{ROOT}/pods/uid/volumes/kubernetes.io~nfs/pv/mount",
        f"{ROOT}/pods/uid/volumes/kubernetes.io~csi/pv/vol_data.json",
        f"{ROOT}/plugins/kubernetes.io/csi/{DRIVER}",
        f"{ROOT}/x/uid/volumes/kubernetes.io~csi/pv/mount",
        f"{ROOT}/plugins_registry",
    ],
)
def test_other_target_shapes_are_refused_naming_the_field(path):
    with pytest.raises(InvalidArgument, match="not a kubelet target path") as exc:
        validate_target(path, "target_path", ROOT, DRIVER)
    assert exc.value.message.startswith("target_path ")


@pytest.mark.parametrize(
    "path",
    [
        f"{ROOT}/plugins",
        f"{ROOT}/plugins/kubernetes.io/csi/{DRIVER}/{SHA}",
        f"{ROOT}/plugins/kubernetes.io/csi/{DRIVER}/{SHA}/globalmount/x",
        f"{ROOT}/plugins/kubernetes.io/csi/{DRIVER}/abc/globalmount",  # not a sha256
        f"{ROOT}/plugins/kubernetes.io/csi/{DRIVER}/{SHA.upper()}/globalmount",
        f"{ROOT}/plugins/kubernetes.io/csi/other.driver/{SHA}/globalmount",
        f"{ROOT}/plugins/kubernetes.io/csi/{DRIVER}/{SHA}/mount",
        f"{ROOT}/plugins/{DRIVER}/{SHA}/globalmount",
        f"{ROOT}/pods/uid/volumes/kubernetes.io~csi/pv/globalmount",
    ],
)
def test_other_staging_shapes_are_refused_naming_the_field(path):
    with pytest.raises(InvalidArgument, match="not a kubelet staging path") as exc:
        validate_staging(path, "staging_target_path", ROOT, DRIVER)
    assert exc.value.message.startswith("staging_target_path ")


def test_a_staging_path_is_no_target_and_a_target_path_no_staging_path():
    for staging in (STAGING, OLD_STAGING):
        with pytest.raises(InvalidArgument, match="is a staging path, not a target path"):
            validate_target(staging, "target_path", ROOT, DRIVER)
    with pytest.raises(InvalidArgument, match="is a target path, not a staging path"):
        validate_staging(TARGET, "staging_target_path", ROOT, DRIVER)


def test_shapes_are_checked_after_the_lexical_rules():
    with pytest.raises(InvalidArgument, match="not below"):
        validate_target("/etc/pods/u/volumes/kubernetes.io~csi/pv/mount", "target_path", ROOT,
                        DRIVER)
    with pytest.raises(InvalidArgument, match="normalized"):
        validate_staging(STAGING + "/", "staging_target_path", ROOT, DRIVER)
