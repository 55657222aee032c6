"""Git hosts' webhooks. Public routes: a delivery proves itself with the host's signature
(GitHub, Bitbucket) or token (GitLab), checked before anything is written against the webhook
secret of the Git host connection its repository is bound through. GITHUB_WEBHOOK_SECRET,
BITBUCKET_WEBHOOK_SECRET and GITLAB_WEBHOOK_TOKEN are the development default for repositories
without a connection; production ignores them."""

from __future__ import annotations

import asyncio
import uuid
from typing import Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from api.bodies import read_capped
from api.deps import State
from core import context
from core.db.engine import transaction
from core.errors import Unauthorized
from core.git_hosts.bindings import connection_of, holder
from core.git_hosts.connections import webhook_secret_of
from core.pipelines.dispatch import (
    STARTABLE_STATUSES,
    create_event_runs,
    delivery_key,
    run_labels,
    start_run,
)
from core.pipelines.webhooks import delivery_repository, parse, verify
from core.settings import Settings

router = APIRouter(prefix="/webhooks", tags=["webhooks"])

HostKind = Literal["github", "gitlab", "bitbucket"]


class StartedRun(BaseModel):
    id: uuid.UUID
    pipeline_id: uuid.UUID
    number: int
    workflow_id: str
    duplicate: bool = Field(description="An earlier delivery of the same event started it")


class DeliveryOut(BaseModel):
    status: Literal["started", "ignored", "no_match", "pong"]
    delivery_id: str | None
    event: str
    reason: str | None = None
    runs: list[StartedRun] = Field(default_factory=list)


def _secret(settings: Settings, host_kind: HostKind) -> str:
    secret = {
        "github": settings.github_webhook_secret,
        "gitlab": settings.gitlab_webhook_token,
        "bitbucket": settings.bitbucket_webhook_secret,
    }[host_kind]
    return secret.get_secret_value() if secret is not None else ""


async def _expected_secret(
    state: State, host_kind: HostKind, request: Request, body: bytes
) -> tuple[str, uuid.UUID | None]:
    """The secret the delivery must be signed with, and the organization its repository is
    bound to: the connection's secret for a repository bound through one; else the global
    development default, which production refuses."""
    settings = state.settings
    repository = delivery_repository(host_kind, request.headers, body, settings.git_hosts)
    connection = binding = None
    secret = ""
    if repository is not None:
        async with transaction(state.sessions) as session:
            binding = await holder(session, repository)
            connection = await connection_of(session, binding)
            secret = webhook_secret_of(connection) if connection is not None else ""
    org_id = binding.org_id if binding is not None else None
    if connection is not None and connection.kind == host_kind:
        return secret, org_id
    if settings.env == "production":
        raise Unauthorized(
            f"{repository or 'the delivery'} has no {host_kind} Git host connection: deliveries "
            "are checked with a connection's webhook secret (the global secrets are for "
            "development only)",
            code="invalid_signature",
        )
    return _secret(settings, host_kind), org_id


@router.post(
    "/{host_kind}",
    response_model=DeliveryOut,
    status_code=202,
    summary="Receive a Git host's webhook (signed; starts the matching pipelines)",
    responses={
        200: {"description": "A ping, an ignored event, or no pipeline matched"},
        401: {"description": "Missing or wrong signature or token: nothing happens"},
    },
)
async def receive(host_kind: HostKind, request: Request, state: State) -> JSONResponse:
    body = await read_capped(request)
    secret, org_id = await _expected_secret(state, host_kind, request, body)
    verify(host_kind, request.headers, body, secret)
    delivery = parse(host_kind, request.headers, body, state.settings.git_hosts)
    context.update(actor_type="webhook", actor_label=f"{host_kind} webhook")
    out = DeliveryOut(
        status="ignored",
        delivery_id=delivery.delivery_id,
        event=delivery.host_event,
        reason=delivery.ignored_reason,
    )
    if delivery.event is not None and delivery.event.kind == "ping":
        out.status, out.reason = "pong", None
        return JSONResponse(out.model_dump(mode="json"), status_code=200)
    if not delivery.events:
        return JSONResponse(out.model_dump(mode="json"), status_code=200)
    if org_id is None:
        out.status, out.reason = "no_match", "the repository is not bound to an organization"
        return JSONResponse(out.model_dump(mode="json"), status_code=200)
    async with transaction(state.sessions) as session:
        key = delivery_key(delivery, body)
        started = await create_event_runs(session, delivery, key, org_id)
        labels = await run_labels(session, [s.run for s in started])
    if not started:
        out.status, out.reason = "no_match", "no enabled pipeline of this repository matches"
        return JSONResponse(out.model_dump(mode="json"), status_code=200)
    client = await state.temporal.client()
    startable = [s.run for s in started if s.run.status in STARTABLE_STATUSES]
    await asyncio.gather(*(start_run(client, run, labels[run.id]) for run in startable))
    out.status = "started"
    out.runs = [
        StartedRun(
            id=s.run.id,
            pipeline_id=s.run.pipeline_id,
            number=s.run.number,
            workflow_id=s.run.workflow_id,
            duplicate=not s.created,
        )
        for s in started
    ]
    return JSONResponse(out.model_dump(mode="json"), status_code=202)
