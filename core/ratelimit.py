"""Rate limits: specs, the GCRA algorithm, and its in-memory and Redis backends.

A limit is written `COUNT/PERIOD[;burst=N]`, e.g. `600/minute;burst=100`: a sustained rate of
COUNT requests per PERIOD (one every PERIOD/COUNT seconds), with up to N requests at once
(`burst` defaults to COUNT). The algorithm is GCRA, the generic cell rate algorithm: one number
per bucket, the *theoretical arrival time* (TAT) of the next request. It behaves exactly like a
token bucket of capacity `burst` refilled at the sustained rate, and needs a single read and a
single write, so each backend applies it atomically:

- `MemoryBackend` (the default) keeps TATs in a dict; a hit runs without awaiting, so it is
  atomic on the event loop. Idle buckets (TAT in the past: as good as new) are swept, and the
  number of buckets is capped.
- `RedisBackend` (when `REDIS_URL` is set) runs the same arithmetic in one Lua script, so every
  API process shares the buckets; keys carry a prefix and expire when their bucket is full again.

If Redis fails at run time, `RateLimiter` fails open: the request is allowed and a warning is
logged at most once a minute.

Callers are grouped by route (`ROUTE_GROUPS`), each group with its own limit and buckets.
`KnownKeys` remembers which API keys have authenticated here, so that an unknown key is counted
in its client IP's bucket instead of getting a fresh bucket of its own (api/ratelimit.py).
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Protocol

from redis.exceptions import RedisError

from core.durations import format_duration, parse_duration
from core.errors import ConfigError

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from core.settings import Settings

log = logging.getLogger("idp.ratelimit")

Clock = Callable[[], float]

# -- route groups ---------------------------------------------------------------------------
DEFAULT_GROUP = "default"
AUTH_GROUP = "auth"  # counted per client IP only, whatever credential is sent
# Path prefix -> route group (None: exempt). The first match wins; a prefix matches the path
# itself and anything below it ("/auth/login" matches "/auth/login/", not "/auth/loginx").
# A domain that needs its own limit adds a row here and a default in DEFAULT_RATE_LIMITS.
ROUTE_GROUPS: tuple[tuple[str, str | None], ...] = (
    ("/api/health", None),  # load balancers probe it; never limited
    ("/auth/login", "auth"),  # password guessing
    ("/auth/refresh", "auth"),
    ("/auth/sso", "auth"),  # the login redirect flow: as strict as password logins
    ("/auth/logout", "auth"),
    ("/auth/mfa/disable", "auth"),  # a code guessed with a stolen session
    # The Temporal UI asks to decode each event's payloads separately: a long history is a
    # burst of hundreds of small requests from one operator.
    ("/api/temporal/codec/decode", "codec"),
    ("/api/temporal/codec/encode", "codec"),
)
DEFAULT_RATE_LIMITS: dict[str, str] = {
    DEFAULT_GROUP: "600/minute;burst=100",
    "auth": "20/minute;burst=10",
    "codec": "6000/minute;burst=1000",
}


def route_groups() -> set[str]:
    return {DEFAULT_GROUP} | {group for _, group in ROUTE_GROUPS if group}


def group_for_path(path: str) -> str | None:
    """The route group of a request path, or None when the path is exempt."""
    for prefix, group in ROUTE_GROUPS:
        if path == prefix or path.startswith(prefix.rstrip("/") + "/"):
            return group
    return DEFAULT_GROUP


# -- specs ----------------------------------------------------------------------------------
_PERIODS = {
    "second": 1.0,
    "minute": 60.0,
    "hour": 3600.0,
    "day": 86400.0,
}
_PERIOD_ALIASES = {
    alias: name
    for name, aliases in {
        "second": ("s", "sec", "secs", "second", "seconds"),
        "minute": ("m", "min", "mins", "minute", "minutes"),
        "hour": ("h", "hr", "hrs", "hour", "hours"),
        "day": ("d", "day", "days"),
    }.items()
    for alias in aliases
}
_SPEC = re.compile(r"^\s*(\d+)\s*/\s*([A-Za-z0-9.]+)\s*(?:;\s*burst\s*=\s*(\d+)\s*)?$")
SPEC_HELP = (
    "use COUNT/PERIOD[;burst=N], e.g. 600/minute;burst=100 "
    "(PERIOD: second, minute, hour, day or a duration such as 10s)"
)


@dataclass(frozen=True)
class RateSpec:
    """`count` requests per `period` seconds sustained, up to `burst` at once."""

    count: int
    period: float
    burst: int

    @property
    def interval(self) -> float:
        """Seconds between requests at the sustained rate (GCRA's emission interval)."""
        return self.period / self.count

    @property
    def window(self) -> float:
        """Seconds for an empty bucket to fill up again: `burst` intervals."""
        return self.interval * self.burst

    @property
    def rate(self) -> str:
        for name, seconds in _PERIODS.items():
            if self.period == seconds:
                return f"{self.count}/{name}"
        return f"{self.count}/{format_duration(timedelta(seconds=self.period))}"

    def __str__(self) -> str:
        return f"{self.rate};burst={self.burst}"


def parse_spec(text: Any) -> RateSpec:
    """Parse `600/minute;burst=100`; ValueError with a one-line message when it is not one."""
    if isinstance(text, RateSpec):
        return text
    match = _SPEC.match(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"{text!r} is not a rate limit; {SPEC_HELP}")
    count = int(match.group(1))
    unit = _PERIOD_ALIASES.get(match.group(2).lower())
    if unit is not None:
        period = _PERIODS[unit]
    else:
        try:
            period = parse_duration(match.group(2)).total_seconds()
        except ValueError:
            raise ValueError(f"{text!r} is not a rate limit; {SPEC_HELP}") from None
    burst = int(match.group(3)) if match.group(3) is not None else count
    if count < 1 or burst < 1 or period <= 0:
        raise ValueError(f"{text!r}: the count, the period and the burst must be positive")
    return RateSpec(count, period, burst)


def parse_rate_limits(value: Any) -> dict[str, str]:
    """The RATE_LIMITS setting: a mapping (or JSON object, or `group=spec,group=spec` text) of
    route group -> spec, merged over DEFAULT_RATE_LIMITS; specs are normalised."""
    if value is None or value == "":
        given: dict[Any, Any] = {}
    elif isinstance(value, Mapping):
        given = dict(value)
    elif isinstance(value, str):
        text = value.strip()
        if text.startswith("{"):
            try:
                loaded = json.loads(text)
            except json.JSONDecodeError:
                raise ValueError("is not a JSON object of route group -> limit") from None
            if not isinstance(loaded, dict):
                raise ValueError("is not a JSON object of route group -> limit")
            given = loaded
        else:
            given = {}
            for part in filter(None, (p.strip() for p in text.split(","))):
                group, sep, spec = part.partition("=")
                if not sep:
                    raise ValueError(
                        f"{part!r}: expected GROUP=LIMIT, e.g. auth=20/minute;burst=10"
                    )
                given[group.strip()] = spec.strip()
    else:
        raise ValueError("expected a mapping of route group -> limit")
    known = route_groups()
    out = dict(DEFAULT_RATE_LIMITS)
    for group, spec in given.items():
        if group not in known:
            raise ValueError(f"unknown route group {group!r} (known: {', '.join(sorted(known))})")
        try:
            out[group] = str(parse_spec(spec))
        except ValueError as exc:
            raise ValueError(f"{group}: {exc}") from None
    return out


# -- the algorithm -----------------------------------------------------------------------------
_EPSILON = 1e-9  # float slack, so that exactly-on-time requests are not refused


@dataclass(frozen=True)
class Decision:
    allowed: bool
    limit: int  # the burst: the most requests allowed at once
    remaining: int  # requests allowed right now, after this one
    reset_after: float  # seconds until the bucket is full again
    retry_after: float  # seconds until a request is allowed again (0 when allowed)

    @property
    def reset_seconds(self) -> int:
        return max(0, math.ceil(self.reset_after - _EPSILON))

    @property
    def retry_after_seconds(self) -> int:
        return max(1, math.ceil(self.retry_after - _EPSILON))

    def headers(self) -> dict[str, str]:
        return {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.reset_seconds),
        }


def decide(spec: RateSpec, allowed: bool, backlog: float, retry_after: float) -> Decision:
    """A decision from GCRA's outcome: `backlog` is TAT - now after the request."""
    remaining = 0
    if allowed:
        remaining = max(0, math.floor((spec.window - backlog) / spec.interval + _EPSILON))
    return Decision(allowed, spec.burst, remaining, max(0.0, backlog), max(0.0, retry_after))


def gcra(spec: RateSpec, tat: float | None, now: float) -> tuple[Decision, float | None]:
    """One request at `now` against a bucket whose TAT is `tat` (None: a new bucket).

    Returns the decision and the new TAT to store (None when refused: nothing changes).
    """
    tat = now if tat is None or tat < now else tat
    new_tat = tat + spec.interval
    allow_at = new_tat - spec.window
    if allow_at - now > _EPSILON:
        return decide(spec, False, tat - now, allow_at - now), None
    return decide(spec, True, new_tat - now, 0.0), new_tat


# -- backends ----------------------------------------------------------------------------------
class BackendError(Exception):
    """The backend could not answer (Redis down or slow); the limiter fails open."""


class RateLimitBackend(Protocol):
    async def hit(self, key: str, spec: RateSpec) -> Decision: ...

    async def close(self) -> None: ...


class MemoryBackend:
    """Buckets in this process. Atomic on one event loop: `hit` never awaits."""

    SWEEP_INTERVAL = 60.0

    def __init__(self, *, clock: Clock = time.monotonic, max_keys: int = 100_000) -> None:
        self.clock = clock
        self.max_keys = max_keys
        self._tats: OrderedDict[str, float] = OrderedDict()  # least recently used first
        self._next_sweep = clock() + self.SWEEP_INTERVAL

    def __len__(self) -> int:
        return len(self._tats)

    async def hit(self, key: str, spec: RateSpec) -> Decision:
        now = self.clock()
        decision, new_tat = gcra(spec, self._tats.get(key), now)
        if new_tat is not None:
            self._tats[key] = new_tat
            self._tats.move_to_end(key)
            self._evict(now)
        return decision

    def _evict(self, now: float) -> None:
        if now >= self._next_sweep:  # a bucket whose TAT has passed is as good as a new one
            self._next_sweep = now + self.SWEEP_INTERVAL
            for key in [key for key, tat in self._tats.items() if tat <= now]:
                del self._tats[key]
        while len(self._tats) > self.max_keys:  # still too many: forget the least recent
            self._tats.popitem(last=False)

    async def close(self) -> None:
        self._tats.clear()


# KEYS[1]: the bucket; ARGV: interval, window, now (empty: the Redis server's clock).
# Returns {allowed, backlog, retry_after} with the numbers as strings (Lua numbers would be
# truncated to integers in the reply). The TAT is stored as a number (17 significant digits)
# and expires when the bucket is full again.
_GCRA_LUA = """
local interval = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
if not now then
  if redis.replicate_commands then redis.replicate_commands() end  -- Redis < 5 needs it
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local tat = tonumber(redis.call('GET', KEYS[1]))
if not tat or tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - window
if allow_at - now > 1e-9 then
  return {0, string.format('%.17g', tat - now), string.format('%.17g', allow_at - now)}
end
local ttl = math.ceil((new_tat - now) * 1000)
redis.call('SET', KEYS[1], string.format('%.17g', new_tat), 'PX', ttl)
return {1, string.format('%.17g', new_tat - now), '0'}
"""


class RedisBackend:
    """Buckets in Redis, shared by every API process: one Lua script per request."""

    def __init__(
        self, client: Redis, *, prefix: str = "idp:ratelimit:", clock: Clock | None = None
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.clock = clock  # None: the Redis server's clock (the same for every API process)
        self._script = client.register_script(_GCRA_LUA)

    @classmethod
    def from_url(
        cls, url: str, *, prefix: str = "idp:ratelimit:", timeout: float = 1.0
    ) -> RedisBackend:
        from redis.asyncio import Redis

        client = Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        return cls(client, prefix=prefix)

    async def hit(self, key: str, spec: RateSpec) -> Decision:
        now = "" if self.clock is None else repr(self.clock())
        try:
            allowed, backlog, retry_after = await self._script(
                keys=[self.prefix + key], args=[repr(spec.interval), repr(spec.window), now]
            )
        except (RedisError, OSError, TimeoutError) as exc:
            raise BackendError(str(exc) or type(exc).__name__) from exc
        return decide(spec, bool(allowed), float(backlog), float(retry_after))

    async def close(self) -> None:
        await self.client.aclose()


# -- known API keys --------------------------------------------------------------------------
class KnownKeys:
    """Hashes of the API keys that authenticated in this process (or were created here), most
    recent last, at most `max_keys`. Only a key found here gets a rate-limit bucket of its own:
    a flood of random `idpk_` keys is counted in the sender's IP bucket, and cannot add entries
    (only a successful authentication adds one)."""

    def __init__(self, max_keys: int = 10_000) -> None:
        self.max_keys = max_keys
        self._hashes: OrderedDict[str, None] = OrderedDict()

    def __contains__(self, key_hash: object) -> bool:
        return key_hash in self._hashes

    def __len__(self) -> int:
        return len(self._hashes)

    def add(self, key_hash: str) -> None:
        self._hashes[key_hash] = None
        self._hashes.move_to_end(key_hash)
        while len(self._hashes) > self.max_keys:
            self._hashes.popitem(last=False)

    def discard(self, key_hash: str) -> None:
        self._hashes.pop(key_hash, None)


# -- the limiter -------------------------------------------------------------------------------
class RateLimiter:
    """Route groups' limits over a backend; fails open (and says so) when the backend fails."""

    WARNING_INTERVAL = 60.0

    def __init__(
        self,
        limits: Mapping[str, str | RateSpec],
        backend: RateLimitBackend,
        *,
        enabled: bool = True,
        monotonic: Clock = time.monotonic,
    ) -> None:
        self.limits = {group: parse_spec(spec) for group, spec in limits.items()}
        if DEFAULT_GROUP not in self.limits:
            self.limits[DEFAULT_GROUP] = parse_spec(DEFAULT_RATE_LIMITS[DEFAULT_GROUP])
        self.backend = backend
        self.enabled = enabled
        self.known_keys = KnownKeys()
        self.monotonic = monotonic
        self._next_warning = -math.inf
        self._failures = 0

    @classmethod
    def from_settings(cls, settings: Settings) -> RateLimiter:
        backend: RateLimitBackend
        if settings.redis_url and settings.rate_limit_enabled:
            try:
                backend = RedisBackend.from_url(settings.redis_url)
            except ValueError as exc:
                raise ConfigError(f"invalid setting REDIS_URL: {exc}") from None
        else:
            backend = MemoryBackend()
        return cls(settings.rate_limits, backend, enabled=settings.rate_limit_enabled)

    def spec_for(self, group: str) -> RateSpec:
        return self.limits.get(group) or self.limits[DEFAULT_GROUP]

    async def hit(self, group: str, identity: str) -> Decision | None:
        """Count one request of `identity` in `group`; None when the backend failed (allow)."""
        try:
            return await self.backend.hit(f"{group}:{identity}", self.spec_for(group))
        except BackendError as exc:
            self._failures += 1
            now = self.monotonic()
            if now >= self._next_warning:
                self._next_warning = now + self.WARNING_INTERVAL
                log.warning(
                    "rate limits are not enforced: the backend failed (%s); requests are "
                    "allowed (%d failure(s) since the last warning)",
                    exc,
                    self._failures,
                )
                self._failures = 0
            return None

    async def close(self) -> None:
        await self.backend.close()
