"""Starting SelfCheckWorkflow from the command line and printing what it found."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import typer
from temporalio.client import WorkflowFailureError
from temporalio.exceptions import ApplicationError

from core.settings import Settings
from core.temporal import search_attributes
from core.temporal.client import connect
from core.topology import Topology
from workflows.selfcheck import (
    SELF_CHECK_FAILED,
    SelfCheckInput,
    SelfCheckResult,
    SelfCheckWorkflow,
)

TIMEOUT = timedelta(seconds=60)


async def run_selfcheck(
    settings: Settings,
    topology: Topology,
    workflow_id: str | None = None,
    *,
    summary: str = "start-up self-check",
) -> SelfCheckResult:
    """Run the self-check and return what it found, problems included (the workflow then
    ends failed, `SelfCheckFailed`, with the result in the error's details)."""
    client = await connect(settings, topology)
    workflow_id = workflow_id or f"selfcheck-{datetime.now(UTC):%Y%m%dT%H%M%S%f}"
    try:
        return await client.execute_workflow(
            SelfCheckWorkflow.run,
            SelfCheckInput(),
            id=workflow_id,
            task_queue="platform",
            execution_timeout=TIMEOUT,
            search_attributes=search_attributes.attributes(status="running"),
            static_summary=summary,
        )
    except WorkflowFailureError as exc:
        found = found_by(exc)
        if found is None:
            raise
        return found


def found_by(error: WorkflowFailureError) -> SelfCheckResult | None:
    """The result a failed self-check carries; None for any other failure."""
    cause = error.cause
    if isinstance(cause, ApplicationError) and cause.type == SELF_CHECK_FAILED and cause.details:
        return SelfCheckResult.model_validate(cause.details[0])
    return None


def print_result(result: SelfCheckResult) -> None:
    db = result.database
    mark = {True: "ok  ", False: "FAIL"}
    typer.echo(
        f"{mark[db.ok]} database ({db.dialect}, revision {db.revision})"
        + (f": {db.error}" if db.error else "")
    )
    for queue in result.queues:
        detail = f"served by {queue.worker}" if queue.ok else queue.error
        typer.echo(f"{mark[queue.ok]} task queue {queue.task_queue}: {detail}")
