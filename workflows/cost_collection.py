"""CostCollectionWorkflow: collect one day's costs (by default the day before it was
scheduled to start, so a schedule's backfill collects the days it covers), from each source,
then notify the budgets that went over. Run daily by the `cost-collection` schedule of
temporal.yaml (`idp schedules sync`)."""

from __future__ import annotations

import asyncio
from datetime import date, timedelta
from decimal import Decimal

from temporalio import workflow
from temporalio.common import SearchAttributeKey

with workflow.unsafe.imports_passed_through():
    from activities.costs import CostActivities
    from core.infrastructure.cost_messages import (
        BudgetAlert,
        CollectInput,
        CostCollectionInput,
        CostCollectionResult,
    )
    from core.notifications.messages import NotificationRequest
    from core.temporal.policies import activity_options
    from workflows.notification import notify

COSTS_QUEUE = "costs"
SCHEDULED_START = SearchAttributeKey.for_datetime("TemporalScheduledStartTime")


def _money(value: Decimal) -> str:
    return f"{value:.2f}"


@workflow.defn
class CostCollectionWorkflow:
    @workflow.run
    async def run(self, input: CostCollectionInput) -> CostCollectionResult:
        day = input.day or self._yesterday()
        collected = [
            await workflow.execute_activity_method(
                CostActivities.collect,
                CollectInput(day=day, source=source),
                **activity_options("cost_collection"),
            )
            for source in input.sources
        ]
        alerts = await workflow.execute_activity_method(
            CostActivities.check_budgets,
            CollectInput(day=day, source="estimate"),
            **activity_options("db"),
        )
        await asyncio.gather(*(self._notify(a, input.notifications_queue) for a in alerts))
        return CostCollectionResult(day=day, collected=collected, alerts=alerts)

    def _yesterday(self) -> date:
        scheduled = workflow.info().typed_search_attributes.get(SCHEDULED_START)
        start = scheduled or workflow.now()
        return (start - timedelta(days=1)).date()

    async def _notify(self, alert: BudgetAlert, queue: str) -> None:
        if not alert.channel_ids:
            return
        request = NotificationRequest(
            request_id=workflow.uuid4(),
            event="budget.exceeded",
            context={
                "scope": alert.scope,
                "budget": _money(alert.amount),
                "spent": _money(alert.spent),
                "currency": alert.currency,
                "period": alert.period,
            },
            channel_ids=alert.channel_ids,
            team_id=alert.team_id,
            reference=f"budget:{alert.budget_id}",
        )
        await notify(request, task_queue=queue)
