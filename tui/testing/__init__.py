"""Deterministic sample runs for the test suite and the benchmarks; the `testmon` command
never imports this package."""
