"""Who pressed a Slack button, as a platform user: the user whose Slack notification
preference names that Slack member id (a linked account), or else the active user with the
email Slack gives for them (`users.info`, asked with the bot token of the channel that posted
the message)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from core.models.identity import User
from core.models.notifications import Notification, NotificationChannel, UserNotificationPreference
from core.notifications.channels import channel_secrets
from core.notifications.senders.slack import user_email
from core.slack.interactions import Interaction


async def _linked(session: AsyncSession, slack_user_id: str) -> User | None:
    prefs = await session.scalars(
        select(UserNotificationPreference).where(UserNotificationPreference.channel_type == "slack")
    )
    for pref in prefs:
        if (pref.settings or {}).get("slack_user_id") == slack_user_id:
            user = await session.get(User, pref.user_id)
            if user is not None and not user.is_deleted:
                return user
    return None


async def _bot_token(session: AsyncSession, interaction: Interaction, reference: str) -> str | None:
    """The token of the channel that delivered the message the button is on."""
    if interaction.message_ts is None:
        return None
    stmt = (
        select(NotificationChannel)
        .join(Notification, Notification.channel_id == NotificationChannel.id)
        .where(
            Notification.reference == reference,
            Notification.remote_id == interaction.message_ts,
            Notification.channel_type == "slack",
        )
    )
    if interaction.channel_id:
        stmt = stmt.where(Notification.slack_channel == interaction.channel_id)
    channel = await session.scalar(stmt.limit(1))
    if channel is None:
        return None
    token = channel_secrets(channel).get("bot_token")
    return str(token) if token else None


@dataclass(frozen=True)
class Lookup:
    """What the database says of a Slack user: the linked platform user, or else the bot
    token to ask Slack for their email with (outside any transaction)."""

    user: User | None
    bot_token: str | None


async def lookup(session: AsyncSession, interaction: Interaction, reference: str) -> Lookup:
    """`reference` is what the message was sent about (e.g. `promotion:<id>`)."""
    user = await _linked(session, interaction.slack_user_id)
    if user is not None:
        return Lookup(user, None)
    return Lookup(None, await _bot_token(session, interaction, reference))


async def slack_email(found: Lookup, interaction: Interaction, base_url: str | None) -> str | None:
    """The email Slack gives for an unlinked user (`users.info`); None when it cannot say."""
    if found.user is not None or not found.bot_token:
        return None
    return await user_email(
        token=found.bot_token, user_id=interaction.slack_user_id, base_url=base_url
    )


async def platform_user(session: AsyncSession, found: Lookup, email: str | None) -> User | None:
    """The active platform user behind the Slack user, or None when none can be found."""
    user = found.user
    if user is None and email:
        user = await session.scalar(
            select(User).where(func.lower(User.email) == email, User.deleted_at.is_(None))
        )
    if user is None or user.status != "active":
        return None
    return user
