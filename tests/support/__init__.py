"""Helpers that only the tests use (fixture writers, readers of the real test files); never installed."""
