"""Git hosts' webhooks. Public routes: a delivery proves itself with the host's signature
(GitHub, Bitbucket) or token (GitLab), checked against GITHUB_WEBHOOK_SECRET,
BITBUCKET_WEBHOOK_SECRET or GITLAB_WEBHOOK_TOKEN before anything is read or written."""

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
from core.pipelines.dispatch import create_event_runs, delivery_key, start_run
from core.pipelines.webhooks import parse, verify
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
    verify(host_kind, request.headers, body, _secret(state.settings, host_kind))
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
    async with transaction(state.sessions) as session:
        started = await create_event_runs(session, delivery, delivery_key(delivery, body))
    if not started:
        out.status, out.reason = "no_match", "no enabled pipeline of this repository matches"
        return JSONResponse(out.model_dump(mode="json"), status_code=200)
    client = await state.temporal.client()
    await asyncio.gather(*(start_run(client, s.run) for s in started if s.run.status == "queued"))
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
