"""StorageClass parameters: the in-tree `kubernetes.io/glusterfs` keys, validated.

Keys are matched case-insensitively, as the in-tree plugin did. `csi.storage.k8s.io/*` keys
belong to the sidecars and are dropped (the PVC name and namespace that
external-provisioner's --extra-create-metadata adds are read first, for volume naming).
Any other key is an error that names it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from services.common.errors import InvalidArgument
from services.common.logging import get_logger
from services.controller.heketi.types import DISPERSE_ALLOWED, Durability
from services.controller.heketi.urls import heketi_url

_log = get_logger("params")

SIDECAR_PREFIX = "csi.storage.k8s.io/"
GID_DEFAULT_MIN = 2000
GID_DEFAULT_MAX = 2**31 - 1
_PREFIX_OK = re.compile(r"^[a-zA-Z0-9-]+$")
_CLUSTER_ID = re.compile(r"^[0-9a-f]{32}$")

DEFAULT_DURABILITY = Durability.replicate(3)  # in-tree default: replicate:3

KNOWN_KEYS = (
    "resturl", "restuser", "restuserkey", "secretname", "secretnamespace", "restauthenabled",
    "clusterid", "gidmin", "gidmax", "volumetype", "volumeoptions", "volumenameprefix",
    "snapfactor", "customepnameprefix",
)


def describe(durability: Durability) -> str:
    """The StorageClass spelling (`volumetype`) of a durability."""
    if durability.type == "replicate":
        return f"replicate:{durability.replica}"
    if durability.type == "disperse":
        return f"disperse:{durability.data}:{durability.redundancy}"
    return "none"


@dataclass(frozen=True)
class VolumeParams:
    resturl: str | None = None
    restuser: str | None = None
    restuserkey: str | None = field(default=None, repr=False)
    clusters: tuple[str, ...] = ()
    gid_range: tuple[int, int] | None = None
    durability: Durability = DEFAULT_DURABILITY
    volume_options: tuple[str, ...] = ()
    name_prefix: str | None = None
    snap_factor: float = 1.0
    pvc_name: str | None = None
    pvc_namespace: str | None = None


def _int(key: str, value: str) -> int:
    try:
        number = int(value.strip())
    except ValueError:
        raise InvalidArgument(f"parameter {key}={value!r} is not a whole number") from None
    if not 0 <= number < GID_DEFAULT_MAX:
        raise InvalidArgument(
            f"parameter {key}={number} must be between 0 and {GID_DEFAULT_MAX - 1}")
    return number


def parse_durability(value: str) -> Durability:
    parts = [p.strip() for p in value.strip().lower().split(":")]
    kind = parts[0]
    try:
        if kind == "none" and len(parts) == 1:
            return Durability("none")
        if kind == "replicate" and len(parts) <= 2:
            replica = int(parts[1]) if len(parts) == 2 else 3
            if not 1 <= replica <= 3:
                raise InvalidArgument(
                    f"volumetype {value!r}: Heketi supports a replica count of 1 to 3")
            return Durability.replicate(replica)
        if kind == "disperse" and len(parts) == 3:
            data, redundancy = int(parts[1]), int(parts[2])
            if (data, redundancy) not in DISPERSE_ALLOWED:
                allowed = ", ".join(f"{d}:{r}" for d, r in sorted(DISPERSE_ALLOWED))
                raise InvalidArgument(
                    f"volumetype {value!r}: Heketi supports disperse {allowed}")
            return Durability.disperse(data, redundancy)
    except ValueError:
        pass
    raise InvalidArgument(
        f"volumetype {value!r} is not valid; use replicate:<n>, disperse:<data>:<redundancy> "
        "or none")


def parse_params(raw: Mapping[str, str]) -> VolumeParams:
    """Validate StorageClass parameters; raises InvalidArgument naming the first bad key."""
    values: dict[str, str] = {}
    pvc_name = pvc_namespace = None
    for key, value in raw.items():
        lower = key.lower()
        if lower.startswith(SIDECAR_PREFIX):
            if lower == SIDECAR_PREFIX + "pvc/name":
                pvc_name = value
            elif lower == SIDECAR_PREFIX + "pvc/namespace":
                pvc_namespace = value
            continue
        if lower not in KNOWN_KEYS:
            raise InvalidArgument(
                f"invalid StorageClass parameter {key!r}; known parameters: "
                + ", ".join(KNOWN_KEYS))
        if lower in values:
            raise InvalidArgument(f"parameter {key!r} is given twice (keys ignore case)")
        values[lower] = value

    if ("secretname" in values) != ("secretnamespace" in values):
        raise InvalidArgument("parameters secretName and secretNamespace go together: give both "
                              "or neither")
    if "secretname" in values:
        _log.info("secretName/secretNamespace accepted for compatibility; the key is read from "
                  "the request's secrets (csi.storage.k8s.io/provisioner-secret-*)")
    if "customepnameprefix" in values:
        _log.info("customepnameprefix is ignored: a CSI driver creates no Endpoints")

    resturl = values.get("resturl")
    if resturl is not None:
        resturl = heketi_url(resturl.strip(), "parameter resturl")
    restuser = values.get("restuser")
    restuserkey = values.get("restuserkey")
    auth = values.get("restauthenabled", "true").strip().lower()
    if auth not in ("true", "false"):
        raise InvalidArgument(f"parameter restauthenabled={auth!r} must be true or false")
    if auth == "false":
        restuser = restuserkey = None

    clusters: tuple[str, ...] = ()
    if values.get("clusterid", "").strip():
        clusters = tuple(c.strip() for c in values["clusterid"].split(",") if c.strip())
        for cluster in clusters:
            if not _CLUSTER_ID.match(cluster):
                raise InvalidArgument(
                    f"parameter clusterid: {cluster!r} is not a Heketi cluster id")

    gid_range = None
    if "gidmin" in values or "gidmax" in values:
        gid_min = _int("gidMin", values["gidmin"]) if "gidmin" in values else GID_DEFAULT_MIN
        gid_max = _int("gidMax", values["gidmax"]) if "gidmax" in values else GID_DEFAULT_MAX - 1
        if gid_min > gid_max:
            raise InvalidArgument(
                f"gidMin ({gid_min}) must not be greater than gidMax ({gid_max})")
        gid_range = (gid_min, gid_max)

    durability = DEFAULT_DURABILITY
    if "volumetype" in values:
        durability = parse_durability(values["volumetype"])

    options: tuple[str, ...] = ()
    if values.get("volumeoptions", "").strip():
        options = tuple(o.strip() for o in values["volumeoptions"].split(",") if o.strip())
        for option in options:
            if len(option.split()) != 2:
                raise InvalidArgument(
                    f"volumeoptions entry {option!r} must be '<gluster option> <value>'")

    prefix = values.get("volumenameprefix")
    if prefix is not None and not _PREFIX_OK.match(prefix):
        raise InvalidArgument(
            f"volumenameprefix {prefix!r} may hold only letters, digits and '-' (no '_')")

    snap_factor = 1.0
    if "snapfactor" in values:
        try:
            snap_factor = float(values["snapfactor"])
        except ValueError:
            raise InvalidArgument(
                f"snapfactor {values['snapfactor']!r} is not a number") from None
        if not (math.isfinite(snap_factor) and 1.0 <= snap_factor <= 100.0):
            raise InvalidArgument(f"snapfactor {snap_factor} must be between 1 and 100")

    return VolumeParams(
        resturl=resturl or None,
        restuser=restuser, restuserkey=restuserkey, clusters=clusters, gid_range=gid_range,
        durability=durability, volume_options=options, name_prefix=prefix,
        snap_factor=snap_factor, pvc_name=pvc_name, pvc_namespace=pvc_namespace,
    )
