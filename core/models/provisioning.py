"""Provisioning runs (a Pulumi preview, its compliance verdict and cost estimate, approvals,
then `up` or `destroy` of an environment's stack) and their logs."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from core.db.base import Base, Entity
from core.db.types import utcnow
from core.models.infrastructure import MONEY
from core.models.pipelines import AutoId


class Provision(Entity):
    """One run against an environment's stack, mirrored from its workflow
    (`provision-<environment id>` or `destroy-<environment id>`), which is the truth while it
    is in flight; this row is what lists read."""

    __tablename__ = "provisions"

    org_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organizations.id"), index=True)
    environment_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("environments.id"), index=True)
    provider_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("providers.id"))
    action: Mapped[str] = mapped_column(String(20), default="up")  # up | destroy
    # pending | previewing | awaiting_approval | provisioning | compensating | destroying
    # | succeeded | destroyed | compensated | blocked | failed | rejected | expired | cancelled
    status: Mapped[str] = mapped_column(String(20), default="pending", index=True)
    stack: Mapped[str] = mapped_column(String(255))  # <project>/<stack>
    spec: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # infra.stacks.StackSpec
    resource_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("resources.id"))
    requested_by: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id"))
    # {"changes": {op: count}, "resources": [{type, name, op}]}
    plan: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    estimate_monthly: Mapped[Decimal | None] = mapped_column(MONEY)
    currency: Mapped[str] = mapped_column(String(3), default="USD")
    violations: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    approval_reason: Mapped[str | None] = mapped_column(Text)  # why approval was needed
    decisions: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    outputs: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    reason: Mapped[str | None] = mapped_column(Text)  # what it waits for, or how it ended
    expires_at: Mapped[datetime | None] = mapped_column(default=None)  # approval deadline
    destroy_at: Mapped[datetime | None] = mapped_column(default=None)  # a preview's TTL
    finished_at: Mapped[datetime | None] = mapped_column(default=None)
    workflow_id: Mapped[str] = mapped_column(String(255))


class ProvisionLogChunk(Base):
    """A batch of a run's log lines (the Pulumi engine's output), written as they come."""

    __tablename__ = "provision_log_chunks"
    __table_args__ = (
        UniqueConstraint("provision_id", "first_seq"),
        Index("ix_provision_log_chunks_provision_id_id", "provision_id", "id"),
    )

    id: Mapped[int] = mapped_column(AutoId, primary_key=True, autoincrement=True)
    provision_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("provisions.id"))
    first_seq: Mapped[int] = mapped_column(Integer)
    last_seq: Mapped[int] = mapped_column(Integer)
    lines: Mapped[list[dict[str, Any]]] = mapped_column(JSON)  # [{seq, at, text}]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
