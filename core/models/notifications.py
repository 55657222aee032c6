"""Notification tables: channels, template overrides, deliveries and their attempts, and each
user's preferences."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from core.db.base import Base, Entity, SoftDeleteMixin
from core.db.types import utcnow


class NotificationChannel(Entity, SoftDeleteMixin):
    """Where messages go: a Slack channel, an SMTP server and its recipients, or a webhook URL.

    `config` holds what may be shown (host, port, channel, URL); `secrets` the credentials
    (bot token, SMTP password, signing secret) as encrypted JSON, never returned."""

    __tablename__ = "notification_channels"

    type: Mapped[str] = mapped_column(String(20))  # slack | email | webhook
    name: Mapped[str] = mapped_column(String(100))
    team_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("teams.id"), index=True)
    config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # Ciphertext, decrypted only when a delivery needs it (core/notifications/channels.py), so
    # listing channels decrypts nothing.
    secrets: Mapped[str | None] = mapped_column(Text)
    # Which credentials are set (names only), for responses.
    secret_names: Mapped[list[str]] = mapped_column(JSON, default=list)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)


class NotificationTemplate(Entity):
    """A team's (or, with no team, the platform's) override of a file template in
    `templates/notifications/<event>/`."""

    __tablename__ = "notification_templates"
    __table_args__ = (UniqueConstraint("name", "channel_type", "team_id"),)

    name: Mapped[str] = mapped_column(String(100))  # the event, e.g. pipeline.failed
    channel_type: Mapped[str] = mapped_column(String(20))
    team_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("teams.id"), index=True)
    subject: Mapped[str | None] = mapped_column(Text)
    body: Mapped[str] = mapped_column(Text)
    text_body: Mapped[str | None] = mapped_column(Text)
    variables: Mapped[list[str]] = mapped_column(JSON, default=list)  # those it uses


class Notification(Entity):
    """One message to one recipient through one channel, and how its delivery went."""

    __tablename__ = "notifications"
    __table_args__ = (UniqueConstraint("request_id", "channel_id", "recipient"),)

    request_id: Mapped[uuid.UUID] = mapped_column(index=True)  # one send, many deliveries
    event: Mapped[str] = mapped_column(String(100), index=True)
    template_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("notification_templates.id"))
    channel_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("notification_channels.id"), index=True
    )
    channel_type: Mapped[str] = mapped_column(String(20))
    recipient: Mapped[str] = mapped_column(String(2048), index=True)
    user_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id"), index=True)
    # pending | retrying | delivered | failed | skipped
    status: Mapped[str] = mapped_column(String(20), default="pending", index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    subject: Mapped[str | None] = mapped_column(Text)
    text: Mapped[str | None] = mapped_column(Text)
    html: Mapped[str | None] = mapped_column(Text)
    payload: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    context: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    remote_id: Mapped[str | None] = mapped_column(String(255))  # Slack ts, Message-ID
    slack_channel: Mapped[str | None] = mapped_column(String(100))  # for chat.update
    reference: Mapped[str | None] = mapped_column(String(200), index=True)  # e.g. promotion:<id>
    workflow_id: Mapped[str | None] = mapped_column(String(255))
    sent_at: Mapped[datetime | None] = mapped_column(default=None)
    delivered_at: Mapped[datetime | None] = mapped_column(default=None)


class NotificationAttempt(Base):
    __tablename__ = "notification_attempts"
    __table_args__ = (UniqueConstraint("notification_id", "attempt"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    notification_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("notifications.id"), index=True)
    attempt: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(20))  # started | succeeded | failed
    error: Mapped[str | None] = mapped_column(Text)
    retryable: Mapped[bool | None] = mapped_column(Boolean, default=None)
    retry_after: Mapped[float | None] = mapped_column(default=None)  # seconds the remote asked
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)


class UserNotificationPreference(Base):
    """Whether a user gets `event` (or every event, `*`) over a channel type, and how."""

    __tablename__ = "user_notification_preferences"

    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"), primary_key=True)
    channel_type: Mapped[str] = mapped_column(String(20), primary_key=True)
    event: Mapped[str] = mapped_column(String(100), primary_key=True, default="*")
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    settings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
