"""Promotions (a request to put a service version into an environment, its policy checks,
approvals and outcome) and service deployments (what ran, or runs, where)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from core.db.base import Entity


class Promotion(Entity):
    """One request, mirrored from its PromotionWorkflow (`promotion-<id>`), which is the truth
    while it is in flight; this row is what lists and filters read."""

    __tablename__ = "promotions"

    org_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organizations.id"), index=True)
    environment_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("environments.id"), index=True)
    service_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("services.id"), index=True)
    version_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("service_versions.id"))
    version: Mapped[str] = mapped_column(String(100))
    kind: Mapped[str] = mapped_column(String(20), default="promote")  # promote | rollback
    # pending | waiting | awaiting_approval | deploying | verifying | succeeded | rolled_back
    # | failed | rejected | expired | cancelled | refused
    status: Mapped[str] = mapped_column(String(20), default="pending", index=True)
    requested_by: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id"))
    # Where the version came from, read from its provenance when requested (never from the
    # request): the branch and commit its pipeline run recorded, and how approvers see it.
    branch: Mapped[str | None] = mapped_column(String(255))
    git_sha: Mapped[str | None] = mapped_column(String(40), default=None)
    pipeline_run_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("pipeline_runs.id"), default=None
    )
    provenance: Mapped[str] = mapped_column(Text, default="no provenance")
    comment: Mapped[str] = mapped_column(Text, default="")
    required_approvals: Mapped[int] = mapped_column(Integer, default=0)
    # [{user_id, name, decision, comment, via, at}] in the order they were given
    decisions: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    reason: Mapped[str | None] = mapped_column(Text)  # why it waits, or how it ended
    expires_at: Mapped[datetime | None] = mapped_column(default=None)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)
    workflow_id: Mapped[str] = mapped_column(String(255))
    deployment_id: Mapped[uuid.UUID | None] = mapped_column(default=None)
    previous_version: Mapped[str | None] = mapped_column(String(100))


class ServiceDeployment(Entity):
    """A version of a service put into an environment. `healthy` is what runs now (one per
    service and environment); `superseded` ran before; `failed` never became healthy;
    `rolled_back` was replaced by the version before it after failing verification."""

    __tablename__ = "service_deployments"

    service_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("services.id"), index=True)
    version_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("service_versions.id"))
    environment_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("environments.id"), index=True)
    # deploying | healthy | failed | rolled_back | superseded
    status: Mapped[str] = mapped_column(String(20), default="deploying", index=True)
    deployed_at: Mapped[datetime | None] = mapped_column(default=None)  # when it became healthy
    finished_at: Mapped[datetime | None] = mapped_column(default=None)  # when it stopped running
    promotion_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("promotions.id"))
    version: Mapped[str] = mapped_column(String(100))
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # pid/port, namespace
    error: Mapped[str | None] = mapped_column(Text)
