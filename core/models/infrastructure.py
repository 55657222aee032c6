"""Infrastructure tables: cloud providers (credentials encrypted), the resource inventory and
its relationships, daily cost records, and budgets."""

from __future__ import annotations

import uuid
from datetime import date
from decimal import Decimal
from typing import Any

from sqlalchemy import JSON, Date, ForeignKey, Numeric, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from core.db.base import Base, Entity, SoftDeleteMixin, live_unique

MONEY = Numeric(14, 4)


class Provider(Entity, SoftDeleteMixin):
    """A cloud account (or Kubernetes cluster) the platform provisions into. `credentials`
    is ciphertext (the key ring's AES-256-GCM); responses show only `credential_names`."""

    __tablename__ = "providers"
    __table_args__ = (live_unique("uq_providers_org_id_name_live", "org_id", "name"),)

    org_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organizations.id"), index=True)
    name: Mapped[str] = mapped_column(String(63))
    type: Mapped[str] = mapped_column(String(20))  # aws | gcp | azure | kubernetes
    credentials: Mapped[str | None] = mapped_column(Text)
    credential_names: Mapped[list[str]] = mapped_column(JSON, default=list)
    regions: Mapped[list[str]] = mapped_column(JSON, default=list)
    config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # shown: project, ...


class Resource(Entity):
    """One provisioned resource, as recorded from a stack's outputs (or imported)."""

    __tablename__ = "resources"
    __table_args__ = (UniqueConstraint("provider_id", "identifier"),)

    provider_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("providers.id"), index=True)
    environment_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("environments.id"), index=True
    )
    type: Mapped[str] = mapped_column(String(200), index=True)  # e.g. aws:s3/bucketV2:BucketV2
    identifier: Mapped[str] = mapped_column(String(1024))  # the Pulumi URN or cloud id
    name: Mapped[str] = mapped_column(String(255))
    region: Mapped[str | None] = mapped_column(String(63))
    tags: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    # active | destroying | destroyed | failed
    status: Mapped[str] = mapped_column(String(20), default="active", index=True)
    cost_monthly: Mapped[Decimal | None] = mapped_column(MONEY)
    stack: Mapped[str | None] = mapped_column(String(255))  # the Pulumi stack it belongs to
    properties: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # e.g. encrypted


class ResourceRelationship(Base):
    __tablename__ = "resource_relationships"

    parent_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("resources.id"), primary_key=True)
    child_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("resources.id"), primary_key=True)
    relationship_type: Mapped[str] = mapped_column(String(30), primary_key=True)


class CostRecord(Entity):
    """One resource's cost on one day from one collector; a rerun replaces it (upsert)."""

    __tablename__ = "cost_records"
    __table_args__ = (UniqueConstraint("resource_id", "date", "source"),)

    resource_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("resources.id"), index=True)
    date: Mapped[date] = mapped_column(Date, index=True)
    cost: Mapped[Decimal] = mapped_column(MONEY)
    currency: Mapped[str] = mapped_column(String(3), default="USD")
    source: Mapped[str] = mapped_column(String(20), default="estimate")
    usage_metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class Budget(Entity, SoftDeleteMixin):
    """A monthly budget for a team, an environment, or both."""

    __tablename__ = "budgets"

    org_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organizations.id"), index=True)
    team_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("teams.id"))
    environment_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("environments.id"))
    amount: Mapped[Decimal] = mapped_column(MONEY)
    currency: Mapped[str] = mapped_column(String(3), default="USD")
    notified_month: Mapped[str | None] = mapped_column(String(7))  # YYYY-MM last notified
