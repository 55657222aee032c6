"""Pipeline runs as records: creating one (numbered per pipeline, deduplicated by a key such as
a webhook's delivery id), reading one with its stages and steps, listing, log chunks and
artifacts. The workflow's activities write the projections; this module reads them."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from core.audit import AuditService, snapshot
from core.errors import Conflict, NotFound
from core.identity.organizations import Visibility
from core.models.catalog import Service
from core.models.pipelines import (
    BuildArtifact,
    Pipeline,
    PipelineLogChunk,
    PipelineRun,
    PipelineStage,
    PipelineStep,
)
from core.pagination import Page, PageRequest, paginate
from core.pipelines.events import GitEvent
from core.pipelines.run_messages import FINISHED_RUN_STATUSES

WORKFLOW_ID_PREFIX = "pipeline-run-"
_RUN_KEYS = uuid.UUID("6d1f3c52-3f0e-4b8a-9a57-1c2e4f6a8b90")  # uuid5 namespace of dedupe keys


def workflow_id_for(run_id: uuid.UUID | str) -> str:
    return f"{WORKFLOW_ID_PREFIX}{run_id}"


def run_id_for(key: str) -> uuid.UUID:
    """The run id a deduplication key always maps to: a redelivered webhook finds its run."""
    return uuid.uuid5(_RUN_KEYS, key)


@dataclass
class RunRequest:
    """What starts a run. `dedupe_key` (a webhook's delivery id and the pipeline) makes the run
    id, so the same request twice gives the same run."""

    trigger_type: str
    triggered_by: str | None = None
    ref: str | None = None
    sha: str | None = None
    branch: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    event: GitEvent | None = None
    dedupe_key: str | None = None
    rerun_of: PipelineRun | None = None
    config: dict[str, Any] | None = None
    workflow_id: str | None = None  # a schedule's workflow id (else derived from the run id)
    # Other keys the same request was known by (a webhook's delivery id, besides its body's
    # hash): a run made under any of them is this run.
    dedupe_aliases: tuple[str, ...] = ()


def branch_from_host(request: RunRequest) -> bool:
    """Whether the run's branch and commit come from the Git host: a push delivery (signed),
    or a branch whose head the checkout resolves (no commit named); a re-run inherits it. A
    pull request's head branch is the author's to name (a fork may call its branch `main`),
    and a commit named by a person need not be on the branch they name."""
    if request.rerun_of is not None:
        return request.rerun_of.branch_from_host
    if request.trigger_type == "push":
        return request.event is not None
    if request.trigger_type == "manual":
        return request.sha is None and request.branch is not None
    return request.trigger_type == "cron"  # the default branch's head, resolved at checkout


@dataclass(frozen=True)
class RunFilter:
    visible: Visibility
    pipeline_id: uuid.UUID | None = None
    service_id: uuid.UUID | None = None
    status: str | None = None
    branch: str | None = None
    trigger_type: str | None = None
    sha: str | None = None


@dataclass
class RunDetail:
    run: PipelineRun
    pipeline: Pipeline
    stages: list[PipelineStage]
    steps: list[PipelineStep]


class RunService:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session
        self.audit = AuditService(session)

    async def create(self, pipeline: Pipeline, request: RunRequest) -> tuple[PipelineRun, bool]:
        """The run for `request`, and whether this call created it (False: the same dedupe key
        made it before). Numbers are allocated under a lock on the pipeline's row."""
        run_id = run_id_for(request.dedupe_key) if request.dedupe_key else uuid.uuid4()
        for candidate in (run_id, *map(run_id_for, request.dedupe_aliases)):
            existing = await self.session.get(PipelineRun, candidate)
            if existing is not None:
                return existing, False
        await self.session.execute(
            select(Pipeline.id).where(Pipeline.id == pipeline.id).with_for_update()
        )
        for _ in range(5):
            run = self._new_run(run_id, pipeline, request)
            run.number = 1 + int(
                await self.session.scalar(
                    select(func.coalesce(func.max(PipelineRun.number), 0)).where(
                        PipelineRun.pipeline_id == pipeline.id
                    )
                )
                or 0
            )
            try:
                async with self.session.begin_nested():
                    self.session.add(run)
                break
            except IntegrityError:
                # the same key (a concurrent duplicate: use its run), or the same number
                # (SQLite has no row lock: count again)
                found = await self.session.get(PipelineRun, run_id)
                if found is not None:
                    return found, False
        else:
            raise Conflict("could not allocate a run number; try again")
        await self.audit.record("pipeline_run.create", "pipeline_run", run.id, after=snapshot(run))
        return run, True

    @staticmethod
    def _new_run(run_id: uuid.UUID, pipeline: Pipeline, request: RunRequest) -> PipelineRun:
        """A fork's pull request waits for approval; a re-run of a fork's run is started by
        someone who may run the pipeline (that is the approval), and stays a fork's run."""
        event = request.event
        fork = bool(event and event.fork)
        return PipelineRun(
            id=run_id,
            pipeline_id=pipeline.id,
            trigger_type=request.trigger_type,
            triggered_by=request.triggered_by,
            delivery_id=request.dedupe_key,
            ref=request.ref,
            branch=request.branch,
            git_sha=request.sha,
            branch_from_host=branch_from_host(request),
            parameters=request.parameters,
            event=event.model_dump(mode="json") if event else {},
            status="awaiting_approval" if fork else "queued",
            from_fork=fork or bool(request.rerun_of and request.rerun_of.from_fork),
            workflow_id=request.workflow_id or workflow_id_for(run_id),
            rerun_of_id=request.rerun_of.id if request.rerun_of else None,
            config=request.config,
        )

    async def get(self, run_id: uuid.UUID) -> PipelineRun:
        run = await self.session.get(PipelineRun, run_id)
        if run is None:
            raise NotFound(f"pipeline run {run_id} not found")
        return run

    async def detail(self, run: PipelineRun) -> RunDetail:
        pipeline = await self.session.get(Pipeline, run.pipeline_id)
        assert pipeline is not None
        stages = list(
            await self.session.scalars(
                select(PipelineStage)
                .where(PipelineStage.run_id == run.id)
                .order_by(PipelineStage.position)
            )
        )
        steps = list(
            await self.session.scalars(
                select(PipelineStep)
                .where(PipelineStep.run_id == run.id)
                .order_by(PipelineStep.position)
            )
        )
        return RunDetail(run, pipeline, stages, steps)

    def _query(self, f: RunFilter) -> Select[Any]:
        stmt = (
            select(PipelineRun)
            .join(Pipeline, Pipeline.id == PipelineRun.pipeline_id)
            .join(Service, Service.id == Pipeline.service_id)
        )
        if not f.visible.everything:
            stmt = stmt.where(f.visible.where(Service.org_id, Service.owner_team_id))
        if f.pipeline_id is not None:
            stmt = stmt.where(PipelineRun.pipeline_id == f.pipeline_id)
        if f.service_id is not None:
            stmt = stmt.where(Pipeline.service_id == f.service_id)
        if f.status is not None:
            stmt = stmt.where(PipelineRun.status == f.status)
        if f.branch is not None:
            stmt = stmt.where(PipelineRun.branch == f.branch)
        if f.trigger_type is not None:
            stmt = stmt.where(PipelineRun.trigger_type == f.trigger_type)
        if f.sha is not None:
            stmt = stmt.where(PipelineRun.git_sha.startswith(f.sha.lower(), autoescape=True))
        return stmt

    async def search(self, f: RunFilter, page: PageRequest) -> Page[PipelineRun]:
        """Newest first."""
        return await paginate(
            self.session,
            self._query(f),
            page,
            order=(PipelineRun.created_at, PipelineRun.id),
            descending=True,
        )

    async def unfinished(self, pipeline_id: uuid.UUID) -> list[PipelineRun]:
        return list(
            await self.session.scalars(
                select(PipelineRun)
                .where(
                    PipelineRun.pipeline_id == pipeline_id,
                    PipelineRun.status.not_in(FINISHED_RUN_STATUSES),
                )
                .order_by(PipelineRun.number)
            )
        )

    async def log_chunks(
        self, run_id: uuid.UUID, *, after: int = 0, limit: int = 500
    ) -> list[PipelineLogChunk]:
        """Chunks of the run's log in the order they were written, after chunk id `after`."""
        return list(
            await self.session.scalars(
                select(PipelineLogChunk)
                .where(PipelineLogChunk.run_id == run_id, PipelineLogChunk.id > after)
                .order_by(PipelineLogChunk.id)
                .limit(limit)
            )
        )

    async def artifacts(self, run_id: uuid.UUID) -> list[BuildArtifact]:
        return list(
            await self.session.scalars(
                select(BuildArtifact)
                .where(BuildArtifact.run_id == run_id)
                .order_by(BuildArtifact.created_at, BuildArtifact.name)
            )
        )

    async def artifact(self, run_id: uuid.UUID, name: str) -> BuildArtifact:
        found = await self.session.scalar(
            select(BuildArtifact).where(BuildArtifact.run_id == run_id, BuildArtifact.name == name)
        )
        if found is None:
            raise NotFound(f"run {run_id} has no artifact named {name!r}")
        return found

    async def failed_stage(self, run: PipelineRun) -> str | None:
        return await self.session.scalar(
            select(PipelineStage.name)
            .where(PipelineStage.run_id == run.id, PipelineStage.status == "failed")
            .order_by(PipelineStage.position)
            .limit(1)
        )


def elapsed(started: datetime | None, completed: datetime | None) -> float | None:
    if started is None or completed is None:
        return None
    return (completed - started).total_seconds()
