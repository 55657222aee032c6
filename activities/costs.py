"""The activities of CostCollectionWorkflow (task queue `costs`): collect one day from one
source into `cost_records` (replacing that day's records of that source, of the providers it
collected), and find the budgets that went over.

A provider a collector cannot collect for want of configuration, or that its API refused for
good, keeps its records and is named in the result's `notes` (and the log); a transient failure
(unreachable, 5xx, throttled) fails the attempt after the other providers' costs are stored, so
Temporal retries the day (`CostProviderUnavailable`, naming the providers); when the retries
run out, the workflow fails naming them."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity
from temporalio.exceptions import ApplicationError

from core.db.engine import transaction
from core.infrastructure.budgets import budget_alerts
from core.infrastructure.collectors import CollectorContext, build_collectors
from core.infrastructure.cost_messages import BudgetAlert, CollectInput, CollectResult
from core.infrastructure.costs import PriceCatalog, store_day
from core.settings import Settings

HEARTBEAT_EVERY = 20.0  # seconds; the cost_collection heartbeat timeout is minutes
UNKNOWN_SOURCE = "UnknownCostSource"  # a misconfigured schedule: not retried
PROVIDER_UNAVAILABLE = "CostProviderUnavailable"  # retried, then the workflow fails naming it


@contextlib.asynccontextmanager
async def _heartbeating() -> AsyncIterator[None]:
    """Heartbeat while the block runs (when in an activity: tests call methods directly)."""
    if not activity.in_activity():
        yield
        return

    async def beat() -> None:
        while True:
            activity.heartbeat()
            await asyncio.sleep(HEARTBEAT_EVERY)

    task = asyncio.create_task(beat())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class CostActivities:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        catalog: PriceCatalog,
        *,
        settings: Settings | None = None,
    ) -> None:
        """`settings` gives the collectors' endpoints (OPENCOST_URL, AWS_COST_EXPLORER_URL);
        without it, only the providers' own config does."""
        self._sessions = sessions
        self._catalog = catalog
        self._collectors = build_collectors(CollectorContext.of(catalog, settings))

    def all(self) -> list[Callable[..., Any]]:
        return [self.collect, self.check_budgets]

    @activity.defn(name="costs.collect")
    async def collect(self, input: CollectInput) -> CollectResult:
        collector = self._collectors.get(input.source)
        if collector is None:
            raise ApplicationError(
                f"no cost collector {input.source!r} (there is: {', '.join(self._collectors)})",
                type=UNKNOWN_SOURCE,
                non_retryable=True,
            )
        async with _heartbeating():
            found = await collector.day(self._sessions, input.day, input.providers)
            async with transaction(self._sessions) as session:
                total = await store_day(
                    session,
                    input.day,
                    input.source,
                    found.lines,
                    self._catalog.currency,
                    providers=found.providers,
                )
        for note in found.notes:
            activity.logger.warning("%s costs of %s: %s", input.source, input.day, note)
        if found.retry:
            raise ApplicationError(
                f"{input.source} costs of {input.day}: {'; '.join(found.retry)} "
                "(the other providers' costs are stored)",
                type=PROVIDER_UNAVAILABLE,
            )
        return CollectResult(
            day=input.day,
            source=input.source,
            resources=len(found.lines),
            total=total,
            skipped=len(found.skipped),
            unattributed=found.unattributed,
            notes=found.notes,
        )

    @activity.defn(name="costs.check_budgets")
    async def check_budgets(self, input: CollectInput) -> list[BudgetAlert]:
        async with transaction(self._sessions) as session:
            return await budget_alerts(session, input.day)
