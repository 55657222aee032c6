"""Starting SelfCheckWorkflow from the command line and printing what it found."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import typer

from core.settings import Settings
from core.temporal.client import connect
from core.topology import Topology
from workflows.selfcheck import SelfCheckInput, SelfCheckResult, SelfCheckWorkflow

TIMEOUT = timedelta(seconds=60)


async def run_selfcheck(
    settings: Settings, topology: Topology, workflow_id: str | None = None
) -> SelfCheckResult:
    client = await connect(settings, topology)
    workflow_id = workflow_id or f"selfcheck-{datetime.now(UTC):%Y%m%dT%H%M%S%f}"
    return await client.execute_workflow(
        SelfCheckWorkflow.run,
        SelfCheckInput(),
        id=workflow_id,
        task_queue="platform",
        execution_timeout=TIMEOUT,
    )


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
