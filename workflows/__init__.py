"""Workflows: deterministic processes, one module per workflow, side-effect free at import."""
