"""Checks of request fields shared by every service."""

from __future__ import annotations

from services.common.errors import InvalidArgument


def require(value: str, field: str) -> str:
    """`value`, or INVALID_ARGUMENT naming `field` when it is empty."""
    if not value:
        raise InvalidArgument(f"{field} is required")
    return value
