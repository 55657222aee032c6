"""Signed webhook delivery over HTTP(S) with httpx.

Every request carries the delivery id (receivers dedupe by it), the event name, a Unix
timestamp and, when the channel has a signing secret, an HMAC-SHA256 signature of
"<timestamp>." + the raw body. docs/webhooks.md describes the receiver's side.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
from http import HTTPStatus
from typing import Any

import httpx

from core.notifications.senders.errors import (
    DeliveryError,
    SendResult,
    redact,
    retry_after_seconds,
)
from core.security.egress import EgressPolicy, EgressRefused

SIGNATURE_HEADER = "X-IDP-Signature"
TIMESTAMP_HEADER = "X-IDP-Timestamp"
DELIVERY_HEADER = "X-IDP-Delivery"
EVENT_HEADER = "X-IDP-Event"
USER_AGENT = "idp-notifications/1"
SIGNATURE_PREFIX = "sha256="
DEFAULT_TOLERANCE = 300  # seconds a signed request stays acceptable (either side of now)

#: Statuses after which the same request may succeed later.
RETRYABLE_STATUSES = frozenset({408, 425, 429})

_TIMESTAMP = re.compile(r"^[0-9]{1,15}$")


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The X-IDP-Signature value: "sha256=" + hex HMAC-SHA256(secret, "<timestamp>." + body)."""
    return _signature(secret, str(timestamp), body)


def verify(
    secret: str,
    timestamp_header: str,
    signature_header: str,
    body: bytes,
    *,
    tolerance: int = DEFAULT_TOLERANCE,
    now: float | None = None,
) -> bool:
    """True when `signature_header` signs `body` at `timestamp_header` with `secret` and the
    timestamp is within `tolerance` seconds of `now` (constant-time comparison)."""
    timestamp = timestamp_header.strip()
    if not _TIMESTAMP.match(timestamp):
        return False
    current = time.time() if now is None else now
    if abs(current - int(timestamp)) > tolerance:
        return False
    expected = _signature(secret, timestamp, body).encode()
    return hmac.compare_digest(expected, signature_header.strip().encode("utf-8", "replace"))


def _signature(secret: str, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return SIGNATURE_PREFIX + mac.hexdigest()


def encode_payload(payload: dict[str, Any]) -> bytes:
    """The exact request body: compact, key-sorted JSON."""
    return json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()


async def post_webhook(
    *,
    url: str,
    secret: str | None,
    payload: dict[str, Any],
    delivery_id: str,
    event: str,
    timeout: float = 10,
    client: httpx.AsyncClient | None = None,
    egress: EgressPolicy | None = None,
) -> SendResult:
    """POST `payload` to `url`. Redirects are not followed. Raises DeliveryError.

    The URL is a user's: it is reached through the egress guard, `egress` (default: no
    loopback, link-local or private address) or `client`, which must be one of its clients
    (`EgressPolicy.client`)."""
    target = _target(url)
    try:
        body = encode_payload(payload)
    except (TypeError, ValueError) as exc:
        raise DeliveryError(
            f"the webhook payload is not JSON-serialisable: {exc}", retryable=False
        ) from None
    timestamp = int(time.time())
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        DELIVERY_HEADER: delivery_id,
        EVENT_HEADER: event,
        TIMESTAMP_HEADER: str(timestamp),
    }
    if secret:
        headers[SIGNATURE_HEADER] = sign(secret, timestamp, body)

    try:
        if client is None:
            guard = egress or EgressPolicy()
            async with guard.client(timeout=timeout, follow_redirects=False) as own:
                status, location, retry_after = await _post(own, url, body, headers, timeout)
        else:
            status, location, retry_after = await _post(client, url, body, headers, timeout)
    except EgressRefused as exc:
        # Permanent until the channel's URL or the operator's allow-list changes.
        raise DeliveryError(f"the webhook URL was refused: {exc}", retryable=False) from None
    except httpx.TimeoutException:
        raise DeliveryError(
            f"webhook receiver {_where(target)} did not answer within {timeout:g}s",
            retryable=True,
        ) from None
    except (httpx.UnsupportedProtocol, httpx.InvalidURL, httpx.LocalProtocolError) as exc:
        reason = redact(f"the webhook request could not be made: {exc}", secret)
        raise DeliveryError(reason, retryable=False) from None
    except httpx.TransportError as exc:
        detail = str(exc) or type(exc).__name__
        reason = redact(
            f"webhook receiver {_where(target)} could not be reached: {detail[:200]}", secret
        )
        raise DeliveryError(reason, retryable=True) from None

    if 200 <= status < 300:
        return SendResult(details={"status": str(status)})
    answered = f"webhook receiver answered {status} {_phrase(status)}".rstrip()
    if 300 <= status < 400:
        if location:
            to = _safe_url(target.join(location))
            reason = f"webhook answered a redirect to {to}; configure the final URL"
        else:
            reason = f"{answered} (a redirect without a Location); configure the final URL"
        raise DeliveryError(reason, retryable=False, status=status)
    if status in RETRYABLE_STATUSES or status >= 500:
        wait = f"; retry after {retry_after:g}s" if retry_after is not None else ""
        raise DeliveryError(answered + wait, retryable=True, retry_after=retry_after, status=status)
    raise DeliveryError(answered, retryable=False, status=status)


async def _post(
    client: httpx.AsyncClient,
    url: str,
    body: bytes,
    headers: dict[str, str],
    timeout: float,
) -> tuple[int, str | None, float | None]:
    request = client.build_request("POST", url, content=body, headers=headers, timeout=timeout)
    # stream=True: the receiver's answer body is never needed, so it is not downloaded.
    response = await client.send(request, follow_redirects=False, stream=True)
    try:
        return (
            response.status_code,
            response.headers.get("location"),
            retry_after_seconds(response.headers.get("retry-after")),
        )
    finally:
        await response.aclose()


def _target(url: str) -> httpx.URL:
    try:
        target = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError):
        raise DeliveryError("the webhook URL is not a valid URL", retryable=False) from None
    if target.scheme not in ("http", "https") or not target.host:
        raise DeliveryError(
            f"the webhook URL must be http(s) with a host, not {_safe_url(target)!r}",
            retryable=False,
        )
    return target


def _where(url: httpx.URL) -> str:
    host = f"[{url.host}]" if ":" in url.host else url.host
    return f"{host}:{url.port}" if url.port else host


def _safe_url(url: httpx.URL) -> str:
    """The URL without credentials, query or fragment (they may carry secrets)."""
    if not url.scheme:
        return url.path or "(relative URL)"
    return f"{url.scheme}://{_where(url)}{url.path}"


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""
