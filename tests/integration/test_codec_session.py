"""The Temporal UI's way in: a codec session cookie, sent by the browser with "include
cross-origin credentials", accepted by the codec endpoints only and re-authorised per request."""

from __future__ import annotations

import base64
from datetime import timedelta

import httpx
from sqlalchemy import delete, select, update

from core.models.audit import AuditLog
from core.models.identity import User, UserRole
from core.security.tokens import CODEC_SESSION, issue_access_token
from tests.integration.identity_helpers import JWT_SECRET, Api, assert_error
from tests.integration.test_codec_api import encrypted_payload

SESSION = "/api/temporal/codec/session"
DECODE = "/api/temporal/codec/decode"
COOKIE = "idp_codec_session"


def ui_origin(api: Api) -> str:
    return f"http://127.0.0.1:{api.settings.temporal_ui_port}"


async def start_session(api: Api, headers: dict[str, str]) -> httpx.Response:
    response = await api.client.post(SESSION, headers=headers)
    api.client.cookies.clear()  # each test sends the cookie it means to, explicitly
    return response


def session_cookie(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    return str(response.cookies[COOKIE])


async def ui_decode(api: Api, cookie: str, payload: dict[str, object]) -> httpx.Response:
    """What the Temporal UI's fetch sends: its origin, JSON, the namespace, and the cookie."""
    return await api.client.post(
        DECODE,
        json={"payloads": [payload]},
        headers={
            "Origin": ui_origin(api),
            "X-Namespace": "default",
            "Cookie": f"{COOKIE}={cookie}",
        },
    )


async def test_a_codec_session_lets_the_temporal_ui_decode(api: Api) -> None:
    user_id, admin = await api.token("admin")
    started = await start_session(api, admin)
    cookie = session_cookie(started)
    assert started.json()["email"].endswith("@example.com")
    set_cookie = started.headers["set-cookie"].lower()
    for attribute in ("httponly", "samesite=strict", "path=/api/temporal/codec", "max-age=28800"):
        assert attribute in set_cookie
    assert "secure" not in set_cookie  # plain http in tests; https or production sets it

    # The browser's preflight for a credentialed, cross-origin JSON request.
    preflight = await api.client.options(
        DECODE,
        headers={
            "Origin": ui_origin(api),
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type,x-namespace",
        },
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == ui_origin(api)
    assert preflight.headers["access-control-allow-credentials"] == "true"

    payload = await encrypted_payload(api, {"db_password": "s3cr3t-by-cookie"})
    decoded = await ui_decode(api, cookie, payload)
    assert decoded.status_code == 200, decoded.text
    assert b"s3cr3t-by-cookie" in base64.b64decode(decoded.json()["payloads"][0]["data"])
    assert decoded.headers["access-control-allow-origin"] == ui_origin(api)
    assert decoded.headers["access-control-allow-credentials"] == "true"

    actions = [
        e.action
        for e in await api.fetch(select(AuditLog).where(AuditLog.resource_id == str(user_id)))
    ]
    assert "auth.codec_session.start" in actions


async def test_the_session_follows_the_users_current_grants(api: Api) -> None:
    user_id, admin = await api.token("admin")
    cookie = session_cookie(await start_session(api, admin))
    payload = await encrypted_payload(api, "anything")
    assert (await ui_decode(api, cookie, payload)).status_code == 200

    await api.run_sql(delete(UserRole).where(UserRole.user_id == user_id))
    body = assert_error(await ui_decode(api, cookie, payload), 403, "forbidden")
    assert body["details"] == {"permission": "workflows:decode"}

    await api.run_sql(update(User).where(User.id == user_id).values(status="disabled"))
    assert_error(await ui_decode(api, cookie, payload), 401, "account_disabled")


async def test_the_cookie_opens_the_codec_endpoints_only(api: Api) -> None:
    _, admin = await api.token("admin")
    cookie = session_cookie(await start_session(api, admin))
    # Neither as a cookie nor as a bearer token does it authenticate anywhere else.
    me = await api.client.get("/auth/me", headers={"Cookie": f"{COOKIE}={cookie}"})
    assert_error(me, 401)
    assert_error(
        await api.client.get("/auth/me", headers={"Authorization": f"Bearer {cookie}"}), 401
    )
    # And an access token is not a codec session.
    access = admin["Authorization"].removeprefix("Bearer ")
    payload = await encrypted_payload(api, "x")
    assert_error(await ui_decode(api, access, payload), 401, "invalid_token")


async def test_bad_sessions_and_who_may_start_one(api: Api) -> None:
    payload = await encrypted_payload(api, "x")
    user_id, admin = await api.token("admin")
    expired, _ = issue_access_token(JWT_SECRET, user_id, timedelta(seconds=-5), CODEC_SESSION)
    assert_error(await ui_decode(api, expired, payload), 401, "token_expired")
    forged, _ = issue_access_token("forged-" + "f" * 40, user_id, timedelta(hours=1), CODEC_SESSION)
    assert_error(await ui_decode(api, forged, payload), 401, "invalid_token")
    no_cookie = await api.client.post(DECODE, json={"payloads": [payload]})
    assert "/api/temporal/codec/sign-in" in assert_error(no_cookie, 401)["message"]

    _, viewer = await api.token("viewer")
    denied = assert_error(await start_session(api, viewer), 403, "forbidden")
    assert denied["details"] == {"permission": "workflows:decode"}
    assert_error(await start_session(api, {}), 401)

    key = await api.client.post(
        "/api-keys", json={"name": "ops", "permissions": ["workflows:decode"]}, headers=admin
    )
    assert key.status_code == 201, key.text
    by_key = await start_session(api, {"X-API-Key": key.json()["key"]})
    assert_error(by_key, 403, "user_token_required")
    assert COOKIE not in by_key.cookies


async def test_ending_the_session_clears_the_cookie(api: Api) -> None:
    user_id, admin = await api.token("admin")
    cookie = session_cookie(await start_session(api, admin))
    ended = await api.client.delete(SESSION, headers={"Cookie": f"{COOKIE}={cookie}"})
    assert ended.status_code == 204
    cleared = ended.headers["set-cookie"].lower()
    assert cleared.startswith(f"{COOKIE}=") and "max-age=0" in cleared
    assert "path=/api/temporal/codec" in cleared
    actions = [
        e.action
        for e in await api.fetch(select(AuditLog).where(AuditLog.resource_id == str(user_id)))
    ]
    assert "auth.codec_session.end" in actions
    assert_error(await api.client.delete(SESSION), 401)


async def test_the_sign_in_page(api: Api) -> None:
    page = await api.client.get("/api/temporal/codec/sign-in")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    for element in ('id="email"', 'id="password"', 'id="totp"', "/auth/login", SESSION):
        assert element in page.text
