"""Starting a notification from outside a workflow (the API, a CLI, an activity)."""

from __future__ import annotations

from temporalio.client import Client
from temporalio.common import WorkflowIDConflictPolicy

from core.notifications.messages import NotificationRequest
from workflows.notification import NOTIFICATIONS_QUEUE, NotificationWorkflow, workflow_id_for


async def start_notification(
    client: Client, request: NotificationRequest, task_queue: str = NOTIFICATIONS_QUEUE
) -> str:
    """Start NotificationWorkflow for `request`; the same request id never starts twice.
    Returns the workflow id."""
    workflow_id = workflow_id_for(request)
    await client.start_workflow(
        NotificationWorkflow.run,
        request,
        id=workflow_id,
        task_queue=task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
    )
    return workflow_id
