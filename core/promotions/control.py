"""Talking to a promotion's workflow from outside it (the API, the Slack route, benchmarks):
start it, read its live state, and send decisions and cancels as Updates, translating the
workflow's refusals into the API's errors (403 for who may not, 409 for what cannot be now)."""

from __future__ import annotations

import asyncio
from typing import Any

from temporalio.client import Client

from core.approvals import CancelRequest, Decision
from core.models.promotions import Promotion
from core.promotions.messages import TERMINAL, PromotionInput, PromotionView
from core.temporal.client import execute_update, start_once
from workflows.notification import NOTIFICATIONS_QUEUE
from workflows.promotion import PROMOTIONS_QUEUE, PromotionWorkflow

QUERY_TIMEOUT = 2.0  # seconds to wait for the live state before serving the record


async def start_promotion(
    client: Client,
    promotion: Promotion,
    *,
    task_queue: str = PROMOTIONS_QUEUE,
    notifications_queue: str = NOTIFICATIONS_QUEUE,
) -> None:
    await start_once(
        client,
        PromotionWorkflow.run,
        PromotionInput(promotion_id=promotion.id, notifications_queue=notifications_queue),
        id=promotion.workflow_id,
        task_queue=task_queue,
        doing="start the promotion",
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
