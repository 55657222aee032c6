"""Notifications: channels, template overrides, sending, delivery history, and each user's
preferences. Channel credentials go in and never come out."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Request, status
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from api.auth import CurrentPrincipal, require
from api.deps import DbSession, State, TemporalClient
from api.pagination import PageOut, page_params, page_response
from core.audit import AuditService
from core.errors import Forbidden, ValidationFailed
from core.identity.organizations import Visibility
from core.models.identity import User
from core.models.notifications import (
    Notification,
    NotificationAttempt,
    NotificationChannel,
    NotificationTemplate,
    UserNotificationPreference,
)
from core.models.slack import SlackLinkChallenge
from core.notifications.channels import (
    ChannelFilter,
    ChannelService,
    ChannelType,
    check_destinations,
)
from core.notifications.history import NotificationFilter, NotificationHistory
from core.notifications.messages import NotificationRequest, channel_label
from core.notifications.preferences import PreferenceIn, PreferenceService
from core.notifications.rendering import CHANNEL_TYPES, TemplateSource, default_template, events
from core.notifications.senders.errors import DeliveryError
from core.notifications.starter import start_notification
from core.notifications.templates import TemplateFilter, TemplateService
from core.pagination import PageRequest
from core.security.authorization import ANY_SCOPE, Principal, authorize
from core.security.egress import EgressPolicy
from core.slack.links import MAX_ATTEMPTS as SLACK_LINK_MAX_ATTEMPTS
from core.slack.links import SLACK_USER_ID, SlackLinkService
from core.slack.links import send_code as send_slack_code
from core.slack.workspaces import with_workspace

router = APIRouter(tags=["notifications"])
Status = Literal["pending", "retrying", "delivered", "failed", "skipped"]


# -- channels ---------------------------------------------------------------------------


class ChannelIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: ChannelType
    name: str = Field(min_length=1, max_length=100)
    team_id: uuid.UUID | None = Field(None, description="Owning team; omit for platform-wide")
    config: dict[str, Any] = Field(default_factory=dict)
    secrets: dict[str, Any] = Field(
        default_factory=dict, description="Credentials: stored encrypted, never returned"
    )
    enabled: bool = True


class ChannelPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(None, min_length=1, max_length=100)
    config: dict[str, Any] | None = Field(None, description="Merged into the current config")
    secrets: dict[str, Any] | None = Field(None, description="Replaces the credentials it names")
    enabled: bool | None = None


class ChannelOut(BaseModel):
    id: uuid.UUID
    type: str
    name: str
    team_id: uuid.UUID | None
    config: dict[str, Any]
    secrets_set: list[str] = Field(description="Which credentials are set (names only)")
    enabled: bool
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, c: NotificationChannel) -> ChannelOut:
        return cls(
            id=c.id,
            type=c.type,
            name=c.name,
            team_id=c.team_id,
            config=c.config,
            secrets_set=c.secret_names,
            enabled=c.enabled,
            created_at=c.created_at,
            updated_at=c.updated_at,
        )


class CreatedChannelOut(ChannelOut):
    signing_secret: str | None = Field(
        None, description="Webhook channels: the generated signing secret, shown only here"
    )


async def _channel(
    session: DbSession, channel_id: uuid.UUID, principal: Principal, permission: str
) -> NotificationChannel:
    service = ChannelService(session)
    channel = await service.get(channel_id)
    authorize(principal, permission, await service.resource(channel.team_id))
    return channel


@router.get(
    "/notifications/channels",
    response_model=PageOut[ChannelOut],
    summary="List notification channels (notifications:read)",
)
async def list_channels(
    request: Request,
    session: DbSession,
    principal: Principal = require("notifications:read", ANY_SCOPE),
    type: ChannelType | None = Query(None),
    team_id: uuid.UUID | None = Query(None),
    q: str | None = Query(None, max_length=100, description="Part of the name"),
    page: PageRequest = Depends(page_params),
) -> PageOut[ChannelOut]:
    visible = Visibility.of(principal, "notifications:read")
    found = await ChannelService(session).list(ChannelFilter(type, team_id, q, visible), page)
    return page_response(request, found, ChannelOut.of)


@router.post(
    "/notifications/channels",
    response_model=CreatedChannelOut,
    status_code=status.HTTP_201_CREATED,
    summary="Create a channel (notifications:write on its team, or platform-wide)",
)
async def create_channel(
    body: ChannelIn,
    session: DbSession,
    state: State,
    principal: Principal = require("notifications:write", ANY_SCOPE),
) -> CreatedChannelOut:
    await check_destinations(body.config, EgressPolicy.of(state.settings))
    service = ChannelService(session)
    authorize(principal, "notifications:write", await service.resource(body.team_id))
    await session.commit()  # a Slack channel's workspace is asked from Slack: no lock held
    config = await with_workspace(
        body.type, body.config, body.secrets, base_url=state.settings.slack_api_url
    )
    created = await service.create(
        type=body.type,
        name=body.name,
        config=config or {},
        secrets=body.secrets,
        team_id=body.team_id,
        enabled=body.enabled,
    )
    out = ChannelOut.of(created.channel).model_dump()
    return CreatedChannelOut(**out, signing_secret=created.generated_secret)


@router.get(
    "/notifications/channels/{channel_id}",
    response_model=ChannelOut,
    summary="A channel (notifications:read)",
)
async def get_channel(
    channel_id: uuid.UUID,
    session: DbSession,
    principal: Principal = require("notifications:read", ANY_SCOPE),
) -> ChannelOut:
    return ChannelOut.of(await _channel(session, channel_id, principal, "notifications:read"))


@router.patch(
    "/notifications/channels/{channel_id}",
    response_model=ChannelOut,
    summary="Change a channel (notifications:write)",
)
async def update_channel(
    channel_id: uuid.UUID,
    body: ChannelPatch,
    session: DbSession,
    state: State,
    principal: Principal = require("notifications:write", ANY_SCOPE),
) -> ChannelOut:
    await check_destinations(body.config, EgressPolicy.of(state.settings))
    channel = await _channel(session, channel_id, principal, "notifications:write")
    config = body.config
    if channel.type == "slack" and (body.secrets or {}).get("bot_token") is not None:
        await session.commit()  # a new bot token's workspace is asked from Slack
        config = await with_workspace(
            channel.type, config, body.secrets, base_url=state.settings.slack_api_url
        )
        channel = await _channel(session, channel_id, principal, "notifications:write")
    updated = await ChannelService(session).update(
        channel, name=body.name, config=config, secrets=body.secrets, enabled=body.enabled
    )
    return ChannelOut.of(updated)


@router.delete(
    "/notifications/channels/{channel_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a channel (notifications:write); its delivery history stays",
)
async def delete_channel(
    channel_id: uuid.UUID,
    session: DbSession,
    principal: Principal = require("notifications:write", ANY_SCOPE),
) -> None:
    channel = await _channel(session, channel_id, principal, "notifications:write")
    await ChannelService(session).delete(channel)


# -- events and templates ---------------------------------------------------------------


class EventOut(BaseModel):
    name: str
    description: str
    variables: dict[str, str]


class TemplateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    subject: str | None = Field(None, max_length=2000, description="Email only")
    body: str = Field(min_length=1, max_length=100_000)
    text_body: str | None = Field(None, max_length=100_000, description="Email only")

    def source(self) -> TemplateSource:
        return TemplateSource(self.subject, self.body, self.text_body)


class TemplateCreateIn(TemplateIn):
    event: str = Field(max_length=100)
    channel_type: ChannelType
    team_id: uuid.UUID | None = Field(None, description="The team it applies to; omit for all")


class TemplateOut(BaseModel):
    id: uuid.UUID | None = Field(description="None for a file template")
    source: Literal["database", "file"]
    event: str
    channel_type: str
    team_id: uuid.UUID | None = None
    subject: str | None
    body: str
    text_body: str | None
    variables: list[str] = Field(description="Declared: those the template may use")
    updated_at: datetime | None = None

    @classmethod
    def of(cls, t: NotificationTemplate) -> TemplateOut:
        return cls(
            id=t.id,
            source="database",
            event=t.name,
            channel_type=t.channel_type,
            team_id=t.team_id,
            subject=t.subject,
            body=t.body,
            text_body=t.text_body,
            variables=_declared(t.name),
            updated_at=t.updated_at,
        )


def _declared(event: str) -> list[str]:
    spec = events().get(event)
    return sorted(spec.variables) if spec else []


@router.get(
    "/notifications/events",
    response_model=list[EventOut],
    summary="The events notifications are sent for, with their variables (notifications:read)",
)
async def list_events(
    _: Principal = require("notifications:read", ANY_SCOPE),
) -> list[EventOut]:
    return [
        EventOut(name=e.name, description=e.description, variables=e.variables)
        for e in events().values()
    ]


@router.get(
    "/notifications/templates",
    response_model=PageOut[TemplateOut],
    summary="Template overrides kept in the database (notifications:read)",
)
async def list_templates(
    request: Request,
    session: DbSession,
    principal: Principal = require("notifications:read", ANY_SCOPE),
    event: str | None = Query(None, max_length=100),
    channel_type: ChannelType | None = Query(None),
    team_id: uuid.UUID | None = Query(None),
    page: PageRequest = Depends(page_params),
) -> PageOut[TemplateOut]:
    visible = Visibility.of(principal, "notifications:read")
    f = TemplateFilter(event, channel_type, team_id, visible)
    found = await TemplateService(session).list(f, page)
    return page_response(request, found, TemplateOut.of)


@router.get(
    "/notifications/templates/defaults",
    response_model=list[TemplateOut],
    summary="The file templates every event starts from (notifications:read)",
)
async def list_default_templates(
    _: Principal = require("notifications:read", ANY_SCOPE),
    event: str | None = Query(None, max_length=100),
    channel_type: ChannelType | None = Query(None),
) -> list[TemplateOut]:
    out = []
    for name in events():
        for ctype in CHANNEL_TYPES:
            if (event and name != event) or (channel_type and ctype != channel_type):
                continue
            source = default_template(name, ctype)
            out.append(
                TemplateOut(
                    id=None,
                    source="file",
                    event=name,
                    channel_type=ctype,
                    subject=source.subject,
                    body=source.body,
                    text_body=source.text_body,
                    variables=_declared(name),
                )
            )
    return out


@router.post(
    "/notifications/templates",
    response_model=TemplateOut,
    status_code=status.HTTP_201_CREATED,
    summary="Override a template for a team or the platform (notifications:write)",
)
async def create_template(
    body: TemplateCreateIn,
    session: DbSession,
    principal: Principal = require("notifications:write", ANY_SCOPE),
) -> TemplateOut:
    authorize(
        principal, "notifications:write", await ChannelService(session).resource(body.team_id)
    )
    template = await TemplateService(session).create(
        event=body.event, channel_type=body.channel_type, team_id=body.team_id, source=body.source()
    )
    return TemplateOut.of(template)


@router.put(
    "/notifications/templates/{template_id}",
    response_model=TemplateOut,
    summary="Replace an override's text (notifications:write)",
)
async def update_template(
    template_id: uuid.UUID,
    body: TemplateIn,
    session: DbSession,
    principal: Principal = require("notifications:write", ANY_SCOPE),
) -> TemplateOut:
    service = TemplateService(session)
    template = await service.get(template_id)
    authorize(
        principal, "notifications:write", await ChannelService(session).resource(template.team_id)
    )
    return TemplateOut.of(await service.update(template, body.source()))


# -- sending and history ----------------------------------------------------------------


class SendIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    event: str = Field("custom", max_length=100)
    context: dict[str, Any] = Field(default_factory=dict, description="The event's variables")
    channel_ids: list[uuid.UUID] = Field(min_length=1, max_length=50)
    user_ids: list[uuid.UUID] = Field(
        default_factory=list, max_length=500, description="Also message these users personally"
    )
    team_id: uuid.UUID | None = Field(
        None, description="Whose template overrides apply (notifications:write on that team)"
    )
    reference: str | None = Field(
        None,
        max_length=200,
        description="Not accepted: references (what a message is about, e.g. a promotion) "
        "are assigned by the platform to its own messages; any value is a 422",
    )


class SentOut(BaseModel):
    request_id: uuid.UUID
    workflow_id: str


@router.post(
    "/notifications",
    response_model=SentOut,
    status_code=status.HTTP_202_ACCEPTED,
    summary="Send a notification (notifications:write on every channel used)",
)
async def send_notification(
    body: SendIn,
    session: DbSession,
    client: TemporalClient,
    principal: Principal = require("notifications:write", ANY_SCOPE),
) -> SentOut:
    if body.event not in events():
        raise ValidationFailed(
            f"unknown event {body.event!r}",
            details=[{"field": "event", "message": f"one of {', '.join(events())}"}],
        )
    if body.reference is not None:
        # A reference ties a message to a platform object (`promotion:<id>`): decisions on it
        # update the message, and its buttons are accepted. Only the platform assigns them.
        raise ValidationFailed.on(
            "reference",
            "reference is assigned by the platform to its own messages and cannot be set",
        )
    channels = ChannelService(session)
    if body.team_id is not None:
        authorize(principal, "notifications:write", await channels.resource(body.team_id))
    channel_ids = list(dict.fromkeys(body.channel_ids))  # each once, in the given order
    user_ids = list(dict.fromkeys(body.user_ids))
    labels = []  # for the workflow's summary in the Temporal UI
    for channel_id in channel_ids:
        channel = await channels.get(channel_id)
        labels.append(channel_label(channel.type, channel.name))
        authorize(principal, "notifications:write", await channels.resource(channel.team_id))
        if not channel.enabled:
            raise ValidationFailed(
                f"channel {channel.name!r} is disabled",
                details=[{"field": "channel_ids", "message": f"{channel_id} is disabled"}],
            )
    for user_id in user_ids:
        user = await session.get(User, user_id)
        if user is None or user.is_deleted:
            raise ValidationFailed(
                f"user {user_id} does not exist",
                details=[{"field": "user_ids", "message": f"{user_id} does not exist"}],
            )
    request = NotificationRequest(
        event=body.event,
        context=body.context,
        channel_ids=channel_ids,
        user_ids=user_ids,
        team_id=body.team_id,
    )
    await session.commit()
    workflow_id = await start_notification(client, request, channels=labels, actor=principal.label)
    await AuditService(session).record(
        "notification.send",
        "notification_request",
        request.request_id,
        after={
            "event": request.event,
            "channel_ids": request.channel_ids,
            "user_ids": request.user_ids,
            "variables": sorted(request.context),  # names only: values may be sensitive
            "workflow_id": workflow_id,
        },
    )
    return SentOut(request_id=request.request_id, workflow_id=workflow_id)


class AttemptOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    attempt: int
    status: str
    error: str | None
    retryable: bool | None
    retry_after: float | None
    started_at: datetime
    finished_at: datetime | None


class NotificationOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: uuid.UUID
    request_id: uuid.UUID
    event: str
    channel_id: uuid.UUID
    channel_type: str
    template_id: uuid.UUID | None
    recipient: str
    user_id: uuid.UUID | None
    status: str
    attempts: int
    last_error: str | None
    reference: str | None
    workflow_id: str | None
    remote_id: str | None
    created_at: datetime
    sent_at: datetime | None
    delivered_at: datetime | None


class NotificationDetailOut(NotificationOut):
    subject: str | None
    text: str | None
    attempt_log: list[AttemptOut]

    @classmethod
    def of(cls, n: Notification, attempts: Sequence[NotificationAttempt]) -> NotificationDetailOut:
        base = NotificationOut.model_validate(n).model_dump()
        return cls(
            **base,
            subject=n.subject,
            text=n.text,
            attempt_log=[AttemptOut.model_validate(a) for a in attempts],
        )


@router.get(
    "/notifications",
    response_model=PageOut[NotificationOut],
    summary="Delivery history, newest last (notifications:read)",
)
async def list_notifications(
    request: Request,
    session: DbSession,
    principal: Principal = require("notifications:read", ANY_SCOPE),
    status_: Status | None = Query(None, alias="status"),
    channel_id: uuid.UUID | None = Query(None),
    recipient: str | None = Query(None, max_length=2048),
    event: str | None = Query(None, max_length=100),
    request_id: uuid.UUID | None = Query(None),
    reference: str | None = Query(None, max_length=200),
    since: AwareDatetime | None = Query(None, description="Created at or after (with a zone)"),
    until: AwareDatetime | None = Query(None, description="Created before (with a zone)"),
    page: PageRequest = Depends(page_params),
) -> PageOut[NotificationOut]:
    visible = Visibility.of(principal, "notifications:read")
    f = NotificationFilter(
        status_, channel_id, recipient, event, request_id, reference, since, until, visible
    )
    found = await NotificationHistory(session).list(f, page)
    return page_response(request, found, NotificationOut.model_validate)


@router.get(
    "/notifications/{notification_id}",
    response_model=NotificationDetailOut,
    summary="One delivery with every attempt (notifications:read)",
)
async def get_notification(
    notification_id: uuid.UUID,
    session: DbSession,
    principal: Principal = require("notifications:read", ANY_SCOPE),
) -> NotificationDetailOut:
    history = NotificationHistory(session)
    found = await history.get(notification_id)
    await _channel_any_state(session, found.channel_id, principal)
    return NotificationDetailOut.of(found, await history.attempts(notification_id))


async def _channel_any_state(
    session: DbSession, channel_id: uuid.UUID, principal: Principal
) -> None:
    """Read access to a delivery follows its channel, deleted or not."""
    channel = await session.get(NotificationChannel, channel_id)
    assert channel is not None
    authorize(
        principal, "notifications:read", await ChannelService(session).resource(channel.team_id)
    )


# -- the caller's preferences -----------------------------------------------------------


class PreferenceOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    channel_type: str
    event: str
    enabled: bool
    settings: dict[str, Any]
    updated_at: datetime


class PreferencesIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    preferences: list[PreferenceIn] = Field(max_length=200)


class PreferencesOut(BaseModel):
    preferences: list[PreferenceOut]

    @classmethod
    def of(cls, prefs: list[UserNotificationPreference]) -> PreferencesOut:
        return cls(preferences=[PreferenceOut.model_validate(p) for p in prefs])


@router.get(
    "/users/me/notification-preferences",
    response_model=PreferencesOut,
    summary="Your notification preferences (any signed-in user)",
)
async def get_preferences(principal: CurrentPrincipal, session: DbSession) -> PreferencesOut:
    return PreferencesOut.of(await PreferenceService(session).get(principal.user_id))


@router.put(
    "/users/me/notification-preferences",
    response_model=PreferencesOut,
    summary="Replace your notification preferences (any signed-in user)",
)
async def put_preferences(
    body: PreferencesIn, principal: CurrentPrincipal, session: DbSession
) -> PreferencesOut:
    prefs = await PreferenceService(session).replace(principal.user_id, body.preferences)
    return PreferencesOut.of(prefs)


# -- the caller's verified Slack identities ---------------------------------------------


class SlackLinkIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    channel_id: uuid.UUID = Field(
        description="A Slack channel you can read: its workspace, and its bot sends the code"
    )
    slack_user_id: str = Field(pattern=SLACK_USER_ID, description="Your Slack member id")


class SlackLinkConfirmIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    code: str = Field(min_length=1, max_length=32, description="The code the bot sent you")


class SlackLinkPendingOut(BaseModel):
    channel_id: uuid.UUID
    slack_team_id: str
    slack_user_id: str
    expires_at: datetime
    tries_left: int


class SlackLinkOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: uuid.UUID
    channel_id: uuid.UUID
    slack_team_id: str
    slack_user_id: str
    verified_at: datetime


class SlackLinksOut(BaseModel):
    links: list[SlackLinkOut]
    pending: SlackLinkPendingOut | None


def _pending_out(challenge: SlackLinkChallenge | None) -> SlackLinkPendingOut | None:
    if challenge is None:
        return None
    return SlackLinkPendingOut(
        channel_id=challenge.channel_id,
        slack_team_id=challenge.slack_team_id,
        slack_user_id=challenge.slack_user_id,
        expires_at=challenge.expires_at,
        tries_left=max(0, SLACK_LINK_MAX_ATTEMPTS - challenge.attempts),
    )


def _person(principal: Principal) -> None:
    if principal.kind != "user":
        raise Forbidden("Slack links are made by a signed-in person, not an API key")


@router.get(
    "/users/me/slack-links",
    response_model=SlackLinksOut,
    summary="Your verified Slack links, and one waiting for its code (any signed-in user)",
)
async def get_slack_links(principal: CurrentPrincipal, session: DbSession) -> SlackLinksOut:
    service = SlackLinkService(session)
    links = await service.links(principal.user_id)
    return SlackLinksOut(
        links=[SlackLinkOut.model_validate(link) for link in links],
        pending=_pending_out(await service.pending(principal.user_id)),
    )


@router.post(
    "/users/me/slack-links",
    response_model=SlackLinkPendingOut,
    status_code=status.HTTP_202_ACCEPTED,
    summary="Link your Slack account: the channel's bot sends you a code in Slack "
    "(notifications:read on the channel)",
)
async def request_slack_link(
    body: SlackLinkIn, principal: CurrentPrincipal, session: DbSession, state: State
) -> SlackLinkPendingOut:
    _person(principal)
    channel = await _channel(session, body.channel_id, principal, "notifications:read")
    service = SlackLinkService(session)
    sending = await service.start(principal.user_id, channel, body.slack_user_id)
    out = _pending_out(sending.challenge)
    assert out is not None
    await session.commit()  # the code is sent with no transaction open
    try:
        await send_slack_code(sending, principal.label, state.settings.slack_api_url)
    except DeliveryError as exc:
        await service.abandon(sending.challenge.id, exc.reason)
        raise ValidationFailed(
            f"Slack did not deliver the code: {exc.reason}",
            details=[{"field": "slack_user_id", "message": exc.reason}],
            keep_changes=True,
        ) from None
    return out


@router.post(
    "/users/me/slack-links/confirm",
    response_model=SlackLinkOut,
    status_code=status.HTTP_201_CREATED,
    summary="Confirm your Slack account with the code the bot sent you (any signed-in user)",
)
async def confirm_slack_link(
    body: SlackLinkConfirmIn, principal: CurrentPrincipal, session: DbSession
) -> SlackLinkOut:
    _person(principal)
    link = await SlackLinkService(session).confirm(principal.user_id, body.code)
    return SlackLinkOut.model_validate(link)


@router.delete(
    "/users/me/slack-links/{link_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Remove one of your Slack links (any signed-in user)",
)
async def delete_slack_link(
    link_id: uuid.UUID, principal: CurrentPrincipal, session: DbSession
) -> None:
    _person(principal)
    await SlackLinkService(session).unlink(principal.user_id, link_id)
