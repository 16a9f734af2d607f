"""The project's exceptions and the one table that turns them into gRPC status codes.

Code anywhere in the driver raises one of the classes below (or a subclass, such as the
Heketi client's errors). The RPC layer (`services.common.rpc`) is the only place that turns
an exception into a gRPC status, through `status_for`.
"""

from __future__ import annotations

from grpclib.const import Status

# The longest status message the driver sends. A message travels in an HTTP/2 header, whose
# HPACK encoding costs time quadratic in its length (a 1 MB message took minutes of CPU) and
# which clients refuse beyond their header limit; a message quoting a caller's input could
# otherwise be as long as that input.
MAX_MESSAGE_BYTES = 1024

class DriverError(Exception):
    """Base of every error the driver means to report to its caller.

    The message is shown to the caller as it is: it must never contain a secret.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(DriverError):
    """The request is malformed or names something that cannot be right."""


class NotFound(DriverError):
    """The volume, snapshot, node or path named does not exist."""


class AlreadyExists(DriverError):
    """Something of that name exists but differs from what was asked."""


class ResourceExhausted(DriverError):
    """The backend has no room for what was asked."""


class Aborted(DriverError):
    """An operation on the same object is in progress; retry later."""


class Unavailable(DriverError):
    """The backend cannot be reached or refuses work for now; retry later."""


class DeadlineExceeded(DriverError):
    """An external call did not finish within its deadline."""


class FailedPrecondition(DriverError):
    """The object is not in a state that allows the operation."""


class OutOfRange(DriverError):
    """A size or count lies outside what can be served."""


class Unauthenticated(DriverError):
    """The backend rejected the credentials."""


class PermissionDenied(DriverError):
    """The credentials are valid but may not perform this operation."""


class Unimplemented(DriverError):
    """The driver does not (yet) provide this operation."""


class Internal(DriverError):
    """Something inside the driver or backend went wrong; the message says what."""


# The one table: exception class -> gRPC status. Order matters only for subclasses of
# each other, and none of these are; lookup walks the exception's MRO.
_STATUS_BY_CLASS: dict[type[DriverError], Status] = {
    InvalidArgument: Status.INVALID_ARGUMENT,
    NotFound: Status.NOT_FOUND,
    AlreadyExists: Status.ALREADY_EXISTS,
    ResourceExhausted: Status.RESOURCE_EXHAUSTED,
    Aborted: Status.ABORTED,
    Unavailable: Status.UNAVAILABLE,
    DeadlineExceeded: Status.DEADLINE_EXCEEDED,
    FailedPrecondition: Status.FAILED_PRECONDITION,
    OutOfRange: Status.OUT_OF_RANGE,
    Unauthenticated: Status.UNAUTHENTICATED,
    PermissionDenied: Status.PERMISSION_DENIED,
    Unimplemented: Status.UNIMPLEMENTED,
    Internal: Status.INTERNAL,
}


def clip_message(text: str, limit: int = MAX_MESSAGE_BYTES) -> str:
    """`text`, cut to at most `limit` UTF-8 bytes (on a character boundary, ending `...`)."""
    if len(text) * 4 <= limit:
        return text
    raw = text.encode()
    if len(raw) <= limit:
        return text
    return raw[: limit - 3].decode(errors="ignore") + "..."


def status_for(exc: BaseException, request_id: str) -> tuple[Status, str]:
    """Return the gRPC status and message for an exception raised while serving an RPC.

    Driver errors keep their message, clipped to MAX_MESSAGE_BYTES. Anything else is an
    unexpected failure: the caller gets INTERNAL with the request id (to find the traceback
    in the log), never the exception text, which could carry a secret or internal detail.
    """
    if isinstance(exc, DriverError):
        for cls in type(exc).__mro__:
            status = _STATUS_BY_CLASS.get(cls)
            if status is not None:
                return status, clip_message(exc.message)
    if isinstance(exc, TimeoutError):
        return Status.DEADLINE_EXCEEDED, f"operation timed out (request {request_id})"
    return Status.INTERNAL, f"internal error (request {request_id}); see the driver log"
