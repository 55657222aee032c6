"""CostCollectionWorkflow: collect one day's costs (by default the day before it was
scheduled to start, so a schedule's backfill collects the days it covers), from each source,
then notify the budgets that went over. Run daily by the `cost-collection` schedule of
temporal.yaml (`idp schedules sync`).

A source that still fails after its retries (a provider unreachable, an unknown source) does
not stop the others: what could be collected is stored, budgets are checked, then the
execution FAILS with `CostCollectionFailed` naming the sources and providers (histories from
before this, without the `COLLECTION_FAILURE_FAILS` marker, failed at the first source).
`IdpStatus` is `running`, then `succeeded` or `failed`."""

from __future__ import annotations

import asyncio
from datetime import date, timedelta
from decimal import Decimal

from temporalio import workflow
from temporalio.common import SearchAttributeKey
from temporalio.exceptions import ActivityError, ApplicationError

from workflows.failures import failure_message

with workflow.unsafe.imports_passed_through():
    from activities.costs import CostActivities
    from core.infrastructure.cost_messages import (
        BudgetAlert,
        CollectInput,
        CostCollectionInput,
        CostCollectionResult,
    )
    from core.notifications.messages import NotificationRequest
    from core.temporal import search_attributes
    from core.temporal.policies import activity_options
    from workflows.notification import notify

COSTS_QUEUE = "costs"
SCHEDULED_START = SearchAttributeKey.for_datetime("TemporalScheduledStartTime")
COST_COLLECTION_FAILED = "CostCollectionFailed"  # the execution's ApplicationError type
# Marks histories in which a source failing after its retries lets the others run first.
COLLECTION_FAILURE_FAILS = "cost-collection-failure-fails"


def _money(value: Decimal) -> str:
    return f"{value:.2f}"


@workflow.defn
class CostCollectionWorkflow:
    @workflow.run
    async def run(self, input: CostCollectionInput) -> CostCollectionResult:
        day = input.day or self._yesterday()
        search_attributes.set_status("running")
        collected = []
        failed: list[str] = []
        for source in input.sources:
            workflow.set_current_details(f"collecting the costs of {day} from {source}")
            try:
                collected.append(
                    await workflow.execute_activity_method(
                        CostActivities.collect,
                        CollectInput(day=day, source=source),
                        summary=f"collect costs from {source} for {day}",
                        **activity_options("cost_collection"),
                    )
                )
            except ActivityError as err:
                if not workflow.patched(COLLECTION_FAILURE_FAILS):
                    raise
                failed.append(failure_message(err))
        workflow.set_current_details(f"checking budgets after {day}")
        alerts = await workflow.execute_activity_method(
            CostActivities.check_budgets,
            CollectInput(day=day, source="estimate"),
            summary=f"check budgets after {day}",
            **activity_options("db"),
        )
        await asyncio.gather(*(self._notify(a, input.notifications_queue) for a in alerts))
        if failed:
            search_attributes.set_status("failed")
            done = ", ".join(c.source for c in collected) or "none"
            raise ApplicationError(
                f"the costs of {day} were not all collected: {'; '.join(failed)}; what could "
                f"be collected is stored (sources done: {done}) and budgets were checked",
                type=COST_COLLECTION_FAILED,
                non_retryable=True,
            )
        search_attributes.set_status("succeeded")
        workflow.set_current_details(
            f"collected the costs of {day} from {', '.join(input.sources)}; "
            f"{len(alerts)} budget(s) over"
        )
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
