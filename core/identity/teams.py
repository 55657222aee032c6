"""Teams of an organization and their members (a membership role implies team-scoped grants,
see core.identity.grants)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import Select, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from core import context
from core.audit import AuditService, snapshot
from core.errors import Conflict, NotFound, ValidationFailed
from core.identity.organizations import EVERYTHING, Visibility, check_name, check_slug, flush_unique
from core.models.catalog import Service
from core.models.identity import Organization, Team, TeamMembership, User
from core.pagination import Page, PageRequest, paginate
from core.security.authorization import Resource
from core.security.permissions import MEMBERSHIP_ROLES


def team_resource(team: Team) -> Resource:
    """Where a team (and what it owns) sits, for authorization."""
    return Resource(organization_id=team.org_id, team_id=team.id)


MEMBERSHIP_ROLE_NAMES = tuple(MEMBERSHIP_ROLES)  # owner | maintainer | member


@dataclass(frozen=True)
class TeamFilter:
    org_id: uuid.UUID | None = None
    q: str | None = None  # substring of name or slug
    visible: Visibility = EVERYTHING


@dataclass(frozen=True)
class Member:
    membership: TeamMembership
    user: User


def _check_role(role: str) -> str:
    if role not in MEMBERSHIP_ROLE_NAMES:
        raise ValidationFailed(
            f"membership role must be one of {', '.join(MEMBERSHIP_ROLE_NAMES)}",
            details=[{"field": "role", "message": f"unknown role {role!r}"}],
        )
    return role


class TeamService:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session
        self.audit = AuditService(session)

    async def get(self, team_id: uuid.UUID, *, include_deleted: bool = False) -> Team:
        team = await self.session.get(Team, team_id)
        if team is None or (team.is_deleted and not include_deleted):
            raise NotFound(f"team {team_id} not found", details={"id": str(team_id)})
        return team

    async def _check_slug_free(
        self, org_id: uuid.UUID, slug: str, team_id: uuid.UUID | None = None
    ) -> None:
        holder = (
            await self.session.scalars(select(Team).where(Team.org_id == org_id, Team.slug == slug))
        ).first()
        if holder is not None and holder.id != team_id:
            deleted = " (a deleted team still holds it)" if holder.is_deleted else ""
            raise Conflict(
                f"a team with slug {slug} already exists in this organization{deleted}",
                details={"slug": slug},
            )

    async def create(self, org: Organization, name: str, slug: str, description: str = "") -> Team:
        if org.is_deleted:
            raise NotFound(f"organization {org.id} not found", details={"id": str(org.id)})
        name, slug = check_name(name), check_slug(slug)
        await self._check_slug_free(org.id, slug)
        team = Team(org_id=org.id, name=name, slug=slug, description=description.strip())
        self.session.add(team)
        await flush_unique(
            self.session,
            f"a team with slug {slug} already exists in this organization",
            {"slug": slug},
        )
        await self.audit.record("team.create", "team", team.id, after=snapshot(team))
        return team

    def _query(self, f: TeamFilter) -> Select[Team]:
        stmt = select(Team).where(Team.deleted_at.is_(None))
        if not f.visible.everything:
            stmt = stmt.where(f.visible.where(Team.org_id, Team.id))
        if f.org_id is not None:
            stmt = stmt.where(Team.org_id == f.org_id)
        if f.q:
            like = f"%{f.q.lower()}%"
            stmt = stmt.where(or_(Team.slug.like(like), Team.name.ilike(like)))
        return stmt

    async def list(self, f: TeamFilter, page: PageRequest) -> Page[Team]:
        return await paginate(self.session, self._query(f), page, order=(Team.created_at, Team.id))

    async def update(
        self,
        team: Team,
        *,
        name: str | None = None,
        slug: str | None = None,
        description: str | None = None,
    ) -> Team:
        before = snapshot(team)
        if name is not None:
            team.name = check_name(name)
        if slug is not None and slug != team.slug:
            await self._check_slug_free(team.org_id, check_slug(slug), team.id)
            team.slug = slug
        if description is not None:
            team.description = description.strip()
        await flush_unique(
            self.session,
            f"a team with slug {team.slug} already exists in this organization",
            {"slug": team.slug},
        )
        await self.audit.record("team.update", "team", team.id, before=before, after=snapshot(team))
        return team

    async def delete(self, team: Team) -> None:
        """Soft delete. Memberships stay (for a restore) but stop granting anything. Refused
        while the team owns live services: they would be left without an owner."""
        owned = list(
            await self.session.scalars(
                select(Service.name)
                .where(Service.owner_team_id == team.id, Service.deleted_at.is_(None))
                .order_by(Service.name)
                .limit(11)
            )
        )
        if owned:
            raise Conflict(
                f"team {team.slug} still owns services ({', '.join(owned[:10])}"
                f"{', …' if len(owned) > 10 else ''}); hand them to another team or delete "
                "them first",
                details={"services": owned[:10]},
            )
        before = snapshot(team)
        team.soft_delete()
        await self.session.flush()
        await self.audit.record("team.delete", "team", team.id, before=before, after=snapshot(team))

    # -- members -----------------------------------------------------------------------------
    async def members(self, team: Team, page: PageRequest) -> Page[Member]:
        """The team's members (deleted users left out), in the order they joined."""
        stmt = (
            select(TeamMembership)
            .join(User, User.id == TeamMembership.user_id)
            .where(TeamMembership.team_id == team.id, User.deleted_at.is_(None))
        )
        found = await paginate(
            self.session, stmt, page, order=(TeamMembership.joined_at, TeamMembership.user_id)
        )
        ids = [m.user_id for m in found.items]
        users = {
            u.id: u for u in (await self.session.scalars(select(User).where(User.id.in_(ids))))
        }
        return Page(
            items=[Member(m, users[m.user_id]) for m in found.items],
            limit=found.limit,
            next_cursor=found.next_cursor,
            next_offset=found.next_offset,
        )

    async def membership(self, team: Team, user_id: uuid.UUID) -> TeamMembership:
        found = await self.session.get(TeamMembership, (user_id, team.id))
        if found is None:
            raise NotFound(
                f"user {user_id} is not a member of team {team.slug}",
                details={"user_id": str(user_id)},
            )
        return found

    async def add_member(self, team: Team, user: User, role: str = "member") -> TeamMembership:
        _check_role(role)
        if user.is_deleted:
            raise NotFound(f"user {user.id} not found")
        if await self.session.get(TeamMembership, (user.id, team.id)) is not None:
            raise Conflict(
                f"{user.email} is already a member of team {team.slug}",
                details={"user_id": str(user.id)},
            )
        membership = TeamMembership(
            user_id=user.id, team_id=team.id, role=role, created_by=context.current().actor_id
        )
        self.session.add(membership)
        await flush_unique(
            self.session,
            f"{user.email} is already a member of team {team.slug}",
            {"user_id": str(user.id)},
        )
        await self.audit.record("team.member.add", "team", team.id, after=snapshot(membership))
        return membership

    async def _other_owners(self, team: Team, user_id: uuid.UUID) -> int:
        stmt = (
            select(func.count())
            .select_from(TeamMembership)
            .join(User, User.id == TeamMembership.user_id)
            .where(
                TeamMembership.team_id == team.id,
                TeamMembership.role == "owner",
                TeamMembership.user_id != user_id,
                User.deleted_at.is_(None),
            )
        )
        return int(await self.session.scalar(stmt) or 0)

    async def _keep_an_owner(self, team: Team, membership: TeamMembership, change: str) -> None:
        if membership.role != "owner":
            return
        user = await self.session.get(User, membership.user_id)
        if user is None or user.is_deleted:
            return  # a deleted user's membership can always be cleaned up
        if not await self._other_owners(team, membership.user_id):
            raise Conflict(
                f"cannot {change} the last owner of team {team.slug}; make another member "
                "owner first",
                details={"user_id": str(membership.user_id)},
            )

    async def update_member(self, team: Team, user_id: uuid.UUID, role: str) -> TeamMembership:
        _check_role(role)
        membership = await self.membership(team, user_id)
        if membership.role == role:
            return membership
        if role != "owner":
            await self._keep_an_owner(team, membership, "demote")
        before = snapshot(membership)
        membership.role = role
        await self.session.flush()
        await self.audit.record(
            "team.member.update", "team", team.id, before=before, after=snapshot(membership)
        )
        return membership

    async def remove_member(self, team: Team, user_id: uuid.UUID) -> None:
        membership = await self.membership(team, user_id)
        await self._keep_an_owner(team, membership, "remove")
        before = snapshot(membership)
        await self.session.delete(membership)
        await self.session.flush()
        await self.audit.record("team.member.remove", "team", team.id, before=before)
