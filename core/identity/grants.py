"""Loading a user's grants: assigned roles plus the roles their team memberships imply."""

from __future__ import annotations

import uuid

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from core.models.environments import Environment, EnvironmentAccess
from core.models.identity import Role, Team, TeamMembership, UserRole
from core.security.authorization import Grant
from core.security.permissions import BUILTIN_ROLES, MEMBERSHIP_ROLES


def role_permissions(role: Role) -> frozenset[str]:
    """Built-in roles take their permissions from code, custom roles from their row."""
    if role.builtin and role.name in BUILTIN_ROLES:
        return frozenset(BUILTIN_ROLES[role.name][1])
    return frozenset(role.permissions)


async def load_grants(session: AsyncSession, user_id: uuid.UUID) -> tuple[Grant, ...]:
    assigned = await session.execute(
        select(UserRole, Role)
        .join(Role, Role.id == UserRole.role_id)
        .where(UserRole.user_id == user_id)
    )
    grants = [
        Grant(
            role=role.name,
            permissions=role_permissions(role),
            scope=grant.scope,  # type: ignore[arg-type]
            scope_id=grant.scope_id,
            grant_id=grant.id,
        )
        for grant, role in assigned.all()
    ]
    memberships = (
        await session.execute(
            select(TeamMembership.team_id, TeamMembership.role)
            .join(Team, Team.id == TeamMembership.team_id)
            .where(TeamMembership.user_id == user_id, Team.deleted_at.is_(None))
        )
    ).all()
    for team_id, membership_role in memberships:
        role_name = MEMBERSHIP_ROLES.get(membership_role, "developer")
        grants.append(
            Grant(
                role=role_name,
                permissions=frozenset(BUILTIN_ROLES[role_name][1]),
                scope="team",
                scope_id=team_id,
                source="membership",
            )
        )
    grants.extend(await _environment_access(session, user_id, [t for t, _ in memberships]))
    return tuple(grants)


async def _environment_access(
    session: AsyncSession, user_id: uuid.UUID, team_ids: list[uuid.UUID]
) -> list[Grant]:
    """Permissions granted on one environment to the user or one of their teams."""
    rows = await session.execute(
        select(EnvironmentAccess.id, EnvironmentAccess.env_id, EnvironmentAccess.permissions)
        .join(Environment, Environment.id == EnvironmentAccess.env_id)
        .where(
            Environment.deleted_at.is_(None),
            or_(
                EnvironmentAccess.user_id == user_id,
                EnvironmentAccess.team_id.in_(team_ids),
            ),
        )
    )
    return [
        Grant(
            role="environment-access",
            permissions=frozenset(permissions),
            scope="environment",
            scope_id=env_id,
            source="access",
            grant_id=access_id,
        )
        for access_id, env_id, permissions in rows.all()
    ]
