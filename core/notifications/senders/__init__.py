"""Delivery senders (Slack, email, webhook): plain async functions that raise DeliveryError."""

from __future__ import annotations

from core.notifications.senders.errors import DeliveryError, SendResult

__all__ = ["DeliveryError", "SendResult"]
