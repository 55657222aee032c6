"""PromotionWorkflow: one per promotion (workflow id `promotion-<id>`), on the `promotions`
task queue.

1. **Plan** (`promotions.prepare`): the promotion and the environment's policy, read once.
2. **Gate** (`promotions.check`): the branch is allowed and the version is healthy in the
   previous environment (else the promotion is `refused`); while its soak time has not passed
   or a freeze window is on, it waits durably (a timer) and checks again.
3. **Approvals**, when the environment requires them: `promotion.awaiting_approval` goes to
   the service's and the approver teams' channels (Slack with Approve and Reject buttons).
   Each decision is the `decide` Update, validated before it is accepted: still awaiting, the
   approver holds `promotions:approve` on the environment and is in an approver team or role,
   is not the requester (unless the policy allows), and has not decided already. Distinct
   approvals reach the quorum; one rejection ends it. Reminders go out every
   `reminder_interval`; at `approval_timeout` it ends `expired`. Every decision updates the
   Slack messages in place.
4. **Deploy** (`promotions.deploy`) through the environment's target, then **verify**
   (`promotions.verify`) for the verification window. A failure puts the previous version
   back (`rolled_back`), or ends `failed` when nothing ran before.
5. Every transition is mirrored into the promotion's row (`promotions.record`) and notified.

`cancel` (an Update) ends a promotion that has not started deploying. The `state` query is the
live view: status, decisions, whom or what it waits for, and the time left.

In the Temporal UI: `IdpStatus` follows the status of the promotion's row, the current
details say what it does or waits for, and every activity has a summary. Outcomes of the
user's work (refused, rejected, expired, cancelled, rolled back, a version that never became
healthy) complete the workflow; when the platform could not do its job (the deploy target or
the verification failing after their retries, a roll back failing) the outcome is recorded
first and the workflow then fails with `DeployFailed`, `VerifyFailed` or `RollbackFailed`."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

from workflows.approvals import ApprovalRules, Approvals, refuse, wait_for
from workflows.failures import failure_message

with workflow.unsafe.imports_passed_through():
    from activities.promotions import PromotionActivities
    from core.approvals import Approver, ApproverCheck, CancelRequest, Decision, DecisionRecord
    from core.notifications.messages import NotificationRequest
    from core.promotions.messages import (
        PENDING,
        DeployInput,
        DeploymentMark,
        DeployResult,
        Plan,
        PromotionInput,
        PromotionView,
        SlackMessagesInput,
        StatusUpdate,
        VerifyInput,
    )
    from core.promotions.promotions import WORKFLOW_ID_PREFIX, workflow_id_for
    from core.temporal import search_attributes
    from core.temporal.policies import activity_options
    from workflows.notification import notify, update_slack_messages

PROMOTIONS_QUEUE = "promotions"
VERIFY_MARGIN = timedelta(minutes=1)  # on top of the verification window, for the activity
# Histories recorded when a platform failure completed the workflow replay without the raise.
PLATFORM_FAILURE_FAILS = "promotion-platform-failure-fails"

__all__ = ["PROMOTIONS_QUEUE", "WORKFLOW_ID_PREFIX", "PromotionWorkflow", "workflow_id_for"]


def _db(summary: str) -> dict[str, Any]:
    return activity_options("db", summary=summary)


def _error_type(err: ActivityError) -> str | None:
    cause = err.cause
    return cause.type if isinstance(cause, ApplicationError) else None


@workflow.defn
class PromotionWorkflow:
    @workflow.init
    def __init__(self, input: PromotionInput) -> None:
        self._input = input
        self._plan: Plan | None = None
        self._status = "pending"
        self._indexed = "pending"  # the IdpStatus last upserted (the client started with it)
        self._reason: str | None = None
        self._failure: ApplicationError | None = None  # the platform's, raised at the end
        self._approvals: Approvals | None = None
        self._cancel: CancelRequest | None = None
        self._wait_until: datetime | None = None
        self._deployment_id: Any = None
        self._records: list[asyncio.Future[Any]] = []
        self._side: list[asyncio.Future[Any]] = []
        self._slack: list[asyncio.Future[Any]] = []

    # -- the run --------------------------------------------------------------------------
    @workflow.run
    async def run(self, input: PromotionInput) -> PromotionView:
        plan: Plan = await workflow.execute_activity_method(
            PromotionActivities.prepare, input, **_db("read the promotion and its policy")
        )
        self._plan = plan
        self._approvals = Approvals(
            ApprovalRules.of(plan, permission="promotions:approve", request="promotion")
        )
        if plan.kind == "promote":
            go = await self._gate() and await self._approve()
            if go and plan.required_approvals and plan.freeze_windows:
                go = await self._gate()  # a freeze may have begun while it waited
        else:
            go = self._cancel is None or await self._cancelled()
        if go:
            await self._deploy()
        await asyncio.gather(*self._records, *self._side, *self._slack, return_exceptions=True)
        await workflow.wait_condition(workflow.all_handlers_finished)  # a decision being checked
        if self._failure is not None and workflow.patched(PLATFORM_FAILURE_FAILS):
            raise self._failure
        return self._view()

    async def _gate(self) -> bool:
        while True:
            if self._cancel is not None:
                return await self._cancelled()
            gate = await workflow.execute_activity_method(
                PromotionActivities.check, self._input, **_db(f"check {self._where()}'s policy")
            )
            if gate.refused is not None:
                await self._end("refused", gate.refused, "promotion.failed")
                return False
            if gate.wait_until is None:
                self._wait_until = None
                return True
            self._wait_until = gate.wait_until
            self._set("waiting", gate.wait_reason)
            delay = max(gate.wait_until - workflow.now(), timedelta(seconds=1))
            await wait_for(lambda: self._cancel is not None, delay)

    async def _approve(self) -> bool:
        plan, approvals = self._plan, self._approvals
        assert plan is not None and approvals is not None
        if plan.required_approvals == 0:
            return True
        expires_at = approvals.open()
        self._set("awaiting_approval", approvals.waiting_on(), expires_at=expires_at)
        self._notify("promotion.awaiting_approval", self._approval_context())

        def progress() -> None:
            self._set("awaiting_approval", approvals.waiting_on())
            self._update_slack("promotion.awaiting_approval", self._approval_context())

        def remind() -> None:
            self._notify(
                "promotion.awaiting_approval",
                {**self._approval_context(), "comment": "Reminder: still waiting"},
            )

        outcome = await approvals.wait(lambda: self._cancel is not None, progress, remind)
        if outcome == "cancelled":
            return await self._cancelled()
        if outcome == "expired":
            await self._expire()
            return False
        if outcome == "rejected":
            rejection = approvals.rejection()
            assert rejection is not None
            context = {"decided_by": rejection.name, "comment": rejection.comment}
            await self._end(
                "rejected",
                f"rejected by {rejection.name}"
                + (f": {rejection.comment}" if rejection.comment else ""),
                "promotion.rejected",
                context,
            )
            self._update_slack("promotion.rejected", context)
            return False
        approved_by = approvals.who("approve")
        context = {**self._approval_context(), "decided_by": approved_by}
        self._set("deploying", f"approved by {approved_by}")
        self._notify("promotion.approved", context)
        self._update_slack("promotion.approved", context)
        return True

    async def _expire(self) -> None:
        plan, approvals = self._plan, self._approvals
        assert plan is not None and approvals is not None
        context = self._approval_context()
        await self._end(
            "expired",
            f"not approved within {timedelta(seconds=plan.approval_timeout)} "
            f"({approvals.count()} of {plan.required_approvals} approvals)",
            "promotion.expired",
            context,
        )
        self._update_slack("promotion.expired", context)

    async def _cancelled(self) -> bool:
        assert self._cancel is not None
        why = f": {self._cancel.reason}" if self._cancel.reason else ""
        await self._end("cancelled", f"cancelled by {self._cancel.name}{why}", None)
        self._update_slack(
            "promotion.failed",
            {"status": "cancelled", "reason": f"cancelled by {self._cancel.name}{why}"},
        )
        return False

    async def _deploy(self) -> None:
        plan = self._plan
        assert plan is not None
        rollback = plan.kind == "rollback"
        # The deploy activity marks the row `deploying` itself: no wait for earlier records.
        self._move("deploying", self._reason)
        try:
            result = await workflow.execute_activity_method(
                PromotionActivities.deploy,
                DeployInput(promotion_id=plan.promotion_id, version_id=plan.version_id),
                **activity_options(
                    "deploy", summary=f"deploy {plan.version} to {plan.environment}"
                ),
            )
        except ActivityError as err:
            message = failure_message(err)
            await self._end("failed", f"the deploy failed: {message}", "promotion.failed")
            if _error_type(err) != "ReleaseInvalid":  # the version's own config is the user's
                self._fail(
                    "DeployFailed",
                    f"deploying {plan.service} {plan.version} to {plan.environment} failed "
                    f"on its target ({plan.target or 'unknown'}): {message}",
                    err,
                )
            return
        self._deployment_id = result.deployment_id
        if not result.ok:
            await self._recover(result, result.error or "the deploy failed", rollback)
            return
        self._set("verifying", f"probing health for {plan.verification_window:g}s")
        window = timedelta(seconds=plan.verification_window)
        try:
            verdict = await workflow.execute_activity_method(
                PromotionActivities.verify,
                VerifyInput(deployment_id=result.deployment_id, seconds=plan.verification_window),
                **activity_options(
                    "deploy",
                    start_to_close_timeout=window + VERIFY_MARGIN,
                    summary=f"verify {plan.service} in {plan.environment}",
                ),
            )
        except ActivityError as err:
            if not workflow.patched(PLATFORM_FAILURE_FAILS):
                raise  # as recorded before: the workflow failed with the activity's error
            message = failure_message(err)
            await self._end(
                "failed",
                f"the verification could not run: {message}; {plan.version} runs unverified",
                "promotion.failed",
            )
            self._fail(
                "VerifyFailed",
                f"verifying {plan.service} {plan.version} in {plan.environment} "
                f"({plan.target or 'unknown'}) could not run: {message}",
                err,
            )
            return
        if not verdict.ok:
            await self._recover(result, verdict.error or "unhealthy", rollback, verified=False)
            return
        await self._end("succeeded", None, "promotion.deployed")

    async def _recover(
        self, result: DeployResult, error: str, rollback: bool, *, verified: bool = True
    ) -> None:
        """After a failed deploy or verification: put the previous version back when the
        target switched, then end `rolled_back`; `failed` when nothing ran before."""
        plan = self._plan
        assert plan is not None
        mark = DeploymentMark(deployment_id=result.deployment_id, status="failed")
        previous = result.previous_version_id
        if previous is None or rollback:
            if not verified:
                await self._mark(mark)
            await self._end("failed", error, "promotion.failed")
            return
        if result.switched:
            self._set(
                "deploying",
                f"{error}; rolling back to {plan.previous_version}",
                details=f"rolling back {plan.environment} to {plan.previous_version}: {error}",
            )
            try:
                back = await workflow.execute_activity_method(
                    PromotionActivities.deploy,
                    DeployInput(promotion_id=plan.promotion_id, version_id=previous, rollback=True),
                    **activity_options("deploy", summary=f"roll back to {plan.previous_version}"),
                )
            except ActivityError as err:
                why: str | None = failure_message(err)
                cause: BaseException | None = err
            else:
                why, cause = (None if back.ok else back.error or "unhealthy"), None
            if why is not None:
                await self._end(
                    "failed", f"{error}; the roll back failed too: {why}", "promotion.failed"
                )
                self._fail(
                    "RollbackFailed",
                    f"rolling {plan.service} in {plan.environment} back to "
                    f"{plan.previous_version} failed on its target ({plan.target or 'unknown'}) "
                    f"after {plan.version} failed ({error}): {why}",
                    cause,
                )
                return
            await self._mark(mark.model_copy(update={"status": "rolled_back"}))
        reason = f"{error}; {plan.previous_version} runs again"
        await self._end("rolled_back", reason, "promotion.rolled_back", {"reason": error})

    # -- Updates and the query ------------------------------------------------------------
    @workflow.update
    async def decide(self, decision: Decision) -> PromotionView:
        """The validator answered on the caller's word; the decision counts only if the
        approver the database returns (an activity) passes the same checks, now."""
        approvals = self._approvals
        assert approvals is not None
        name = decision.approver.name
        decision = await approvals.checked(decision, lambda c: self._check_approver(c, name))
        self._validate_decision(decision)
        approvals.add(decision)
        if decision.decision == "reject":
            self._status = "rejected"
        elif approvals.reached():
            self._status = "approved"
        return self._view()

    @decide.validator
    def _validate_decision(self, decision: Decision) -> None:
        awaiting = self._status == "awaiting_approval" and self._cancel is None
        if self._approvals is None:
            raise refuse(f"the promotion is not awaiting approval (it is {self._status})")
        self._approvals.validate(decision, status=self._status, awaiting=awaiting)

    async def _check_approver(self, check: ApproverCheck, name: str) -> Approver:
        found: Approver = await workflow.execute_activity_method(
            PromotionActivities.check_approver, check, **_db(f"check approver {name}")
        )
        return found

    @workflow.update
    async def cancel(self, request: CancelRequest) -> PromotionView:
        self._cancel = request
        return self._view()

    @cancel.validator
    def _validate_cancel(self, request: CancelRequest) -> None:
        if self._status not in PENDING or self._cancel is not None:
            raise refuse(
                f"the promotion is {self._status}; only one not yet deploying can be cancelled"
            )

    @workflow.query
    def state(self) -> PromotionView:
        return self._view()

    # -- helpers --------------------------------------------------------------------------
    def _view(self) -> PromotionView:
        plan, approvals = self._plan, self._approvals
        waiting_on = self._reason if self._status in ("waiting", "awaiting_approval") else None
        left = None
        if self._status == "awaiting_approval" and approvals is not None:
            left = approvals.seconds_left()
        return PromotionView(
            promotion_id=self._input.promotion_id,
            status=self._status,
            reason=self._reason,
            required_approvals=plan.required_approvals if plan else 0,
            approvals=approvals.count() if approvals else 0,
            decisions=self._decisions(),
            waiting_on=waiting_on,
            expires_at=approvals.expires_at if approvals else None,
            seconds_left=left,
            wait_until=self._wait_until if self._status == "waiting" else None,
            deployment_id=self._deployment_id,
        )

    def _decisions(self) -> list[DecisionRecord]:
        return list(self._approvals.decisions) if self._approvals else []

    def _where(self) -> str:
        return self._plan.environment if self._plan else "the environment"

    def _move(self, status: str, reason: str | None, details: str | None = None) -> None:
        """The new status, in the state, `IdpStatus` and the UI's current details."""
        self._status, self._reason = status, reason
        if status != self._indexed:
            self._indexed = status
            search_attributes.set_status(status)
        workflow.set_current_details(details or self._details())

    def _details(self) -> str:
        plan, status, reason = self._plan, self._status, self._reason
        if plan is not None and status == "deploying":
            return f"deploying {plan.version} to {plan.environment}"
        if plan is not None and status == "verifying":
            return (
                f"verifying {plan.service} {plan.version} in {plan.environment} "
                f"for {plan.verification_window:g}s"
            )
        if status == "awaiting_approval" and self._approvals is not None:
            return self._approvals.details()
        return status.replace("_", " ") + (f": {reason}" if reason else "")

    def _fail(self, kind: str, message: str, cause: BaseException | None) -> None:
        """The platform could not do its job: the run raises this once all is recorded."""
        failure = ApplicationError(message, type=kind, non_retryable=True)
        failure.__cause__ = cause
        self._failure = failure

    def _set(
        self, status: str, reason: str | None, *, details: str | None = None, **extra: Any
    ) -> None:
        """Change the status and mirror it (with the decisions) into the row, in order."""
        self._move(status, reason, details)
        update = StatusUpdate(
            promotion_id=self._input.promotion_id,
            status=status,
            reason=reason,
            decisions=self._decisions(),
            **extra,
        )
        previous = list(self._records)

        async def write() -> None:
            await asyncio.gather(*previous, return_exceptions=True)
            await workflow.execute_activity_method(
                PromotionActivities.record, update, **_db(f"record {status}")
            )

        self._records.append(asyncio.ensure_future(write()))

    async def _flush(self) -> None:
        await asyncio.gather(*self._records, return_exceptions=True)

    async def _end(
        self,
        status: str,
        reason: str | None,
        event: str | None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        self._set(status, reason, finished=True)
        await self._flush()
        if event is not None:
            self._notify(event, {**self._approval_context(), "reason": reason, **(extra or {})})

    async def _mark(self, mark: DeploymentMark) -> None:
        await workflow.execute_activity_method(
            PromotionActivities.mark_deployment, mark, **_db(f"mark the deployment {mark.status}")
        )

    def _approval_context(self) -> dict[str, Any]:
        plan, approvals = self._plan, self._approvals
        assert plan is not None and approvals is not None
        return {
            "promotion_id": str(plan.promotion_id),
            "promotion_url": plan.promotion_url,
            "service": plan.service,
            "version": plan.version,
            "environment": plan.environment,
            "previous_version": plan.previous_version,
            "requested_by": plan.requested_by_name,
            "approvers_needed": plan.required_approvals,
            "approvals": approvals.count(),
            "decided_by": approvals.who("approve") or None,
            "expires_at": approvals.expires_at.isoformat() if approvals.expires_at else None,
            "comment": plan.comment or None,
            "provenance": plan.provenance or None,
        }

    def _notify(self, event: str, context: dict[str, Any]) -> None:
        plan = self._plan
        assert plan is not None
        if not plan.channel_ids:
            return
        request = NotificationRequest(
            request_id=workflow.uuid4(),
            event=event,
            context={k: v for k, v in context.items() if v is not None},
            channel_ids=plan.channel_ids,
            team_id=plan.team_id,
            reference=f"promotion:{plan.promotion_id}",
        )
        self._side.append(
            asyncio.ensure_future(notify(request, task_queue=self._input.notifications_queue))
        )

    def _update_slack(self, event: str, context: dict[str, Any]) -> None:
        """Re-render the approval requests already delivered to Slack, in place."""
        plan = self._plan
        assert plan is not None
        if not plan.channel_ids:
            return
        values = {k: v for k, v in {**self._approval_context(), **context}.items() if v is not None}

        async def find() -> list[uuid.UUID]:
            found: list[uuid.UUID] = await workflow.execute_activity_method(
                PromotionActivities.slack_messages,
                SlackMessagesInput(promotion_id=plan.promotion_id),
                **_db("find the Slack approval requests"),
            )
            return found

        update_slack_messages(
            self._slack,
            find,
            event,
            values,
            after=self._flush,
            task_queue=self._input.notifications_queue,
        )
