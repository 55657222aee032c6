"""The activities of CostCollectionWorkflow (task queue `costs`): collect one day from one
source into `cost_records` (replacing that day's records of that source), and find the budgets
that went over."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity
from temporalio.exceptions import ApplicationError

from core.db.engine import transaction
from core.infrastructure.budgets import budget_alerts
from core.infrastructure.cost_messages import SOURCES, BudgetAlert, CollectInput, CollectResult
from core.infrastructure.costs import PriceCatalog, estimate_day, store_day


class CostActivities:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], catalog: PriceCatalog) -> None:
        self._sessions = sessions
        self._catalog = catalog

    def all(self) -> list[Callable[..., Any]]:
        return [self.collect, self.check_budgets]

    @activity.defn(name="costs.collect")
    async def collect(self, input: CollectInput) -> CollectResult:
        if input.source not in SOURCES:
            raise ApplicationError(
                f"no cost collector {input.source!r} (there is: {', '.join(SOURCES)})",
                non_retryable=True,
            )
        async with transaction(self._sessions) as session:
            lines = await estimate_day(session, self._catalog, input.day)
            total = await store_day(session, input.day, input.source, lines, self._catalog.currency)
        return CollectResult(day=input.day, source=input.source, resources=len(lines), total=total)

    @activity.defn(name="costs.check_budgets")
    async def check_budgets(self, input: CollectInput) -> list[BudgetAlert]:
        async with transaction(self._sessions) as session:
            return await budget_alerts(session, input.day)
