"""Lexical validation of the staging and target paths kubelet sends.

A path is accepted only when it is absolute, already normalized (no `.`/`..` parts, no
doubled or trailing slash) and lies strictly below the configured kubelet root. Anything
else is INVALID_ARGUMENT. This says nothing about where the path leads through symbolic
links: `boundary` resolves it, component by component, before anything is done there.
"""

from __future__ import annotations

import posixpath
import re

from services.common.errors import InvalidArgument

# The gluster mount helper is a shell script that splits its arguments on whitespace and
# expands globs; a staging path must not contain anything it would misread.
_HELPER_SAFE = re.compile(r"[A-Za-z0-9._~@%+:=/-]+")


def normalize_root(root: str) -> str:
    """The kubelet root as given on the command line, checked and normalized."""
    if not root or not root.startswith("/"):
        raise ValueError(f"kubelet root {root!r} must be an absolute path")
    return posixpath.normpath(root)


def validate(path: str, field: str, kubelet_root: str) -> str:
    """Return `path` if acceptable as request field `field`, else raise InvalidArgument."""
    if not path:
        raise InvalidArgument(f"{field} is required")
    if "\0" in path or "\n" in path:
        raise InvalidArgument(f"{field} contains a NUL or newline character")
    if not path.startswith("/"):
        raise InvalidArgument(f"{field} {path!r} must be an absolute path")
    if posixpath.normpath(path) != path or path.startswith("//"):
        raise InvalidArgument(
            f"{field} {path!r} is not normalized (no '.', '..', '//' or trailing '/')"
        )
    prefix = kubelet_root if kubelet_root.endswith("/") else kubelet_root + "/"
    if not path.startswith(prefix):
        raise InvalidArgument(f"{field} {path!r} is not below the kubelet root {kubelet_root}")
    return path


def validate_for_helper(path: str, field: str) -> str:
    """Also refuse characters the gluster mount helper cannot pass on safely."""
    if not _HELPER_SAFE.fullmatch(path):
        raise InvalidArgument(
            f"{field} {path!r} contains characters the glusterfs mount helper cannot handle "
            "(allowed: letters, digits and ._~@%+:=/-)"
        )
    return path
