"""The Heketi client's exceptions, and the one place that turns a Heketi answer into one.

Every class subclasses an error of `services.common.errors`, so the RPC layer maps it to the
right gRPC code without knowing about Heketi. Messages say which backend answered and what
Heketi said; they never carry a key or a token (Heketi's own texts contain neither).
"""

from __future__ import annotations

from services.common.errors import (
    Aborted,
    AlreadyExists,
    DeadlineExceeded,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)

# Heketi's answers can be long (a multi-cluster error lists every cluster); keep messages
# readable in a log line and in a gRPC status.
_MAX_TEXT = 600


class HeketiNotFound(NotFound):
    """The volume, cluster, node, device or queue entry does not exist (HTTP 404)."""


class HeketiNameInUse(AlreadyExists):
    """A volume of that name exists in the cluster (`Volume name '<n>' already in use`)."""


class HeketiNoSpace(ResourceExhausted):
    """No room for the volume: `No space`, or the cluster's volume-count limit."""


class HeketiBadRequest(InvalidArgument):
    """Heketi refused the request as malformed (HTTP 400/422), or the client did first."""


class HeketiAuthError(Unauthenticated):
    """Heketi rejected the token (HTTP 401): wrong key, clock skew, missing token."""


class HeketiAdminRequired(PermissionDenied):
    """The operation needs the admin key; a user-level key is configured."""


class HeketiConflict(FailedPrecondition):
    """Heketi refuses because of the object's state (HTTP 409)."""


class HeketiBusy(Aborted):
    """Another operation on the same object is still running; retry later."""


class HeketiUnavailable(Unavailable):
    """Heketi cannot be reached, is in maintenance, failed with 5xx or throttled too long, or
    gave an answer Heketi never gives (a proxy in front of it?): worth a retry."""


class HeketiThrottled(HeketiUnavailable):
    """Heketi kept answering 429 after the client's bounded retries."""


class HeketiMaintenance(HeketiUnavailable):
    """Heketi is in a read-only admin state (503 `Service disabled for maintenance`)."""


class HeketiResultLost(HeketiUnavailable):
    """The outcome of an asynchronous operation could not be read.

    Heketi hands out a finished result once; when the connection drops while it is being
    read (or the queue entry is gone), polling again cannot tell what happened. The
    operation may well have succeeded: the caller recovers by looking the object up (a
    volume by its name), never by polling `op_id` again.
    """

    def __init__(self, message: str, *, op_id: str, location: str | None = None) -> None:
        super().__init__(message)
        self.op_id = op_id
        # The object's path when the 303 was read but the object itself could not be.
        self.location = location


class HeketiServerDown(HeketiUnavailable):
    """A GlusterFS server the operation needs is down; it succeeds once the server is back."""


_SERVER_DOWN_TEXTS = ("Some of the peers are down", "not connected", "no hosts available",
                      "Commit failed on ", "Staging failed on ")


class HeketiTimeout(DeadlineExceeded):
    """One HTTP request to Heketi did not finish within the client's deadline."""


class HeketiOperationFailed(Internal):
    """Heketi reported a failure (HTTP 500) that no more specific class describes."""


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MAX_TEXT else text[: _MAX_TEXT - 3] + "..."


def error_for(backend: str, what: str, status: int, text: str) -> Exception:
    """The exception for an HTTP error answer (or a failed queue entry) from Heketi.

    `what` names the operation ("create volume", "GET /volumes/<id>"); `text` is Heketi's
    plain-text body. Heketi reports most failures as 500 with a text, so the text decides.
    A status Heketi does not send is UNAVAILABLE, never INVALID_ARGUMENT: the provisioner
    takes INVALID_ARGUMENT as final, and the request may well have been sound.
    """
    said = _clip(text) or "(no text)"
    message = f"Heketi backend {backend!r}: {what} failed: HTTP {status}: {said}"
    if status == 401:
        if "Administrator access required" in text:
            return HeketiAdminRequired(message)
        return HeketiAuthError(message)
    if status == 404:
        return HeketiNotFound(message)
    if status in (400, 422):
        return HeketiBadRequest(message)
    if status == 409:
        return HeketiConflict(message)
    if status == 429:
        return HeketiThrottled(message)
    if status == 503:
        if "maintenance" in text:
            return HeketiMaintenance(message)
        return HeketiUnavailable(message)
    if status == 500:
        return _error_for_500(message, text)
    return HeketiUnavailable(message)


def _error_for_500(message: str, text: str) -> Exception:
    # Texts as Heketi v10 words them (apps/glusterfs/errors.go and volume_entry.go).
    if "already in use" in text:
        return HeketiNameInUse(message)
    # An expansion that does not fit: `Failed to allocate volume expansion: Maximum number
    # of bricks reached.` (Heketi says `No space` only for a create).
    if ("No space" in text or "Out of space" in text or "volumes and limit is" in text
            or "Maximum number of bricks reached" in text):
        return HeketiNoSpace(message)
    if "contains other items, or is in use" in text:
        return HeketiBusy(message)
    if "Server handling too many operations" in text:
        return HeketiThrottled(message)
    # A GlusterFS server of the volume's cluster is down: gluster refuses a volume delete
    # while any peer is (`volume delete: <name>: failed: Some of the peers are down`), a
    # create with a brick there (`... failed: Host <host> not connected`), and Heketi finds
    # no node to run a command on (`no hosts available (<n> total)`); in the first seconds
    # after a server went away, before its peers noticed, gluster says `Commit failed on
    # <server>. Please check log file for details.` (seen on our pool; `Staging failed on`
    # is the same for the transaction's first phase). All pass when the server is back:
    # retryable, never INTERNAL (the provisioner keeps the PV and retries).
    if any(words in text for words in _SERVER_DOWN_TEXTS):
        return HeketiServerDown(message)
    return HeketiOperationFailed(message)
