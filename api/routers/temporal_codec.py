"""The codec endpoints the Temporal UI and CLI call to show encrypted payloads to an operator.

Decoding needs `workflows:decode` (admins). The wire format is the Temporal codec server
protocol: `{"payloads": [Payload as protobuf JSON]}` in and out.

Two ways in:
- the Temporal CLI (or any client) sends `Authorization: Bearer <access token or API key>`;
- the Temporal UI, from the browser, cannot send our tokens (it passes only its own login's
  token, and only to https endpoints). Instead the operator signs in once at
  `/api/temporal/codec/sign-in`, which sets a codec session cookie (HttpOnly, SameSite=Strict,
  scoped to this path), and the UI server's codec settings include credentials, so the browser
  sends it (`idp dev` sets them through workers/temporal_ui.py; a cluster's UI server through
  its configuration). The cookie is accepted by these endpoints only; permissions are re-read
  on every request, so revoking the role or disabling the user ends access at once.

The sign-in page is also where the UI's codec error links to: it shows this browser's session
state and says why decoding failed.
"""

from __future__ import annotations

import html
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response, status
from fastapi.responses import HTMLResponse
from google.protobuf.json_format import MessageToDict, ParseDict, ParseError
from pydantic import BaseModel
from temporalio.api.common.v1 import Payload, Payloads

from api.auth import CODEC_SESSION_COOKIE, codec_principal, require
from api.deps import DbSession, State
from core.audit import AuditService
from core.errors import BadRequest, Forbidden, Unauthorized
from core.identity.users import UserService
from core.security.authorization import Principal
from core.security.encryption import DecryptionError, installed_keyring
from core.security.tokens import CODEC_SESSION, decode_access_token, issue_access_token
from core.settings import Settings
from core.temporal.client import plaintext_allowed
from core.temporal.codec import EncryptionCodec

PREFIX = "/api/temporal/codec"
router = APIRouter(prefix=PREFIX, tags=["temporal"])
decoder = require("workflows:decode", authenticate_with=codec_principal)
_PAGE = Path(__file__).resolve().parent.parent / "pages" / "codec_sign_in.html"
_PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'unsafe-inline'; "
        "frame-ancestors 'none'"
    ),
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


class PayloadsBody(BaseModel):
    payloads: list[dict[str, Any]]


class CodecSessionOut(BaseModel):
    email: str
    expires_at: datetime


def _codec(settings: Settings) -> EncryptionCodec:
    # The ring create_app installed at start-up: no key derivation per request. Production
    # refuses unencrypted payloads here as the workers do.
    return EncryptionCodec(installed_keyring(), allow_plaintext=plaintext_allowed(settings))


def _parse(body: PayloadsBody) -> list[Payload]:
    try:
        return list(ParseDict({"payloads": body.payloads}, Payloads()).payloads)
    except ParseError as exc:
        raise BadRequest(f"payloads are not Temporal Payload JSON: {exc}") from None


def _render(payloads: list[Payload]) -> PayloadsBody:
    return PayloadsBody(payloads=[MessageToDict(p) for p in payloads])


@router.post("/decode", response_model=PayloadsBody, summary="Decrypt payloads for the Temporal UI")
async def decode(body: PayloadsBody, state: State, _: Principal = decoder) -> PayloadsBody:
    try:
        return _render(await _codec(state.settings).decode_strict(_parse(body)))
    except DecryptionError as exc:
        raise BadRequest(exc.message, details=exc.details, code=exc.code) from None


@router.post("/encode", response_model=PayloadsBody, summary="Encrypt payloads (Temporal UI)")
async def encode(body: PayloadsBody, state: State, _: Principal = decoder) -> PayloadsBody:
    return _render(await _codec(state.settings).encode(_parse(body)))


@cache
def _sign_in_page() -> str:
    return _PAGE.read_text(encoding="utf-8")


def temporal_ui_url(settings: Settings) -> str | None:
    """The UI `idp dev` serves for its dev server; None with an external cluster, whose UI
    address the platform does not know."""
    if settings.temporal_address:
        return None
    return f"http://127.0.0.1:{settings.temporal_ui_port}"


def render_sign_in_page(settings: Settings) -> str:
    url = temporal_ui_url(settings)
    ui = (
        f'the UI at <a href="{html.escape(url)}">{html.escape(url)}</a>'
        if url
        else "the Temporal UI (its server's codec settings point here, with credentials)"
    )
    return _sign_in_page().replace("__TEMPORAL_UI__", ui)


@router.get(
    "/sign-in",
    response_class=HTMLResponse,
    summary="A browser page that starts a codec session for the Temporal UI",
)
async def sign_in_page(state: State) -> HTMLResponse:
    return HTMLResponse(render_sign_in_page(state.settings), headers=_PAGE_HEADERS)


@router.get(
    "/session",
    response_model=CodecSessionOut,
    summary="This browser's codec session: who, and until when (401 without one)",
)
async def session_state(
    request: Request, state: State, session: DbSession, _: Principal = decoder
) -> CodecSessionOut:
    # `decoder` answered 401 (no or expired session) or 403 (no more `workflows:decode`).
    cookie = request.cookies.get(CODEC_SESSION_COOKIE)
    by_token = "authorization" in request.headers or "x-api-key" in request.headers
    if cookie is None or by_token:  # a token authenticated the request, not the session
        raise Unauthorized("no codec session in this browser", code="no_codec_session")
    assert state.settings.jwt_secret is not None
    claims = decode_access_token(
        state.settings.jwt_secret.get_secret_value(), cookie, CODEC_SESSION
    )
    user = await UserService(session).get(claims.user_id)
    return CodecSessionOut(email=user.email, expires_at=claims.expires_at)


@router.post(
    "/session",
    response_model=CodecSessionOut,
    summary="Start a codec session: sets the cookie the Temporal UI sends to the codec endpoints",
)
async def start_session(
    request: Request,
    response: Response,
    state: State,
    session: DbSession,
    principal: Principal = require("workflows:decode"),
) -> CodecSessionOut:
    if principal.kind != "user":
        # A cookie carries the user's own grants, which may exceed the key's permissions.
        raise Forbidden(
            "a codec session is for a person: sign in with a password or SSO access token, "
            "not an API key",
            code="user_token_required",
        )
    settings = state.settings
    assert settings.jwt_secret is not None
    ttl = settings.codec_session_expires_in
    token, expires_at = issue_access_token(
        settings.jwt_secret.get_secret_value(), principal.user_id, ttl, CODEC_SESSION
    )
    response.set_cookie(
        CODEC_SESSION_COOKIE,
        token,
        max_age=int(ttl.total_seconds()),
        path=PREFIX,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https" or settings.env == "production",
    )
    await AuditService(session).record(
        "auth.codec_session.start", "user", principal.user_id, after={"expires_at": expires_at}
    )
    user = await UserService(session).get(principal.user_id)
    return CodecSessionOut(email=user.email, expires_at=expires_at)


@router.delete(
    "/session",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="End this browser's codec session",
)
async def end_session(
    session: DbSession, principal: Annotated[Principal, Depends(codec_principal)]
) -> Response:
    await AuditService(session).record("auth.codec_session.end", "user", principal.user_id)
    response = Response(status_code=status.HTTP_204_NO_CONTENT)
    response.delete_cookie(CODEC_SESSION_COOKIE, path=PREFIX, httponly=True, samesite="strict")
    return response
