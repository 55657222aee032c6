"""What every cost collector shares: the `Collector` protocol, what one returns for a day
(`Collected`), the per-provider loop that turns a provider's failure into a note or a retry,
and `spread`, which splits a billed amount over inventory resources to the CENT.

A collector that cannot collect a provider for want of configuration (no endpoint, no
credentials) or because the API refused it for good (bad credentials) leaves that provider's
records alone and says why in a note; a failure that may pass (unreachable, 5xx, throttled) is
retried, after the other providers' costs are stored."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any, Protocol, TypeVar

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.infrastructure.costs import CENT, CostLine, PriceCatalog
from core.models.infrastructure import Provider
from core.security.egress import EgressPolicy, EgressRefused
from core.settings import Settings

K = TypeVar("K", bound=Hashable)
DEFAULT_TIMEOUT = 30.0


@dataclass(frozen=True)
class CollectorContext:
    """What collectors are built from: the price catalog and the endpoint settings. The
    settings' endpoints are the operator's and are called as they are; a provider's own URL
    (`config.opencost_url`, `config.cost_explorer_url`) is a user's and goes through `egress`
    (EGRESS_ALLOWED_CIDRS)."""

    catalog: PriceCatalog
    opencost_url: str | None = None  # OPENCOST_URL
    aws_cost_explorer_url: str | None = None  # AWS_COST_EXPLORER_URL
    timeout: float = DEFAULT_TIMEOUT
    egress: EgressPolicy = field(default_factory=EgressPolicy)

    @classmethod
    def of(cls, catalog: PriceCatalog, settings: Settings | None) -> CollectorContext:
        if settings is None:
            return cls(catalog)
        return cls(
            catalog,
            settings.opencost_url,
            settings.aws_cost_explorer_url,
            egress=EgressPolicy.of(settings),
        )


@dataclass
class Collected:
    """One day of one source: the lines to store, and what was left out and why."""

    lines: list[CostLine] = field(default_factory=list)
    # The providers whose records of the day `lines` replace; None: every provider's.
    providers: list[uuid.UUID] | None = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # billed items of no inventory resource
    unattributed: Decimal = Decimal(0)  # their cost: reported, never stored
    retry: list[str] = field(default_factory=list)  # transient failures: retry the day

    def skip(self, label: str, cost: Decimal) -> None:
        self.skipped.append(label)
        self.unattributed += cost

    def note_skipped(self, what: str) -> None:
        """A note on the skipped items, `what` naming them (e.g. "namespaces")."""
        if self.skipped:
            shown = ", ".join(self.skipped[:10]) + (", ..." if len(self.skipped) > 10 else "")
            self.notes.append(
                f"{len(self.skipped)} {what} of no inventory resource ({shown}): "
                f"{self.unattributed} not stored"
            )


Sessions = async_sessionmaker[AsyncSession]


class Collector(Protocol):
    async def day(
        self, sessions: Sessions, day: date, providers: Sequence[uuid.UUID] | None
    ) -> Collected:
        """The costs of `day` (UTC) of `providers` (None: every provider it applies to). A
        collector reads in short transactions of its own and asks its cost API outside them,
        so no transaction waits on the network (core/db/transactions.py)."""
        ...


class CollectorError(Exception):
    """A provider could not be collected; `retryable` when trying again later may help."""

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


async def providers_of(
    session: AsyncSession, type_: str, scope: Sequence[uuid.UUID] | None
) -> list[Provider]:
    """The live providers of `type_` (within `scope` when given), by name."""
    stmt = select(Provider).where(Provider.type == type_, Provider.deleted_at.is_(None))
    if scope is not None:
        stmt = stmt.where(Provider.id.in_(list(scope)))
    return list(await session.scalars(stmt.order_by(Provider.name, Provider.id)))


async def each_provider(
    providers: Sequence[Provider], collect: Callable[[Provider], Awaitable[Collected]]
) -> Collected:
    """`collect` each provider into one `Collected` whose `providers` are those collected; a
    `CollectorError` becomes a note (or a retry) naming its provider."""
    found = Collected()
    for provider in providers:
        label = f"provider {provider.name} ({provider.id})"
        try:
            part = await collect(provider)
        except CollectorError as exc:
            (found.retry if exc.retryable else found.notes).append(f"{label}: {exc}")
            continue
        assert found.providers is not None
        found.providers.append(provider.id)
        found.lines += part.lines
        found.skipped += part.skipped
        found.unattributed += part.unattributed
        found.notes += [f"{label}: {note}" for note in part.notes]
    return found


def spread(total: Decimal, weights: Mapping[K, Decimal]) -> dict[K, Decimal]:
    """`total` split over the keys of positive weight in proportion (over every key, equally,
    when none has one), each share to the CENT and the rounding remainder on the largest, so
    the shares sum to `total` to the CENT. Keys of zero weight get no share."""
    if not weights:
        return {}
    total = money(total)
    positive = {k: w for k, w in weights.items() if w > 0} or dict.fromkeys(weights, Decimal(1))
    whole = sum(positive.values(), Decimal(0))
    shares = {k: money(total * w / whole) for k, w in positive.items()}
    largest = max(positive, key=lambda k: positive[k])
    shares[largest] += total - sum(shares.values(), Decimal(0))
    return shares


def money(value: Any) -> Decimal:
    """An amount (a number or a numeric string) to the CENT."""
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        raise CollectorError(f"{value!r} is not an amount") from None
    if not amount.is_finite():
        raise CollectorError(f"{value!r} is not an amount")
    return amount.quantize(CENT, rounding=ROUND_HALF_UP)


async def send(http: httpx.AsyncClient, request: httpx.Request) -> httpx.Response:
    """`request` sent; an unreachable or timed-out endpoint is a retryable CollectorError, a
    provider URL the egress guard refuses a permanent one."""
    try:
        return await http.send(request)
    except EgressRefused as exc:
        raise CollectorError(f"refused by the egress guard: {exc}") from None
    except httpx.TransportError as exc:
        raise CollectorError(
            f"{request.url.host} did not answer ({type(exc).__name__}: {exc})", retryable=True
        ) from exc


def refused(response: httpx.Response, message: str) -> CollectorError:
    """The error for a non-2xx answer: retryable when throttled or a server error."""
    status = response.status_code
    return CollectorError(
        f"{response.request.url.host} answered {status}: {message}",
        retryable=status in (408, 429) or status >= 500,
    )


def http_url(value: Any, what: str) -> str:
    """`value` if it is an http(s) URL; else a (non-retryable) CollectorError about `what`."""
    if not isinstance(value, str) or not value.startswith(("http://", "https://")):
        raise CollectorError(f"{what} must be an http(s) URL, not {value!r}")
    return value
