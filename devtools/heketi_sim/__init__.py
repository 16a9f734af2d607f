"""A Heketi v10 simulator for tests, benchmarks and the local demo (never for production)."""

from devtools.heketi_sim.server import FailRule, HeketiSimulator, SimConfig

__all__ = ["FailRule", "HeketiSimulator", "SimConfig"]
