"""What NotificationWorkflow takes and returns, and what passes between it and its activities.

Only ids and the event's variables travel through Temporal: rendered messages and channel
credentials stay in the database, so history holds no secret (and payloads are encrypted
anyway)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
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
    channel: str | None = None  # `channel_label`: for summaries and failure messages


class DeliveryOutcome(BaseModel):
    notification_id: uuid.UUID
    status: str  # delivered | failed | skipped
    error: str | None = None
    channel: str | None = None  # `channel_label`, when known


class Prepared(BaseModel):
    deliveries: list[DeliveryRef]  # still to deliver
    settled: list[DeliveryOutcome]  # skipped by preference, or failed to render


class NotificationSummary(BaseModel):
    request_id: uuid.UUID
    outcomes: list[DeliveryOutcome]

    def count(self, status: str) -> int:
        return sum(1 for o in self.outcomes if o.status == status)

    def status(self) -> str:
        """The request's status (`IdpStatus`): failed if any delivery failed, else delivered
        if any was, else skipped (every recipient turned it off, or nothing to deliver)."""
        for status in ("failed", "delivered"):
            if self.count(status):
                return status
        return "skipped"


_MAX_NAME = 100


def channel_label(channel_type: str, name: str, *, personal: bool = False) -> str:
    """How a person reads a delivery's target: `deploys (slack)`. The channel's name, never
    its destination: a webhook URL may carry a token."""
    return f"{name} ({channel_type}, personal)" if personal else f"{name} ({channel_type})"


def summary(request: NotificationRequest, channels: Sequence[str] = ()) -> str:
    """The workflow's static summary: `notify deploys (slack) of pipeline.failed for shop`.
    `channels`: the labels when the starter has them, else the channels are counted."""
    count = len(request.channel_ids)
    targets = [", ".join(channels) if channels else f"{count} channel{'s' * (count != 1)}"]
    if request.user_ids:
        users = len(request.user_ids)
        targets.append(f"{users} user{'s' * (users != 1)}")
    text = f"notify {' and '.join(targets)} of {request.event}"
    for word, key in (("for", "service"), ("in", "environment")):
        value = request.context.get(key)
        if isinstance(value, str) and value.strip():
            text += f" {word} {' '.join(value.split())[:_MAX_NAME]}"  # one line, short
    return text


class MessageUpdate(BaseModel):
    """Re-render a delivered Slack message with another event (e.g. the decision on an
    approval request) and update it in place."""

    notification_id: uuid.UUID
    event: str
    context: dict[str, Any] = Field(default_factory=dict)
