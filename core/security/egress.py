"""The egress guard: every request the platform sends for a user goes to a vetted address.

Users name destinations (a health check's endpoint, a webhook channel's URL, an SMTP host, a
provider's OpenCost or Cost Explorer URL) that the platform's workers then call from inside
the platform's network. Unguarded, that is server-side request forgery: a probe of
`http://169.254.169.254/` reads the cloud's instance credentials, `http://127.0.0.1:7233`
reaches Temporal, `10.0.0.0/8` the internal services. So:

- A name is **resolved**, and every address it resolves to is checked. Loopback, link-local
  (with 169.254.169.254), private, unique-local, shared (CGNAT), unspecified, multicast,
  reserved and documentation ranges are refused, also when written as an IPv4-mapped,
  IPv4-compatible, NAT64 or 6to4 IPv6 address, or as a decimal/octal/hex IPv4 form (the
  system resolver turns those into the address they mean, and that address is checked).
- Unless the address is within `EGRESS_ALLOWED_CIDRS` (comma-separated CIDRs; empty by
  default in every mode): an operator allows an internal range on purpose.
- The connection is made to the **vetted address itself** (a custom httpcore network backend
  for httpx, a pinned socket for SMTP): the name is never resolved a second time, so a DNS
  answer that changes between the check and the connection (DNS rebinding) cannot move the
  request onto a refused address. TLS still verifies the certificate for the name (SNI and
  the Host header keep the name).
- Each new connection is checked, so a redirect, were one followed, is checked again. The
  platform's callers follow none.

Creation checks (`check_url`, `check_host`) answer a 422 naming the address and the setting;
a refused connection raises `EgressRefused`, which the callers record as the attempt's error.

Not guarded, on purpose: the platform's own configured hosts (SLACK_API_URL, the Git hosts'
APIs of GIT_HOST_APIS, OPENCOST_URL, AWS_COST_EXPLORER_URL, the SSO issuer), which an operator
sets, and the deploy verification of the platform's own local processes
(`core/deploy/local.py` probes 127.0.0.1 ports it started itself).
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
import typing
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

import anyio
import httpcore
import httpx

from core.db import transactions
from core.errors import ValidationFailed

SETTING = "EGRESS_ALLOWED_CIDRS"
ERROR_CODE = "egress_refused"
DEFAULT_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20)
RESOLVE_TIMEOUT = 5.0  # seconds a creation check waits for DNS before leaving it to send time

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
#: (host, port) -> the addresses it resolves to, as strings (the system resolver by default).
Resolver = Callable[[str, int], Awaitable[list[str]]]


def _nets(*cidrs: str) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(c) for c in cidrs)


# What each refused range is, most specific first. IPv6 forms that carry an IPv4 address
# (mapped, compatible, NAT64, 6to4) are judged by that IPv4 address (`_effective`).
_REFUSED: tuple[tuple[str, tuple[Network, ...]], ...] = (
    ("unspecified", _nets("0.0.0.0/32", "::/128")),
    ("loopback", _nets("127.0.0.0/8", "::1/128")),
    ("link-local (cloud metadata)", _nets("169.254.169.254/32", "fd00:ec2::254/128")),
    ("link-local", _nets("169.254.0.0/16", "fe80::/10")),
    ("private", _nets("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")),
    ("unique-local", _nets("fc00::/7")),
    ("shared (CGNAT)", _nets("100.64.0.0/10")),
    ("multicast", _nets("224.0.0.0/4", "ff00::/8")),
    (
        "reserved",
        _nets(
            "0.0.0.0/8",  # "this network"
            "192.0.0.0/24",  # IETF protocol assignments
            "192.0.2.0/24",  # documentation (TEST-NET-1..3)
            "198.51.100.0/24",
            "203.0.113.0/24",
            "192.88.99.0/24",  # 6to4 relay anycast
            "198.18.0.0/15",  # benchmarking
            "240.0.0.0/4",  # reserved, and the broadcast address
            "::/96",  # IPv4-compatible (deprecated): judged as such, never reachable as-is
            "64:ff9b:1::/48",  # local-use NAT64
            "100::/64",  # discard-only
            "2001::/32",  # Teredo (its IPv4 server and client are obfuscated in it)
            "2001:10::/28",  # ORCHID
            "2001:20::/28",  # ORCHIDv2
            "2001:db8::/32",  # documentation
            "fec0::/10",  # site-local (deprecated)
        ),
    ),
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_SIX_TO_FOUR = ipaddress.ip_network("2002::/16")
_COMPATIBLE = ipaddress.ip_network("::/96")


def parse_cidrs(value: str | Iterable[str] | None) -> tuple[str, ...]:
    """`value` (comma-separated, or a list) as normalised CIDR strings; ValueError naming the
    entry that is not one. A bare address is its own /32 or /128; host bits are cleared."""
    if value is None:
        return ()
    entries = value.split(",") if isinstance(value, str) else list(value)
    found: list[str] = []
    for entry in entries:
        text = str(entry).strip()
        if not text:
            continue
        try:
            network = ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise ValueError(
                f"{text!r} is not a CIDR (expected e.g. 10.20.0.0/16,fd00:1::/64)"
            ) from None
        if str(network) not in found:
            found.append(str(network))
    return tuple(found)


def _effective(address: Address) -> Address:
    """The IPv4 address an IPv6 form stands for (mapped, compatible, NAT64, 6to4), else itself."""
    if isinstance(address, ipaddress.IPv4Address):
        return address
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _NAT64 or (address in _COMPATIBLE and int(address) > 1):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address.sixtofour is not None:
        return address.sixtofour
    return address


def range_of(address: Address) -> str | None:
    """Which refused range `address` is in ("loopback", "private", ...), None if public."""
    for candidate in dict.fromkeys((_effective(address), address)):
        for name, networks in _REFUSED:
            if any(_within(candidate, network) for network in networks):
                return name
    return None


def _within(address: Address, network: Network) -> bool:
    return address.version == network.version and address in network


def parse_address(text: str) -> Address:
    """An address as resolvers and URLs write it (an IPv6 zone, `%eth0`, is dropped)."""
    return ipaddress.ip_address(text.strip("[]").split("%", 1)[0])


def shown(address: Address) -> str:
    """`address` as people write it (an IPv4-mapped IPv6 address with its IPv4 part dotted)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return f"::ffff:{address.ipv4_mapped}"
    return str(address)


def suggestion(address: Address) -> str:
    """The setting that would allow `address` alone (a mapped address: its IPv4 address)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    bits = 32 if isinstance(address, ipaddress.IPv4Address) else 128
    return f"{SETTING}={address}/{bits}"


class EgressRefused(Exception):
    """A destination the guard refused: `host` resolved to `address`, which is `reason`."""

    def __init__(self, host: str, address: Address, reason: str, *, public: bool = True) -> None:
        self.host = host
        self.address = address
        self.reason = reason
        text = shown(address)
        literal = parse_or_none(host) == address
        said = f"{text} is" if literal else f"{host} resolves to {text},"
        if public:
            why = (
                f"{said} {'an' if reason[0] in 'aeiou' else 'a'} {reason} address; the platform "
                "does not send requests for users to "
                "loopback, link-local, private or reserved addresses"
            )
        else:
            why = f"{said} {'' if literal else 'which is '}not within {SETTING} ({reason})"
        super().__init__(
            f"{why}. To allow it, an operator sets {suggestion(address)} "
            f"(comma-separated CIDRs) on the API and the workers"
        )


def parse_or_none(text: str) -> Address | None:
    try:
        return parse_address(text)
    except ValueError:
        return None


async def system_resolver(host: str, port: int) -> list[str]:
    """The addresses the system resolver gives `host` (in its order, without repeats)."""
    infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


@dataclass(frozen=True)
class EgressPolicy:
    """What users' requests may reach: public addresses (unless `public` is False) and the
    `allowed` networks. `resolver` is the system's unless a test injects one."""

    allowed: tuple[str, ...] = ()
    public: bool = True
    resolver: Resolver | None = field(default=None, compare=False, repr=False)

    @classmethod
    def of(cls, settings: Any) -> EgressPolicy:
        """The policy of a `core.settings.Settings` (its EGRESS_ALLOWED_CIDRS)."""
        return cls(allowed=tuple(settings.egress_allowed_cidrs))

    @classmethod
    def parse(cls, cidrs: str | Iterable[str], **kwargs: Any) -> EgressPolicy:
        return cls(allowed=parse_cidrs(cidrs), **kwargs)

    def only_allowed(self) -> EgressPolicy:
        """This policy refusing public addresses too: only the allowed networks remain."""
        return replace(self, public=False)

    def with_resolver(self, resolver: Resolver) -> EgressPolicy:
        return replace(self, resolver=resolver)

    def _networks(self) -> tuple[Network, ...]:
        return tuple(ipaddress.ip_network(c) for c in self.allowed)

    def refusal(self, address: Address) -> str | None:
        """Why `address` is refused (its range), or None when it may be reached."""
        networks = self._networks()
        candidates = dict.fromkeys((address, _effective(address)))
        if any(_within(a, n) for a in candidates for n in networks):
            return None
        reason = range_of(address)
        if reason is None and not self.public:
            return "a public address"
        return reason

    async def resolve(self, host: str) -> list[str]:
        """The addresses of `host` (a literal address is its own, with no lookup)."""
        literal = parse_or_none(host)
        if literal is not None:
            return [str(literal)]
        resolver = self.resolver or system_resolver
        return await resolver(host, 0)

    def vet(self, host: str, addresses: Sequence[str]) -> list[str]:
        """`addresses` (of `host`) if every one may be reached; else EgressRefused for the first
        that may not (a name with one bad address is refused whole, so no connection attempt
        order can reach it)."""
        if not addresses:
            raise httpcore.ConnectError(f"{host} resolves to no address")
        for text in addresses:
            address = parse_address(text)
            reason = self.refusal(address)
            if reason is not None:
                raise EgressRefused(host, address, reason, public=self.public)
        return list(addresses)

    # -- creation checks (the API) ------------------------------------------------------------

    async def check_host(self, host: str, *, field: str, hint: str = "") -> None:
        """ValidationFailed (422 `egress_refused`) when `host` is or resolves to a refused
        address. A name that does not resolve (yet, or not from the API's network) passes:
        every connection is checked again at send time."""
        host = host.strip().strip("[]").rstrip(".")
        if not host:
            return
        transactions.guard(f"resolving {host} for {field}")
        try:
            with anyio.fail_after(RESOLVE_TIMEOUT):
                addresses = await self.resolve(host)
            self.vet(host, addresses)
        except EgressRefused as exc:
            raise ValidationFailed(
                f"{field}: {hint}{exc}",
                code=ERROR_CODE,
                details=[
                    {
                        "field": field,
                        "message": f"{hint}{exc}",
                        "address": shown(exc.address),
                        "range": exc.reason,
                        "setting": SETTING,
                        "allow": suggestion(exc.address),
                    }
                ],
            ) from None
        except (OSError, TimeoutError, httpcore.ConnectError, UnicodeError, ValueError):
            return

    async def check_url(self, url: str, *, field: str, hint: str = "") -> None:
        """`check_host` for an http(s) URL's host; a URL that does not parse is left to the
        caller's own validation."""
        try:
            host = urlsplit(url.strip()).hostname
        except (ValueError, AttributeError):
            return
        if host:
            await self.check_host(host, field=field, hint=hint)

    # -- connections ----------------------------------------------------------------------------

    async def connect_address(self, host: str, timeout: float | None = None) -> str:
        """The vetted address to connect to for `host` (for clients other than httpx: SMTP)."""
        transactions.guard(f"connecting to {host}")
        with anyio.fail_after(timeout):
            addresses = await self.resolve(host)
        return self.vet(host, addresses)[0]

    def transport(self, **kwargs: Any) -> GuardedTransport:
        return GuardedTransport(self, **kwargs)

    def client(self, **kwargs: Any) -> httpx.AsyncClient:
        """An httpx client whose every connection goes through this policy. Redirects are not
        followed unless asked (each hop would be checked again); no proxy from the environment
        (a proxy would connect for us, unchecked)."""
        kwargs.setdefault("follow_redirects", False)
        return httpx.AsyncClient(transport=self.transport(), trust_env=False, **kwargs)


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend, connecting only to the addresses the policy vetted for the
    host httpcore asks for. httpcore gives TLS the origin's name (`server_hostname`), not the
    address connected to, so certificates are verified for the name."""

    def __init__(self, policy: EgressPolicy, inner: httpcore.AsyncNetworkBackend | None = None):
        self._policy = policy
        self._inner = inner or httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        transactions.guard(f"connecting to {host}:{port}")
        try:
            with anyio.fail_after(timeout):
                addresses = await self._policy.resolve(host)
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"resolving {host} took over {timeout:g}s") from None
        except (OSError, UnicodeError) as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from None
        last: Exception | None = None
        for address in self._policy.vet(host, addresses):
            try:
                return await self._inner.connect_tcp(
                    address,
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
        assert last is not None
        raise last

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("the egress guard does not connect to Unix sockets")

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(seconds)


class GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's transport with `GuardedBackend` under its connection pool."""

    def __init__(
        self,
        policy: EgressPolicy,
        *,
        verify: ssl.SSLContext | bool = True,
        http2: bool = False,
        limits: httpx.Limits = DEFAULT_LIMITS,
        backend: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        super().__init__(verify=verify, http2=http2, limits=limits)
        ssl_context = (
            verify
            if isinstance(verify, ssl.SSLContext)
            else httpx.create_ssl_context(verify=verify)
        )
        # The pool AsyncHTTPTransport built, again with the guarded backend (httpx has no
        # parameter for the backend; requests go through `_pool`).
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            http1=True,
            http2=http2,
            network_backend=GuardedBackend(policy, backend),
        )
