"""The exception->status table, and redaction driven by the csi_secret option."""

from __future__ import annotations

import pytest
from grpclib.const import Status

from services.common import errors
from services.common.proto import csi_pb2
from services.common.redact import REDACTED, redacted, redacted_dict
from services.controller.heketi import HeketiNameInUse, HeketiNoSpace, HeketiResultLost

TABLE = [
    (errors.InvalidArgument, Status.INVALID_ARGUMENT),
    (errors.NotFound, Status.NOT_FOUND),
    (errors.AlreadyExists, Status.ALREADY_EXISTS),
    (errors.ResourceExhausted, Status.RESOURCE_EXHAUSTED),
    (errors.Aborted, Status.ABORTED),
    (errors.Unavailable, Status.UNAVAILABLE),
    (errors.DeadlineExceeded, Status.DEADLINE_EXCEEDED),
    (errors.FailedPrecondition, Status.FAILED_PRECONDITION),
    (errors.OutOfRange, Status.OUT_OF_RANGE),
    (errors.Unauthenticated, Status.UNAUTHENTICATED),
    (errors.PermissionDenied, Status.PERMISSION_DENIED),
    (errors.Unimplemented, Status.UNIMPLEMENTED),
    (errors.Internal, Status.INTERNAL),
]


@pytest.mark.parametrize(("cls", "status"), TABLE)
def test_each_driver_error_maps_to_its_status_and_keeps_its_message(cls, status):
    assert errors.status_for(cls("the reason"), "rid") == (status, "the reason")


def test_backend_errors_map_through_their_base_class():
    assert errors.status_for(HeketiNameInUse("x"), "r")[0] is Status.ALREADY_EXISTS
    assert errors.status_for(HeketiNoSpace("x"), "r")[0] is Status.RESOURCE_EXHAUSTED
    assert errors.status_for(HeketiResultLost("x", op_id="1"), "r")[0] is Status.UNAVAILABLE


def test_unexpected_exception_is_internal_with_request_id_and_no_detail():
    status, message = errors.status_for(KeyError("key=hunter2"), "abc123")
    assert status is Status.INTERNAL
    assert "abc123" in message
    assert "hunter2" not in message


def test_timeout_is_deadline_exceeded():
    assert errors.status_for(TimeoutError(), "r")[0] is Status.DEADLINE_EXCEEDED


def test_secret_maps_are_redacted_and_other_fields_kept():
    req = csi_pb2.CreateVolumeRequest(
        name="pvc-1", secrets={"key": "s3cret", "user": "admin"},
        parameters={"resturl": "http://heketi:8080"},
    )
    clean = redacted(req)
    assert dict(clean.secrets) == {"key": REDACTED, "user": REDACTED}
    assert dict(clean.parameters) == {"resturl": "http://heketi:8080"}
    assert req.secrets["key"] == "s3cret", "the original must not change"


def test_secrets_in_every_request_type_are_found_from_the_descriptor():
    samples = [
        csi_pb2.NodeStageVolumeRequest(volume_id="v", secrets={"key": "s3cret"}),
        csi_pb2.CreateSnapshotRequest(name="s", secrets={"key": "s3cret"}),
        csi_pb2.ControllerExpandVolumeRequest(volume_id="v", secrets={"key": "s3cret"}),
        csi_pb2.ListSnapshotsRequest(secrets={"key": "s3cret"}),
    ]
    for msg in samples:
        assert "s3cret" not in str(redacted_dict(msg)), type(msg).__name__


def test_parameters_that_carry_a_key_are_redacted_in_every_map():
    req = csi_pb2.CreateVolumeRequest(name="pvc-1", parameters={
        "resturl": "http://heketi:8080", "restuserkey": "s3cret", "RestUserKey2": "s3cret",
        "adminPassword": "s3cret", "token": "s3cret",
        "csi.storage.k8s.io/provisioner-secret-name": "heketi-admin"})
    clean = redacted_dict(req)["parameters"]
    assert "s3cret" not in str(clean)
    assert clean["resturl"] == "http://heketi:8080"
    assert clean["csi.storage.k8s.io/provisioner-secret-name"] == "heketi-admin"
    assert clean["restuserkey"] == REDACTED
    validate = csi_pb2.ValidateVolumeCapabilitiesRequest(
        volume_id="v", parameters={"restuserkey": "s3cret"}, volume_context={"key": "s3cret"})
    assert "s3cret" not in str(redacted_dict(validate))
    assert req.parameters["restuserkey"] == "s3cret", "the original must not change"


URL_SECRETS = [
    ("http://admin:s3cret@heketi:8080/api", "http://***@heketi:8080/api"),
    ("https://heketi:8080/?key=s3cret", "https://heketi:8080/?***"),
    ("http://heketi:8080#s3cret", "http://heketi:8080#***"),
    ("http://u:s3cret@h/p?k=s3cret#s3cret", "http://***@h/p?***#***"),
    ("http://u:s3/cr#et@h:1", "http://***@h:1"),  # a password with unencoded `/` and `#`
    ("http://h/p#f?s3cret", "http://h/p#***"),
    ("see HTTP://u:s3cret@h and ftp://h/x?s3cret.", "see HTTP://***@h and ftp://h/x?***"),
]


@pytest.mark.parametrize(("url", "shown"), URL_SECRETS)
def test_urls_lose_user_info_query_and_fragment_in_every_string(url, shown):
    req = csi_pb2.CreateVolumeRequest(
        name=url, parameters={"resturl": url, url: "x"}, mutable_parameters={"RESTURL": url},
        volume_capabilities=[csi_pb2.VolumeCapability(
            mount=csi_pb2.VolumeCapability.MountVolume(mount_flags=[url]))])
    clean = redacted_dict(req)
    assert "s3cret" not in str(clean)
    assert clean["name"] == shown
    assert clean["parameters"] == {"resturl": shown, shown: "x"}
    assert clean["mutable_parameters"] == {"RESTURL": shown}
    assert clean["volume_capabilities"][0]["mount"]["mount_flags"] == [shown]
    assert req.parameters["resturl"] == url, "the original must not change"


def test_plain_urls_and_text_are_logged_as_they_are():
    for text in ("http://heketi:8080", "https://[::1]:8080/heketi", "host:vol", "a@b", "?#"):
        req = csi_pb2.ControllerModifyVolumeRequest(volume_id=text,
                                                    mutable_parameters={"resturl": text})
        clean = redacted_dict(req)
        assert (clean["volume_id"], clean["mutable_parameters"]["resturl"]) == (text, text)


def test_the_object_id_an_rpc_line_carries_hides_url_credentials_too():
    from services.common.rpc import object_id

    req = csi_pb2.CreateVolumeRequest(name="http://u:s3cret@h/p?s3cret")
    assert object_id(req) == "http://***@h/p?***"
    long_password = csi_pb2.CreateVolumeRequest(name="http://u:" + "s3cret" * 100 + "@h")
    assert object_id(long_password) == "http://***@h"
