"""Size bounds on every field of every request, read from the message descriptors.

The RPC layer (`services.common.rpc`) checks each request here before anything reads it, so
no service needs checks of its own and a field added to a later csi.proto is bounded too.
A request over a bound is INVALID_ARGUMENT naming the field and the bound, never echoing
the value. Counts (map entries, repeated items) are checked before their items are looked
at, so a hostile request costs as much as the bounds allow, not as much as it holds; the
whole message is refused by its length prefix before its body is read (`receive_request`).

The bounds are generous: the CSI spec's own limits (128 bytes for ids and names, 4 KiB for
a map) with room for Kubernetes-made paths and for Secrets that carry more than the key.
"""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from grpclib.server import Stream

from services.common.errors import InvalidArgument

KIB = 1024
_TEXT = (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_BYTES)
_SHOWN_KEY = 64  # map keys up to this long are named in errors


@dataclass(frozen=True)
class Limits:
    string_bytes: int = 1 * KIB  # ids, names, tokens, node ids, fs types, mount flags
    path_bytes: int = 4 * KIB  # fields named *_path: PATH_MAX
    text_bytes: int = 4 * KIB  # free text a peer reports (the registration `error`)
    repeated_items: int = 256
    map_entries: int = 128
    map_key_bytes: int = 1 * KIB
    map_value_bytes: int = 4 * KIB
    map_bytes: int = 16 * KIB  # keys and values of one map together
    secret_value_bytes: int = 16 * KIB  # a Secret may hold more than the key (a CA bundle)
    secret_map_bytes: int = 64 * KIB
    request_bytes: int = 256 * KIB
    # The wire size of a message beyond which its body is not even read: larger than any
    # request the field bounds let through, so that those still name the field at fault.
    message_bytes: int = 4 * KIB * KIB


LIMITS = Limits()


def check_request(msg: Message, limits: Limits = LIMITS) -> None:
    """INVALID_ARGUMENT naming the first field of `msg` over its bound; None when all fit."""
    _check_message(msg, "", limits)
    size = msg.ByteSize()
    if size > limits.request_bytes:
        raise InvalidArgument(
            f"the request is {size} bytes; at most {limits.request_bytes} are allowed")


def _is_map(field: FieldDescriptor) -> bool:
    return field.message_type is not None and field.message_type.GetOptions().map_entry


def _string_limit(field: FieldDescriptor, limits: Limits) -> int:
    if field.name.endswith("_path"):
        return limits.path_bytes
    if field.name == "error":
        return limits.text_bytes
    return limits.string_bytes


def _size(value: str | bytes) -> int:
    # A str holds at most 4 UTF-8 bytes per character: count exactly only when it matters.
    if isinstance(value, bytes):
        return len(value)
    return len(value) if len(value) * 4 <= 64 * KIB else len(value.encode())


def _too_big(name: str, size: int, limit: int) -> InvalidArgument:
    return InvalidArgument(f"{name} is {size} bytes; at most {limit} are allowed")


def _check_message(msg: Message, prefix: str, limits: Limits) -> None:
    for field, value in msg.ListFields():
        name = prefix + field.name
        if _is_map(field):
            _check_map(field, value, name, limits)
        elif field.is_repeated:
            if len(value) > limits.repeated_items:
                raise InvalidArgument(f"{name} has {len(value)} items; at most "
                                      f"{limits.repeated_items} are allowed")
            for i, item in enumerate(value):
                _check_value(field, item, f"{name}[{i}]", limits)
        else:
            _check_value(field, value, name, limits)


def _check_value(field: FieldDescriptor, value: Any, name: str, limits: Limits) -> None:
    if field.message_type is not None:
        _check_message(value, name + ".", limits)
    elif field.type in _TEXT:
        limit = _string_limit(field, limits)
        size = _size(value)
        if size > limit:
            raise _too_big(name, size, limit)


def _check_map(field: FieldDescriptor, value: Any, name: str, limits: Limits) -> None:
    if len(value) > limits.map_entries:
        raise InvalidArgument(f"{name} has {len(value)} entries; at most "
                              f"{limits.map_entries} are allowed")
    secret = field.name == "secrets"
    value_limit = limits.secret_value_bytes if secret else limits.map_value_bytes
    total_limit = limits.secret_map_bytes if secret else limits.map_bytes
    entry_type = field.message_type
    assert entry_type is not None
    value_field = entry_type.fields_by_name["value"]
    total = 0
    for key, item in value.items():
        key_size = _size(key)
        if key_size > limits.map_key_bytes:
            raise InvalidArgument(f"{name}: a key of {key_size} bytes; at most "
                                  f"{limits.map_key_bytes} are allowed")
        entry = f"{name}[{key!r}]" if len(key) <= _SHOWN_KEY else f"{name}[<a key>]"
        entry = entry.replace("'", '"')
        if value_field.message_type is not None:
            _check_message(item, entry + ".", limits)
            continue
        item_size = _size(item)
        if item_size > value_limit:
            raise _too_big(entry, item_size, value_limit)
        total += key_size + item_size
    if total > total_limit:
        raise InvalidArgument(f"{name} holds {total} bytes; at most {total_limit} are allowed")


async def receive_request(stream: Stream[Any, Any], limit: int = LIMITS.message_bytes) -> Any:
    """The request message of a unary call, refused by its length prefix when it announces
    more than `limit` bytes, before the body is read.

    grpclib has no receive limit: it reads whatever a message's prefix announces, and a
    gigabyte takes seconds of the event loop. This mirrors `grpclib.server.Stream.recv_message`
    (grpclib < 0.5, pinned) with the check between prefix and body; the refusal is sent as the
    call's status and the unread rest of the stream is reset by grpclib.
    """
    raw = stream._stream
    prefix = await raw.recv_data(5)
    if len(prefix) < 5:
        raise InvalidArgument("the call carries no request message")
    compressed, size = struct.unpack(">?I", prefix)
    if compressed:
        raise InvalidArgument("compressed requests are not supported")
    if size > limit:
        raise InvalidArgument(f"the request message is {size} bytes; at most {limit} are "
                              "accepted")
    message = stream._codec.decode(await raw.recv_data(size), stream._recv_type)
    (message,) = await stream._dispatch.recv_message(message)
    stream._messages_received += 1
    raw.connection.messages_received += 1
    raw.connection.last_message_received = time.monotonic()
    return message
