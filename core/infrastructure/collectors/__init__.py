"""Cost collectors, by source name: what `CostActivities.collect` dispatches on.

A collector turns one day into `CostLine`s (see `base.Collector`); a new one is a module here
and a line in `COLLECTORS` (and its name in `cost_messages.SOURCES`, which a unit test keeps
equal to this registry)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from core.infrastructure.collectors.aws import CostExplorerCollector, check_cost_explorer_url
from core.infrastructure.collectors.base import Collected, Collector, CollectorContext
from core.infrastructure.collectors.estimate import EstimateCollector
from core.infrastructure.collectors.opencost import OpenCostCollector
from core.security.egress import EgressPolicy

COLLECTORS: dict[str, Callable[[CollectorContext], Collector]] = {
    "estimate": EstimateCollector,
    "opencost": OpenCostCollector,
    "aws": CostExplorerCollector,
}


def build_collectors(context: CollectorContext) -> dict[str, Collector]:
    return {source: make(context) for source, make in COLLECTORS.items()}


async def check_provider_urls(config: dict[str, Any] | None, egress: EgressPolicy) -> None:
    """422 `egress_refused` when a provider's own cost API URL (`opencost_url`,
    `cost_explorer_url`) is one the collectors would refuse to call. Called before any
    database work: resolving a name holds no transaction open."""
    config = config or {}
    if isinstance(config.get("opencost_url"), str):
        await egress.check_url(config["opencost_url"], field="config.opencost_url")
    if isinstance(config.get("cost_explorer_url"), str):
        await check_cost_explorer_url(config["cost_explorer_url"], egress)


__all__ = [
    "COLLECTORS",
    "Collected",
    "Collector",
    "CollectorContext",
    "build_collectors",
    "check_provider_urls",
]
