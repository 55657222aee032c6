"""The `aws` collector: an AWS provider's day from Cost Explorer (`GetCostAndUsage`), spread
over the provider's inventory.

Cost Explorer does not bill per resource, so the day's `UnblendedCost` is asked grouped by
the platform's tags (`service` and `environment`, or the provider's `config.cost_tags`: one
or two tag keys, which must be activated as cost allocation tags in AWS Billing). Each tag
group's cost is spread over the provider's resources of that day carrying the same tag
values, weighted by their catalog monthly price (equally when none is priced), to the CENT,
summing to the group's cost. Untagged cost and groups no inventory resource carries are
reported, not stored.

The call is the JSON 1.1 protocol, SigV4-signed (`sigv4`) with the provider's
`access_key_id` / `secret_access_key` (and `session_token`); the endpoint is the provider's
`config.cost_explorer_url`, else AWS_COST_EXPLORER_URL, else AWS's (us-east-1)."""

from __future__ import annotations

import json
import re
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

import httpx

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
    spread,
)
from core.infrastructure.collectors.sigv4 import AwsCredentials, signed_headers
from core.infrastructure.costs import CostLine, PriceCatalog, resources_on
from core.infrastructure.providers import credentials_of
from core.models.infrastructure import Provider, Resource
from core.security.egress import EgressPolicy
from core.security.encryption import DecryptionError

COST_EXPLORER_URL = "https://ce.us-east-1.amazonaws.com/"
_AWS_ENDPOINT = re.compile(r"ce\.[a-z0-9-]+\.amazonaws\.com(\.cn)?")
COST_EXPLORER_HINT = (
    "a provider's cost_explorer_url must be https://ce.<region>.amazonaws.com/ or an address "
    "within EGRESS_ALLOWED_CIDRS: "
)
SIGNING_REGION = "us-east-1"  # Cost Explorer's one endpoint (aws partition)
TARGET = "AWSInsightsIndexService.GetCostAndUsage"
METRIC = "UnblendedCost"
DEFAULT_TAGS: tuple[str, ...] = ("service", "environment")
# Error codes (`__type`) worth another try; any other refusal is for a person to fix.
TRANSIENT = frozenset(
    {"ThrottlingException", "LimitExceededException", "RequestLimitExceeded", "InternalFailure"}
)


@dataclass(frozen=True)
class TagGroup:
    """One group of the answer: its tag values (in `cost_tags` order) and cost."""

    values: tuple[str, ...]
    cost: Decimal
    currency: str
    estimated: bool


class CostExplorerCollector:
    def __init__(self, context: CollectorContext) -> None:
        self._catalog = context.catalog
        self._fallback_url = context.aws_cost_explorer_url
        self._timeout = context.timeout
        self._egress = context.egress

    async def day(
        self, sessions: Sessions, day: date, providers: Sequence[uuid.UUID] | None
    ) -> Collected:
        async with transaction(sessions) as session:
            accounts = await providers_of(session, "aws", providers)
        if not accounts:
            return Collected(notes=["no AWS provider to collect"])
        # AWS's endpoint and AWS_COST_EXPLORER_URL are the operator's; a provider's own URL
        # gets the signed request (and session token): through the guard, `cost_explorer_egress`.
        async with httpx.AsyncClient(timeout=self._timeout) as platform:

            async def one(provider: Provider) -> Collected:
                tags = cost_tags(provider)
                own = (provider.config or {}).get("cost_explorer_url")
                if own:
                    url = http_url(own, "cost_explorer_url")
                    guard = cost_explorer_egress(url, self._egress)
                    async with guard.client(timeout=self._timeout) as guarded:
                        groups = await _groups(guarded, url, provider, day, tags)
                else:
                    url = http_url(self._fallback_url or COST_EXPLORER_URL, "cost_explorer_url")
                    groups = await _groups(platform, url, provider, day, tags)
                async with transaction(sessions) as session:
                    rows = await resources_on(session, day, Resource.provider_id == provider.id)
                return _spread_groups(self._catalog, tags, groups, rows)

            return await each_provider(accounts, one)


async def _groups(
    http: httpx.AsyncClient, url: str, provider: Provider, day: date, tags: tuple[str, ...]
) -> list[TagGroup]:
    return [g async for g in tag_groups(http, url, _credentials(provider), day, tags)]


def cost_explorer_egress(url: str, egress: EgressPolicy) -> EgressPolicy:
    """What a provider's own `cost_explorer_url` may reach. It receives a signed request and the
    session token, so it must be an AWS Cost Explorer endpoint over https (a public address),
    or else an address an operator allowed in EGRESS_ALLOWED_CIDRS (a proxy, a test stand-in);
    an operator's proxy elsewhere is AWS_COST_EXPLORER_URL."""
    parts = urlsplit(url)
    if parts.scheme == "https" and _AWS_ENDPOINT.fullmatch(parts.hostname or ""):
        return egress
    return egress.only_allowed()


async def check_cost_explorer_url(url: str, egress: EgressPolicy) -> None:
    """The creation check of a provider's `config.cost_explorer_url` (422 `egress_refused`)."""
    await cost_explorer_egress(url, egress).check_url(
        url, field="config.cost_explorer_url", hint=COST_EXPLORER_HINT
    )


def cost_tags(provider: Provider) -> tuple[str, ...]:
    """The tag keys to group by: `config.cost_tags` (one or two keys) or service, environment."""
    tags = (provider.config or {}).get("cost_tags", DEFAULT_TAGS)
    if (
        not isinstance(tags, list | tuple)
        or not 1 <= len(tags) <= 2
        or not all(isinstance(t, str) and t for t in tags)
    ):
        raise CollectorError(f"cost_tags must be one or two tag keys, not {tags!r}")
    return tuple(tags)


def _credentials(provider: Provider) -> AwsCredentials:
    try:
        found = credentials_of(provider)
    except DecryptionError as exc:
        raise CollectorError(f"its credentials cannot be decrypted: {exc}") from exc
    if not found.get("access_key_id") or not found.get("secret_access_key"):
        raise CollectorError(
            "no access_key_id and secret_access_key among its credentials: Cost Explorer needs "
            "a key allowed ce:GetCostAndUsage"
        )
    return AwsCredentials(
        found["access_key_id"], found["secret_access_key"], found.get("session_token")
    )


def _spread_groups(
    catalog: PriceCatalog,
    tags: tuple[str, ...],
    groups: list[TagGroup],
    rows: list[Resource],
) -> Collected:
    carriers: dict[tuple[str, ...], list[Resource]] = defaultdict(list)
    for row in rows:
        carriers[tuple(str((row.tags or {}).get(t, "")) for t in tags)].append(row)
    found = Collected()
    for group in groups:
        label = " ".join(f"{t}={v}" for t, v in zip(tags, group.values, strict=True))
        members = carriers.get(group.values) if all(group.values) else None
        if not members:
            found.skip(label if all(group.values) else f"untagged ({label})", group.cost)
            continue
        weights = {r.id: catalog.monthly(r)[0] or Decimal(0) for r in members}
        priced = any(w > 0 for w in weights.values())
        usage = {
            "tags": dict(zip(tags, group.values, strict=True)),
            "group_cost": str(group.cost),
            "weight": "monthly_price" if priced else "equal",
            "metric": METRIC,
            "estimated": group.estimated,
        }
        for resource_id, share in spread(group.cost, weights).items():
            found.lines.append(CostLine(resource_id, share, usage, currency=group.currency))
    found.note_skipped("tag groups")
    return found


async def tag_groups(
    http: httpx.AsyncClient,
    url: str,
    credentials: AwsCredentials,
    day: date,
    tags: tuple[str, ...],
) -> AsyncIterator[TagGroup]:
    """The day's cost by `tags`' values, every page of it."""
    query: dict[str, Any] = {
        "TimePeriod": {"Start": day.isoformat(), "End": (day + timedelta(days=1)).isoformat()},
        "Granularity": "DAILY",
        "Metrics": [METRIC],
        "GroupBy": [{"Type": "TAG", "Key": t} for t in tags],
    }
    while True:
        answer = await _call(http, url, credentials, query)
        for period in answer.get("ResultsByTime") or []:
            for group in period.get("Groups") or []:
                yield _group(group, tags, bool(period.get("Estimated")))
        token = answer.get("NextPageToken")
        if not token:
            return
        query["NextPageToken"] = token


def _group(group: dict[str, Any], tags: tuple[str, ...], estimated: bool) -> TagGroup:
    keys = group.get("Keys") or []
    metric = (group.get("Metrics") or {}).get(METRIC) or {}
    if len(keys) != len(tags) or "Amount" not in metric:
        raise CollectorError(f"unexpected Cost Explorer group {group!r}")
    # A tag group's key is "<tag key>$<value>"; the value is empty for untagged cost.
    values = tuple(str(k).partition("$")[2] for k in keys)
    return TagGroup(values, money(metric["Amount"]), str(metric.get("Unit") or "USD"), estimated)


async def _call(
    http: httpx.AsyncClient, url: str, credentials: AwsCredentials, query: dict[str, Any]
) -> dict[str, Any]:
    body = json.dumps(query).encode()
    headers = {
        "Content-Type": "application/x-amz-json-1.1",
        "X-Amz-Target": TARGET,
    }
    signed = signed_headers(
        "POST", url, headers, body, credentials, region=SIGNING_REGION, service="ce"
    )
    response = await send(http, http.build_request("POST", url, content=body, headers=signed))
    try:
        answer = response.json()
    except ValueError:
        answer = None
    if response.is_success and isinstance(answer, dict):
        return answer
    if not response.is_success and isinstance(answer, dict):
        code = str(answer.get("__type", "")).rpartition("#")[2]
        message = answer.get("message") or answer.get("Message") or ""
        error = refused(response, f"{code}: {message}")
        error.retryable = error.retryable or code in TRANSIENT
        raise error
    if not response.is_success:
        raise refused(response, response.text[:200])
    raise CollectorError("not a Cost Explorer answer (not a JSON object)")
