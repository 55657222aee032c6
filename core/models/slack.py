"""Verified links between platform users and Slack members, and the one-time codes that
prove them. A Slack member id counts as a platform user only through a verified link: the
code was sent by the platform's bot to that Slack member and typed back by the user."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from core.db.base import Entity


class SlackLink(Entity):
    """A platform user is this Slack member in this Slack workspace (team). One member per
    user and workspace, and one user per member."""

    __tablename__ = "slack_links"
    __table_args__ = (
        UniqueConstraint("slack_team_id", "slack_user_id"),
        UniqueConstraint("user_id", "slack_team_id"),
    )

    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"), index=True)
    slack_team_id: Mapped[str] = mapped_column(String(32))
    slack_user_id: Mapped[str] = mapped_column(String(32))
    # The channel whose bot sent the code (which also pinned the workspace).
    channel_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("notification_channels.id"))
    verified_at: Mapped[datetime]


class SlackLinkChallenge(Entity):
    """A link asked for and not yet confirmed: the code's hash (never the code), when it
    expires and how many wrong codes were tried. At most one per user."""

    __tablename__ = "slack_link_challenges"

    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"), unique=True)
    channel_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("notification_channels.id"))
    slack_team_id: Mapped[str] = mapped_column(String(32))
    slack_user_id: Mapped[str] = mapped_column(String(32))
    code_hash: Mapped[str] = mapped_column(String(64))
    expires_at: Mapped[datetime]
    attempts: Mapped[int] = mapped_column(Integer, default=0)
