"""Benchmarks: figures printed on the machine at hand, not timed tests."""
