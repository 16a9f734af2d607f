"""Secret redaction driven by the `csi_secret` field option of csi.proto.

Which fields are secret is read from the message descriptors, not from a list kept here, so
a field marked secret in a later spec version is redacted without a change to this module.
Free-form maps (StorageClass parameters, contexts) can carry keys too, as the in-tree
`restuserkey` does: an entry whose key names a key, password, token or secret is redacted
in every map. Any string (field, list item, map key or value) holding a URL has the URL's
user info, query and fragment replaced (`http://***@host/path?***#***`): a `resturl` the
driver refuses is logged before it is refused.

Answers get the same care in the other direction: `credentials_in` collects every credential
a request carries (its secret fields, credential-keyed map entries, the user info, query and
fragment of its URLs), and `without_credentials` takes them out of an answer or an error text,
so that no RPC can echo a caller's credential back, whatever field it copies.
"""

from __future__ import annotations

import re
from functools import cache
from typing import Any, TypeVar

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

from services.common.proto import csi_pb2

REDACTED = "***"
M = TypeVar("M", bound=Message)
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


def is_credential_key(key: str) -> bool:
    """Whether a free-form map entry with this key holds a credential (`restuserkey`, `key`,
    `adminPassword`...); the last `/` segment is what counts."""
    return bool(_CREDENTIAL_KEY.search(key.rsplit("/", 1)[-1]))


def _scrub_map(value: Any) -> None:
    """Redact the URLs in a map of strings (keys and values); the value of a key that names
    a credential is replaced."""
    for key in list(value):
        if (clean := redact_urls(key)) != key:
            value[clean] = value.pop(key)
            key = clean
        if is_credential_key(str(key)):
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


# A credential shorter than this is not searched for in answers: replacing every "admin" of
# an answer because a caller sent that as a key would garble names and hide next to nothing.
MIN_CREDENTIAL_LEN = 8
# Entries of a secret map that name a user, not a credential: an answer may well hold the same
# word (a PVC named after its user), and taking it out would break the answer.
_USER_KEYS = frozenset({"user", "username", "userid", "restuser", "login"})


def _url_credentials(text: str, found: set[str]) -> None:
    for match in _URL.finditer(text):
        rest = match.group(2)
        at = rest.rfind("@")
        if at >= 0:
            userinfo = rest[:at]
            found.add(userinfo)
            found.update(userinfo.split(":", 1))
            rest = rest[at + 1 :]
        for mark in ("?", "#"):
            if mark in rest:
                found.add(rest.split(mark, 1)[1])


def _collect(msg: Message, found: set[str]) -> None:
    for field, value in msg.ListFields():
        if field.message_type is None:
            if field.type != FieldDescriptor.TYPE_STRING:
                continue
            items = list(value) if field.is_repeated else [value]
            if _is_secret(field):
                found.update(items)
            for item in items:
                _url_credentials(item, found)
        elif _is_map(field):
            value_field = field.message_type.fields_by_name["value"]
            if value_field.message_type is not None:
                for item in value.values():
                    _collect(item, found)
                continue
            if value_field.type != FieldDescriptor.TYPE_STRING:
                continue
            for key, item in value.items():
                last = str(key).rsplit("/", 1)[-1].lower()
                if (_is_secret(field) and last not in _USER_KEYS) or is_credential_key(str(key)):
                    found.add(item)
                _url_credentials(str(key), found)
                _url_credentials(item, found)
        elif field.is_repeated:
            for item in value:
                _collect(item, found)
        else:
            _collect(value, found)


def credentials_in(msg: Message) -> frozenset[str]:
    """Every credential `msg` carries that is long enough to be searched for in an answer."""
    found: set[str] = set()
    _collect(msg, found)
    return frozenset(c for c in found if len(c) >= MIN_CREDENTIAL_LEN)


def text_without(text: str, credentials: frozenset[str]) -> str:
    """`text` with every occurrence of the credentials (longest first) replaced, and the user
    info, query and fragment of its URLs redacted."""
    for credential in sorted(credentials, key=len, reverse=True):
        if credential in text:
            text = text.replace(credential, REDACTED)
    return redact_urls(text)


def _strip(msg: Message, credentials: frozenset[str]) -> None:
    for field, value in msg.ListFields():
        if field.message_type is None:
            if field.type != FieldDescriptor.TYPE_STRING:
                continue
            if field.is_repeated:
                value[:] = [text_without(item, credentials) for item in value]
            else:
                setattr(msg, field.name, text_without(value, credentials))
        elif _is_map(field):
            value_field = field.message_type.fields_by_name["value"]
            if value_field.message_type is not None:
                for item in value.values():
                    _strip(item, credentials)
                continue
            if value_field.type != FieldDescriptor.TYPE_STRING:
                continue
            entries = dict(value)
            value.clear()
            for key, item in entries.items():
                if text_without(key, credentials) == key:  # a key holding one is dropped
                    value[key] = text_without(item, credentials)
        elif field.is_repeated:
            for item in value:
                _strip(item, credentials)
        else:
            _strip(value, credentials)


def without_credentials(answer: M, credentials: frozenset[str]) -> M | None:
    """None when `answer` carries none of `credentials`; otherwise a copy without them (their
    text replaced; a map entry whose key holds one dropped)."""
    if not credentials:
        return None
    raw = answer.SerializeToString()
    if not any(c.encode() in raw for c in credentials):
        return None
    copy = type(answer)()
    copy.CopyFrom(answer)
    _strip(copy, credentials)
    return copy
