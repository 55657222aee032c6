"""Environment tables: environments of an organization (their deploy target, place in the
promotion order, resource limits and protection policy), their configuration entries
(secrets encrypted at rest) and per-user or per-team access grants."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from core.db.base import Base, Entity, SoftDeleteMixin, live_unique
from core.db.types import utcnow


class Environment(Entity, SoftDeleteMixin):
    __tablename__ = "environments"
    __table_args__ = (live_unique("uq_environments_org_id_name_live", "org_id", "name"),)

    org_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organizations.id"), index=True)
    name: Mapped[str] = mapped_column(String(63))
    description: Mapped[str] = mapped_column(Text, default="")
    # development | staging | production | preview
    type: Mapped[str] = mapped_column(String(20))
    # active | provisioning | degraded | retired
    status: Mapped[str] = mapped_column(String(20), default="active")
    target: Mapped[str] = mapped_column(String(20), default="local")  # local | kubernetes
    cluster_id: Mapped[str | None] = mapped_column(String(255))  # a kubeconfig context
    namespace: Mapped[str | None] = mapped_column(String(63))
    # The environment a version must pass through first (development -> staging -> ...).
    previous_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("environments.id"))
    position: Mapped[int] = mapped_column(Integer, default=0)  # in the promotion order
    limits: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # ResourceLimits
    policy: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # ProtectionPolicy
    config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # free-form settings


class EnvironmentConfig(Entity):
    """One configuration entry. A secret's value is ciphertext (the key ring's AES-256-GCM),
    decrypted only to inject it into a deployment; responses show it masked."""

    __tablename__ = "environment_configs"
    __table_args__ = (UniqueConstraint("env_id", "key"),)

    env_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("environments.id"), index=True)
    key: Mapped[str] = mapped_column(String(255))
    value: Mapped[str] = mapped_column(Text)  # plain text, or ciphertext when is_secret
    is_secret: Mapped[bool] = mapped_column(Boolean, default=False)


class EnvironmentAccess(Base):
    """A grant of permissions on one environment to a user or a team."""

    __tablename__ = "environment_access"
    __table_args__ = (UniqueConstraint("env_id", "user_id", "team_id"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    env_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("environments.id"), index=True)
    user_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id"))
    team_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("teams.id"))
    permissions: Mapped[list[str]] = mapped_column(JSON, default=list)
    granted_at: Mapped[datetime] = mapped_column(default=utcnow)
    granted_by: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id"))


class KubernetesContext(Entity):
    """A kubeconfig context (a cluster) an organization's environments may deploy to: the
    allow-list a platform admin keeps. No row for an organization: only the worker's default
    cluster (no context named)."""

    __tablename__ = "kubernetes_contexts"
    __table_args__ = (UniqueConstraint("org_id", "context"),)

    org_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organizations.id"), index=True)
    context: Mapped[str] = mapped_column(String(255))
