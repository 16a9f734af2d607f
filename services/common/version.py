"""The installed package's version."""

from __future__ import annotations

from functools import cache
from importlib.metadata import PackageNotFoundError, version


@cache
def package_version() -> str:
    try:
        return version("heketi-csi")
    except PackageNotFoundError:
        return "0.0.0+unknown"
