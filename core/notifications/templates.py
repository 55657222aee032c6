"""Template overrides kept in the database: a team's (or the platform's) replacement for a
file template in templates/notifications/. Checked before they are saved: known event and
channel type, valid Jinja, only the event's declared variables, and well-formed output."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from jinja2 import Environment, meta
from sqlalchemy import Select, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from core.audit import AuditService, snapshot
from core.errors import Conflict, NotFound
from core.identity.organizations import EVERYTHING, Visibility, flush_unique
from core.models.notifications import NotificationTemplate
from core.notifications.rendering import TemplateSource, check_template_async
from core.pagination import Page, PageRequest, paginate


def used_variables(source: TemplateSource) -> list[str]:
    env = Environment()
    found: set[str] = set()
    for part in (source.subject, source.body, source.text_body):
        if part:
            found |= meta.find_undeclared_variables(env.parse(part))
    return sorted(found)


@dataclass(frozen=True)
class TemplateFilter:
    event: str | None = None
    channel_type: str | None = None
    team_id: uuid.UUID | None = None
    visible: Visibility = EVERYTHING  # platform-wide overrides are visible to every reader


class TemplateService:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session
        self.audit = AuditService(session)

    async def get(self, template_id: uuid.UUID) -> NotificationTemplate:
        template = await self.session.get(NotificationTemplate, template_id)
        if template is None:
            raise NotFound("notification template not found", details={"id": str(template_id)})
        return template

    def _query(self, f: TemplateFilter) -> Select[NotificationTemplate]:
        stmt = select(NotificationTemplate)
        if not f.visible.everything:
            stmt = stmt.where(
                or_(
                    NotificationTemplate.team_id.is_(None),
                    NotificationTemplate.team_id.in_(f.visible.covered_teams()),
                )
            )
        if f.event:
            stmt = stmt.where(NotificationTemplate.name == f.event)
        if f.channel_type:
            stmt = stmt.where(NotificationTemplate.channel_type == f.channel_type)
        if f.team_id:
            stmt = stmt.where(NotificationTemplate.team_id == f.team_id)
        return stmt

    async def list(self, f: TemplateFilter, page: PageRequest) -> Page[NotificationTemplate]:
        return await paginate(
            self.session,
            self._query(f),
            page,
            order=(NotificationTemplate.created_at, NotificationTemplate.id),
        )

    async def create(
        self,
        *,
        event: str,
        channel_type: str,
        team_id: uuid.UUID | None,
        source: TemplateSource,
    ) -> NotificationTemplate:
        await check_template_async(event, channel_type, source)
        taken = await self.session.scalar(
            self._query(TemplateFilter(event, channel_type)).where(
                NotificationTemplate.team_id.is_(None)
                if team_id is None
                else NotificationTemplate.team_id == team_id
            )
        )
        if taken is not None:
            raise Conflict(
                f"an override of {event}/{channel_type} already exists for this "
                f"{'team' if team_id else 'platform'}; change it with PUT",
                details={"id": str(taken.id)},
            )
        template = NotificationTemplate(
            name=event,
            channel_type=channel_type,
            team_id=team_id,
            subject=source.subject,
            body=source.body,
            text_body=source.text_body,
            variables=used_variables(source),
        )
        self.session.add(template)
        await flush_unique(self.session, f"an override of {event}/{channel_type} already exists")
        await self.audit.record(
            "notification_template.create",
            "notification_template",
            template.id,
            after=snapshot(template),
        )
        return template

    async def update(
        self, template: NotificationTemplate, source: TemplateSource
    ) -> NotificationTemplate:
        await check_template_async(template.name, template.channel_type, source)
        before = snapshot(template)
        template.subject, template.body, template.text_body = (
            source.subject,
            source.body,
            source.text_body,
        )
        template.variables = used_variables(source)
        await self.session.flush()
        await self.audit.record(
            "notification_template.update",
            "notification_template",
            template.id,
            before=before,
            after=snapshot(template),
        )
        return template
