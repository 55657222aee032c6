"""The `opencost` collector: a Kubernetes provider's day from the OpenCost allocation API,
one line per namespace the inventory knows.

For each live Kubernetes provider it asks `GET {url}/allocation/compute?window=<start>,<end>
&aggregate=namespace&accumulate=true` (`url`: the provider's `config.opencost_url`, else
OPENCOST_URL) and books each namespace's `totalCost` on the provider's inventory Namespace of
that name, with OpenCost's usage figures (core hours, byte hours, cost parts) as its usage.
Namespaces the inventory does not know (`kube-system`, OpenCost's `__idle__`, ...) are
skipped and counted."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncSession

from core.db.engine import transaction
from core.infrastructure.collectors.base import (
    Collected,
    CollectorContext,
    CollectorError,
    Sessions,
    each_provider,
    http_url,
    money,
    providers_of,
    refused,
    send,
)
from core.infrastructure.costs import CostLine, day_bounds, resources_on
from core.models.infrastructure import Provider, Resource

NAMESPACE_TYPE = "kubernetes:core/v1:Namespace"
# OpenCost's per-allocation figures kept as usage: quantities, then the parts of totalCost.
USAGE_KEYS: tuple[str, ...] = (
    "cpuCoreHours",
    "ramByteHours",
    "pvByteHours",
    "gpuHours",
    "networkTransferBytes",
    "networkReceiveBytes",
    "cpuCost",
    "ramCost",
    "pvCost",
    "gpuCost",
    "networkCost",
    "loadBalancerCost",
    "sharedCost",
    "externalCost",
)
Allocation = dict[str, float]


class OpenCostCollector:
    def __init__(self, context: CollectorContext) -> None:
        self._fallback_url = context.opencost_url
        self._timeout = context.timeout
        self._egress = context.egress

    async def day(
        self, sessions: Sessions, day: date, providers: Sequence[uuid.UUID] | None
    ) -> Collected:
        async with transaction(sessions) as session:
            clusters = await providers_of(session, "kubernetes", providers)
        if not clusters:
            return Collected(notes=["no Kubernetes provider to collect"])
        # OPENCOST_URL is the operator's; a provider's own URL is reached through the guard.
        async with (
            httpx.AsyncClient(timeout=self._timeout) as platform,
            self._egress.client(timeout=self._timeout) as guarded,
        ):

            async def one(provider: Provider) -> Collected:
                url, own = self._url(provider)
                allocations = await fetch_allocations(guarded if own else platform, url, day)
                async with transaction(sessions) as session:
                    return await _book(session, provider, day, allocations)

            return await each_provider(clusters, one)

    def _url(self, provider: Provider) -> tuple[str, bool]:
        """The API root, and whether it is the provider's own (a user's) URL."""
        own = (provider.config or {}).get("opencost_url")
        url = own or self._fallback_url
        if not url:
            raise CollectorError(
                "no OpenCost API to ask: set `opencost_url` in the provider's config "
                "(e.g. http://opencost.opencost:9003) or OPENCOST_URL"
            )
        return http_url(url, "opencost_url"), bool(own)


async def _book(
    session: AsyncSession, provider: Provider, day: date, allocations: dict[str, Allocation]
) -> Collected:
    """One line per namespace of `allocations` the provider's inventory has; the rest skipped."""
    rows = await resources_on(
        session, day, Resource.provider_id == provider.id, Resource.type == NAMESPACE_TYPE
    )
    namespaces = {namespace_of(row): row for row in rows}  # the newest of a name wins
    found = Collected()
    for name, figures in sorted(allocations.items()):
        cost = money(figures.get("totalCost", 0.0))
        row = namespaces.get(name)
        if row is None:
            found.skip(name, cost)
            continue
        usage: dict[str, Any] = {"namespace": name}
        usage |= {k: figures[k] for k in USAGE_KEYS if k in figures}
        found.lines.append(CostLine(row.id, cost, usage))
    found.note_skipped("namespaces")
    return found


def namespace_of(row: Resource) -> str:
    """The namespace a Namespace resource stands for: its `metadata.name` as recorded, else its
    identifier (a Namespace's cloud id is its name) unless that is a Pulumi URN, else its name."""
    metadata = (row.properties or {}).get("metadata")
    if isinstance(metadata, dict) and isinstance(metadata.get("name"), str):
        return str(metadata["name"])
    if row.identifier and not row.identifier.startswith("urn:"):
        return row.identifier
    return row.name


def rfc3339(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


async def fetch_allocations(http: httpx.AsyncClient, url: str, day: date) -> dict[str, Allocation]:
    """Namespace -> its figures over `day` (UTC), summed over the sets OpenCost returns."""
    start, end = day_bounds(day)
    request = http.build_request(
        "GET",
        url.rstrip("/") + "/allocation/compute",
        params={
            "window": f"{rfc3339(start)},{rfc3339(end)}",
            "aggregate": "namespace",
            "accumulate": "true",
        },
    )
    response = await send(http, request)
    try:
        body = response.json()
    except ValueError:
        body = None
    if not response.is_success:
        message = body.get("message") if isinstance(body, dict) else None
        raise refused(response, str(message or response.text[:200]))
    if not isinstance(body, dict):
        raise CollectorError("not an OpenCost allocation response (not a JSON object)")
    code = body.get("code", 200)
    if code != 200:
        retryable = isinstance(code, int) and code >= 500
        raise CollectorError(
            f"OpenCost answered code {code}: {body.get('message')}", retryable=retryable
        )
    return _summed(body.get("data"))


def _summed(sets: Any) -> dict[str, Allocation]:
    if not isinstance(sets, list):
        raise CollectorError("not an OpenCost allocation response (no `data` list)")
    summed: dict[str, Allocation] = {}
    for allocation_set in sets:
        for name, allocation in (allocation_set or {}).items():
            if not isinstance(allocation, dict):
                raise CollectorError(f"allocation {name!r} is not an object")
            figures = summed.setdefault(name, {})
            for key in ("totalCost", *USAGE_KEYS):
                value = allocation.get(key)
                if isinstance(value, int | float) and not isinstance(value, bool):
                    figures[key] = figures.get(key, 0.0) + float(value)
    return summed
