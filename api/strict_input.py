"""Refuse text no database column can hold, before a route sees it: NUL characters and lone
UTF-16 surrogates (JSON may spell both, as `\\u0000` and `\\ud800`) in JSON bodies, and NUL in
the path or the query string. PostgreSQL refuses NUL in text and neither backend can encode a
lone surrogate, so without this check such a value reaches the database and answers 500; with
it, the caller gets a 422 naming the field.

The Git host webhooks and Slack interactions are left alone: they check a signature over the
raw bytes and cap the body's size themselves, before reading it whole.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.bodies import PUBLIC_BODY_LIMIT
from api.errors import error_response

_RAW_BODIES = ("/webhooks/", "/integrations/")


def _unstorable(text: str) -> str | None:
    """Why `text` cannot be stored, or None."""
    if "\x00" in text:
        return "NUL characters are not allowed"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "lone UTF-16 surrogates are not allowed"
    return None


def _problems(value: Any, where: tuple[str, ...]) -> Iterator[tuple[str, str]]:
    """(field, reason) for each string, key included, of a decoded JSON value that is refused."""
    if isinstance(value, str):
        reason = _unstorable(value)
        if reason:
            yield ".".join(where), reason
    elif isinstance(value, dict):
        for key, item in value.items():
            reason = _unstorable(key)
            if reason:
                yield ".".join((*where, key.encode("utf-8", "backslashreplace").decode())), reason
            else:
                yield from _problems(item, (*where, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _problems(item, (*where, str(index)))


def _checked_json(scope: Scope) -> bool:
    """Whether the body is JSON to check: not on the raw-body routes, and not one longer than
    the public routes' cap (such a body is not held in memory twice; the route refuses it or
    reads it as it would anyway)."""
    if scope["path"].startswith(_RAW_BODIES):
        return False
    json_media = False
    for name, value in scope.get("headers", ()):
        if name == b"content-type":
            media = value.split(b";", 1)[0].strip().lower()
            json_media = media == b"application/json" or media.endswith(b"+json")
        elif name == b"content-length" and value.isdigit() and int(value) > PUBLIC_BODY_LIMIT:
            return False
    return json_media


class StrictInputMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        problems = list(self._url_problems(scope))
        if not problems and _checked_json(scope):
            body, receive = await self._buffer(receive)
            with contextlib.suppress(ValueError):  # not JSON: the route's validation answers it
                problems = list(_problems(json.loads(body), ("body",))) if body else []
        if not problems:
            await self.app(scope, receive, send)
            return
        details = [
            {"field": field, "message": reason, "type": "value_error"} for field, reason in problems
        ]
        first = details[0]
        response = error_response(
            422, "validation_error", f"{first['field']}: {first['message']}", details
        )
        await response(scope, receive, send)

    @staticmethod
    def _url_problems(scope: Scope) -> Iterator[tuple[str, str]]:
        if "\x00" in scope["path"]:
            yield "path", "NUL characters are not allowed"
        query = scope.get("query_string", b"").decode("latin-1")
        if "%00" in query or "\x00" in query:
            for name, value in parse_qsl(query, keep_blank_values=True):
                if "\x00" in name or "\x00" in value:
                    yield f"query.{name.replace(chr(0), '')}", "NUL characters are not allowed"

    @staticmethod
    async def _buffer(receive: Receive) -> tuple[bytes, Receive]:
        """The whole body, and a `receive` that hands it on to the app as one message."""
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return b"", receive  # the client left: let the app see it
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return body, replay
