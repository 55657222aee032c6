"""PipelineRunWorkflow: one per run (workflow id `pipeline-run-<run id>`), on the `pipelines`
task queue.

1. **Admit** (`pipelines.admit`): wait while the pipeline's concurrency limit is reached (a
   finishing run wakes the queued ones with the `wake` signal; they also look again every
   30 s), then cancel the older runs of the same branch when the pipeline cancels superseded
   runs.
2. Report the commit status `pending` and send `pipeline.started`, alongside the work.
3. **Check out** the commit and plan the stages (`pipelines.checkout`).
4. Run the stages in order; a stage's steps one after another, or all at once when the stage
   is `parallel`. A failed step (unless `continue_on_error`) fails its stage: the rest of a
   sequential stage and every later stage are skipped. A step is retried only when its
   worker was lost (the `pipeline_step` retry policy), never because its command failed.
5. **Finish** (`pipelines.finish`), wake queued runs, report `success` / `failure`, send
   `pipeline.succeeded` / `pipeline.failed`, remove the workspace.

Cancelling the workflow cancels the running steps (their processes are killed before the
activity ends), records the run as cancelled, reports `error`, and ends as cancelled.
The `state` query gives the live view: status, phase and each stage's and step's status.

For the Temporal UI: `IdpStatus` follows the run's recorded status, the current details say
what it is doing, each activity has a summary. A run that failed because of the user's work
(a step, its definition, a rejected fork) completes; one the platform could not carry out
(the Git host, the runner, the database failing after their retries) is recorded failed
like the others, then fails its workflow with an ApplicationError typed after what failed
(`core.pipelines.run_messages`: GitCheckoutFailed, RunnerUnavailable, ...)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError, CancelledError
from temporalio.workflow import ActivityCancellationType

from core.temporal import search_attributes
from workflows.failures import failure_message

with workflow.unsafe.imports_passed_through():
    from activities.pipelines import RUN_GONE, PipelineActivities
    from core.notifications.messages import NotificationRequest
    from core.pipelines.run_messages import (
        APPROVE_UPDATE,
        GIT_CHECKOUT_FAILED,
        RECORD_FAILED,
        REPOSITORY_NOT_BOUND,
        RUN_FAULTS,
        RUNNER_UNAVAILABLE,
        STEP_NOT_RUN,
        WAKE_SIGNAL,
        Admission,
        ApprovalRequest,
        ApprovalResult,
        CheckoutInput,
        DecideInput,
        FinishInput,
        PlannedStage,
        PlannedStep,
        RunContext,
        RunInput,
        RunRef,
        RunStatus,
        RunView,
        StageUpdate,
        StatusReport,
        StepInput,
        StepResult,
    )
    from core.pipelines.runs import WORKFLOW_ID_PREFIX, workflow_id_for
    from core.temporal.policies import activity_options
    from workflows.notification import notify

PIPELINES_QUEUE = "pipelines"
ADMISSION_RECHECK = timedelta(seconds=30)
# Added after runs were in flight: a cancel before admission records the run as cancelled.
RECORD_CANCEL_BEFORE_ADMISSION = "record-cancel-before-admission"
# Added after runs were in flight: a fork's pull request waits for the `approve` Update.
AWAIT_FORK_APPROVAL = "await-fork-approval"
AWAITING_APPROVAL = "a pull request from a fork: someone with pipelines:run must approve it"
# Added after runs were in flight: a run the platform could not carry out fails its workflow.
FAIL_ON_PLATFORM_FAILURE = "fail-on-platform-failure"
# The activities' own types worth keeping as the workflow's; others get the phase's type.
PLATFORM_FAILURES = (GIT_CHECKOUT_FAILED, REPOSITORY_NOT_BOUND, RUNNER_UNAVAILABLE, RUN_GONE)
STEP_MARGIN = timedelta(minutes=1)  # on top of the step's own timeout, for the activity
FAILED_STEP_STATUSES = ("failed", "timed_out", "cancelled")

__all__ = ["PIPELINES_QUEUE", "WORKFLOW_ID_PREFIX", "PipelineRunWorkflow", "workflow_id_for"]


def _cancelled(err: ActivityError) -> bool:
    """The activity ended because the run's workflow is being cancelled."""
    return isinstance(err.cause, CancelledError)


def _run_fault(err: ActivityError) -> bool:
    """The activity failed because of the run's own input (its definition, its commit)."""
    cause = err.cause
    return isinstance(cause, ApplicationError) and cause.type in RUN_FAULTS


def _failure_type(err: ActivityError, default: str) -> str:
    """What failed, for the workflow's ApplicationError: the activity's type when it names a
    platform failure, else `default` (the phase's)."""
    cause = err.cause
    if isinstance(cause, ApplicationError) and cause.type in PLATFORM_FAILURES:
        return cause.type
    return default


def _short(sha_or_ref: str | None) -> str:
    """A commit as people write it (7 characters); a ref as it is."""
    if sha_or_ref and len(sha_or_ref) == 40 and all(c in "0123456789abcdef" for c in sha_or_ref):
        return sha_or_ref[:7]
    return sha_or_ref or "HEAD"


@workflow.defn
class PipelineRunWorkflow:
    @workflow.init
    def __init__(self, input: RunInput) -> None:
        self._input = input
        self._run_id = input.run_id
        self._status: RunStatus = "queued"
        self._phase = "waiting"
        self._waiting_reason: str | None = None
        self._stages: list[PlannedStage] = []
        self._error: str | None = None
        self._woken = False
        self._side: list[asyncio.Future[Any]] = []
        self._sha: str | None = None
        self._decision: ApprovalResult | None = None
        self._platform_failure: tuple[str, str] | None = None  # (type, message)
        if input.needs_approval:
            self._status, self._waiting_reason = "awaiting_approval", AWAITING_APPROVAL

    @workflow.signal(name=WAKE_SIGNAL)
    def wake(self) -> None:
        """A run of the same pipeline finished: look at the concurrency limit again."""
        self._woken = True

    @workflow.update(name=APPROVE_UPDATE)
    async def approve(self, request: ApprovalRequest) -> ApprovalResult:
        """Approve (or reject) a fork's run. The caller's word is not taken: `pipelines.decide`
        reads the approver's grants again and refuses (Forbidden) without pipelines:run."""
        assert self._run_id is not None
        try:
            result: ApprovalResult = await workflow.execute_activity_method(
                PipelineActivities.decide,
                DecideInput(run_id=self._run_id, request=request),
                summary=f"decide: {request.decision}",
                **_db(),
            )
        except ActivityError as err:
            cause = err.cause
            if isinstance(cause, ApplicationError):
                raise ApplicationError(cause.message, type=cause.type, non_retryable=True) from None
            raise
        if result.status != "awaiting_approval":
            self._decision = result
        return result

    @approve.validator
    def _approvable(self, request: ApprovalRequest) -> None:
        if self._status != "awaiting_approval" or self._decision is not None:
            raise ApplicationError(
                f"the run is {self._status}, not awaiting approval", type="Conflict"
            )

    @workflow.query
    def state(self) -> RunView:
        return RunView(
            run_id=self._run_id,
            status=self._status,
            phase=self._phase,
            waiting_reason=self._waiting_reason,
            stages=self._stages,
            error=self._error,
        )

    @workflow.run
    async def run(self, input: RunInput) -> RunView:
        try:
            needs_approval = input.needs_approval and workflow.patched(AWAIT_FORK_APPROVAL)
            if needs_approval and not await self._await_approval():
                return self.state()  # rejected
            admission = await self._admit()
        except asyncio.CancelledError:
            if workflow.patched(RECORD_CANCEL_BEFORE_ADMISSION):
                await self._abandon()
            raise
        if admission.context is None:  # the run or its pipeline is gone
            self._status, self._phase, self._error = "cancelled", "done", admission.reason
            search_attributes.set_status("cancelled")
            workflow.set_current_details(f"cancelled: {admission.reason}")
            return self.state()
        ctx = admission.context
        self._run_id = ctx.run_id
        self._status, self._waiting_reason = "running", None
        self._label(ctx)
        search_attributes.set_status("running")
        for workflow_id in admission.superseded:
            await self._cancel_superseded(workflow_id)
        self._report(ctx, "pending", f"#{ctx.number} running")
        self._notify(ctx, "pipeline.started", {})
        try:
            status, error, failed = await self._execute(ctx)
        except asyncio.CancelledError:
            await self._finish(ctx, "cancelled", "cancelled", None)
            raise
        except ActivityError as err:
            if _cancelled(err):  # the cancel met a bookkeeping activity
                await self._finish(ctx, "cancelled", "cancelled", None)
                raise asyncio.CancelledError() from err
            status, error, failed = (
                "failed",
                f"the run could not go on: {failure_message(err)}",
                None,
            )
            self._platform_failed(ctx, RECORD_FAILED, err, "its progress could not be recorded")
        await self._finish(ctx, status, error, failed)
        # (a platform failure in a `continue_on_error` step leaves the outcome to the rest)
        failure = self._platform_failure if status == "failed" else None
        if failure is not None and workflow.patched(FAIL_ON_PLATFORM_FAILURE):
            kind, message = failure
            raise ApplicationError(message, type=kind, non_retryable=True)
        return self.state()

    # -- phases -------------------------------------------------------------------------------

    async def _admit(self) -> Admission:
        while True:
            self._woken = False
            admission: Admission = await workflow.execute_activity_method(
                PipelineActivities.admit, self._input, summary="admit", **_db()
            )
            if admission.admitted or admission.gone:
                return admission
            self._waiting_reason = admission.reason
            workflow.set_current_details(f"queued: {admission.reason}")
            with contextlib.suppress(TimeoutError):  # look again every so often anyway
                await workflow.wait_condition(lambda: self._woken, timeout=ADMISSION_RECHECK)

    async def _await_approval(self) -> bool:
        """Wait (durably, without limit) for a decision on a fork's run; False: rejected."""
        assert self._run_id is not None
        self._phase = "awaiting approval"
        pull_request = f" #{self._input.pull_request}" if self._input.pull_request else ""
        workflow.set_current_details(
            f"waiting for approval of fork pull request{pull_request}: someone with "
            "pipelines:run on the pipeline must approve it"
        )
        self._report_run(self._run_id, "pending", "awaiting approval (a fork's pull request)")
        await workflow.wait_condition(lambda: self._decision is not None)
        assert self._decision is not None
        search_attributes.set_status(self._decision.status)
        if self._decision.status == "queued":
            self._status, self._phase, self._waiting_reason = "queued", "waiting", None
            workflow.set_current_details(f"approved by {self._decision.decided_by}")
            return True
        self._status, self._phase, self._waiting_reason = self._decision.status, "done", None
        self._error = f"rejected by {self._decision.decided_by}"
        workflow.set_current_details(self._error)
        self._report_run(self._run_id, "error", "rejected")
        await asyncio.gather(*self._side, return_exceptions=True)
        return False

    async def _abandon(self) -> None:
        """Cancelled before admission: the record says so too (it said `queued`)."""
        self._phase = "finishing"
        abandoned = await workflow.execute_activity_method(
            PipelineActivities.abandon,
            self._input,
            summary="record cancelled before admission",
            **_db(),
        )
        self._status, self._error = "cancelled", "cancelled"
        search_attributes.set_status("cancelled")
        workflow.set_current_details("cancelled before it started")
        for workflow_id in abandoned.waiting:
            if workflow_id != workflow.info().workflow_id:
                await self._wake(workflow_id)

    async def _cancel_superseded(self, workflow_id: str) -> None:
        if workflow_id == workflow.info().workflow_id:
            return
        try:
            await workflow.get_external_workflow_handle(workflow_id).cancel()
        except Exception as exc:  # it ended meanwhile
            workflow.logger.info("superseded run %s not cancelled: %s", workflow_id, exc)

    async def _execute(self, ctx: RunContext) -> tuple[RunStatus, str | None, tuple[str, str]]:
        """Check out and run the stages: (status, error, (failed stage, failed step))."""
        self._phase = "checking out"
        wanted = _short(ctx.sha or ctx.ref)
        workflow.set_current_details(f"checking out {wanted} of {ctx.repository_url}")
        try:
            plan = await workflow.execute_activity_method(
                PipelineActivities.checkout,
                CheckoutInput(context=ctx),
                summary=f"checkout {wanted}",
                **activity_options("git"),
            )
        except ActivityError as err:
            if _cancelled(err):
                raise asyncio.CancelledError() from err
            if not _run_fault(err):
                self._platform_failed(ctx, _failure_type(err, GIT_CHECKOUT_FAILED), err)
            return "failed", failure_message(err), ("checkout", "")
        self._stages = plan.stages
        self._sha = plan.sha
        self._label(ctx, commit=plan.sha)
        for stage in self._stages:
            if stage.status in ("skipped", "reused"):
                continue
            self._phase = f"running {stage.name}"
            stage.status = "running"  # recorded by its first step
            results = await self._run_stage(ctx, plan.sha, stage)
            failed = next(
                (
                    (step, result)
                    for step, result in results
                    if result.status in FAILED_STEP_STATUSES and not step.continue_on_error
                ),
                None,
            )
            if failed is None:
                stage.status = "succeeded"
                await self._record_stage(stage, "succeeded")
                continue
            step, result = failed
            stage.status = "failed"
            await self._record_stage(stage, "failed", skip_rest=True)
            error = f"{stage.name} / {step.name}: {result.error or result.status}"
            return "failed", error, (stage.name, step.name)
        return "succeeded", None, ("", "")

    async def _run_stage(
        self, ctx: RunContext, sha: str, stage: PlannedStage
    ) -> list[tuple[PlannedStep, StepResult]]:
        steps = [s for s in stage.steps if s.status == "pending"]
        if stage.parallel:
            results = await asyncio.gather(*(self._run_step(ctx, sha, stage, s) for s in steps))
            return list(zip(steps, results, strict=True))
        out: list[tuple[PlannedStep, StepResult]] = []
        for step in steps:
            result = await self._run_step(ctx, sha, stage, step)
            out.append((step, result))
            if result.status in FAILED_STEP_STATUSES and not step.continue_on_error:
                for rest in steps[len(out) :]:
                    rest.status = "skipped"
                break
        return out

    async def _run_step(
        self, ctx: RunContext, sha: str, stage: PlannedStage, step: PlannedStep
    ) -> StepResult:
        step.status = "running"
        self._show_progress(stage)
        try:
            result: StepResult = await workflow.execute_activity_method(
                PipelineActivities.run_step,
                StepInput(
                    run_id=ctx.run_id,
                    step=step,
                    stage=stage.name,
                    stage_id=stage.stage_id,
                    repository_url=ctx.repository_url,
                    host_kind=ctx.host_kind,
                    sha=sha,
                ),
                summary=f"step {step.name} (stage {stage.name})",
                **activity_options(
                    "pipeline_step",
                    start_to_close_timeout=timedelta(seconds=step.timeout_seconds) + STEP_MARGIN,
                    cancellation_type=ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
                ),
            )
        except ActivityError as err:
            if _cancelled(err):  # the run is being cancelled
                step.status = "cancelled"
                raise asyncio.CancelledError() from err
            # A command that fails is the step's result: the activity failing (after its
            # retries) is the platform's, as is the workflow's failure once it is recorded.
            if not _run_fault(err):
                doing = f"step {step.name} of stage {stage.name} could not run"
                self._platform_failed(ctx, _failure_type(err, STEP_NOT_RUN), err, doing)
            result = StepResult(status="failed", error=failure_message(err))
        except asyncio.CancelledError:
            step.status = "cancelled"
            raise
        step.status = result.status
        self._show_progress(stage)
        return result

    async def _finish(
        self,
        ctx: RunContext,
        status: RunStatus,
        error: str | None,
        failed: tuple[str, str] | None,
    ) -> None:
        self._phase = "finishing"
        for stage in self._stages:
            rest = "cancelled" if status == "cancelled" else "skipped"
            if stage.status in ("pending", "running"):
                stage.status = rest  # type: ignore[assignment]
            for step in stage.steps:
                if step.status in ("pending", "running"):
                    step.status = rest  # type: ignore[assignment]
        finished = await workflow.execute_activity_method(
            PipelineActivities.finish,
            FinishInput(run_id=ctx.run_id, status=status, error=error),
            summary=f"finish {status}",
            **_db(),
        )
        # the record says it now: the live view (and the operator's) may too
        self._status, self._error = status, error
        search_attributes.set_status(status)
        workflow.set_current_details(f"{status}: {error}" if error else status)
        for workflow_id in finished.waiting:
            if workflow_id != workflow.info().workflow_id:
                await self._wake(workflow_id)
        state = {"succeeded": "success", "failed": "failure"}.get(status, "error")
        words = {"succeeded": "succeeded", "failed": "failed", "cancelled": "was cancelled"}
        self._report(ctx, state, f"#{ctx.number} {words[status]}")
        extra: dict[str, Any] = {"duration_seconds": finished.duration_seconds}
        if status == "failed":
            failed_stage, failed_step = failed or ("", "")
            extra |= {
                "failed_stage": failed_stage or None,
                "failed_step": failed_step or None,
                "error": error,
            }
        if status != "cancelled":
            self._notify(ctx, f"pipeline.{status}", extra)
        self._side.append(
            workflow.start_activity_method(
                PipelineActivities.cleanup,
                RunRef(run_id=ctx.run_id),
                summary="remove the workspace",
                **_db(),
            )
        )
        await asyncio.gather(*self._side, return_exceptions=True)
        self._phase = "done"

    # -- what the operator sees ---------------------------------------------------------------

    def _label(self, ctx: RunContext, commit: str | None = None) -> None:
        """Upsert the search attributes the start did not give (a cron firing's, a ref's
        commit once checked out); nothing when they are all there already."""
        values: dict[str, str | None] = {
            "organization": ctx.organization,
            "team": ctx.team,
            "service": ctx.service,
            "pipeline": ctx.pipeline,
            "commit": commit or ctx.sha,
            "actor": ctx.triggered_by,
        }
        current = workflow.info().typed_search_attributes
        wanted = search_attributes.attributes(**values).search_attributes
        if any(current.get(pair.key) != pair.value for pair in wanted):
            search_attributes.set_attributes(**values)

    def _show_progress(self, stage: PlannedStage) -> None:
        """Current details: the stage's running steps, and how far the run is."""
        steps = [
            step
            for each in self._stages
            for step in each.steps
            if step.status not in ("skipped", "reused")
        ]
        done = sum(step.status not in ("pending", "running") for step in steps)
        running = [step.name for step in stage.steps if step.status == "running"]
        progress = f"{done} of {len(steps)} steps done"
        if running:
            doing = f"step{'s' if len(running) > 1 else ''} {', '.join(running)} running"
            progress = f"{doing} ({progress})"
        workflow.set_current_details(f"stage {stage.name}: {progress}")

    def _platform_failed(
        self, ctx: RunContext, kind: str, err: ActivityError, doing: str | None = None
    ) -> None:
        """Keep the platform's first failure: the workflow fails with it once the run is
        recorded failed (`run`)."""
        if self._platform_failure is None:
            what = f"{doing}: {failure_message(err)}" if doing else failure_message(err)
            where = f"pipeline {ctx.pipeline} #{ctx.number} of service {ctx.service}"
            self._platform_failure = (kind, f"{where}: {what}")

    # -- side effects ------------------------------------------------------------------------

    async def _record_stage(
        self, stage: PlannedStage, status: str, skip_rest: bool = False
    ) -> None:
        await workflow.execute_activity_method(
            PipelineActivities.record_stage,
            StageUpdate(
                stage_id=stage.stage_id,
                status=status,
                skip_rest=skip_rest,
            ),
            summary=f"record stage {stage.name} {status}",
            **_db(),
        )

    async def _wake(self, workflow_id: str) -> None:
        try:
            await workflow.get_external_workflow_handle(workflow_id).signal(WAKE_SIGNAL)
        except Exception as exc:  # it ended, or never started
            workflow.logger.info("queued run %s not woken: %s", workflow_id, exc)

    def _report(self, ctx: RunContext, state: str, description: str) -> None:
        """Report a commit status alongside the run; a host that stays down does not fail it."""
        self._report_run(ctx.run_id, state, description)

    def _report_run(self, run_id: uuid.UUID, state: str, description: str) -> None:
        self._side.append(
            workflow.start_activity_method(
                PipelineActivities.report_status,
                StatusReport(run_id=run_id, state=state, description=description),
                summary=f"commit status {state}",
                **activity_options("git_host"),
            )
        )

    def _notify(self, ctx: RunContext, event: str, extra: dict[str, Any]) -> None:
        if not ctx.channel_ids:
            return
        context = {
            "pipeline": ctx.pipeline,
            "service": ctx.service,
            "run_id": str(ctx.run_id),
            "run_url": ctx.run_url,
            "ref": ctx.branch or ctx.ref,
            "sha": self._sha or ctx.sha,
            "triggered_by": ctx.triggered_by or ctx.trigger_type,
            **{k: v for k, v in extra.items() if v is not None},
        }
        request = NotificationRequest(
            request_id=workflow.uuid4(),
            event=event,
            context=context,
            channel_ids=ctx.channel_ids,
            team_id=ctx.team_id,
            reference=f"pipeline-run:{ctx.run_id}",
        )
        self._side.append(
            asyncio.ensure_future(notify(request, task_queue=self._input.notifications_queue))
        )


def _db() -> dict[str, Any]:
    return activity_options("db")
