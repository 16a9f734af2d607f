"""Which gRPC code a failed glusterfs mount answers, from what the gluster client logged.

The log lines are GlusterFS 10.3's, as written on this machine for each cause."""

from __future__ import annotations

import pytest
from grpclib.const import Status

from services.common.errors import status_for
from services.node.mounter import mount_failure

NO_VOLUME = (
    "[2026-12-01 15:46:40.604554 +0000] E [glusterfsd-mgmt.c:2170:mgmt_getspec_cbk] "
    "0-glusterfs: failed to get the 'volume file' from server\n"
    "[2026-12-01 15:46:40.604558 +0000] E [glusterfsd-mgmt.c:2371:mgmt_getspec_cbk] 0-mgmt: "
    "failed to fetch volume file (key:vol_1)"
)
BRICKS_DOWN = (
    "[2026-12-01 15:46:35.676670 +0000] E [MSGID: 114058] "
    "[client-handshake.c:1193:client_query_portmap_cbk] 0-vol_1-client-0: failed to get the "
    "port number for remote subvolume. Please run gluster volume status on server to see if "
    "brick process is running [] \n"
    "[2026-12-01 15:46:35.678497 +0000] E [fuse-bridge.c:5364:fuse_first_lookup] 0-fuse: "
    "first lookup on root failed (Transport endpoint is not connected)"
)
NO_DNS = (
    "[2026-12-01 15:46:23.031187 +0000] E [MSGID: 101075] [common-utils.c:519:gf_resolve_ip6] "
    "0-resolver: error in getaddrinfo [{family=2}, {ret=Name or service not known}] \n"
    "[2026-12-01 15:46:23.031242 +0000] E [name.c:267:af_inet_client_get_remote_sockaddr] "
    "0-glusterfs: DNS resolution failed on host gluster-1.invalid"
)
FUSE_REFUSED = (
    "[2026-12-01 15:47:15.824046 +0000] E [mount.c:453:fuse_mount_sys] 0-glusterfs-fuse: "
    "ret = -1\n"
)


def answer(tail: str, output: str = "") -> tuple[Status, str]:
    error = mount_failure(
        "gluster-1:vol_1", "/k/plugins/x/globalmount", "how it failed", tail, "/l.log", output
    )
    return status_for(error, "rid")


@pytest.mark.parametrize(
    ("output", "why"),
    [
        ('glusterfs: Invalid reader thread count 0. Valid range: ["1, 64"]\n'
         "Mounting glusterfs on /k/plugins/x/globalmount failed.",
         "Invalid reader thread count 0"),
        ("/usr/sbin/glusterfs: unrecognized option '--mem-accounting'\n"
         "Try `glusterfs --help' or `glusterfs --usage' for more information.\n"
         "Mounting glusterfs on /k/plugins/x/globalmount failed.",
         "unrecognized option '--mem-accounting'"),
    ],
)
def test_options_the_gluster_client_refuses_are_invalid_argument(output, why):
    status, message = answer("", output)
    assert status is Status.INVALID_ARGUMENT
    assert why in message and "mount flags" in message


def test_a_volume_its_server_does_not_know_is_not_found_quoting_the_log():
    status, message = answer(NO_VOLUME)
    assert status is Status.NOT_FOUND
    assert message.startswith("gluster volume vol_1 does not exist")
    assert "failed to fetch volume file (key:vol_1)" in message
    assert "[2026-12-01" not in message, "log lines are quoted without their prefix"
    assert "/l.log" in message


@pytest.mark.parametrize("tail", [BRICKS_DOWN, NO_DNS])
def test_servers_or_bricks_that_do_not_answer_are_unavailable(tail):
    status, message = answer(tail)
    assert status is Status.UNAVAILABLE
    assert "gluster servers or bricks of volume vol_1 do not answer" in message
    assert ("first lookup on root failed" in message) or ("DNS resolution failed" in message)


@pytest.mark.parametrize("tail", [FUSE_REFUSED, ""])
def test_other_failures_stay_internal_with_the_whole_story(tail):
    assert answer(tail) == (Status.INTERNAL, "how it failed")
