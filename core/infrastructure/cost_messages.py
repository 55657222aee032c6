"""What CostCollectionWorkflow takes and returns, and what passes to its activities."""

from __future__ import annotations

import uuid
from datetime import date
from decimal import Decimal

from pydantic import BaseModel, Field

# The cost collectors' names: those of core.infrastructure.collectors.COLLECTORS (a unit test
# keeps them equal; a literal here keeps this module free of the collectors' imports).
SOURCES: tuple[str, ...] = ("estimate", "opencost", "aws")


class CostCollectionInput(BaseModel):
    """`day` to collect; None: the day before the scheduled (or actual) start."""

    day: date | None = None
    sources: list[str] = Field(default_factory=lambda: ["estimate"])
    notifications_queue: str = "notifications"


class CollectInput(BaseModel):
    day: date
    source: str
    providers: list[uuid.UUID] | None = None  # only these providers' records; None: all


class CollectResult(BaseModel):
    day: date
    source: str
    resources: int  # cost records written
    total: Decimal
    # Billed items no inventory resource matched (namespaces, tag groups, untagged cost), and
    # their cost: reported, not stored.
    skipped: int = 0
    unattributed: Decimal = Decimal(0)
    notes: list[str] = Field(default_factory=list)  # what was not collected, and why


class BudgetAlert(BaseModel):
    budget_id: uuid.UUID
    scope: str
    amount: Decimal
    spent: Decimal
    currency: str
    period: str
    channel_ids: list[uuid.UUID]
    team_id: uuid.UUID | None = None


class CostCollectionResult(BaseModel):
    day: date
    collected: list[CollectResult]
    alerts: list[BudgetAlert]
