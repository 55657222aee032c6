"""Talking to a provisioning run's workflow from the API: start it, read its live state, and
send decisions, cancels and time-to-live extensions as Updates."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.client import Client

from core.approvals import CancelRequest, Decision
from core.infrastructure.provision_messages import (
    TERMINAL,
    ExpiryView,
    Extension,
    ProvisionInput,
    ProvisionView,
)
from core.models.environments import Environment
from core.models.identity import Organization, User
from core.models.infrastructure import Provider, Resource
from core.models.provisioning import Provision
from core.temporal import search_attributes
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


@dataclass(frozen=True)
class RunLabels:
    """What the Temporal UI shows of a run: its search attributes and static summary. Names
    only (no credentials, no spec values beyond the stack's tags)."""

    action: str  # up | destroy
    organization: str  # slug
    environment: str
    provider: str
    cloud: str
    team: str | None = None  # the stack's `team` tag
    service: str | None = None  # the stack's `service` tag
    actor: str | None = None  # the requester's email; None: the platform (a time to live)
    requester: str | None = None  # their name, for the summary
    resource: str | None = None  # a destroy of one resource (and its dependents)

    def summary(self) -> str:
        """E.g. `provision production of shop (aws, up), requested by Alice`."""
        of = f" of {self.service}" if self.service else ""
        verb = "provision" if self.action == "up" else "destroy"
        what = f"{self.resource} in {self.environment}" if self.resource else self.environment
        by = f", requested by {self.requester}" if self.requester else ""
        return f"{verb} {what}{of} ({self.cloud}, {self.action}){by}"

    def details(self, row: Provision) -> str:
        return "\n".join(
            [
                f"**{self.summary()}**",
                f"- organization: {self.organization}",
                f"- environment: {self.environment}, stack `{row.stack}`",
                f"- provider: {self.provider} ({self.cloud})",
                f"- provisioning run: {row.id}",
            ]
        )


async def run_labels(session: AsyncSession, row: Provision) -> RunLabels:
    """The run's labels, read in the caller's transaction (end it before `start_run`: no
    Temporal call is made inside one)."""
    org = await session.get(Organization, row.org_id)
    env = await session.get(Environment, row.environment_id)
    provider = await session.get(Provider, row.provider_id)
    assert org is not None and env is not None and provider is not None
    user = await session.get(User, row.requested_by) if row.requested_by else None
    tags = (row.spec or {}).get("tags") or {}
    resource = None
    if row.resource_id is not None:
        found = await session.get(Resource, row.resource_id)
        resource = found.name if found is not None else None
    return RunLabels(
        action=row.action,
        organization=org.slug,
        environment=env.name,
        provider=provider.name,
        cloud=provider.type,
        team=tags.get("team"),
        service=tags.get("service"),
        actor=user.email if user else None,
        requester=(user.name or user.email) if user else None,
        resource=resource,
    )


async def start_run(
    client: Client,
    row: Provision,
    labels: RunLabels | None = None,
    *,
    task_queue: str = PROVISIONING_QUEUE,
    notifications_queue: str = NOTIFICATIONS_QUEUE,
) -> None:
    """Start the run's workflow; with `labels`, searchable and summarised in the UI."""
    attributes = (
        search_attributes.attributes(
            organization=labels.organization,
            team=labels.team,
            service=labels.service,
            environment=labels.environment,
            actor=labels.actor,
            status=row.status,
        )
        if labels is not None
        else None
    )
    await start_once(
        client,
        _workflow(row).run,
        ProvisionInput(provision_id=row.id, notifications_queue=notifications_queue),
        id=row.workflow_id,
        task_queue=task_queue,
        doing=f"start the {'provisioning' if row.action == 'up' else 'destroy'}",
        rerun=True,  # the id is the environment's: each run of it reuses the id
        search_attributes=attributes,
        static_summary=labels.summary() if labels is not None else None,
        static_details=labels.details(row) if labels is not None else None,
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
