"""Fuzz suite: generated hostile requests against a real local cluster (see test_fuzz_rpcs)."""
