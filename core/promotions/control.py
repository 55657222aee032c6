"""Talking to a promotion's workflow from outside it (the API, the Slack route, benchmarks):
start it, read its live state, and send decisions and cancels as Updates, translating the
workflow's refusals into the API's errors (403 for who may not, 409 for what cannot be now).

A promotion starts with what an operator filters and reads on in the Temporal UI: search
attributes (organization, team, service, environment, commit, requester, status), a one-line
summary and markdown details (names, versions and ids only: nothing secret)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.client import Client
from temporalio.common import TypedSearchAttributes

from core.approvals import CancelRequest, Decision
from core.models.catalog import Service
from core.models.environments import Environment
from core.models.identity import Organization, Team, User
from core.models.promotions import Promotion
from core.promotions.messages import TERMINAL, PromotionInput, PromotionView
from core.temporal import search_attributes
from core.temporal.client import execute_update, start_once
from workflows.notification import NOTIFICATIONS_QUEUE
from workflows.promotion import PROMOTIONS_QUEUE, PromotionWorkflow

QUERY_TIMEOUT = 2.0  # seconds to wait for the live state before serving the record


@dataclass(frozen=True)
class Labels:
    """How a promotion's workflow shows in the Temporal UI."""

    search_attributes: TypedSearchAttributes
    summary: str
    details: str


async def labels(session: AsyncSession, promotion: Promotion) -> Labels:
    """The search attributes, summary and details of `promotion`'s workflow."""
    env = await session.get(Environment, promotion.environment_id)
    service = await session.get(Service, promotion.service_id)
    org = await session.get(Organization, promotion.org_id)
    assert env is not None and service is not None and org is not None
    team = await session.get(Team, service.owner_team_id)
    requester = await session.get(User, promotion.requested_by) if promotion.requested_by else None
    who = (requester.name or requester.email) if requester else "the platform"
    if promotion.kind == "rollback":
        summary = f"roll back {service.name} in {env.name} to {promotion.version}"
    else:
        summary = f"promote {service.name} {promotion.version} to {env.name}"
    lines = [
        f"**{summary}**",
        "",
        f"- version: {promotion.version} (running now: {promotion.previous_version or 'none'})",
        f"- commit: {promotion.git_sha or 'unknown'}",
        f"- source run: {promotion.pipeline_run_id or 'none'} ({promotion.provenance})",
        f"- approvals required: {promotion.required_approvals}",
        f"- requested by: {requester.email if requester else 'the platform'}",
        f"- organization / team: {org.slug} / {team.slug if team else 'none'}",
        f"- promotion: {promotion.id}",
    ]
    return Labels(
        search_attributes=search_attributes.attributes(
            organization=org.slug,
            team=team.slug if team else None,
            service=service.name,
            environment=env.name,
            commit=promotion.git_sha,
            actor=requester.email if requester else None,
            status=promotion.status,
        ),
        summary=f"{summary}, requested by {who}",
        details="\n".join(lines),
    )


async def start_promotion(
    client: Client,
    promotion: Promotion,
    *,
    session: AsyncSession,
    task_queue: str = PROMOTIONS_QUEUE,
    notifications_queue: str = NOTIFICATIONS_QUEUE,
) -> None:
    """Start the promotion's workflow, labelled for the Temporal UI from `session` (which is
    committed then: no transaction stays open across the call to Temporal)."""
    shown = await labels(session, promotion)
    await session.commit()
    await start_once(
        client,
        PromotionWorkflow.run,
        PromotionInput(promotion_id=promotion.id, notifications_queue=notifications_queue),
        id=promotion.workflow_id,
        task_queue=task_queue,
        doing="start the promotion",
        search_attributes=shown.search_attributes,
        static_summary=shown.summary,
        static_details=shown.details,
    )


async def live_view(client: Client, promotion: Promotion) -> PromotionView | None:
    """The workflow's state of an unfinished promotion; None when it cannot be had."""
    if promotion.status in TERMINAL:
        return None
    try:
        handle = client.get_workflow_handle(promotion.workflow_id)
        return await asyncio.wait_for(handle.query(PromotionWorkflow.state), timeout=QUERY_TIMEOUT)
    except Exception:  # Temporal down, no worker answering, not started yet: the record
        return None


async def _update(
    client: Client, promotion: Promotion, update: Any, arg: Any, doing: str
) -> PromotionView:
    view: PromotionView = await execute_update(
        client,
        promotion.workflow_id,
        update,
        arg,
        doing=doing,
        gone=f"the promotion is {promotion.status}; it cannot {doing}",
    )
    return view


async def decide(client: Client, promotion: Promotion, decision: Decision) -> PromotionView:
    """Send one approval or rejection; the answer is immediate: the state after it, or the
    reason it was refused (nothing changes then)."""
    return await _update(client, promotion, PromotionWorkflow.decide, decision, "take a decision")


async def cancel(client: Client, promotion: Promotion, request: CancelRequest) -> PromotionView:
    return await _update(client, promotion, PromotionWorkflow.cancel, request, "be cancelled")
