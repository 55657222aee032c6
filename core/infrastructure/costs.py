"""Daily cost records: the price catalog and the `estimate` collector (the inventory times
the catalog), and writing a day's records so that a rerun replaces them instead of adding.

A collector (`core/infrastructure/collectors/`) turns one day into `CostLine`s (resource, cost,
usage); `store_day` upserts them per resource, day and source: collecting a day twice leaves the
same totals."""

from __future__ import annotations

import calendar
import uuid
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import ColumnElement, Date, delete, literal, select
from sqlalchemy.ext.asyncio import AsyncSession

from core.models.infrastructure import CostRecord, Resource

CATALOG_PATH = Path(__file__).resolve().parents[2] / "infra" / "prices.yaml"
CENT = Decimal("0.0001")


@dataclass(frozen=True)
class CostLine:
    resource_id: uuid.UUID
    cost: Decimal
    usage: dict[str, Any] = field(default_factory=dict)
    currency: str | None = None  # None: the catalog's


@dataclass(frozen=True)
class Price:
    monthly: Decimal
    by: str | None = None
    sizes: dict[str, Decimal] = field(default_factory=dict)

    def for_inputs(self, inputs: dict[str, Any]) -> tuple[Decimal, str | None]:
        value: Any = inputs
        for key in (self.by or "").split(".") if self.by else []:
            value = value.get(key) if isinstance(value, dict) else None
        if isinstance(value, list):
            value = value[0] if value else None
        size = None if value is None or value is inputs else str(value)
        return self.sizes.get(size, self.monthly) if size else self.monthly, size


class PriceCatalog:
    def __init__(self, prices: dict[str, Price], currency: str = "USD") -> None:
        self.prices = prices
        self.currency = currency

    @classmethod
    def load(cls, path: Path = CATALOG_PATH) -> PriceCatalog:
        data = yaml.safe_load(path.read_text())
        prices = {
            type_: Price(
                monthly=Decimal(str(spec.get("monthly", 0))),
                by=spec.get("by"),
                sizes={k: Decimal(str(v)) for k, v in (spec.get("sizes") or {}).items()},
            )
            for type_, spec in (data.get("types") or {}).items()
        }
        return cls(prices, data.get("currency", "USD"))

    def monthly(self, resource: Resource) -> tuple[Decimal | None, str | None]:
        """What the resource costs a month, and the size it was priced at; None when the
        catalog does not know its type and the resource carries no cost of its own."""
        price = self.prices.get(resource.type)
        if price is None:
            return resource.cost_monthly, None
        return price.for_inputs(resource.properties or {})


def day_bounds(day: date) -> tuple[datetime, datetime]:
    start = datetime.combine(day, time.min, tzinfo=UTC)
    return start, start + timedelta(days=1)


async def resources_on(
    session: AsyncSession, day: date, *where: ColumnElement[bool]
) -> list[Resource]:
    """The resources (matching `where`) that existed on `day`: created before its end, not
    failed, and not destroyed before its start; oldest first."""
    start, end = day_bounds(day)
    rows = await session.scalars(
        select(Resource)
        .where(Resource.created_at < end, Resource.status != "failed", *where)
        .order_by(Resource.created_at, Resource.id)
    )
    return [r for r in rows if not (r.status == "destroyed" and r.updated_at < start)]


async def estimate_day(
    session: AsyncSession, catalog: PriceCatalog, day: date, *where: ColumnElement[bool]
) -> list[CostLine]:
    """The `estimate` collector: every resource that existed on `day` (and matches `where`) at
    its monthly price over the month's days."""
    days = Decimal(calendar.monthrange(day.year, day.month)[1])
    lines = []
    for row in await resources_on(session, day, *where):
        monthly, size = catalog.monthly(row)
        if monthly is None:
            continue
        cost = (monthly / days).quantize(CENT, rounding=ROUND_HALF_UP)
        usage = {"hours": 24, "monthly_price": str(monthly), **({"size": size} if size else {})}
        lines.append(CostLine(row.id, cost, usage))
    return lines


async def store_day(
    session: AsyncSession,
    day: date,
    source: str,
    lines: list[CostLine],
    currency: str = "USD",
    *,
    providers: Collection[uuid.UUID] | None = None,
) -> Decimal:
    """Replace `source`'s records of `day` with `lines` (at most one per resource); only those of
    the resources of `providers` when given (the lines must be theirs), so a provider that was
    not collected keeps its records. The day's total of `lines`."""
    stale = delete(CostRecord).where(CostRecord.date == day, CostRecord.source == source)
    if providers is not None:
        owned = select(Resource.id).where(Resource.provider_id.in_(list(providers)))
        stale = stale.where(CostRecord.resource_id.in_(owned))
    if providers is None or providers:
        await session.execute(stale)
    session.add_all(
        CostRecord(
            resource_id=line.resource_id,
            date=day,
            cost=line.cost,
            currency=line.currency or currency,
            source=source,
            usage_metrics=line.usage,
        )
        for line in lines
    )
    await session.flush()
    return sum((line.cost for line in lines), Decimal(0))


def date_window(start: date, end: date) -> tuple[ColumnElement[bool], ColumnElement[bool]]:
    """`CostRecord.date` from `start` to `end` (inclusive), the dates as literals: a
    prepared statement's generic plan would misjudge how many rows a window holds
    (PostgreSQL then picks a slow index scan over a year)."""
    return (
        CostRecord.date >= literal(start, Date).render_literal_execute(),
        CostRecord.date <= literal(end, Date).render_literal_execute(),
    )
