"""Slack's signed interactive requests: the signature and its five-minute window, and reading
a button press from the payload."""

from __future__ import annotations

import json
import time
from urllib.parse import urlencode

import pytest

from core.errors import BadRequest, Unauthorized
from core.slack.interactions import parse, sign, verify

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"


def payload(**extra: object) -> dict[str, object]:
    return {
        "type": "block_actions",
        "user": {"id": "U123", "username": "ana", "team_id": "T9"},
        "team": {"id": "T9"},
        "channel": {"id": "C42"},
        "message": {"ts": "1700000000.000100"},
        "container": {"type": "message", "message_ts": "1700000000.000100", "channel_id": "C42"},
        "response_url": "https://hooks.slack.com/actions/T9/1/abc",
        "trigger_id": "1.2.3",
        "actions": [{"action_id": "promotion.approve", "value": "promotion:abc", "type": "button"}],
        **extra,
    }


def body_of(data: dict[str, object]) -> bytes:
    return urlencode({"payload": json.dumps(data)}).encode()


def signed(body: bytes, at: int, secret: str = SECRET) -> dict[str, str]:
    return {"X-Slack-Request-Timestamp": str(at), "X-Slack-Signature": sign(body, at, secret)}


def test_a_signed_fresh_request_verifies_and_parses() -> None:
    body = body_of(payload())
    now = int(time.time())
    verify(signed(body, now), body, SECRET, now=now + 10)
    got = parse(body)
    assert got.slack_user_id == "U123" and got.slack_user_name == "ana"
    assert got.action_id == "promotion.approve" and got.value == "promotion:abc"
    assert (got.channel_id, got.message_ts) == ("C42", "1700000000.000100")
    assert got.response_url == "https://hooks.slack.com/actions/T9/1/abc"


def test_the_documented_example_signature() -> None:
    # Slack's documentation example: this secret, timestamp and body give this signature.
    body = (
        b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id="
        b"G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook"
        b"-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F3977"
        b"00885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d"
        b"10d2c447fce8b6703c"
    )
    expected = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"
    assert sign(body, 1531420618, "8f742231b10e8888abcd99yyyzzz85a5") == expected


@pytest.mark.parametrize(
    ("headers", "why"),
    [
        ({}, "no X-Slack-Signature"),
        ({"X-Slack-Request-Timestamp": "soon", "X-Slack-Signature": "v0=00"}, "Unix time"),
    ],
)
def test_missing_or_malformed_headers_are_refused(headers: dict[str, str], why: str) -> None:
    with pytest.raises(Unauthorized, match=why) as caught:
        verify(headers, b"payload=%7B%7D", SECRET)
    assert caught.value.code == "invalid_signature"


def test_forged_altered_and_replayed_requests_are_refused() -> None:
    body = body_of(payload())
    now = int(time.time())
    with pytest.raises(Unauthorized, match="does not match"):
        verify(signed(body, now, "another-secret"), body, SECRET, now=now)
    with pytest.raises(Unauthorized, match="does not match"):
        verify(signed(body, now), body.replace(b"U123", b"U999"), SECRET, now=now)
    with pytest.raises(Unauthorized, match="outside the 300s window"):
        verify(signed(body, now - 301), body, SECRET, now=now)
    with pytest.raises(Unauthorized, match="outside the 300s window"):
        verify(signed(body, now + 301), body, SECRET, now=now)
    with pytest.raises(Unauthorized, match="no Slack signing secret"):
        verify(signed(body, now), body, "", now=now)


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"text=hi", "no payload"),
        (urlencode({"payload": "{not json"}).encode(), "not JSON"),
        (body_of(payload(type="view_submission")), "'view_submission' is not handled"),
        (body_of(payload(actions=[])), "no actions"),
        (body_of(payload(user={})), "lacks user.id"),
    ],
)
def test_payloads_that_cannot_be_read_are_bad_requests(body: bytes, why: str) -> None:
    with pytest.raises(BadRequest, match=why):
        parse(body)
