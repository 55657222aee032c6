"""Turning a notification request into delivery records, and delivering one record.

`prepare` resolves channels, users and preferences, renders each channel type's template
once, and writes one `notifications` row per (channel, recipient). It is idempotent per
request id, so a retried activity never doubles the records. `deliver` sends one row through
its channel and records the attempt, whatever the outcome.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from core.db.types import utcnow
from core.models.identity import User
from core.models.notifications import (
    Notification,
    NotificationAttempt,
    NotificationChannel,
    NotificationTemplate,
    UserNotificationPreference,
)
from core.notifications.channels import channel_secrets
from core.notifications.messages import (
    DeliveryOutcome,
    DeliveryRef,
    NotificationRequest,
    Prepared,
    channel_label,
)
from core.notifications.rendering import (
    RenderedMessage,
    RenderError,
    TemplateSource,
    default_template,
    render_async,
)
from core.notifications.senders import email, slack, webhook
from core.notifications.senders.errors import DeliveryError, SendResult
from core.security.egress import EgressPolicy

PERSONAL_TYPES = ("slack", "email")  # a webhook has no per-user recipient


@dataclass(frozen=True)
class Target:
    channel: NotificationChannel
    recipient: str
    user_id: uuid.UUID | None = None
    skip_reason: str | None = None


async def find_template(
    session: AsyncSession, event: str, channel_type: str, team_id: uuid.UUID | None
) -> tuple[TemplateSource, uuid.UUID | None]:
    """The team's override, else the platform's override, else the file template."""
    stmt = select(NotificationTemplate).where(
        NotificationTemplate.name == event, NotificationTemplate.channel_type == channel_type
    )
    rows = list((await session.scalars(stmt)).all())
    for wanted in (team_id, None) if team_id else (None,):
        for row in rows:
            if row.team_id == wanted:
                return TemplateSource(row.subject, row.body, row.text_body), row.id
    return default_template(event, channel_type), None


def _channel_recipients(channel: NotificationChannel) -> list[str]:
    if channel.type == "slack":
        return [channel.config["channel"]] if channel.config.get("channel") else []
    if channel.type == "email":
        return list(channel.config.get("to", []))
    return [channel.config["url"]]


async def _preferences(
    session: AsyncSession, user_ids: Iterable[uuid.UUID], event: str
) -> dict[tuple[uuid.UUID, str], UserNotificationPreference]:
    """Each user's preference per channel type for `event`: the event's row beats `*`."""
    stmt = select(UserNotificationPreference).where(
        UserNotificationPreference.user_id.in_(list(user_ids)),
        UserNotificationPreference.event.in_([event, "*"]),
    )
    found: dict[tuple[uuid.UUID, str], UserNotificationPreference] = {}
    for pref in (await session.scalars(stmt)).all():
        key = (pref.user_id, pref.channel_type)
        if key not in found or pref.event == event:
            found[key] = pref
    return found


def _personal_target(
    channel: NotificationChannel, user: User, pref: UserNotificationPreference | None
) -> Target:
    settings = pref.settings if pref else {}
    if channel.type == "slack":
        slack_user = settings.get("slack_user_id")
        if pref is not None and not pref.enabled:
            return Target(channel, slack_user or user.email, user.id, "off in the preferences")
        if not slack_user:
            return Target(
                channel, user.email, user.id, "no Slack user id in the user's preferences"
            )
        return Target(channel, slack_user, user.id)
    address = settings.get("address") or user.email
    if pref is not None and not pref.enabled:
        return Target(channel, address, user.id, "off in the user's preferences")
    return Target(channel, address, user.id)


async def _targets(session: AsyncSession, request: NotificationRequest) -> list[Target]:
    channels = (
        await session.scalars(
            select(NotificationChannel).where(NotificationChannel.id.in_(request.channel_ids))
        )
    ).all()
    users = list((await session.scalars(select(User).where(User.id.in_(request.user_ids)))).all())
    prefs = await _preferences(session, [u.id for u in users], request.event)
    targets: list[Target] = []
    for channel in sorted(channels, key=lambda c: request.channel_ids.index(c.id)):
        unusable = (
            "the channel was deleted"
            if channel.is_deleted
            else ("the channel is disabled" if not channel.enabled else None)
        )
        for recipient in _channel_recipients(channel):
            targets.append(Target(channel, recipient, skip_reason=unusable))
        if channel.type not in PERSONAL_TYPES:
            continue
        for user in users:
            if user.is_deleted or user.status != "active":
                continue
            target = _personal_target(channel, user, prefs.get((user.id, channel.type)))
            if unusable and not target.skip_reason:
                target = Target(channel, target.recipient, user.id, unusable)
            targets.append(target)
    seen: set[tuple[uuid.UUID, str]] = set()
    unique = []
    for t in targets:  # a user who is also on the channel's list gets one message
        if (t.channel.id, t.recipient) not in seen:
            seen.add((t.channel.id, t.recipient))
            unique.append(t)
    return unique


async def prepare(
    session: AsyncSession,
    request: NotificationRequest,
    *,
    workflow_id: str | None,
    platform_url: str,
) -> Prepared:
    """Write the delivery records of `request` (once); which are still to deliver, and how
    the others ended."""
    existing = list(
        (
            await session.scalars(
                select(Notification).where(Notification.request_id == request.request_id)
            )
        ).all()
    )
    if existing:
        names = await _channel_names(session, {n.channel_id for n in existing})
    else:
        existing, names = await _create_records(session, request, workflow_id, platform_url)
    ordered = sorted(existing, key=lambda n: (n.created_at, str(n.id)))

    def label(n: Notification) -> str:
        name = names.get(n.channel_id, str(n.channel_id))
        return channel_label(n.channel_type, name, personal=n.user_id is not None)

    return Prepared(
        deliveries=[
            DeliveryRef(notification_id=n.id, channel_type=n.channel_type, channel=label(n))
            for n in ordered
            if n.status in ("pending", "retrying")
        ],
        settled=[
            DeliveryOutcome(
                notification_id=n.id, status=n.status, error=n.last_error, channel=label(n)
            )
            for n in ordered
            if n.status not in ("pending", "retrying")
        ],
    )


async def _channel_names(
    session: AsyncSession, channel_ids: Iterable[uuid.UUID]
) -> dict[uuid.UUID, str]:
    rows = await session.execute(
        select(NotificationChannel.id, NotificationChannel.name).where(
            NotificationChannel.id.in_(list(channel_ids))
        )
    )
    return {channel_id: name for channel_id, name in rows}


async def _create_records(
    session: AsyncSession,
    request: NotificationRequest,
    workflow_id: str | None,
    platform_url: str,
) -> tuple[list[Notification], dict[uuid.UUID, str]]:
    """The records, and the names of their channels (already loaded: no query for them)."""
    rendered: dict[str, tuple[RenderedMessage | None, str | None, uuid.UUID | None]] = {}
    records = []
    names: dict[uuid.UUID, str] = {}
    for target in await _targets(session, request):
        names[target.channel.id] = target.channel.name
        ctype = target.channel.type
        if ctype not in rendered:
            source, template_id = await find_template(
                session, request.event, ctype, request.team_id
            )
            try:
                fresh = await render_async(
                    request.event, ctype, source, request.context, platform_url=platform_url
                )
                rendered[ctype] = (fresh, None, template_id)
            except RenderError as exc:
                rendered[ctype] = (None, exc.message, template_id)
        message, render_error, template_id = rendered[ctype]
        status = "pending"
        error = None
        if target.skip_reason:
            status, error = "skipped", target.skip_reason
        elif render_error:
            status, error = "failed", f"the template did not render: {render_error}"
        record = Notification(
            request_id=request.request_id,
            event=request.event,
            template_id=template_id,
            channel_id=target.channel.id,
            channel_type=ctype,
            recipient=target.recipient,
            user_id=target.user_id,
            status=status,
            last_error=error,
            subject=message.subject if message else None,
            text=message.text if message else None,
            html=message.html if message else None,
            payload=message.payload if message else None,
            context=request.context,
            reference=request.reference,
            workflow_id=workflow_id,
        )
        session.add(record)
        records.append(record)
    await session.flush()
    return records, names


@dataclass(frozen=True)
class SenderSettings:
    slack_api_url: str | None = None
    webhook_timeout: float = 10.0
    # What webhook URLs and SMTP hosts (users' destinations) may reach: EGRESS_ALLOWED_CIDRS.
    # Slack's API is the platform's own configured host (SLACK_API_URL), not guarded.
    egress: EgressPolicy = field(default_factory=EgressPolicy)


async def send(
    notification: Notification,
    channel: NotificationChannel,
    settings: SenderSettings,
    http: httpx.AsyncClient | None = None,
) -> SendResult:
    """Hand one message to its channel. Raises DeliveryError. `http`: a shared client for
    webhooks (making one per call costs a TLS context each time), made by `settings.egress`."""
    secrets: dict[str, Any] = channel_secrets(channel)
    payload = notification.payload or {}
    if channel.type == "slack":
        return await slack.post_message(
            token=secrets["bot_token"],
            channel=notification.recipient,
            text=str(payload.get("text") or notification.text or ""),
            blocks=payload.get("blocks"),
            base_url=settings.slack_api_url,
        )
    if channel.type == "email":
        config = channel.config
        smtp = email.SmtpSettings(
            host=config["host"],
            port=int(config["port"]),
            security=config.get("security", "starttls"),
            username=config.get("username"),
            password=secrets.get("password"),
            from_address=config["from_address"],
        )
        return await email.send_email(
            smtp,
            to=[notification.recipient],
            subject=notification.subject or notification.event,
            text=notification.text or "",
            html=notification.html,
            headers={"X-IDP-Event": notification.event, "X-IDP-Delivery": str(notification.id)},
            egress=settings.egress,
        )
    return await webhook.post_webhook(
        url=notification.recipient,
        secret=secrets.get("signing_secret"),
        payload=payload,
        delivery_id=str(notification.id),
        event=notification.event,
        timeout=settings.webhook_timeout,
        client=http,
        egress=settings.egress,
    )


async def _attempt_row(
    session: AsyncSession, notification_id: uuid.UUID, attempt: int
) -> NotificationAttempt | None:
    return await session.scalar(
        select(NotificationAttempt).where(
            NotificationAttempt.notification_id == notification_id,
            NotificationAttempt.attempt == attempt,
        )
    )


async def begin_attempt(
    session: AsyncSession, notification_id: uuid.UUID, attempt: int
) -> tuple[Notification, NotificationChannel] | None:
    """Record that attempt `attempt` starts; None when the message was already delivered (a
    retry after a crash between sending and recording must not send twice)."""
    notification = await session.get(Notification, notification_id)
    if notification is None:
        raise LookupError(f"notification {notification_id} does not exist")
    if notification.status == "delivered":
        return None
    channel = await session.get(NotificationChannel, notification.channel_id)
    assert channel is not None  # a foreign key
    now = utcnow()
    notification.attempts = max(notification.attempts, attempt)
    notification.sent_at = notification.sent_at or now
    notification.status = "retrying" if attempt > 1 else "pending"
    row = await _attempt_row(session, notification_id, attempt)
    if row is None:
        session.add(
            NotificationAttempt(
                notification_id=notification_id, attempt=attempt, status="started", started_at=now
            )
        )
    await session.flush()
    return notification, channel


async def finish_attempt(
    session: AsyncSession,
    notification_id: uuid.UUID,
    attempt: int,
    *,
    result: SendResult | None = None,
    error: DeliveryError | None = None,
) -> None:
    notification = await session.get(Notification, notification_id)
    row = await _attempt_row(session, notification_id, attempt)
    assert notification is not None and row is not None
    now = utcnow()
    row.finished_at = now
    if error is None:
        assert result is not None
        row.status = "succeeded"
        notification.status = "delivered"
        notification.delivered_at = now
        notification.last_error = None
        notification.remote_id = result.remote_id
        notification.slack_channel = result.details.get("channel")
    else:
        row.status = "failed"
        row.error = error.reason
        row.retryable = error.retryable
        row.retry_after = error.retry_after
        notification.status = "retrying"
        notification.last_error = error.reason
    await session.flush()


async def mark_failed(session: AsyncSession, notification_id: uuid.UUID, reason: str) -> None:
    """The delivery gave up (a permanent error, or out of attempts): say so, keep the record."""
    notification = await session.get(Notification, notification_id)
    assert notification is not None
    if notification.status != "delivered":
        notification.status = "failed"
        notification.last_error = reason
    await session.flush()
