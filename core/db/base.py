"""Declarative base and the mixins every entity uses.

Every entity gets a UUID `id`, `created_at`, `updated_at`, `created_by` and `updated_by`;
the actor columns are filled from the request context at flush time, so services never
have to remember them. Critical data adds `SoftDeleteMixin`.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Index, MetaData, Uuid, event, text
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from core import context
from core.db.types import UTCDateTime, utcnow

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime, uuid.UUID: Uuid}


class EntityMixin:
    """The columns every entity has. Use through `Entity` (or with another declarative base)."""

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    created_by: Mapped[uuid.UUID | None] = mapped_column(default=None)
    updated_by: Mapped[uuid.UUID | None] = mapped_column(default=None)


class Entity(EntityMixin, Base):
    """Abstract base for domain entities."""

    __abstract__ = True


class SoftDeleteMixin:
    """Soft delete: rows stay, `deleted_at` and `deleted_by` say when and by whom."""

    deleted_at: Mapped[datetime | None] = mapped_column(default=None, index=True)
    deleted_by: Mapped[uuid.UUID | None] = mapped_column(default=None)

    @property
    def is_deleted(self) -> bool:
        return self.deleted_at is not None

    def soft_delete(self, actor_id: uuid.UUID | None = None) -> None:
        self.deleted_at = utcnow()
        self.deleted_by = actor_id if actor_id is not None else context.current().actor_id


@event.listens_for(Session, "before_flush")
def _stamp_actor(session: Session, flush_context: Any, instances: Any) -> None:
    actor = context.current().actor_id
    if actor is None:
        return
    for obj in session.new:
        if isinstance(obj, EntityMixin):
            obj.created_by = obj.created_by or actor
            obj.updated_by = obj.updated_by or actor
    for obj in session.dirty:
        if isinstance(obj, EntityMixin) and session.is_modified(obj):
            obj.updated_by = actor


def live_unique(name: str, *columns: str) -> Index:
    """A unique index over the rows not soft-deleted, so a deleted row's name can be reused."""
    live = text("deleted_at IS NULL")
    return Index(name, *columns, unique=True, sqlite_where=live, postgresql_where=live)
