"""The audit log (read-only; admins)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import AwareDatetime, BaseModel, ConfigDict

from api.auth import require
from api.deps import DbSession
from api.pagination import PageOut, page_params, page_response
from core.audit import AuditFilter, AuditRepository
from core.pagination import PageRequest
from core.security.authorization import Principal

router = APIRouter(prefix="/audit-logs", tags=["audit"])


class AuditOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    occurred_at: datetime
    actor_type: str
    actor_id: uuid.UUID | None
    actor_label: str | None
    action: str
    resource_type: str
    resource_id: str | None
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    ip: str | None
    user_agent: str | None
    request_id: str | None


@router.get("", response_model=PageOut[AuditOut], summary="Search the audit log (newest first)")
async def list_audit_logs(
    request: Request,
    session: DbSession,
    _: Principal = require("audit:read"),
    actor_id: uuid.UUID | None = None,
    action: str | None = Query(None, max_length=100),
    resource_type: str | None = Query(None, max_length=60),
    resource_id: str | None = Query(None, max_length=100),
    request_id: str | None = Query(None, max_length=128),
    since: AwareDatetime | None = None,
    until: AwareDatetime | None = None,
    page: PageRequest = Depends(page_params),
) -> PageOut[AuditOut]:
    found = await AuditRepository(session).list(
        AuditFilter(actor_id, action, resource_type, resource_id, request_id, since, until), page
    )
    return page_response(request, found, AuditOut.model_validate)
