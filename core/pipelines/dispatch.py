"""From a Git event, a person or a re-run to started pipeline runs: which pipelines an event
matches, the run records (deduplicated by delivery), and their workflows.

A run is committed before its workflow starts, so the workflow's first activity finds it.
Starting is idempotent: the workflow id is derived from the run id, a running one is kept and
a finished one is never started again. The workflow starts with the search attributes and the
summary an operator finds it by in the Temporal UI (`run_labels` reads the names)."""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from core.db.engine import transaction
from core.db.types import utcnow
from core.models.catalog import Service
from core.models.identity import Organization, Team
from core.models.pipelines import Pipeline, PipelineRun
from core.pipelines.events import GitEvent
from core.pipelines.run_messages import RunInput
from core.pipelines.runs import RunRequest, RunService
from core.pipelines.triggers import matches, parse_triggers
from core.pipelines.webhooks import ParsedDelivery
from core.temporal import search_attributes
from core.temporal.client import start_once, temporal_unavailable
from workflows.notification import NOTIFICATIONS_QUEUE
from workflows.pipeline_run import PIPELINES_QUEUE, PipelineRunWorkflow

log = logging.getLogger("idp.pipelines")
RECONCILE_AFTER = timedelta(seconds=30)  # what a request normally takes to start its run
# A run in these states has a workflow to start (or one that is waiting already).
STARTABLE_STATUSES = ("queued", "awaiting_approval")


@dataclass
class Started:
    run: PipelineRun
    created: bool


@dataclass(frozen=True)
class RunLabels:
    """The names a run's workflow is found by: its organization's and owner team's slugs, its
    service, its repository (`host/owner/name`) and its pipeline."""

    organization: str
    team: str | None
    service: str
    repository: str | None
    pipeline: str


async def run_labels(
    session: AsyncSession, runs: Sequence[PipelineRun]
) -> dict[uuid.UUID, RunLabels]:
    """The labels of `runs`, by run id, in one query."""
    if not runs:
        return {}
    rows = await session.execute(
        select(
            PipelineRun.id,
            Organization.slug,
            Team.slug,
            Service.name,
            Service.repository_path,
            Pipeline.name,
        )
        .join(Pipeline, Pipeline.id == PipelineRun.pipeline_id)
        .join(Service, Service.id == Pipeline.service_id)
        .join(Organization, Organization.id == Service.org_id)
        .outerjoin(Team, Team.id == Service.owner_team_id)
        .where(PipelineRun.id.in_([run.id for run in runs]))
    )
    return {
        run_id: RunLabels(org, team, service, repository, pipeline)
        for run_id, org, team, service, repository, pipeline in rows
    }


def _trigger(run: PipelineRun) -> str:
    """How the run came about, as a person says it: `push by alice`, `pull request #7 from a
    fork by bob`, `manual by carol@example.com`."""
    pull_request = (run.event or {}).get("pull_request")
    kind = run.trigger_type.replace("_", " ")
    if pull_request:
        kind = f"pull request #{pull_request}" + (" from a fork" if run.from_fork else "")
    return f"{kind} by {run.triggered_by}" if run.triggered_by else kind


def run_summary(run: PipelineRun, labels: RunLabels) -> str:
    """One line for the UI's list: `pipeline ci #12 of shop at a1b2c3d, push by alice`."""
    at = run.git_sha[:7] if run.git_sha else (run.branch or run.ref or "the default branch")
    return f"pipeline {labels.pipeline} #{run.number} of {labels.service} at {at}, {_trigger(run)}"


def run_details(run: PipelineRun, labels: RunLabels) -> str:
    """The run's page in the UI (Markdown): where it comes from and what started it."""
    team = f" (team {labels.team})" if labels.team else ""
    lines = [
        f"**Organization:** {labels.organization}{team}",
        f"**Service:** {labels.service}" + (f" ({labels.repository})" if labels.repository else ""),
        f"**Branch:** {run.branch or run.ref or 'the default branch'}",
        f"**Commit:** {run.git_sha or 'resolved at checkout'}",
        f"**Trigger:** {_trigger(run)}",
        f"**Run:** {run.id}",
    ]
    return "\n".join(f"- {line}" for line in lines)


def delivery_key(delivery: ParsedDelivery, body: bytes) -> str:
    """The SHA-256 of the signed body: a delivery sent again, by the host or replayed by
    whoever captured it, under a new delivery id (which is not signed) is the same delivery.
    The delivery id is a second key (`create_event_runs`)."""
    return "sha256:" + hashlib.sha256(body).hexdigest()


async def matching_pipelines(
    session: AsyncSession, event: GitEvent, org_id: uuid.UUID
) -> list[Pipeline]:
    """The enabled pipelines whose triggers match the event, of the live services on the
    event's repository in the organization the repository is bound to, in a stable order."""
    if event.repository is None or event.kind in ("ping", "manual", "cron"):
        return []
    found = await session.scalars(
        select(Pipeline)
        .join(Service, Service.id == Pipeline.service_id)
        .where(
            Service.org_id == org_id,
            Service.repository_path == event.repository,
            Service.deleted_at.is_(None),
            Pipeline.deleted_at.is_(None),
            Pipeline.enabled.is_(True),
        )
        .order_by(Pipeline.created_at, Pipeline.id)
    )
    return [p for p in found if matches(parse_triggers(p.triggers), event)]


def event_request(event: GitEvent, dedupe_key: str) -> RunRequest:
    return RunRequest(
        trigger_type=event.kind,
        triggered_by=event.sender,
        ref=event.ref,
        sha=event.sha,
        branch=event.branch,
        event=event,
        dedupe_key=dedupe_key,
    )


async def create_event_runs(
    session: AsyncSession, delivery: ParsedDelivery, key: str, org_id: uuid.UUID
) -> list[Started]:
    """A run per pipeline of the repository's organization each of the delivery's events
    matches (deleted refs start none). A delivery seen before under its body's hash (`key`) or
    its delivery id finds its runs again instead of starting new ones."""
    runs: list[Started] = []
    service = RunService(session)
    for index, event in enumerate(delivery.events):
        if event.deleted:
            continue
        for pipeline in await matching_pipelines(session, event, org_id):
            dedupe = f"{delivery.host_kind}:{key}:{index}:{pipeline.id}"
            request = event_request(event, dedupe)
            if delivery.delivery_id:
                alias = f"{delivery.host_kind}:{delivery.delivery_id}:{index}:{pipeline.id}"
                request.dedupe_aliases = (alias,)
            run, created = await service.create(pipeline, request)
            runs.append(Started(run, created))
    return runs


async def start_run(
    client: Client,
    run: PipelineRun,
    labels: RunLabels,
    *,
    rerun_from_stage: str | None = None,
    notifications_queue: str = NOTIFICATIONS_QUEUE,
    task_queue: str = PIPELINES_QUEUE,
) -> None:
    """Start the run's workflow unless it ran already, labelled with `labels` (see
    `run_labels`). Unavailable (503) when Temporal cannot be reached; the run then stays
    queued, and a redelivery starts it."""
    await start_once(
        client,
        PipelineRunWorkflow.run,
        RunInput(
            run_id=run.id,
            notifications_queue=notifications_queue,
            rerun_from_stage=rerun_from_stage,
            needs_approval=run.status == "awaiting_approval",
            pull_request=(run.event or {}).get("pull_request"),
        ),
        id=run.workflow_id,
        task_queue=task_queue,
        doing="start the pipeline run",
        search_attributes=search_attributes.attributes(
            organization=labels.organization,
            team=labels.team,
            service=labels.service,
            pipeline=labels.pipeline,
            commit=run.git_sha,
            actor=run.triggered_by,
            status=run.status,
        ),
        static_summary=run_summary(run, labels),
        static_details=run_details(run, labels),
    )


async def cancel_run(client: Client, run: PipelineRun) -> bool:
    """Ask the run's workflow to cancel; False when it is not running any more."""
    try:
        await client.get_workflow_handle(run.workflow_id).cancel()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:  # finished, or never started
            return False
        raise temporal_unavailable(exc, "cancel the pipeline run") from None
    return True


async def ensure_queued_runs(
    client: Client,
    sessions: async_sessionmaker[AsyncSession],
    *,
    older_than: timedelta = RECONCILE_AFTER,
) -> int:
    """Start the workflow of every run still `queued` (or awaiting approval) after
    `older_than` (its request met Temporal down, or its process died between the commit and
    the start). Idempotent: a run whose workflow exists is left alone. Returns how many were
    asked to start."""
    async with transaction(sessions) as session:
        runs = list(
            await session.scalars(
                select(PipelineRun)
                .where(
                    PipelineRun.status.in_(STARTABLE_STATUSES),
                    PipelineRun.created_at < utcnow() - older_than,
                )
                .order_by(PipelineRun.created_at)
            )
        )
        labels = await run_labels(session, runs)
    for run in runs:
        await start_run(client, run, labels[run.id])
    if runs:
        log.info("asked %d queued pipeline runs to start", len(runs))
    return len(runs)
