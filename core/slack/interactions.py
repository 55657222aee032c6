"""Slack's interactive requests (a button pressed in a message): checking they come from
Slack, and reading which button who pressed. Pure functions: no FastAPI, no database.

- `verify(headers, body, signing_secret, now=None)`: Slack signs `v0:<timestamp>:<raw body>`
  with HMAC-SHA256 keyed by the app's signing secret and sends `X-Slack-Signature: v0=<hex>`
  and `X-Slack-Request-Timestamp`. A timestamp more than five minutes from now is refused, so
  a captured request cannot be replayed later. Raises Unauthorized (`invalid_signature`).
- `parse(body)`: the form field `payload` (JSON) of a `block_actions` interaction: the Slack
  user and team, the action's id and value, the channel and message (to update it in place)
  and the response URL (to answer the user alone)."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qs

import httpx
from pydantic import BaseModel

from core.errors import BadRequest, Unauthorized
from core.headers import HeaderView

REPLAY_WINDOW = 300  # seconds: Slack's own recommendation
VERSION = "v0"


def _invalid(message: str) -> Unauthorized:
    return Unauthorized(message, code="invalid_signature")


def sign(body: bytes, timestamp: int | str, signing_secret: str) -> str:
    """`v0=<hex>`: what Slack sends for `body` at `timestamp`."""
    base = f"{VERSION}:{timestamp}:".encode() + body
    return f"{VERSION}=" + hmac.new(signing_secret.encode(), base, hashlib.sha256).hexdigest()


def verify(
    headers: Mapping[str, str], body: bytes, signing_secret: str, now: float | None = None
) -> None:
    if not signing_secret:
        raise _invalid("no Slack signing secret is set (SLACK_SIGNING_SECRET)")
    view = HeaderView(headers)
    signature = view.get("X-Slack-Signature")
    stamp = view.get("X-Slack-Request-Timestamp")
    if not signature or not stamp:
        raise _invalid("the request has no X-Slack-Signature or X-Slack-Request-Timestamp")
    if not stamp.isdigit():
        raise _invalid("X-Slack-Request-Timestamp is not a Unix time")
    age = abs((time.time() if now is None else now) - int(stamp))
    if age > REPLAY_WINDOW:
        raise _invalid(
            f"the request is {int(age)}s from now, outside the {REPLAY_WINDOW}s window "
            "(a replay, or a clock that is off)"
        )
    if not hmac.compare_digest(sign(body, stamp, signing_secret), signature):
        raise _invalid("X-Slack-Signature does not match the body: wrong secret, or altered")


class Interaction(BaseModel):
    """One button press."""

    slack_user_id: str
    slack_user_name: str | None = None
    slack_team_id: str | None = None
    action_id: str
    value: str | None = None
    channel_id: str | None = None
    message_ts: str | None = None
    response_url: str | None = None
    trigger_id: str | None = None


def _text(data: Any, *path: str) -> str | None:
    for key in path:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data if isinstance(data, str) and data else None


def parse(body: bytes) -> Interaction:
    """The first action of a `block_actions` payload; BadRequest naming what is missing."""
    form = parse_qs(body.decode("utf-8", errors="replace"))
    values = form.get("payload")
    if not values:
        raise BadRequest("the Slack request has no payload form field")
    try:
        payload = json.loads(values[0])
    except json.JSONDecodeError:
        raise BadRequest("the Slack payload is not JSON") from None
    if not isinstance(payload, dict) or payload.get("type") != "block_actions":
        kind = payload.get("type") if isinstance(payload, dict) else None
        raise BadRequest(f"the Slack interaction type {kind!r} is not handled (block_actions)")
    actions = payload.get("actions")
    if not isinstance(actions, list) or not actions or not isinstance(actions[0], dict):
        raise BadRequest("the Slack payload has no actions")
    user_id = _text(payload, "user", "id")
    action_id = _text(actions[0], "action_id")
    if user_id is None or action_id is None:
        raise BadRequest("the Slack payload lacks user.id or actions[0].action_id")
    return Interaction(
        slack_user_id=user_id,
        slack_user_name=_text(payload, "user", "username") or _text(payload, "user", "name"),
        slack_team_id=_text(payload, "team", "id") or _text(payload, "user", "team_id"),
        action_id=action_id,
        value=_text(actions[0], "value"),
        channel_id=_text(payload, "channel", "id") or _text(payload, "container", "channel_id"),
        message_ts=_text(payload, "message", "ts") or _text(payload, "container", "message_ts"),
        response_url=_text(payload, "response_url"),
        trigger_id=_text(payload, "trigger_id"),
    )


async def respond_ephemeral(response_url: str, text: str, timeout: float = 5.0) -> bool:
    """Show `text` to the user who pressed the button, alone, leaving the message as it is
    (Slack's `response_url`); False when it could not be sent."""
    try:
        async with httpx.AsyncClient(timeout=timeout) as http:
            answer = await http.post(
                response_url,
                json={"response_type": "ephemeral", "replace_original": False, "text": text},
            )
        return answer.is_success
    except httpx.HTTPError:
        return False
