"""Pagination of ListVolumes and ListSnapshots.

Entries are listed in a stable order (by id). The token is the id of the last entry returned,
so a page boundary survives entries being added or deleted between calls.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from services.common.errors import Aborted, InvalidArgument

T = TypeVar("T")
_TOKEN_PREFIX = "after:"


def paginate(
    items: Sequence[tuple[str, T]], max_entries: int, starting_token: str
) -> tuple[list[tuple[str, T]], str]:
    """One page of `(id, item)` pairs sorted by id, and the token for the next page ("" at end)."""
    if max_entries < 0:
        raise InvalidArgument("max_entries must not be negative")
    ordered = sorted(items, key=lambda pair: pair[0])
    start = 0
    if starting_token:
        if not starting_token.startswith(_TOKEN_PREFIX):
            raise Aborted(f"starting_token {starting_token!r} was not issued by this driver")
        after = starting_token[len(_TOKEN_PREFIX):]
        start = next((i for i, (key, _) in enumerate(ordered) if key > after), len(ordered))
    end = len(ordered) if max_entries == 0 else min(len(ordered), start + max_entries)
    page = list(ordered[start:end])
    next_token = f"{_TOKEN_PREFIX}{page[-1][0]}" if page and end < len(ordered) else ""
    return page, next_token
