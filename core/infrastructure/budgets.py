"""Budgets per team and environment: what was spent in a month against them, and which went
over (each notified once a month)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from core.audit import AuditService, snapshot
from core.errors import ValidationFailed
from core.identity.organizations import Visibility
from core.infrastructure.cost_messages import BudgetAlert
from core.infrastructure.costs import date_window
from core.models.environments import Environment
from core.models.identity import Organization, Team
from core.models.infrastructure import Budget, CostRecord, Provider, Resource
from core.notifications.channels import team_channel_ids


@dataclass(frozen=True)
class BudgetStatus:
    budget: Budget
    scope: str
    spent: Decimal

    @property
    def exceeded(self) -> bool:
        return self.spent > self.budget.amount


async def budget_status(session: AsyncSession, budget: Budget, day: date) -> BudgetStatus:
    """Spending of `day`'s month up to `day`, over the budget's team (tag) and environment."""
    stmt = (
        select(func.coalesce(func.sum(CostRecord.cost), 0))
        .join(Resource, Resource.id == CostRecord.resource_id)
        .join(Provider, Provider.id == Resource.provider_id)
        .where(
            Provider.org_id == budget.org_id,  # team slugs are unique per organization only
            *date_window(day.replace(day=1), day),
        )
    )
    names = []
    if budget.team_id is not None:
        team = await session.get(Team, budget.team_id)
        assert team is not None
        stmt = stmt.where(Resource.tags["team"].as_string() == team.slug)
        names.append(f"team {team.slug}")
    if budget.environment_id is not None:
        env = await session.get(Environment, budget.environment_id)
        assert env is not None
        stmt = stmt.where(Resource.environment_id == env.id)
        names.append(f"environment {env.name}")
    spent = Decimal(str(await session.scalar(stmt) or 0))
    return BudgetStatus(budget, " and ".join(names) or "organization", spent)


async def budget_alerts(session: AsyncSession, day: date) -> list[BudgetAlert]:
    """Budgets over their amount in `day`'s month not notified yet this month; marks them."""
    period = day.strftime("%Y-%m")
    alerts = []
    budgets = await session.scalars(select(Budget).where(Budget.deleted_at.is_(None)))
    for budget in budgets:
        status = await budget_status(session, budget, day)
        if not status.exceeded or budget.notified_month == period:
            continue
        budget.notified_month = period
        channels: list[uuid.UUID] = []
        if budget.team_id is not None:
            channels = await team_channel_ids(session, budget.team_id)
        alerts.append(
            BudgetAlert(
                budget_id=budget.id,
                scope=status.scope,
                amount=budget.amount,
                spent=status.spent,
                currency=budget.currency,
                period=day.strftime("%B %Y"),
                channel_ids=channels,
                team_id=budget.team_id,
            )
        )
    await session.flush()
    return alerts


class BudgetService:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session
        self.audit = AuditService(session)

    async def create(
        self,
        org: Organization,
        amount: Decimal,
        currency: str,
        *,
        team_id: uuid.UUID | None = None,
        environment_id: uuid.UUID | None = None,
    ) -> Budget:
        if team_id is None and environment_id is None:
            raise ValidationFailed.on("team_id", "give team_id, environment_id, or both")
        if team_id is not None:
            team = await self.session.get(Team, team_id)
            if team is None or team.is_deleted or team.org_id != org.id:
                raise ValidationFailed.on("team_id", f"no team {team_id} in the organization")
        if environment_id is not None:
            env = await self.session.get(Environment, environment_id)
            if env is None or env.is_deleted or env.org_id != org.id:
                raise ValidationFailed.on(
                    "environment_id", f"no environment {environment_id} in the organization"
                )
        row = Budget(
            org_id=org.id,
            team_id=team_id,
            environment_id=environment_id,
            amount=amount,
            currency=currency,
        )
        self.session.add(row)
        await self.session.flush()
        await self.audit.record("budget.create", "budget", row.id, after=snapshot(row))
        return row

    async def list(self, visible: Visibility, org_id: uuid.UUID | None) -> list[Budget]:
        stmt = select(Budget).where(Budget.deleted_at.is_(None))
        if not visible.everything:
            stmt = stmt.where(Budget.org_id.in_(visible.organization_ids))
        if org_id is not None:
            stmt = stmt.where(Budget.org_id == org_id)
        return list(await self.session.scalars(stmt.order_by(Budget.created_at, Budget.id)))
