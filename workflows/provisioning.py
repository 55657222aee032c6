"""Provisioning an environment's stack through Pulumi, on the `provisioning` task queue.

**ProvisionWorkflow** (`provision-<environment id>`):

1. **Plan** (`provisioning.prepare`): the run, its environment and the approval rules.
2. **Preview** (`provisioning.preview`): the engine's plan, streamed into the run's log; its
   cost estimate and the compliance rules over every resource it would create or update. A
   blocking violation ends the run `blocked` before anything exists.
3. **Approval** when the environment is production or the estimate is over a budget: the
   same `decide` Update as promotions (validated: `infrastructure:approve`, approver teams
   or roles, no self-approval, one decision each), quorum, rejection, expiry, reminders.
4. **Up** (`provisioning.up`): streamed into the log; the activity records the resources,
   their relationships and the stack's outputs.
5. A failed `up` is **compensated**: `provisioning.destroy` removes what the stack created,
   and the run ends `compensated`, saying so (or `failed` when that destroy fails too).
6. A preview environment's **time to live** starts: `PreviewExpiryWorkflow` (its own id,
   outliving this run) destroys the stack when it ends; `extend` Updates push it back.

Where the Pulumi CLI is missing, the preview fails at once (non-retryable) with how to
install it, and the run ends `failed` with nothing created or recorded.

**DestroyWorkflow** (`destroy-<environment id>`): the same approval when production, then
`provisioning.destroy` of the stack, or of one resource and what depends on it.

**Failures** (docs/architecture.md): when the platform could not do its job (the CLI missing,
refused credentials, the engine failing, a destroy that failed) the run is recorded and
compensated as above, then the workflow execution FAILS with an ApplicationError of a stable
type (`PulumiCliMissing`, `CredentialsRefused`, `ProvisioningFailed`, `CompensationFailed`,
`DestroyFailed`) whose message says what and where; a blocking compliance rule, a rejection,
an expiry or a cancel COMPLETES with that outcome. Histories from before this (no
`PLATFORM_FAILURE_FAILS` marker) still complete. `IdpStatus` follows the recorded status."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    ChildWorkflowError,
    WorkflowAlreadyStartedError,
)

from workflows.approvals import ApprovalRules, Approvals, refuse, wait_for
from workflows.failures import failure_message

with workflow.unsafe.imports_passed_through():
    from activities.provisioning import ProvisioningActivities
    from core.approvals import Approver, ApproverCheck, CancelRequest, Decision
    from core.infrastructure.provision_messages import (
        COMPENSATION_FAILED,
        CREDENTIALS_REFUSED,
        DESTROY_FAILED,
        PENDING,
        PROVISIONING_FAILED,
        PULUMI_MISSING,
        PULUMI_MISSING_BEFORE,
        ExpiryInput,
        ExpiryView,
        Extension,
        PreviewResult,
        ProvisionInput,
        ProvisionPlan,
        ProvisionStatus,
        ProvisionView,
    )
    from core.notifications.messages import NotificationRequest
    from core.temporal import search_attributes
    from core.temporal.policies import activity_options
    from workflows.notification import notify, update_slack_messages

PROVISIONING_QUEUE = "provisioning"
# Marks histories in which a platform failure fails the execution (before: it completed).
PLATFORM_FAILURE_FAILS = "provisioning-platform-failure-fails"
# PreviewExpiryWorkflow's `IdpStatus`: waiting for its time, then destroying, then how it ended.
EXPIRY_SCHEDULED = "scheduled"


def _db() -> dict[str, Any]:
    return activity_options("db")


def _engine() -> dict[str, Any]:
    return activity_options("provisioning")


def _cli_missing(err: ActivityError) -> bool:
    cause = err.cause
    return isinstance(cause, ApplicationError) and cause.type in (
        PULUMI_MISSING,
        PULUMI_MISSING_BEFORE,
    )


def _failure_type(err: ActivityError, otherwise: str) -> str:
    """The run's failure type for an engine activity's error: the CLI missing and refused
    credentials keep theirs, anything else is `otherwise`."""
    if _cli_missing(err):
        return PULUMI_MISSING
    cause = err.cause
    if isinstance(cause, ApplicationError) and cause.type == CREDENTIALS_REFUSED:
        return CREDENTIALS_REFUSED
    return otherwise


def _for_child(status: str) -> TypedSearchAttributes | None:
    """This run's search attributes with `IdpStatus` = `status`, for a child it starts (None
    in a history from before search attributes)."""
    if not workflow.patched(search_attributes.PATCH_ID):
        return None
    ours = {key.name for key in search_attributes.ALL} - {search_attributes.STATUS.name}
    kept = [
        pair
        for pair in workflow.info().typed_search_attributes.search_attributes
        if pair.key.name in ours
    ]
    return TypedSearchAttributes([*kept, SearchAttributePair(search_attributes.STATUS, status)])


class _StackRun:
    """What both runs share: the plan, the state mirrored into the row in order, approvals
    (the `decide` Update), `cancel` before the engine starts, notifications, the query."""

    def __init__(self, input: ProvisionInput) -> None:
        self._input = input
        self._plan: ProvisionPlan | None = None
        self._status = "pending"
        self._reason: str | None = None
        self._preview: PreviewResult | None = None
        self._approval_reason: str | None = None
        self._approvals: Approvals | None = None
        self._cancel: CancelRequest | None = None
        self._records: list[asyncio.Future[Any]] = []
        self._side: list[asyncio.Future[Any]] = []
        self._slack: list[asyncio.Future[Any]] = []
        self._failure: tuple[str, str] | None = None  # (type, message): the platform failed

    async def _prepare(self) -> ProvisionPlan:
        plan: ProvisionPlan = await workflow.execute_activity_method(
            ProvisioningActivities.prepare,
            self._input,
            summary=f"read provisioning run {self._input.provision_id}",
            **_db(),
        )
        self._plan = plan
        request = "provisioning" if plan.action == "up" else "destroy"
        self._approvals = Approvals(
            ApprovalRules.of(plan, permission="infrastructure:approve", request=request)
        )
        return plan

    async def _finish(self) -> ProvisionView:
        """The run's view once everything it recorded and sent is done; where the platform
        failed (`_end(..., failure=)`), the execution fails with that instead."""
        await asyncio.gather(*self._records, *self._side, *self._slack, return_exceptions=True)
        await workflow.wait_condition(workflow.all_handlers_finished)  # a decision being checked
        if self._failure is not None and workflow.patched(PLATFORM_FAILURE_FAILS):
            kind, message = self._failure
            raise ApplicationError(message, type=kind, non_retryable=True)
        return self._view()

    def _where(self) -> str:
        """`production (aws)`: the environment and cloud, for activity summaries."""
        plan = self._plan
        return f"{plan.environment} ({plan.cloud})" if plan else str(self._input.provision_id)

    def _on(self) -> str:
        """`production on aws-main (aws)`: where the engine runs, for messages."""
        plan = self._plan
        if plan is None:
            return str(self._input.provision_id)
        return f"{plan.environment} on {plan.provider} ({plan.cloud})"

    # -- approval -------------------------------------------------------------------------
    async def _approve(self, why: str) -> bool:
        """Wait for the quorum; False when the run ended (rejected, expired, cancelled)."""
        plan, approvals = self._plan, self._approvals
        assert plan is not None and approvals is not None
        self._approval_reason = why
        expires_at = approvals.open()
        self._set(
            "awaiting_approval",
            approvals.waiting_on(),
            approval_reason=why,
            expires_at=expires_at,
        )
        self._notify("environment.awaiting_approval", self._approval_context())

        def progress() -> None:
            self._set("awaiting_approval", approvals.waiting_on())
            self._update_slack(None)

        def remind() -> None:
            self._notify(
                "environment.awaiting_approval",
                {**self._approval_context(), "comment": "Reminder: still waiting"},
            )

        outcome = await approvals.wait(lambda: self._cancel is not None, progress, remind)
        if outcome == "cancelled":
            await self._cancelled()
        elif outcome == "expired":
            await self._end(
                "expired",
                f"not approved within {approvals.rules.timeout} "
                f"({approvals.count()} of {approvals.rules.required} approvals); "
                "nothing was changed",
                None,
            )
        elif outcome == "rejected":
            rejection = approvals.rejection()
            assert rejection is not None
            why_not = f": {rejection.comment}" if rejection.comment else ""
            await self._end("rejected", f"rejected by {rejection.name}{why_not}", None)
        else:
            self._set("approved", f"approved by {approvals.who('approve')}")
        self._update_slack(self._reason)
        return outcome == "approved"

    def _update_slack(self, outcome: str | None) -> None:
        """Re-render the approval requests delivered to Slack in place: the approvals so far,
        then how it was decided (the buttons go)."""
        plan, approvals = self._plan, self._approvals
        assert plan is not None and approvals is not None
        if not plan.channel_ids:
            return
        values = {
            **self._approval_context(),
            "decided_by": approvals.who("approve") or None,
            "outcome": outcome,
        }

        async def find() -> list[uuid.UUID]:
            found: list[uuid.UUID] = await workflow.execute_activity_method(
                ProvisioningActivities.slack_messages,
                self._input,
                summary="find the approval requests delivered to Slack",
                **_db(),
            )
            return found

        update_slack_messages(
            self._slack,
            find,
            "environment.awaiting_approval",
            {k: v for k, v in values.items() if v is not None},
            after=self._flush,
            task_queue=self._input.notifications_queue,
        )

    async def _flush(self) -> None:
        await asyncio.gather(*self._records, return_exceptions=True)

    async def _cancelled(self) -> None:
        assert self._cancel is not None
        why = f": {self._cancel.reason}" if self._cancel.reason else ""
        await self._end("cancelled", f"cancelled by {self._cancel.name}{why}", None)

    def _approval_context(self) -> dict[str, Any]:
        plan, approvals = self._plan, self._approvals
        assert plan is not None and approvals is not None
        preview = self._preview
        return {
            "environment": plan.environment,
            "provision_id": str(plan.provision_id),
            "provision_url": plan.provision_url,
            "provider": plan.provider,
            "requested_by": plan.requested_by_name,
            "why": self._approval_reason,
            "estimate": f"{preview.estimate_monthly:.2f}" if preview else None,
            "currency": preview.currency if preview else None,
            "changes": preview.summary() if preview else None,
            "approvers_needed": approvals.rules.required,
        }

    @workflow.update
    async def decide(self, decision: Decision) -> ProvisionView:
        """Counts only if the approver the database returns passes the checks (see
        workflows/approvals.py)."""
        approvals = self._approvals
        assert approvals is not None
        decision = await approvals.checked(decision, self._check_approver)
        self._validate_decision(decision)
        approvals.add(decision)
        return self._view()

    @decide.validator
    def _validate_decision(self, decision: Decision) -> None:
        awaiting = self._status == "awaiting_approval" and self._cancel is None
        if self._approvals is None:
            raise refuse(f"the run is not awaiting approval (it is {self._status})")
        self._approvals.validate(decision, status=self._status, awaiting=awaiting)

    async def _check_approver(self, check: ApproverCheck) -> Approver:
        found: Approver = await workflow.execute_activity_method(
            ProvisioningActivities.check_approver,
            check,
            summary=f"check approver {check.user_id} on {self._where()}",
            **_db(),
        )
        return found

    @workflow.update
    async def cancel(self, request: CancelRequest) -> ProvisionView:
        self._cancel = request
        return self._view()

    @cancel.validator
    def _validate_cancel(self, request: CancelRequest) -> None:
        if self._status not in PENDING or self._cancel is not None:
            raise refuse(
                f"the run is {self._status}; only one that has not started changing the stack "
                "can be cancelled"
            )

    @workflow.query
    def state(self) -> ProvisionView:
        return self._view()

    def _view(self) -> ProvisionView:
        approvals = self._approvals
        waiting = self._status == "awaiting_approval"
        return ProvisionView(
            provision_id=self._input.provision_id,
            status=self._status,
            reason=self._reason,
            preview=self._preview,
            approval_reason=self._approval_reason,
            required_approvals=approvals.rules.required if approvals else 0,
            approvals=approvals.count() if approvals else 0,
            decisions=list(approvals.decisions) if approvals else [],
            waiting_on=self._reason if waiting else None,
            expires_at=approvals.expires_at if approvals and waiting else None,
            seconds_left=approvals.seconds_left() if approvals and waiting else None,
        )

    # -- state, mirrored ------------------------------------------------------------------
    def _set(self, status: str, reason: str | None, **extra: Any) -> None:
        self._status, self._reason = status, reason
        search_attributes.set_status(status)
        workflow.set_current_details(self._details(status, reason))
        approvals = self._approvals
        update = ProvisionStatus(
            provision_id=self._input.provision_id,
            status=status,
            reason=reason,
            decisions=list(approvals.decisions) if approvals else None,
            **extra,
        )
        previous = list(self._records)

        async def write() -> None:
            await asyncio.gather(*previous, return_exceptions=True)
            await workflow.execute_activity_method(
                ProvisioningActivities.record, update, summary=f"record {status}", **_db()
            )

        self._records.append(asyncio.ensure_future(write()))

    def _details(self, status: str, reason: str | None) -> str:
        """The current details the Temporal UI shows on the run's page."""
        approvals = self._approvals
        if status == "previewing":
            return f"previewing {self._on()}"
        if status == "awaiting_approval" and approvals is not None:
            return approvals.details()  # what the wait keeps up to date (workflows/approvals.py)
        if status == "provisioning":
            return f"pulumi up on {self._on()}: {reason}"
        if status == "compensating":
            return f"compensating: destroying what pulumi up created in {self._on()}"
        if status == "destroying":
            return f"pulumi destroy on {self._on()}"
        return f"{status}: {reason}" if reason else status

    async def _end(
        self,
        status: str,
        reason: str | None,
        event: str | None,
        context: dict[str, Any] | None = None,
        *,
        failure: str | None = None,
    ) -> None:
        """Record how the run ended and notify; `failure` (an ApplicationError type) when
        the platform could not do its job: `_finish` then fails the execution."""
        if failure is not None and reason is not None:
            self._failure = (failure, reason)
        self._set(status, reason, finished=True)
        await self._flush()
        if event is not None:
            self._notify(event, context or {})

    def _notify(self, event: str, context: dict[str, Any]) -> None:
        plan = self._plan
        assert plan is not None
        if not plan.channel_ids:
            return
        values = {
            "environment": plan.environment,
            "environment_url": plan.environment_url,
            "provider": plan.provider,
            **context,
        }
        request = NotificationRequest(
            request_id=workflow.uuid4(),
            event=event,
            context={k: v for k, v in values.items() if v is not None},
            channel_ids=plan.channel_ids,
            team_id=plan.team_id,
            reference=f"provision:{plan.provision_id}",
        )
        self._side.append(
            asyncio.ensure_future(notify(request, task_queue=self._input.notifications_queue))
        )

    async def _gate(self, plan: ProvisionPlan, why: str | None) -> bool:
        """Approval when `why` is given; otherwise only a cancel can stop it here."""
        if why is not None:
            return await self._approve(why)
        if self._cancel is not None:
            await self._cancelled()
            return False
        return True


@workflow.defn
class ProvisionWorkflow(_StackRun):
    @workflow.init
    def __init__(self, input: ProvisionInput) -> None:
        super().__init__(input)

    @workflow.run
    async def run(self, input: ProvisionInput) -> ProvisionView:
        plan = await self._prepare()
        self._set("previewing", "pulumi preview")
        try:
            preview: PreviewResult = await workflow.execute_activity_method(
                ProvisioningActivities.preview,
                input,
                summary=f"preview {self._where()}",
                **_engine(),
            )
        except ActivityError as err:
            what = "cannot provision" if _cli_missing(err) else "the preview failed"
            error = f"{what} {self._on()}: {failure_message(err)}; nothing was created"
            await self._end(
                "failed",
                error,
                "environment.failed",
                {"error": error},
                failure=_failure_type(err, PROVISIONING_FAILED),
            )
            return await self._finish()
        self._preview = preview
        if preview.blocking:
            error = (
                f"compliance: {len(preview.blocking)} blocking violation(s), nothing was "
                f"created: {'; '.join(preview.blocking[:5])}"
            )
            await self._end("blocked", error, "environment.failed", {"error": error})
            return await self._finish()
        production = "production environment" if plan.environment_type == "production" else None
        if not await self._gate(plan, production or preview.over_budget):
            return await self._finish()
        await self._up(plan, preview)
        return await self._finish()

    async def _up(self, plan: ProvisionPlan, preview: PreviewResult) -> None:
        self._set("provisioning", f"pulumi up: {preview.summary()}")
        try:
            up = await workflow.execute_activity_method(
                ProvisioningActivities.up,
                self._input,
                summary=f"up {self._where()}",
                **_engine(),
            )
        except ActivityError as err:
            if _cli_missing(err):
                error = (
                    f"cannot provision {self._on()}: {failure_message(err)}; nothing was created"
                )
                await self._end(
                    "failed", error, "environment.failed", {"error": error}, failure=PULUMI_MISSING
                )
                return
            await self._compensate(
                f"pulumi up failed in {self._on()}: {failure_message(err)}",
                _failure_type(err, PROVISIONING_FAILED),
            )
            return
        destroy_at = workflow.now() + timedelta(seconds=plan.ttl) if plan.ttl else None
        summary = f"{up.resources} resource(s) recorded; outputs: {', '.join(up.outputs) or '-'}"
        if destroy_at is not None:
            summary += f"; destroyed at {destroy_at.isoformat()} unless extended"
        self._set("succeeded", summary, finished=True, destroy_at=destroy_at)
        await self._flush()
        self._notify("environment.provisioned", {"resources": up.outputs})
        if destroy_at is not None:
            await self._start_expiry(plan, destroy_at)

    async def _compensate(self, error: str, failure: str) -> None:
        self._set("compensating", f"{error}; destroying what the stack created")
        try:
            result = await workflow.execute_activity_method(
                ProvisioningActivities.destroy,
                self._input,
                summary=f"destroy {self._where()}: compensate the failed up",
                **_engine(),
            )
        except ActivityError as err:
            failed = (
                f"{error}; the compensating destroy failed too: {failure_message(err)}; "
                f"resources of stack {self._plan.stack if self._plan else '?'} may remain"
            )
            await self._end(
                "failed",
                failed,
                "environment.failed",
                {"error": failed},
                failure=COMPENSATION_FAILED,
            )
            return
        removed = ", ".join(result.resources) or "nothing had been created"
        done = f"{error}; compensated: destroyed what the stack had created ({removed})"
        await self._end("compensated", done, "environment.failed", {"error": done}, failure=failure)

    async def _start_expiry(self, plan: ProvisionPlan, destroy_at: datetime) -> None:
        with contextlib.suppress(WorkflowAlreadyStartedError):  # an earlier run's TTL counts
            await workflow.start_child_workflow(
                PreviewExpiryWorkflow.run,
                ExpiryInput(
                    provision_id=plan.provision_id,
                    environment_id=plan.environment_id,
                    destroy_at=destroy_at,
                    notifications_queue=self._input.notifications_queue,
                    provisioning_queue=workflow.info().task_queue,
                    environment=plan.environment,
                    cloud=plan.cloud,
                ),
                id=expiry_workflow_id(plan.environment_id),
                parent_close_policy=workflow.ParentClosePolicy.ABANDON,
                search_attributes=_for_child(EXPIRY_SCHEDULED),
                static_summary=(
                    f"time to live of preview environment {plan.environment} ({plan.cloud}): "
                    f"destroyed at {destroy_at:%Y-%m-%d %H:%M} UTC unless extended"
                ),
            )


@workflow.defn
class DestroyWorkflow(_StackRun):
    @workflow.init
    def __init__(self, input: ProvisionInput) -> None:
        super().__init__(input)

    @workflow.run
    async def run(self, input: ProvisionInput) -> ProvisionView:
        plan = await self._prepare()
        why = "destroying in a production environment"
        if not await self._gate(plan, why if plan.environment_type == "production" else None):
            return await self._finish()
        self._set("destroying", "pulumi destroy")
        try:
            result = await workflow.execute_activity_method(
                ProvisioningActivities.destroy,
                input,
                summary=f"destroy {self._where()}",
                **_engine(),
            )
        except ActivityError as err:
            error = f"pulumi destroy failed in {self._on()}: {failure_message(err)}"
            await self._end(
                "failed",
                error,
                "environment.failed",
                {"error": error},
                failure=_failure_type(err, DESTROY_FAILED),
            )
            return await self._finish()
        if plan.whole_stack and not input.from_expiry:
            await self._stop_expiry(plan)
        removed = ", ".join(result.resources) or "nothing"
        because = f" ({plan.note})" if plan.note else ""
        await self._end(
            "destroyed",
            f"destroyed: {removed}{because}",
            "environment.destroyed",
            {"resources": result.resources, "reason": plan.note},
        )
        return await self._finish()

    async def _stop_expiry(self, plan: ProvisionPlan) -> None:
        """Nothing is left for a preview environment's time to live to destroy: end it."""
        handle = workflow.get_external_workflow_handle(expiry_workflow_id(plan.environment_id))
        with contextlib.suppress(Exception):  # there is none (not a preview, or it ended)
            await handle.cancel()


def expiry_workflow_id(environment_id: Any) -> str:
    return f"preview-expiry-{environment_id}"


@workflow.defn
class PreviewExpiryWorkflow:
    """A preview environment's time to live: a durable timer, pushed back by `extend`, then
    a destroy run of the environment's stack (a DestroyWorkflow child)."""

    @workflow.init
    def __init__(self, input: ExpiryInput) -> None:
        self._input = input
        self._destroy_at = input.destroy_at
        self._extended: list[str] = []
        self._changed = False
        self._destroying = False

    @workflow.run
    async def run(self, input: ExpiryInput) -> ExpiryView:
        what = input.environment or str(input.environment_id)
        try:
            await self._until_due(input, what)
        except asyncio.CancelledError:  # its stack was destroyed by hand: nothing left to do
            search_attributes.set_status("cancelled")
            raise
        self._destroying = True
        search_attributes.set_status("destroying")
        workflow.set_current_details(f"the time to live ended: destroying {what}")
        destroy_id = await workflow.execute_activity_method(
            ProvisioningActivities.expiry_destroy,
            input,
            summary=f"request the destroy of {what}",
            **_db(),
        )
        cloud = f" ({input.cloud}, destroy)" if input.cloud else ""
        try:
            await workflow.execute_child_workflow(
                DestroyWorkflow.run,
                ProvisionInput(
                    provision_id=destroy_id,
                    notifications_queue=input.notifications_queue,
                    from_expiry=True,
                ),
                id=f"destroy-{input.environment_id}",
                task_queue=input.provisioning_queue,
                search_attributes=_for_child("pending"),
                static_summary=f"destroy {what}{cloud}: its time to live ended",
            )
        except ChildWorkflowError as err:
            # The destroy run failed (it says why); so did this time to live.
            search_attributes.set_status("failed")
            cause = err.cause
            why = cause.message if isinstance(cause, ApplicationError) else str(cause or err)
            kind = cause.type if isinstance(cause, ApplicationError) else None
            raise ApplicationError(
                f"the time to live of {what} ended but its destroy failed: {why}",
                type=kind or DESTROY_FAILED,
                non_retryable=True,
            ) from err
        search_attributes.set_status("destroyed")
        return self._state()

    async def _until_due(self, input: ExpiryInput, what: str) -> None:
        """Wait for the time to live to end, recording each extension."""
        while True:
            now = workflow.now()
            if now >= self._destroy_at:
                return
            workflow.set_current_details(
                f"destroys {what} at {self._destroy_at:%Y-%m-%d %H:%M:%S} UTC unless extended"
            )
            self._changed = False
            await wait_for(lambda: self._changed, self._destroy_at - now)
            if self._changed:
                await workflow.execute_activity_method(
                    ProvisioningActivities.record,
                    ProvisionStatus(
                        provision_id=input.provision_id,
                        status="succeeded",
                        destroy_at=self._destroy_at,
                    ),
                    summary=f"record destroy at {self._destroy_at.isoformat()}",
                    **_db(),
                )

    @workflow.update
    async def extend(self, extension: Extension) -> ExpiryView:
        self._destroy_at = self._destroy_at + extension.by
        self._extended.append(f"{extension.name} +{extension.by}")
        self._changed = True
        return self._state()

    @extend.validator
    def _validate_extend(self, extension: Extension) -> None:
        if self._destroying:
            raise refuse("the time to live has ended; the environment is being destroyed")
        if extension.by <= timedelta(0):
            raise refuse("an extension must be positive", "Invalid")

    @workflow.query
    def state(self) -> ExpiryView:
        return self._state()

    def _state(self) -> ExpiryView:
        return ExpiryView(destroy_at=self._destroy_at, extended_by=list(self._extended))
