"""Mount flag validation and the option list of a glusterfs mount."""

from __future__ import annotations

import pytest

from services.common.errors import InvalidArgument
from services.node import mountopts
from services.node.mountopts import plan_mount, validate_flags, volume_of_source


@pytest.mark.parametrize(
    "flags, expected",
    [
        ([], []),
        (["ro"], ["ro"]),
        (["noatime,diratime", " acl "], ["noatime", "diratime", "acl"]),
        (["log-level=DEBUG"], ["log-level=DEBUG"]),
        (
            ["entry-timeout=0.5", "attribute-timeout=1"],
            ["entry-timeout=0.5", "attribute-timeout=1"],
        ),
        (
            ["direct-io-mode=disable", "use-readdirp=no"],
            ["direct-io-mode=disable", "use-readdirp=no"],
        ),
        (["auto_unmount", "_netdev"], ["auto_unmount", "_netdev"]),
        (["nosuid,nodev", "noexec"], ["nosuid", "nodev", "noexec"]),
        (["exec"], ["exec"]),
    ],
)
def test_accepted_flags(flags, expected):
    assert validate_flags(flags) == expected


@pytest.mark.parametrize(
    "flag, reason",
    [
        ("bind", "other mounts"),
        ("rbind", "other mounts"),
        ("remount", "other mounts"),
        ("move", "other mounts"),
        ("rshared", "other mounts"),
        ("make-private", "other mounts"),
        ("x-mount.mkdir", "other mounts"),
        ("log-file=/etc/passwd", "not allowed"),  # '/' is outside the safe set
        ("log-file=x", "driver sets it"),
        ("backup-volfile-servers=evil", "driver sets it"),
        ("volfile-server=evil", "driver sets it"),
        ("fuse-mountopts=rw", "driver sets it"),
        ("xlator-option=x.y=z", "driver sets it"),
        ("ro rw", "not allowed"),  # whitespace would split in the helper
        ("ro;reboot", "not allowed"),
        ("$(id)", "not allowed"),
        ("-o", "not a supported"),
        ("defaults", "not a supported"),
        ("log-level", "needs a value"),
        ("log-level=LOUD", "invalid value"),
        ("entry-timeout=soon", "invalid value"),
        ("acl=1", "takes no value"),
        ("transport=carrier-pigeon", "invalid value"),
        # The kernel refuses these as FUSE options; the client does not know mem-accounting.
        *((flag, "not a supported") for flag in (
            "nodiratime", "relatime", "strictatime", "lazyatime", "nolazyatime", "mem-accounting"
        )),
    ],
)
def test_refused_flags(flag, reason):
    with pytest.raises(InvalidArgument) as exc:
        validate_flags([flag])
    assert reason in exc.value.message


@pytest.mark.parametrize(
    "flag, named",
    [
        ("suid", "suid"),
        ("dev", "dev"),
        ("noatime,suid", "suid"),
        ("context=system_u:object_r:container_file_t:s0", "context"),
        ("fscontext=system_u:object_r:fusefs_t:s0", "fscontext"),
        ("defcontext=system_u:object_r:etc_t:s0", "defcontext"),
        ("rootcontext=system_u:object_r:shadow_t:s0", "rootcontext"),
        ("selinux", "selinux"),
    ],
)
def test_flags_a_user_may_not_ask_for_are_refused_by_name(flag, named):
    with pytest.raises(InvalidArgument) as exc:
        validate_flags([flag])
    assert f"mount flag {named!r} is refused" in exc.value.message


def test_every_mount_is_nosuid_and_nodev_once():
    plan = plan_mount("v", ["h1"], [], ["nodev", "noexec"], "/l", "ERROR")
    assert plan.options == ("log-file=/l", "log-level=ERROR", "nosuid", "nodev", "noexec")


def test_comma_cannot_smuggle_a_refused_option():
    with pytest.raises(InvalidArgument, match="driver sets it"):
        validate_flags(["noatime,log-file=x"])


def test_plan_uses_first_host_and_the_rest_as_backups():
    plan = plan_mount(
        "vol_1", ["h1", "h2", "h3"], ["h3", "h4", "h1"], ["ro"], "/var/log/c.log", "ERROR"
    )
    assert plan.source == "h1:vol_1"
    assert plan.backup_servers == ("h2", "h3", "h4")
    assert plan.options == (
        "log-file=/var/log/c.log",
        "log-level=ERROR",
        "backup-volfile-servers=h2:h3:h4",
        "nosuid",
        "nodev",
        "ro",
    )


def test_plan_lets_a_flag_choose_the_log_level():
    plan = plan_mount("v", ["h1"], [], ["log-level=DEBUG"], "/l", "ERROR")
    assert plan.options == ("log-file=/l", "nosuid", "nodev", "log-level=DEBUG")


@pytest.mark.parametrize(
    "host", ["-oops", "h 1", "h;1", "h/1", "", "x" * 64, ".".join(["x" * 63] * 4) + ".x"]
)
def test_plan_refuses_bad_hosts(host):
    with pytest.raises(InvalidArgument):
        plan_mount("v", [host], [], [], "/l", "ERROR")


@pytest.mark.parametrize("volume", ["", "a b", "-v", "v;x", "a/b", "x" * 256])
def test_plan_refuses_bad_volume_names(volume):
    with pytest.raises(InvalidArgument):
        plan_mount(volume, ["h"], [], [], "/l", "ERROR")


def test_ipv4_and_ipv6_hosts():
    assert mountopts.check_host("10.0.0.1") == "10.0.0.1"
    longest = ".".join(["x" * 63] * 3 + ["x" * 61])
    assert mountopts.check_host(longest) == longest
    assert mountopts.check_host("fe80::1") == "fe80::1"


def test_volume_of_source():
    assert volume_of_source("host:vol_1") == "vol_1"
    assert volume_of_source("host:/vol_1") == "vol_1"
    assert volume_of_source("fe80::1:vol_1") == "vol_1"
