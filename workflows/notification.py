"""NotificationWorkflow: one per notification request (workflow id `notification-<request id>`).

Prepare the delivery records, then deliver each concurrently; a delivery that fails for good
(a permanent error, or the attempts of `notification_delivery` in temporal.yaml used up) is
marked failed with its reason. Nothing is dropped silently: every record ends delivered,
failed or skipped, with the reason.

`IdpStatus` goes `sending` -> `delivered`, `failed` or `skipped` (`NotificationSummary.status`).
A channel that could not take the message is the platform's failure to deliver: once every
record is written, the workflow ends failed (`DeliveryFailed`, naming each channel and why),
with the summary as the error's details. Recipients who turned the event off are not a
failure: such a request completes `skipped`."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from temporalio import workflow
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.exceptions import ActivityError, ApplicationError, RetryState

from workflows.failures import failure_message

with workflow.unsafe.imports_passed_through():
    from activities.notifications import NotificationActivities
    from core.notifications.messages import (
        DeliveryOutcome,
        DeliveryRef,
        MessageUpdate,
        NotificationRequest,
        NotificationSummary,
        summary,
    )
    from core.temporal import search_attributes
    from core.temporal.policies import activity_options

WORKFLOW_ID_PREFIX = "notification-"
SENDING = "sending"  # IdpStatus until every delivery has ended
DELIVERY_FAILED = "DeliveryFailed"  # the workflow's failure type when a channel failed
RECORD_FAILED = "NotificationRecordFailed"  # ... when the delivery records could not be written
# Histories from before a failed delivery failed the workflow (it completed) replay as such.
FAILS_ON_DELIVERY_FAILURE = "notification-fails-on-delivery-failure"
MESSAGE_UPDATE_FAILED = "MessageUpdateFailed"  # SlackMessageUpdateWorkflow's failure type
FAILS_WITH_MESSAGE_UPDATE_FAILED = "slack-update-fails-with-its-type"  # its patch
_MAX_REASON = 300  # per delivery, in the failure message


def workflow_id_for(request: NotificationRequest) -> str:
    return f"{WORKFLOW_ID_PREFIX}{request.request_id}"


def _reason(err: ActivityError) -> str:
    message = failure_message(err)
    if err.retry_state == RetryState.MAXIMUM_ATTEMPTS_REACHED:
        return f"gave up after the last allowed attempt: {message}"
    if err.retry_state == RetryState.NON_RETRYABLE_FAILURE:
        return f"permanent failure: {message}"
    return message


def _label(ref: DeliveryRef | DeliveryOutcome) -> str:
    if ref.channel:
        return ref.channel
    return ref.channel_type if isinstance(ref, DeliveryRef) else str(ref.notification_id)


def _failure(request: NotificationRequest, result: NotificationSummary) -> ApplicationError:
    failed = [o for o in result.outcomes if o.status == "failed"]
    reasons = "; ".join(f"{_label(o)}: {(o.error or 'failed')[:_MAX_REASON]}" for o in failed)
    return ApplicationError(
        f"{len(failed)} of {len(result.outcomes)} deliveries of {request.event} failed: {reasons}",
        result,
        type=DELIVERY_FAILED,
        non_retryable=True,
    )


@workflow.defn
class NotificationWorkflow:
    def __init__(self) -> None:
        self._outcomes: dict[str, DeliveryOutcome] = {}
        self._sending: dict[str, DeliveryRef] = {}
        self._request: NotificationRequest | None = None

    @workflow.run
    async def run(self, request: NotificationRequest) -> NotificationSummary:
        self._request = request
        workflow.set_current_details(f"preparing {request.event}")
        try:
            prepared = await workflow.execute_activity_method(
                NotificationActivities.prepare,
                request,
                summary=f"render {request.event} for its recipients",
                **activity_options("db"),
            )
            for outcome in prepared.settled:
                self._outcomes[str(outcome.notification_id)] = outcome
            self._sending = {str(ref.notification_id): ref for ref in prepared.deliveries}
            self._show()
            await asyncio.gather(*(self._deliver(ref) for ref in prepared.deliveries))
        except ActivityError as err:  # the database, after the `db` retries
            search_attributes.set_status("failed")
            if not workflow.patched(FAILS_ON_DELIVERY_FAILURE):
                raise
            raise ApplicationError(
                f"the delivery records of {request.event} could not be written: "
                f"{failure_message(err)}",
                type=RECORD_FAILED,
                non_retryable=True,
            ) from err
        result = NotificationSummary(
            request_id=request.request_id, outcomes=list(self._outcomes.values())
        )
        search_attributes.set_status(result.status())
        if result.count("failed") and workflow.patched(FAILS_ON_DELIVERY_FAILURE):
            raise _failure(request, result)
        return result

    async def _deliver(self, ref: DeliveryRef) -> None:
        label = _label(ref)
        try:
            outcome = await workflow.execute_activity_method(
                NotificationActivities.deliver,
                ref,
                summary=f"deliver to {label}",
                **activity_options("notification_delivery"),
            )
        except ActivityError as err:
            outcome = DeliveryOutcome(
                notification_id=ref.notification_id,
                status="failed",
                error=_reason(err),
                channel=ref.channel,
            )
            await workflow.execute_activity_method(
                NotificationActivities.mark_failed,
                outcome,
                summary=f"record the failed delivery to {label}",
                **activity_options("db"),
            )
        self._outcomes[str(ref.notification_id)] = outcome.model_copy(
            update={"channel": ref.channel}
        )
        self._sending.pop(str(ref.notification_id), None)
        self._show()

    def _show(self) -> None:
        """The current details: what is still being sent, and how each delivery ended."""
        lines = []
        if self._sending:
            attempts = activity_options("notification_delivery")["retry_policy"].maximum_attempts
            limit = f", up to {attempts} attempts each" if attempts else ""
            labels = ", ".join(_label(ref) for ref in self._sending.values())
            lines.append(f"sending to {labels}{limit}")
        for status in ("delivered", "failed", "skipped"):
            ended = [o for o in self._outcomes.values() if o.status == status]
            if status == "delivered" and ended:
                lines.append(f"delivered to {', '.join(_label(o) for o in ended)}")
            elif ended:
                lines += [f"{status}: {_label(o)}: {o.error or status}" for o in ended]
        workflow.set_current_details("\n".join(lines) or "nothing to deliver")

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
        workflow.set_current_details(f"updating the Slack message to {update.event}")
        try:
            outcome = await workflow.execute_activity_method(
                NotificationActivities.update_message,
                update,
                summary=f"update the Slack message to {update.event}",
                **options,
            )
        except ActivityError as err:
            search_attributes.set_status("failed")
            if workflow.patched(FAILS_WITH_MESSAGE_UPDATE_FAILED):
                raise ApplicationError(
                    f"updating Slack message {update.notification_id} to {update.event} "
                    f"failed: {_reason(err)}",
                    type=MESSAGE_UPDATE_FAILED,
                    non_retryable=True,
                ) from err
            raise
        search_attributes.set_status(outcome.status)
        return outcome


NOTIFICATIONS_QUEUE = "notifications"


async def notify(request: NotificationRequest, *, task_queue: str = NOTIFICATIONS_QUEUE) -> None:
    """From inside another workflow: send a notification as a child workflow that outlives
    the parent (a pipeline that finishes does not cancel its "finished" message). The child
    is found by the parent's search attributes (its service, organization, ...)."""
    described: dict[str, Any] = {}
    if workflow.patched(search_attributes.PATCH_ID):
        described = {"search_attributes": _inherited(), "static_summary": summary(request)}
    child = await workflow.start_child_workflow(
        NotificationWorkflow.run,
        request,
        id=workflow_id_for(request),
        task_queue=task_queue,
        parent_close_policy=workflow.ParentClosePolicy.ABANDON,
        **described,
    )
    # Nobody waits for the message: its failure is the child's to show, not the parent's.
    child.add_done_callback(lambda done: done.cancelled() or done.exception())


def _inherited() -> TypedSearchAttributes:
    """The calling workflow's platform attributes, with the notification's own status."""
    current = workflow.info().typed_search_attributes
    pairs: list[SearchAttributePair[Any]] = [
        SearchAttributePair(key, value)
        for key in search_attributes.ALL
        if key != search_attributes.STATUS and (value := current.get(key)) is not None
    ]
    return TypedSearchAttributes([*pairs, SearchAttributePair(search_attributes.STATUS, SENDING)])


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
            described: dict[str, Any] = {}
            if workflow.patched(search_attributes.PATCH_ID):
                described = {
                    "search_attributes": _inherited(),
                    "static_summary": f"update a Slack message to {event}",
                }
            await workflow.execute_child_workflow(
                SlackMessageUpdateWorkflow.run,
                MessageUpdate(notification_id=notification_id, event=event, context=context),
                id=f"slack-update-{child_id}",
                task_queue=task_queue,
                **described,
            )

    chain.append(asyncio.ensure_future(update()))
