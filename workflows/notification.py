"""NotificationWorkflow: one per notification request (workflow id `notification-<request id>`).

Prepare the delivery records, then deliver each concurrently; a delivery that fails for good
(a permanent error, or the attempts of `notification_delivery` in temporal.yaml used up) is
marked failed with its reason. Nothing is dropped silently: every record ends delivered,
failed or skipped, with the reason."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ActivityError, RetryState

from workflows.failures import failure_message

with workflow.unsafe.imports_passed_through():
    from activities.notifications import NotificationActivities
    from core.notifications.messages import (
        DeliveryOutcome,
        DeliveryRef,
        MessageUpdate,
        NotificationRequest,
        NotificationSummary,
    )
    from core.temporal.policies import activity_options

WORKFLOW_ID_PREFIX = "notification-"


def workflow_id_for(request: NotificationRequest) -> str:
    return f"{WORKFLOW_ID_PREFIX}{request.request_id}"


def _reason(err: ActivityError) -> str:
    message = failure_message(err)
    if err.retry_state == RetryState.MAXIMUM_ATTEMPTS_REACHED:
        return f"gave up after the last allowed attempt: {message}"
    if err.retry_state == RetryState.NON_RETRYABLE_FAILURE:
        return f"permanent failure: {message}"
    return message


@workflow.defn
class NotificationWorkflow:
    def __init__(self) -> None:
        self._outcomes: dict[str, DeliveryOutcome] = {}
        self._request: NotificationRequest | None = None

    @workflow.run
    async def run(self, request: NotificationRequest) -> NotificationSummary:
        self._request = request
        prepared = await workflow.execute_activity_method(
            NotificationActivities.prepare, request, **activity_options("db")
        )
        for outcome in prepared.settled:
            self._outcomes[str(outcome.notification_id)] = outcome
        await asyncio.gather(*(self._deliver(ref) for ref in prepared.deliveries))
        return NotificationSummary(
            request_id=request.request_id, outcomes=list(self._outcomes.values())
        )

    async def _deliver(self, ref: DeliveryRef) -> None:
        try:
            outcome = await workflow.execute_activity_method(
                NotificationActivities.deliver, ref, **activity_options("notification_delivery")
            )
        except ActivityError as err:
            outcome = DeliveryOutcome(
                notification_id=ref.notification_id, status="failed", error=_reason(err)
            )
            await workflow.execute_activity_method(
                NotificationActivities.mark_failed, outcome, **activity_options("db")
            )
        self._outcomes[str(ref.notification_id)] = outcome

    @workflow.query
    def progress(self) -> NotificationSummary:
        """The outcomes so far (deliveries still retrying are not listed)."""
        assert self._request is not None
        return NotificationSummary(
            request_id=self._request.request_id, outcomes=list(self._outcomes.values())
        )


@workflow.defn
class SlackMessageUpdateWorkflow:
    """Update a delivered Slack message in place (e.g. an approval request once decided)."""

    @workflow.run
    async def run(self, update: MessageUpdate) -> DeliveryOutcome:
        options = activity_options("notification_delivery")
        return await workflow.execute_activity_method(
            NotificationActivities.update_message, update, **options
        )


NOTIFICATIONS_QUEUE = "notifications"


async def notify(request: NotificationRequest, *, task_queue: str = NOTIFICATIONS_QUEUE) -> None:
    """From inside another workflow: send a notification as a child workflow that outlives
    the parent (a pipeline that finishes does not cancel its "finished" message)."""
    await workflow.start_child_workflow(
        NotificationWorkflow.run,
        request,
        id=workflow_id_for(request),
        task_queue=task_queue,
        parent_close_policy=workflow.ParentClosePolicy.ABANDON,
    )


def update_slack_messages(
    chain: list[asyncio.Future[Any]],
    find: Callable[[], Awaitable[list[uuid.UUID]]],
    event: str,
    context: dict[str, Any],
    *,
    after: Callable[[], Awaitable[Any]],
    task_queue: str = NOTIFICATIONS_QUEUE,
) -> None:
    """From inside another workflow: re-render the Slack messages `find` returns with `event`
    and update them in place, after `after` (e.g. the state records) and after the updates
    already in `chain`, so a message always ends showing the latest decision."""
    ids = [workflow.uuid4() for _ in range(20)]  # deterministic child ids
    previous = list(chain)

    async def update() -> None:
        await after()
        await asyncio.gather(*previous, return_exceptions=True)  # in the order decided
        for notification_id, child_id in zip(await find(), ids, strict=False):
            await workflow.execute_child_workflow(
                SlackMessageUpdateWorkflow.run,
                MessageUpdate(notification_id=notification_id, event=event, context=context),
                id=f"slack-update-{child_id}",
                task_queue=task_queue,
            )

    chain.append(asyncio.ensure_future(update()))
