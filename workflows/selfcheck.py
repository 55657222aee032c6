"""SelfCheckWorkflow: proves the platform's moving parts answer, from inside Temporal.

It pings every task queue from temporal.yaml through an activity only a worker of that queue
can run, and checks the database schema. Started by `idp dev` at start-up, by `idp selfcheck`,
and every 15 minutes by the `selfcheck` schedule; its history is the record of each check.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel
from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from activities.selfcheck import DatabaseStatus, PingActivities, PingResult, SelfCheckActivities
    from core.temporal.policies import activity_options


class SelfCheckInput(BaseModel):
    task_queues: list[str] | None = None  # default: every queue in temporal.yaml
    ping_timeout_seconds: float | None = None  # default: the `selfcheck` activity kind's


class QueueStatus(BaseModel):
    task_queue: str
    ok: bool
    worker: str | None = None
    error: str | None = None


class SelfCheckResult(BaseModel):
    ok: bool
    checked_at: datetime
    database: DatabaseStatus
    queues: list[QueueStatus]


@workflow.defn
class SelfCheckWorkflow:
    @workflow.run
    async def run(self, input: SelfCheckInput | None = None) -> SelfCheckResult:
        input = input or SelfCheckInput()
        options = activity_options("selfcheck")
        if input.ping_timeout_seconds:
            options["schedule_to_close_timeout"] = timedelta(seconds=input.ping_timeout_seconds)
        database = workflow.start_activity_method(SelfCheckActivities.database, **options)
        queues: list[str] = input.task_queues or []
        if not queues:
            queues = await workflow.execute_activity_method(
                SelfCheckActivities.task_queues, **options
            )
        pings = await asyncio.gather(*(self._ping(queue, options) for queue in queues))
        return SelfCheckResult(
            ok=(await database).ok and all(p.ok for p in pings),
            checked_at=workflow.now(),
            database=await database,
            queues=pings,
        )

    async def _ping(self, queue: str, options: dict[str, Any]) -> QueueStatus:
        try:
            result: PingResult = await workflow.execute_activity_method(
                PingActivities.ping, task_queue=queue, **options
            )
        except ActivityError as err:
            cause = err.cause or err
            return QueueStatus(task_queue=queue, ok=False, error=f"no worker answered: {cause}")
        return QueueStatus(task_queue=queue, ok=True, worker=result.worker)
