"""Lexical validation of the staging and target paths kubelet sends.

A path is accepted only when it is absolute, already normalized (no `.`/`..` parts, no
doubled or trailing slash) and lies strictly below the configured kubelet root. Anything
else is INVALID_ARGUMENT. This says nothing about where the path leads through symbolic
links: `boundary` resolves it, component by component, before anything is done there.

Staging and target paths must moreover have the shapes kubelet gives them (pkg/volume/csi),
so that no request mounts over, or unmounts, anything else below the root (kubelet's `pods`
directory, a pod's own directory, another plugin's files), and a staging path is never taken
for a target or the other way round:

- target: `<root>/pods/<pod-uid>/volumes/kubernetes.io~csi/<pv-name>/mount`;
- staging: `<root>/plugins/kubernetes.io/csi/<driver>/<sha256 of the volume id>/globalmount`,
  or, from older kubelets, `<root>/plugins/kubernetes.io/csi/pv/<pv-name>/globalmount`.
"""

from __future__ import annotations

import posixpath
import re

from services.common.errors import InvalidArgument

# The gluster mount helper is a shell script that splits its arguments on whitespace and
# expands globs; a staging path must not contain anything it would misread.
_HELPER_SAFE = re.compile(r"[A-Za-z0-9._~@%+:=/-]+")
_SHA256 = re.compile(r"[0-9a-f]{64}")
TARGET_SHAPE = "<kubelet root>/pods/<pod-uid>/volumes/kubernetes.io~csi/<pv-name>/mount"
STAGING_SHAPE = (
    "<kubelet root>/plugins/kubernetes.io/csi/<driver>/<sha256>/globalmount "
    "(or .../csi/pv/<pv-name>/globalmount)"
)


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


def _parts(path: str, root: str) -> list[str]:
    return path[len(root) :].strip("/").split("/")


def is_target_shaped(path: str, root: str) -> bool:
    """Whether `path` (valid and below `root`) has the shape of a kubelet target path."""
    parts = _parts(path, root)
    return (
        len(parts) == 6
        and parts[0] == "pods"
        and parts[2:4] == ["volumes", "kubernetes.io~csi"]
        and parts[5] == "mount"
    )


def is_staging_shaped(path: str, root: str, driver: str) -> bool:
    """Whether `path` (valid and below `root`) has the shape of a kubelet staging path of
    `driver`'s volumes."""
    parts = _parts(path, root)
    if len(parts) != 6 or parts[:3] != ["plugins", "kubernetes.io", "csi"]:
        return False
    if parts[5] != "globalmount":
        return False
    return (parts[3] == driver and bool(_SHA256.fullmatch(parts[4]))) or parts[3] == "pv"


def validate_target(path: str, field: str, kubelet_root: str, driver: str) -> str:
    """`path` if it is a kubelet target path (`validate`, then its shape), else
    InvalidArgument naming `field`."""
    validate(path, field, kubelet_root)
    if is_target_shaped(path, kubelet_root):
        return path
    if is_staging_shaped(path, kubelet_root, driver):
        raise InvalidArgument(f"{field} {path!r} is a staging path, not a target path")
    raise InvalidArgument(f"{field} {path!r} is not a kubelet target path ({TARGET_SHAPE})")


def validate_staging(path: str, field: str, kubelet_root: str, driver: str) -> str:
    """`path` if it is a kubelet staging path of `driver` (`validate`, then its shape), else
    InvalidArgument naming `field`."""
    validate(path, field, kubelet_root)
    if is_staging_shaped(path, kubelet_root, driver):
        return path
    if is_target_shaped(path, kubelet_root):
        raise InvalidArgument(f"{field} {path!r} is a target path, not a staging path")
    raise InvalidArgument(
        f"{field} {path!r} is not a kubelet staging path of driver {driver} ({STAGING_SHAPE})"
    )
