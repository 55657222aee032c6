"""Talking to a promotion's workflow from outside it (the API, the Slack route, benchmarks):
start it, read its live state, and send decisions and cancels as Updates, translating the
workflow's refusals into the API's errors (403 for who may not, 409 for what cannot be now)."""

from __future__ import annotations

import asyncio
import logging

from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from core.errors import AppError, Conflict, Forbidden
from core.models.promotions import Promotion
from core.promotions.messages import (
    TERMINAL,
    CancelRequest,
    Decision,
    PromotionInput,
    PromotionView,
)
from core.temporal.client import temporal_unavailable
from workflows.notification import NOTIFICATIONS_QUEUE
from workflows.promotion import PROMOTIONS_QUEUE, PromotionWorkflow

log = logging.getLogger(__name__)
QUERY_TIMEOUT = 2.0  # seconds to wait for the live state before serving the record


async def start_promotion(
    client: Client,
    promotion: Promotion,
    *,
    task_queue: str = PROMOTIONS_QUEUE,
    notifications_queue: str = NOTIFICATIONS_QUEUE,
) -> None:
    try:
        await client.start_workflow(
            PromotionWorkflow.run,
            PromotionInput(promotion_id=promotion.id, notifications_queue=notifications_queue),
            id=promotion.workflow_id,
            task_queue=task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
        )
    except WorkflowAlreadyStartedError:
        log.info("promotion %s already started", promotion.id)
    except RPCError as exc:
        raise temporal_unavailable(exc, "start the promotion") from None


async def live_view(client: Client, promotion: Promotion) -> PromotionView | None:
    """The workflow's state of an unfinished promotion; None when it cannot be had."""
    if promotion.status in TERMINAL:
        return None
    try:
        handle = client.get_workflow_handle(promotion.workflow_id)
        return await asyncio.wait_for(handle.query(PromotionWorkflow.state), timeout=QUERY_TIMEOUT)
    except Exception:  # Temporal down, no worker answering, not started yet: the record
        return None


def _refusal(exc: WorkflowUpdateFailedError) -> AppError:
    cause = exc.cause
    if isinstance(cause, ApplicationError):
        if cause.type == "Forbidden":
            return Forbidden(cause.message, code="not_an_approver")
        return Conflict(cause.message)
    return Conflict(str(cause or exc))


async def decide(client: Client, promotion: Promotion, decision: Decision) -> PromotionView:
    """Send one approval or rejection; the answer is immediate: the state after it, or the
    reason it was refused (nothing changes then)."""
    handle = client.get_workflow_handle(promotion.workflow_id)
    try:
        return await handle.execute_update(PromotionWorkflow.decide, decision)
    except WorkflowUpdateFailedError as exc:
        raise _refusal(exc) from None
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise Conflict(f"the promotion is {promotion.status}; it takes no decision") from None
        raise temporal_unavailable(exc, "record the decision") from None


async def cancel(client: Client, promotion: Promotion, request: CancelRequest) -> PromotionView:
    handle = client.get_workflow_handle(promotion.workflow_id)
    try:
        return await handle.execute_update(PromotionWorkflow.cancel, request)
    except WorkflowUpdateFailedError as exc:
        raise _refusal(exc) from None
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise Conflict(f"the promotion is {promotion.status}; it cannot be cancelled") from None
        raise temporal_unavailable(exc, "cancel the promotion") from None
