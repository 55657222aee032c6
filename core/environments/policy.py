"""What an environment allows: resource limits for what is deployed into it, and the
protection policy a promotion into it must satisfy (approvals, soak time, freeze windows,
allowed branches). Validated pydantic models, stored as JSON on the environment."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from core.durations import Duration, parse_duration
from core.pipelines.definition import branch_matches

EnvironmentType = Literal["development", "staging", "production", "preview"]
Target = Literal["local", "kubernetes"]
_QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|Ki|Mi|Gi|Ti|k|M|G|T)?$")


_BYTES = {
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "m": 0.001,
}


def quantity_bytes(quantity: str) -> int:
    """A memory quantity (`512Mi`, `1G`, `1000000`) in bytes."""
    for suffix, factor in _BYTES.items():
        if quantity.endswith(suffix):
            return int(float(quantity[: -len(suffix)]) * factor)
    return int(float(quantity))


class ResourceLimits(BaseModel):
    """Kubernetes quantities (`500m`, `2`, `512Mi`), applied as a ResourceQuota and
    LimitRange on the kubernetes target, and to the processes of the local target where the
    operating system allows."""

    model_config = ConfigDict(extra="forbid")
    cpu: str | None = Field(None, description="All containers together, e.g. 4")
    memory: str | None = Field(None, description="All containers together, e.g. 8Gi")
    pods: int | None = Field(None, ge=1, le=10_000)
    default_cpu: str | None = Field(None, description="Per container unless it says, e.g. 500m")
    default_memory: str | None = Field(None, description="Per container, e.g. 256Mi")

    @property
    def process_memory(self) -> int | None:
        """Bytes one process of the local target may map: the per-container default."""
        return quantity_bytes(self.default_memory) if self.default_memory else None

    @field_validator("cpu", "memory", "default_cpu", "default_memory")
    @classmethod
    def _quantity(cls, value: str | None) -> str | None:
        if value is not None and not _QUANTITY.fullmatch(value):
            raise ValueError(f"{value!r} is not a quantity like 500m, 2, 512Mi or 8Gi")
        return value


class FreezeWindow(BaseModel):
    """No promotion deploys between `starts_at` and `ends_at`; one requested meanwhile
    waits durably until the window ends."""

    model_config = ConfigDict(extra="forbid")
    starts_at: datetime
    ends_at: datetime
    reason: str = Field("", max_length=500)

    @model_validator(mode="after")
    def _ordered(self) -> FreezeWindow:
        if self.starts_at.tzinfo is None or self.ends_at.tzinfo is None:
            raise ValueError("times need a time zone, e.g. 2026-12-24T00:00:00Z")
        if self.ends_at <= self.starts_at:
            raise ValueError("ends_at must be after starts_at")
        return self


class ProtectionPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid")
    required_approvals: int = Field(0, ge=0, le=10, description="0: no approval needed")
    approver_teams: list[str] = Field(
        default_factory=list, description="Team slugs whose members may approve"
    )
    approver_roles: list[str] = Field(
        default_factory=list, description="Roles whose holders may approve"
    )
    allow_self_approval: bool = Field(False, description="The requester may approve")
    soak_time: Duration = Field(
        timedelta(0), description="How long the version must have run in the previous one"
    )
    freeze_windows: list[FreezeWindow] = Field(default_factory=list)
    approval_timeout: Duration = Field(timedelta(days=1), description="Then it expires")
    reminder_interval: Duration | None = Field(
        timedelta(hours=4), description="Remind approvers this often while waiting"
    )
    allowed_branches: list[str] = Field(
        default_factory=list, description="Globs; empty: any branch"
    )
    verification_window: Duration = Field(
        timedelta(seconds=30),
        description="After a deploy, health is probed this long; a failure rolls back",
    )

    @field_validator(
        "soak_time", "approval_timeout", "reminder_interval", "verification_window", mode="before"
    )
    @classmethod
    def _duration(cls, value: Any) -> Any:
        return None if value is None else parse_duration(value)

    @model_validator(mode="after")
    def _consistent(self) -> ProtectionPolicy:
        if self.approval_timeout <= timedelta(0):
            raise ValueError("approval_timeout must be more than 0")
        if self.required_approvals and not (self.approver_teams or self.approver_roles):
            raise ValueError("required_approvals needs approver_teams or approver_roles")
        return self

    @property
    def protected(self) -> bool:
        return self.required_approvals > 0

    def branch_allowed(self, branch: str | None) -> bool:
        if not self.allowed_branches:
            return True
        return branch is not None and any(branch_matches(branch, g) for g in self.allowed_branches)

    def freeze_at(self, moment: datetime) -> FreezeWindow | None:
        """The freeze window `moment` falls in, if any (the one ending last)."""
        inside = [w for w in self.freeze_windows if w.starts_at <= moment < w.ends_at]
        return max(inside, key=lambda w: w.ends_at, default=None)
