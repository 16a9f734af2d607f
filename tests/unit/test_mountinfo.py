"""Parsing /proc/self/mountinfo: fields, octal escapes, lookups, binds of a staging mount."""

from __future__ import annotations

import pytest

from services.node import mountinfo
from services.node.mountinfo import MountinfoError

# ruff: noqa: E501  (mountinfo lines are long)

SAMPLE = """\
22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw,discard
42 27 0:39 / /var/lib/kubelet/plugins/kubernetes.io/csi/d/abc/globalmount rw,relatime shared:5 - fuse.glusterfs vm:vol_1 rw,user_id=0,group_id=0,default_permissions,allow_other,max_read=131072
43 27 0:39 / /var/lib/kubelet/pods/p1/volumes/kubernetes.io~csi/pv1/mount ro,relatime shared:5 master:3 - fuse.glusterfs vm:vol_1 rw,user_id=0
44 27 0:39 /sub /var/lib/kubelet/pods/p2/volumes/kubernetes.io~csi/pv1/mount rw,relatime - fuse.glusterfs vm:vol_1 rw
45 27 0:40 / /mnt/with\\040space\\011tab\\012nl\\134bs rw - tmpfs my\\040src rw
46 27 0:39 / /elsewhere/bind rw,relatime - fuse.glusterfs vm:vol_1 rw
47 27 0:41 / /var/lib/kubelet/plugins/kubernetes.io/csi/d/abc/globalmount rw - tmpfs tmpfs rw
"""


def test_fields_of_a_gluster_line():
    mounts = mountinfo.parse(SAMPLE)
    m = mounts[2]
    assert (m.mount_id, m.parent_id, m.major, m.minor) == (42, 27, 0, 39)
    assert m.root == "/"
    assert m.mount_point.endswith("/globalmount")
    assert m.fstype == "fuse.glusterfs"
    assert m.source == "vm:vol_1"
    assert m.options == ("rw", "relatime")
    assert "allow_other" in m.super_options
    assert not m.readonly


def test_optional_fields_are_skipped_whatever_their_number():
    mounts = mountinfo.parse(SAMPLE)
    assert mounts[3].fstype == "fuse.glusterfs"  # two optional fields
    assert mounts[3].readonly
    assert mounts[0].fstype == "proc"  # none


def test_octal_escapes_in_paths_and_source():
    m = mountinfo.parse(SAMPLE)[5]
    assert m.mount_point == "/mnt/with space\ttab\nnl\\bs"
    assert m.source == "my src"


def test_unescape_leaves_other_backslashes():
    assert mountinfo.unescape(r"a\040b\x\12") == r"a b\x\12"


def test_mount_at_returns_the_top_of_a_stack():
    mounts = mountinfo.parse(SAMPLE)
    top = mountinfo.mount_at(mounts, "/var/lib/kubelet/plugins/kubernetes.io/csi/d/abc/globalmount")
    assert top is not None and top.mount_id == 47 and top.fstype == "tmpfs"
    assert mountinfo.count_at(mounts, top.mount_point) == 2
    assert mountinfo.mount_at(mounts, "/nowhere") is None


def test_binds_of_a_staging_mount_match_device_and_root():
    mounts = mountinfo.parse(SAMPLE)
    stage = mounts[2]
    binds = mountinfo.binds_of(mounts, stage)
    # Same device and root: the kubelet target and /elsewhere/bind; not the /sub bind (other
    # root), not the stage itself, not the tmpfs on top.
    assert [b.mount_id for b in binds] == [43, 46]
    under = mountinfo.binds_of(mounts, stage, under="/var/lib/kubelet")
    assert [b.mount_id for b in under] == [43]


def test_gluster_mounts_under_a_directory():
    mounts = mountinfo.parse(SAMPLE)
    found = mountinfo.gluster_mounts_under(mounts, "/var/lib/kubelet/")
    assert [m.mount_id for m in found] == [42, 43, 44]


@pytest.mark.parametrize(
    "line",
    [
        "garbage",
        "1 2 3 / /x rw - ext4 /dev/x rw",  # device without a colon
        "1 2 0:1 / /x rw ext4 /dev/x rw",  # no separator
    ],
)
def test_bad_lines_raise(line):
    with pytest.raises(MountinfoError):
        mountinfo.parse_line(line)


def test_reads_this_process_mount_table():
    mounts = mountinfo.read()
    assert any(m.mount_point == "/" for m in mounts)
