"""Temporal wiring: client factory, data converter, interceptors, activity options."""
