"""Volume and snapshot ids, and the Heketi volume names derived from CSI names.

Heketi stores no free-form metadata, so everything the driver must know later is carried in
one of two places:

* the CSI id, which names the backend and the Heketi volume:
  `hv1:<backend>:<heketi-id>` for volumes, `hs1:<backend>:<heketi-id>` for snapshots;
  `<backend>` is a configured backend's name, or `@` + the base64url of a Heketi URL that
  came from StorageClass parameters. Ids are at most 128 bytes.
* adopted volumes (made by the in-tree plugin, taken over by `heketi-csi migrate apply`)
  keep their Heketi name, which lacks our marker; their id says they are adopted and carries
  the adoption mark: `ha1:<backend>:<heketi-id>:<mark>`, the mark being an HMAC-SHA256 of the
  Heketi id keyed with that Heketi's key (first 20 hex digits). Only the holder of the key
  (the migrate command, or anyone who could delete through Heketi directly) can write a mark
  the controller accepts for DeleteVolume, so "destroy only what is ours" holds for adopted
  volumes too. A wrong mark only blocks deletion; publish, expand, snapshot and clone work.
* the Heketi volume name, which marks the volume as ours and carries the hash of the CSI name
  (the key of the name index), and for snapshots also the source volume and creation time:
  volume:   `<prefix>_<label>_hcsi-<hash>`, or for a volume made from a snapshot or another
            volume `<prefix>_<label>_src-<digest of the source's id>_hcsi-<hash>`, so that a
            retry naming another content source is told apart
  snapshot: `snap_<source-heketi-id>_<unix-seconds>_hcss-<hash>`
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from dataclasses import dataclass
from enum import Enum

from services.common.errors import InvalidArgument, NotFound
from services.controller.heketi.urls import url_problem

MAX_ID_BYTES = 128
_HASH_HEX = 20
_HEKETI_ID = re.compile(r"^[0-9a-f]{32}$")
_BACKEND_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")
_LABEL_UNSAFE = re.compile(r"[^a-zA-Z0-9-]+")
_OURS = re.compile(rf"_(hcsi|hcss)-([0-9a-f]{{{_HASH_HEX}}})$")
_SNAPSHOT_NAME = re.compile(
    rf"^snap_(?P<source>[0-9a-f]{{32}})_(?P<created>[0-9]{{1,12}})"
    rf"_hcss-(?P<hash>[0-9a-f]{{{_HASH_HEX}}})$"
)
_CONTENT_HEX = 12
_CONTENT = re.compile(rf"_src-([0-9a-f]{{{_CONTENT_HEX}}})_hcsi-[0-9a-f]{{{_HASH_HEX}}}$")
DEFAULT_PREFIX = "csi"
_LABEL_MAX = 40
ADOPTED_VOLUME = "ha1"
_MARK_HEX = 20
_MARK = re.compile(rf"^[0-9a-f]{{{_MARK_HEX}}}$")
_MARK_CONTEXT = b"heketi-csi adopted volume v1\0"


class Kind(Enum):
    VOLUME = "hv1"
    SNAPSHOT = "hs1"


@dataclass(frozen=True)
class ObjectRef:
    """What a CSI volume or snapshot id says: which backend, which Heketi volume."""

    kind: Kind
    backend: str  # backend token: a configured name or "@<base64url of URL>"
    heketi_id: str
    mark: str | None = None  # adopted volumes only: the adoption mark

    @property
    def adopted(self) -> bool:
        return self.mark is not None

    def encode(self) -> str:
        if self.mark is not None:
            return f"{ADOPTED_VOLUME}:{self.backend}:{self.heketi_id}:{self.mark}"
        return f"{self.kind.value}:{self.backend}:{self.heketi_id}"


def adoption_mark(key: str | None, heketi_id: str) -> str:
    """The mark that makes an adopted volume's id deletable: keyed with the Heketi key."""
    digest = hmac.new((key or "").encode(), _MARK_CONTEXT + heketi_id.encode(), hashlib.sha256)
    return digest.hexdigest()[:_MARK_HEX]


def mark_matches(ref: ObjectRef, key: str | None) -> bool:
    return ref.mark is not None and hmac.compare_digest(ref.mark, adoption_mark(key, ref.heketi_id))


def backend_token_for_url(url: str) -> str:
    return "@" + base64.urlsafe_b64encode(url.encode()).decode().rstrip("=")


def url_from_backend_token(token: str) -> str | None:
    """The Heketi URL an ad-hoc backend token carries; None for a configured name, and for
    anything that is not a URL the driver would accept from a StorageClass."""
    if not token.startswith("@"):
        return None
    raw = token[1:]
    try:
        url = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    return None if url_problem(url) else url


def validate_backend_name(name: str) -> str:
    if not _BACKEND_NAME.match(name):
        raise InvalidArgument(
            f"backend name {name!r} must be 1-40 characters of a-z, 0-9 and '-', "
            "starting with a letter or digit"
        )
    return name


def make_ref(kind: Kind, backend: str, heketi_id: str, mark: str | None = None) -> ObjectRef:
    ref = ObjectRef(kind, backend, heketi_id, mark)
    if len(ref.encode()) > MAX_ID_BYTES:
        raise InvalidArgument(
            "the Heketi URL is too long to be carried in a volume id; configure it as a named "
            "backend (--backends-file) and reference that instead"
        )
    return ref


def parse_ref(value: str, kind: Kind) -> ObjectRef:
    """Parse an id of the given kind; anything else is NOT_FOUND (it cannot be one of ours)."""
    what = "volume" if kind is Kind.VOLUME else "snapshot"
    parts = value.split(":")
    mark = None
    if kind is Kind.VOLUME and len(parts) == 4 and parts[0] == ADOPTED_VOLUME \
            and _MARK.match(parts[3]):
        mark = parts.pop()
    elif len(parts) != 3 or parts[0] != kind.value:
        raise NotFound(f"{what} {value!r} does not exist (not a heketi-csi {what} id)")
    if not _HEKETI_ID.match(parts[2]):
        raise NotFound(f"{what} {value!r} does not exist (not a heketi-csi {what} id)")
    backend = parts[1]
    if not (_BACKEND_NAME.match(backend) or url_from_backend_token(backend)):
        raise NotFound(f"{what} {value!r} does not exist (unknown backend in id)")
    return ObjectRef(kind, backend, parts[2], mark)


def name_hash(csi_name: str, kind: Kind) -> str:
    """The index key of a CSI name: stable, and different for volumes and snapshots."""
    digest = hashlib.sha256(f"{kind.value}\0{csi_name}".encode()).hexdigest()
    return digest[:_HASH_HEX]


def content_digest(source_id: str) -> str:
    """What a volume's Heketi name records of its content source (the source's CSI id)."""
    return hashlib.sha256(f"content\0{source_id}".encode()).hexdigest()[:_CONTENT_HEX]


def _label(text: str) -> str:
    return _LABEL_UNSAFE.sub("-", text).strip("-")[:_LABEL_MAX].strip("-") or "x"


def volume_name(
    csi_name: str,
    prefix: str | None = None,
    pvc_namespace: str | None = None,
    pvc_name: str | None = None,
    content: str | None = None,
) -> str:
    """The Heketi volume name for a CSI volume name (`content`: the `content_digest` of the
    volume's content source, if it has one).

    With a `volumenameprefix` and the PVC's name and namespace (external-provisioner's
    --extra-create-metadata), the name keeps the in-tree shape `<prefix>_<ns>_<pvc>_...`.
    """
    hashed = name_hash(csi_name, Kind.VOLUME)
    if prefix and pvc_namespace and pvc_name:
        middle = f"{_label(pvc_namespace)}_{_label(pvc_name)}"
    else:
        middle = _label(csi_name)
    source = f"_src-{content}" if content else ""
    return f"{prefix or DEFAULT_PREFIX}_{middle}{source}_hcsi-{hashed}"


def snapshot_name(csi_name: str, source_heketi_id: str, created_unix: int) -> str:
    return f"snap_{source_heketi_id}_{created_unix}_hcss-{name_hash(csi_name, Kind.SNAPSHOT)}"


@dataclass(frozen=True)
class OwnedName:
    """What a Heketi volume name of ours says about itself."""

    kind: Kind
    hash: str
    source_heketi_id: str | None = None  # snapshots only
    created_unix: int | None = None  # snapshots only
    content: str | None = None  # volumes made from a snapshot or volume: `content_digest`


def parse_owned_name(name: str) -> OwnedName | None:
    """None for a volume this driver did not create."""
    match = _OURS.search(name)
    if match is None:
        return None
    if match.group(1) == "hcsi":
        content = _CONTENT.search(name)
        return OwnedName(Kind.VOLUME, match.group(2),
                         content=content.group(1) if content else None)
    snap = _SNAPSHOT_NAME.match(name)
    if snap is None:
        return None
    return OwnedName(Kind.SNAPSHOT, snap.group("hash"), snap.group("source"),
                     int(snap.group("created")))
