"""Slack's interactive requests: the Approve and Reject buttons of an approval request (a
promotion's, or a provisioning run's).

`POST /integrations/slack/interactions` is public (Slack cannot hold a platform token) and is
trusted only through Slack's signature, checked first: a request not signed with
`SLACK_SIGNING_SECRET`, or older than five minutes, is a 401 and nothing is read. A press
counts only on a message the platform sent about that object, from the Slack workspace pinned
on the channel that sent it (else it is refused, logged and audited). The Slack user is
mapped to a platform user through a verified link (core/slack/users.py), whose permissions are
checked by the same Update as an API decision. The answer is an empty 200 within Slack's
three seconds; a refusal (not linked, not an approver, already decided, another workspace) is
shown to that user alone, and nothing changes. The workflow updates the original message in
place once the decision is recorded."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, BackgroundTasks, Request, Response
from sqlalchemy.ext.asyncio import AsyncSession

from api.bodies import read_capped
from api.deps import State
from core import context
from core.approvals import Decision
from core.audit import AuditService
from core.db.engine import transaction
from core.environments.approvers import environment_approver as approver
from core.environments.environments import EnvironmentService
from core.errors import AppError
from core.identity.grants import load_grants
from core.infrastructure import provision_control
from core.infrastructure.provisioning import ProvisioningService
from core.models.environments import Environment
from core.promotions import control
from core.promotions.promotions import PromotionService
from core.security.authorization import Principal
from core.slack import users as slack_users
from core.slack.interactions import Interaction, parse, respond_ephemeral, verify
from core.slack.workspaces import pinned_team

log = logging.getLogger(__name__)

router = APIRouter(prefix="/integrations/slack", tags=["integrations"])
NOT_LINKED = (
    "Your Slack account is not linked to a Developer Platform user, so nothing was recorded. "
    "Link it with POST /users/me/slack-links (a code is sent to you here in Slack)."
)


@dataclass(frozen=True)
class Approvable:
    """What a button's value names, and how a decision on it is taken."""

    noun: str  # for messages
    audit: str  # the audit log's resource type, and its actions' prefix
    permission: str  # what an approver holds on the environment
    load: Callable[[AsyncSession, uuid.UUID], Awaitable[Any]]  # the row (NotFound if none)
    decide: Callable[[Any, Any, Decision], Awaitable[Any]]  # (client, row, decision) -> view


async def _promotion(session: AsyncSession, row_id: uuid.UUID) -> Any:
    return await PromotionService(session).get(row_id)


async def _provision(session: AsyncSession, row_id: uuid.UUID) -> Any:
    return await ProvisioningService(session).get(row_id)


KINDS = {
    "promotion": Approvable(
        "promotion", "promotion", "promotions:approve", _promotion, control.decide
    ),
    "provision": Approvable(
        "provisioning run",
        "provision",
        "infrastructure:approve",
        _provision,
        provision_control.decide,
    ),
}
DECISIONS = ("approve", "reject")


async def _refused(
    session: AsyncSession, interaction: Interaction, found: slack_users.Lookup
) -> None:
    """A press that does not count (another workspace, a message the platform did not send
    about that object): logged and audited, and nothing else happens."""
    log.warning(
        "Slack press refused: %s (team %s, user %s, action %s)",
        found.refusal,
        interaction.slack_team_id,
        interaction.slack_user_id,
        interaction.action_id,
    )
    channel = found.channel
    await AuditService(session).record(
        "slack.interaction_refused",
        "notification_channel" if channel is not None else "slack_interaction",
        channel.id if channel is not None else None,
        after={
            "reason": found.refusal,
            "slack_team_id": interaction.slack_team_id,
            "pinned_team_id": pinned_team(channel) if channel is not None else None,
            "slack_user_id": interaction.slack_user_id,
            "action_id": interaction.action_id,
            "value": interaction.value,
        },
    )


@router.post(
    "/interactions",
    status_code=200,
    summary="Slack button presses (signed by Slack; approvals and rejections of promotions "
    "and provisioning runs)",
)
async def interactions(request: Request, state: State, background: BackgroundTasks) -> Response:
    body = await read_capped(request)
    secret = state.settings.slack_signing_secret
    verify(request.headers, body, secret.get_secret_value() if secret else "")
    interaction = parse(body)
    kind_name, _, decision = interaction.action_id.partition(".")
    kind = KINDS.get(kind_name)
    if kind is None or decision not in DECISIONS:  # e.g. a link button: nothing to do
        return Response(status_code=200)
    context.update(actor_type="webhook", actor_label=f"slack {interaction.slack_user_id}")

    def tell(text: str) -> Response:
        if interaction.response_url:
            background.add_task(respond_ephemeral, interaction.response_url, text)
        return Response(status_code=200)

    try:
        row_id = uuid.UUID(interaction.value or "")
    except ValueError:
        return tell(f"This button does not name a {kind.noun}.")
    # Three short transactions around the two calls out (Slack's users.info, the Update), so
    # that no database transaction waits on the network (core/db/transactions.py).
    reference = f"{kind_name}:{row_id}"
    async with transaction(state.sessions) as session:
        found = await slack_users.lookup(
            session, interaction, reference, state.settings.slack_email_lookup_team_ids
        )
        if found.refusal:
            await _refused(session, interaction, found)
    if found.refusal:
        return tell(f"Nothing was recorded: {found.refusal}.")
    email = await slack_users.slack_email(found, interaction, state.settings.slack_api_url)
    async with transaction(state.sessions) as session:
        user = await slack_users.platform_user(session, found, email)
        if user is None:
            return tell(NOT_LINKED)
        context.update(actor_id=user.id, actor_type="user", actor_label=f"{user.email} (Slack)")
        principal = Principal(
            user_id=user.id, label=user.email, grants=await load_grants(session, user.id)
        )
        try:
            row = await kind.load(session, row_id)
            env: Environment = await EnvironmentService(session).get(row.environment_id)
            who = await approver(session, principal, env, kind.permission)
        except AppError as exc:
            return tell(f"Nothing was recorded: {exc.message}")
    comment = "" if decision == "approve" else "Rejected in Slack"
    try:
        view = await kind.decide(
            await state.temporal.client(),
            row,
            Decision(approver=who, decision=decision, comment=comment, via="slack"),
        )
    except AppError as exc:
        return tell(f"Nothing was recorded: {exc.message}")
    async with transaction(state.sessions) as session:
        await AuditService(session).record(
            f"{kind.audit}.{decision}",
            kind.audit,
            row.id,
            after={"decision": decision, "via": "slack", "status": view.status},
        )
    return Response(status_code=200)
