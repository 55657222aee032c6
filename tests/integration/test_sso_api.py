"""SSO login over HTTP against a stand-in provider on loopback (tests/integration/
sso_provider.py): OpenID Connect and GitHub, authorization code with state and PKCE; users
matched by identity or created, never linked by e-mail alone (an existing account links a
provider account explicitly, signed in); every refusal in the error shape, audited, changing
nothing else."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import select, update

from core.db.types import utcnow
from core.identity.sso import VERIFIER_COOKIE, issue_state, pkce_challenge
from core.models.audit import AuditLog
from core.models.identity import User, UserIdentity
from core.settings import Settings
from core.topology import Topology
from tests.helpers import free_port
from tests.integration.identity_helpers import JWT_SECRET, PASSWORD, Api, running_api
from tests.integration.sso_provider import StandInProvider


@pytest.fixture
def provider() -> Iterator[StandInProvider]:
    with StandInProvider() as running:
        yield running


def sso_settings(settings: Settings, provider: StandInProvider) -> Settings:
    return settings.model_copy(
        update={
            "oidc_issuer": provider.url,
            "oidc_client_id": provider.client_id,
            "oidc_client_secret": SecretStr(provider.client_secret),
            "github_client_id": provider.github_client_id,
            "github_client_secret": SecretStr(provider.github_client_secret),
            "github_oauth_base_url": provider.github_oauth_url,
            "github_api_base_url": provider.github_api_url,
        }
    )


@pytest.fixture
async def api(
    settings: Settings, topology: Topology, database_url: str, provider: StandInProvider
) -> AsyncIterator[Api]:
    async with running_api(sso_settings(settings, provider), topology, database_url) as running:
        yield running


def error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()["error"]
    assert body["code"] == code, body
    assert body["request_id"] == response.headers["x-request-id"]
    return dict(body)


def email() -> str:
    return f"sso-{uuid.uuid4().hex[:10]}@example.com"


async def start(api: Api, name: str = "oidc", **params: str) -> str:
    """GET /auth/sso/<name>/login: the provider URL it redirects to (the cookie is kept)."""
    response = await api.client.get(f"/auth/sso/{name}/login", params=params)
    assert response.status_code == 302, response.text
    assert response.headers["cache-control"] == "no-store"
    return response.headers["location"]


async def at_provider(url: str) -> str:
    """The browser at the provider (real HTTP): where the provider sends it back."""
    async with httpx.AsyncClient() as browser:
        response = await browser.get(url)
    assert response.status_code == 302, response.text
    return response.headers["location"]


async def sso_login(api: Api, name: str = "oidc", **params: str) -> httpx.Response:
    """The whole browser round trip; the callback's response."""
    callback = await at_provider(await start(api, name, **params))
    assert callback.startswith(f"http://testserver/auth/sso/{name}/callback?")
    return await api.client.get(callback)


async def me(api: Api, tokens: dict[str, Any]) -> dict[str, Any]:
    response = await api.client.get(
        "/auth/me", headers={"Authorization": f"Bearer {tokens['access_token']}"}
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


async def actions(api: Api, request_id: str) -> list[str]:
    rows = await api.fetch(
        select(AuditLog).where(AuditLog.request_id == request_id).order_by(AuditLog.id)
    )
    return sorted(r.action for r in rows)


async def failure(api: Api, response: httpx.Response) -> dict[str, Any]:
    """The one audit entry a refused callback leaves."""
    rows = await api.fetch(
        select(AuditLog).where(AuditLog.request_id == response.headers["x-request-id"])
    )
    assert [r.action for r in rows] == ["auth.sso.failure"]
    return dict(rows[0].after or {})


async def users_with(api: Api, address: str) -> list[User]:
    return await api.fetch(select(User).where(User.email == address))


def replace_query(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()} | changes
    return urlunsplit(parts._replace(query=urlencode(query)))


# -- discovery of providers; unconfigured ones ------------------------------------------------
async def test_providers_lists_what_is_configured(api: Api, provider: StandInProvider) -> None:
    response = await api.client.get("/auth/sso/providers")
    assert response.status_code == 200
    assert response.json()["providers"] == [
        {
            "name": "github",
            "kind": "github",
            "label": "GitHub",
            "login_url": "/auth/sso/github/login",
        },
        {
            "name": "oidc",
            "kind": "oidc",
            "label": f"OpenID provider {provider.url}",
            "login_url": "/auth/sso/oidc/login",
        },
    ]
    error(await api.client.get("/auth/sso/gitlab/login"), 404, "not_found")
    error(await api.client.get("/auth/sso/gitlab/callback?code=x&state=y"), 404, "not_found")


async def test_unconfigured_providers_are_404(
    settings: Settings, topology: Topology, database_url: str
) -> None:
    async with running_api(settings, topology, database_url) as bare:
        assert (await bare.client.get("/auth/sso/providers")).json() == {"providers": []}
        for name in ("github", "oidc"):
            body = error(await bare.client.get(f"/auth/sso/{name}/login"), 404, "not_found")
            assert body["message"] == (
                f"SSO provider {name!r} is not configured (configured: none)"
            )
            error(await bare.client.get(f"/auth/sso/{name}/callback"), 404, "not_found")


# -- OpenID Connect ---------------------------------------------------------------------------
async def test_oidc_login_creates_the_user_then_matches_by_identity(
    api: Api, provider: StandInProvider
) -> None:
    address = email()
    account = provider.add_account(address.upper(), name="Ada Lovelace")
    url = await start(api)
    query = parse_qs(urlsplit(url).query)
    assert url.startswith(f"{provider.url}/authorize?")
    assert query["redirect_uri"] == ["http://testserver/auth/sso/oidc/callback"]
    assert query["code_challenge_method"] == ["S256"] and query["nonce"][0]
    assert query["scope"] == ["openid email profile"]
    verifier = api.client.cookies.get(VERIFIER_COOKIE)
    assert verifier and verifier not in url  # the verifier never travels in a URL
    assert query["code_challenge"] == [pkce_challenge(verifier)]

    first = await api.client.get(await at_provider(url))
    assert first.status_code == 200, first.text
    tokens = first.json()
    assert tokens["token_type"] == "bearer" and tokens["expires_in"] == 15 * 60
    assert tokens["refresh_token"].startswith("idpr_") and tokens["return_to"] is None
    assert api.client.cookies.get(VERIFIER_COOKIE) is None  # used once, then cleared
    # the code was exchanged with the verifier and the client's credentials (Basic)
    sent = provider.token_requests[-1]
    assert sent["code_verifier"] == verifier and sent["authorization"].startswith("Basic ")

    profile = (await me(api, tokens))["user"]
    assert profile["email"] == address and profile["name"] == "Ada Lovelace"
    assert (await me(api, tokens))["roles"] == []  # an admin grants roles
    [user] = await users_with(api, address)
    assert user.password_hash is None  # SSO-only
    [identity] = await api.fetch(select(UserIdentity).where(UserIdentity.user_id == user.id))
    assert (identity.provider, identity.subject) == ("oidc", account.subject)
    assert await actions(api, first.headers["x-request-id"]) == [
        "auth.sso.link",
        "auth.sso.login",
        "user.create",
    ]

    # Second login: the provider now reports another address; the identity still matches.
    account.email = email()
    second = await sso_login(api)
    assert second.status_code == 200, second.text
    assert (await me(api, second.json()))["user"]["id"] == str(user.id)
    assert await users_with(api, account.email) == []
    [identity] = await api.fetch(select(UserIdentity).where(UserIdentity.user_id == user.id))
    assert identity.email == account.email and identity.last_login_at is not None
    assert await actions(api, second.headers["x-request-id"]) == ["auth.sso.login"]
    # the refresh token works like a password login's
    rotated = await api.client.post(
        "/auth/refresh", json={"refresh_token": second.json()["refresh_token"]}
    )
    assert rotated.status_code == 200, rotated.text


async def link(api: Api, headers: dict[str, str], name: str = "oidc") -> httpx.Response:
    """A signed-in user links the provider's next account: POST /auth/sso/<name>/link, then
    the browser round trip; the callback's response."""
    started = await api.client.post(
        f"/auth/sso/{name}/link", params={"return_to": "/settings"}, headers=headers
    )
    assert started.status_code == 200, started.text
    assert started.headers["cache-control"] == "no-store"
    return await api.client.get(await at_provider(started.json()["authorization_url"]))


async def test_an_existing_account_is_linked_only_by_its_signed_in_user(
    api: Api, provider: StandInProvider
) -> None:
    user_id, address = await api.user("viewer")
    account = provider.add_account(address)
    # the same verified e-mail is not enough: refused, nothing linked or created
    refused = await sso_login(api, return_to="/services?team=core")
    body = error(refused, 409, "sso_account_exists")
    assert "POST /auth/sso/oidc/link" in body["message"]
    assert await api.fetch(select(UserIdentity).where(UserIdentity.user_id == user_id)) == []
    assert len(await users_with(api, address)) == 1
    assert (await failure(api, refused))["reason"] == "sso_account_exists"

    # signed in with the password, the user links the provider account
    tokens = await api.login(address, PASSWORD)
    headers = {"Authorization": f"Bearer {tokens['access_token']}"}
    linked = await link(api, headers)
    assert linked.status_code == 200, linked.text
    assert linked.json()["return_to"] == "/settings"
    assert (await me(api, linked.json()))["user"]["id"] == str(user_id)
    [identity] = await api.fetch(select(UserIdentity).where(UserIdentity.user_id == user_id))
    assert (identity.provider, identity.subject) == ("oidc", account.subject)
    [entry] = await api.fetch(
        select(AuditLog).where(
            AuditLog.action == "auth.sso.link", AuditLog.resource_id == str(user_id)
        ),
    )
    assert entry.after is not None and entry.after["explicit"] is True
    assert entry.request_id == linked.headers["x-request-id"]
    started = await api.fetch(
        select(AuditLog).where(
            AuditLog.action == "auth.sso.link_started", AuditLog.actor_id == user_id
        )
    )
    assert len(started) == 1

    # from now on the provider account signs in as that user; the password still works too
    again = await sso_login(api)
    assert again.status_code == 200, again.text
    body = await me(api, again.json())
    assert body["user"]["id"] == str(user_id)
    assert [g["role"] for g in body["roles"]] == ["viewer"]
    await api.login(address, PASSWORD)


async def test_linking_needs_a_user_and_a_free_provider_account(
    api: Api, provider: StandInProvider
) -> None:
    assert (await api.client.post("/auth/sso/oidc/link")).status_code == 401
    owner_id, owner = await api.token("viewer")
    taken = provider.add_account(email())
    assert (await link(api, owner)).status_code == 200
    # another user cannot link the provider account that is already someone's
    other_id, other = await api.token()
    provider.login_as = taken.subject
    response = await link(api, other)
    error(response, 409, "sso_identity_taken")
    assert await api.fetch(select(UserIdentity).where(UserIdentity.user_id == other_id)) == []
    # an API key cannot start a link
    key = await api.client.post(
        "/api-keys", json={"name": "k", "permissions": ["services:read"]}, headers=owner
    )
    by_key = await api.client.post("/auth/sso/oidc/link", headers={"X-API-Key": key.json()["key"]})
    error(by_key, 403, "forbidden")
    [identity] = await api.fetch(
        select(UserIdentity).where(
            UserIdentity.provider == "oidc", UserIdentity.subject == taken.subject
        )
    )
    assert identity.user_id == owner_id


async def test_public_url_makes_the_redirect_uri(
    settings: Settings, topology: Topology, database_url: str, provider: StandInProvider
) -> None:
    configured = sso_settings(settings, provider).model_copy(
        update={"public_url": "https://idp.example.com"}
    )
    async with running_api(configured, topology, database_url) as running:
        response = await running.client.get("/auth/sso/oidc/login")
        assert response.status_code == 302
        query = parse_qs(urlsplit(response.headers["location"]).query)
        assert query["redirect_uri"] == ["https://idp.example.com/auth/sso/oidc/callback"]
        cookie = response.headers["set-cookie"].lower()
        assert "httponly" in cookie and "secure" in cookie and "samesite=lax" in cookie
        assert "path=/auth/sso/oidc/callback" in cookie


@pytest.mark.parametrize(
    "target", ["https://evil.example.com/", "//evil.example.com/x", "/\\evil.example.com", "x"]
)
async def test_return_to_must_be_a_path_here(api: Api, target: str) -> None:
    response = await api.client.get("/auth/sso/oidc/login", params={"return_to": target})
    assert "not a URL" in error(response, 400, "bad_request")["message"]


async def test_tampered_pkce_challenge_is_refused_by_the_provider(
    api: Api, provider: StandInProvider
) -> None:
    address = email()
    provider.add_account(address)
    url = await start(api)
    # Someone swaps the challenge on the way to the provider: the code is bound to a verifier
    # this browser does not have, so the provider refuses to exchange it.
    forged = replace_query(url, code_challenge=pkce_challenge("a-verifier-the-attacker-holds" * 2))
    response = await api.client.get(await at_provider(forged))
    body = error(response, 401, "sso_code_rejected")
    assert "PKCE verification failed" in body["message"]
    assert await users_with(api, address) == []
    after = await failure(api, response)
    assert after["provider"] == "oidc" and after["reason"] == "sso_code_rejected"


async def test_code_and_state_without_the_browser_cookie(
    api: Api, provider: StandInProvider
) -> None:
    address = email()
    provider.add_account(address)
    callback = await at_provider(await start(api))
    # Another browser (no cookie) presenting the copied callback URL gets nothing.
    api.client.cookies.clear()
    body = error(await api.client.get(callback), 400, "invalid_sso_state")
    assert "did not start the login" in body["message"]
    # A browser whose cookie belongs to another login neither.
    await start(api)
    body = error(await api.client.get(callback), 400, "invalid_sso_state")
    assert "another login" in body["message"]
    assert await users_with(api, address) == []


async def test_tampered_expired_or_misdirected_state_is_400(
    api: Api, provider: StandInProvider
) -> None:
    address = email()
    provider.add_account(address)
    callback = await at_provider(await start(api))
    state = parse_qs(urlsplit(callback).query)["state"][0]
    verifier = api.client.cookies.get(VERIFIER_COOKIE)
    assert verifier is not None
    head, payload, signature = state.split(".")
    tampered = f"{head}.{payload}.{signature[:-4]}{'AAAA' if signature[-4:] != 'AAAA' else 'BBBB'}"
    body = error(
        await api.client.get(replace_query(callback, state=tampered)), 400, "invalid_sso_state"
    )
    assert "not valid" in body["message"]
    expired = issue_state(
        JWT_SECRET,
        "oidc",
        nonce="n",
        code_challenge=pkce_challenge(verifier),
        ttl=timedelta(minutes=-1),
    )
    response = await api.client.get(replace_query(callback, state=expired))
    assert "expired" in error(response, 400, "invalid_sso_state")["message"]
    for_github = issue_state(JWT_SECRET, "github", nonce="n", code_challenge="c")
    response = await api.client.get(replace_query(callback, state=for_github))
    assert "'github'" in error(response, 400, "invalid_sso_state")["message"]
    no_state = replace_query(callback, state="")
    error(await api.client.get(no_state), 400, "invalid_sso_state")
    no_code = replace_query(callback, code="")
    assert "no code" in error(await api.client.get(no_code), 400, "bad_request")["message"]
    assert (await failure(api, response))["reason"] == "invalid_sso_state"
    assert await users_with(api, address) == []
    # the untouched callback still works: nothing was used up by the refusals
    assert (await api.client.get(callback)).status_code == 200


async def test_unverified_email_is_401(api: Api, provider: StandInProvider) -> None:
    address = email()
    provider.add_account(address, email_verified=False)
    response = await sso_login(api)
    assert "verified e-mail" in error(response, 401, "email_not_verified")["message"]
    assert await users_with(api, address) == []
    after = await failure(api, response)
    assert after["email"] == address and after["reason"] == "email_not_verified"


async def test_unverified_email_cannot_take_over_an_account(
    api: Api, provider: StandInProvider
) -> None:
    user_id, address = await api.user()
    provider.add_account(address, email_verified=False)
    error(await sso_login(api), 401, "email_not_verified")
    assert await api.fetch(select(UserIdentity).where(UserIdentity.user_id == user_id)) == []


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        ({"nonce": "a-nonce-from-another-login"}, "nonce does not match"),
        ({"nonce": None}, "nonce does not match"),
        ({"aud": "another-client"}, "another client"),
        ({"iss": "http://127.0.0.1:1"}, "issuer"),
        ({"exp": 1_000_000_000, "iat": 999_999_000}, "expired"),
    ],
)
async def test_id_token_claims_are_verified(
    api: Api, provider: StandInProvider, claims: dict[str, Any], reason: str
) -> None:
    address = email()
    provider.add_account(address)
    provider.id_token_claims = claims
    response = await sso_login(api)
    assert reason in error(response, 401, "invalid_id_token")["message"]
    assert await users_with(api, address) == []
    assert (await failure(api, response))["reason"] == "invalid_id_token"


async def test_id_token_signed_with_another_key_is_401(api: Api, provider: StandInProvider) -> None:
    address = email()
    provider.add_account(address)
    provider.foreign_key = True
    response = await sso_login(api)
    assert "signature" in error(response, 401, "invalid_id_token")["message"]
    assert await users_with(api, address) == []


async def test_email_from_userinfo_when_the_id_token_has_none(
    api: Api, provider: StandInProvider
) -> None:
    address = email()
    provider.add_account(address)
    provider.id_token_claims = {"email": None, "email_verified": None}
    response = await sso_login(api)
    assert response.status_code == 200, response.text
    assert (await me(api, response.json()))["user"]["email"] == address


async def test_provider_refusal_is_401(api: Api, provider: StandInProvider) -> None:
    provider.add_account(email())
    provider.deny = True
    response = await sso_login(api)
    body = error(response, 401, "sso_provider_error")
    assert "access_denied" in body["message"]
    assert body["details"]["error"] == "access_denied"


async def test_disabled_and_deleted_users_are_401(api: Api, provider: StandInProvider) -> None:
    _, admin = await api.token("admin")
    # matched by e-mail while disabled: refused, and not linked
    user_id, address = await api.user()
    patched = await api.client.patch(
        f"/users/{user_id}", json={"status": "disabled"}, headers=admin
    )
    assert patched.status_code == 200
    provider.add_account(address)
    response = await sso_login(api)
    error(response, 401, "account_disabled")
    assert await api.fetch(select(UserIdentity).where(UserIdentity.user_id == user_id)) == []
    after = await failure(api, response)
    assert after["reason"] == "account_disabled"

    # matched by identity, disabled afterwards
    other = email()
    provider.add_account(other)
    assert (await sso_login(api)).status_code == 200
    [other_user] = await users_with(api, other)
    await api.client.patch(f"/users/{other_user.id}", json={"status": "disabled"}, headers=admin)
    error(await sso_login(api), 401, "account_disabled")

    # deleted: refused, and no second account is made for the address
    gone_id, gone = await api.user()
    assert (await api.client.delete(f"/users/{gone_id}", headers=admin)).status_code == 204
    provider.add_account(gone)
    error(await sso_login(api), 401, "account_disabled")
    assert len(await users_with(api, gone)) == 1


async def test_a_password_lock_does_not_block_sso(api: Api, provider: StandInProvider) -> None:
    """Whoever guesses a user's password can lock password logins, not the user's SSO."""
    address = email()
    provider.add_account(address)
    assert (await sso_login(api)).status_code == 200
    await api.run_sql(
        update(User)
        .where(User.email == address)
        .values(locked_until=utcnow() + timedelta(minutes=5), failed_login_count=7),
    )
    response = await sso_login(api)
    assert response.status_code == 200, response.text
    assert (await me(api, response.json()))["user"]["email"] == address


# -- GitHub -----------------------------------------------------------------------------------
async def test_github_login_with_a_verified_primary_email(
    api: Api, provider: StandInProvider
) -> None:
    address = email()
    account = provider.add_account(
        address, login="octocat", name="The Octocat", other_emails=[(email(), True)]
    )
    url = await start(api, "github")
    assert url.startswith(f"{provider.github_oauth_url}/login/oauth/authorize?")
    query = parse_qs(urlsplit(url).query)
    assert query["client_id"] == [provider.github_client_id]
    assert query["scope"] == ["read:user user:email"]
    assert query["code_challenge_method"] == ["S256"]
    response = await api.client.get(await at_provider(url))
    assert response.status_code == 200, response.text
    sent = provider.token_requests[-1]
    assert sent["client_secret"] == provider.github_client_secret and sent["code_verifier"]
    profile = (await me(api, response.json()))["user"]
    assert profile["email"] == address and profile["name"] == "The Octocat"
    assert profile["avatar_url"] == f"https://avatars.example.com/u/{account.subject}"
    [identity] = await api.fetch(
        select(UserIdentity).where(UserIdentity.user_id == uuid.UUID(profile["id"]))
    )
    assert (identity.provider, identity.subject) == ("github", account.subject)
    # again: matched by the account id
    again = await sso_login(api, "github")
    assert (await me(api, again.json()))["user"]["id"] == profile["id"]


async def test_github_needs_the_primary_email_verified(api: Api, provider: StandInProvider) -> None:
    address, verified_other = email(), email()
    provider.add_account(address, email_verified=False, other_emails=[(verified_other, True)])
    response = await sso_login(api, "github")
    error(response, 401, "email_not_verified")
    assert await users_with(api, address) == [] and await users_with(api, verified_other) == []


async def test_github_pkce_is_checked(api: Api, provider: StandInProvider) -> None:
    provider.add_account(email())
    url = replace_query(await start(api, "github"), code_challenge=pkce_challenge("x" * 50))
    response = await api.client.get(await at_provider(url))
    assert "PKCE" in error(response, 401, "sso_code_rejected")["message"]


# -- the provider unreachable -----------------------------------------------------------------
async def test_unreachable_provider_is_502(
    settings: Settings, topology: Topology, database_url: str, provider: StandInProvider
) -> None:
    down = sso_settings(settings, provider).model_copy(
        update={"oidc_issuer": f"http://127.0.0.1:{free_port()}"}  # nothing listens there
    )
    async with running_api(down, topology, database_url) as running:
        response = await running.client.get("/auth/sso/oidc/login")
        assert "not reachable" in error(response, 502, "sso_provider_unavailable")["message"]
