"""The Temporal UI's front door in `idp dev`: the dev server's UI, set up to read payloads.

`temporal server start-dev --ui-codec-endpoint URL` sets the codec endpoint only: the UI server
it embeds reports `Codec.IncludeCredentials: false` and has no option for credentials or for
the codec error's message and link, so the browser would not send the codec session cookie and
an operator had to find "include cross-origin credentials" in the UI's codec dialog.

`idp dev` therefore runs the CLI's UI on an internal port and serves the printed UI address
with this proxy (a child process, supervised like the worker and the API). It passes every
request and response through unchanged, streamed in both directions, except the JSON the UI
reads its configuration from (`GET /api/v1/settings`), whose `Codec` it sets: the platform's
codec endpoint, credentials included, and a message and link to the codec sign-in page for
when decoding fails. A cluster's own UI server takes the same values from its configuration
(docs/operations.md, "Reading payloads in the Temporal UI").

It also answers one address of its own, `/idp/failed-last-hour`: a redirect to the UI's list
of what failed in the last hour. Neither the UI's links nor the server's query language take a
relative time (the UI's own "Last 1h" button writes an absolute one), so a link printed once
at start-up computes it when it is opened.

Run by `idp dev` as `python -m workers.temporal_ui --listen 127.0.0.1:8233 --upstream ...`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, MutableMapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import httpx
import uvicorn

SETTINGS_PATH = "/api/v1/settings"
FAILED_LAST_HOUR_PATH = "/idp/failed-last-hour"
# Platform failures (the execution Failed) and the user's work that failed (IdpStatus).
FAILED_QUERY = '(ExecutionStatus="Failed" OR IdpStatus="failed")'
# Headers that describe one connection, not the message (RFC 9110, 7.6.1).
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]


@dataclass(frozen=True)
class CodecConfig:
    """What the UI is told about the codec (the `Codec` object of its settings)."""

    endpoint: str
    sign_in: str

    @property
    def error_message(self) -> str:
        # The UI shows this above each payload it could not decode, followed by the link.
        return (
            "Payloads are encrypted and this browser has no codec session (or it expired). "
            "Sign in to the platform at this link, then reload this page:"
        )

    def settings(self) -> dict[str, Any]:
        return {
            "Endpoint": self.endpoint,
            "PassAccessToken": False,
            "IncludeCredentials": True,
            "DefaultErrorMessage": self.error_message,
            "DefaultErrorLink": self.sign_in,
        }


def rewrite_settings(body: bytes, codec: CodecConfig) -> bytes:
    """The UI server's settings JSON with the platform's codec; anything else as it was."""
    settings = json.loads(body)
    if not isinstance(settings, dict):
        raise ValueError("the UI settings are not a JSON object")
    current = settings.get("Codec")
    settings["Codec"] = {**(current if isinstance(current, dict) else {}), **codec.settings()}
    return json.dumps(settings).encode()


def failed_since(namespace: str, since: datetime) -> str:
    """The UI's path (with query) listing what failed in `namespace` after `since`."""
    stamp = since.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    query = f'{FAILED_QUERY} AND CloseTime > "{stamp}"'
    return f"/namespaces/{quote(namespace, safe='')}/workflows?query={quote(query, safe='')}"


def _pass_through(headers: Iterable[tuple[bytes, bytes]], drop: Iterable[bytes] = ()) -> Headers:
    """Headers without the hop-by-hop ones (and those the Connection header names)."""
    raw = [(name.lower(), value) for name, value in headers]
    named = {
        token.strip().lower()
        for name, value in raw
        if name == b"connection"
        for token in value.split(b",")
    }
    skip = HOP_BY_HOP | named | set(drop)
    return [(name, value) for name, value in raw if name not in skip]


class UiFront:
    """An ASGI app: the proxy in front of the Temporal UI server at `upstream`."""

    def __init__(self, upstream: str, codec: CodecConfig, namespace: str) -> None:
        self.upstream = httpx.URL(upstream)
        self.codec = codec
        self.namespace = namespace
        self._client: httpx.AsyncClient | None = None

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            # No read/write limit of its own: the UI server has its timeouts.
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(None, connect=5.0), follow_redirects=False
            )
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            await self._http(scope, receive, send)
        # Nothing else: the UI server speaks plain HTTP (uvicorn runs with ws="none").

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] == "GET" and scope["path"] == FAILED_LAST_HOUR_PATH:
            since = datetime.now(UTC) - timedelta(hours=1)
            await _redirect(send, failed_since(self.namespace, since))
            return
        settings = scope["method"] == "GET" and scope["path"] == SETTINGS_PATH
        raw_path = scope.get("raw_path") or scope["path"].encode()
        if scope["query_string"]:
            raw_path += b"?" + scope["query_string"]
        # The browser's Host is kept: the UI server sees the address the browser used. The
        # settings are asked for uncompressed, to be rewritten.
        headers = _pass_through(scope["headers"], drop=[b"accept-encoding"] if settings else [])
        has_body = any(
            name.lower() in (b"content-length", b"transfer-encoding")
            for name, _ in scope["headers"]
        )
        request = httpx.Request(
            scope["method"],
            self.upstream.copy_with(raw_path=raw_path),
            headers=headers,
            content=_body(receive) if has_body else None,
        )
        try:
            response = await self.client.send(request, stream=True)
        except httpx.HTTPError as exc:
            await _plain(send, 502, f"the Temporal UI server is not answering: {exc!r}\n")
            return
        try:
            if settings and response.status_code == 200:
                await self._send_settings(response, send)
            else:
                await send(
                    {
                        "type": "http.response.start",
                        "status": response.status_code,
                        "headers": _pass_through(response.headers.raw),
                    }
                )
                async for chunk in response.aiter_raw():
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            await response.aclose()

    async def _send_settings(self, response: httpx.Response, send: Send) -> None:
        body = await response.aread()
        with contextlib.suppress(ValueError):  # not a JSON object: passed on as it is
            body = rewrite_settings(body, self.codec)
        headers = _pass_through(response.headers.raw, drop=[b"content-length", b"content-encoding"])
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body, "more_body": False})


async def _body(receive: Receive) -> AsyncIterator[bytes]:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        if chunk := message.get("body", b""):
            yield chunk
        if not message.get("more_body", False):
            return


async def _redirect(send: Send, location: str) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 303,
            "headers": [
                (b"location", location.encode()),
                (b"cache-control", b"no-store"),  # it is "the last hour" when opened
                (b"content-length", b"0"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _plain(send: Send, status: int, text: str) -> None:
    body = text.encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})


def server(host: str, port: int, app: UiFront) -> uvicorn.Server:
    return uvicorn.Server(
        uvicorn.Config(
            app,
            host=host,
            port=port,
            ws="none",
            lifespan="on",
            log_level="warning",
            access_log=False,
            server_header=False,  # the UI server's own headers pass through
            date_header=False,
            timeout_graceful_shutdown=5,  # then open responses are cut: the stack is stopping
        )
    )


def _address(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"{value!r} is not HOST:PORT")
    return host, int(port)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m workers.temporal_ui", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--listen", type=_address, required=True, help="HOST:PORT to serve")
    parser.add_argument("--upstream", required=True, help="the UI server, http://HOST:PORT")
    parser.add_argument("--codec-endpoint", required=True, help="the API's codec URL")
    parser.add_argument("--sign-in", required=True, help="the codec sign-in page's URL")
    parser.add_argument("--namespace", required=True, help="the namespace of the links")
    args = parser.parse_args(argv)
    host, port = args.listen
    app = UiFront(args.upstream, CodecConfig(args.codec_endpoint, args.sign_in), args.namespace)
    server(host, port, app).run()


if __name__ == "__main__":
    main()
