"""Rate limits over HTTP on both backends (in-memory, and the real Redis server), on a real
database: headers, 429 in the error shape after the burst, buckets per user / API key / IP, the
stricter auth group, exempt health endpoints, refused requests changing nothing, failing open.

Time is a fake clock injected into the backend, so no test waits or measures wall-clock time."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta

import httpx
import pytest
from redis.asyncio import Redis
from sqlalchemy import select

from core.models.audit import AuditLog
from core.models.identity import User
from core.ratelimit import MemoryBackend, RateLimiter, RedisBackend, parse_spec
from core.security.tokens import issue_access_token
from core.settings import Settings
from core.topology import Topology
from tests.helpers import TaskPerRequest, free_port
from tests.integration.identity_helpers import JWT_SECRET, PASSWORD, Api, running_api

REDIS_TEST_URL = "redis://127.0.0.1:6379/15"
# default: one request every 10 s, 4 at once; auth: one every 30 s, 2 at once
LIMITS = {"default": "6/minute;burst=4", "auth": "2/minute;burst=2"}


class FakeClock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Limited:
    api: Api
    clock: FakeClock
    limiter: RateLimiter
    backend: str

    @property
    def client(self) -> httpx.AsyncClient:
        return self.api.client

    async def token(self, role: str | None = None) -> tuple[uuid.UUID, dict[str, str]]:
        """A new user and a valid access token for it (minted, so no login is counted)."""
        user_id, _ = await self.api.user(role)
        token, _ = issue_access_token(JWT_SECRET, user_id, timedelta(minutes=15))
        return user_id, {"Authorization": f"Bearer {token}"}

    def client_from(self, ip: str) -> httpx.AsyncClient:
        transport = TaskPerRequest(app=self.api.app, client=(ip, 40000))
        return httpx.AsyncClient(transport=transport, base_url="http://testserver")


async def redis_keys(prefix: str) -> dict[str, int]:
    """Keys under `prefix` with their remaining time to live in ms."""
    redis = Redis.from_url(REDIS_TEST_URL)
    try:
        return {key.decode(): await redis.pttl(key) async for key in redis.scan_iter(f"{prefix}*")}
    finally:
        await redis.aclose()


async def delete_keys(prefix: str) -> None:
    redis = Redis.from_url(REDIS_TEST_URL)
    try:
        keys = [key async for key in redis.scan_iter(f"{prefix}*")]
        if keys:
            await redis.delete(*keys)
    finally:
        await redis.aclose()


@pytest.fixture(params=["memory", "redis"])
async def limited(
    request: pytest.FixtureRequest, settings: Settings, topology: Topology, database_url: str
) -> AsyncIterator[Limited]:
    backend = request.param
    limited_settings = Settings(
        env="test",
        data_dir=settings.data_dir,
        rate_limits=LIMITS,
        redis_url=REDIS_TEST_URL if backend == "redis" else None,
    )
    clock = FakeClock()
    prefix = f"idp-test:{uuid.uuid4().hex}:"
    async with running_api(limited_settings, topology, database_url) as api:
        limiter: RateLimiter = api.app.state.rate_limiter
        if backend == "redis":
            assert isinstance(limiter.backend, RedisBackend)
            limiter.backend.prefix = prefix
        else:
            assert isinstance(limiter.backend, MemoryBackend)
        limiter.backend.clock = clock
        try:
            yield Limited(api, clock, limiter, backend)
        finally:
            if backend == "redis":
                await delete_keys(prefix)


def limit_headers(response: httpx.Response) -> tuple[str, str, str]:
    return (
        response.headers["ratelimit-limit"],
        response.headers["ratelimit-remaining"],
        response.headers["ratelimit-reset"],
    )


def rate_limited(response: httpx.Response) -> dict[str, object]:
    assert response.status_code == 429, response.text
    body = response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"code", "message", "details", "request_id"}
    assert error["code"] == "rate_limited"
    assert error["request_id"] == response.headers["x-request-id"]
    assert response.headers["x-api-version"] == "1"
    assert error["details"]["retry_after"] == int(response.headers["retry-after"])
    assert response.headers["ratelimit-remaining"] == "0"
    return dict(error["details"])


# -- headers and 429 ------------------------------------------------------------------------
async def test_headers_on_every_response(limited: Limited) -> None:
    _, user = await limited.token()
    me = await limited.client.get("/auth/me", headers=user)
    assert me.status_code == 200
    assert limit_headers(me) == ("4", "3", "10")
    second = await limited.client.get("/auth/me", headers=user)
    assert limit_headers(second) == ("4", "2", "20")
    # errors too: a 401 (the caller's IP bucket) and an unknown route
    anonymous = await limited.client.get("/users")
    assert anonymous.status_code == 401 and limit_headers(anonymous) == ("4", "3", "10")
    missing = await limited.client.get("/no/such/route")
    assert missing.status_code == 404 and limit_headers(missing) == ("4", "2", "20")
    # the auth group has its own limit
    login = await limited.client.post(
        "/auth/login", json={"email": "x@example.com", "password": "p"}
    )
    assert login.status_code == 401 and limit_headers(login) == ("2", "1", "30")


async def test_429_after_the_burst_then_the_steady_rate(limited: Limited) -> None:
    _, user = await limited.token()
    remaining = [
        (await limited.client.get("/auth/me", headers=user)).headers["ratelimit-remaining"]
        for _ in range(4)
    ]
    assert remaining == ["3", "2", "1", "0"]

    refused = await limited.client.get("/auth/me", headers={**user, "X-Request-ID": "rl-1"})
    details = rate_limited(refused)
    assert details == {"group": "default", "limit": 4, "rate": "6/minute", "retry_after": 10}
    assert refused.headers["retry-after"] == "10"
    assert limit_headers(refused) == ("4", "0", "40")
    assert refused.json()["error"]["request_id"] == "rl-1"

    limited.clock.advance(4)
    assert rate_limited(await limited.client.get("/auth/me", headers=user))["retry_after"] == 6
    limited.clock.advance(6)
    for _ in range(3):  # one request per 10 s from now on
        allowed = await limited.client.get("/auth/me", headers=user)
        assert allowed.status_code == 200 and limit_headers(allowed) == ("4", "0", "40")
        rate_limited(await limited.client.get("/auth/me", headers=user))
        limited.clock.advance(10)

    limited.clock.advance(40)  # the reset: the whole burst is back
    full = await limited.client.get("/auth/me", headers=user)
    assert limit_headers(full) == ("4", "3", "10")


# -- who is counted -------------------------------------------------------------------------
async def test_separate_buckets_per_user_api_key_and_ip(limited: Limited) -> None:
    _, alice = await limited.token("maintainer")
    _, bob = await limited.token("viewer")
    created = await limited.client.post(
        "/api-keys", json={"name": "ci", "permissions": ["services:read"]}, headers=alice
    )
    assert created.status_code == 201, created.text
    key = created.json()["key"]
    limited.clock.advance(3600)  # every bucket full again

    for _ in range(4):
        assert (await limited.client.get("/auth/me", headers=alice)).status_code == 200
    rate_limited(await limited.client.get("/auth/me", headers=alice))

    # another user, and alice's API key, have buckets of their own
    assert limit_headers(await limited.client.get("/auth/me", headers=bob))[1] == "3"
    by_header = await limited.client.get("/auth/me", headers={"X-API-Key": key})
    assert by_header.status_code == 200 and limit_headers(by_header)[1] == "3"
    by_bearer = await limited.client.get("/auth/me", headers={"Authorization": f"Bearer {key}"})
    assert by_bearer.status_code == 200 and limit_headers(by_bearer)[1] == "2"  # the same key

    # unauthenticated callers are counted per IP
    for remaining in ("3", "2", "1", "0"):
        response = await limited.client.get("/users")
        assert response.status_code == 401 and limit_headers(response)[1] == remaining
    rate_limited(await limited.client.get("/users"))
    async with limited.client_from("10.9.8.7") as elsewhere:
        other_ip = await elsewhere.get("/users")
        assert other_ip.status_code == 401 and limit_headers(other_ip)[1] == "3"

    # a token that does not verify counts against the IP, a valid one against its user
    user_id, _ = await limited.token()
    expired, _ = issue_access_token(JWT_SECRET, user_id, timedelta(seconds=-5))
    forged, _ = issue_access_token("forged-secret-" + "f" * 32, user_id, timedelta(minutes=5))
    for token in (expired, forged, "a.b.c"):
        rate_limited(
            await limited.client.get("/auth/me", headers={"Authorization": f"Bearer {token}"})
        )
    assert (await limited.client.get("/auth/me", headers=bob)).status_code == 200


async def test_auth_group_is_stricter_and_separate(limited: Limited) -> None:
    user_id, email = await limited.api.user()
    first = await limited.api.login(email)
    await limited.api.login(email)
    refused = await limited.client.post("/auth/login", json={"email": email, "password": PASSWORD})
    assert rate_limited(refused) == {
        "group": "auth",
        "limit": 2,
        "rate": "2/minute",
        "retry_after": 30,
    }
    # refresh and logout share the auth group's bucket
    rate_limited(
        await limited.client.post("/auth/refresh", json={"refresh_token": first["refresh_token"]})
    )
    rate_limited(
        await limited.client.post("/auth/logout", json={"refresh_token": first["refresh_token"]})
    )
    # other routes, from the same IP and for the same user, are in the default group
    assert (await limited.client.get("/users")).status_code == 401
    me = await limited.client.get(
        "/auth/me", headers={"Authorization": f"Bearer {first['access_token']}"}
    )
    assert me.status_code == 200 and me.json()["user"]["id"] == str(user_id)

    limited.clock.advance(30)
    refreshed = await limited.client.post(
        "/auth/refresh", json={"refresh_token": first["refresh_token"]}
    )
    assert refreshed.status_code == 200 and limit_headers(refreshed) == ("2", "0", "60")


async def test_health_endpoints_are_exempt(limited: Limited) -> None:
    for _ in range(4):
        await limited.client.get("/users")
    rate_limited(await limited.client.get("/users"))  # this IP is over its limit
    for _ in range(10):
        response = await limited.client.get("/api/health")
        assert response.status_code == 200
        assert "ratelimit-limit" not in response.headers
        assert "retry-after" not in response.headers


# -- a refused request changes nothing --------------------------------------------------------
async def test_a_refused_request_changes_nothing(limited: Limited) -> None:
    _, admin = await limited.token("admin")
    for _ in range(4):
        assert (await limited.client.get("/auth/me", headers=admin)).status_code == 200
    email = f"never-{uuid.uuid4().hex[:8]}@example.com"
    refused = await limited.client.post(
        "/users", json={"email": email, "name": "Never", "password": PASSWORD}, headers=admin
    )
    rate_limited(refused)
    assert await limited.api.fetch(select(User).where(User.email == email)) == []

    # a refused login is not a failed login: no counter, no audit entry
    user_id, victim = await limited.api.user()
    async with limited.client_from("10.66.6.6") as attacker:
        for _ in range(2):
            wrong = {"email": victim, "password": "wrong password!"}
            assert (await attacker.post("/auth/login", json=wrong)).status_code == 401
        for _ in range(3):
            rate_limited(
                await attacker.post(
                    "/auth/login", json={"email": victim, "password": "wrong password!"}
                )
            )
    user = (await limited.api.fetch(select(User).where(User.id == user_id)))[0]
    assert user.failed_login_count == 2
    failures = await limited.api.fetch(
        select(AuditLog).where(
            AuditLog.resource_id == str(user_id), AuditLog.action == "auth.login.failure"
        ),
    )
    assert len(failures) == 2


# -- the backends -----------------------------------------------------------------------------
async def test_concurrent_requests_are_counted_exactly(limited: Limited) -> None:
    spec = parse_spec("10/hour")
    decisions = await asyncio.gather(
        *(limited.limiter.backend.hit("race", spec) for _ in range(60))
    )
    assert sum(d.allowed for d in decisions) == 10
    assert sorted(d.remaining for d in decisions if d.allowed) == list(range(10))

    _, user = await limited.token()
    responses = await asyncio.gather(
        *(limited.client.get("/auth/me", headers=user) for _ in range(12))
    )
    assert sorted(r.status_code for r in responses) == [200] * 4 + [429] * 8


@pytest.mark.parametrize("limited", ["redis"], indirect=True)
async def test_redis_keys_are_prefixed_and_expire(limited: Limited) -> None:
    # (the memory backend's expiry of idle buckets is covered by tests/unit/test_ratelimit.py)
    assert isinstance(limited.limiter.backend, RedisBackend)
    prefix = limited.limiter.backend.prefix
    user_id, user = await limited.token()
    await limited.client.get("/auth/me", headers=user)
    await limited.client.get("/auth/me", headers=user)
    keys = await redis_keys(prefix)
    assert set(keys) == {f"{prefix}default:user:{user_id}"}
    # the key lives until the bucket is full again (two requests: 20 s), not forever
    assert 10_000 < keys[f"{prefix}default:user:{user_id}"] <= 20_000


async def test_redis_clock_is_the_servers_by_default() -> None:
    prefix = f"idp-test:{uuid.uuid4().hex}:"
    backend = RedisBackend(Redis.from_url(REDIS_TEST_URL), prefix=prefix)
    try:
        spec = parse_spec("1/hour")
        assert (await backend.hit("k", spec)).allowed
        refused = await backend.hit("k", spec)
        assert not refused.allowed and 3590 < refused.retry_after <= 3600
    finally:
        await delete_keys(prefix)
        await backend.close()


# -- switched off, or Redis down ----------------------------------------------------------------
async def test_disabled_rate_limits(
    settings: Settings, topology: Topology, database_url: str
) -> None:
    off = Settings(
        env="test", data_dir=settings.data_dir, rate_limits=LIMITS, rate_limit_enabled=False
    )
    async with running_api(off, topology, database_url) as api:
        for _ in range(10):
            response = await api.client.get("/users")
            assert response.status_code == 401
            assert "ratelimit-limit" not in response.headers


async def test_redis_failure_fails_open_and_warns_once_a_minute(
    settings: Settings,
    topology: Topology,
    database_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    dead = Settings(
        env="test",
        data_dir=settings.data_dir,
        rate_limits=LIMITS,
        redis_url=f"redis://127.0.0.1:{free_port()}/0",  # nothing listens there
    )
    async with running_api(dead, topology, database_url) as api:
        limiter: RateLimiter = api.app.state.rate_limiter
        monotonic = FakeClock()
        limiter.monotonic = monotonic
        caplog.set_level(logging.WARNING, logger="idp.ratelimit")
        for _ in range(6):  # more than the limit: all allowed, without limit headers
            response = await api.client.get("/users")
            assert response.status_code == 401
            assert "ratelimit-limit" not in response.headers
        warnings = [r for r in caplog.records if r.name == "idp.ratelimit"]
        assert len(warnings) == 1
        assert "rate limits are not enforced" in warnings[0].getMessage()

        monotonic.advance(60)
        await api.client.get("/users")
        warnings = [r for r in caplog.records if r.name == "idp.ratelimit"]
        assert len(warnings) == 2
        assert "6 failure(s) since the last warning" in warnings[1].getMessage()
