"""Identity edges are closed (issue 15, finding 9, the sign-in half): each test performs an
attack on signing in and sees it refused.

- Login throttling cannot be bypassed by sending random `idpk_` API keys (each used to get a
  fresh rate-limit bucket), and a flood of them cannot evict other clients' buckets.
- Parallel wrong passwords (through a real uvicorn server) are all counted: the lock comes at
  the threshold, not later.
- A wrong password on an MFA account answers `mfa_required` exactly like the right one; with a
  code, which factor was wrong is not said; a lock answers like an unknown email.
- SSO never takes over an existing account by its e-mail (the bootstrap admin included), is
  limited to the allowed GitHub organizations and e-mail domains, and a privileged user with
  MFA on still needs the platform's code.
- `GET /users/{id}` across organizations is a 404.
- `CORS_ORIGINS=*` (credentials are allowed) stops the start.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlparse, urlsplit

import httpx
import pyotp
import pytest
from pydantic import SecretStr
from sqlalchemy import select, update

from api.app import create_app
from core.db.types import utcnow
from core.errors import ConfigError
from core.identity.auth import FIRST_LOCK, LOCK_AFTER_FAILURES
from core.identity.bootstrap import create_admin
from core.models.identity import User, UserIdentity
from core.ratelimit import MemoryBackend, RateLimiter
from core.security.tokens import issue_access_token
from core.settings import Settings, load_settings
from core.topology import Topology
from tests.helpers import TaskPerRequest
from tests.integration.identity_helpers import (
    JWT_SECRET,
    PASSWORD,
    Api,
    assert_error,
    running_api,
)
from tests.integration.pipeline_helpers import served
from tests.integration.sso_provider import StandInProvider
from tests.integration.test_sso_api import at_provider, sso_login, sso_settings

WRONG = "not the password at all"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def without_request_id(response: httpx.Response) -> dict[str, Any]:
    """The error body as an attacker compares it: everything but the request id."""
    body = dict(response.json()["error"])
    body.pop("request_id")
    return body


async def enrol_mfa(api: Api, email: str) -> tuple[pyotp.TOTP, list[str]]:
    """MFA on for `email` through the API: the authenticator, and the recovery codes."""
    headers = {"Authorization": f"Bearer {(await api.login(email))['access_token']}"}
    setup = await api.client.post("/auth/mfa/setup", headers=headers)
    assert setup.status_code == 200, setup.text
    totp = pyotp.TOTP(parse_qs(urlparse(setup.json()["otpauth_uri"]).query)["secret"][0])
    enabled = await api.client.post("/auth/mfa/verify", json={"code": totp.now()}, headers=headers)
    assert enabled.status_code == 200, enabled.text
    return totp, list(enabled.json()["recovery_codes"])


def next_code(totp: pyotp.TOTP) -> str:
    """A code of a later step than the one enrolment spent (each step is accepted once)."""
    return str(totp.at(time.time() + totp.interval))


async def failed_logins(api: Api, email: str) -> User:
    [user] = await api.fetch(select(User).where(User.email == email))
    return user


# -- rate limits ------------------------------------------------------------------------------
@pytest.fixture
async def limited(settings: Settings, topology: Topology, database_url: str) -> AsyncIterator[Api]:
    """The app with small limits on the in-memory backend and a clock that does not move."""
    strict = settings.model_copy(
        update={"rate_limits": {"default": "6/minute;burst=4", "auth": "2/minute;burst=2"}}
    )
    async with running_api(strict, topology, database_url) as api:
        limiter: RateLimiter = api.app.state.rate_limiter
        assert isinstance(limiter.backend, MemoryBackend)
        limiter.backend.clock = FakeClock()
        yield api


def client_from(api: Api, ip: str) -> httpx.AsyncClient:
    transport = TaskPerRequest(app=api.app, client=(ip, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


def random_key() -> str:
    return "idpk_" + uuid.uuid4().hex + uuid.uuid4().hex[:11]


async def test_random_api_keys_do_not_bypass_login_throttling(limited: Api) -> None:
    _, email = await limited.user()
    guess = {"email": email, "password": WRONG}
    for _ in range(2):  # the auth group's burst, from this IP
        assert_error(await limited.client.post("/auth/login", json=guess), 401)
    # a fresh random key on every guess used to get a fresh bucket; the IP's is used now
    for headers in (
        {"X-API-Key": random_key()},
        {"Authorization": f"Bearer {random_key()}"},
    ):
        refused = await limited.client.post("/auth/login", json=guess, headers=headers)
        assert assert_error(refused, 429, "rate_limited")["details"]["group"] == "auth"
    # a valid API key does not open the auth group either: it is counted by IP only
    admin_id, _ = await limited.user("admin")  # a minted token: no login is counted
    minted, _ = issue_access_token(JWT_SECRET, admin_id, timedelta(minutes=5))
    admin = {"Authorization": f"Bearer {minted}"}
    key = await limited.client.post(
        "/api-keys", json={"name": "k", "permissions": ["users:read"]}, headers=admin
    )
    assert key.status_code == 201, key.text
    refused = await limited.client.post(
        "/auth/login", json=guess, headers={"X-API-Key": key.json()["key"]}
    )
    assert_error(refused, 429, "rate_limited")
    # the guesses that got through were counted, the refused ones never reached the route
    assert (await failed_logins(limited, email)).failed_login_count == 2


async def test_a_flood_of_random_keys_is_one_ip_and_evicts_nobody(limited: Api) -> None:
    limiter: RateLimiter = limited.app.state.rate_limiter
    assert isinstance(limiter.backend, MemoryBackend)
    limiter.backend.max_keys = 5  # a small table: a flood of buckets would evict at once
    async with client_from(limited, "203.0.113.7") as victim:
        for _ in range(4):  # the victim (an unauthenticated caller) uses its burst up
            assert (await victim.get("/users")).status_code == 401
        assert_error(await victim.get("/users"), 429, "rate_limited")
        async with client_from(limited, "198.51.100.66") as attacker:
            statuses = [
                (await attacker.get("/users", headers={"X-API-Key": random_key()})).status_code
                for _ in range(40)
            ]
        # every random key was counted in the attacker's one IP bucket
        assert statuses[:4] == [401] * 4 and set(statuses[4:]) == {429}
        assert len(limiter.backend) <= 2
        # the victim's bucket was not evicted (which would have handed it a fresh burst)
        assert_error(await victim.get("/users"), 429, "rate_limited")


# -- the failed-login counter -----------------------------------------------------------------
async def test_parallel_wrong_passwords_lock_at_the_threshold(api: Api) -> None:
    _, email = await api.user()
    async with (
        served(api) as base_url,
        httpx.AsyncClient(base_url=base_url, timeout=120) as http,
    ):
        guesses = await asyncio.gather(
            *(
                http.post("/auth/login", json={"email": email, "password": f"{WRONG} {n}"})
                for n in range(LOCK_AFTER_FAILURES)
            )
        )
        assert [g.status_code for g in guesses] == [401] * LOCK_AFTER_FAILURES
        user = await failed_logins(api, email)
        # one atomic increment each: none overwrote another's
        assert user.failed_login_count == LOCK_AFTER_FAILURES
        assert user.locked_until is not None
        assert timedelta(0) < user.locked_until - utcnow() <= FIRST_LOCK
        locked = await http.post("/auth/login", json={"email": email, "password": PASSWORD})
        assert_error(locked, 401, "invalid_credentials")


# -- oracles ----------------------------------------------------------------------------------
async def test_mfa_required_does_not_confirm_the_password(api: Api) -> None:
    _, email = await api.user()
    totp, _ = await enrol_mfa(api, email)
    right = await api.client.post("/auth/login", json={"email": email, "password": PASSWORD})
    wrong = await api.client.post("/auth/login", json={"email": email, "password": WRONG})
    assert_error(right, 401, "mfa_required")
    assert without_request_id(wrong) == without_request_id(right)
    assert (await failed_logins(api, email)).failed_login_count == 1  # the guess counted

    # with a code: a wrong password (and the right code) and a wrong code (and the right
    # password) are the same refusal, and the same as an unknown email's
    code = next_code(totp)
    bad_password = await api.client.post(
        "/auth/login", json={"email": email, "password": WRONG, "totp_code": code}
    )
    bad_code = await api.client.post(
        "/auth/login", json={"email": email, "password": PASSWORD, "totp_code": "000000"}
    )
    nobody = await api.client.post(
        "/auth/login",
        json={
            "email": f"nobody-{uuid.uuid4().hex[:8]}@example.com",
            "password": WRONG,
            "totp_code": code,
        },
    )
    assert_error(bad_password, 401, "invalid_credentials")
    assert without_request_id(bad_password) == without_request_id(bad_code)
    assert without_request_id(bad_code) == without_request_id(nobody)
    # the code was not spent by the wrong password: with the right one it signs in
    ok = await api.client.post(
        "/auth/login", json={"email": email, "password": PASSWORD, "totp_code": code}
    )
    assert ok.status_code == 200, ok.text


async def test_a_locked_account_answers_like_an_unknown_email(api: Api) -> None:
    _, email = await api.user()
    await api.run_sql(
        update(User)
        .where(User.email == email)
        .values(
            locked_until=utcnow() + timedelta(minutes=5), failed_login_count=LOCK_AFTER_FAILURES
        )
    )
    locked = await api.client.post("/auth/login", json={"email": email, "password": PASSWORD})
    unknown = await api.client.post(
        "/auth/login",
        json={"email": f"nobody-{uuid.uuid4().hex[:8]}@example.com", "password": PASSWORD},
    )
    assert_error(locked, 401, "invalid_credentials")
    assert without_request_id(locked) == without_request_id(unknown)
    assert {k for k in locked.headers if k.startswith(("retry-after", "ratelimit-"))} == {
        k for k in unknown.headers if k.startswith(("retry-after", "ratelimit-"))
    }


# -- SSO --------------------------------------------------------------------------------------
@pytest.fixture
def provider() -> Iterator[StandInProvider]:
    with StandInProvider() as running:
        yield running


@pytest.fixture
async def sso(
    settings: Settings, topology: Topology, database_url: str, provider: StandInProvider
) -> AsyncIterator[Api]:
    async with running_api(sso_settings(settings, provider), topology, database_url) as api:
        yield api


async def test_sso_with_a_matching_email_does_not_take_over_an_account(
    sso: Api, provider: StandInProvider
) -> None:
    admin_email = f"boss-{uuid.uuid4().hex[:8]}@example.com"
    async with sso.session() as session:  # the bootstrap admin, as `idp users create-admin`
        admin = await create_admin(session, admin_email, "first admin passphrase")
    user_id, user_email = await sso.user("maintainer")
    for victim_id, address, name in (
        (admin.id, admin_email, "oidc"),
        (user_id, user_email, "github"),
    ):
        provider.add_account(address)  # the attacker's provider account claims the address
        response = await sso_login(sso, name)
        assert_error(response, 409, "sso_account_exists")
        assert "access_token" not in response.text
        assert await sso.fetch(select(UserIdentity).where(UserIdentity.user_id == victim_id)) == []
        assert len(await sso.fetch(select(User).where(User.email == address))) == 1


async def test_a_privileged_user_still_needs_the_platform_mfa_after_sso(
    sso: Api, provider: StandInProvider
) -> None:
    admin_id, address = await sso.user("admin")
    totp, recovery = await enrol_mfa(sso, address)
    signed_in = await sso.client.post(
        "/auth/login", json={"email": address, "password": PASSWORD, "totp_code": recovery[0]}
    )
    assert signed_in.status_code == 200, signed_in.text
    headers = {"Authorization": f"Bearer {signed_in.json()['access_token']}"}
    provider.add_account(address)
    started = await sso.client.post("/auth/sso/oidc/link", headers=headers)
    assert started.status_code == 200, started.text
    # linking lands in the same second step: the provider alone is not enough
    challenge = await sso.client.get(await at_provider(started.json()["authorization_url"]))
    details = assert_error(challenge, 401, "mfa_required")["details"]
    assert "access_token" not in challenge.text
    # a later SSO login: the same challenge
    login = await sso_login(sso)
    token = assert_error(login, 401, "mfa_required")["details"]["mfa_token"]
    assert details["verify"] == "/auth/sso/mfa"
    wrong = await sso.client.post("/auth/sso/mfa", json={"mfa_token": token, "totp_code": "000000"})
    assert_error(wrong, 401, "invalid_mfa_code")
    forged = await sso.client.post(
        "/auth/sso/mfa", json={"mfa_token": token[:-4] + "AAAA", "totp_code": next_code(totp)}
    )
    assert_error(forged, 401, "invalid_mfa_token")
    ok = await sso.client.post(
        "/auth/sso/mfa", json={"mfa_token": token, "totp_code": next_code(totp)}
    )
    assert ok.status_code == 200, ok.text
    me = await sso.client.get(
        "/auth/me", headers={"Authorization": f"Bearer {ok.json()['access_token']}"}
    )
    assert me.json()["user"]["id"] == str(admin_id)


async def test_github_sso_is_limited_to_the_allowed_organizations(
    settings: Settings, topology: Topology, database_url: str, provider: StandInProvider
) -> None:
    allowed = sso_settings(settings, provider).model_copy(
        update={"github_allowed_orgs": ("acme",), "sso_allowed_email_domains": ("example.com",)}
    )
    async with running_api(allowed, topology, database_url) as api:
        outsider = f"out-{uuid.uuid4().hex[:8]}@example.com"
        provider.add_account(outsider, orgs=["other-org"])
        response = await sso_login(api, "github")
        body = assert_error(response, 403, "sso_not_allowed")
        assert body["details"] == {"allowed_orgs": ["acme"]}
        assert provider.membership_requests == ["acme"]
        assert await api.fetch(select(User).where(User.email == outsider)) == []

        member = f"in-{uuid.uuid4().hex[:8]}@example.com"
        provider.add_account(member, orgs=["ACME"])
        start = await api.client.get("/auth/sso/github/login")
        scope = parse_qs(urlsplit(start.headers["location"]).query)["scope"]
        assert scope == ["read:user user:email read:org"]  # what the membership check needs
        assert (
            await api.client.get(await at_provider(start.headers["location"]))
        ).status_code == 200

        # the e-mail domain allow-list holds for every provider
        provider.add_account(f"x-{uuid.uuid4().hex[:8]}@elsewhere.test", orgs=["acme"])
        assert_error(await sso_login(api, "github"), 403, "sso_not_allowed")
        provider.add_account(f"y-{uuid.uuid4().hex[:8]}@elsewhere.test")
        assert_error(await sso_login(api, "oidc"), 403, "sso_not_allowed")


# -- profiles across organizations ------------------------------------------------------------
async def test_users_of_another_organization_are_404(api: Api) -> None:
    _, admin = await api.token("admin")

    async def team_in_new_org() -> str:
        slug = f"o-{uuid.uuid4().hex[:8]}"
        org = await api.client.post(
            "/organizations", json={"name": slug, "slug": slug}, headers=admin
        )
        assert org.status_code == 201, org.text
        team = await api.client.post(
            "/teams", json={"org_id": org.json()["id"], "name": "t", "slug": "t"}, headers=admin
        )
        assert team.status_code == 201, team.text
        return str(team.json()["id"])

    async def member_of(team_id: str) -> tuple[uuid.UUID, dict[str, str]]:
        user_id, headers = await api.token()
        added = await api.client.post(
            f"/teams/{team_id}/members", json={"user_id": str(user_id)}, headers=admin
        )
        assert added.status_code == 201, added.text
        return user_id, headers

    team_a, team_b = await team_in_new_org(), await team_in_new_org()
    _, alice = await member_of(team_a)
    colleague_id, _ = await member_of(team_a)
    stranger_id, _ = await member_of(team_b)
    loner_id, _ = await api.token()  # in no organization at all

    assert (await api.client.get(f"/users/{colleague_id}", headers=alice)).status_code == 200
    for other in (stranger_id, loner_id, uuid.uuid4()):
        assert_error(await api.client.get(f"/users/{other}", headers=alice), 404, "not_found")
    # a global user admin sees everyone
    assert (await api.client.get(f"/users/{stranger_id}", headers=admin)).status_code == 200


# -- CORS -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "origins", ["*", '["*"]', "https://app.example.com,*", "https://*.example.com"]
)
def test_cors_wildcard_with_credentials_stops_the_start(
    monkeypatch: pytest.MonkeyPatch, origins: str
) -> None:
    monkeypatch.setenv("CORS_ORIGINS", origins)
    with pytest.raises(ConfigError, match="^invalid setting CORS_ORIGINS: .*wildcards are refused"):
        load_settings()


def test_cors_wildcard_is_refused_even_past_validation(settings: Settings) -> None:
    unchecked = settings.model_copy(
        update={"cors_origins": ["*"], "jwt_secret": SecretStr("s" * 40)}
    )
    with pytest.raises(ConfigError, match="wildcards are refused"):
        create_app(unchecked)
