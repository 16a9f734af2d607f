"""The Heketi URLs the driver accepts: `http(s)://host[:port][/path]` and nothing more.

A URL reaches the driver from its configuration, from StorageClass parameters (`resturl`),
and back again inside volume ids, logs, errors and metric labels. So a URL that carries a
user and password, a query string or a fragment is refused wherever it comes from, and the
refusal never quotes it (it may hold a credential).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from services.common.errors import InvalidArgument


def url_problem(url: str) -> str | None:
    """Why `url` cannot name a Heketi (worded without quoting it), or None when it can."""
    if any(c.isspace() or not c.isprintable() for c in url):
        return "must not contain spaces or control characters"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - a port that is not a number raises here
    except ValueError:
        return "is not a valid URL"
    if parts.scheme.lower() not in ("http", "https"):
        return "must be an http:// or https:// URL"
    if "@" in parts.netloc:
        return "must not carry a user or password (the key belongs in a Secret)"
    if not parts.hostname:
        return "names no host"
    if "?" in url:
        return "must not carry a query string"
    if "#" in url:
        return "must not carry a fragment"
    return None


def heketi_url(url: str, what: str) -> str:
    """`url` normalised (scheme and host in lower case, no trailing `/`); INVALID_ARGUMENT
    naming `what` (e.g. "parameter resturl") when it is not acceptable."""
    problem = url_problem(url)
    if problem is not None:
        raise InvalidArgument(f"{what} {problem}")
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if parts.port is not None:
        netloc += f":{parts.port}"
    return f"{parts.scheme.lower()}://{netloc}{parts.path.rstrip('/')}"
