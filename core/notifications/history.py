"""Reading delivery records: filtered lists and one record with its attempts."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession

from core.errors import NotFound
from core.identity.organizations import EVERYTHING, Visibility
from core.models.notifications import Notification, NotificationAttempt, NotificationChannel
from core.pagination import Page, PageRequest, paginate


@dataclass(frozen=True)
class NotificationFilter:
    status: str | None = None
    channel_id: uuid.UUID | None = None
    recipient: str | None = None
    event: str | None = None
    request_id: uuid.UUID | None = None
    reference: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    visible: Visibility = EVERYTHING


class NotificationHistory:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    def _query(self, f: NotificationFilter) -> Select[Notification]:
        stmt = select(Notification)
        if not f.visible.everything:
            channels = select(NotificationChannel.id).where(
                NotificationChannel.team_id.in_(f.visible.covered_teams())
            )
            stmt = stmt.where(Notification.channel_id.in_(channels))
        for column, value in (
            (Notification.status, f.status),
            (Notification.channel_id, f.channel_id),
            (Notification.recipient, f.recipient),
            (Notification.event, f.event),
            (Notification.request_id, f.request_id),
            (Notification.reference, f.reference),
        ):
            if value is not None:
                stmt = stmt.where(column == value)
        if f.since:
            stmt = stmt.where(Notification.created_at >= f.since)
        if f.until:
            stmt = stmt.where(Notification.created_at < f.until)
        return stmt

    async def list(self, f: NotificationFilter, page: PageRequest) -> Page[Notification]:
        return await paginate(
            self.session, self._query(f), page, order=(Notification.created_at, Notification.id)
        )

    async def get(self, notification_id: uuid.UUID) -> Notification:
        found = await self.session.get(Notification, notification_id)
        if found is None:
            raise NotFound("notification not found", details={"id": str(notification_id)})
        return found

    async def attempts(self, notification_id: uuid.UUID) -> Sequence[NotificationAttempt]:
        stmt = (
            select(NotificationAttempt)
            .where(NotificationAttempt.notification_id == notification_id)
            .order_by(NotificationAttempt.attempt)
        )
        return (await self.session.scalars(stmt)).all()


async def delivered_slack_messages(
    session: AsyncSession, reference: str, event: str
) -> list[uuid.UUID]:
    """The delivered Slack messages of `event` about `reference` (e.g. the approval requests
    of `promotion:<id>`), oldest first: those a decision updates in place."""
    found = await session.scalars(
        select(Notification.id)
        .where(
            Notification.reference == reference,
            Notification.event == event,
            Notification.channel_type == "slack",
            Notification.status == "delivered",
            Notification.remote_id.is_not(None),
        )
        .order_by(Notification.created_at)
    )
    return list(found)
