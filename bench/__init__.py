"""Benchmarks: figures and ratios against the floor of the engine underneath (never asserted)."""
