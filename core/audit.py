"""Recording and reading the audit log.

`AuditService.record` adds an entry to the caller's session, so the entry commits (or rolls
back) together with the change it describes. Values under secret-looking keys are masked.
"""

from __future__ import annotations

import enum
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Select, inspect, select
from sqlalchemy.ext.asyncio import AsyncSession

from core import context
from core.models.audit import AuditLog
from core.pagination import Page, PageRequest, paginate

_SECRET_KEY = re.compile(r"pass(word)?|secret|token|api_?key|private_?key|credential|hash", re.I)
REDACTED = "[redacted]"


def _json_safe(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {
            str(k): REDACTED if _SECRET_KEY.search(str(k)) and v is not None else _json_safe(v)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple | set):
        return [_json_safe(v) for v in value]
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, uuid.UUID | Decimal):
        return str(value)
    if isinstance(value, enum.Enum):
        return value.value
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def column_values(entity: Any) -> dict[str, Any]:
    """The column values of an ORM object, as they are."""
    mapper = inspect(entity).mapper
    return {attr.key: getattr(entity, attr.key) for attr in mapper.column_attrs}


def snapshot(entity: Any) -> dict[str, Any]:
    """The column values of an ORM object as JSON-safe data, secrets masked (for before/after)."""
    return _json_safe(column_values(entity))


class AuditService:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def record(
        self,
        action: str,
        resource_type: str,
        resource_id: Any = None,
        *,
        before: Mapping[str, Any] | None = None,
        after: Mapping[str, Any] | None = None,
        ctx: context.RequestContext | None = None,
    ) -> AuditLog:
        """Add one entry for `action` on a resource; who/where comes from the request context."""
        ctx = ctx or context.current()
        entry = AuditLog(
            actor_type=ctx.actor_type,
            actor_id=ctx.actor_id,
            actor_label=ctx.actor_label,
            action=action,
            resource_type=resource_type,
            resource_id=str(resource_id) if resource_id is not None else None,
            before=_json_safe(before) if before is not None else None,
            after=_json_safe(after) if after is not None else None,
            ip=ctx.ip,
            user_agent=ctx.user_agent,
            request_id=ctx.request_id,
        )
        self.session.add(entry)
        await self.session.flush()
        return entry


@dataclass(frozen=True)
class AuditFilter:
    actor_id: uuid.UUID | None = None
    action: str | None = None
    resource_type: str | None = None
    resource_id: str | None = None
    request_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None


class AuditRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    def _query(self, f: AuditFilter) -> Select[AuditLog]:
        stmt = select(AuditLog)
        for column, value in (
            (AuditLog.actor_id, f.actor_id),
            (AuditLog.action, f.action),
            (AuditLog.resource_type, f.resource_type),
            (AuditLog.resource_id, f.resource_id),
            (AuditLog.request_id, f.request_id),
        ):
            if value is not None:
                stmt = stmt.where(column == value)
        if f.since is not None:
            stmt = stmt.where(AuditLog.occurred_at >= f.since)
        if f.until is not None:
            stmt = stmt.where(AuditLog.occurred_at < f.until)
        return stmt

    async def list(self, f: AuditFilter, page: PageRequest) -> Page[AuditLog]:
        """Newest first, stable on ties by id."""
        return await paginate(
            self.session,
            self._query(f),
            page,
            order=(AuditLog.occurred_at, AuditLog.id),
            descending=True,
        )
