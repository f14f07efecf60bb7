"""Benchmark scripts (not timed tests)."""
