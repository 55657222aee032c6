"""What PromotionWorkflow takes and returns, its Updates, its query, and what passes between it
and its activities. Only ids, names and decisions travel through Temporal: configuration values
and secrets are read by the deploy activity itself, so history holds none of them."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from core.approvals import DecisionRecord

PromotionKind = Literal["promote", "rollback"]
TERMINAL = ("succeeded", "rolled_back", "failed", "rejected", "expired", "cancelled", "refused")
PENDING = ("pending", "waiting", "awaiting_approval")


class PromotionInput(BaseModel):
    promotion_id: uuid.UUID
    notifications_queue: str = "notifications"


class Plan(BaseModel):
    """The promotion and the policy it is held to, read once when the workflow starts (a
    policy changed afterwards applies to the next promotion)."""

    promotion_id: uuid.UUID
    kind: PromotionKind
    org_id: uuid.UUID
    environment_id: uuid.UUID
    environment: str
    service_id: uuid.UUID
    service: str
    version_id: uuid.UUID
    version: str
    previous_version: str | None = None
    requested_by: uuid.UUID | None = None
    requested_by_name: str | None = None
    comment: str = ""
    provenance: str = Field("", description="Where the version's branch comes from, for approvers")
    required_approvals: int = 0
    approver_teams: list[str] = Field(default_factory=list)
    approver_roles: list[str] = Field(default_factory=list)
    allow_self_approval: bool = False
    approval_timeout: float = 86_400.0  # seconds
    reminder_interval: float | None = None  # seconds
    verification_window: float = 30.0  # seconds
    freeze_windows: bool = False  # whether the policy has any (checked again after approval)
    channel_ids: list[uuid.UUID] = Field(default_factory=list)
    team_id: uuid.UUID | None = None
    promotion_url: str | None = None
    target: str = Field("", description="Where it deploys, for messages: `local`, or a context")


class Gate(BaseModel):
    """The policy checks' answer now: go, refused for good, or wait until a time."""

    refused: str | None = None
    wait_until: datetime | None = None
    wait_reason: str | None = None


class PromotionView(BaseModel):
    """The live state (the `state` query), and each Update's answer."""

    promotion_id: uuid.UUID
    status: str
    reason: str | None = None
    required_approvals: int = 0
    approvals: int = 0
    decisions: list[DecisionRecord] = Field(default_factory=list)
    waiting_on: str | None = Field(None, description="Whose decision, or what time, it waits for")
    expires_at: datetime | None = None
    seconds_left: float | None = None
    wait_until: datetime | None = None
    deployment_id: uuid.UUID | None = None


class StatusUpdate(BaseModel):
    """Mirror the workflow's state into the promotion's row."""

    promotion_id: uuid.UUID
    status: str
    reason: str | None = None
    decisions: list[DecisionRecord] | None = None
    expires_at: datetime | None = None
    finished: bool = False


class DeployInput(BaseModel):
    promotion_id: uuid.UUID
    version_id: uuid.UUID
    rollback: bool = Field(False, description="Putting the previous version back")


class DeployResult(BaseModel):
    ok: bool
    deployment_id: uuid.UUID
    previous_deployment_id: uuid.UUID | None = None
    previous_version_id: uuid.UUID | None = None
    switched: bool = Field(False, description="Whether the target changed (needs a roll back)")
    error: str | None = None


class DeploymentMark(BaseModel):
    deployment_id: uuid.UUID
    status: Literal["rolled_back", "failed"]


class VerifyInput(BaseModel):
    deployment_id: uuid.UUID
    seconds: float
    interval: float = 1.0


class VerifyResult(BaseModel):
    ok: bool
    probes: int = 0
    error: str | None = None


class SlackMessagesInput(BaseModel):
    promotion_id: uuid.UUID
