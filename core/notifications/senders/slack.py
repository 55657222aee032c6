"""Slack delivery through the Web API (chat.postMessage / chat.update) with slack_sdk.

The sync `WebClient` runs in a worker thread; its own retry handlers are switched off, because
Temporal owns retries (a retry inside an activity would hide attempts and stretch timeouts).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from typing import Any, cast

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError, SlackRequestError
from slack_sdk.web import SlackResponse

from core.notifications.senders.errors import (
    DeliveryError,
    SendResult,
    redact,
    retry_after_seconds,
)

DEFAULT_BASE_URL = "https://slack.com/api/"
log = logging.getLogger(__name__)

#: Slack error codes (answered with ok=false) that another attempt can get past.
RETRYABLE_ERRORS = frozenset(
    {
        "ratelimited",
        "rate_limited",
        "internal_error",
        "fatal_error",
        "service_unavailable",
        "request_timeout",
    }
)

#: Codes that need a person to act (documented here; every other refusal is permanent too).
PERMANENT_ERRORS = frozenset(
    {
        "channel_not_found",
        "not_in_channel",
        "is_archived",
        "invalid_auth",
        "not_authed",
        "account_inactive",
        "token_revoked",
        "token_expired",
        "no_permission",
        "missing_scope",
        "invalid_blocks",
        "msg_too_long",
        "no_text",
        "user_not_found",
        "message_not_found",
        "cant_update_message",
        "edit_window_closed",
    }
)

_HINTS = {
    "channel_not_found": "check the channel id, and invite the app to private channels",
    "not_in_channel": "invite the app to the channel",
    "is_archived": "the channel is archived",
    "invalid_auth": "the bot token is not valid",
    "not_authed": "no bot token was sent",
    "account_inactive": "the bot token belongs to a deactivated app or user",
    "token_revoked": "the bot token was revoked",
    "token_expired": "the bot token expired",
    "missing_scope": "the app lacks the chat:write scope",
    "no_permission": "the app may not post here",
    "invalid_blocks": "the message blocks are not valid Block Kit",
    "msg_too_long": "the message text is too long",
}

_ERROR_CODE = re.compile(r"^[a-z0-9_]{1,64}$")


async def post_message(
    *,
    token: str,
    channel: str,
    text: str,
    blocks: list[dict[str, Any]] | None,
    base_url: str | None = None,
    timeout: float = 10,
) -> SendResult:
    """Post a message; the result's remote_id is the message ts, details hold channel and ts."""

    def call(client: WebClient) -> SlackResponse:
        return client.chat_postMessage(channel=channel, text=text, blocks=blocks)

    return await _send(call, token=token, base_url=base_url, timeout=timeout, fallback=channel)


async def update_message(
    *,
    token: str,
    channel: str,
    ts: str,
    text: str,
    blocks: list[dict[str, Any]] | None,
    base_url: str | None = None,
    timeout: float = 10,
) -> SendResult:
    """Replace the text (and blocks) of the message `ts` in `channel` (chat.update)."""

    def call(client: WebClient) -> SlackResponse:
        return client.chat_update(channel=channel, ts=ts, text=text, blocks=blocks)

    return await _send(call, token=token, base_url=base_url, timeout=timeout, fallback=channel)


async def user_email(
    *, token: str, user_id: str, base_url: str | None = None, timeout: float = 2
) -> str | None:
    """The email of a Slack user (`users.info`, needs the `users:read.email` scope); None
    when Slack does not say (no scope, unknown user, Slack unreachable)."""

    def call() -> SlackResponse:
        return _client(token, base_url, timeout).users_info(user=user_id)

    try:
        response = await asyncio.to_thread(call)
    except (SlackApiError, SlackClientError, OSError, TimeoutError) as exc:
        log.info("users.info for %s failed: %s", user_id, redact(_describe(exc), token))
        return None
    profile = (response.get("user") or {}).get("profile") or {}
    email = profile.get("email")
    return str(email).lower() if email else None


async def workspace_of(*, token: str, base_url: str | None = None, timeout: float = 5) -> str:
    """The team id of the workspace a bot token belongs to (`auth.test`). Raises
    DeliveryError saying why Slack did not tell (a refused token, Slack unreachable)."""

    def call() -> SlackResponse:
        return _client(token, base_url, timeout).auth_test()

    try:
        response = await asyncio.to_thread(call)
    except SlackApiError as exc:
        raise _api_error(exc, token) from None
    except (SlackClientError, OSError, TimeoutError) as exc:
        raise DeliveryError(
            redact(f"Slack could not be reached: {_describe(exc)}", token), retryable=True
        ) from None
    team = response.get("team_id")
    if not isinstance(team, str) or not team:
        raise DeliveryError("Slack's auth.test named no team_id", retryable=False)
    return team


def _client(token: str, base_url: str | None, timeout: float) -> WebClient:
    url = base_url or DEFAULT_BASE_URL
    if not url.endswith("/"):
        url += "/"
    # WebClient annotates timeout as int, but hands it to urllib, which takes float seconds.
    return WebClient(token=token, base_url=url, timeout=cast(int, timeout), retry_handlers=[])


async def _send(
    call: Callable[[WebClient], SlackResponse],
    *,
    token: str,
    base_url: str | None,
    timeout: float,
    fallback: str,
) -> SendResult:
    def run() -> SlackResponse:
        return call(_client(token, base_url, timeout))

    try:
        response = await asyncio.to_thread(run)
    except SlackApiError as exc:
        raise _api_error(exc, token) from None
    except SlackRequestError as exc:
        reason = redact(f"the Slack request could not be made: {exc}", token)
        raise DeliveryError(reason, retryable=False) from None
    except SlackClientError as exc:
        reason = redact(f"Slack client error: {exc}", token)
        raise DeliveryError(reason, retryable=False) from None
    except (TimeoutError, OSError) as exc:  # urllib's URLError is an OSError
        raise DeliveryError(
            redact(f"Slack could not be reached: {_describe(exc)}", token), retryable=True
        ) from None
    ts = str(response.get("ts") or "")
    channel_id = str(response.get("channel") or fallback)
    return SendResult(remote_id=ts or None, details={"channel": channel_id, "ts": ts})


def _api_error(exc: SlackApiError, token: str) -> DeliveryError:
    response = exc.response
    status = int(getattr(response, "status_code", 0) or 0)
    data = getattr(response, "data", None)
    raw_code = data.get("error") if isinstance(data, dict) else None
    code = raw_code if isinstance(raw_code, str) and _ERROR_CODE.match(raw_code) else None
    headers = getattr(response, "headers", None) or {}
    retry_after = retry_after_seconds(_header(headers, "Retry-After"))
    http_status = status or None

    if status == 429 or code in ("ratelimited", "rate_limited"):
        wait = f"; retry after {retry_after:g}s" if retry_after is not None else ""
        return DeliveryError(
            f"Slack rate-limited the app{wait}",
            retryable=True,
            retry_after=retry_after,
            status=http_status,
        )
    if status >= 500 or status == 408:
        detail = f" ({code})" if code else ""
        return DeliveryError(
            f"Slack answered HTTP {status}{detail}",
            retryable=True,
            retry_after=retry_after,
            status=http_status,
        )
    if code in RETRYABLE_ERRORS:
        return DeliveryError(
            f"Slack could not take the message right now: {code}",
            retryable=True,
            retry_after=retry_after,
            status=http_status,
        )
    if code is None:
        if 200 <= status < 300:
            # ok=false without a readable code, or a body that is not JSON (a proxy's page)
            return DeliveryError(
                f"Slack answered with an unexpected response (HTTP {status})",
                retryable=True,
                status=http_status,
            )
        return DeliveryError(
            redact(f"Slack refused the message: HTTP {status}", token),
            retryable=False,
            status=http_status,
        )
    hint = _HINTS.get(code)
    reason = f"Slack refused the message: {code}" + (f" ({hint})" if hint else "")
    return DeliveryError(reason, retryable=False, status=http_status)


def _header(headers: Any, name: str) -> str | None:
    if not isinstance(headers, dict):
        return None
    for key, value in headers.items():
        if isinstance(key, str) and key.lower() == name.lower():
            if isinstance(value, list):
                return str(value[0]) if value else None
            return str(value)
    return None


def _describe(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None)  # URLError wraps the socket error
    if isinstance(reason, BaseException):
        exc = reason
    if isinstance(exc, TimeoutError) or "timed out" in str(exc):
        return "timed out"
    text = str(exc) or type(exc).__name__
    return text[:200]
