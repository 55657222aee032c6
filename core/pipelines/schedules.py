"""A pipeline's `cron` triggers as one Temporal Schedule (`pipeline-cron-<pipeline id>`), kept in
step with the pipeline by the API: created or updated when the pipeline is saved with cron
expressions, paused while it is disabled, deleted when it has none or is deleted.

Each firing starts PipelineRunWorkflow with the pipeline (not a run): its first activity
records the run, with trigger `cron`, at the repository's default branch. Overlapping firings
are skipped (a run still going when the next is due), and the times are in UTC. A firing starts
with the pipeline's name and status `queued` as search attributes; the workflow adds the
others (organization, team, service, commit) once its run is recorded."""

from __future__ import annotations

from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleState,
    ScheduleUpdate,
    ScheduleUpdateInput,
)
from temporalio.service import RPCError, RPCStatusCode

from core.models.pipelines import Pipeline
from core.pipelines.run_messages import RunInput
from core.pipelines.triggers import parse_triggers
from core.temporal import search_attributes
from core.temporal.client import temporal_unavailable
from workflows.notification import NOTIFICATIONS_QUEUE
from workflows.pipeline_run import PIPELINES_QUEUE, PipelineRunWorkflow

PREFIX = "pipeline-cron-"


def schedule_id(pipeline: Pipeline) -> str:
    return f"{PREFIX}{pipeline.id}"


def build_schedule(pipeline: Pipeline, crons: list[str], *, task_queue: str) -> Schedule:
    return Schedule(
        action=ScheduleActionStartWorkflow(
            PipelineRunWorkflow.run,
            RunInput(pipeline_id=pipeline.id, notifications_queue=NOTIFICATIONS_QUEUE),
            id=f"{schedule_id(pipeline)}-run",
            task_queue=task_queue,
            typed_search_attributes=search_attributes.attributes(
                pipeline=pipeline.name, status="queued"
            ),
            static_summary=f"pipeline {pipeline.name}: a cron firing",
        ),
        spec=ScheduleSpec(cron_expressions=crons),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
        state=ScheduleState(paused=not pipeline.enabled, note=f"cron triggers of {pipeline.name}"),
    )


async def sync_pipeline_schedule(
    client: Client, pipeline: Pipeline, *, task_queue: str = PIPELINES_QUEUE
) -> str | None:
    """Make the pipeline's schedule match its cron triggers; its id, or None when it has none.
    Unavailable (503) when Temporal cannot be reached."""
    crons = [] if pipeline.is_deleted else list(parse_triggers(pipeline.triggers).cron)
    handle = client.get_schedule_handle(schedule_id(pipeline))
    try:
        if not crons:
            try:
                await handle.delete()
            except RPCError as exc:
                if exc.status != RPCStatusCode.NOT_FOUND:
                    raise
            return None
        schedule = build_schedule(pipeline, crons, task_queue=task_queue)
        try:
            await client.create_schedule(schedule_id(pipeline), schedule)
        except ScheduleAlreadyRunningError:

            def replace(_: ScheduleUpdateInput) -> ScheduleUpdate:
                return ScheduleUpdate(schedule=schedule)

            await handle.update(replace)
    except RPCError as exc:
        raise temporal_unavailable(exc, "update the pipeline's cron schedule") from None
    return schedule_id(pipeline)
