"""Talking to a provisioning run's workflow from the API: start it, read its live state, and
send decisions, cancels and time-to-live extensions as Updates."""

from __future__ import annotations

import asyncio
from typing import Any

from temporalio.client import Client

from core.approvals import CancelRequest, Decision
from core.infrastructure.provision_messages import (
    TERMINAL,
    ExpiryView,
    Extension,
    ProvisionInput,
    ProvisionView,
)
from core.models.provisioning import Provision
from core.temporal.client import execute_update, start_once
from workflows.notification import NOTIFICATIONS_QUEUE
from workflows.provisioning import (
    PROVISIONING_QUEUE,
    DestroyWorkflow,
    PreviewExpiryWorkflow,
    ProvisionWorkflow,
    expiry_workflow_id,
)

QUERY_TIMEOUT = 2.0  # seconds to wait for the live state before serving the record


def _workflow(row: Provision) -> Any:
    return ProvisionWorkflow if row.action == "up" else DestroyWorkflow


async def start_run(
    client: Client,
    row: Provision,
    *,
    task_queue: str = PROVISIONING_QUEUE,
    notifications_queue: str = NOTIFICATIONS_QUEUE,
) -> None:
    await start_once(
        client,
        _workflow(row).run,
        ProvisionInput(provision_id=row.id, notifications_queue=notifications_queue),
        id=row.workflow_id,
        task_queue=task_queue,
        doing=f"start the {'provisioning' if row.action == 'up' else 'destroy'}",
        rerun=True,  # the id is the environment's: each run of it reuses the id
    )


async def live_view(client: Client, row: Provision) -> ProvisionView | None:
    """The workflow's state of an unfinished run; None when it cannot be had."""
    if row.status in TERMINAL:
        return None
    try:
        handle = client.get_workflow_handle(row.workflow_id)
        view: ProvisionView = await asyncio.wait_for(
            handle.query(_workflow(row).state), timeout=QUERY_TIMEOUT
        )
    except Exception:  # Temporal down, no worker answering, not started yet: the record
        return None
    return view if view.provision_id == row.id else None


async def _update(client: Client, row: Provision, update: str, arg: Any, doing: str) -> Any:
    return await execute_update(
        client,
        row.workflow_id,
        getattr(_workflow(row), update),
        arg,
        doing=doing,
        gone=f"the run is {row.status}; it cannot {doing}",
    )


async def decide(client: Client, row: Provision, decision: Decision) -> ProvisionView:
    view: ProvisionView = await _update(client, row, "decide", decision, "take a decision")
    return view


async def cancel(client: Client, row: Provision, request: CancelRequest) -> ProvisionView:
    view: ProvisionView = await _update(client, row, "cancel", request, "be cancelled")
    return view


async def extend(client: Client, row: Provision, extension: Extension) -> ExpiryView:
    view: ExpiryView = await execute_update(
        client,
        expiry_workflow_id(row.environment_id),
        PreviewExpiryWorkflow.extend,
        extension,
        doing="extend the time to live",
        gone="the environment has no time to live running",
    )
    return view
