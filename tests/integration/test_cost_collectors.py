"""The `opencost` and `aws` cost collectors against local stand-ins of the OpenCost allocation
API and AWS Cost Explorer (real HTTP, the real wire formats, SigV4 checked), on the test
database: namespace costs booked on the inventory's namespaces, tag-group costs spread over
the tagged resources by catalog price, reruns that change no totals, and what happens without
configuration or when an API fails."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select
from temporalio.exceptions import ApplicationError

from activities.costs import CostActivities
from core.db.engine import create_engine, session_factory
from core.infrastructure.cost_messages import CollectInput
from core.infrastructure.costs import PriceCatalog
from core.models.infrastructure import CostRecord, Resource
from core.settings import Settings
from tests.integration.identity_helpers import Api
from tests.integration.test_org_team_api import make_org
from tests.standins.cost_explorer import CostExplorerStandin
from tests.standins.opencost import OpenCostStandin, allocation

KEY_ID, SECRET = "AKIDCOSTSTANDIN01", "cost/standin/secret+key"
NAMESPACE = "kubernetes:core/v1:Namespace"


@asynccontextmanager
async def activities(api: Api, settings: Settings | None = None) -> AsyncIterator[CostActivities]:
    """Collectors with `settings` (default the app's: EGRESS_ALLOWED_CIDRS lets the loopback
    stand-ins through)."""
    engine = create_engine(api.settings.effective_database_url)
    try:
        yield CostActivities(
            session_factory(engine), PriceCatalog.load(), settings=settings or api.settings
        )
    finally:
        await engine.dispose()


async def provider(api: Api, type_: str, **body: Any) -> uuid.UUID:
    """A provider of a new organization, made through the API (credentials encrypted)."""
    _, admin = await api.token("admin")
    org = await make_org(api, admin)
    made = await api.client.post(
        "/infrastructure/providers",
        json={"org_id": org["id"], "name": f"{type_}-{uuid.uuid4().hex[:6]}", "type": type_} | body,
        headers=admin,
    )
    assert made.status_code == 201, made.text
    return uuid.UUID(made.json()["id"])


async def resources(api: Api, provider_id: uuid.UUID, *rows: dict[str, Any]) -> list[uuid.UUID]:
    """Inventory rows of the provider, created 30 days ago (so they existed on the test days)."""
    created = datetime.now(UTC) - timedelta(days=30)
    async with api.session() as session:
        made = [
            Resource(
                provider_id=provider_id,
                identifier=row.pop("identifier", f"id-{uuid.uuid4().hex}"),
                created_at=created,
                **row,
            )
            for row in rows
        ]
        session.add_all(made)
        await session.flush()
        return [r.id for r in made]


async def records(api: Api, ids: list[uuid.UUID], source: str) -> dict[uuid.UUID, CostRecord]:
    found = await api.fetch(
        select(CostRecord).where(CostRecord.resource_id.in_(ids), CostRecord.source == source)
    )
    return {r.resource_id: r for r in found}


async def totals(api: Api, ids: list[uuid.UUID], source: str) -> tuple[int, Decimal]:
    found = await records(api, ids, source)
    return len(found), sum((r.cost for r in found.values()), Decimal(0))


def a_day(offset: int) -> date:
    """A past day of this test module's own (other tests collect the last few days)."""
    return date.today() - timedelta(days=8 + offset)


# -- opencost --------------------------------------------------------------------------------
async def test_opencost_books_namespace_costs_on_the_inventory(api: Api) -> None:
    day = a_day(0)
    with OpenCostStandin() as opencost:
        cluster = await provider(api, "kubernetes", config={"opencost_url": opencost.url})
        shop, blog, quota = await resources(
            api,
            cluster,
            {"type": NAMESPACE, "name": "shop-ns", "properties": {"metadata": {"name": "shop"}}},
            {"type": NAMESPACE, "name": "blog-ns", "identifier": "blog"},
            {"type": "kubernetes:core/v1:ResourceQuota", "name": "quota", "identifier": "q"},
        )
        opencost.day(
            day,
            {
                "shop": allocation("shop", 1.25, cpu_core_hours=12.0, day=day),
                "blog": allocation("blog", 0.333333, day=day),
                "kube-system": allocation("kube-system", 3.0, day=day),
                "__idle__": allocation("__idle__", 2.0, day=day),
            },
        )
        async with activities(api) as acts:
            only = CollectInput(day=day, source="opencost", providers=[cluster])
            result = await acts.collect(only)
            assert (result.resources, result.total) == (2, Decimal("1.5833"))
            assert (result.skipped, result.unattributed) == (2, Decimal("5.0000"))
            [note] = result.notes
            assert "2 namespaces of no inventory resource (__idle__, kube-system)" in note
            assert str(cluster) in note

            [request] = opencost.requests
            assert request == {
                "window": f"{day}T00:00:00Z,{day + timedelta(days=1)}T00:00:00Z",
                "aggregate": "namespace",
                "accumulate": "true",
            }
            booked = await records(api, [shop, blog, quota], "opencost")
            assert set(booked) == {shop, blog}
            assert booked[shop].cost == Decimal("1.2500") and booked[shop].date == day
            assert booked[shop].usage_metrics["cpuCoreHours"] == 12.0
            assert booked[shop].usage_metrics["namespace"] == "shop"
            assert {"ramByteHours", "cpuCost", "ramCost", "pvCost", "networkCost"} <= set(
                booked[shop].usage_metrics
            )
            assert booked[blog].cost == Decimal("0.3333")

            before = await totals(api, [shop, blog], "opencost")
            await acts.collect(only)  # a rerun of the day
            assert await totals(api, [shop, blog], "opencost") == before

            opencost.day(day, {"shop": allocation("shop", 2.0, day=day)})  # OpenCost recomputed
            again = await acts.collect(only)
            assert (again.resources, again.total, again.skipped) == (1, Decimal("2.0000"), 0)
            assert await totals(api, [shop, blog], "opencost") == (1, Decimal("2.0000"))


async def test_opencost_without_a_url_notes_it_and_setting_fallback(api: Api) -> None:
    day = a_day(1)
    with OpenCostStandin() as opencost:
        cluster = await provider(api, "kubernetes")
        [shop] = await resources(
            api, cluster, {"type": NAMESPACE, "name": "shop", "identifier": "shop"}
        )
        opencost.day(day, {"shop": allocation("shop", 0.75, day=day)})
        only = CollectInput(day=day, source="opencost", providers=[cluster])

        async with activities(api) as acts:
            result = await acts.collect(only)
        assert (result.resources, result.total) == (0, Decimal(0))
        [note] = result.notes
        assert "no OpenCost API to ask" in note and "OPENCOST_URL" in note
        assert opencost.requests == []

        with_url = api.settings.model_copy(update={"opencost_url": opencost.url})
        async with activities(api, with_url) as acts:
            result = await acts.collect(only)
        assert (result.resources, result.total, result.notes) == (1, Decimal("0.7500"), [])
        assert await totals(api, [shop], "opencost") == (1, Decimal("0.7500"))

        async with activities(api) as acts:  # the URL gone again: the day's records stay
            await acts.collect(only)
            aws_only = await acts.collect(CollectInput(day=day, source="aws", providers=[cluster]))
        assert await totals(api, [shop], "opencost") == (1, Decimal("0.7500"))
        assert aws_only.notes == ["no AWS provider to collect"]


async def test_a_failing_provider_keeps_its_records_and_the_day_is_retried(api: Api) -> None:
    day = a_day(2)
    with OpenCostStandin() as good, OpenCostStandin() as failing:
        first = await provider(api, "kubernetes", config={"opencost_url": good.url})
        second = await provider(api, "kubernetes", config={"opencost_url": failing.url})
        [ns1] = await resources(api, first, {"type": NAMESPACE, "name": "a", "identifier": "a"})
        [ns2] = await resources(api, second, {"type": NAMESPACE, "name": "b", "identifier": "b"})
        good.day(day, {"a": allocation("a", 1.0, day=day)})
        failing.day(day, {"b": allocation("b", 4.0, day=day)})
        both = CollectInput(day=day, source="opencost", providers=[first, second])
        async with activities(api) as acts:
            await acts.collect(both)
            assert await totals(api, [ns1, ns2], "opencost") == (2, Decimal("5.0000"))

            good.day(day, {"a": allocation("a", 1.5, day=day)})
            failing.day(day, {"b": allocation("b", 9.0, day=day)})
            failing.fail_next(1, 503)
            with pytest.raises(ApplicationError) as failed:
                await acts.collect(both)
            assert not failed.value.non_retryable
            assert str(second) in str(failed.value) and "503" in str(failed.value)
            kept = await records(api, [ns1, ns2], "opencost")
            assert (kept[ns1].cost, kept[ns2].cost) == (Decimal("1.5000"), Decimal("4.0000"))

            retried = await acts.collect(both)  # what Temporal's retry does
            assert retried.total == Decimal("10.5000")
            assert await totals(api, [ns1, ns2], "opencost") == (2, Decimal("10.5000"))


# -- aws -----------------------------------------------------------------------------------
SHOP_PROD = {"service": "shop", "environment": "prod"}
BLOG_PROD = {"service": "blog", "environment": "prod"}


async def test_aws_spreads_tag_group_costs_over_resources_by_price(api: Api) -> None:
    day = a_day(3)
    with CostExplorerStandin(keys={KEY_ID: SECRET}, page_size=2) as ce:
        account = await provider(
            api,
            "aws",
            config={"cost_explorer_url": ce.url},
            credentials={"access_key_id": KEY_ID, "secret_access_key": SECRET},
        )
        db, bucket, thing1, thing2, staging = await resources(
            api,
            account,
            {
                "type": "aws:rds/instance:Instance",  # 11.68 a month in the catalog
                "name": "db",
                "tags": {**SHOP_PROD, "team": "web"},
                "properties": {"instanceClass": "db.t4g.micro"},
            },
            {"type": "aws:s3/bucketV2:BucketV2", "name": "bucket", "tags": SHOP_PROD},  # 2.30
            {"type": "example:thing:Thing", "name": "t1", "tags": BLOG_PROD},  # not priced
            {"type": "example:thing:Thing", "name": "t2", "tags": BLOG_PROD},
            {
                "type": "aws:s3/bucketV2:BucketV2",
                "name": "stg",
                "tags": {**SHOP_PROD, "environment": "staging"},
            },
        )
        ce.charge(day, SHOP_PROD, "5.0000")
        ce.charge(day, SHOP_PROD, "2.7777")  # two line items, one group of 7.7777
        ce.charge(day, BLOG_PROD, "1.00")
        ce.charge(day, {}, "4.00")  # untagged
        ce.charge(day, {"service": "shop"}, "0.50")  # no environment tag
        ce.charge(day, {"service": "legacy", "environment": "prod"}, "2.50")  # not ours
        ce.charge(day - timedelta(days=1), SHOP_PROD, "99")  # another day
        ids = [db, bucket, thing1, thing2, staging]
        async with activities(api) as acts:
            only = CollectInput(day=day, source="aws", providers=[account])
            result = await acts.collect(only)

            booked = await records(api, ids, "aws")
            # 7.7777 by 11.68 : 2.30 is 6.4982 + 1.2796 = 7.7778 to the CENT: the largest
            # share gives back the rounding; 1.00 over two unpriced resources, equally.
            assert {k: r.cost for k, r in booked.items()} == {
                db: Decimal("6.4981"),
                bucket: Decimal("1.2796"),
                thing1: Decimal("0.5000"),
                thing2: Decimal("0.5000"),
            }
            assert booked[db].currency == "USD" and booked[db].date == day
            assert booked[db].usage_metrics == {
                "tags": SHOP_PROD,
                "group_cost": "7.7777",
                "weight": "monthly_price",
                "metric": "UnblendedCost",
                "estimated": True,
            }
            assert booked[thing1].usage_metrics["weight"] == "equal"
            assert (result.resources, result.total) == (4, Decimal("8.7777"))
            assert (result.skipped, result.unattributed) == (3, Decimal("7.0000"))
            [note] = result.notes
            assert "3 tag groups of no inventory resource" in note
            assert "service=legacy environment=prod" in note and "untagged" in note

            assert len(ce.requests) == 3  # five groups, two a page
            assert all(r.access_key_id == KEY_ID and r.status == 200 for r in ce.requests)
            first = ce.requests[0].body
            assert first["TimePeriod"] == {"Start": str(day), "End": str(day + timedelta(days=1))}
            assert first["GroupBy"] == [
                {"Type": "TAG", "Key": "service"},
                {"Type": "TAG", "Key": "environment"},
            ]
            assert (first["Granularity"], first["Metrics"]) == ("DAILY", ["UnblendedCost"])
            assert ce.requests[1].body["NextPageToken"] == "2"

            before = await totals(api, ids, "aws")
            assert before == (4, Decimal("8.7777"))
            await acts.collect(only)
            assert await totals(api, ids, "aws") == before


async def test_aws_without_usable_credentials_notes_it_and_throttling_retries(api: Api) -> None:
    day = a_day(4)
    with CostExplorerStandin(keys={KEY_ID: SECRET}) as ce:
        keyless = await provider(api, "aws", config={"cost_explorer_url": ce.url})
        unknown = await provider(
            api,
            "aws",
            credentials={"access_key_id": "AKIDUNKNOWN", "secret_access_key": "nope"},
        )
        good = await provider(
            api, "aws", credentials={"access_key_id": KEY_ID, "secret_access_key": SECRET}
        )
        [bucket] = await resources(
            api, good, {"type": "aws:s3/bucketV2:BucketV2", "name": "b", "tags": SHOP_PROD}
        )
        ce.charge(day, SHOP_PROD, "3.21")
        endpoint = api.settings.model_copy(update={"aws_cost_explorer_url": ce.url})
        async with activities(api, endpoint) as acts:
            result = await acts.collect(
                CollectInput(day=day, source="aws", providers=[keyless, unknown, good])
            )
            assert (result.resources, result.total) == (1, Decimal("3.2100"))
            assert len(result.notes) == 2
            assert "no access_key_id and secret_access_key" in next(
                n for n in result.notes if str(keyless) in n
            )
            assert "UnrecognizedClientException" in next(
                n for n in result.notes if str(unknown) in n
            )
            assert sorted(r.access_key_id or "" for r in ce.requests) == [KEY_ID, "AKIDUNKNOWN"]

            ce.fail_next(1, 400, "ThrottlingException")
            with pytest.raises(ApplicationError) as throttled:
                await acts.collect(CollectInput(day=day, source="aws", providers=[good]))
            assert not throttled.value.non_retryable
            assert "ThrottlingException" in str(throttled.value)
            assert await totals(api, [bucket], "aws") == (1, Decimal("3.2100"))


async def test_an_unknown_source_is_refused_for_good(api: Api) -> None:
    async with activities(api) as acts:
        with pytest.raises(ApplicationError) as refused:
            await acts.collect(CollectInput(day=a_day(0), source="billing"))
    assert refused.value.non_retryable
    assert "'billing'" in str(refused.value)
    assert "estimate, opencost, aws" in str(refused.value)
