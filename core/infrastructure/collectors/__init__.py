"""Cost collectors, by source name: what `CostActivities.collect` dispatches on.

A collector turns one day into `CostLine`s (see `base.Collector`); a new one is a module here
and a line in `COLLECTORS` (and its name in `cost_messages.SOURCES`, which a unit test keeps
equal to this registry)."""

from __future__ import annotations

from collections.abc import Callable

from core.infrastructure.collectors.aws import CostExplorerCollector
from core.infrastructure.collectors.base import Collected, Collector, CollectorContext
from core.infrastructure.collectors.estimate import EstimateCollector
from core.infrastructure.collectors.opencost import OpenCostCollector

COLLECTORS: dict[str, Callable[[CollectorContext], Collector]] = {
    "estimate": EstimateCollector,
    "opencost": OpenCostCollector,
    "aws": CostExplorerCollector,
}


def build_collectors(context: CollectorContext) -> dict[str, Collector]:
    return {source: make(context) for source, make in COLLECTORS.items()}


__all__ = ["COLLECTORS", "Collected", "Collector", "CollectorContext", "build_collectors"]
