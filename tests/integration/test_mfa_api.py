"""TOTP MFA over HTTP: enrolment, login with a code or a recovery code, turning it off."""

from __future__ import annotations

import time
from urllib.parse import parse_qs, urlparse

import pyotp
from sqlalchemy import text

from core.db.engine import create_engine
from tests.integration.identity_helpers import PASSWORD, Api


async def stored_secret(api: Api, email: str) -> str:
    engine = create_engine(api.settings.effective_database_url)
    try:
        async with engine.connect() as conn:
            row = await conn.execute(
                text("SELECT mfa_secret FROM users WHERE email = :e"), {"e": email}
            )
            return str(row.scalar_one())
    finally:
        await engine.dispose()


async def enrol(api: Api, headers: dict[str, str]) -> tuple[pyotp.TOTP, list[str]]:
    setup = await api.client.post("/auth/mfa/setup", headers=headers)
    assert setup.status_code == 200, setup.text
    uri = setup.json()["otpauth_uri"]
    assert uri.startswith("otpauth://totp/")
    totp = pyotp.TOTP(parse_qs(urlparse(uri).query)["secret"][0])
    wrong = await api.client.post("/auth/mfa/verify", json={"code": "000000"}, headers=headers)
    assert wrong.status_code == 422
    enabled = await api.client.post("/auth/mfa/verify", json={"code": totp.now()}, headers=headers)
    assert enabled.status_code == 200, enabled.text
    return totp, enabled.json()["recovery_codes"]


async def test_enrol_then_login_needs_the_second_factor(api: Api) -> None:
    _, email = await api.user()
    headers = {"Authorization": f"Bearer {(await api.login(email))['access_token']}"}
    totp, codes = await enrol(api, headers)
    assert len(codes) == 10 and len(set(codes)) == 10

    secret = await stored_secret(api, email)
    assert secret.startswith("enc:v1:") and totp.secret not in secret  # encrypted at rest

    login = {"email": email, "password": PASSWORD}
    missing = await api.client.post("/auth/login", json=login)
    assert missing.status_code == 401 and missing.json()["error"]["code"] == "mfa_required"
    wrong = await api.client.post("/auth/login", json={**login, "totp_code": "000000"})
    # which factor was wrong is not said (tests/security/test_identity_edges.py)
    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_credentials"
    # the enrolment's code was this step's: the next step's code is accepted, once
    next_code = totp.at(time.time() + totp.interval)
    ok = await api.client.post("/auth/login", json={**login, "totp_code": next_code})
    assert ok.status_code == 200
    replay = await api.client.post("/auth/login", json={**login, "totp_code": next_code})
    assert replay.status_code == 401 and replay.json()["error"]["code"] == "invalid_credentials"

    spent = await api.client.post("/auth/login", json={**login, "totp_code": codes[0].upper()})
    assert spent.status_code == 200  # a recovery code works once...
    again = await api.client.post("/auth/login", json={**login, "totp_code": codes[0]})
    assert again.status_code == 401  # ...and only once

    me = await api.client.get("/auth/me", headers=headers)
    assert me.json()["user"]["mfa_enabled"] is True
    conflict = await api.client.post("/auth/mfa/setup", headers=headers)
    assert conflict.status_code == 409


async def test_turning_mfa_off(api: Api) -> None:
    _, email = await api.user()
    headers = {"Authorization": f"Bearer {(await api.login(email))['access_token']}"}
    totp, _ = await enrol(api, headers)
    bad = await api.client.post("/auth/mfa/disable", json={"code": "123456"}, headers=headers)
    assert bad.status_code == 401
    later = totp.at(time.time() + totp.interval)  # the enrolment spent this step's code
    off = await api.client.post("/auth/mfa/disable", json={"code": later}, headers=headers)
    assert off.status_code == 204
    assert (
        await api.client.post("/auth/login", json={"email": email, "password": PASSWORD})
    ).status_code == 200


async def test_api_keys_cannot_manage_mfa(api: Api) -> None:
    _, headers = await api.token("viewer")
    key = await api.client.post(
        "/api-keys", json={"name": "k", "permissions": ["services:read"]}, headers=headers
    )
    response = await api.client.post("/auth/mfa/setup", headers={"X-API-Key": key.json()["key"]})
    assert response.status_code == 403
