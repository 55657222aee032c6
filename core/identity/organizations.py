"""Organizations: creation, lookup, listing, changes and soft deletion; slugs; visibility."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Select, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from core.audit import AuditService, snapshot
from core.errors import Conflict, NotFound, ValidationFailed
from core.models.identity import Organization, Team
from core.pagination import Page, PageRequest, paginate
from core.security.authorization import GLOBAL, Principal

_SLUG = re.compile(r"[a-z0-9][a-z0-9-]*")
SLUG_MAX_LENGTH = 63


def check_slug(value: str, field: str = "slug", max_length: int = SLUG_MAX_LENGTH) -> str:
    """A lower-case, URL-safe name: letters, digits and hyphens, not starting with a hyphen."""
    if not _SLUG.fullmatch(value) or len(value) > max_length:
        message = (
            f"{field} {value!r} must be 1 to {max_length} lower-case letters, digits or "
            "hyphens, starting with a letter or digit"
        )
        raise ValidationFailed(message, details=[{"field": field, "message": message}])
    return value


def check_name(name: str) -> str:
    name = name.strip()
    if not name:
        raise ValidationFailed(
            "name cannot be empty", details=[{"field": "name", "message": "empty"}]
        )
    return name


async def flush_unique(session: AsyncSession, message: str, details: Any = None) -> None:
    """Flush, turning a unique-constraint race (two requests, one name) into a 409."""
    try:
        await session.flush()
    except IntegrityError:
        raise Conflict(message, details=details) from None


@dataclass(frozen=True)
class Visibility:
    """What a principal may see with one permission: everything (a global grant), or what
    sits in the organizations and teams its scoped grants name. List endpoints filter by it."""

    everything: bool = False
    organization_ids: frozenset[uuid.UUID] = frozenset()
    team_ids: frozenset[uuid.UUID] = frozenset()
    environment_ids: frozenset[uuid.UUID] = frozenset()

    @classmethod
    def of(cls, principal: Principal, permission: str) -> Visibility:
        if principal.can(permission, GLOBAL):
            return cls(everything=True)
        if principal.key_permissions is not None and permission not in principal.key_permissions:
            return cls()
        held = [g for g in principal.grants if permission in g.permissions and g.scope_id]
        return cls(
            organization_ids=frozenset(
                g.scope_id for g in held if g.scope == "organization" and g.scope_id
            ),
            team_ids=frozenset(g.scope_id for g in held if g.scope == "team" and g.scope_id),
            environment_ids=frozenset(
                g.scope_id for g in held if g.scope == "environment" and g.scope_id
            ),
        )

    def where(self, org_column: Any, team_column: Any) -> ColumnElement[bool]:
        """Rows in a covered organization or team (given the row's two columns). Meaningless
        when `everything`: do not filter then."""
        return or_(org_column.in_(self.organization_ids), team_column.in_(self.team_ids))

    def covered_teams(self) -> Select[uuid.UUID]:
        """The ids of the teams its grants cover (named, or in a named organization), to
        filter what belongs to a team. Meaningless when `everything`: do not filter then."""
        return select(Team.id).where(
            or_(Team.id.in_(self.team_ids), Team.org_id.in_(self.organization_ids))
        )


EVERYTHING = Visibility(everything=True)


@dataclass(frozen=True)
class OrganizationFilter:
    q: str | None = None  # substring of name or slug
    visible: Visibility = EVERYTHING


class OrganizationService:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session
        self.audit = AuditService(session)

    async def get(self, org_id: uuid.UUID, *, include_deleted: bool = False) -> Organization:
        org = await self.session.get(Organization, org_id)
        if org is None or (org.is_deleted and not include_deleted):
            raise NotFound(f"organization {org_id} not found", details={"id": str(org_id)})
        return org

    async def by_slug(self, slug: str) -> Organization | None:
        """The organization holding `slug`, deleted ones included (slugs stay taken)."""
        return (
            await self.session.scalars(select(Organization).where(Organization.slug == slug))
        ).first()

    async def _check_slug_free(self, slug: str, org_id: uuid.UUID | None = None) -> None:
        holder = await self.by_slug(slug)
        if holder is not None and holder.id != org_id:
            deleted = " (a deleted organization still holds it)" if holder.is_deleted else ""
            raise Conflict(
                f"an organization with slug {slug} already exists{deleted}",
                details={"slug": slug},
            )

    async def create(
        self, name: str, slug: str, settings: dict[str, Any] | None = None
    ) -> Organization:
        name, slug = check_name(name), check_slug(slug)
        await self._check_slug_free(slug)
        org = Organization(name=name, slug=slug, settings=dict(settings or {}))
        self.session.add(org)
        await flush_unique(
            self.session, f"an organization with slug {slug} already exists", {"slug": slug}
        )
        await self.audit.record("organization.create", "organization", org.id, after=snapshot(org))
        return org

    def _query(self, f: OrganizationFilter) -> Select[Organization]:
        stmt = select(Organization).where(Organization.deleted_at.is_(None))
        if not f.visible.everything:
            stmt = stmt.where(Organization.id.in_(f.visible.organization_ids))
        if f.q:
            like = f"%{f.q.lower()}%"
            stmt = stmt.where(or_(Organization.slug.like(like), Organization.name.ilike(like)))
        return stmt

    async def list(self, f: OrganizationFilter, page: PageRequest) -> Page[Organization]:
        return await paginate(
            self.session, self._query(f), page, order=(Organization.created_at, Organization.id)
        )

    async def update(
        self,
        org: Organization,
        *,
        name: str | None = None,
        slug: str | None = None,
        settings: dict[str, Any] | None = None,
    ) -> Organization:
        before = snapshot(org)
        if name is not None:
            org.name = check_name(name)
        if slug is not None and slug != org.slug:
            await self._check_slug_free(check_slug(slug), org.id)
            org.slug = slug
        if settings is not None:
            org.settings = dict(settings)
        await flush_unique(
            self.session, f"an organization with slug {org.slug} already exists", {"slug": org.slug}
        )
        await self.audit.record(
            "organization.update", "organization", org.id, before=before, after=snapshot(org)
        )
        return org

    async def team_count(self, org_id: uuid.UUID) -> int:
        stmt = (
            select(func.count())
            .select_from(Team)
            .where(Team.org_id == org_id, Team.deleted_at.is_(None))
        )
        return int(await self.session.scalar(stmt) or 0)

    async def delete(self, org: Organization) -> None:
        teams = await self.team_count(org.id)
        if teams:
            raise Conflict(
                f"organization {org.slug} still has {teams} team{'s' if teams != 1 else ''}; "
                "delete its teams first",
                details={"teams": teams},
            )
        before = snapshot(org)
        org.soft_delete()
        await self.session.flush()
        await self.audit.record(
            "organization.delete", "organization", org.id, before=before, after=snapshot(org)
        )
