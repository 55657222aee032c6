"""The one error type every sender raises, and the result of a successful send."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime

#: A wait longer than this in a Retry-After header is clamped (a remote cannot park a message
#: for days; Temporal's retry policy still bounds the total).
MAX_RETRY_AFTER = 3600.0


class DeliveryError(Exception):
    """A failed delivery attempt.

    `reason` is meant for a person (it ends up in the delivery history and the API) and never
    contains a secret; `retryable` is False for failures that another attempt cannot fix;
    `retry_after` is how long the remote asked us to wait; `status` is the HTTP or SMTP code
    when there was one.
    """

    def __init__(
        self,
        reason: str,
        *,
        retryable: bool,
        retry_after: float | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable
        self.retry_after = retry_after
        self.status = status

    def __repr__(self) -> str:
        return (
            f"DeliveryError({self.reason!r}, retryable={self.retryable}, "
            f"retry_after={self.retry_after}, status={self.status})"
        )


@dataclass(frozen=True)
class SendResult:
    """What the remote told us about an accepted message."""

    remote_id: str | None = None
    details: dict[str, str] = field(default_factory=dict)


def redact(text: str, *secrets: str | None) -> str:
    """`text` with every occurrence of each secret replaced; a last line of defence for reasons
    built from remote or library messages."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return text


def retry_after_seconds(value: str | None, *, now: float | None = None) -> float | None:
    """Parse a Retry-After header: delta-seconds or an HTTP date. None when absent or unusable."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if not math.isfinite(seconds):
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)
