"""Volume/snapshot ids and the Heketi names derived from CSI names."""

from __future__ import annotations

import re

import pytest

from services.common.errors import InvalidArgument, NotFound
from services.controller.ids import (
    MAX_ID_BYTES,
    Kind,
    ObjectRef,
    backend_token_for_url,
    make_ref,
    parse_owned_name,
    parse_ref,
    snapshot_name,
    url_from_backend_token,
    volume_name,
)

HID = "0123456789abcdef0123456789abcdef"
HEKETI_NAME = re.compile(r"^[a-zA-Z0-9_-]+$")


def test_ref_round_trip_for_configured_and_url_backends():
    for backend in ("default", backend_token_for_url("http://heketi.storage.svc:8080")):
        ref = make_ref(Kind.VOLUME, backend, HID)
        assert parse_ref(ref.encode(), Kind.VOLUME) == ref
        assert len(ref.encode()) <= MAX_ID_BYTES


def test_url_token_decodes_to_the_url():
    url = "https://heketi.example.org:8443/api"
    assert url_from_backend_token(backend_token_for_url(url)) == url
    assert url_from_backend_token("default") is None


def test_snapshot_id_is_not_a_volume_id_and_garbage_is_not_found():
    snap = ObjectRef(Kind.SNAPSHOT, "default", HID).encode()
    with pytest.raises(NotFound):
        parse_ref(snap, Kind.VOLUME)
    for junk in ("", "abc", "hv1:default:xyz", "hv1:BAD NAME:" + HID, "hv2:default:" + HID):
        with pytest.raises(NotFound):
            parse_ref(junk, Kind.VOLUME)


def test_ids_naming_urls_no_backend_could_have_are_not_found():
    for url in ("ftp://heketi:8080", "file:///etc/passwd", "http://admin:pw@heketi:8080",
                "http://heketi:8080/?x=1", "http://heketi:8080/#x", "http://", "heketi:8080"):
        token = backend_token_for_url(url)
        assert url_from_backend_token(token) is None, url
        with pytest.raises(NotFound):
            parse_ref(f"hv1:{token}:{HID}", Kind.VOLUME)


def test_too_long_url_is_refused_with_advice():
    with pytest.raises(InvalidArgument, match="backends-file"):
        make_ref(Kind.VOLUME, backend_token_for_url("http://" + "h" * 120 + ":8080"), HID)


def test_volume_names_are_valid_heketi_names_stable_and_distinct():
    names = ["pvc-1b2c", "sanity-Controller Service CreateVolume should work-9A1", "x" * 300,
             "ünïcode/volume"]
    made = [volume_name(n) for n in names]
    assert all(HEKETI_NAME.match(m) for m in made)
    assert made == [volume_name(n) for n in names]
    assert len(set(made)) == len(made)
    assert all(len(m) <= 80 for m in made)
    # Names differing only in characters Heketi cannot hold still differ.
    assert volume_name("a b") != volume_name("a-b")


def test_prefix_and_pvc_metadata_give_the_in_tree_shape():
    name = volume_name("pvc-9", prefix="team1", pvc_namespace="ns", pvc_name="data")
    assert name.startswith("team1_ns_data_hcsi-")
    owned = parse_owned_name(name)
    assert owned is not None and owned.kind is Kind.VOLUME
    assert owned == parse_owned_name(volume_name("pvc-9"))


def test_snapshot_name_carries_source_and_creation_time():
    owned = parse_owned_name(snapshot_name("snapshot-1", HID, 1764100000))
    assert owned is not None
    assert owned.kind is Kind.SNAPSHOT
    assert owned.source_heketi_id == HID
    assert owned.created_unix == 1764100000


def test_foreign_volumes_are_not_ours():
    for name in ("vol_" + HID, "heketidbstorage", "csi_pvc-1", "my_hcsi-123"):
        assert parse_owned_name(name) is None


def test_a_volume_made_from_a_source_records_the_source_in_its_name():
    from services.controller.ids import content_digest

    digest = content_digest("hs1:default:" + HID)
    name = volume_name("pvc-9", prefix="team1", pvc_namespace="ns", pvc_name="data",
                       content=digest)
    assert HEKETI_NAME.match(name) and name.startswith("team1_ns_data_src-")
    owned = parse_owned_name(name)
    assert owned is not None and owned.kind is Kind.VOLUME and owned.content == digest
    assert owned.hash == parse_owned_name(volume_name("pvc-9")).hash  # type: ignore[union-attr]
    assert parse_owned_name(volume_name("pvc-9")).content is None  # type: ignore[union-attr]
    assert digest != content_digest("hv1:default:" + HID)
