"""Cost analysis over `cost_records`: totals for a window grouped by team, environment,
service, provider or resource, a series per day, week or month, the change against the
window before, the top movers, and the budgets' status.

Aggregation happens in SQL (one grouped sum for the window, one for the window before, one
per-day series for the largest groups); Python only buckets days into weeks or months."""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from typing import Any, Literal

from sqlalchemy import ColumnElement, Date, case, false, func, literal, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from core.errors import ValidationFailed
from core.identity.organizations import Visibility
from core.infrastructure.budgets import budget_status
from core.infrastructure.costs import date_window
from core.models.environments import Environment
from core.models.infrastructure import Budget, CostRecord, Provider, Resource

GroupBy = Literal["team", "environment", "service", "provider", "resource"]
Step = Literal["day", "week", "month"]
MAX_WINDOW = timedelta(days=731)
OTHER = "(other)"
UNSET = "(none)"


@dataclass(frozen=True)
class CostQuery:
    visible: Visibility  # infrastructure:read
    start: date
    end: date  # inclusive
    group_by: GroupBy = "team"
    step: Step = "day"
    limit: int = 10  # groups shown; the rest are summed as (other)
    org_id: uuid.UUID | None = None


@dataclass
class GroupCost:
    key: str
    label: str
    total: Decimal
    previous: Decimal

    @property
    def change(self) -> Decimal:
        return self.total - self.previous

    @property
    def change_pct(self) -> float | None:
        return float(self.change / self.previous * 100) if self.previous else None


@dataclass
class BudgetLine:
    budget_id: uuid.UUID
    scope: str
    amount: Decimal
    spent: Decimal
    currency: str

    @property
    def status(self) -> str:
        return "exceeded" if self.spent > self.amount else "ok"


@dataclass
class CostReport:
    query: CostQuery
    previous_start: date
    previous_end: date
    total: Decimal
    previous_total: Decimal
    groups: list[GroupCost]
    series: list[tuple[date, dict[str, Decimal]]]
    movers: list[GroupCost]
    budgets: list[BudgetLine] = field(default_factory=list)


def _key(group_by: GroupBy) -> ColumnElement[Any]:
    columns: dict[str, Any] = {
        "team": Resource.tags["team"].as_string(),
        "service": Resource.tags["service"].as_string(),
        "environment": Resource.environment_id,
        "provider": Resource.provider_id,
        "resource": Resource.id,
    }
    return columns[group_by]


def bucket(day: date, step: Step) -> date:
    if step == "week":
        return day - timedelta(days=day.weekday())
    if step == "month":
        return day.replace(day=1)
    return day


def check(q: CostQuery) -> None:
    if q.end < q.start:
        raise ValidationFailed.on("end", "end must not be before start")
    if q.end - q.start > MAX_WINDOW:
        raise ValidationFailed.on("end", "a window is at most two years")


class CostAnalysis:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    def _scoped(self, q: CostQuery, *columns: Any) -> Any:
        """`columns` over the cost records (joined to their resources) `q` may see."""
        stmt = (
            select(*columns)
            .select_from(CostRecord)
            .join(Resource, Resource.id == CostRecord.resource_id)
        )
        return self._visible(q, stmt)

    def _visible(self, q: CostQuery, stmt: Any) -> Any:
        """`stmt` (which joins Resource) limited to the resources `q` may see."""
        stmt = stmt.join(Provider, Provider.id == Resource.provider_id)
        if not q.visible.everything:
            stmt = stmt.where(
                or_(
                    Provider.org_id.in_(q.visible.organization_ids),
                    Resource.environment_id.in_(q.visible.environment_ids),
                )
            )
        if q.org_id is not None:
            stmt = stmt.where(Provider.org_id == q.org_id)
        return stmt

    async def _totals(
        self, q: CostQuery, previous_start: date
    ) -> tuple[dict[str, Decimal], dict[str, Decimal]]:
        """Each group's total in the window and in the one before, in one scan: summed per
        resource first (no tag is read per cost row), then per group."""
        in_window = CostRecord.date >= literal(q.start, Date).render_literal_execute()
        per_resource = (
            select(
                CostRecord.resource_id.label("resource_id"),
                func.sum(case((in_window, CostRecord.cost), else_=0)).label("current"),
                func.sum(case((in_window, 0), else_=CostRecord.cost)).label("previous"),
            )
            .where(*date_window(previous_start, q.end))
            .group_by(CostRecord.resource_id)
            .subquery()
        )
        key = _key(q.group_by).label("key")
        stmt = (
            self._visible(
                q,
                select(key, func.sum(per_resource.c.current), func.sum(per_resource.c.previous))
                .select_from(per_resource)
                .join(Resource, Resource.id == per_resource.c.resource_id),
            )
        ).group_by(key)
        current: dict[str, Decimal] = {}
        previous: dict[str, Decimal] = {}
        for k, now, before in (await self.session.execute(stmt)).all():
            if now:
                current[_text(k)] = Decimal(str(now))
            if before:
                previous[_text(k)] = Decimal(str(before))
        return current, previous

    async def _series(
        self, q: CostQuery, shown: list[str]
    ) -> list[tuple[date, dict[str, Decimal]]]:
        """Per day, the shown groups' costs and the rest's as one (other), folded in SQL so
        at most (shown + 1) rows a day come back."""
        column = _key(q.group_by)
        typed: list[Any] = [
            k if q.group_by in ("team", "service") else uuid.UUID(k)
            for k in shown
            if k not in (UNSET, OTHER)
        ]
        chosen: ColumnElement[bool] = column.in_(typed) if typed else false()
        if UNSET in shown:
            chosen = or_(chosen, column.is_(None))
        key = case((chosen, column), else_=None).label("key")
        other = case((chosen, 0), else_=1).label("other")
        stmt = (
            self._scoped(q, key, other, CostRecord.date, func.sum(CostRecord.cost))
            .where(*date_window(q.start, q.end))
            .group_by(key, other, CostRecord.date)
        )
        buckets: dict[date, dict[str, Decimal]] = defaultdict(lambda: defaultdict(Decimal))
        for k, is_other, day, cost in (await self.session.execute(stmt)).all():
            name = OTHER if is_other else _text(k)
            buckets[bucket(day, q.step)][name] += Decimal(str(cost))
        return [(b, dict(buckets[b])) for b in sorted(buckets)]

    async def _labels(self, q: CostQuery, keys: list[str]) -> dict[str, str]:
        if q.group_by in ("team", "service"):  # the keys are the tags' values
            return {}
        ids = [uuid.UUID(k) for k in keys if k not in (UNSET, OTHER)]
        if not ids:
            return {}
        model: Any = {"environment": Environment, "provider": Provider, "resource": Resource}[
            q.group_by
        ]
        rows = await self.session.execute(select(model.id, model.name).where(model.id.in_(ids)))
        return {str(i): name for i, name in rows.all()}

    async def report(self, q: CostQuery) -> CostReport:
        check(q)
        length = q.end - q.start + timedelta(days=1)
        previous_start, previous_end = q.start - length, q.start - timedelta(days=1)
        current, previous = await self._totals(q, previous_start)
        everyone = sorted(set(current) | set(previous))
        groups = [
            GroupCost(k, k, current.get(k, Decimal(0)), previous.get(k, Decimal(0)))
            for k in everyone
        ]
        groups.sort(key=lambda g: (-g.total, g.key))
        shown = [g for g in groups if g.total][: q.limit]
        rest = groups[len(shown) :]
        if any(g.total or g.previous for g in rest):
            shown.append(
                GroupCost(
                    OTHER,
                    OTHER,
                    sum((g.total for g in rest), Decimal(0)),
                    sum((g.previous for g in rest), Decimal(0)),
                )
            )
        movers = [m for m in sorted(groups, key=lambda g: (-abs(g.change), g.key))[:5] if m.change]
        labels = await self._labels(q, [g.key for g in [*shown, *movers]])
        for g in [*shown, *movers]:
            g.label = labels.get(g.key, g.key)
        return CostReport(
            query=q,
            previous_start=previous_start,
            previous_end=previous_end,
            total=sum(current.values(), Decimal(0)),
            previous_total=sum(previous.values(), Decimal(0)),
            groups=shown,
            series=await self._series(q, [g.key for g in shown]),
            movers=movers,
            budgets=await self._budgets(q),
        )

    async def _budgets(self, q: CostQuery) -> list[BudgetLine]:
        """The budgets of the organizations in view, over the month of the window's end."""
        stmt = select(Budget).where(Budget.deleted_at.is_(None))
        if not q.visible.everything:
            stmt = stmt.where(Budget.org_id.in_(q.visible.organization_ids))
        if q.org_id is not None:
            stmt = stmt.where(Budget.org_id == q.org_id)
        lines = []
        for budget in await self.session.scalars(stmt):
            status = await budget_status(self.session, budget, q.end)  # its month to date
            lines.append(
                BudgetLine(budget.id, status.scope, budget.amount, status.spent, budget.currency)
            )
        return lines


def _text(key: Any) -> str:
    return UNSET if key is None else str(key)
