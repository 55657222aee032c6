"""What ProvisionWorkflow, DestroyWorkflow and PreviewExpiryWorkflow take and return, their
Updates and query, and what passes to their activities. Only ids, names, counts and decisions
travel through Temporal: credentials and the stack's passphrase are read by the activities
themselves, and stack outputs are recorded by the activity that ran `up`."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from decimal import Decimal

from pydantic import BaseModel, Field

from core.approvals import DecisionRecord

TERMINAL = (
    "succeeded",
    "destroyed",
    "compensated",
    "blocked",
    "failed",
    "rejected",
    "expired",
    "cancelled",
)
PENDING = ("pending", "previewing", "awaiting_approval")
# ApplicationError types. An activity's: what went wrong with the engine.
PULUMI_MISSING = "PulumiCliMissing"  # the CLI is not installed on the worker
PULUMI_MISSING_BEFORE = "PulumiMissing"  # its type in histories recorded before the rename
ENGINE_FAILED = "EngineFailed"  # the engine ran and failed: not retried
CREDENTIALS_REFUSED = "CredentialsRefused"  # stored credentials the engine must not use
# A run's own, when the platform could not do its job (the workflow execution fails with it;
# the run's record says how it ended). The CLI missing and refused credentials keep the types
# above.
PROVISIONING_FAILED = "ProvisioningFailed"  # the preview or `up` failed (compensated, if up)
COMPENSATION_FAILED = "CompensationFailed"  # `up` failed and so did its destroy: resources remain
DESTROY_FAILED = "DestroyFailed"  # a destroy run's (or a time to live's) destroy failed


class ProvisionInput(BaseModel):
    provision_id: uuid.UUID
    notifications_queue: str = "notifications"
    from_expiry: bool = False  # a destroy its preview environment's time to live started


class ProvisionPlan(BaseModel):
    """The run, its environment and the approval rules, read once when the workflow starts."""

    provision_id: uuid.UUID
    action: str  # up | destroy
    org_id: uuid.UUID
    environment_id: uuid.UUID
    environment: str
    environment_type: str
    provider: str
    cloud: str
    stack: str
    note: str | None = None  # why it was requested, e.g. a preview's time to live ended
    whole_stack: bool = True  # False: a destroy of one resource and its dependents
    requested_by: uuid.UUID | None = None
    requested_by_name: str | None = None
    required_approvals: int = 1
    approver_teams: list[str] = Field(default_factory=list)
    approver_roles: list[str] = Field(default_factory=list)
    allow_self_approval: bool = False
    approval_timeout: float = 86_400.0  # seconds
    reminder_interval: float | None = None  # seconds
    ttl: float | None = None  # seconds a preview environment lives after `up`
    channel_ids: list[uuid.UUID] = Field(default_factory=list)
    team_id: uuid.UUID | None = None
    provision_url: str | None = None
    environment_url: str | None = None


class PreviewResult(BaseModel):
    changes: dict[str, int] = Field(default_factory=dict)  # op -> count
    estimate_monthly: Decimal = Decimal(0)
    currency: str = "USD"
    blocking: list[str] = Field(default_factory=list)  # "<resource>: <rule>: <message>"
    warnings: int = 0
    over_budget: str | None = None  # why the estimate needs approval, if it does

    def summary(self) -> str:
        parts = [f"{n} to {op}" for op, n in sorted(self.changes.items()) if op != "same" and n]
        return ", ".join(parts) or "no changes"


class UpResult(BaseModel):
    resources: int
    outputs: list[str] = Field(default_factory=list)  # the names only; values are recorded


class DestroyResult(BaseModel):
    resources: list[str] = Field(default_factory=list)  # names of what was destroyed


class ProvisionStatus(BaseModel):
    """Mirror the workflow's state into the run's row."""

    provision_id: uuid.UUID
    status: str
    reason: str | None = None
    decisions: list[DecisionRecord] | None = None
    approval_reason: str | None = None
    expires_at: datetime | None = None
    destroy_at: datetime | None = None
    finished: bool = False


class ExpiryInput(BaseModel):
    """A preview environment's time to live, counted from a successful `up`."""

    provision_id: uuid.UUID
    environment_id: uuid.UUID
    destroy_at: datetime
    notifications_queue: str = "notifications"
    provisioning_queue: str = "provisioning"
    environment: str | None = None  # its name and cloud, for summaries (None: an older run)
    cloud: str | None = None


class Extension(BaseModel):
    by: timedelta = Field(description="How much longer the preview environment lives")
    user_id: uuid.UUID
    name: str


class ExpiryView(BaseModel):
    destroy_at: datetime
    extended_by: list[str] = Field(default_factory=list)


class ProvisionView(BaseModel):
    """The live state (the `state` query), and each Update's answer."""

    provision_id: uuid.UUID
    status: str
    reason: str | None = None
    preview: PreviewResult | None = None
    approval_reason: str | None = None
    required_approvals: int = 0
    approvals: int = 0
    decisions: list[DecisionRecord] = Field(default_factory=list)
    waiting_on: str | None = None
    expires_at: datetime | None = None
    seconds_left: float | None = None
