"""Starting a notification from outside a workflow (the API, a CLI, an activity)."""

from __future__ import annotations

from collections.abc import Sequence

from temporalio.client import Client
from temporalio.common import WorkflowIDConflictPolicy

from core.notifications.messages import NotificationRequest, summary
from core.temporal import search_attributes
from workflows.notification import (
    NOTIFICATIONS_QUEUE,
    SENDING,
    NotificationWorkflow,
    workflow_id_for,
)


async def start_notification(
    client: Client,
    request: NotificationRequest,
    task_queue: str = NOTIFICATIONS_QUEUE,
    *,
    channels: Sequence[str] = (),
    actor: str | None = None,
) -> str:
    """Start NotificationWorkflow for `request`; the same request id never starts twice.
    Returns the workflow id.

    `channels`: the channels' labels (`channel_label`) when the caller has the rows loaded
    anyway, for the summary in the UI; `actor`: who sent it. Neither costs a query here."""
    workflow_id = workflow_id_for(request)
    await client.start_workflow(
        NotificationWorkflow.run,
        request,
        id=workflow_id,
        task_queue=task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        search_attributes=search_attributes.attributes(actor=actor, status=SENDING),
        static_summary=summary(request, channels),
    )
    return workflow_id
