"""Pipeline run activities: admit a run (concurrency limit, superseded runs), check out its
commit and plan its stages, run one step through the configured runner (logs written as they
are produced), record stage and run outcomes, report commit statuses, clean up the workspace.

Every write is idempotent under retries: stage and step rows take ids the plan chose, a log
batch is keyed by (step, first line), and a retried step continues the step's line numbers."""

from __future__ import annotations

import asyncio
import shutil
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity
from temporalio.exceptions import ApplicationError

from core.catalog.repositories import parse_repository_url
from core.db.engine import transaction
from core.db.types import utcnow
from core.errors import AppError, ValidationFailed
from core.git_hosts.bindings import connection_of
from core.git_hosts.bindings import holder as binding_holder
from core.git_hosts.connections import token_of
from core.models.catalog import Service
from core.models.identity import Organization, Team
from core.models.pipelines import (
    BuildArtifact,
    Pipeline,
    PipelineLogChunk,
    PipelineRun,
    PipelineSecret,
    PipelineStage,
    PipelineStep,
)
from core.notifications.channels import team_channel_ids
from core.pipelines.approvals import decide
from core.pipelines.artifacts import ArtifactStore
from core.pipelines.commit_status import (
    CommitStatus,
    CommitStatusReporter,
    StatusReportRejected,
    StatusReportRetryable,
)
from core.pipelines.definition import (
    DEFINITION_PATH,
    Step,
    definition_from_json,
    parse_definition,
)
from core.pipelines.git import (
    CheckoutResult,
    GitError,
    UnknownRevision,
    checkout,
    reachable,
    read_file_at,
    rewrite_url,
)
from core.pipelines.run_messages import (
    FINISHED_RUN_STATUSES,
    GIT_CHECKOUT_FAILED,
    REPOSITORY_NOT_BOUND,
    RUN_INVALID,
    RUNNER_UNAVAILABLE,
    UNKNOWN_REVISION,
    Admission,
    ApprovalResult,
    CheckoutInput,
    DecideInput,
    FinishInput,
    FinishResult,
    Plan,
    PlannedStage,
    PlannedStep,
    RunContext,
    RunInput,
    RunRef,
    StageUpdate,
    StatusReport,
    StepInput,
    StepResult,
)
from core.pipelines.runners import LogLine, Runner, RunnerUnavailable, StepSpec
from core.pipelines.runs import RunRequest, RunService, elapsed
from core.pipelines.secrets import LogMasker, step_secrets

OUTPUT_TAIL_LINES = 50
RUN_GONE = "PipelineRunGone"  # ApplicationError type: the run's record is missing


@dataclass
class GitAccess:
    """How workers reach repositories: URL rewrites (mirrors), and the global token per host
    kind, used (outside production only) when the repository's Git host connection has none."""

    rewrites: dict[str, str] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)
    extra_hosts: dict[str, str] = field(default_factory=dict)
    allow_global_tokens: bool = True

    def token(self, host_kind: str | None, token: str | None) -> str | None:
        """The connection's `token`, else (development only) the host kind's global one."""
        if token is not None or not self.allow_global_tokens:
            return token
        return self.tokens.get(host_kind or "")

    async def checkout(
        self,
        url: str,
        host_kind: str | None,
        sha_or_ref: str,
        workspace: Path,
        token: str | None = None,
    ) -> CheckoutResult:
        """`sha_or_ref` of the repository at `url` (rewritten) with `token` (see `token`)."""
        return await checkout(
            rewrite_url(url, self.rewrites),
            sha_or_ref,
            workspace,
            token=self.token(host_kind, token),
        )

    async def reachable(
        self, url: str, host_kind: str | None, sha: str, workspace: Path, token: str | None
    ) -> bool:
        """Whether the commit checked out in `workspace` is on a branch or tag of `url`."""
        return await reachable(
            rewrite_url(url, self.rewrites), sha, workspace, token=self.token(host_kind, token)
        )

    async def read_file(
        self, url: str, host_kind: str | None, ref: str, path: str, token: str | None = None
    ) -> str | None:
        """The text of `path` at `ref` of the repository at `url`, or None without it."""
        return await read_file_at(
            rewrite_url(url, self.rewrites), ref, path, token=self.token(host_kind, token)
        )


@dataclass(frozen=True)
class RepositoryAccess:
    """What a run may use of its repository: the token of the Git host connection it is
    bound through (decrypted here, in the activity, never in workflow history) and the slug
    of the organization it is bound to (its commit statuses' context)."""

    token: str | None
    org_slug: str


async def repository_access(session: AsyncSession, run_id: uuid.UUID) -> RepositoryAccess:
    """The run's repository access; a non-retryable failure when the repository is not bound
    to the organization of the run's service (another one holds it, or none does)."""
    run = await session.get(PipelineRun, run_id)
    pipeline = await session.get(Pipeline, run.pipeline_id) if run else None
    service = await session.get(Service, pipeline.service_id) if pipeline else None
    if run is None or service is None:
        raise ApplicationError(f"pipeline run {run_id} not found", type=RUN_GONE)
    org = await session.get(Organization, service.org_id)
    key = service.repository_path
    binding = await binding_holder(session, key) if key else None
    if binding is None or binding.org_id != service.org_id:
        raise ApplicationError(
            f"repository {key} is not bound to this organization "
            f"({org.slug if org else service.org_id})"
            + (" (another organization holds it)" if binding is not None else "")
            + ": a run only checks out, and reports to, a repository its organization holds "
            "through a Git host connection",
            type=REPOSITORY_NOT_BOUND,
            non_retryable=True,
        )
    connection = await connection_of(session, binding)
    token = token_of(connection) if connection is not None else None
    return RepositoryAccess(token=token, org_slug=org.slug if org else str(service.org_id))


def _fail(message: str) -> ApplicationError:
    """The run's own input is at fault (retrying cannot mend it); the message is what the
    run shows. Its workflow completes: see `RUN_FAULTS`."""
    return ApplicationError(message, type=RUN_INVALID, non_retryable=True)


def _git_failure(doing: str, exc: GitError) -> ApplicationError:
    """A Git error as the activity's failure, retried: the repository lacks what was asked
    for (`UNKNOWN_REVISION`, the run's fault), or the Git host could not be read."""
    kind = UNKNOWN_REVISION if isinstance(exc, UnknownRevision) else GIT_CHECKOUT_FAILED
    return ApplicationError(f"{doing} failed: {exc}", type=kind)


def _workspace(root: Path, run_id: uuid.UUID) -> Path:
    return root / str(run_id)


class PipelineActivities:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        runner: Runner,
        *,
        artifacts: ArtifactStore,
        workspace_root: Path,
        git: GitAccess | None = None,
        reporter: CommitStatusReporter | None = None,
        platform_url: str = "",
    ) -> None:
        self._sessions = sessions
        self._runner = runner
        self._artifacts = artifacts
        self._workspace_root = workspace_root
        self._git = git or GitAccess()
        self._reporter = reporter
        self._platform_url = platform_url.rstrip("/")

    def all(self) -> list[Callable[..., Any]]:
        """Every activity, for a worker to register."""
        return [
            self.admit,
            self.decide,
            self.abandon,
            self.checkout,
            self.run_step,
            self.record_stage,
            self.finish,
            self.report_status,
            self.cleanup,
        ]

    # -- admission ---------------------------------------------------------------------------

    @activity.defn(name="pipelines.admit")
    async def admit(self, input: RunInput) -> Admission:
        """Start the run if the pipeline's concurrency limit allows (status running), and name
        the older unfinished runs of its branch it supersedes."""
        async with transaction(self._sessions) as session:
            run = await self._run_of(session, input)
            if run is None:
                return Admission(admitted=False, gone=True, reason="the pipeline is gone")
            if run.status in FINISHED_RUN_STATUSES:
                return Admission(admitted=False, gone=True, reason=f"the run is {run.status}")
            pipeline = await session.scalar(
                select(Pipeline).where(Pipeline.id == run.pipeline_id).with_for_update()
            )
            # Read again under the pipeline's lock: a cancel before admission (`abandon`, which
            # takes the same lock) may have ended the run since it was read.
            await session.refresh(run)
            if run.status in FINISHED_RUN_STATUSES:
                return Admission(admitted=False, gone=True, reason=f"the run is {run.status}")
            service = await session.get(Service, pipeline.service_id) if pipeline else None
            if pipeline is None or service is None or pipeline.is_deleted or service.is_deleted:
                run.status, run.error, run.completed_at = "cancelled", "pipeline deleted", utcnow()
                return Admission(admitted=False, gone=True, reason="the pipeline was deleted")
            if run.status == "awaiting_approval":  # only `decide` lets it go
                return Admission(admitted=False, reason="the run waits for approval")
            if run.status == "queued":
                limit = pipeline.concurrency_limit
                if limit:
                    running = await session.scalar(
                        select(func.count())
                        .select_from(PipelineRun)
                        .where(
                            PipelineRun.pipeline_id == pipeline.id,
                            PipelineRun.status == "running",
                        )
                    )
                    if (running or 0) >= limit:
                        return Admission(
                            admitted=False,
                            reason=f"{running} of at most {limit} runs of {pipeline.name} "
                            "are running",
                        )
                run.status, run.started_at = "running", utcnow()
            superseded: list[str] = []
            if pipeline.cancel_superseded and run.branch:
                superseded = list(
                    await session.scalars(
                        select(PipelineRun.workflow_id).where(
                            PipelineRun.pipeline_id == pipeline.id,
                            PipelineRun.branch == run.branch,
                            PipelineRun.number < run.number,
                            PipelineRun.status.not_in(FINISHED_RUN_STATUSES),
                        )
                    )
                )
            context = await self._context(session, run, pipeline, service)
            if run.rerun_of_id is not None:
                context.rerun_from_stage = input.rerun_from_stage
            return Admission(admitted=True, context=context, superseded=superseded)

    @activity.defn(name="pipelines.decide")
    async def decide(self, input: DecideInput) -> ApprovalResult:
        """Record a decision on a run awaiting approval, after reading the approver's grants
        again (`core.pipelines.approvals`). Refused (non-retryable, type `Forbidden`) when
        they do not hold pipelines:run on the pipeline."""
        try:
            async with transaction(self._sessions) as session:
                return await decide(session, input.run_id, input.request)
        except AppError as exc:
            kind = "Forbidden" if exc.status_code == 403 else "Conflict"
            raise ApplicationError(exc.message, type=kind, non_retryable=True) from None

    async def _run_of(self, session: AsyncSession, input: RunInput) -> PipelineRun | None:
        """The run to admit; a scheduled start records it now (once: its id comes from the
        workflow id the schedule chose)."""
        if input.run_id is not None:
            run = await session.get(PipelineRun, input.run_id)
            if run is None:
                raise ApplicationError(f"pipeline run {input.run_id} not found", type=RUN_GONE)
            return run
        pipeline = await session.get(Pipeline, input.pipeline_id)
        if pipeline is None or pipeline.is_deleted:
            return None
        workflow_id = activity.info().workflow_id
        run, _ = await RunService(session).create(
            pipeline,
            RunRequest(trigger_type="cron", dedupe_key=workflow_id, workflow_id=workflow_id),
        )
        return run

    async def _context(
        self, session: AsyncSession, run: PipelineRun, pipeline: Pipeline, service: Service
    ) -> RunContext:
        config = run.config
        if config is None and pipeline.source == "inline":
            config = pipeline.config
        org = await session.get(Organization, service.org_id)
        team = await session.get(Team, service.owner_team_id)
        return RunContext(
            run_id=run.id,
            number=run.number,
            pipeline_id=pipeline.id,
            pipeline=pipeline.name,
            service=service.name,
            team_id=service.owner_team_id,
            organization=org.slug if org else None,
            team=team.slug if team else None,
            channel_ids=await team_channel_ids(session, service.owner_team_id),
            repository_url=service.repository_url,
            host_kind=service.repository_host,
            source=pipeline.source,
            config=config,
            ref=run.ref,
            sha=run.git_sha,
            branch=run.branch,
            trigger_type=run.trigger_type,
            triggered_by=run.triggered_by,
            run_url=f"{self._platform_url}/pipelines/runs/{run.id}",
            rerun_of_id=run.rerun_of_id,
            from_fork=run.from_fork,
            target_branch=(run.event or {}).get("target_branch"),
        )

    # -- checkout and plan -------------------------------------------------------------------

    @activity.defn(name="pipelines.checkout")
    async def checkout(self, input: CheckoutInput) -> Plan:
        """Check the commit out into the run's workspace, resolve the definition (stored, or
        `.idp/pipeline.yaml` at the commit) and write the run's stage and step rows."""
        ctx = input.context
        if not ctx.repository_url:
            raise ApplicationError(
                f"service {ctx.service} has no repository URL to check out",
                type=REPOSITORY_NOT_BOUND,
                non_retryable=True,
            )
        wanted = ctx.sha or ctx.ref or "HEAD"
        workspace = _workspace(self._workspace_root, ctx.run_id)
        async with transaction(self._sessions) as session:
            access = await repository_access(session, ctx.run_id)
        url, kind, token = ctx.repository_url, ctx.host_kind, access.token
        try:
            result = await self._git.checkout(url, kind, wanted, workspace, token)
            # A person names any commit; hosts also serve forks' and pull requests' commits by
            # SHA: a manual run runs only what a branch or tag of the repository holds.
            on_branch = ctx.trigger_type != "manual" or await self._git.reachable(
                url, kind, result.sha, workspace, token
            )
        except GitError as exc:
            raise _git_failure(f"checkout of {wanted} from {url}", exc) from None
        if not on_branch:
            raise _fail(
                f"commit {result.sha[:12]} is not reachable from a branch or tag of "
                f"{ctx.repository_url}: a manual run may only name the repository's own commits"
            )
        config = ctx.config
        if config is None and ctx.from_fork:
            config = await self._target_branch_definition(ctx, token)
        elif config is None:
            path = workspace / DEFINITION_PATH
            if not path.is_file():
                raise _fail(f"{DEFINITION_PATH} does not exist at {result.sha[:12]}")
            if not path.resolve().is_relative_to(workspace.resolve()):
                # A link in the repository would have the worker read its own files.
                raise _fail(
                    f"{DEFINITION_PATH} at {result.sha[:12]} is a link to a file outside the "
                    "repository; commit the definition itself"
                )
            text = path.read_text(encoding="utf-8", errors="replace")
            config = _definition_config(text, f"at {result.sha[:12]}")
        async with transaction(self._sessions) as session:
            stages = await self._plan(session, ctx, config)
            await session.execute(
                update(PipelineRun)
                .where(PipelineRun.id == ctx.run_id)
                .values(git_sha=result.sha, config=config)
            )
        return Plan(sha=result.sha, subject=result.subject, stages=stages)

    async def _target_branch_definition(
        self, ctx: RunContext, token: str | None = None
    ) -> dict[str, Any]:
        """A fork's pull request follows the definition on its target branch of the base
        repository, never the one in the fork's commits (which anyone can change)."""
        if not ctx.target_branch or not ctx.repository_url:
            raise _fail("a fork's pull request names no target branch to read the definition on")
        ref = f"refs/heads/{ctx.target_branch}"
        try:
            text = await self._git.read_file(
                ctx.repository_url, ctx.host_kind, ref, DEFINITION_PATH, token
            )
        except GitError as exc:
            doing = f"reading {DEFINITION_PATH} on {ctx.target_branch} of {ctx.repository_url}"
            raise _git_failure(doing, exc) from None
        if text is None:
            raise _fail(
                f"{DEFINITION_PATH} does not exist on the target branch {ctx.target_branch} "
                "(a fork's pull request never uses the fork's definition)"
            )
        return _definition_config(text, f"on the target branch {ctx.target_branch}")

    async def _plan(
        self, session: AsyncSession, ctx: RunContext, config: dict[str, Any]
    ) -> list[PlannedStage]:
        existing = await _planned(session, ctx.run_id)
        if existing:
            return existing  # a retried checkout: the rows are written
        definition = definition_from_json(config)
        reused = await _reused_stages(session, ctx)
        planned: list[PlannedStage] = []
        for s_pos, stage in enumerate(definition.stages):
            stage_status = "pending"
            if stage.name in reused:
                stage_status = "reused"
            elif not stage.applies_to(ctx.branch):
                stage_status = "skipped"
            row = PipelineStage(
                id=uuid.uuid4(),
                run_id=ctx.run_id,
                name=stage.name,
                position=s_pos,
                status=stage_status,
            )
            session.add(row)
            steps: list[PlannedStep] = []
            for p_pos, step in enumerate(stage.steps):
                status = stage_status
                if status == "pending" and not step.applies_to(ctx.branch):
                    status = "skipped"
                step_row = PipelineStep(
                    id=uuid.uuid4(),
                    stage_id=row.id,
                    run_id=ctx.run_id,
                    name=step.name,
                    position=s_pos * 1000 + p_pos,
                    command=step.run,
                    status=status,
                )
                session.add(step_row)  # written with the run's update, in one flush
                steps.append(
                    _planned_step(
                        step, definition.env, step_row.id, status, network=definition.network
                    )
                )
            if stage_status == "pending" and all(st.status == "skipped" for st in steps):
                stage_status = row.status = "skipped"  # `when` skips every step
            planned.append(
                PlannedStage(
                    stage_id=row.id,
                    name=stage.name,
                    parallel=stage.parallel,
                    status=stage_status,
                    steps=steps,
                )
            )
        return planned

    # -- steps ---------------------------------------------------------------------------------

    @activity.defn(name="pipelines.run_step")
    async def run_step(self, input: StepInput) -> StepResult:
        """Run one step through the runner. Its log lines are stored as they arrive; a retry
        after a lost worker says so in the log and continues the line numbers."""
        step = input.step
        info = activity.info()
        workspace = _workspace(self._workspace_root, input.run_id)
        if not (workspace / ".git").exists() and input.repository_url:
            # another host, or the workspace was lost: check the commit out again
            async with transaction(self._sessions) as session:
                token = (await repository_access(session, input.run_id)).token
            url, kind = input.repository_url, input.host_kind
            try:
                await self._git.checkout(url, kind, input.sha, workspace, token)
            except GitError as exc:
                raise _git_failure(f"checkout of {input.sha[:12]} from {url}", exc) from None
        async with transaction(self._sessions) as session:
            secrets, withheld = await _secrets_for(session, input.run_id)
        sink = _LogSink(self._sessions, input.run_id, step.step_id, LogMasker(secrets.values()))
        async with transaction(self._sessions) as session:
            await sink.resume(session)
            now = utcnow()
            await session.execute(
                update(PipelineStep)
                .where(PipelineStep.id == step.step_id)
                .values(status="running", started_at=now, error=None)
            )
            await session.execute(  # the stage runs from its first step
                update(PipelineStage)
                .where(PipelineStage.id == input.stage_id, PipelineStage.status == "pending")
                .values(status="running", started_at=now)
            )
        if info.attempt > 1:
            await sink.system(
                f"attempt {info.attempt}: the previous attempt was interrupted "
                "(its worker stopped); the step starts again"
            )
        if withheld:
            await sink.system(
                f"a fork's pull request: the pipeline's {withheld} secret(s) are not given "
                "to its steps"
            )
        env = {
            **step.env,
            **secrets,  # decrypted here, never part of the activity's input or result
            "CI": "true",
            "IDP_RUN_ID": str(input.run_id),
            "IDP_GIT_SHA": input.sha,
            "IDP_STAGE": input.stage,
            "IDP_STEP": step.name,
        }
        spec = StepSpec(
            step_id=str(step.step_id),
            command=step.command,
            env=env,
            workdir=workspace,
            timeout=step.timeout_seconds,
            image=step.image,
            network=step.network,
        )
        try:
            outcome = await self._runner.run(spec, sink, heartbeat=activity.heartbeat)
        except asyncio.CancelledError:
            await sink.close()
            await self._end_step(step.step_id, "cancelled", None, "cancelled", sink.tail())
            raise
        except Exception as exc:
            await sink.close()
            error = sink.masked(f"{exc}") or ""
            await self._end_step(step.step_id, "failed", None, error, sink.tail())
            if isinstance(exc, RunnerUnavailable):  # retried; in the end, the platform's failure
                raise ApplicationError(error, type=RUNNER_UNAVAILABLE) from None
            if error == f"{exc}":
                raise
            # the message showed a secret: the failure (and so the history) gets it masked
            retryable = not getattr(exc, "non_retryable", False)
            kind = exc.type if isinstance(exc, ApplicationError) else type(exc).__name__
            raise ApplicationError(error, type=kind, non_retryable=not retryable) from None
        await sink.close()
        outcome.error = sink.masked(outcome.error)
        stored = 0
        if step.artifacts and outcome.status != "cancelled":
            stored = await self._collect(input, workspace, sink)
        await self._end_step(
            step.step_id, outcome.status, outcome.exit_code, outcome.error, sink.tail()
        )
        return StepResult(
            status=outcome.status,
            exit_code=outcome.exit_code,
            error=outcome.error,
            duration_seconds=outcome.duration_seconds,
            artifacts=stored,
        )

    async def _collect(self, input: StepInput, workspace: Path, sink: _LogSink) -> int:
        result = await self._artifacts.collect(
            str(input.run_id), input.step.name, workspace, input.step.artifacts
        )
        async with transaction(self._sessions) as session:
            for stored in result.artifacts:
                found = await session.scalar(
                    select(BuildArtifact).where(
                        BuildArtifact.run_id == input.run_id, BuildArtifact.name == stored.name
                    )
                )
                row = found or BuildArtifact(run_id=input.run_id, name=stored.name)
                row.step_id = input.step.step_id
                row.type = stored.type
                row.path = stored.path_in_store
                row.content_type = stored.content_type
                row.size = stored.size
                row.sha256 = stored.sha256
                session.add(row)
        for stored in result.artifacts:
            await sink.system(
                f"artifact {stored.name}: {stored.size} bytes, sha256 {stored.sha256[:16]}…"
            )
        for name in result.missing:
            await sink.system(f"artifact {name}: nothing matched its path")
        for problem in result.refused:
            await sink.system(f"artifact {problem}")
        return len(result.artifacts)

    async def _end_step(
        self,
        step_id: uuid.UUID,
        status: str,
        exit_code: int | None,
        error: str | None,
        output: str,
    ) -> None:
        async with transaction(self._sessions) as session:
            row = await session.get(PipelineStep, step_id)
            if row is None:
                return
            now = utcnow()
            row.status, row.exit_code, row.error, row.output = status, exit_code, error, output
            row.completed_at = now
            row.duration = elapsed(row.started_at, now)

    # -- records ---------------------------------------------------------------------------------

    @activity.defn(name="pipelines.record_stage")
    async def record_stage(self, update_: StageUpdate) -> None:
        async with transaction(self._sessions) as session:
            stage = await session.get(PipelineStage, update_.stage_id)
            if stage is None:
                return
            now = utcnow()
            if update_.status == "running":
                stage.started_at = stage.started_at or now
            elif update_.status != "pending":
                stage.completed_at = now
            stage.status = update_.status
            if update_.skip_rest or update_.status in ("skipped", "cancelled"):
                final = "cancelled" if update_.status == "cancelled" else "skipped"
                await session.execute(
                    update(PipelineStep)
                    .where(
                        PipelineStep.stage_id == stage.id,
                        PipelineStep.status.in_(("pending", "running")),
                    )
                    .values(status=final, completed_at=now)
                )

    @activity.defn(name="pipelines.abandon")
    async def abandon(self, input: RunInput) -> FinishResult:
        """Record as cancelled a run cancelled before it was admitted (queued, or admitted by
        an attempt that finished after the cancel), under the pipeline's lock as `admit`
        takes it; name the queued runs that may start if it held a slot."""
        async with transaction(self._sessions) as session:
            run = await session.scalar(
                select(PipelineRun).where(PipelineRun.workflow_id == activity.info().workflow_id)
            )
            if run is None:  # a cron firing cancelled before its run was recorded
                return FinishResult()
            await session.scalar(
                select(Pipeline.id).where(Pipeline.id == run.pipeline_id).with_for_update()
            )
            await session.refresh(run)
            if run.status not in FINISHED_RUN_STATUSES:
                now = utcnow()
                run.status, run.error, run.completed_at = "cancelled", "cancelled", now
            return FinishResult(waiting=await _queued(session, run.pipeline_id))

    @activity.defn(name="pipelines.finish")
    async def finish(self, input: FinishInput) -> FinishResult:
        """Record the run's outcome (stages still pending become skipped or cancelled) and
        name the queued runs of the pipeline that may now start."""
        async with transaction(self._sessions) as session:
            run = await session.get(PipelineRun, input.run_id)
            if run is None:
                raise ApplicationError(f"pipeline run {input.run_id} not found", type=RUN_GONE)
            now = utcnow()
            if run.status not in FINISHED_RUN_STATUSES:
                run.status, run.error, run.completed_at = input.status, input.error, now
            rest = "cancelled" if input.status == "cancelled" else "skipped"
            for model in (PipelineStage, PipelineStep):
                await session.execute(
                    update(model)
                    .where(model.run_id == run.id, model.status.in_(("pending", "running")))
                    .values(status=rest, completed_at=now)
                )
            return FinishResult(
                duration_seconds=elapsed(run.started_at, run.completed_at),
                waiting=await _queued(session, run.pipeline_id),
            )

    @activity.defn(name="pipelines.report_status")
    async def report_status(self, report: StatusReport) -> None:
        """Report a commit status to the run's Git host, and record what happened on the run
        (reported, skipped for want of a token, or refused with the host's reason)."""
        async with transaction(self._sessions) as session:
            run = await session.get(PipelineRun, report.run_id)
            if run is None:
                return
            pipeline = await session.get(Pipeline, run.pipeline_id)
            service = await session.get(Service, pipeline.service_id) if pipeline else None
            repository, sha = (service.repository_url if service else None), run.git_sha
            name = pipeline.name if pipeline else "pipeline"
            access: RepositoryAccess | str = "no Git host or commit to report to"
            if repository and sha:
                try:
                    access = await repository_access(session, report.run_id)
                except ApplicationError as exc:
                    access = exc.message
        entry: dict[str, Any] = {"state": report.state, "at": utcnow().isoformat()}
        if isinstance(access, str) or self._reporter is None or not repository or not sha:
            why = access if isinstance(access, str) else "no Git host to report to"
            entry |= {"reported": False, "detail": why}
        else:
            repo = parse_repository_url(repository, self._git.extra_hosts)
            try:
                result = await self._reporter.report(
                    CommitStatus(
                        host_kind=repo.host_kind,
                        repository=repo.key,
                        sha=sha,
                        state=report.state,
                        target_url=f"{self._platform_url}/pipelines/runs/{report.run_id}",
                        description=report.description,
                        # The organization's slug: another organization's run cannot post a
                        # status with the context a branch protection rule requires.
                        context=f"idp/{access.org_slug}/{name}",
                    ),
                    token=access.token,
                    default_token=self._git.allow_global_tokens,
                )
            except StatusReportRetryable as exc:
                raise ApplicationError(str(exc), type="StatusReportRetryable") from None
            except StatusReportRejected as exc:
                entry |= {"reported": False, "detail": str(exc)}
            else:
                detail = result.skipped_reason or result.detail
                entry |= {"reported": result.reported, "detail": detail}
        async with transaction(self._sessions) as session:
            run = await session.get(PipelineRun, report.run_id)
            if run is not None:
                run.commit_statuses = [*run.commit_statuses, entry]

    @activity.defn(name="pipelines.cleanup")
    async def cleanup(self, input: RunRef) -> None:
        """Remove the run's workspace (its artifacts are in the store)."""
        workspace = _workspace(self._workspace_root, input.run_id)
        shutil.rmtree(workspace, ignore_errors=True)


def _planned_step(
    step: Step,
    pipeline_env: dict[str, Any],
    step_id: uuid.UUID,
    status: str,
    *,
    network: bool = False,
) -> PlannedStep:
    """What the workflow passes to the step's activity: the definition's env under the
    step's own, as strings; the step's `network`, else the pipeline's (`network`)."""
    return PlannedStep(
        step_id=step_id,
        name=step.name,
        command=step.run,
        env={k: str(v) for k, v in {**pipeline_env, **step.env}.items()},
        timeout_seconds=step.timeout.total_seconds(),
        image=step.image,
        network=network if step.network is None else step.network,
        artifacts=[a.model_dump() for a in step.artifacts],
        continue_on_error=step.continue_on_error,
        status=status,
    )


def _definition_config(text: str, where: str) -> dict[str, Any]:
    """The parsed definition as stored on the run; an invalid one fails the run, saying why."""
    try:
        definition = parse_definition(text)
    except ValidationFailed as exc:
        problems = "; ".join(
            f"{d.get('field')}: {d.get('message')}"
            + (f" (line {d['line']})" if d.get("line") else "")
            for d in (exc.details or [])
            if isinstance(d, dict)
        )
        raise _fail(f"{DEFINITION_PATH} {where} is invalid: {problems}") from None
    return definition.model_dump(mode="json")


async def _secrets_for(session: AsyncSession, run_id: uuid.UUID) -> tuple[dict[str, str], int]:
    """The run's pipeline secrets, decrypted, and how many were withheld: none are given to
    a fork's pull request (as the run's record says, not the workflow's input)."""
    run = await session.get(PipelineRun, run_id)
    if run is None:
        raise ApplicationError(f"pipeline run {run_id} not found", type=RUN_GONE)
    if run.from_fork:
        count = await session.scalar(
            select(func.count())
            .select_from(PipelineSecret)
            .where(PipelineSecret.pipeline_id == run.pipeline_id)
        )
        return {}, int(count or 0)
    return await step_secrets(session, run.pipeline_id), 0


async def _queued(session: AsyncSession, pipeline_id: uuid.UUID) -> list[str]:
    """The workflow ids of the pipeline's queued runs, oldest first: the ones to wake when a
    run ends and may have freed a slot."""
    waiting = await session.scalars(
        select(PipelineRun.workflow_id)
        .where(PipelineRun.pipeline_id == pipeline_id, PipelineRun.status == "queued")
        .order_by(PipelineRun.number)
    )
    return list(waiting)


async def _planned(session: AsyncSession, run_id: uuid.UUID) -> list[PlannedStage]:
    """The plan already written for the run (a retried checkout), from its rows."""
    stages = list(
        await session.scalars(
            select(PipelineStage)
            .where(PipelineStage.run_id == run_id)
            .order_by(PipelineStage.position)
        )
    )
    if not stages:
        return []
    run = await session.get(PipelineRun, run_id)
    assert run is not None and run.config is not None
    definition = definition_from_json(run.config)
    by_name = {s.name: s for s in definition.stages}
    steps = list(
        await session.scalars(
            select(PipelineStep)
            .where(PipelineStep.run_id == run_id)
            .order_by(PipelineStep.position)
        )
    )
    out: list[PlannedStage] = []
    for stage in stages:
        spec = by_name[stage.name]
        step_specs = {s.name: s for s in spec.steps}
        planned_steps = []
        for row in (r for r in steps if r.stage_id == stage.id):
            step = step_specs[row.name]
            planned_steps.append(
                _planned_step(step, definition.env, row.id, row.status, network=definition.network)
            )
        out.append(
            PlannedStage(
                stage_id=stage.id,
                name=stage.name,
                parallel=spec.parallel,
                status=stage.status,
                steps=planned_steps,
            )
        )
    return out


async def _reused_stages(session: AsyncSession, ctx: RunContext) -> set[str]:
    """For a re-run from a stage: the stages before it, which succeeded in the first run."""
    if ctx.rerun_of_id is None or ctx.rerun_from_stage is None:
        return set()
    rows = await session.scalars(
        select(PipelineStage)
        .where(PipelineStage.run_id == ctx.rerun_of_id)
        .order_by(PipelineStage.position)
    )
    reused: set[str] = set()
    for stage in rows:
        if stage.name == ctx.rerun_from_stage:
            break
        if stage.status in ("succeeded", "skipped", "reused"):
            reused.add(stage.name)
    return reused


class _LogSink:
    """Writes a step's log batches as chunks, each in its own transaction, so a line is
    readable (and survives a crash) within the runner's flush interval."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        run_id: uuid.UUID,
        step_id: uuid.UUID,
        masker: LogMasker | None = None,
    ) -> None:
        self._sessions = sessions
        self._run_id = run_id
        self._step_id = step_id
        self._masker = masker or LogMasker(())
        self._offset = 0
        self._last = 0
        self._tail: deque[str] = deque(maxlen=OUTPUT_TAIL_LINES)

    async def resume(self, session: AsyncSession) -> None:
        """Continue after the lines an earlier attempt stored."""
        last = await session.scalar(
            select(func.max(PipelineLogChunk.last_seq)).where(
                PipelineLogChunk.step_id == self._step_id
            )
        )
        self._offset = self._last = int(last or 0)

    async def __call__(self, batch: list[LogLine]) -> None:
        if not batch:
            return
        lines = [
            {
                "seq": self._offset + line.seq,
                "at": line.at.isoformat(),
                "stream": line.stream,
                "text": line.text,
            }
            for line in batch
        ]
        if self._masker:
            lines = self._masker.feed(lines)  # secrets masked before they are stored
        if lines:
            await self._write(lines)

    async def close(self) -> None:
        """Store what the masker held back (a cut line waiting for its next piece)."""
        held = self._masker.flush()
        if held:
            await self._write(held)

    def masked(self, text: str | None) -> str | None:
        return self._masker.text(text) if text and self._masker else text

    async def system(self, text: str) -> None:
        """A line from the platform itself (not the step's output)."""
        seq = self._last + 1
        self._offset += 1
        await self._write(
            [
                {
                    "seq": seq,
                    "at": utcnow().isoformat(),
                    "stream": "system",
                    "text": self.masked(text),
                }
            ]
        )

    async def _write(self, lines: list[dict[str, Any]]) -> None:
        first, last = lines[0]["seq"], lines[-1]["seq"]
        try:
            async with transaction(self._sessions) as session:
                session.add(
                    PipelineLogChunk(
                        run_id=self._run_id,
                        step_id=self._step_id,
                        first_seq=first,
                        last_seq=last,
                        lines=lines,
                    )
                )
        except IntegrityError:
            pass  # the same batch was written before (a retried write)
        self._last = max(self._last, last)
        self._tail.extend(str(line["text"]) for line in lines)

    def tail(self) -> str:
        return "\n".join(self._tail)
