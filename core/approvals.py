"""Human decisions on a workflow that waits for approval (a promotion, a provisioning run):
who decides, what they decide, and the record kept of it. Each decision is a Workflow Update
whose validator (`workflows.approvals.Approvals.validate`) accepts or refuses it at once."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field


class Approver(BaseModel):
    """Who decides: their permission on the environment, and their teams and roles there.
    In a `decide` Update this is the caller's claim (the API's answer, narrowed by an API
    key), used only for an immediate refusal; the workflow then reads the approver again
    from the database in an activity (`ApproverCheck`) and decides on that."""

    user_id: uuid.UUID
    name: str
    permitted: bool = Field(description="Holds the approve permission on the environment")
    teams: list[str] = Field(default_factory=list, description="Team slugs in the organization")
    roles: list[str] = Field(default_factory=list, description="Roles covering the environment")


class ApproverCheck(BaseModel):
    """What the workflow asks the database about a decision's approver (an activity's input):
    the approver's own word in the Update is never trusted."""

    user_id: uuid.UUID
    environment_id: uuid.UUID
    permission: str


class Decision(BaseModel):
    approver: Approver
    decision: Literal["approve", "reject"]
    comment: str = Field("", max_length=2000)
    via: Literal["api", "slack"] = "api"


class DecisionRecord(BaseModel):
    user_id: uuid.UUID
    name: str
    decision: Literal["approve", "reject"]
    comment: str = ""
    via: str = "api"
    at: datetime


class CancelRequest(BaseModel):
    user_id: uuid.UUID
    name: str
    reason: str = ""


def approval_count(decisions: list[dict[str, Any]]) -> int:
    """Distinct approvers among recorded decisions (a row's `decisions` column)."""
    return len({d["user_id"] for d in decisions if d.get("decision") == "approve"})
