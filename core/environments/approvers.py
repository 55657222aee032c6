"""Who may decide on a request into an environment (a promotion, a provisioning run): the
approver as the database says, from their grants and team memberships now.

The API resolves the caller this way before it sends a `decide` Update (an immediate answer,
narrowed by an API key's permissions); the workflow resolves the approver again in an
activity (`checked_approver`) and trusts only that answer, so a `decide` Update sent straight
to Temporal with `permitted: true`, or with teams and roles of its own, changes nothing."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from core.approvals import Approver, ApproverCheck
from core.environments.environments import environment_resource
from core.identity.grants import load_grants
from core.models.environments import Environment
from core.models.identity import Team, TeamMembership, User
from core.security.authorization import Principal


async def environment_approver(
    session: AsyncSession,
    principal: Principal,
    env: Environment,
    permission: str = "promotions:approve",
) -> Approver:
    """`principal` as an approver of requests into `env`: whether they hold `permission`
    there, their teams in its organization, and the roles covering it."""
    resource = environment_resource(env)
    teams = await session.scalars(
        select(Team.slug)
        .join(TeamMembership, TeamMembership.team_id == Team.id)
        .where(
            TeamMembership.user_id == principal.user_id,
            Team.org_id == env.org_id,
            Team.deleted_at.is_(None),
        )
    )
    roles = sorted({g.role for g in principal.grants if resource.covered_by(g)})
    user = await session.get(User, principal.user_id)
    name = (user.name or user.email) if user is not None else principal.label
    return Approver(
        user_id=principal.user_id,
        name=name,
        permitted=principal.can(permission, resource),
        teams=sorted(teams),
        roles=roles,
    )


async def checked_approver(session: AsyncSession, check: ApproverCheck) -> Approver:
    """The approver of `check` read from the database now (the workflow's activity): a user
    who is gone or disabled, or an environment that is gone, is not permitted."""
    user = await session.get(User, check.user_id)
    env = await session.get(Environment, check.environment_id)
    if user is None or user.status != "active" or env is None or env.deleted_at is not None:
        name = (user.name or user.email) if user is not None else str(check.user_id)
        return Approver(user_id=check.user_id, name=name, permitted=False)
    principal = Principal(
        user_id=user.id, label=user.email, grants=await load_grants(session, user.id)
    )
    return await environment_approver(session, principal, env, check.permission)
