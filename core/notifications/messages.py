"""What NotificationWorkflow takes and returns, and what passes between it and its activities.

Only ids and the event's variables travel through Temporal: rendered messages and channel
credentials stay in the database, so history holds no secret (and payloads are encrypted
anyway)."""

from __future__ import annotations

import uuid
from typing import Any

from pydantic import BaseModel, Field


class NotificationRequest(BaseModel):
    """Send `event` with `context` to channels (their own destination) and users (personally,
    through those channels, as their preferences allow)."""

    request_id: uuid.UUID = Field(default_factory=uuid.uuid4)
    event: str
    context: dict[str, Any] = Field(default_factory=dict)
    channel_ids: list[uuid.UUID] = Field(default_factory=list)
    user_ids: list[uuid.UUID] = Field(default_factory=list)
    team_id: uuid.UUID | None = None  # whose template overrides apply
    reference: str | None = None  # e.g. promotion:<id>, to find the message again


class DeliveryRef(BaseModel):
    notification_id: uuid.UUID
    channel_type: str


class DeliveryOutcome(BaseModel):
    notification_id: uuid.UUID
    status: str  # delivered | failed | skipped
    error: str | None = None


class Prepared(BaseModel):
    deliveries: list[DeliveryRef]  # still to deliver
    settled: list[DeliveryOutcome]  # skipped by preference, or failed to render


class NotificationSummary(BaseModel):
    request_id: uuid.UUID
    outcomes: list[DeliveryOutcome]

    def count(self, status: str) -> int:
        return sum(1 for o in self.outcomes if o.status == status)


class MessageUpdate(BaseModel):
    """Re-render a delivered Slack message with another event (e.g. the decision on an
    approval request) and update it in place."""

    notification_id: uuid.UUID
    event: str
    context: dict[str, Any] = Field(default_factory=dict)
