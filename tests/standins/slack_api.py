"""A stand-in for Slack's Web API (chat.postMessage, chat.update, users.info, auth.test)
speaking its wire format, and for interaction `response_url`s (what a button press answers its
user with). A chat.postMessage to a user id of `users` is a direct message (channel `D...`).

    with SlackApiStandin(tokens={"xoxb-test"}, channels={"C123": "general"}) as slack:
        await post_message(token="xoxb-test", channel="C123", ..., base_url=slack.base_url)
        slack.requests[-1].blocks

Like Slack, it answers refusals with HTTP 200 and {"ok": false, "error": "<code>"}; 429 carries
a Retry-After header. Accepts JSON bodies (what slack_sdk's WebClient sends for chat.*) and
form-encoded ones, with the token in `Authorization: Bearer` or a `token` field.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from tests.standins import BackgroundHTTPServer, StandinRequestHandler

DEFAULT_TOKEN = "xoxb-standin-token"
DEFAULT_CHANNELS: Mapping[str, str] = {"C123": "general"}
DEFAULT_TEAM = "T0TEAM"  # the workspace every token belongs to unless `teams` says otherwise
MAX_TEXT = 40_000


@dataclass(frozen=True)
class SlackRequest:
    """One request the stand-in received, and what it answered."""

    method: str  # the API method, e.g. "chat.postMessage"
    token: str | None
    channel: str | None
    text: str | None
    blocks: Any  # as sent: normally a list of block dicts
    ts: str | None  # chat.update: the message to change; chat.postMessage: the new message
    content_type: str
    status: int  # HTTP status answered
    error: str | None  # Slack error code answered, None when ok
    time: float = field(default_factory=time.time)

    @property
    def ok(self) -> bool:
        return self.status == 200 and self.error is None


@dataclass
class SlackMessage:
    channel: str
    ts: str
    text: str | None
    blocks: Any
    edits: int = 0


class _Refused(Exception):
    def __init__(self, code: str, status: int = 200, headers: dict[str, str] | None = None):
        super().__init__(code)
        self.code, self.status, self.headers = code, status, headers or {}


class SlackApiStandin(BackgroundHTTPServer):
    def __init__(
        self,
        *,
        tokens: Iterable[str] = (DEFAULT_TOKEN,),
        channels: Mapping[str, str] = DEFAULT_CHANNELS,
        users: Mapping[str, str] | None = None,
        teams: Mapping[str, str] | None = None,
        port: int | None = None,
    ) -> None:
        super().__init__(_SlackHandler, port=port)
        self.tokens = set(tokens)
        self.users = dict(users or {})  # Slack user id -> email (users.info)
        self.teams = dict(teams or {})  # token -> team id (auth.test); else DEFAULT_TEAM
        self.responses: list[dict[str, Any]] = []  # bodies posted to response URLs
        self.channels = dict(channels)  # channel id -> name
        self._lock = threading.Lock()
        self._requests: list[SlackRequest] = []
        self._messages: dict[tuple[str, str], SlackMessage] = {}
        self._failures: list[tuple[int, dict[str, str], bytes]] = []
        self._next_micros = 1_700_000_000_000_100

    @property
    def base_url(self) -> str:
        """What to give the Slack client as base_url."""
        return f"{self.origin}/api/"

    def response_url(self, name: str = "r") -> str:
        """A `response_url` for an interaction payload; what is posted to it lands in
        `responses`."""
        return f"{self.origin}/response/{name}"

    @property
    def requests(self) -> list[SlackRequest]:
        with self._lock:
            return list(self._requests)

    def calls(self, method: str) -> list[SlackRequest]:
        return [r for r in self.requests if r.method == method]

    @property
    def messages(self) -> dict[tuple[str, str], SlackMessage]:
        """Messages posted so far, by (channel id, ts), as last updated."""
        with self._lock:
            return dict(self._messages)

    def fail_next(self, n: int, status: int = 500) -> None:
        """Answer the next `n` requests with HTTP `status` and a non-JSON body (like a proxy)."""
        with self._lock:
            self._failures += [(status, {}, b"upstream failure")] * n

    def rate_limit_next(self, n: int, retry_after: int = 1) -> None:
        """Answer the next `n` requests like Slack's rate limiter: 429 + Retry-After."""
        body = json.dumps({"ok": False, "error": "ratelimited"}).encode()
        with self._lock:
            self._failures += [(429, {"Retry-After": str(retry_after)}, body)] * n

    # -- request handling (called from the server's threads) -----------------------------------
    def _take_failure(self) -> tuple[int, dict[str, str], bytes] | None:
        with self._lock:
            return self._failures.pop(0) if self._failures else None

    def _record(self, request: SlackRequest) -> None:
        with self._lock:
            self._requests.append(request)

    def _new_ts(self) -> str:
        micros = self._next_micros
        self._next_micros += 100
        return f"{micros // 1_000_000}.{micros % 1_000_000:06d}"

    def _channel_id(self, channel: str | None) -> str:
        if not channel:
            raise _Refused("channel_not_found")
        if channel in self.channels:
            return channel
        if channel in self.users:  # a direct message to a member: their DM channel
            return "D" + channel[1:]
        name = channel.removeprefix("#")
        for channel_id, known in self.channels.items():
            if known == name:
                return channel_id
        raise _Refused("channel_not_found")

    def _handle(self, method: str, token: str | None, args: dict[str, Any]) -> dict[str, Any]:
        if not token:
            raise _Refused("not_authed")
        if token not in self.tokens:
            raise _Refused("invalid_auth")
        text, blocks = args.get("text"), args.get("blocks")
        if isinstance(blocks, str):
            try:
                blocks = json.loads(blocks)
            except ValueError:
                raise _Refused("invalid_blocks") from None
        if blocks is not None and not (
            isinstance(blocks, list)
            and all(isinstance(b, dict) and isinstance(b.get("type"), str) for b in blocks)
        ):
            raise _Refused("invalid_blocks")
        if not text and not blocks:
            raise _Refused("no_text")
        if text and len(text) > MAX_TEXT:
            raise _Refused("msg_too_long")
        with self._lock:
            channel = self._channel_id(args.get("channel"))
            if method == "chat.postMessage":
                ts = self._new_ts()
                self._messages[(channel, ts)] = SlackMessage(channel, ts, text, blocks)
                args["ts"] = ts
                message = {"type": "message", "text": text, "ts": ts, "bot_id": "B0STANDIN"}
                if blocks is not None:
                    message["blocks"] = blocks
                return {"ok": True, "channel": channel, "ts": ts, "message": message}
            ts = str(args.get("ts") or "")
            stored = self._messages.get((channel, ts))
            if stored is None:
                raise _Refused("message_not_found")
            stored.text, stored.blocks, stored.edits = text, blocks, stored.edits + 1
            message = {"type": "message", "text": text, "ts": ts, "edited": {"ts": ts}}
            if blocks is not None:
                message["blocks"] = blocks
            return {"ok": True, "channel": channel, "ts": ts, "text": text, "message": message}

    def dms(self, user_id: str) -> list[str]:
        """The texts of the direct messages posted to `user_id`, oldest first."""
        return [
            r.text or "" for r in self.calls("chat.postMessage") if r.ok and r.channel == user_id
        ]


class _SlackHandler(StandinRequestHandler):
    METHODS = ("chat.postMessage", "chat.update")

    def do_GET(self) -> None:
        path, _, query = self.path.partition("?")
        if path.removeprefix("/api/") != "users.info":
            self.answer_json(404, {"ok": False, "error": "unknown_method"})
            return
        user_id = (parse_qs(query).get("user") or [""])[0]
        self._users_info(_bearer(self.headers.get("Authorization")), user_id)

    def _users_info(self, token: str | None, user_id: str | None) -> None:
        """users.info: the user's profile with its email, as Slack answers it."""
        standin: SlackApiStandin = self.server.owner
        if token not in standin.tokens:
            self.answer_json(200, {"ok": False, "error": "invalid_auth"})
        elif user_id not in standin.users:
            self.answer_json(200, {"ok": False, "error": "user_not_found"})
        else:
            profile = {"email": standin.users[user_id], "real_name": user_id}
            self.answer_json(200, {"ok": True, "user": {"id": user_id, "profile": profile}})

    def do_POST(self) -> None:
        standin: SlackApiStandin = self.server.owner
        content_type = self.headers.get("Content-Type") or ""
        raw = self.read_body()
        if self.path.startswith("/response/"):
            with standin._lock:
                standin.responses.append(_parse(content_type, raw))
            self.answer_json(200, {"ok": True})
            return
        method = self.path.split("?", 1)[0].removeprefix("/api/")
        args = _parse(content_type, raw)
        token = _bearer(self.headers.get("Authorization")) or _str(args.get("token"))
        if method == "users.info":  # slack_sdk posts it, form-encoded
            self._users_info(token, _str(args.get("user")))
            return
        if method == "auth.test":  # which workspace (team) and bot a token is
            if token not in standin.tokens:
                self.answer_json(200, {"ok": False, "error": "invalid_auth"})
                return
            team = standin.teams.get(token, DEFAULT_TEAM)
            self.answer_json(
                200,
                {
                    "ok": True,
                    "team_id": team,
                    "team": "Standin",
                    "user_id": "U0BOT",
                    "bot_id": "B0",
                },
            )
            return

        def record(status: int, error: str | None) -> None:
            standin._record(
                SlackRequest(
                    method=method,
                    token=token,
                    channel=_str(args.get("channel")),
                    text=_str(args.get("text")),
                    blocks=args.get("blocks"),
                    ts=_str(args.get("ts")),
                    content_type=content_type,
                    status=status,
                    error=error,
                )
            )

        failure = standin._take_failure()
        if failure is not None:
            status, headers, body = failure
            record(status, "ratelimited" if status == 429 else f"http_{status}")
            is_json = body.startswith(b"{")
            kind = "application/json; charset=utf-8" if is_json else "text/plain"
            self.answer(status, body, content_type=kind, headers=headers)
            return
        if method not in self.METHODS:
            record(404, "unknown_method")
            self.answer_json(404, {"ok": False, "error": "unknown_method"})
            return
        try:
            data = standin._handle(method, token, args)
        except _Refused as refused:
            record(refused.status, refused.code)
            self.answer_json(
                refused.status, {"ok": False, "error": refused.code}, headers=refused.headers
            )
            return
        record(200, None)
        self.answer_json(200, data)


def _parse(content_type: str, raw: bytes) -> dict[str, Any]:
    if content_type.startswith("application/json"):
        try:
            data = json.loads(raw or b"{}")
        except ValueError:
            return {}
        return data if isinstance(data, dict) else {}
    form = parse_qs(raw.decode("utf-8", "replace"), keep_blank_values=True)
    return {key: values[-1] for key, values in form.items()}


def _bearer(header: str | None) -> str | None:
    if header and header.lower().startswith("bearer "):
        return header[7:].strip() or None
    return None


def _str(value: Any) -> str | None:
    return None if value is None else str(value)
