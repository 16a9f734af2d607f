"""Size bounds on every request field, checked generically from the message descriptors."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from grpclib.const import Status

from services.common import bounds
from services.common.errors import InvalidArgument, NotFound, status_for
from services.common.proto import csi_pb2
from services.common.proto.pluginregistration import api_pb2

MB = 1 << 20
HUGE = "x" * MB


def _request_types() -> list[type[Message]]:
    from google.protobuf import symbol_database

    db = symbol_database.Default()
    types = []
    for file in (csi_pb2.DESCRIPTOR, api_pb2.DESCRIPTOR):
        for service in file.services_by_name.values():
            types.extend(db.GetSymbol(m.input_type.full_name) for m in service.methods)
    return types


def _is_map(field: FieldDescriptor) -> bool:
    return field.message_type is not None and field.message_type.GetOptions().map_entry


def _text_fields(desc: Descriptor, prefix: str = "") -> Iterator[tuple[str, list[str]]]:
    """(shown name, attribute path) of every string field, through nested messages."""
    for field in desc.fields:
        if _is_map(field):
            yield prefix + field.name, [field.name, "{map}"]
        elif field.message_type is not None:
            if field.message_type.full_name.startswith("google.protobuf."):
                continue
            index = "[0]" if field.is_repeated else ""
            for shown, path in _text_fields(field.message_type, f"{prefix}{field.name}{index}."):
                yield shown, [field.name + ("[]" if field.is_repeated else ""), *path]
        elif field.type == FieldDescriptor.TYPE_STRING:
            shown = prefix + field.name + ("[0]" if field.is_repeated else "")
            yield shown, [field.name + ("[]" if field.is_repeated else "")]


def _set(msg: Message, path: list[str], value: str) -> None:
    head, rest = path[0], path[1:]
    if rest == ["{map}"]:
        getattr(msg, head)["k"] = value
    elif head.endswith("[]") and not rest:
        getattr(msg, head[:-2]).append(value)
    elif head.endswith("[]"):
        _set(getattr(msg, head[:-2]).add(), rest, value)
    elif not rest:
        setattr(msg, head, value)
    else:
        _set(getattr(msg, head), rest, value)


CASES = [(cls, shown, path) for cls in _request_types()
         for shown, path in _text_fields(cls.DESCRIPTOR)]


def test_every_rpc_has_text_fields_to_check():
    names = {cls.__name__ for cls, _, _ in CASES}
    assert {"CreateVolumeRequest", "NodePublishVolumeRequest",
            "RegistrationStatus"} <= names
    assert len(CASES) > 80


@pytest.mark.parametrize(("cls", "shown", "path"), CASES,
                         ids=[f"{c.__name__}.{s}" for c, s, _ in CASES])
def test_a_1mb_value_in_any_field_is_refused_in_milliseconds(cls, shown, path):
    msg = cls()
    _set(msg, path, HUGE)
    started = time.perf_counter()
    with pytest.raises(InvalidArgument) as err:
        bounds.check_request(msg)
    elapsed = time.perf_counter() - started
    assert elapsed < 0.05, f"{elapsed * 1000:.1f} ms"
    text = err.value.message
    assert shown.split("[")[0].split(".")[0] in text, text
    assert "at most" in text and len(text) < 300 and "xxxx" not in text


def test_the_message_names_the_nested_field_and_its_limit():
    req = csi_pb2.NodePublishVolumeRequest(volume_id="v", target_path="/t")
    req.volume_capability.mount.mount_flags.extend(["ro", HUGE])
    with pytest.raises(InvalidArgument) as err:
        bounds.check_request(req)
    assert err.value.message == (
        f"volume_capability.mount.mount_flags[1] is {MB} bytes; at most "
        f"{bounds.LIMITS.string_bytes} are allowed")


def test_counts_and_map_sizes_are_bounded_without_walking_them():
    many = csi_pb2.CreateVolumeRequest(name="n", parameters={f"k{i}": "v" for i in range(100_000)})
    started = time.perf_counter()
    with pytest.raises(InvalidArgument, match=r"^parameters has 100000 entries; at most"):
        bounds.check_request(many)
    assert time.perf_counter() - started < 0.2
    flags = csi_pb2.NodeStageVolumeRequest(volume_id="v", staging_target_path="/s")
    flags.volume_capability.mount.mount_flags.extend(["ro"] * 10_000)
    with pytest.raises(InvalidArgument, match=r"mount_flags has 10000 items; at most"):
        bounds.check_request(flags)
    long_key = csi_pb2.CreateVolumeRequest(name="n", parameters={"k" * 5000: "v"})
    with pytest.raises(InvalidArgument, match=r"^parameters: a key of 5000 bytes; at most"):
        bounds.check_request(long_key)
    secret = csi_pb2.DeleteVolumeRequest(volume_id="v", secrets={"key": "s" * MB})
    with pytest.raises(InvalidArgument) as err:
        bounds.check_request(secret)
    assert err.value.message.startswith("secrets[\"key\"] is 1048576 bytes")


def test_whole_maps_and_whole_requests_are_bounded():
    wide = {f"k{i}": "v" * 4000 for i in range(10)}
    with pytest.raises(InvalidArgument, match=r"^parameters holds \d+ bytes; at most"):
        bounds.check_request(csi_pb2.CreateVolumeRequest(name="n", parameters=wide))


def test_requests_as_kubernetes_and_csi_sanity_send_them_pass():
    paths = "/var/lib/kubelet/pods/" + "0" * 36 + "/volumes/kubernetes.io~csi/" + "p" * 253
    ok = [
        csi_pb2.CreateVolumeRequest(
            name="n" * 128,  # csi-sanity's maximum-length name
            parameters={"resturl": "http://heketi:8080", "restuserkey": "k" * 200,
                        "csi.storage.k8s.io/provisioner-secret-namespace": "kube-system",
                        "volumeoptions": "client.ssl on, server.ssl on"},
            secrets={"key": "k" * 4096, "user": "admin"},
            volume_capabilities=[csi_pb2.VolumeCapability(
                mount=csi_pb2.VolumeCapability.MountVolume(mount_flags=["ro"] * 20))]),
        csi_pb2.NodePublishVolumeRequest(
            volume_id="hv1:" + "b" * 40 + ":" + "0" * 32, target_path=paths + "/mount",
            staging_target_path="/var/lib/kubelet/plugins/kubernetes.io/csi/" + "d" * 64
            + "/" + "0" * 64 + "/globalmount",
            volume_context={"volume": "v" * 200, "hosts": ",".join(["10.0.0.1"] * 100)}),
        api_pb2.RegistrationStatus(plugin_registered=False, error="e" * 3000),
    ]
    for msg in ok:
        bounds.check_request(msg)


def test_echoed_text_is_clipped_where_errors_become_statuses():
    status, message = status_for(NotFound(f"volume {HUGE!r} does not exist"), "rid")
    assert status is Status.NOT_FOUND
    assert len(message.encode()) <= 1024
    assert message.startswith("volume 'xxx") and message.endswith("...")
    # Multi-byte text is clipped on a character boundary.
    _, message = status_for(NotFound("é" * MB), "rid")
    assert len(message.encode()) <= 1024
    message.encode().decode()
