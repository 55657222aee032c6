"""Waiting for people inside a workflow: the approval rules a promotion or a provisioning run
is held to, the decisions taken so far, the validator every `decide` Update goes through, and
the durable wait for a quorum with reminders and an expiry.

The workflow owns the Update itself (`@workflow.update decide`) and calls `validate` from its
validator and `add` from its handler; `wait` returns how the wait ended, and the workflow
records, notifies and updates messages for each outcome in its own way. While it waits, the
workflow's current details (the Temporal UI) say whose approvals are missing and when the
request expires (`details`).

The validator only sees the caller's word (the approver as the API resolved them), so it can
refuse at once but never decides alone: the handler reads the approver again from the
database in an activity (`checked`) and validates that answer before the decision counts.
Anyone who reaches Temporal can send a `decide` Update; what the named user may decide is
only what the database says. Workflows that took decisions before this check existed replay
without it (`APPROVER_CHECKED`, a `workflow.patched` marker)."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal, Protocol

from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from core.approvals import Approver, ApproverCheck, Decision, DecisionRecord

APPROVER_CHECKED = "approver-checked-by-activity"
Outcome = Literal["approved", "rejected", "expired", "cancelled"]
VIA = {"api": "API", "slack": "Slack"}


def refuse(message: str, kind: str = "Conflict") -> ApplicationError:
    """An Update refused by its validator; `kind` tells the API which status to answer
    (`Forbidden`: 403, otherwise 409)."""
    return ApplicationError(message, type=kind, non_retryable=True)


async def wait_for(condition: Callable[[], bool], timeout: timedelta) -> bool:
    """True when `condition` held before `timeout` (a durable timer, at least a second)."""
    try:
        await workflow.wait_condition(condition, timeout=max(timeout, timedelta(seconds=1)))
    except TimeoutError:
        return False
    return True


def duration_text(span: timedelta) -> str:
    """`3h`, `2h 5m`, `45m`, `30s`, `1d 4h`: a time left as a person reads it."""
    seconds = max(int(span.total_seconds()), 0)
    days, rest = divmod(seconds, 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes, seconds = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h" if hours else f"{days}d"
    if hours:
        return f"{hours}h {minutes}m" if minutes else f"{hours}h"
    if minutes:
        return f"{minutes}m"
    return f"{seconds}s"


class _Policy(Protocol):
    """A workflow's plan as far as approvals go (the promotion's and provisioning's share it)."""

    environment: str
    environment_id: uuid.UUID
    required_approvals: int
    approver_teams: list[str]
    approver_roles: list[str]
    allow_self_approval: bool
    requested_by: uuid.UUID | None
    approval_timeout: float  # seconds
    reminder_interval: float | None  # seconds


@dataclass(frozen=True)
class ApprovalRules:
    required: int
    teams: tuple[str, ...]
    roles: tuple[str, ...]
    allow_self: bool
    requested_by: uuid.UUID | None
    timeout: timedelta
    reminder_every: timedelta | None
    permission: str  # what an approver must hold on the environment, e.g. promotions:approve
    environment: str  # its name, for messages
    request: str = "promotion"  # what was requested, for messages
    environment_id: uuid.UUID | None = None  # whose grants an approver's are checked against

    @classmethod
    def of(cls, plan: _Policy, *, permission: str, request: str) -> ApprovalRules:
        every = plan.reminder_interval
        return cls(
            required=plan.required_approvals,
            teams=tuple(plan.approver_teams),
            roles=tuple(plan.approver_roles),
            allow_self=plan.allow_self_approval,
            requested_by=plan.requested_by,
            timeout=timedelta(seconds=plan.approval_timeout),
            reminder_every=timedelta(seconds=every) if every else None,
            permission=permission,
            environment=plan.environment,
            request=request,
            environment_id=plan.environment_id,
        )


class Approvals:
    """The decisions on one request, and the wait for them."""

    def __init__(self, rules: ApprovalRules) -> None:
        self.rules = rules
        self.decisions: list[DecisionRecord] = []
        self.expires_at: datetime | None = None
        self._unrecorded = False

    # -- the Update's validator and handler ---------------------------------------------------
    def validate(self, decision: Decision, *, status: str, awaiting: bool) -> None:
        """Refuse a decision while the request does not await one (`awaiting`; `status` is
        what it is), by someone without the permission, outside the approver teams and roles,
        approving their own request (unless allowed), or deciding twice."""
        rules, who = self.rules, decision.approver
        if not awaiting:
            raise refuse(f"the {rules.request} is not awaiting approval (it is {status})")
        if not who.permitted:
            raise refuse(f"you do not hold {rules.permission} on {rules.environment}", "Forbidden")
        teams, roles = set(rules.teams), set(rules.roles)
        if (teams or roles) and not (set(who.teams) & teams or set(who.roles) & roles):
            allowed = [f"team {t}" for t in rules.teams] + [f"role {r}" for r in rules.roles]
            raise refuse(
                f"only approvers of {rules.environment} may decide ({', '.join(allowed)})",
                "Forbidden",
            )
        if (
            decision.decision == "approve"
            and who.user_id == rules.requested_by
            and not rules.allow_self
        ):
            raise refuse(
                f"you requested this {rules.request}; someone else must approve it", "Forbidden"
            )
        earlier = next((d for d in self.decisions if d.user_id == who.user_id), None)
        if earlier is not None:
            raise refuse(f"you already decided ({earlier.decision} at {earlier.at.isoformat()})")

    async def checked(
        self, decision: Decision, check: Callable[[ApproverCheck], Awaitable[Approver]]
    ) -> Decision:
        """`decision` with its approver as the database says (`check` runs the activity that
        reads their grants and teams now), in place of the caller's claim. Unchanged when
        replaying a history from before the check (no `APPROVER_CHECKED` marker there)."""
        rules = self.rules
        if rules.environment_id is None or not workflow.patched(APPROVER_CHECKED):
            return decision
        found = await check(
            ApproverCheck(
                user_id=decision.approver.user_id,
                environment_id=rules.environment_id,
                permission=rules.permission,
            )
        )
        return decision.model_copy(update={"approver": found})

    def add(self, decision: Decision) -> DecisionRecord:
        record = DecisionRecord(
            user_id=decision.approver.user_id,
            name=decision.approver.name,
            decision=decision.decision,
            comment=decision.comment,
            via=decision.via,
            at=workflow.now(),
        )
        self.decisions.append(record)
        self._unrecorded = True
        return record

    # -- reading them -------------------------------------------------------------------------
    def count(self) -> int:
        """Distinct approvers so far."""
        return len({d.user_id for d in self.decisions if d.decision == "approve"})

    def rejection(self) -> DecisionRecord | None:
        return next((d for d in self.decisions if d.decision == "reject"), None)

    def reached(self) -> bool:
        return self.count() >= self.rules.required

    def who(self, decision: str) -> str:
        """`name (API), name (Slack)` of those who took `decision`."""
        return ", ".join(
            f"{d.name} ({VIA.get(d.via, d.via)})" for d in self.decisions if d.decision == decision
        )

    def waiting_on(self) -> str:
        needed = self.rules.required - self.count()
        return f"{needed} more approval(s) from {self._approvers()}"

    def details(self) -> str:
        """The wait as the Temporal UI shows it (the workflow's current details), e.g.
        "waiting for 1 more approval from team sre, expires in 3h (at 2025-06-02 14:05 UTC)";
        the time left is as of the last decision, reminder or start of the wait."""
        needed = max(self.rules.required - self.count(), 0)
        text = f"waiting for {needed} more approval{'' if needed == 1 else 's'}"
        text += f" from {self._approvers()}"
        approved = self.who("approve")
        if approved:
            text += f" (approved by {approved})"
        if self.expires_at is not None:
            left = self.expires_at - workflow.now()
            at = self.expires_at.astimezone(UTC)
            text += f", expires in {duration_text(left)} (at {at:%Y-%m-%d %H:%M} UTC)"
        return text

    def _approvers(self) -> str:
        rules = self.rules
        who = [f"team {t}" for t in rules.teams] + [f"role {r}" for r in rules.roles]
        return " or ".join(who) or "an approver"

    def seconds_left(self) -> float | None:
        if self.expires_at is None:
            return None
        return max(0.0, (self.expires_at - workflow.now()).total_seconds())

    # -- the wait -----------------------------------------------------------------------------
    def open(self) -> datetime:
        """Start the clock: decisions are due by the returned time."""
        self.expires_at = workflow.now() + self.rules.timeout
        return self.expires_at

    async def wait(
        self,
        cancelled: Callable[[], bool],
        progress: Callable[[], None],
        remind: Callable[[], None],
    ) -> Outcome:
        """Until a rejection, the quorum, the expiry or a cancel. `progress` runs after each
        decision that settles nothing; `remind` every `reminder_every` while waiting."""
        expires_at = self.expires_at or self.open()
        every = self.rules.reminder_every
        reminder = workflow.now() + every if every else None
        while True:
            if cancelled():
                return "cancelled"
            if self._unrecorded:
                self._unrecorded = False
                if self.rejection() is not None:
                    return "rejected"
                if self.reached():
                    return "approved"
                progress()
                continue
            now = workflow.now()
            if now >= expires_at:
                return "expired"
            workflow.set_current_details(self.details())
            until = expires_at if reminder is None else min(expires_at, reminder)
            woke = await wait_for(lambda: self._unrecorded or cancelled(), until - now)
            due = reminder is not None and reminder <= workflow.now() < expires_at
            if not woke and due and reminder is not None and every is not None:
                remind()
                reminder += every
