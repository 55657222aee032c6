"""What CostCollectionWorkflow takes and returns, and what passes to its activities."""

from __future__ import annotations

import uuid
from datetime import date
from decimal import Decimal

from pydantic import BaseModel, Field

SOURCES: tuple[str, ...] = ("estimate",)


class CostCollectionInput(BaseModel):
    """`day` to collect; None: the day before the scheduled (or actual) start."""

    day: date | None = None
    sources: list[str] = Field(default_factory=lambda: ["estimate"])
    notifications_queue: str = "notifications"


class CollectInput(BaseModel):
    day: date
    source: str


class CollectResult(BaseModel):
    day: date
    source: str
    resources: int
    total: Decimal


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
