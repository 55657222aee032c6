"""Who pressed a Slack button, as a platform user, and whether the press counts at all.

A press counts only on a message the platform itself delivered about that object (found by
the server-assigned reference, e.g. `promotion:<id>`, the message ts and the Slack channel),
and only from the workspace pinned on the channel that delivered it (`config.team_id`): the
same Slack app installed in another workspace signs its requests just as validly.

The presser is the platform user with a *verified* link to that Slack member in that
workspace (core/slack/links.py), or else, only in the workspaces listed in
SLACK_EMAIL_LOOKUP_TEAM_IDS, the active user with the email Slack gives for them
(`users.info`, asked with the bot token of the channel that delivered the message). A Slack
member id claimed in the notification preferences never identifies anyone."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from core.models.identity import User
from core.models.notifications import Notification, NotificationChannel
from core.notifications.channels import channel_secrets
from core.notifications.senders.slack import user_email
from core.slack.interactions import Interaction
from core.slack.links import linked_user
from core.slack.workspaces import pinned_team


async def _origin(
    session: AsyncSession, interaction: Interaction, reference: str
) -> NotificationChannel | None:
    """The channel that delivered the message the button is on, about `reference`."""
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
    return await session.scalar(stmt.limit(1))


@dataclass(frozen=True)
class Lookup:
    """What the database says of a press: refused (why, and whether it came from a foreign
    workspace), or the verified platform user, or the bot token to ask Slack for the
    presser's email with (outside any transaction)."""

    user: User | None = None
    bot_token: str | None = None
    refusal: str | None = None
    foreign_team: bool = False
    channel: NotificationChannel | None = None


async def lookup(
    session: AsyncSession,
    interaction: Interaction,
    reference: str,
    email_teams: Collection[str] = (),
) -> Lookup:
    """`reference` is what the button decides on (e.g. `promotion:<id>`); `email_teams` the
    workspaces whose emails are trusted (SLACK_EMAIL_LOOKUP_TEAM_IDS)."""
    channel = await _origin(session, interaction, reference)
    if channel is None:
        return Lookup(refusal="this button is not on a message the platform sent about it")
    team = pinned_team(channel)
    if team is None:
        return Lookup(
            refusal="the Slack channel that sent this message has no workspace pinned "
            "(config.team_id)",
            foreign_team=True,
            channel=channel,
        )
    if interaction.slack_team_id != team:
        return Lookup(
            refusal="this press comes from another Slack workspace than the one the message "
            "was sent to",
            foreign_team=True,
            channel=channel,
        )
    user = await linked_user(session, team, interaction.slack_user_id)
    if user is not None:
        return Lookup(user=user, channel=channel)
    token = channel_secrets(channel).get("bot_token") if team in email_teams else None
    return Lookup(bot_token=str(token) if token else None, channel=channel)


async def slack_email(found: Lookup, interaction: Interaction, base_url: str | None) -> str | None:
    """The email Slack gives for an unlinked user (`users.info`); None when it cannot say."""
    if found.refusal or found.user is not None or not found.bot_token:
        return None
    return await user_email(
        token=found.bot_token, user_id=interaction.slack_user_id, base_url=base_url
    )


async def platform_user(session: AsyncSession, found: Lookup, email: str | None) -> User | None:
    """The active platform user behind the Slack user, or None when none can be found."""
    if found.refusal:
        return None
    user = await session.get(User, found.user.id) if found.user is not None else None
    if user is None and email:
        user = await session.scalar(
            select(User).where(func.lower(User.email) == email, User.deleted_at.is_(None))
        )
    if user is None or user.is_deleted or user.status != "active":
        return None
    return user
