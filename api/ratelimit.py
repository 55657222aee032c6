"""Rate limiting as a plain ASGI middleware, run inside RequestContextMiddleware.

Each request is counted in the bucket of its route group (`core.ratelimit.ROUTE_GROUPS`) and
its caller, identified without a database query:

- in the `auth` group (logins, refresh, SSO, turning MFA off) by the client IP only, whatever
  credential the request carries: guessing passwords or codes is throttled per address;
- elsewhere, an API key (`X-API-Key`, or `Authorization: Bearer idpk_...`) by the hash of the
  key, when that key has authenticated in this process before (`RateLimiter.known_keys`); an
  unknown or invalid key counts against the client IP, so random keys get no fresh buckets;
- an access token by its verified subject (the user id), so all of a user's tokens share one
  bucket; an invalid or expired token counts against the client IP (authentication rejects it);
- anything else by the client IP.

The client IP is the ASGI `client` address: uvicorn sets it from `X-Forwarded-For` only for
the proxies its `FORWARDED_ALLOW_IPS` trusts (127.0.0.1 by default). IPv6 addresses are
counted per /64 network, the block one subscriber usually holds.

Allowed responses carry `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset`; a request
over the limit is answered `429 rate_limited` with `Retry-After` and never reaches the route.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Container
from typing import Any

from pydantic import SecretStr
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import error_response
from core.errors import Unauthorized
from core.ratelimit import AUTH_GROUP, KnownKeys, RateLimiter, group_for_path
from core.security.tokens import API_KEY_PREFIX, decode_access_token, looks_like_jwt, token_hash


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


def client_ip(scope: Scope) -> str:
    """`ip:<address>`, or `ip:<network>/64` for IPv6 (one subscriber's block)."""
    client = scope.get("client")
    if not client:
        return "ip:unknown"
    try:
        address = ipaddress.ip_address(client[0])
    except ValueError:
        return f"ip:{client[0]}"
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return f"ip:{address.ipv4_mapped}"
        return f"ip:{ipaddress.IPv6Network((address, 64), strict=False)}"
    return f"ip:{address}"


def caller_identity(
    scope: Scope, jwt_secret: str | None, known_keys: Container[str] = frozenset()
) -> str:
    """`key:<sha256>`, `user:<id>` or `ip:<address>`; the credential is the one that
    authentication will use (Authorization first, then X-API-Key). A key gets its own bucket
    only when its hash is in `known_keys` (it has authenticated here before)."""

    def key_or_ip(key: str) -> str:
        digest = token_hash(key)
        return "key:" + digest if digest in known_keys else client_ip(scope)

    authorization = _header(scope, b"authorization")
    if authorization is not None:
        scheme, _, value = authorization.partition(" ")
        value = value.strip()
        if scheme.lower() == "bearer" and value:
            if value.startswith(API_KEY_PREFIX):
                return key_or_ip(value)
            if jwt_secret and looks_like_jwt(value):
                try:
                    return f"user:{decode_access_token(jwt_secret, value).user_id}"
                except Unauthorized:
                    pass
    else:
        key = _header(scope, b"x-api-key")
        if key and key.startswith(API_KEY_PREFIX):
            return key_or_ip(key)
    return client_ip(scope)


def known_keys(app: Any) -> KnownKeys | None:
    """The app's set of API keys that get buckets of their own (None: no limiter)."""
    limiter = getattr(app.state, "rate_limiter", None)
    return limiter.known_keys if isinstance(limiter, RateLimiter) else None


class RateLimitMiddleware:
    def __init__(
        self, app: ASGIApp, *, limiter: RateLimiter, jwt_secret: SecretStr | str | None
    ) -> None:
        self.app = app
        self.limiter = limiter
        self.jwt_secret = (
            jwt_secret.get_secret_value() if isinstance(jwt_secret, SecretStr) else jwt_secret
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.limiter.enabled:
            await self.app(scope, receive, send)
            return
        group = group_for_path(scope["path"])
        if group is None:
            await self.app(scope, receive, send)
            return
        identity = (
            client_ip(scope)
            if group == AUTH_GROUP
            else caller_identity(scope, self.jwt_secret, self.limiter.known_keys)
        )
        decision = await self.limiter.hit(group, identity)
        if decision is None:  # the backend failed: fail open (the limiter logged it)
            await self.app(scope, receive, send)
            return
        headers = decision.headers()
        if not decision.allowed:
            retry_after = decision.retry_after_seconds
            spec = self.limiter.spec_for(group)
            response = error_response(
                429,
                "rate_limited",
                f"too many requests; retry in {retry_after} second(s)",
                {
                    "group": group,
                    "limit": spec.burst,
                    "rate": spec.rate,
                    "retry_after": retry_after,
                },
                headers={**headers, "Retry-After": str(retry_after)},
            )
            await response(scope, receive, send)
            return
        extra = [(name.lower().encode(), value.encode()) for name, value in headers.items()]

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, send_with_headers)
