"""Activity options by kind, from temporal.yaml, for use inside workflows.

Workflows cannot read files, so the worker installs the loaded topology here before it
starts (this module is passed through the workflow sandbox) and workflows call
`activity_options("db")` instead of hard-coding timeouts and retry policies.
"""

from __future__ import annotations

from typing import Any

from core.topology import Topology

_topology: Topology | None = None


def install(topology: Topology) -> None:
    global _topology
    _topology = topology


def installed() -> Topology:
    if _topology is None:
        raise RuntimeError("no topology installed: build workers with workers.runner.build_workers")
    return _topology


def activity_options(kind: str, **overrides: Any) -> dict[str, Any]:
    """Keyword arguments for `workflow.execute_activity` for an activity of this kind."""
    spec = installed().activity(kind)
    options: dict[str, Any] = {
        "start_to_close_timeout": spec.start_to_close_timeout,
        "retry_policy": spec.retry.to_temporal(),
    }
    if spec.schedule_to_close_timeout is not None:
        options["schedule_to_close_timeout"] = spec.schedule_to_close_timeout
    if spec.heartbeat_timeout is not None:
        options["heartbeat_timeout"] = spec.heartbeat_timeout
    options.update(overrides)
    return options
