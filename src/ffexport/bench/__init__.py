"""Benchmark harness: per-module and end-to-end timing, memory, and reports."""
