"""Pipeline runs: start (`pipelines:run`), read with live state, logs as text or a live
Server-Sent Events stream, artifacts, cancel and re-run, approve or reject a fork's pull
request run. Reading needs `pipelines:read` on the service's owner team."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import FileResponse, PlainTextResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.ext.asyncio import AsyncSession

from api.auth import require
from api.deps import DbSession, State
from api.pagination import PageOut, page_params, page_response
from core.catalog.services import authorized_service
from core.db.engine import transaction
from core.errors import BadRequest, Conflict, NotFound
from core.identity.organizations import Visibility
from core.models.pipelines import Pipeline, PipelineRun
from core.pagination import PageRequest
from core.pipelines.artifacts import ArtifactNotFound, ArtifactStore
from core.pipelines.dispatch import cancel_run, run_labels, start_run
from core.pipelines.pipelines import PipelineService
from core.pipelines.run_messages import (
    FINISHED_RUN_STATUSES,
    RUN_STATUSES,
    ApprovalRequest,
    ApprovalResult,
    RunView,
)
from core.pipelines.runs import RunDetail, RunFilter, RunRequest, RunService, elapsed
from core.pipelines.triggers import parse_triggers
from core.security.authorization import ANY_SCOPE, Principal
from core.temporal.client import execute_update
from workflows.pipeline_run import PipelineRunWorkflow

router = APIRouter(prefix="/pipelines", tags=["pipeline runs"])

QUERY_TIMEOUT = 2.0  # seconds to wait for a workflow's live state before serving the record
LOG_POLL = 0.25  # seconds between looks for new log chunks in a live stream
LOG_KEEPALIVE = 15.0  # seconds between SSE comments while nothing happens
LOG_PAGE = 200  # chunks read at a time for the plain-text log


class RunIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ref: str | None = Field(None, max_length=1024, examples=["main"], description="Branch or tag")
    sha: str | None = Field(None, pattern=r"^[0-9a-fA-F]{7,40}$", description="A commit")
    parameters: dict[str, Any] = Field(default_factory=dict)


class RerunIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    from_stage: str | None = Field(
        None, description="Stage to start from (default: the first failed stage)"
    )
    all_stages: bool = Field(False, description="Run every stage again")


class StepOut(BaseModel):
    id: uuid.UUID
    name: str
    command: str
    status: str
    exit_code: int | None
    error: str | None
    started_at: datetime | None
    completed_at: datetime | None
    duration_seconds: float | None


class StageOut(BaseModel):
    id: uuid.UUID
    name: str
    status: str
    started_at: datetime | None
    completed_at: datetime | None
    duration_seconds: float | None
    steps: list[StepOut]


class RunOut(BaseModel):
    id: uuid.UUID
    pipeline_id: uuid.UUID
    number: int
    status: str
    trigger_type: str
    triggered_by: str | None
    ref: str | None
    branch: str | None
    git_sha: str | None
    parameters: dict[str, Any]
    workflow_id: str
    rerun_of_id: uuid.UUID | None
    from_fork: bool = Field(
        description="A fork's pull request: it waits for approval and gets no secrets"
    )
    approved_by: str | None = Field(description="Who approved (or rejected) a fork's run")
    approved_at: datetime | None
    error: str | None
    created_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    duration_seconds: float | None


class RunDetailOut(RunOut):
    pipeline: str
    phase: str | None = Field(None, description="What the workflow is doing (live)")
    waiting_reason: str | None = None
    live: bool = Field(description="Whether the workflow's live state was merged in")
    stages: list[StageOut]
    commit_statuses: list[dict[str, Any]]
    event: dict[str, Any]


class CancelOut(BaseModel):
    cancelled: list[uuid.UUID]


class ArtifactOut(BaseModel):
    id: uuid.UUID
    name: str
    type: str | None
    content_type: str
    size: int
    sha256: str
    step_id: uuid.UUID | None
    created_at: datetime
    download_url: str


def _run_out(run: PipelineRun) -> RunOut:
    return RunOut.model_validate(
        {
            **{k: getattr(run, k) for k in RunOut.model_fields if hasattr(run, k)},
            "duration_seconds": elapsed(run.started_at, run.completed_at),
        }
    )


async def _authorized_pipeline(
    session: DbSession, pipeline_id: uuid.UUID, principal: Principal, permission: str
) -> Pipeline:
    pipeline = await PipelineService(session).get(pipeline_id)
    await authorized_service(session, pipeline.service_id, principal, permission)
    return pipeline


async def _authorized_run(
    session: DbSession, run_id: uuid.UUID, principal: Principal, permission: str
) -> PipelineRun:
    run = await RunService(session).get(run_id)
    pipeline = await session.get(Pipeline, run.pipeline_id)
    assert pipeline is not None
    await authorized_service(session, pipeline.service_id, principal, permission)
    return run


async def _live(state: State, run: PipelineRun) -> RunView | None:
    """The workflow's live view of an unfinished run; None when it cannot be had."""
    if run.status in FINISHED_RUN_STATUSES:
        return None
    try:
        handle = (await state.temporal.client()).get_workflow_handle(run.workflow_id)
        return await asyncio.wait_for(
            handle.query(PipelineRunWorkflow.state), timeout=QUERY_TIMEOUT
        )
    except Exception:  # Temporal down, no worker answering, not started yet: the record
        return None


def _detail_out(detail: RunDetail, view: RunView | None) -> RunDetailOut:
    run = detail.run
    live_stages = {s.stage_id: s for s in view.stages} if view else {}
    live_steps = {st.step_id: st.status for s in live_stages.values() for st in s.steps}
    stages = []
    for stage in detail.stages:
        stage_status = stage.status
        if stage_status in ("pending", "running") and stage.id in live_stages:
            stage_status = live_stages[stage.id].status
        steps = [
            StepOut(
                id=step.id,
                name=step.name,
                command=step.command,
                status=(
                    live_steps.get(step.id, step.status)
                    if step.status in ("pending", "running")
                    else step.status
                ),
                exit_code=step.exit_code,
                error=step.error,
                started_at=step.started_at,
                completed_at=step.completed_at,
                duration_seconds=step.duration,
            )
            for step in detail.steps
            if step.stage_id == stage.id
        ]
        stages.append(
            StageOut(
                id=stage.id,
                name=stage.name,
                status=stage_status,
                started_at=stage.started_at,
                completed_at=stage.completed_at,
                duration_seconds=elapsed(stage.started_at, stage.completed_at),
                steps=steps,
            )
        )
    base = _run_out(run).model_dump()
    # A finished status comes from the record, with its error and completion time: the
    # workflow's view may already say "failed" for a record read an instant earlier.
    if view is not None and view.status not in FINISHED_RUN_STATUSES:
        base["status"] = view.status
    return RunDetailOut(
        **base,
        pipeline=detail.pipeline.name,
        phase=view.phase if view else None,
        waiting_reason=view.waiting_reason if view else None,
        live=view is not None,
        stages=stages,
        commit_statuses=run.commit_statuses,
        event=run.event,
    )


# -- starting -----------------------------------------------------------------------------------


@router.post(
    "/{pipeline_id}/run",
    response_model=RunOut,
    status_code=202,
    summary="Start a run of a pipeline at a ref or commit (pipelines:run)",
)
async def run_pipeline(
    pipeline_id: uuid.UUID,
    body: RunIn,
    session: DbSession,
    state: State,
    principal: Principal = require("pipelines:run", ANY_SCOPE),
) -> RunOut:
    pipeline = await _authorized_pipeline(session, pipeline_id, principal, "pipelines:run")
    if not pipeline.enabled:
        raise Conflict(f"pipeline {pipeline.name} is disabled; enable it to run it")
    if not parse_triggers(pipeline.triggers).manual:
        raise Conflict(f"pipeline {pipeline.name} has manual runs turned off (triggers.manual)")
    ref = body.ref
    branch = ref.removeprefix("refs/heads/") if ref and not ref.startswith("refs/tags/") else None
    run, _ = await RunService(session).create(
        pipeline,
        RunRequest(
            trigger_type="manual",
            triggered_by=principal.label,
            ref=ref,
            sha=body.sha.lower() if body.sha else None,
            branch=branch,
            parameters=body.parameters,
        ),
    )
    labels = (await run_labels(session, [run]))[run.id]
    await session.commit()  # the workflow's first activity reads the run
    await start_run(await state.temporal.client(), run, labels)
    return _run_out(run)


@router.post(
    "/runs/{run_id}/rerun",
    response_model=RunOut,
    status_code=202,
    summary="Re-run a finished run at its commit, from its failed stage (pipelines:run)",
)
async def rerun(
    run_id: uuid.UUID,
    body: RerunIn,
    session: DbSession,
    state: State,
    principal: Principal = require("pipelines:run", ANY_SCOPE),
) -> RunOut:
    original = await _authorized_run(session, run_id, principal, "pipelines:run")
    if original.status not in FINISHED_RUN_STATUSES:
        raise Conflict(f"run #{original.number} is still {original.status}; cancel it first")
    service = RunService(session)
    stages = [s.name for s in (await service.detail(original)).stages]
    from_stage = None
    if not body.all_stages:
        from_stage = body.from_stage or await service.failed_stage(original)
        if from_stage is not None and from_stage not in stages:
            raise BadRequest(
                f"run #{original.number} has no stage {from_stage!r} (it has: "
                f"{', '.join(stages) or 'none'})"
            )
    pipeline = await session.get(Pipeline, original.pipeline_id)
    assert pipeline is not None
    run, _ = await service.create(
        pipeline,
        RunRequest(
            trigger_type="rerun",
            triggered_by=principal.label,
            ref=original.ref,
            sha=original.git_sha,
            branch=original.branch,
            parameters=original.parameters,
            rerun_of=original,
            config=original.config,
        ),
    )
    labels = (await run_labels(session, [run]))[run.id]
    await session.commit()
    await start_run(await state.temporal.client(), run, labels, rerun_from_stage=from_stage)
    return _run_out(run)


# -- cancelling ---------------------------------------------------------------------------------


@router.post(
    "/{pipeline_id}/cancel",
    response_model=CancelOut,
    summary="Cancel every queued or running run of a pipeline (pipelines:run)",
)
async def cancel_pipeline(
    pipeline_id: uuid.UUID,
    session: DbSession,
    state: State,
    principal: Principal = require("pipelines:run", ANY_SCOPE),
) -> CancelOut:
    pipeline = await _authorized_pipeline(session, pipeline_id, principal, "pipelines:run")
    service = RunService(session)
    unfinished = await service.unfinished(pipeline.id)
    await session.commit()
    client = await state.temporal.client()
    cancelled = [run.id for run in unfinished if await cancel_run(client, run)]
    for run_id in cancelled:
        await service.audit.record("pipeline_run.cancel", "pipeline_run", run_id)
    return CancelOut(cancelled=cancelled)


@router.post(
    "/runs/{run_id}/cancel",
    response_model=CancelOut,
    summary="Cancel one run (pipelines:run)",
)
async def cancel_one(
    run_id: uuid.UUID,
    session: DbSession,
    state: State,
    principal: Principal = require("pipelines:run", ANY_SCOPE),
) -> CancelOut:
    run = await _authorized_run(session, run_id, principal, "pipelines:run")
    if run.status in FINISHED_RUN_STATUSES:
        raise Conflict(f"run #{run.number} already {run.status}")
    await session.commit()
    if not await cancel_run(await state.temporal.client(), run):
        return CancelOut(cancelled=[])
    await RunService(session).audit.record("pipeline_run.cancel", "pipeline_run", run.id)
    return CancelOut(cancelled=[run.id])


# -- approving a fork's pull request ------------------------------------------------------------


async def _decide(
    run_id: uuid.UUID,
    session: DbSession,
    state: State,
    principal: Principal,
    decision: Literal["approve", "reject"],
) -> RunOut:
    """The API checks `pipelines:run` here; the workflow's `pipelines.decide` activity checks
    it again from the database before anything is recorded."""
    run = await _authorized_run(session, run_id, principal, "pipelines:run")
    if run.status != "awaiting_approval":
        raise Conflict(f"run #{run.number} is {run.status}, not awaiting approval")
    await session.commit()
    result: ApprovalResult = await execute_update(
        await state.temporal.client(),
        run.workflow_id,
        PipelineRunWorkflow.approve,
        ApprovalRequest(user_id=principal.user_id, key_id=principal.key_id, decision=decision),
        doing=f"{decision} the pipeline run",
        gone=f"run #{run.number}'s workflow is not running; try again in a minute",
    )
    await RunService(session).audit.record(
        f"pipeline_run.{decision}",
        "pipeline_run",
        run.id,
        before={"status": "awaiting_approval"},
        after={"status": result.status, "decided_by": result.decided_by},
    )
    await session.refresh(run)
    return _run_out(run)


@router.post(
    "/runs/{run_id}/approve",
    response_model=RunOut,
    summary="Let a fork pull request's run go: its steps start (pipelines:run)",
)
async def approve_run(
    run_id: uuid.UUID,
    session: DbSession,
    state: State,
    principal: Principal = require("pipelines:run", ANY_SCOPE),
) -> RunOut:
    return await _decide(run_id, session, state, principal, "approve")


@router.post(
    "/runs/{run_id}/reject",
    response_model=RunOut,
    summary="Refuse a fork pull request's run: it ends cancelled, nothing ran (pipelines:run)",
)
async def reject_run(
    run_id: uuid.UUID,
    session: DbSession,
    state: State,
    principal: Principal = require("pipelines:run", ANY_SCOPE),
) -> RunOut:
    return await _decide(run_id, session, state, principal, "reject")


# -- reading ------------------------------------------------------------------------------------


@router.get("/runs", response_model=PageOut[RunOut], summary="List runs, newest first")
async def list_runs(
    request: Request,
    session: DbSession,
    principal: Principal = require("pipelines:read", ANY_SCOPE),
    pipeline_id: uuid.UUID | None = Query(None),
    service_id: uuid.UUID | None = Query(None),
    status: str | None = Query(
        None, pattern=f"^({'|'.join(RUN_STATUSES)})$", description="Run status"
    ),
    branch: str | None = Query(None, max_length=1024),
    trigger_type: str | None = Query(None, pattern="^(push|pull_request|tag|manual|cron|rerun)$"),
    sha: str | None = Query(None, pattern=r"^[0-9a-fA-F]{4,40}$", description="Commit prefix"),
    page: PageRequest = Depends(page_params),
) -> PageOut[RunOut]:
    f = RunFilter(
        visible=Visibility.of(principal, "pipelines:read"),
        pipeline_id=pipeline_id,
        service_id=service_id,
        status=status,
        branch=branch,
        trigger_type=trigger_type,
        sha=sha,
    )
    found = await RunService(session).search(f, page)
    return page_response(request, found, _run_out)


@router.get(
    "/runs/{run_id}",
    response_model=RunDetailOut,
    summary="A run with its stages and steps; live state merged while it runs",
)
async def get_run(
    run_id: uuid.UUID,
    session: DbSession,
    state: State,
    principal: Principal = require("pipelines:read", ANY_SCOPE),
) -> RunDetailOut:
    run = await _authorized_run(session, run_id, principal, "pipelines:read")
    detail = await RunService(session).detail(run)
    await session.commit()
    return _detail_out(detail, await _live(state, run))


def _line_text(names: dict[uuid.UUID, str], step_id: uuid.UUID, line: dict[str, Any]) -> str:
    marker = "##" if line.get("stream") == "system" else "|"
    return f"{names.get(step_id, str(step_id))} {marker} {line.get('text', '')}"


async def _step_names(session: AsyncSession, run_id: uuid.UUID) -> dict[uuid.UUID, str]:
    """`stage/step` by step id, to label log lines."""
    detail = await RunService(session).detail(await RunService(session).get(run_id))
    stage_names = {s.id: s.name for s in detail.stages}
    return {st.id: f"{stage_names.get(st.stage_id, '?')}/{st.name}" for st in detail.steps}


@router.get(
    "/runs/{run_id}/logs",
    summary="A run's log: plain text, or a live Server-Sent Events stream until the run ends",
    response_class=PlainTextResponse,
    responses={200: {"content": {"text/plain": {}, "text/event-stream": {}}}},
)
async def run_logs(
    run_id: uuid.UUID,
    session: DbSession,
    state: State,
    request: Request,
    follow: bool = Query(False, description="Stream as Server-Sent Events until the run ends"),
    after: int = Query(0, ge=0, description="Only chunks after this event id"),
    last_event_id: str | None = Header(None, alias="Last-Event-ID"),
    principal: Principal = require("pipelines:read", ANY_SCOPE),
) -> Any:
    run = await _authorized_run(session, run_id, principal, "pipelines:read")
    wants_stream = follow or "text/event-stream" in request.headers.get("accept", "")
    if last_event_id and last_event_id.isdigit():
        after = max(after, int(last_event_id))
    if wants_stream:
        return StreamingResponse(
            _sse(state, run.id, after),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    await session.commit()
    return StreamingResponse(
        _text_log(state, run.id, after), media_type="text/plain; charset=utf-8"
    )


async def _text_log(state: State, run_id: uuid.UUID, after: int) -> AsyncIterator[str]:
    """The log as text, read a page of chunks at a time (each in its own transaction), so a
    long log is never held in memory whole."""
    async with transaction(state.sessions) as session:
        names = await _step_names(session, run_id)
    while True:
        async with transaction(state.sessions) as session:
            chunks = await RunService(session).log_chunks(run_id, after=after, limit=LOG_PAGE)
            if any(chunk.step_id not in names for chunk in chunks):
                names = await _step_names(session, run_id)
        if not chunks:
            return
        yield "".join(
            _line_text(names, chunk.step_id, line) + "\n"
            for chunk in chunks
            for line in chunk.lines
        )
        after = chunks[-1].id


def _event(name: str, data: Any, event_id: int | None = None) -> str:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


async def _sse(state: State, run_id: uuid.UUID, after: int) -> AsyncIterator[str]:
    """`log` events (one per chunk, id = chunk id, to resume with Last-Event-ID), a `status`
    event when the run's status changes, and `end` once the run has finished and every chunk
    was sent."""
    async with transaction(state.sessions) as session:
        names = await _step_names(session, run_id)
    status: str | None = None
    idle = 0.0
    yield "retry: 2000\n\n"
    while True:
        async with transaction(state.sessions) as session:
            service = RunService(session)
            chunks = await service.log_chunks(run_id, after=after, limit=200)
            run = await service.get(run_id)
            if any(chunk.step_id not in names for chunk in chunks):
                names = await _step_names(session, run_id)
        for chunk in chunks:
            lines = [
                {**line, "step": names.get(chunk.step_id), "step_id": str(chunk.step_id)}
                for line in chunk.lines
            ]
            yield _event("log", lines, chunk.id)
            after = chunk.id
        if run.status != status:
            status = run.status
            yield _event("status", {"status": status})
        if chunks:
            idle = 0.0
            continue
        if status in FINISHED_RUN_STATUSES:
            yield _event("end", {"status": status})
            return
        await asyncio.sleep(LOG_POLL)
        idle += LOG_POLL
        if idle >= LOG_KEEPALIVE:
            idle = 0.0
            yield ": keep-alive\n\n"


@router.get(
    "/runs/{run_id}/artifacts",
    response_model=list[ArtifactOut],
    summary="A run's artifacts (name, type, size, SHA-256)",
)
async def run_artifacts(
    run_id: uuid.UUID,
    session: DbSession,
    request: Request,
    principal: Principal = require("pipelines:read", ANY_SCOPE),
) -> list[ArtifactOut]:
    run = await _authorized_run(session, run_id, principal, "pipelines:read")
    found = await RunService(session).artifacts(run.id)
    base = str(request.url_for("download_artifact", run_id=run.id, name="__name__"))
    return [
        ArtifactOut(
            id=a.id,
            name=a.name,
            type=a.type,
            content_type=a.content_type,
            size=a.size,
            sha256=a.sha256,
            step_id=a.step_id,
            created_at=a.created_at,
            download_url=base.replace("__name__", a.name),
        )
        for a in found
    ]


@router.get(
    "/runs/{run_id}/artifacts/{name}",
    name="download_artifact",
    summary="Download an artifact",
    response_class=FileResponse,
)
async def download_artifact(
    run_id: uuid.UUID,
    name: str,
    session: DbSession,
    state: State,
    principal: Principal = require("pipelines:read", ANY_SCOPE),
) -> FileResponse:
    run = await _authorized_run(session, run_id, principal, "pipelines:read")
    artifact = await RunService(session).artifact(run.id, name)
    try:
        path = ArtifactStore(state.settings.artifact_root).path(artifact.path)
    except ArtifactNotFound:
        raise NotFound(f"artifact {name!r} is recorded but its file is gone") from None
    filename = path.name
    return FileResponse(
        path,
        media_type=artifact.content_type,
        filename=filename,
        headers={"X-Checksum-SHA256": artifact.sha256},
    )
