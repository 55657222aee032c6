"""Rate limits without servers: spec parsing, GCRA on a fake clock (burst, steady rate, reset,
retry_after), the in-memory backend's bounds, the RATE_LIMITS settings, route groups and how a
caller is identified."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from pathlib import Path

import pytest

from api.ratelimit import caller_identity, client_ip
from core.errors import ConfigError
from core.ratelimit import (
    DEFAULT_RATE_LIMITS,
    Decision,
    KnownKeys,
    MemoryBackend,
    RateLimiter,
    RateSpec,
    RedisBackend,
    group_for_path,
    parse_spec,
)
from core.security.tokens import issue_access_token, token_hash
from core.settings import Settings, load_settings

SECRET = "unit-test-jwt-secret-" + "z" * 32


class FakeClock:
    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


# -- specs ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "spec", "canonical"),
    [
        ("600/minute;burst=100", RateSpec(600, 60, 100), "600/minute;burst=100"),
        ("20/min", RateSpec(20, 60, 20), "20/minute;burst=20"),  # burst defaults to the count
        ("5 / hours ; burst = 2", RateSpec(5, 3600, 2), "5/hour;burst=2"),
        ("10/s", RateSpec(10, 1, 10), "10/second;burst=10"),
        ("1000/day;burst=50", RateSpec(1000, 86400, 50), "1000/day;burst=50"),
        ("100/10s", RateSpec(100, 10, 100), "100/10s;burst=100"),
        ("7/1h30m;burst=3", RateSpec(7, 5400, 3), "7/1h30m;burst=3"),
        ("3/60m", RateSpec(3, 3600, 3), "3/hour;burst=3"),
    ],
)
def test_parse_spec(text: str, spec: RateSpec, canonical: str) -> None:
    parsed = parse_spec(text)
    assert parsed == spec
    assert str(parsed) == canonical
    assert parse_spec(str(parsed)) == parsed


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("20/fortnight", "is not a rate limit"),
        ("twenty/minute", "is not a rate limit"),
        ("20 per minute", "is not a rate limit"),
        ("20/minute;burst=", "is not a rate limit"),
        ("20/minute;bursts=3", "is not a rate limit"),
        ("-1/minute", "is not a rate limit"),
        ("0/minute", "must be positive"),
        ("5/minute;burst=0", "must be positive"),
        ("5/0s", "must be positive"),
        ("", "is not a rate limit"),
    ],
)
def test_bad_spec_is_a_one_line_error(text: str, needle: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_spec(text)
    assert needle in str(info.value)
    assert repr(text) in str(info.value) and "\n" not in str(info.value)


def test_spec_arithmetic() -> None:
    spec = parse_spec("600/minute;burst=100")
    assert spec.interval == pytest.approx(0.1)
    assert spec.window == pytest.approx(10.0)
    assert spec.rate == "600/minute"


# -- the algorithm ------------------------------------------------------------------------
async def hits(backend: MemoryBackend, spec: RateSpec, n: int, key: str = "k") -> list[Decision]:
    return [await backend.hit(key, spec) for _ in range(n)]


async def test_burst_then_steady_rate() -> None:
    clock = FakeClock()
    backend = MemoryBackend(clock=clock)
    spec = parse_spec("6/minute;burst=3")  # one every 10 s, 3 at once

    burst = await hits(backend, spec, 3)
    assert [d.allowed for d in burst] == [True, True, True]
    assert [d.remaining for d in burst] == [2, 1, 0]
    assert [d.reset_seconds for d in burst] == [10, 20, 30]
    assert all(d.limit == 3 for d in burst)

    refused = await backend.hit("k", spec)
    assert not refused.allowed
    assert (refused.remaining, refused.retry_after_seconds, refused.reset_seconds) == (0, 10, 30)
    assert refused.headers() == {
        "RateLimit-Limit": "3",
        "RateLimit-Remaining": "0",
        "RateLimit-Reset": "30",
    }

    # refused requests take nothing: hammering does not push the next slot further away
    clock.advance(4)
    for _ in range(5):
        again = await backend.hit("k", spec)
        assert not again.allowed and again.retry_after_seconds == 6
    clock.advance(6)

    # from now on, one request every 10 s (and not one more)
    for _ in range(4):
        allowed = await backend.hit("k", spec)
        assert allowed.allowed and allowed.remaining == 0 and allowed.reset_seconds == 30
        assert not (await backend.hit("k", spec)).allowed
        clock.advance(10)


async def test_reset_refills_the_whole_burst() -> None:
    clock = FakeClock()
    backend = MemoryBackend(clock=clock)
    spec = parse_spec("6/minute;burst=3")
    last = (await hits(backend, spec, 3))[-1]
    clock.advance(last.reset_after)  # the bucket is full again
    again = await hits(backend, spec, 4)
    assert [d.allowed for d in again] == [True, True, True, False]
    assert again[0].remaining == 2


async def test_partial_refill_and_fractional_retry_after() -> None:
    clock = FakeClock()
    backend = MemoryBackend(clock=clock)
    spec = parse_spec("6/minute;burst=3")
    await hits(backend, spec, 3)
    clock.advance(25)  # two and a half intervals: two requests are back
    decisions = await hits(backend, spec, 3)
    assert [d.allowed for d in decisions] == [True, True, False]
    assert decisions[0].remaining == 1
    assert decisions[2].retry_after == pytest.approx(5.0)

    odd = parse_spec("7/minute;burst=1")  # one every 8.57 s: headers round up
    await backend.hit("odd", odd)
    clock.advance(0.5)
    refused = await backend.hit("odd", odd)
    assert refused.retry_after == pytest.approx(60 / 7 - 0.5)
    assert refused.retry_after_seconds == 9 and refused.reset_seconds == 9


async def test_keys_are_independent() -> None:
    clock = FakeClock()
    backend = MemoryBackend(clock=clock)
    spec = parse_spec("1/minute")
    assert (await backend.hit("a", spec)).allowed
    assert not (await backend.hit("a", spec)).allowed
    assert (await backend.hit("b", spec)).allowed


async def test_concurrent_hits_are_exact() -> None:
    backend = MemoryBackend(clock=FakeClock())
    spec = parse_spec("10/hour")
    decisions = await asyncio.gather(*(backend.hit("k", spec) for _ in range(50)))
    assert sum(d.allowed for d in decisions) == 10


async def test_memory_is_bounded_and_idle_buckets_expire() -> None:
    clock = FakeClock()
    backend = MemoryBackend(clock=clock, max_keys=3)
    spec = parse_spec("6/minute;burst=3")
    for key in "abcde":
        await backend.hit(key, spec)
    assert len(backend) == 3  # the least recently used were forgotten
    assert (await backend.hit("e", spec)).remaining == 1  # the most recent were kept

    clock.advance(MemoryBackend.SWEEP_INTERVAL + 1)  # every bucket is full again: idle
    await backend.hit("z", spec)
    assert len(backend) == 1


# -- settings -----------------------------------------------------------------------------
def test_rate_limit_settings_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("REDIS_URL", "RATE_LIMITS", "RATE_LIMIT_ENABLED"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings()
    assert settings.rate_limit_enabled is True
    assert settings.redis_url is None
    assert settings.rate_limits == DEFAULT_RATE_LIMITS
    assert (
        parse_spec(settings.rate_limits["auth"]).burst
        < parse_spec(settings.rate_limits["default"]).burst
    )


def test_rate_limits_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RATE_LIMITS", '{"auth": "5/minute;burst=2"}')
    monkeypatch.setenv("RATE_LIMIT_ENABLED", "false")
    settings = load_settings()
    assert settings.rate_limits == {**DEFAULT_RATE_LIMITS, "auth": "5/minute;burst=2"}
    assert settings.rate_limit_enabled is False
    monkeypatch.setenv("RATE_LIMITS", "default=1000/hour, auth=3/min")  # the compact form
    assert load_settings().rate_limits == {
        **DEFAULT_RATE_LIMITS,
        "default": "1000/hour;burst=1000",
        "auth": "3/minute;burst=3",
    }


def test_rate_limits_from_a_config_file_and_overrides(tmp_path: Path) -> None:
    config = tmp_path / "idp.yaml"
    config.write_text("rate_limits:\n  default: 100/minute;burst=20\n")
    assert load_settings(config).rate_limits["default"] == "100/minute;burst=20"
    top = load_settings(config, {"rate_limits": "default=50/minute"})
    assert top.rate_limits["default"] == "50/minute;burst=50"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            '{"auth": "20/fortnight"}',
            "invalid setting RATE_LIMITS: auth: '20/fortnight' is not a rate limit; use ",
        ),
        ("default=0/minute", "invalid setting RATE_LIMITS: default: '0/minute': the count"),
        ("auht=5/minute", "invalid setting RATE_LIMITS: unknown route group 'auht' (known: auth"),
        ("auth", "invalid setting RATE_LIMITS: 'auth': expected GROUP=LIMIT"),
        ('{"auth": ', "invalid setting RATE_LIMITS: is not a JSON object"),
        ({"default": 5}, "invalid setting RATE_LIMITS: default: 5 is not a rate limit"),
    ],
)
def test_bad_rate_limits_are_one_line_errors(value: object, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(overrides={"RATE_LIMITS": value})
    assert str(info.value).startswith(message)
    assert "\n" not in str(info.value)


async def test_backend_follows_redis_url() -> None:
    memory = RateLimiter.from_settings(Settings(redis_url=None))
    assert isinstance(memory.backend, MemoryBackend)
    assert memory.spec_for("auth") == parse_spec(DEFAULT_RATE_LIMITS["auth"])
    assert memory.spec_for("no-such-group") == parse_spec(DEFAULT_RATE_LIMITS["default"])
    redis = RateLimiter.from_settings(Settings(redis_url="redis://127.0.0.1:6379/15"))
    assert isinstance(redis.backend, RedisBackend)  # built lazily: nothing connects yet
    await redis.close()
    disabled = RateLimiter.from_settings(
        Settings(redis_url="redis://127.0.0.1:6379/15", rate_limit_enabled=False)
    )
    assert not disabled.enabled and isinstance(disabled.backend, MemoryBackend)
    with pytest.raises(ConfigError, match="^invalid setting REDIS_URL: "):
        RateLimiter.from_settings(Settings(redis_url="http://not-redis"))


# -- route groups and callers -------------------------------------------------------------
@pytest.mark.parametrize(
    ("path", "group"),
    [
        ("/api/health", None),
        ("/api/health/ready", None),
        ("/api/healthz", "default"),
        ("/auth/login", "auth"),
        ("/auth/login/", "auth"),
        ("/auth/refresh", "auth"),
        ("/auth/logout", "auth"),
        ("/auth/sso/github/callback", "auth"),
        ("/auth/sso/mfa", "auth"),
        ("/auth/mfa/disable", "auth"),
        ("/auth/mfa/setup", "default"),
        ("/auth/loginx", "default"),
        ("/auth/me", "default"),
        ("/users", "default"),
        ("/", "default"),
    ],
)
def test_route_groups(path: str, group: str | None) -> None:
    assert group_for_path(path) == group


def scope(headers: dict[str, str], ip: str = "10.1.2.3") -> dict[str, object]:
    return {
        "type": "http",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": (ip, 4242),
    }


def test_caller_identity() -> None:
    user_id = uuid.uuid4()
    token, _ = issue_access_token(SECRET, user_id, timedelta(minutes=5))
    key = "idpk_" + "k" * 43
    expired, _ = issue_access_token(SECRET, user_id, timedelta(seconds=-5))
    forged, _ = issue_access_token("other-secret-" + "y" * 32, user_id, timedelta(minutes=5))

    known = KnownKeys()
    known.add(token_hash(key))

    assert caller_identity(scope({"Authorization": f"Bearer {token}"}), SECRET) == (
        f"user:{user_id}"
    )
    assert caller_identity(scope({"X-API-Key": key}), SECRET, known) == f"key:{token_hash(key)}"
    assert caller_identity(scope({"authorization": f"bearer {key}"}), SECRET, known) == (
        f"key:{token_hash(key)}"
    )
    # a key that has not authenticated here is counted against the IP, as is a random one
    assert caller_identity(scope({"X-API-Key": key}), SECRET) == "ip:10.1.2.3"
    random_key = "idpk_" + "r" * 43
    assert caller_identity(scope({"X-API-Key": random_key}), SECRET, known) == "ip:10.1.2.3"
    for headers in (
        {},
        {"Authorization": f"Bearer {expired}"},
        {"Authorization": f"Bearer {forged}"},
        {"Authorization": "Bearer a.b.c"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Bearer idpr_refresh-token"},
        {"X-API-Key": "not-a-key"},
        # authentication uses Authorization when both are sent; so does the limiter
        {"Authorization": "Bearer garbage", "X-API-Key": key},
    ):
        assert caller_identity(scope(headers), SECRET) == "ip:10.1.2.3", headers
    assert caller_identity(scope({"Authorization": f"Bearer {token}"}), None) == "ip:10.1.2.3"


def test_client_ip_groups_ipv6_by_64_and_unmaps_ipv4() -> None:
    assert client_ip(scope({}, "2001:db8:1:2:aaaa::1")) == "ip:2001:db8:1:2::/64"
    assert client_ip(scope({}, "2001:db8:1:2:ffff::9")) == "ip:2001:db8:1:2::/64"
    assert client_ip(scope({}, "2001:db8:1:3::1")) == "ip:2001:db8:1:3::/64"
    assert client_ip(scope({}, "::ffff:10.1.2.3")) == "ip:10.1.2.3"
    assert client_ip(scope({}, "10.1.2.3")) == "ip:10.1.2.3"
    assert client_ip({"type": "http", "headers": []}) == "ip:unknown"


def test_known_keys_are_bounded_and_forgotten_least_recent_first() -> None:
    known = KnownKeys(max_keys=2)
    for digest in ("a", "b", "a", "c"):  # "a" used again: "b" is the least recent
        known.add(digest)
    assert "a" in known and "c" in known and "b" not in known and len(known) == 2
    known.discard("a")
    known.discard("never added")
    assert "a" not in known and len(known) == 1
