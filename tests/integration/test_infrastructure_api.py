"""Providers (credentials encrypted and never shown), the resource inventory with its filters
and relationships, and compliance over it."""

from __future__ import annotations

import uuid
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import select

from core.infrastructure.providers import credentials_of
from core.models.audit import AuditLog
from core.models.infrastructure import CostRecord, Provider, Resource, ResourceRelationship
from tests.integration.identity_helpers import Api, assert_error
from tests.integration.test_org_team_api import make_org, scoped_user

Headers = dict[str, str]
TAGS = {
    "team": "web",
    "service": "shop",
    "environment": "prod",
    "cost-centre": "cc-1234",
    "managed-by": "idp",
}


async def provider(api: Api, headers: Headers, org_id: str, **body: Any) -> dict[str, Any]:
    created = await api.client.post(
        "/infrastructure/providers",
        json={"org_id": org_id, "name": f"aws-{uuid.uuid4().hex[:6]}", "type": "aws", **body},
        headers=headers,
    )
    assert created.status_code == 201, created.text
    return dict(created.json())


async def test_providers_keep_credentials_encrypted_and_out_of_sight(api: Api) -> None:
    _, admin = await api.token("admin")
    org = await make_org(api, admin)
    secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCY"
    made = await provider(
        api,
        admin,
        org["id"],
        regions=["eu-west-1"],
        credentials={"access_key_id": "AKIAEXAMPLE", "secret_access_key": secret},
    )
    assert made["credential_names"] == ["access_key_id", "secret_access_key"]
    assert secret not in str(made) and "credentials" not in made
    listed = await api.client.get(
        "/infrastructure/providers", params={"org_id": org["id"]}, headers=admin
    )
    assert [p["id"] for p in listed.json()["items"]] == [made["id"]]
    assert secret not in listed.text

    [row] = await api.fetch(select(Provider).where(Provider.id == uuid.UUID(made["id"])))
    assert row.credentials and secret not in row.credentials  # ciphertext at rest
    assert credentials_of(row)["secret_access_key"] == secret
    [audit] = await api.fetch(
        select(AuditLog).where(
            AuditLog.action == "provider.create", AuditLog.resource_id == made["id"]
        )
    )
    assert secret not in str(audit.after) and "credentials" not in (audit.after or {})

    for body, field in (
        ({"type": "oracle"}, "type"),
        ({"regions": ["EU West"]}, "regions[0]"),
        ({"credentials": {"password": "x"}}, "credentials"),
    ):
        bad = await api.client.post(
            "/infrastructure/providers",
            json={"org_id": org["id"], "name": "bad", "type": "aws", **body},
            headers=admin,
        )
        assert assert_error(bad, 422)["details"][0]["field"] == field
    twice = await api.client.post(
        "/infrastructure/providers",
        json={"org_id": org["id"], "name": made["name"], "type": "gcp"},
        headers=admin,
    )
    assert_error(twice, 409)
    _, reader = await scoped_user(api, admin, "viewer", "organization", org["id"])
    refused = await api.client.post(
        "/infrastructure/providers",
        json={"org_id": org["id"], "name": "mine", "type": "gcp"},
        headers=reader,
    )
    assert_error(refused, 403)
    seen = await api.client.get("/infrastructure/providers", headers=reader)
    assert [p["id"] for p in seen.json()["items"]] == [made["id"]]


async def _resources(api: Api, provider_id: str) -> dict[str, Resource]:
    pid = uuid.UUID(provider_id)
    rows = {
        "network": Resource(
            provider_id=pid,
            type="aws:ec2/vpc:Vpc",
            identifier=f"vpc-{uuid.uuid4().hex[:8]}",
            name="net",
            region="eu-west-1",
            tags=TAGS,
            cost_monthly=Decimal("0"),
        ),
        "database": Resource(
            provider_id=pid,
            type="aws:rds/instance:Instance",
            identifier=f"db-{uuid.uuid4().hex[:8]}",
            name="db",
            region="eu-west-1",
            tags=TAGS,
            cost_monthly=Decimal("61.32"),
            properties={"storageEncrypted": True, "publiclyAccessible": False},
        ),
        "bucket": Resource(  # public, untagged, in another region, said to be unencrypted
            provider_id=pid,
            type="aws:s3/bucketV2:BucketV2",
            identifier=f"bucket-{uuid.uuid4().hex[:8]}",
            name="assets",
            region="us-east-1",
            tags={"team": "Web Team"},
            properties={"acl": "public-read", "encrypted": False},
        ),
        "old": Resource(
            provider_id=pid,
            type="aws:s3/bucketV2:BucketV2",
            identifier=f"bucket-{uuid.uuid4().hex[:8]}",
            name="old",
            region="us-east-1",
            status="destroyed",
        ),
    }
    async with api.session() as session:
        session.add_all(rows.values())
        await session.flush()
        session.add(
            ResourceRelationship(
                parent_id=rows["network"].id,
                child_id=rows["database"].id,
                relationship_type="contains",
            )
        )
    return rows


async def test_inventory_filters_relationships_and_compliance(api: Api) -> None:
    _, admin = await api.token("admin")
    org = await make_org(api, admin)
    made = await provider(api, admin, org["id"], regions=["eu-west-1"])
    rows = await _resources(api, made["id"])

    async def names(**params: Any) -> list[str]:
        got = await api.client.get(
            "/infrastructure/resources",
            params={"provider_id": made["id"], **params},
            headers=admin,
        )
        assert got.status_code == 200, got.text
        return [r["name"] for r in got.json()["items"]]

    assert await names() == ["net", "db", "assets", "old"]
    assert await names(team="web") == ["net", "db"]
    assert await names(tag=["service=shop", "cost-centre=cc-1234"]) == ["net", "db"]
    assert await names(type="aws:rds/instance:Instance") == ["db"]
    assert await names(status="destroyed") == ["old"]
    bad = await api.client.get("/infrastructure/resources", params={"tag": "nokey"}, headers=admin)
    assert assert_error(bad, 422)["details"][0]["field"] == "tag"

    detail = await api.client.get(f"/infrastructure/resources/{rows['database'].id}", headers=admin)
    assert detail.status_code == 200, detail.text
    assert detail.json()["cost_monthly"] == "61.3200"
    [parent] = detail.json()["related"]
    assert parent["direction"] == "parent" and parent["resource"]["name"] == "net"

    report = await api.client.get(
        "/infrastructure/compliance", params={"provider_id": made["id"]}, headers=admin
    )
    assert report.status_code == 200, report.text
    body = report.json()
    assert body["resources"] == 3 and body["compliant"] == 2  # the destroyed one is not judged
    found = {(v["resource"], v["rule"]) for v in body["violations"]}
    assert found == {
        ("assets", "required-tags"),
        ("assets", "tag-format"),
        ("assets", "encryption-at-rest"),
        ("assets", "no-public-access"),
        ("assets", "allowed-regions"),
    }
    assert body["blocking"] == 4 and body["warnings"] == 1
    by_rule = {r["id"]: r["violations"] for r in body["rules"]}
    assert by_rule["required-tags"] == 1 and by_rule["tag-format"] == 1

    other = await make_org(api, admin)
    _, outsider = await scoped_user(api, admin, "viewer", "organization", other["id"])
    hidden = await api.client.get(
        f"/infrastructure/resources/{rows['database'].id}", headers=outsider
    )
    assert_error(hidden, 403)
    nothing = await api.client.get("/infrastructure/compliance", headers=outsider)
    assert nothing.json()["resources"] == 0


async def test_cost_analysis_groups_series_change_movers_and_budgets(api: Api) -> None:
    _, admin = await api.token("admin")
    org = await make_org(api, admin)
    made = await provider(api, admin, org["id"])
    team = await api.client.post(
        "/teams", json={"org_id": org["id"], "name": "Web", "slug": "web"}, headers=admin
    )
    end = date(2026, 3, 14)
    async with api.session() as session:
        web = Resource(
            provider_id=uuid.UUID(made["id"]),
            type="t",
            identifier=f"a-{uuid.uuid4().hex}",
            name="web-db",
            tags={"team": "web", "service": "shop"},
        )
        data = Resource(
            provider_id=uuid.UUID(made["id"]),
            type="t",
            identifier=f"b-{uuid.uuid4().hex}",
            name="data-db",
            tags={"team": "data", "service": "lake"},
        )
        session.add_all([web, data])
        await session.flush()
        for n in range(14):  # 2026-03-01 .. 03-14: the week before costs less for web
            day = end - timedelta(days=n)
            current = n < 7
            session.add(CostRecord(resource_id=web.id, date=day, cost=Decimal(3 if current else 1)))
            session.add(CostRecord(resource_id=data.id, date=day, cost=Decimal(2)))
    budget = await api.client.post(
        "/infrastructure/budgets",
        json={"org_id": org["id"], "team_id": team.json()["id"], "amount": "30"},
        headers=admin,
    )
    assert budget.status_code == 201, budget.text

    async def costs(**params: Any) -> dict[str, Any]:
        got = await api.client.get(
            "/infrastructure/costs",
            params={"org_id": org["id"], "start": "2026-03-08", "end": "2026-03-14", **params},
            headers=admin,
        )
        assert got.status_code == 200, got.text
        return dict(got.json())

    report = await costs()
    assert report["previous_start"] == "2026-03-01" and report["previous_end"] == "2026-03-07"
    assert Decimal(report["total"]) == 35 and Decimal(report["previous_total"]) == 21
    groups = {g["key"]: g for g in report["groups"]}
    assert Decimal(groups["web"]["total"]) == 21 and Decimal(groups["web"]["change"]) == 14
    assert groups["web"]["change_pct"] == 200.0 and Decimal(groups["data"]["change"]) == 0
    assert [m["key"] for m in report["top_movers"]] == ["web"]
    assert len(report["series"]) == 7
    assert {k: Decimal(v) for k, v in report["series"][0]["values"].items()} == {
        "web": 3,
        "data": 2,
    }
    [line] = report["budgets"]  # web, March to the 14th: 7 x 1 + 7 x 3 = 28 of 30
    assert Decimal(line["spent"]) == 28 and line["status"] == "ok" and line["scope"] == "team web"

    weekly = await costs(step="week", group_by="service", limit=1)
    assert [p["period"] for p in weekly["series"]] == ["2026-03-02", "2026-03-09"]
    assert [g["key"] for g in weekly["groups"]] == ["shop", "(other)"]
    # the week of Monday 03-09, in the window: 6 days of shop at 3 and of the rest at 2
    assert {k: Decimal(v) for k, v in weekly["series"][1]["values"].items()} == {
        "shop": 18,
        "(other)": 12,
    }
    by_resource = await costs(group_by="resource")
    assert {g["label"] for g in by_resource["groups"]} == {"web-db", "data-db"}

    backwards = await api.client.get(
        "/infrastructure/costs",
        params={"start": "2026-03-14", "end": "2026-03-01"},
        headers=admin,
    )
    assert assert_error(backwards, 422)["details"][0]["field"] == "end"
    other = await make_org(api, admin)
    _, outsider = await scoped_user(api, admin, "viewer", "organization", other["id"])
    unseen = await api.client.get(
        "/infrastructure/costs",
        params={"start": "2026-03-08", "end": "2026-03-14"},
        headers=outsider,
    )
    assert Decimal(unseen.json()["total"]) == 0 and unseen.json()["budgets"] == []
