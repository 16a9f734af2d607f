"""Secret redaction driven by the `csi_secret` field option of csi.proto.

Which fields are secret is read from the message descriptors, not from a list kept here, so
a field marked secret in a later spec version is redacted without a change to this module.
Free-form maps (StorageClass parameters, contexts) can carry keys too, as the in-tree
`restuserkey` does: an entry whose key names a key, password, token or secret is redacted
in every map. Any string (field, list item, map key or value) holding a URL has the URL's
user info, query and fragment replaced (`http://***@host/path?***#***`): a `resturl` the
driver refuses is logged before it is refused.
"""

from __future__ import annotations

import re
from functools import cache
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

from services.common.proto import csi_pb2

REDACTED = "***"
# Map keys whose values are credentials: `restuserkey`, `key`, `adminPassword`, `token`...
# (matched on the last path segment, so `csi.storage.k8s.io/provisioner-secret-name` is kept).
_CREDENTIAL_KEY = re.compile(r"(key|password|passwd|token|secret|credentials?)\d*$", re.I)
# A URL in a string: a scheme, `://`, then everything up to white space.
_URL = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)(\S*)")


def _url_redacted(match: re.Match[str]) -> str:
    scheme, rest = match.group(1), match.group(2)
    at = rest.rfind("@")  # the last `@`: a password may hold `/`, `?` or `#` unencoded
    shown = scheme + ("***@" if at >= 0 else "")
    rest = rest[at + 1 :]
    query, fragment = rest.find("?"), rest.find("#")
    cut = min((i for i in (query, fragment) if i >= 0), default=len(rest))
    shown += rest[:cut]
    if 0 <= query == cut:
        shown += "?***"
    if fragment >= 0:
        shown += "#***"
    return shown


def redact_urls(text: str) -> str:
    """`text` with the user info, query and fragment of every URL in it replaced."""
    return _URL.sub(_url_redacted, text) if "://" in text else text


@cache
def _is_secret(field: FieldDescriptor) -> bool:
    options = field.GetOptions()
    return bool(options.HasExtension(csi_pb2.csi_secret) and
                options.Extensions[csi_pb2.csi_secret])


def _is_map(field: FieldDescriptor) -> bool:
    mt = field.message_type
    return mt is not None and mt.GetOptions().map_entry


def _scrub_map(value: Any) -> None:
    """Redact the URLs in a map of strings (keys and values); the value of a key that names
    a credential is replaced."""
    for key in list(value):
        if (clean := redact_urls(key)) != key:
            value[clean] = value.pop(key)
            key = clean
        if _CREDENTIAL_KEY.search(str(key).rsplit("/", 1)[-1]):
            value[key] = REDACTED
        else:
            value[key] = redact_urls(value[key])


def _scrub(msg: Message) -> None:
    for field, value in msg.ListFields():
        if _is_secret(field):
            if _is_map(field):
                for key in list(value):
                    value[key] = REDACTED
            elif field.type == FieldDescriptor.TYPE_STRING:
                setattr(msg, field.name, REDACTED)
            else:
                msg.ClearField(field.name)
        elif field.type == FieldDescriptor.TYPE_STRING:
            if field.is_repeated:
                value[:] = [redact_urls(item) for item in value]
            else:
                setattr(msg, field.name, redact_urls(value))
        elif field.message_type is None:
            continue
        elif _is_map(field):
            value_field = field.message_type.fields_by_name["value"]
            if value_field.message_type is not None:
                for key in value:
                    _scrub(value[key])
            elif value_field.type == FieldDescriptor.TYPE_STRING:
                _scrub_map(value)
        elif field.is_repeated:
            for item in value:
                _scrub(item)
        else:
            _scrub(value)


def redacted(msg: Message) -> Message:
    """A copy of `msg` with every secret field's value replaced."""
    copy = type(msg)()
    copy.CopyFrom(msg)
    _scrub(copy)
    return copy


def redacted_dict(msg: Message) -> dict[str, Any]:
    """A loggable dict of `msg`, secrets replaced."""
    return MessageToDict(redacted(msg), preserving_proto_field_name=True)
