"""Backstage interoperability over HTTP on a real database: importing the documented example
catalog (with its dependency cycle), re-importing it idempotently, exporting a service as
catalog-info.yaml and importing that back, per-team permissions, and bad input."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import func, select

from core.models.audit import AuditLog
from core.models.catalog import Service, ServiceDependency
from core.settings import PROJECT_ROOT
from tests.helpers import add_git_connection
from tests.integration.identity_helpers import Api, assert_error
from tests.integration.test_org_team_api import make_org, make_team, member_user

EXAMPLE = Path(PROJECT_ROOT, "docs", "examples", "backstage-catalog.yaml").read_text()
Headers = dict[str, str]


def example(org: dict[str, Any]) -> str:
    """The documented catalog with the organization's own repositories: a repository is bound
    to one organization, and the tests share a database."""
    return EXAMPLE.replace("acme/", f"{org['slug']}/")


async def _org_with_teams(api: Api, admin: Headers) -> tuple[dict[str, Any], dict[str, Any]]:
    org = await make_org(api, admin)
    for host in ("github.com", "gitlab.com"):  # binding the repositories needs connections
        await add_git_connection(api.client, admin, org["id"], host)
    payments = await make_team(api, admin, org["id"], slug="payments")
    await make_team(api, admin, org["id"], slug="platform")
    return org, payments


async def _import(api: Api, headers: Headers, org_id: str, content: str) -> dict[str, Any]:
    response = await api.client.post(
        "/catalog/import", json={"org_id": org_id, "content": content}, headers=headers
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


def _by_ref(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["ref"]: e for e in report["entities"]}


async def _edges(api: Api, org_id: str) -> set[tuple[str, str, str]]:
    async with api.session() as session:
        query = select(Service.id, Service.name).where(Service.org_id == uuid.UUID(org_id))
        names = {sid: name for sid, name in (await session.execute(query)).all()}
        rows = await session.scalars(
            select(ServiceDependency).where(ServiceDependency.service_id.in_(list(names)))
        )
        return {(names[r.service_id], names[r.depends_on_service_id], r.type) for r in rows}


async def test_example_imports_everything_it_can_and_reports_the_cycle(api: Api) -> None:
    _, admin = await api.token("admin")
    org, _ = await _org_with_teams(api, admin)

    report = await _import(api, admin, org["id"], example(org))
    entities = _by_ref(report)

    assert report["summary"] == {
        "created": 8,
        "skipped": 1,
        "refused": 1,
        "relations_refused": 2,
    }
    assert entities["group:default/payments"]["action"] == "skipped"
    refused = entities["component:default/side-project"]
    assert refused["action"] == "refused"
    assert "user" in refused["reasons"][0] and "teams" in refused["reasons"][0]

    billing = {r["target"]: r for r in entities["component:default/billing"]["relations"]}
    cycle = billing["component:payments-api"]
    assert cycle["action"] == "refused"
    assert cycle["cycle"] == ["billing", "payments-api", "ledger", "billing"]
    assert "billing -> payments-api -> ledger -> billing" in cycle["reason"]
    assert billing["component:does-not-exist"]["action"] == "refused"

    assert await _edges(api, org["id"]) == {
        ("payments-api", "ledger", "runtime"),
        ("payments-api", "payments-db", "data"),
        ("payments-api", "fraud-http", "runtime"),
        ("ledger", "billing", "runtime"),
    }
    api_id = entities["component:default/payments-api"]["service_id"]
    service = (await api.client.get(f"/services/{api_id}", headers=admin)).json()
    assert service["repository_url"] == f"https://github.com/{org['slug']}/payments-api"
    assert service["tags"] == ["pci", "python"]
    assert service["lifecycle"] == "production"
    assert service["system"] == "payments"
    assert service["provides_apis"] == ["payments-http"]
    assert service["docs"] == [{"title": "Runbook", "url": "https://docs.example.com/payments"}]
    ledger = (
        await api.client.get(
            f"/services/{entities['component:default/ledger']['service_id']}", headers=admin
        )
    ).json()
    assert ledger["repository_url"] == f"https://gitlab.com/{org['slug']}/finance/ledger"
    assert ledger["repository_host"] == "gitlab"

    imports = await api.fetch(
        select(AuditLog).where(
            AuditLog.action == "catalog.import", AuditLog.resource_id == org["id"]
        )
    )
    assert len(imports) == 1 and imports[0].after["summary"]["created"] == 8


async def test_reimport_changes_nothing_and_export_round_trips(api: Api) -> None:
    _, admin = await api.token("admin")
    org, _ = await _org_with_teams(api, admin)
    first = await _import(api, admin, org["id"], example(org))
    edges = await _edges(api, org["id"])

    again = await _import(api, admin, org["id"], example(org))
    assert again["summary"] == {
        "unchanged": 8,
        "skipped": 1,
        "refused": 1,
        "relations_refused": 2,
    }
    assert _by_ref(again).keys() == _by_ref(first).keys()
    assert await _edges(api, org["id"]) == edges
    count = await api.fetch(
        select(func.count()).select_from(Service).where(Service.org_id == uuid.UUID(org["id"]))
    )
    assert count == [8]

    api_id = _by_ref(first)["component:default/payments-api"]["service_id"]
    exported = await api.client.get(f"/services/{api_id}/catalog-info", headers=admin)
    assert exported.status_code == 200
    assert exported.headers["content-type"].startswith("application/yaml")
    entity = yaml.safe_load(exported.text)
    assert entity["kind"] == "Component"
    assert entity["metadata"]["name"] == "payments-api"
    slug = entity["metadata"]["annotations"]["github.com/project-slug"]
    assert slug == f"{org['slug']}/payments-api"
    assert entity["spec"]["owner"] == "group:payments"
    assert entity["spec"]["dependsOn"] == ["component:ledger", "resource:payments-db"]
    assert entity["spec"]["consumesApis"] == ["api:fraud-http"]
    assert entity["spec"]["providesApis"] == ["api:payments-http"]

    # The export imports back as unchanged, sent as raw YAML this time.
    back = await api.client.post(
        f"/catalog/import?org_id={org['id']}",
        content=exported.text,
        headers={**admin, "Content-Type": "application/yaml"},
    )
    assert back.status_code == 200, back.text
    assert back.json()["entities"][0]["action"] == "unchanged"
    assert await _edges(api, org["id"]) == edges


async def test_an_import_updates_what_changed(api: Api) -> None:
    _, admin = await api.token("admin")
    org, _ = await _org_with_teams(api, admin)
    await _import(api, admin, org["id"], example(org))
    changed = example(org).replace(
        "lifecycle: experimental\n  owner: payments", "lifecycle: production\n  owner: payments"
    )
    report = _by_ref(await _import(api, admin, org["id"], changed))
    assert report["component:default/billing"]["action"] == "updated"
    assert report["component:default/ledger"]["action"] == "unchanged"
    updates = await api.fetch(
        select(AuditLog).where(
            AuditLog.action == "service.update",
            AuditLog.resource_id == str(report["component:default/billing"]["service_id"]),
        )
    )
    assert [(u.before["lifecycle"], u.after["lifecycle"]) for u in updates] == [
        ("experimental", "production")
    ]


async def test_a_team_member_imports_only_its_teams_entities(api: Api) -> None:
    _, admin = await api.token("admin")
    org, payments = await _org_with_teams(api, admin)
    _, member = await member_user(api, admin, payments["id"], "member")

    report = _by_ref(await _import(api, member, org["id"], example(org)))
    assert report["component:default/payments-api"]["action"] == "created"
    for ref in ("api:default/fraud-http", "component:default/fraud-service"):
        assert report[ref]["action"] == "refused"
        assert "services:write on team platform" in report[ref]["reasons"][0]
    # payments-api consumes fraud-http, which was refused: that relation is refused too.
    relations = {r["target"]: r for r in report["component:default/payments-api"]["relations"]}
    assert relations["fraud-http"]["action"] == "refused"
    names = {a for a, _, _ in await _edges(api, org["id"])}
    assert "fraud-service" not in names


async def test_bad_catalog_input_changes_nothing(api: Api) -> None:
    _, admin = await api.token("admin")
    org, _ = await _org_with_teams(api, admin)

    broken = await api.client.post(
        "/catalog/import",
        json={"org_id": org["id"], "content": "kind: Component\nmetadata: [unclosed\n"},
        headers=admin,
    )
    body = assert_error(broken, 422, "validation_error")
    assert "line" in body["message"]

    no_org = await api.client.post(
        "/catalog/import", content=EXAMPLE, headers={**admin, "Content-Type": "application/yaml"}
    )
    assert "org_id" in assert_error(no_org, 422)["message"]

    wrong_type = await api.client.post(
        "/catalog/import", content=b"\x00", headers={**admin, "Content-Type": "image/png"}
    )
    assert_error(wrong_type, 422)

    unknown_org = await api.client.post(
        "/catalog/import",
        json={"org_id": "00000000-0000-0000-0000-000000000001", "content": EXAMPLE},
        headers=admin,
    )
    assert_error(unknown_org, 404)
    assert await api.fetch(select(Service.id).where(Service.org_id == uuid.UUID(org["id"]))) == []

    _, viewer = await api.token("viewer")
    denied = await api.client.post(
        "/catalog/import", json={"org_id": org["id"], "content": EXAMPLE}, headers=viewer
    )
    assert_error(denied, 403)
