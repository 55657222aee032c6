"""Service catalog tables: services (Backstage kinds Component, API, System, Resource), their
tags, versions and dependencies, and health checks with their results and transitions."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from core.db.base import Base, Entity, SoftDeleteMixin, live_unique
from core.db.types import utcnow


class Service(Entity, SoftDeleteMixin):
    """A catalog entity. `kind` is Backstage's (component, api, system, resource); a plain
    registration is a component. The name is unique among the organization's live entities."""

    __tablename__ = "services"
    __table_args__ = (live_unique("uq_services_org_id_name_live", "org_id", "name"),)

    org_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organizations.id"), index=True)
    owner_team_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("teams.id"), index=True)
    name: Mapped[str] = mapped_column(String(63), index=True)
    kind: Mapped[str] = mapped_column(String(20), default="component", index=True)
    type: Mapped[str | None] = mapped_column(String(100))  # Backstage spec.type: service, openapi…
    description: Mapped[str] = mapped_column(Text, default="")
    repository_url: Mapped[str | None] = mapped_column(String(2048))  # normalised https URL
    repository_host: Mapped[str | None] = mapped_column(String(20))  # github | gitlab | bitbucket
    # host/owner/name in lower case: how webhooks find the service
    repository_path: Mapped[str | None] = mapped_column(String(1024), index=True)
    docs: Mapped[list[dict[str, str]]] = mapped_column(JSON, default=list)  # [{title, url}]
    lifecycle: Mapped[str] = mapped_column(String(20), default="experimental", index=True)
    system: Mapped[str | None] = mapped_column(String(63))  # name of a system entity
    provides_apis: Mapped[list[str]] = mapped_column(JSON, default=list)  # names of api entities
    annotations: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)


class ServiceTag(Base):
    __tablename__ = "service_tags"

    service_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("services.id"), primary_key=True)
    tag: Mapped[str] = mapped_column(String(63), primary_key=True, index=True)


class ServiceVersion(Entity):
    __tablename__ = "service_versions"
    __table_args__ = (UniqueConstraint("service_id", "version"),)

    service_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("services.id"), index=True)
    version: Mapped[str] = mapped_column(String(100))  # semantic version, without a leading v
    git_sha: Mapped[str | None] = mapped_column(String(40))
    dockerfile_path: Mapped[str | None] = mapped_column(String(1024))
    config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # The pipeline run that built it (its provenance: branch and commit as the platform
    # recorded them); None for a version registered by hand.
    pipeline_run_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("pipeline_runs.id"), index=True, default=None
    )


class ServiceDependency(Entity):
    """`service_id` depends on `depends_on_service_id` (runtime, build or data)."""

    __tablename__ = "service_dependencies"
    __table_args__ = (UniqueConstraint("service_id", "depends_on_service_id", "type"),)

    service_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("services.id"), index=True)
    depends_on_service_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("services.id"), index=True)
    type: Mapped[str] = mapped_column(String(20), default="runtime")
    version_constraint: Mapped[str | None] = mapped_column(String(200))


class HealthCheck(Entity, SoftDeleteMixin):
    """An HTTP probe of a service, watched by a HealthMonitorWorkflow (`health-check-<id>`).
    The status columns are the projection the monitor writes after each probe."""

    __tablename__ = "health_checks"
    __table_args__ = (live_unique("uq_health_checks_service_id_name_live", "service_id", "name"),)

    service_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("services.id"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    endpoint: Mapped[str] = mapped_column(String(2048))
    method: Mapped[str] = mapped_column(String(10), default="GET")
    expected_status: Mapped[int] = mapped_column(Integer, default=200)
    interval_seconds: Mapped[int] = mapped_column(Integer, default=30)
    timeout_seconds: Mapped[float] = mapped_column(Float, default=5.0)
    failure_threshold: Mapped[int] = mapped_column(Integer, default=3)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    # unknown | healthy | degraded | unhealthy (paused when disabled)
    status: Mapped[str] = mapped_column(String(20), default="unknown")
    consecutive_failures: Mapped[int] = mapped_column(Integer, default=0)
    last_checked_at: Mapped[datetime | None] = mapped_column(default=None)
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_latency_ms: Mapped[float | None] = mapped_column(Float)
    last_error: Mapped[str | None] = mapped_column(Text)
    status_changed_at: Mapped[datetime | None] = mapped_column(default=None)


class HealthCheckResult(Base):
    """One probe. Kept for the uptime window (HEALTH_RESULT_RETENTION), then pruned."""

    __tablename__ = "health_check_results"
    __table_args__ = (
        Index("ix_health_check_results_check_id_checked_at", "check_id", "checked_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    check_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("health_checks.id"))
    checked_at: Mapped[datetime] = mapped_column(default=utcnow)
    ok: Mapped[bool] = mapped_column(Boolean)
    status_code: Mapped[int | None] = mapped_column(Integer)
    latency_ms: Mapped[float | None] = mapped_column(Float)
    error: Mapped[str | None] = mapped_column(Text)


class HealthTransition(Base):
    __tablename__ = "health_transitions"
    __table_args__ = (Index("ix_health_transitions_check_id_at", "check_id", "at"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    check_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("health_checks.id"))
    service_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("services.id"), index=True)
    from_status: Mapped[str] = mapped_column(String(20))
    to_status: Mapped[str] = mapped_column(String(20))
    at: Mapped[datetime] = mapped_column(default=utcnow)
    reason: Mapped[str | None] = mapped_column(Text)
