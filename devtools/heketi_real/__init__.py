"""A real Heketi (v10.3.0, mock executor) for the tests and by hand: see server.py."""

from devtools.heketi_real.server import (
    HeketiNotBuilt,
    RealHeketi,
    RealHeketiConfig,
    RealHeketiError,
)

__all__ = ["HeketiNotBuilt", "RealHeketi", "RealHeketiConfig", "RealHeketiError"]
