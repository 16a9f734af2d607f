"""StorageClass parameters: in-tree keys, case-insensitive, everything else refused."""

from __future__ import annotations

import pytest

from services.common.errors import InvalidArgument
from services.controller.params import describe, parse_params

CLUSTER = "aa" * 16


def test_in_tree_keys_any_case_and_sidecar_keys_dropped():
    params = parse_params({
        "resturl": "http://heketi:8080/", "RestUser": "admin", "clusterID": CLUSTER,
        "gidMin": "3000", "gidMax": "3999", "volumetype": "disperse:4:2",
        "volumeoptions": "client.ssl on, server.ssl on", "volumenameprefix": "team-a",
        "snapfactor": "1.5", "customepnameprefix": "x",
        "csi.storage.k8s.io/provisioner-secret-name": "s",
        "csi.storage.k8s.io/pvc/name": "data", "csi.storage.k8s.io/pvc/namespace": "ns",
    })
    assert params.resturl == "http://heketi:8080"
    assert params.clusters == (CLUSTER,)
    assert params.gid_range == (3000, 3999)
    assert describe(params.durability) == "disperse:4:2"
    assert params.volume_options == ("client.ssl on", "server.ssl on")
    assert params.snap_factor == 1.5
    assert (params.pvc_namespace, params.pvc_name) == ("ns", "data")


def test_defaults_match_the_in_tree_plugin():
    params = parse_params({})
    assert describe(params.durability) == "replicate:3"
    assert params.snap_factor == 1.0
    assert params.gid_range is None


@pytest.mark.parametrize(("raw", "words"), [
    ({"colour": "blue"}, "'colour'"),
    ({"volumetype": "replicate:4"}, "replica"),
    ({"volumetype": "disperse:3:1"}, "disperse"),
    ({"volumetype": "mirror"}, "volumetype"),
    ({"gidMin": "5", "gidMax": "4"}, "gidMin"),
    ({"gidMin": "abc"}, "whole number"),
    ({"secretName": "x"}, "secretNamespace"),
    ({"volumenameprefix": "a_b"}, "'_'"),
    ({"snapfactor": "200"}, "snapfactor"),
    ({"snapfactor": "nan"}, "snapfactor"),
    ({"clusterid": "not-an-id"}, "clusterid"),
    ({"resturl": "heketi:8080"}, "resturl"),
    ({"restauthenabled": "maybe"}, "restauthenabled"),
    ({"volumeoptions": "justone"}, "volumeoptions"),
    ({"resturl": "http://a:1", "RESTURL": "http://b:1"}, "twice"),
])
def test_bad_parameters_are_named_in_the_error(raw, words):
    with pytest.raises(InvalidArgument, match=words):
        parse_params(raw)


def test_restauthenabled_false_drops_credentials():
    params = parse_params({"restuser": "u", "restuserkey": "k", "restauthenabled": "false"})
    assert params.restuser is None and params.restuserkey is None
    assert "k" not in repr(parse_params({"restuserkey": "k"}))


@pytest.mark.parametrize("url", [
    "http://admin:s3cret-pw@heketi:8080", "http://s3cret-pw@heketi:8080",
    "http://heketi:8080/?s3cret-pw=1", "http://heketi:8080/#s3cret-pw",
    "ftp://heketi:8080/s3cret-pw", "http:///s3cret-pw",
])
def test_resturl_with_credentials_query_or_another_scheme_is_refused_unechoed(url):
    with pytest.raises(InvalidArgument, match="resturl") as err:
        parse_params({"resturl": url})
    assert "s3cret-pw" not in err.value.message
