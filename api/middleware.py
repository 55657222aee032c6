"""Per-request context (request id, client address) and header-based API versioning.

A plain ASGI middleware (no per-request Starlette objects) keeps the overhead low.
"""

from __future__ import annotations

import re
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import CURRENT_API_VERSION, error_response
from core import context

REQUEST_ID_HEADER = "x-request-id"
VERSION_HEADER = "x-api-version"
CURRENT_VERSION = CURRENT_API_VERSION
SUPPORTED_VERSIONS = frozenset({CURRENT_API_VERSION})
_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = _header(scope, b"x-request-id")
        request_id = incoming if incoming and _SAFE_REQUEST_ID.match(incoming) else uuid.uuid4().hex
        client = scope.get("client")
        ctx = context.RequestContext(
            request_id=request_id,
            ip=client[0] if client else None,
            user_agent=_header(scope, b"user-agent"),
        )
        scope.setdefault("state", {})["request_id"] = request_id
        extra = [
            (b"x-request-id", request_id.encode()),
            (b"x-api-version", CURRENT_VERSION.encode()),
        ]

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        token = context.set_current(ctx)
        try:
            version = _header(scope, b"x-api-version")
            if version is not None and version.strip() not in SUPPORTED_VERSIONS:
                response = error_response(
                    400,
                    "unsupported_api_version",
                    f"API version {version!r} is not supported",
                    {"supported": sorted(SUPPORTED_VERSIONS), "current": CURRENT_VERSION},
                    request_id,
                )
                await response(scope, receive, send_with_headers)
                return
            await self.app(scope, receive, send_with_headers)
        finally:
            context.reset(token)
