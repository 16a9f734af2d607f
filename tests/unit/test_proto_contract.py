"""The generated CSI and registration modules carry the wire contract the sidecars expect."""

from __future__ import annotations

from collections.abc import Iterator

import grpclib.const
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from grpclib.client import Channel

from services.common.proto import csi_grpc, csi_pb2
from services.common.proto.pluginregistration import api_grpc, api_pb2

CSI = csi_pb2.DESCRIPTOR

CONTROLLER_RPCS = [
    "CreateVolume",
    "DeleteVolume",
    "ControllerPublishVolume",
    "ControllerUnpublishVolume",
    "ValidateVolumeCapabilities",
    "ListVolumes",
    "GetCapacity",
    "ControllerGetCapabilities",
    "CreateSnapshot",
    "DeleteSnapshot",
    "ListSnapshots",
    "GetSnapshot",
    "ControllerExpandVolume",
    "ControllerGetVolume",
    "ControllerModifyVolume",
]
NODE_RPCS = [
    "NodeStageVolume",
    "NodeUnstageVolume",
    "NodePublishVolume",
    "NodeUnpublishVolume",
    "NodeGetVolumeStats",
    "NodeExpandVolume",
    "NodeGetCapabilities",
    "NodeGetInfo",
]


def _all_fields(messages: Iterator[Descriptor]) -> Iterator[FieldDescriptor]:
    for message in messages:
        yield from message.fields
        yield from _all_fields(iter(message.nested_types))


def _is_secret(field: FieldDescriptor) -> bool:
    return bool(field.GetOptions().Extensions[csi_pb2.csi_secret])


def test_secrets_are_marked_and_parameters_are_not() -> None:
    create = csi_pb2.CreateVolumeRequest.DESCRIPTOR.fields_by_name
    stage = csi_pb2.NodeStageVolumeRequest.DESCRIPTOR.fields_by_name
    assert _is_secret(create["secrets"])
    assert _is_secret(stage["secrets"])
    assert not _is_secret(create["parameters"])
    assert not _is_secret(create["mutable_parameters"])
    assert not _is_secret(stage["volume_context"])
    assert not _is_secret(stage["publish_context"])


def test_every_secrets_field_and_only_those_are_csi_secret() -> None:
    fields = list(_all_fields(iter(CSI.message_types_by_name.values())))
    marked = {f.full_name for f in fields if _is_secret(f)}
    named = {f.full_name for f in fields if f.name == "secrets"}
    assert marked == named
    # One per RPC request that takes secrets, across all services.
    assert len(marked) == 19


def test_extension_numbers() -> None:
    assert csi_pb2.csi_secret.number == 1059
    for name in ("alpha_enum", "alpha_enum_value", "alpha_field", "alpha_message"):
        assert getattr(csi_pb2, name).number == 1060
    assert csi_pb2.alpha_method.number == 1060
    assert csi_pb2.alpha_service.number == 1060


def test_services_and_rpc_names() -> None:
    services = CSI.services_by_name
    assert set(services) == {
        "Identity",
        "Controller",
        "GroupController",
        "SnapshotMetadata",
        "Node",
    }
    assert [m.name for m in services["Controller"].methods] == CONTROLLER_RPCS
    assert [m.name for m in services["Node"].methods] == NODE_RPCS
    assert [m.name for m in services["Identity"].methods] == [
        "GetPluginInfo",
        "GetPluginCapabilities",
        "Probe",
    ]
    assert services["SnapshotMetadata"].GetOptions().Extensions[csi_pb2.alpha_service]
    assert not services["Controller"].GetOptions().Extensions[csi_pb2.alpha_service]


def test_grpclib_base_mapping_paths_and_cardinality() -> None:
    mapping = _mapping(csi_grpc.ControllerBase)
    assert list(mapping) == [f"/csi.v1.Controller/{rpc}" for rpc in CONTROLLER_RPCS]
    create = mapping["/csi.v1.Controller/CreateVolume"]
    assert create.request_type is csi_pb2.CreateVolumeRequest
    assert create.reply_type is csi_pb2.CreateVolumeResponse

    streams = _mapping(csi_grpc.SnapshotMetadataBase)
    for path in (
        "/csi.v1.SnapshotMetadata/GetMetadataAllocated",
        "/csi.v1.SnapshotMetadata/GetMetadataDelta",
    ):
        assert streams[path].cardinality is grpclib.const.Cardinality.UNARY_STREAM


async def test_registration_stub_method_paths() -> None:
    channel = Channel(path="/nonexistent/reg.sock")
    try:
        stub = api_grpc.RegistrationStub(channel)
        assert stub.GetInfo.name == "/pluginregistration.Registration/GetInfo"
        assert (
            stub.NotifyRegistrationStatus.name
            == "/pluginregistration.Registration/NotifyRegistrationStatus"
        )
    finally:
        channel.close()
    mapping = _mapping(api_grpc.RegistrationBase)
    assert mapping["/pluginregistration.Registration/GetInfo"].reply_type is api_pb2.PluginInfo


def test_registration_messages_round_trip() -> None:
    info = api_pb2.PluginInfo(
        type="CSIPlugin",
        name="glusterfs.heketi.csi.io",
        endpoint="/var/lib/kubelet/plugins/glusterfs.heketi.csi.io/csi.sock",
        supported_versions=["1.0.0"],
    )
    assert api_pb2.PluginInfo.FromString(info.SerializeToString()) == info
    fields = {f.name: f.number for f in api_pb2.PluginInfo.DESCRIPTOR.fields}
    assert fields == {"type": 1, "name": 2, "endpoint": 3, "supported_versions": 4}
    status = {f.name: f.number for f in api_pb2.RegistrationStatus.DESCRIPTOR.fields}
    assert status == {"plugin_registered": 1, "error": 2}


def _mapping(base: type) -> dict[str, grpclib.const.Handler]:
    """The handler table of a grpclib *Base, via a subclass that stubs its abstract methods."""

    async def unimplemented(self: object, stream: object) -> None:
        raise NotImplementedError

    abstract: frozenset[str] = getattr(base, "__abstractmethods__", frozenset())
    concrete = type(f"Concrete{base.__name__}", (base,), dict.fromkeys(abstract, unimplemented))
    mapping: dict[str, grpclib.const.Handler] = concrete().__mapping__()
    return mapping
