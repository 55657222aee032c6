"""Identity over HTTP on a real database: login, tokens, refresh rotation, lockout, users,
role grants, API keys, audit log; 401/403 in the error shape, changing nothing."""

from __future__ import annotations

import uuid
from datetime import timedelta

import jwt
import pytest
from sqlalchemy import select, update

from core.db.types import utcnow
from core.models.audit import AuditLog
from core.models.identity import ApiKey, RefreshToken, User
from core.security.tokens import issue_access_token
from tests.integration.identity_helpers import JWT_SECRET, PASSWORD, Api
from tests.integration.identity_helpers import assert_error as error


# -- login, tokens, refresh -----------------------------------------------------------
async def test_login_me_and_token_shape(api: Api) -> None:
    user_id, email = await api.user("viewer")
    tokens = await api.login(email.upper())  # emails are case-insensitive
    assert tokens["token_type"] == "bearer" and tokens["expires_in"] == 15 * 60
    assert str(tokens["refresh_token"]).startswith("idpr_")
    me = await api.client.get(
        "/auth/me", headers={"Authorization": f"Bearer {tokens['access_token']}"}
    )
    assert me.status_code == 200
    body = me.json()
    assert body["user"]["id"] == str(user_id) and body["user"]["email"] == email
    assert "password_hash" not in body["user"]
    assert [g["role"] for g in body["roles"]] == ["viewer"]
    assert "services:read" in body["permissions"] and "users:admin" not in body["permissions"]


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({}, "unauthorized"),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, "invalid_token"),
        ({"Authorization": "Bearer not-a-token"}, "invalid_token"),
        ({"Authorization": "Bearer a.b.c"}, "invalid_token"),
        ({"X-API-Key": "idpk_unknown"}, "invalid_api_key"),
    ],
)
async def test_missing_or_bad_credentials_are_401(
    api: Api, headers: dict[str, str], code: str
) -> None:
    response = await api.client.get("/auth/me", headers=headers)
    error(response, 401, code)
    assert response.headers["www-authenticate"] == "Bearer"


async def test_expired_and_forged_tokens(api: Api) -> None:
    user_id, _ = await api.user("admin")
    expired, _ = issue_access_token(JWT_SECRET, user_id, timedelta(seconds=-5))
    error(
        await api.client.get("/auth/me", headers={"Authorization": f"Bearer {expired}"}),
        401,
        "token_expired",
    )
    forged, _ = issue_access_token("another-secret-" + "y" * 32, user_id, timedelta(minutes=5))
    error(
        await api.client.get("/auth/me", headers={"Authorization": f"Bearer {forged}"}),
        401,
        "invalid_token",
    )
    unsigned = jwt.encode(
        {"sub": str(user_id), "iss": "idp", "typ": "access"}, key=None, algorithm="none"
    )
    error(
        await api.client.get("/auth/me", headers={"Authorization": f"Bearer {unsigned}"}),
        401,
        "invalid_token",
    )


async def test_unauthenticated_write_changes_nothing(api: Api) -> None:
    email = f"ghost-{uuid.uuid4().hex[:8]}@example.com"
    response = await api.client.post("/users", json={"email": email, "password": PASSWORD})
    error(response, 401)
    assert await api.fetch(select(User).where(User.email == email)) == []


async def test_refresh_rotates_and_reuse_revokes_the_family(api: Api) -> None:
    _, email = await api.user()
    first = await api.login(email)
    second = (
        await api.client.post("/auth/refresh", json={"refresh_token": first["refresh_token"]})
    ).json()
    assert second["refresh_token"] != first["refresh_token"]
    assert second["access_token"] != first["access_token"]
    # the rotated token presented again: theft assumed, the whole family is revoked
    reuse = await api.client.post("/auth/refresh", json={"refresh_token": first["refresh_token"]})
    error(reuse, 401, "refresh_token_reused")
    error(
        await api.client.post("/auth/refresh", json={"refresh_token": second["refresh_token"]}),
        401,
        "invalid_refresh_token",
    )
    # another login is another family, unaffected
    third = await api.login(email)
    ok = await api.client.post("/auth/refresh", json={"refresh_token": third["refresh_token"]})
    assert ok.status_code == 200


async def test_logout_revokes(api: Api) -> None:
    _, email = await api.user()
    tokens = await api.login(email)
    assert (
        await api.client.post("/auth/logout", json={"refresh_token": tokens["refresh_token"]})
    ).status_code == 204
    error(
        await api.client.post("/auth/refresh", json={"refresh_token": tokens["refresh_token"]}),
        401,
        "invalid_refresh_token",
    )


async def test_expired_refresh_token(api: Api) -> None:
    user_id, email = await api.user()
    tokens = await api.login(email)
    await api.run_sql(
        update(RefreshToken)
        .where(RefreshToken.user_id == user_id)
        .values(expires_at=utcnow() - timedelta(seconds=1)),
    )
    error(
        await api.client.post("/auth/refresh", json={"refresh_token": tokens["refresh_token"]}),
        401,
        "invalid_refresh_token",
    )


async def test_lockout_grows_and_blocks_even_the_right_password(api: Api) -> None:
    _, email = await api.user()
    for _ in range(4):
        error(
            await api.client.post(
                "/auth/login", json={"email": email, "password": "wrong password!"}
            ),
            401,
            "invalid_credentials",
        )
    fifth = await api.client.post(
        "/auth/login", json={"email": email, "password": "wrong password!"}
    )
    error(fifth, 401, "invalid_credentials")
    # locked: even the right password gets the answer an unknown email gets (no Retry-After,
    # which would tell that the account exists)
    locked = await api.client.post("/auth/login", json={"email": email, "password": PASSWORD})
    assert error(locked, 401, "invalid_credentials")["message"] == "invalid email or password"
    assert "retry-after" not in locked.headers
    user = (await api.fetch(select(User).where(User.email == email)))[0]
    assert user.failed_login_count == 5 and user.locked_until is not None
    assert timedelta(seconds=1) < user.locked_until - utcnow() <= timedelta(seconds=30)
    # the lock lifts: the next failure locks for twice as long
    await api.run_sql(update(User).where(User.email == email).values(locked_until=utcnow()))
    error(
        await api.client.post("/auth/login", json={"email": email, "password": "wrong password!"}),
        401,
    )
    again = await api.client.post("/auth/login", json={"email": email, "password": PASSWORD})
    error(again, 401, "invalid_credentials")
    user = (await api.fetch(select(User).where(User.email == email)))[0]
    assert user.failed_login_count == 6 and user.locked_until is not None
    assert timedelta(seconds=31) < user.locked_until - utcnow() <= timedelta(seconds=60)
    # once the lock has passed, the right password works and the count starts again
    await api.run_sql(update(User).where(User.email == email).values(locked_until=utcnow()))
    await api.login(email)
    user = (await api.fetch(select(User).where(User.email == email)))[0]
    assert user.failed_login_count == 0 and user.locked_until is None


async def test_unknown_email_is_the_same_401(api: Api) -> None:
    response = await api.client.post(
        "/auth/login", json={"email": "nobody@example.com", "password": "whatever password"}
    )
    assert error(response, 401, "invalid_credentials")["message"] == "invalid email or password"


async def test_disabled_user_cannot_login_refresh_or_call(api: Api) -> None:
    _, admin = await api.token("admin")
    user_id, email = await api.user("viewer")
    tokens = await api.login(email)
    response = await api.client.patch(
        f"/users/{user_id}", json={"status": "disabled"}, headers=admin
    )
    assert response.status_code == 200 and response.json()["status"] == "disabled"
    error(
        await api.client.post("/auth/login", json={"email": email, "password": PASSWORD}),
        401,
        "account_disabled",
    )
    error(
        await api.client.post("/auth/refresh", json={"refresh_token": tokens["refresh_token"]}), 401
    )
    error(
        await api.client.get(
            "/auth/me", headers={"Authorization": f"Bearer {tokens['access_token']}"}
        ),
        401,
        "account_disabled",
    )


# -- users and grants ----------------------------------------------------------------
async def test_users_crud_and_permissions(api: Api) -> None:
    admin_id, admin = await api.token("admin")
    viewer_id, viewer = await api.token("viewer")
    email = f"new-{uuid.uuid4().hex[:8]}@example.com"

    denied = await api.client.post(
        "/users", json={"email": email, "password": PASSWORD}, headers=viewer
    )
    assert error(denied, 403, "forbidden")["details"] == {"permission": "users:admin"}
    created = await api.client.post(
        "/users", json={"email": email, "name": "New", "password": PASSWORD}, headers=admin
    )
    assert created.status_code == 201, created.text
    new_id = created.json()["id"]
    error(
        await api.client.post(
            "/users", json={"email": email.upper(), "password": PASSWORD}, headers=admin
        ),
        409,
        "conflict",
    )
    error(
        await api.client.post(
            "/users", json={"email": "not-an-email", "password": PASSWORD}, headers=admin
        ),
        422,
    )
    error(
        await api.client.post(
            "/users", json={"email": f"x{email}", "password": "short"}, headers=admin
        ),
        422,
    )

    listed = await api.client.get("/users", params={"q": email[:12], "limit": 1}, headers=admin)
    assert [u["email"] for u in listed.json()["items"]] == [email]
    error(await api.client.get("/users", headers=viewer), 403)

    assert (await api.client.get(f"/users/{viewer_id}", headers=viewer)).status_code == 200
    assert (
        await api.client.get(f"/users/{new_id}", headers=viewer)
    ).status_code == 200  # users:read
    renamed = await api.client.patch(
        f"/users/{viewer_id}", json={"name": "Renamed"}, headers=viewer
    )
    assert renamed.json()["name"] == "Renamed"
    error(
        await api.client.patch(f"/users/{viewer_id}", json={"status": "disabled"}, headers=viewer),
        403,
    )
    error(await api.client.patch(f"/users/{new_id}", json={"name": "x"}, headers=viewer), 403)
    error(
        await api.client.patch(
            f"/users/{viewer_id}", json={"password": "a brand new passphrase"}, headers=viewer
        ),
        401,
        "invalid_credentials",
    )
    changed = await api.client.patch(
        f"/users/{viewer_id}",
        json={"password": "a brand new passphrase", "current_password": PASSWORD},
        headers=viewer,
    )
    assert changed.status_code == 200

    error(await api.client.delete(f"/users/{admin_id}", headers=admin), 409)
    assert (await api.client.delete(f"/users/{new_id}", headers=admin)).status_code == 204
    error(await api.client.get(f"/users/{new_id}", headers=admin), 404, "not_found")
    error(await api.client.post("/auth/login", json={"email": email, "password": PASSWORD}), 401)
    deleted = (await api.fetch(select(User).where(User.email == email)))[0]
    assert deleted.deleted_at is not None and deleted.deleted_by == admin_id


async def test_role_grants_take_effect_at_once(api: Api) -> None:
    _, admin = await api.token("admin")
    user_id, headers = await api.token()
    error(await api.client.get("/audit-logs", headers=headers), 403)
    grant = await api.client.post(f"/users/{user_id}/roles", json={"role": "admin"}, headers=admin)
    assert grant.status_code == 201, grant.text
    assert (await api.client.get("/audit-logs", headers=headers)).status_code == 200  # same token
    grant_id = grant.json()["grant_id"]
    assert (
        await api.client.delete(f"/users/{user_id}/roles/{grant_id}", headers=admin)
    ).status_code == 204
    error(await api.client.get("/audit-logs", headers=headers), 403)
    error(
        await api.client.post(f"/users/{user_id}/roles", json={"role": "wizard"}, headers=admin),
        404,
    )
    error(
        await api.client.post(
            f"/users/{user_id}/roles", json={"role": "viewer", "scope": "team"}, headers=admin
        ),
        422,
    )


# -- API keys ------------------------------------------------------------------------
async def test_api_keys(api: Api) -> None:
    _, owner = await api.token("maintainer")
    too_much = await api.client.post(
        "/api-keys", json={"name": "ci", "permissions": ["users:admin"]}, headers=owner
    )
    assert error(too_much, 403)["details"] == {"permissions": ["users:admin"]}
    error(
        await api.client.post(
            "/api-keys", json={"name": "ci", "permissions": ["nope:x"]}, headers=owner
        ),
        422,
    )
    created = await api.client.post(
        "/api-keys",
        json={"name": "ci", "permissions": ["services:read", "pipelines:run"]},
        headers=owner,
    )
    assert created.status_code == 201, created.text
    secret = created.json()["key"]
    assert secret.startswith("idpk_") and len(secret) >= len("idpk_") + 43
    key_id = created.json()["id"]

    for headers in ({"X-API-Key": secret}, {"Authorization": f"Bearer {secret}"}):
        me = await api.client.get("/auth/me", headers=headers)
        assert me.status_code == 200 and me.json()["authenticated_as"] == "api_key"
        assert set(me.json()["permissions"]) == {"services:read", "pipelines:run"}
    # a key cannot create keys, and is limited to its own permissions
    error(
        await api.client.post(
            "/api-keys",
            json={"name": "k2", "permissions": ["services:read"]},
            headers={"X-API-Key": secret},
        ),
        403,
    )
    listed = await api.client.get("/api-keys", headers=owner)
    assert [k["id"] for k in listed.json()["items"]] == [key_id]
    assert secret not in listed.text and "key_hash" not in listed.text
    key = (await api.fetch(select(ApiKey).where(ApiKey.id == uuid.UUID(key_id))))[0]
    assert key.last_used is not None and secret not in (key.key_hash, key.prefix)

    # expiry
    await api.run_sql(
        update(ApiKey)
        .where(ApiKey.id == uuid.UUID(key_id))
        .values(expires_at=utcnow() - timedelta(seconds=1)),
    )
    error(await api.client.get("/auth/me", headers={"X-API-Key": secret}), 401, "invalid_api_key")
    await api.run_sql(update(ApiKey).where(ApiKey.id == uuid.UUID(key_id)).values(expires_at=None))
    # revocation (someone else cannot even see it)
    _, other = await api.token("viewer")
    error(await api.client.delete(f"/api-keys/{key_id}", headers=other), 404)
    assert (await api.client.delete(f"/api-keys/{key_id}", headers=owner)).status_code == 204
    revoked = await api.client.get("/auth/me", headers={"X-API-Key": secret})
    assert error(revoked, 401, "invalid_api_key")["message"] == "API key has been revoked"
    error(
        await api.client.post(
            "/api-keys",
            json={
                "name": "old",
                "permissions": ["services:read"],
                "expires_at": "2000-01-01T00:00:00Z",
            },
            headers=owner,
        ),
        422,
    )


async def test_key_never_exceeds_its_owner(api: Api) -> None:
    _, admin = await api.token("admin")
    owner_id, owner = await api.token("admin")
    created = await api.client.post(
        "/api-keys", json={"name": "ops", "permissions": ["audit:read"]}, headers=owner
    )
    secret = created.json()["key"]
    assert (await api.client.get("/audit-logs", headers={"X-API-Key": secret})).status_code == 200
    grants = (await api.client.get(f"/users/{owner_id}/roles", headers=admin)).json()
    await api.client.delete(f"/users/{owner_id}/roles/{grants[0]['grant_id']}", headers=admin)
    error(await api.client.get("/audit-logs", headers={"X-API-Key": secret}), 403)


# -- audit ---------------------------------------------------------------------------
async def test_identity_events_are_audited(api: Api) -> None:
    admin_id, admin = await api.token("admin")
    user_id, email = await api.user()
    await api.client.post("/auth/login", json={"email": email, "password": "wrong password!"})
    tokens = await api.login(email)
    await api.client.post("/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    await api.client.post("/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    await api.client.post(f"/users/{user_id}/roles", json={"role": "viewer"}, headers=admin)
    response = await api.client.get(
        "/audit-logs", params={"resource_id": str(user_id), "limit": 50}, headers=admin
    )
    assert response.status_code == 200
    actions = {e["action"] for e in response.json()["items"]}
    assert {
        "user.create",
        "auth.login.failure",
        "auth.login.success",
        "auth.refresh",
        "auth.refresh.reuse_detected",
        "user.role.grant",
    } <= actions
    grant = next(e for e in response.json()["items"] if e["action"] == "user.role.grant")
    assert grant["actor_id"] == str(admin_id) and grant["request_id"]
    rows = await api.fetch(select(AuditLog).where(AuditLog.resource_id == str(user_id)))
    assert all("password" not in str(r.after or {}) or "[redacted]" in str(r.after) for r in rows)


# -- hardening ------------------------------------------------------------------------
async def test_naive_datetimes_are_422(api: Api) -> None:
    _, admin = await api.token("admin")
    naive = "2099-01-01T00:00:00"
    key = {"name": "k", "permissions": ["services:read"], "expires_at": naive}
    error(await api.client.post("/api-keys", json=key, headers=admin), 422)
    error(await api.client.get("/audit-logs", params={"since": naive}, headers=admin), 422)
    aware = await api.client.get("/audit-logs", params={"since": naive + "Z"}, headers=admin)
    assert aware.status_code == 200


async def test_admins_prove_their_password_and_keep_their_own_grant(api: Api) -> None:
    admin_id, admin = await api.token("admin")
    change = {"password": "another long passphrase"}
    error(await api.client.patch(f"/users/{admin_id}", json=change, headers=admin), 401)
    ok = await api.client.patch(
        f"/users/{admin_id}", json={**change, "current_password": PASSWORD}, headers=admin
    )
    assert ok.status_code == 200
    grants = (await api.client.get(f"/users/{admin_id}/roles", headers=admin)).json()
    own = await api.client.delete(f"/users/{admin_id}/roles/{grants[0]['grant_id']}", headers=admin)
    error(own, 409)


async def test_grants_need_an_existing_scope(api: Api) -> None:
    _, admin = await api.token("admin")
    user_id, _ = await api.user()
    body = {"role": "viewer", "scope": "organization", "scope_id": str(uuid.uuid4())}
    error(await api.client.post(f"/users/{user_id}/roles", json=body, headers=admin), 404)


async def test_patch_reveals_nothing_without_permission(api: Api) -> None:
    _, viewer = await api.token("viewer")
    for target in (uuid.uuid4(), (await api.user())[0]):
        error(await api.client.patch(f"/users/{target}", json={"name": "x"}, headers=viewer), 403)


async def test_keys_cannot_manage_keys_and_x_api_key_takes_only_keys(api: Api) -> None:
    _, owner = await api.token("viewer")
    first = await api.client.post(
        "/api-keys", json={"name": "a", "permissions": ["services:read"]}, headers=owner
    )
    second = await api.client.post(
        "/api-keys", json={"name": "b", "permissions": ["services:read"]}, headers=owner
    )
    key = {"X-API-Key": first.json()["key"]}
    error(await api.client.get("/api-keys", headers=key), 403)
    error(await api.client.delete(f"/api-keys/{second.json()['id']}", headers=key), 403)
    jwt_in_key_header = {"X-API-Key": owner["Authorization"].removeprefix("Bearer ")}
    error(await api.client.get("/auth/me", headers=jwt_in_key_header), 401, "invalid_api_key")


async def test_openapi_declares_both_credentials(api: Api) -> None:
    spec = (await api.client.get("/openapi.json")).json()
    schemes = spec["components"]["securitySchemes"]
    assert schemes["HTTPBearer"]["scheme"] == "bearer"
    assert schemes["APIKeyHeader"]["name"] == "X-API-Key"
    assert spec["paths"]["/users"]["get"]["security"]
    assert "security" not in spec["paths"]["/auth/login"]["post"]
