"""SelfCheckWorkflow: proves the platform's moving parts answer, from inside Temporal.

It pings every task queue from temporal.yaml through an activity only a worker of that queue
can run, and checks the database schema. Started by `idp dev` at start-up, by `idp selfcheck`,
and every 15 minutes by the `selfcheck` schedule; its history is the record of each check.

A problem found is the platform failing: the workflow ends failed (`SelfCheckFailed`, naming
each unserved queue and the database problem, with the result as the error's details) and
`IdpStatus` says `failed`; otherwise it completes `succeeded`.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel
from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

from workflows.failures import failure_message

with workflow.unsafe.imports_passed_through():
    from activities.selfcheck import DatabaseStatus, PingActivities, PingResult, SelfCheckActivities
    from core.temporal import search_attributes
    from core.temporal.policies import activity_options

SELF_CHECK_FAILED = "SelfCheckFailed"  # the workflow's failure type when a part is down
# Histories from before a failed self-check failed the workflow (it completed) replay as such.
FAILS_ON_PROBLEM = "selfcheck-fails-on-problem"


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
        if workflow.info().typed_search_attributes.get(search_attributes.STATUS) is None:
            search_attributes.set_status("running")  # e.g. started by the schedule
        options = activity_options("selfcheck")
        if input.ping_timeout_seconds:
            options["schedule_to_close_timeout"] = timedelta(seconds=input.ping_timeout_seconds)
        database = workflow.start_activity_method(
            SelfCheckActivities.database, summary="check the database schema", **options
        )
        queues: list[str] = input.task_queues or []
        if not queues:
            queues = await workflow.execute_activity_method(
                SelfCheckActivities.task_queues, summary="list the task queues", **options
            )
        workflow.set_current_details(
            f"checking the database and {len(queues)} task queues: {', '.join(queues)}"
        )
        pings = await asyncio.gather(*(self._ping(queue, options) for queue in queues))
        try:
            db = await database
        except ActivityError as err:
            if not workflow.patched(FAILS_ON_PROBLEM):
                raise
            db = DatabaseStatus(
                ok=False,
                dialect="unknown",
                revision=None,
                expected_revision=None,
                error=f"did not answer: {failure_message(err)}",
            )
        result = SelfCheckResult(
            ok=db.ok and all(p.ok for p in pings),
            checked_at=workflow.now(),
            database=db,
            queues=pings,
        )
        problems = _problems(result)
        workflow.set_current_details(
            "\n".join(problems) or f"the database and {len(queues)} task queues answer"
        )
        search_attributes.set_status("succeeded" if result.ok else "failed")
        if not result.ok and workflow.patched(FAILS_ON_PROBLEM):
            raise ApplicationError(
                f"self-check failed: {'; '.join(problems)}",
                result,
                type=SELF_CHECK_FAILED,
                non_retryable=True,
            )
        return result

    async def _ping(self, queue: str, options: dict[str, Any]) -> QueueStatus:
        try:
            result: PingResult = await workflow.execute_activity_method(
                PingActivities.ping, task_queue=queue, summary=f"ping {queue}", **options
            )
        except ActivityError as err:
            cause = err.cause or err
            return QueueStatus(task_queue=queue, ok=False, error=f"no worker answered: {cause}")
        return QueueStatus(task_queue=queue, ok=True, worker=result.worker)


def _problems(result: SelfCheckResult) -> list[str]:
    """What is wrong, one line per part: `task queue pipelines: no worker answered: ...`."""
    problems = []
    if not result.database.ok:
        problems.append(f"database: {result.database.error or 'not at the expected revision'}")
    problems += [f"task queue {q.task_queue}: {q.error}" for q in result.queues if not q.ok]
    return problems
