"""Approving (or rejecting) a fork pull request's run that waits for approval.

The API checks `pipelines:run` before it sends the workflow's `approve` Update; the workflow
then records the decision through `decide`, which reads the approver's grants again (and the
API key's permissions, when one was used) instead of trusting what the Update carried. So an
Update sent to Temporal directly, naming a user who may not run the pipeline, changes
nothing."""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from core.catalog.services import service_resource
from core.db.types import utcnow
from core.errors import Forbidden, NotFound
from core.identity.grants import load_grants
from core.models.catalog import Service
from core.models.identity import ApiKey, User
from core.models.pipelines import Pipeline, PipelineRun
from core.pipelines.run_messages import ApprovalRequest, ApprovalResult
from core.security.authorization import Principal, authorize

APPROVE_PERMISSION = "pipelines:run"


async def approver(
    session: AsyncSession, user_id: uuid.UUID, key_id: uuid.UUID | None
) -> Principal:
    """The principal as the database says now: an active user's grants, limited to a live
    API key's permissions. Forbidden when the user or key can no longer act."""
    user = await session.get(User, user_id)
    if user is None or user.is_deleted or user.status != "active":
        raise Forbidden("the approving account no longer exists or is disabled")
    grants = await load_grants(session, user.id)
    if key_id is None:
        return Principal(user_id=user.id, label=user.email, grants=grants)
    key = await session.get(ApiKey, key_id)
    now = utcnow()
    if (
        key is None
        or key.user_id != user.id
        or key.revoked_at is not None
        or (key.expires_at is not None and key.expires_at <= now)
    ):
        raise Forbidden("the approving API key is not valid any more")
    return Principal(
        user_id=user.id,
        label=f"{key.name} (API key of {user.email})",
        kind="api_key",
        grants=grants,
        key_id=key.id,
        key_permissions=frozenset(key.permissions),
    )


async def decide(
    session: AsyncSession, run_id: uuid.UUID, request: ApprovalRequest
) -> ApprovalResult:
    """Record an approval (the run becomes `queued`) or a rejection (`cancelled`), once the
    approver is found to hold `pipelines:run` on the pipeline's service. A run no longer
    awaiting approval is left as it is (a retried or concurrent decision)."""
    run = await session.get(PipelineRun, run_id, with_for_update=True)
    if run is None:
        raise NotFound(f"pipeline run {run_id} not found")
    if run.status != "awaiting_approval":
        return ApprovalResult(status=run.status, decided_by=run.approved_by or "")
    pipeline = await session.get(Pipeline, run.pipeline_id)
    service = await session.get(Service, pipeline.service_id) if pipeline else None
    if pipeline is None or service is None:
        raise NotFound(f"the pipeline of run {run_id} is gone")
    principal = await approver(session, request.user_id, request.key_id)
    authorize(principal, APPROVE_PERMISSION, service_resource(service))
    now = utcnow()
    run.approved_by, run.approved_at = principal.label, now
    if request.decision == "approve":
        run.status = "queued"
    else:
        run.status, run.error, run.completed_at = "cancelled", f"rejected by {principal.label}", now
    return ApprovalResult(status=run.status, decided_by=principal.label)
