"""Staging/target path validation: absolute, normalized, under the kubelet root."""

from __future__ import annotations

import pytest

from services.common.errors import InvalidArgument
from services.node.paths import normalize_root, validate, validate_for_helper

ROOT = "/var/lib/kubelet"


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
