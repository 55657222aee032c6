"""The service catalog over HTTP on a real database: services (CRUD, repository URLs, filters,
pagination, soft delete), versions, the dependency graph (depth, direction, Mermaid, cycles,
unsatisfied constraints, concurrent changes), who may do what, the audit trail, and bad input
changing nothing. The tests share one database per backend: names are unique, lists filtered."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from sqlalchemy import select

from core.models.audit import AuditLog
from core.models.catalog import Service, ServiceDependency, ServiceTag, ServiceVersion
from core.settings import Settings
from core.topology import Topology
from tests.helpers import add_git_connection
from tests.integration.identity_helpers import Api, assert_error, running_api
from tests.integration.test_org_team_api import (
    actions,
    make_org,
    make_team,
    member_user,
    scoped_user,
)

Headers = dict[str, str]


def unique(prefix: str = "svc") -> str:
    """The tests share a database: every service gets a name of its own."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def setup(api: Api) -> tuple[Headers, dict[str, Any], dict[str, Any]]:
    """An admin's header, a new organization and a team in it."""
    _, admin = await api.token("admin")
    org = await make_org(api, admin)
    return admin, org, await make_team(api, admin, org["id"])


async def create(api: Api, headers: Headers, team_id: str, **fields: Any) -> dict[str, Any]:
    body = {"name": unique(), "owner_team_id": team_id, **fields}
    response = await api.client.post("/services", json=body, headers=headers)
    assert response.status_code == 201, response.text
    return dict(response.json())


async def get(api: Api, headers: Headers, service_id: str) -> dict[str, Any]:
    response = await api.client.get(f"/services/{service_id}", headers=headers)
    assert response.status_code == 200, response.text
    return dict(response.json())


async def names(api: Api, headers: Headers, **params: Any) -> list[str]:
    response = await api.client.get("/services", params={"limit": 200, **params}, headers=headers)
    assert response.status_code == 200, response.text
    return [s["name"] for s in response.json()["items"]]


async def put_deps(api: Api, headers: Headers, service_id: str, *deps: dict[str, Any]) -> Any:
    return await api.client.put(
        f"/services/{service_id}/dependencies", json={"dependencies": list(deps)}, headers=headers
    )


async def graph(api: Api, headers: Headers, service_id: str, **params: Any) -> dict[str, Any]:
    response = await api.client.get(
        f"/services/{service_id}/dependencies", params=params, headers=headers
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


async def edges_of(api: Api, service_id: str) -> set[tuple[str, str, str | None]]:
    rows = await api.fetch(
        select(ServiceDependency).where(ServiceDependency.service_id == uuid.UUID(service_id))
    )
    return {(str(r.depends_on_service_id), r.type, r.version_constraint) for r in rows}


async def audit(api: Api, service_id: str, action: str) -> list[Any]:
    """The service's audit entries for `action`, oldest first (`Any`: before/after are JSON)."""
    return await api.fetch(
        select(AuditLog)
        .where(AuditLog.resource_id == service_id, AuditLog.action == action)
        .order_by(AuditLog.occurred_at, AuditLog.id)
    )


# -- services --------------------------------------------------------------------------------
async def test_service_lifecycle_create_read_update_delete_and_audit(api: Api) -> None:
    admin, org, team = await setup(api)
    for host in ("github.com", "gitlab.com"):  # binding a repository needs a connection
        await add_git_connection(api.client, admin, org["id"], host)
    name = unique("payments")
    created = await create(
        api,
        admin,
        team["id"],
        name=name,
        description="  Public payments API ",
        repository_url="git@github.com:Acme/payments-api.git",
        docs=[{"title": "Runbook", "url": "https://docs.example.com/pay"}, {"url": "http://x.io"}],
        tags=["python", "pci", "python"],
        lifecycle="production",
    )
    assert created["name"] == name and created["org_id"] == org["id"]
    assert (
        created["owner_team_id"] == team["id"] and created["description"] == "Public payments API"
    )
    assert created["repository_url"] == "https://github.com/Acme/payments-api"
    assert created["repository_host"] == "github"
    assert created["docs"] == [
        {"title": "Runbook", "url": "https://docs.example.com/pay"},
        {"title": "http://x.io", "url": "http://x.io"},
    ]
    assert created["lifecycle"] == "production" and created["kind"] == "component"
    assert sorted(created["tags"]) == ["pci", "python"]
    # what POST answered is what GET reads back
    assert await get(api, admin, created["id"]) == created
    row = (await api.fetch(select(Service).where(Service.id == uuid.UUID(created["id"]))))[0]
    assert row.repository_path == "github.com/acme/payments-api"

    url = f"/services/{created['id']}"
    updated = await api.client.put(
        url,
        json={
            "description": "Payments",
            "tags": ["go"],
            "lifecycle": "deprecated",
            "repository_url": "https://gitlab.com/acme/pay/sub/-/tree/main",
        },
        headers=admin,
    )
    assert updated.status_code == 200, updated.text
    body = updated.json()
    assert body["description"] == "Payments" and body["tags"] == ["go"]
    assert body["lifecycle"] == "deprecated" and body["name"] == name  # untouched
    assert body["repository_url"] == "https://gitlab.com/acme/pay/sub"
    assert body["repository_host"] == "gitlab" and body["docs"] == created["docs"]
    assert await get(api, admin, created["id"]) == body
    cleared = await api.client.put(url, json={"repository_url": ""}, headers=admin)
    assert cleared.json()["repository_url"] is None and cleared.json()["repository_host"] is None
    # a PUT that changes nothing is not audited
    same = await api.client.put(
        url, json={"tags": ["go"], "lifecycle": "deprecated"}, headers=admin
    )
    assert same.status_code == 200

    (first, _) = await audit(api, created["id"], "service.update")
    assert first.before["description"] == "Public payments API"
    assert first.after["description"] == "Payments"
    assert sorted(first.before["tags"]) == ["pci", "python"] and first.after["tags"] == ["go"]
    assert first.before["lifecycle"] == "production" and first.after["lifecycle"] == "deprecated"

    assert (await api.client.delete(url, headers=admin)).status_code == 204
    assert_error(await api.client.get(url, headers=admin), 404, "not_found")
    assert_error(await api.client.put(url, json={"description": "x"}, headers=admin), 404)
    assert_error(await api.client.delete(url, headers=admin), 404)
    assert await names(api, admin, org_id=org["id"]) == []
    row = (await api.fetch(select(Service).where(Service.id == uuid.UUID(created["id"]))))[0]
    assert row.deleted_at is not None and row.description == "Payments"  # soft
    assert await actions(api, "service", created["id"]) == [
        "service.create",
        "service.update",
        "service.update",
        "service.delete",
    ]
    (deleted,) = await audit(api, created["id"], "service.delete")
    assert deleted.before["name"] == name and deleted.after is None

    # the name is free again
    again = await create(api, admin, team["id"], name=name)
    assert again["id"] != created["id"]
    assert await names(api, admin, org_id=org["id"]) == [name]


async def test_names_are_unique_among_an_organizations_live_services(api: Api) -> None:
    admin, org, team = await setup(api)
    other_team = await make_team(api, admin, org["id"])
    other_org = await make_org(api, admin)
    elsewhere = await make_team(api, admin, other_org["id"])
    first = await create(api, admin, team["id"])
    name = first["name"]

    clash = await api.client.post(
        "/services", json={"name": name, "owner_team_id": other_team["id"]}, headers=admin
    )
    err = assert_error(clash, 409, "conflict")
    assert name in err["message"] and err["details"]["name"] == name
    assert (await create(api, admin, elsewhere["id"], name=name))["org_id"] == other_org["id"]

    second = await create(api, admin, team["id"])
    rename = await api.client.put(f"/services/{second['id']}", json={"name": name}, headers=admin)
    assert_error(rename, 409, "conflict")
    assert (await get(api, admin, second["id"]))["name"] == second["name"]
    # renaming to its own name, or to a fresh one, is fine
    assert (
        await api.client.put(f"/services/{first['id']}", json={"name": name}, headers=admin)
    ).status_code == 200
    fresh = unique("renamed")
    renamed = await api.client.put(f"/services/{second['id']}", json={"name": fresh}, headers=admin)
    assert renamed.status_code == 200 and renamed.json()["name"] == fresh
    assert sorted(await names(api, admin, org_id=org["id"])) == sorted([name, fresh])


async def test_self_hosted_git_hosts_from_settings(
    settings: Settings, topology: Topology, database_url: str
) -> None:
    configured = settings.model_copy(update={"git_hosts": {"git.example.com": "gitlab"}})
    async with running_api(configured, topology, database_url) as api:
        admin, org, team = await setup(api)
        await add_git_connection(api.client, admin, org["id"], "git.example.com")
        service = await create(
            api, admin, team["id"], repository_url="ssh://git@git.example.com:2222/grp/sub/pay.git"
        )
        assert service["repository_url"] == "https://git.example.com/grp/sub/pay"
        assert service["repository_host"] == "gitlab"
        refused = await api.client.put(
            f"/services/{service['id']}",
            json={"repository_url": "https://git.other.com/grp/pay"},
            headers=admin,
        )
        err = assert_error(refused, 422, "validation_error")
        assert "git.other.com" in err["message"] and "git.example.com" in err["message"]
        assert err["details"][0]["field"] == "repository_url"


# (fields, the field the error names, what its message says)
BAD_SERVICE_INPUT: list[tuple[dict[str, Any], str, str]] = [
    ({"name": "Payments"}, "name", "lower-case"),
    ({"name": "under_score"}, "name", "lower-case"),
    ({"name": "-leading"}, "name", "lower-case"),
    ({"name": ""}, "name", "lower-case"),
    ({"name": "a" * 64}, "body.name", "at most 63"),
    ({"repository_url": "https://example.com/acme/pay"}, "repository_url", "known Git host"),
    ({"repository_url": "https://github.com/acme"}, "repository_url", "owner/name"),
    ({"repository_url": "github.com/acme/pay"}, "repository_url", "not a repository URL"),
    ({"repository_url": "https://[github.com/a/b"}, "repository_url", "not a repository URL"),
    ({"docs": [{"url": "ftp://docs.example.com"}]}, "docs[0].url", "not an http(s) URL"),
    ({"docs": [{"url": "https://"}]}, "docs[0].url", "not an http(s) URL"),
    ({"docs": [{"url": "https://a.b", "extra": 1}]}, "body.docs.0.extra", "not permitted"),
    ({"tags": ["Not A Slug"]}, "tags", "lower-case"),
    ({"tags": [f"t{i}" for i in range(51)]}, "body.tags", "at most 50"),
    ({"lifecycle": "retired"}, "body.lifecycle", "experimental"),
    ({"kind": "database"}, "body.kind", "component"),
    ({"owner": "someone"}, "body.owner", "not permitted"),
    ({"owner_team_id": "not-a-uuid"}, "body.owner_team_id", "UUID"),
]


async def test_bad_service_input_is_422_and_changes_nothing(api: Api) -> None:
    admin, org, team = await setup(api)
    existing = await create(api, admin, team["id"], tags=["keep"], docs=[{"url": "https://d.io"}])
    for fields, field, says in BAD_SERVICE_INPUT:
        body = {"name": unique(), "owner_team_id": team["id"], **fields}
        err = assert_error(await api.client.post("/services", json=body, headers=admin), 422)
        assert err["code"] == "validation_error"
        assert err["details"][0]["field"] == field, (fields, err)
        assert says in err["details"][0]["message"], (fields, err)

        # the same change on an existing service, beside a valid change, changes nothing
        change = {k: v for k, v in fields.items() if k != "owner_team_id"} or fields
        change = {"name": unique("renamed"), "description": "should not stick", **change}
        refused = await api.client.put(f"/services/{existing['id']}", json=change, headers=admin)
        assert_error(refused, 422, "validation_error")
    assert await names(api, admin, org_id=org["id"]) == [existing["name"]]
    assert await get(api, admin, existing["id"]) == existing
    assert await actions(api, "service", existing["id"]) == ["service.create"]


async def test_unknown_owner_team_and_handing_over(api: Api) -> None:
    admin, org, team = await setup(api)
    other_team = await make_team(api, admin, org["id"])
    foreign_team = await make_team(api, admin, (await make_org(api, admin))["id"])
    name = unique()
    missing = str(uuid.uuid4())
    unknown = await api.client.post(
        "/services", json={"name": name, "owner_team_id": missing}, headers=admin
    )
    assert missing in assert_error(unknown, 404, "not_found")["message"]
    assert await api.fetch(select(Service).where(Service.name == name)) == []

    service = await create(api, admin, team["id"])
    url = f"/services/{service['id']}"
    foreign = await api.client.put(url, json={"owner_team_id": foreign_team["id"]}, headers=admin)
    assert assert_error(foreign, 422)["details"][0]["field"] == "owner_team_id"
    assert (await get(api, admin, service["id"]))["owner_team_id"] == team["id"]
    moved = await api.client.put(url, json={"owner_team_id": other_team["id"]}, headers=admin)
    assert moved.status_code == 200 and moved.json()["owner_team_id"] == other_team["id"]
    (entry,) = await audit(api, service["id"], "service.update")
    assert entry.before["owner_team_id"] == team["id"]
    assert entry.after["owner_team_id"] == other_team["id"]
    assert await names(api, admin, owner_team_id=other_team["id"]) == [service["name"]]
    assert await names(api, admin, owner_team_id=team["id"]) == []


async def test_lists_filter_and_paginate(api: Api) -> None:
    admin, org, team = await setup(api)
    other_team = await make_team(api, admin, org["id"])
    base = unique("list")
    specs = [
        ("a", team, ["python", "pci"], "production", "Takes card payments"),
        ("b", team, ["python"], "experimental", "Ledger of record"),
        ("c", other_team, ["go"], "production", "Sends 100% of the EMAILS"),
        ("d", other_team, [], "deprecated", "Old search"),
        ("e", team, ["pci"], "experimental", ""),
    ]
    for suffix, owner, tags, lifecycle, description in specs:
        await create(
            api,
            admin,
            owner["id"],
            name=f"{base}-{suffix}",
            tags=tags,
            lifecycle=lifecycle,
            description=description,
        )
    other_org_team = await make_team(api, admin, (await make_org(api, admin))["id"])
    await create(api, admin, other_org_team["id"], name=f"{base}-a", tags=["python"])

    def n(*suffixes: str) -> list[str]:
        return [f"{base}-{s}" for s in suffixes]

    in_org = {"org_id": org["id"]}
    assert await names(api, admin, **in_org) == n("a", "b", "c", "d", "e")  # by name
    assert len(await names(api, admin, q=base)) == 6  # across organizations
    assert await names(api, admin, **in_org, name=f"{base}-b") == n("b")
    assert await names(api, admin, name=f"{base}-a") == n("a", "a")
    assert await names(api, admin, **in_org, name=base) == []  # exact, not a prefix
    assert await names(api, admin, **in_org, owner_team_id=other_team["id"]) == n("c", "d")
    assert await names(api, admin, **in_org, tag="python") == n("a", "b")
    assert await names(api, admin, **in_org, tag="pci", lifecycle="production") == n("a")
    assert await names(api, admin, **in_org, lifecycle="experimental") == n("b", "e")
    assert await names(api, admin, **in_org, q="ledger") == n("b")  # description, any case
    assert await names(api, admin, **in_org, q="emails") == n("c")
    assert await names(api, admin, **in_org, q=f"{base}-d".upper()) == n("d")  # name, any case
    assert await names(api, admin, **in_org, q="100%") == n("c")
    assert await names(api, admin, **in_org, q="%") == n("c")  # a literal %, not a wildcard
    assert await names(api, admin, **in_org, q="_") == []  # a literal _, not a wildcard
    assert await names(api, admin, **in_org, tag="rust") == []

    # keyset pages: every service once, in order, and `next` keeps the filters
    seen: list[str] = []
    response = await api.client.get(
        "/services", params={**in_org, "limit": 2, "tag": "pci"}, headers=admin
    )
    page = response.json()
    assert [s["name"] for s in page["items"]] == n("a", "e") and page["next"] is None
    next_url: str | None = f"/services?org_id={org['id']}&limit=2"
    while next_url:
        page = (await api.client.get(next_url, headers=admin)).json()
        assert len(page["items"]) <= 2
        seen += [s["name"] for s in page["items"]]
        next_url = page["next"]
    assert seen == n("a", "b", "c", "d", "e")
    # offset pages
    by_offset = await api.client.get(
        "/services", params={**in_org, "limit": 2, "offset": 2}, headers=admin
    )
    assert [s["name"] for s in by_offset.json()["items"]] == n("c", "d")
    assert by_offset.json()["next_offset"] == 4 and "offset=4" in by_offset.json()["next"]
    last = await api.client.get(by_offset.json()["next"], headers=admin)
    assert [s["name"] for s in last.json()["items"]] == n("e")
    assert last.json()["next"] is None

    assert_error(await api.client.get("/services?cursor=garbage", headers=admin), 400)
    assert_error(await api.client.get("/services?cursor=x&offset=1", headers=admin), 400)
    for bad in ({"lifecycle": "retired"}, {"limit": 0}, {"limit": 201}, {"org_id": "nope"}):
        assert_error(await api.client.get("/services", params=bad, headers=admin), 422)


# -- versions --------------------------------------------------------------------------------
async def test_versions_register_list_and_refuse_duplicates(api: Api) -> None:
    admin, _, team = await setup(api)
    service = await create(api, admin, team["id"])
    url = f"/services/{service['id']}/versions"
    first = await api.client.post(
        url,
        json={
            "version": "v1.2.3",
            "git_sha": "9FCEB02D0AE598E95DC970B74767F19372D61AF8",
            "dockerfile_path": "docker/Dockerfile",
            "config": {"replicas": 2, "env": {"LOG": "info"}},
        },
        headers=admin,
    )
    assert first.status_code == 201, first.text
    body = first.json()
    assert body["version"] == "1.2.3" and body["service_id"] == service["id"]
    assert body["git_sha"] == "9fceb02d0ae598e95dc970b74767f19372d61af8"
    assert body["dockerfile_path"] == "docker/Dockerfile"
    assert body["config"] == {"replicas": 2, "env": {"LOG": "info"}}

    for duplicate in ("1.2.3", "v1.2.3", " 1.2.3 "):
        clash = await api.client.post(url, json={"version": duplicate}, headers=admin)
        err = assert_error(clash, 409, "conflict")
        assert "1.2.3" in err["message"] and err["details"] == {
            "version": "1.2.3",
            "id": body["id"],
        }

    for bad, field in (
        ({"version": "1.2"}, "version"),
        ({"version": "latest"}, "version"),
        ({"version": "2.0.0", "git_sha": "xyz"}, "git_sha"),
        ({"version": "2.0.0", "dockerfile_path": "../Dockerfile"}, "dockerfile_path"),
        ({"version": "2.0.0", "dockerfile_path": "/etc/Dockerfile"}, "dockerfile_path"),
        ({"version": "2.0.0", "config": []}, "body.config"),
        ({"version": "2.0.0", "colour": "red"}, "body.colour"),
        ({}, "body.version"),
    ):
        err = assert_error(await api.client.post(url, json=bad, headers=admin), 422)
        assert err["details"][0]["field"] == field

    for version in ("1.10.0", "2.0.0-rc.1"):
        assert (
            await api.client.post(url, json={"version": version}, headers=admin)
        ).status_code == 201
    listed = await api.client.get(url, headers=admin)
    assert [v["version"] for v in listed.json()["items"]] == ["2.0.0-rc.1", "1.10.0", "1.2.3"]
    paged = await api.client.get(url, params={"limit": 2}, headers=admin)
    assert len(paged.json()["items"]) == 2
    rest = await api.client.get(paged.json()["next"], headers=admin)
    assert [v["version"] for v in rest.json()["items"]] == ["1.2.3"]
    rows = await api.fetch(
        select(ServiceVersion.version).where(ServiceVersion.service_id == uuid.UUID(service["id"]))
    )
    assert sorted(rows) == ["1.10.0", "1.2.3", "2.0.0-rc.1"]  # nothing from the refusals
    entries = await audit(api, service["id"], "service.version.create")
    assert [e.after["version"] for e in entries] == ["1.2.3", "1.10.0", "2.0.0-rc.1"]

    # a service's versions are its own: another service may have 1.2.3 too
    other = await create(api, admin, team["id"])
    other_url = f"/services/{other['id']}/versions"
    assert (
        await api.client.post(other_url, json={"version": "1.2.3"}, headers=admin)
    ).status_code == 201
    missing = f"/services/{uuid.uuid4()}/versions"
    assert_error(await api.client.get(missing, headers=admin), 404, "not_found")
    assert_error(await api.client.post(missing, json={"version": "1.0.0"}, headers=admin), 404)
    assert (await api.client.delete(f"/services/{other['id']}", headers=admin)).status_code == 204
    assert_error(await api.client.get(other_url, headers=admin), 404)
    assert_error(await api.client.post(other_url, json={"version": "9.0.0"}, headers=admin), 404)


# -- dependencies ----------------------------------------------------------------------------
async def test_dependency_graph_depth_direction_constraints_and_mermaid(api: Api) -> None:
    admin, _, team = await setup(api)
    web, pay, ledger, cache, db, ci = [
        await create(api, admin, team["id"], name=unique(p))
        for p in ("web", "pay", "ledger", "cache", "db", "ci")
    ]
    ids = {s["name"]: s["id"] for s in (web, pay, ledger, cache, db, ci)}
    name_of = {v: k for k, v in ids.items()}
    for version in ("1.4.0", "2.1.0", "2.3.0"):
        await api.client.post(
            f"/services/{ledger['id']}/versions", json={"version": version}, headers=admin
        )

    # web -> pay -> ledger -> db ; pay -> cache (build) ; pay -> ci (data)
    replaced = await put_deps(
        api,
        admin,
        pay["id"],
        {"service": ledger["name"], "version_constraint": "^2.1.0"},
        {"service_id": cache["id"], "type": "build"},
        {"service_id": ci["id"], "type": "data", "version_constraint": ">=1.0.0"},
    )
    assert replaced.status_code == 200, replaced.text
    direct = replaced.json()
    assert {(e["target"], e["type"]) for e in direct["edges"]} == {
        (ledger["id"], "runtime"),
        (cache["id"], "build"),
        (ci["id"], "data"),
    }
    assert (await put_deps(api, admin, web["id"], {"service_id": pay["id"]})).status_code == 200
    assert (
        await put_deps(api, admin, ledger["id"], {"service_id": db["id"], "type": "data"})
    ).status_code == 200

    one = await graph(api, admin, pay["id"])
    assert one["root"] == pay["id"] and one["depth"] == 1
    assert {name_of[n["id"]]: n["depth"] for n in one["nodes"]} == {
        pay["name"]: 0,
        ledger["name"]: 1,
        cache["name"]: 1,
        ci["name"]: 1,
        web["name"]: -1,
    }
    assert one["nodes"][0]["id"] == pay["id"]
    by_target = {e["target"]: e for e in one["edges"] if e["source"] == pay["id"]}
    assert by_target[ledger["id"]]["satisfied"] is True
    assert by_target[ledger["id"]]["satisfying_versions"] == ["2.3.0", "2.1.0"]
    assert by_target[cache["id"]]["satisfied"] is None  # no constraint
    assert by_target[ci["id"]]["satisfied"] is False  # ci has no version at all
    (problem,) = one["problems"]
    assert problem["code"] == "unsatisfied_constraint"
    assert problem["source"] == pay["id"] and problem["target"] == ci["id"]
    assert ci["name"] in problem["message"] and ">=1.0.0" in problem["message"]
    ledger_node = next(n for n in one["nodes"] if n["id"] == ledger["id"])
    assert ledger_node["latest_version"] == "2.3.0"

    deep = await graph(api, admin, web["id"], depth=3, direction="dependencies")
    assert {name_of[n["id"]]: n["depth"] for n in deep["nodes"]} == {
        web["name"]: 0,
        pay["name"]: 1,
        ledger["name"]: 2,
        cache["name"]: 2,
        ci["name"]: 2,
        db["name"]: 3,
    }
    assert len(deep["edges"]) == 5
    two = await graph(api, admin, web["id"], depth=2, direction="dependencies")
    assert db["id"] not in {n["id"] for n in two["nodes"]}
    assert all(e["target"] != db["id"] for e in two["edges"])
    up = await graph(api, admin, db["id"], depth=10, direction="dependents")
    assert {name_of[n["id"]]: n["depth"] for n in up["nodes"]} == {
        db["name"]: 0,
        ledger["name"]: -1,
        pay["name"]: -2,
        web["name"]: -3,
    }
    assert up["problems"] == []  # pay -> ci is not on the way up
    only_down = await graph(api, admin, pay["id"], direction="dependencies")
    assert web["id"] not in {n["id"] for n in only_down["nodes"]}

    # an unsatisfiable range is reported, and drawn dotted in Mermaid
    await put_deps(api, admin, web["id"], {"service_id": pay["id"]})
    await put_deps(
        api, admin, pay["id"], {"service_id": ledger["id"], "version_constraint": "^3.0.0"}
    )
    unsatisfied = await graph(api, admin, pay["id"], direction="dependencies")
    (edge,) = unsatisfied["edges"]
    assert edge["satisfied"] is False and edge["satisfying_versions"] == []
    assert [p["target"] for p in unsatisfied["problems"]] == [ledger["id"]]
    mermaid = await api.client.get(
        f"/services/{pay['id']}/dependencies", params={"format": "mermaid"}, headers=admin
    )
    assert mermaid.status_code == 200
    assert mermaid.headers["content-type"].startswith("text/vnd.mermaid")
    text = mermaid.text
    assert text.startswith("graph LR\n") and f'n0["{pay["name"]}"]' in text
    assert f'["{ledger["name"]}"]' in text and f'["{web["name"]}"]' in text
    assert 'n0 -.->|"runtime ^3.0.0"| n1' in text and '-->|"runtime"| n0' in text
    assert "style n0 stroke-width:3px" in text

    for bad in ({"depth": 0}, {"depth": 11}, {"direction": "up"}, {"format": "dot"}):
        assert_error(
            await api.client.get(f"/services/{pay['id']}/dependencies", params=bad, headers=admin),
            422,
        )
    assert_error(await api.client.get(f"/services/{uuid.uuid4()}/dependencies", headers=admin), 404)


async def test_dependencies_are_replaced_as_a_set_and_audited(api: Api) -> None:
    admin, _, team = await setup(api)
    app, a, b = [await create(api, admin, team["id"]) for _ in range(3)]
    # the same target may be both a runtime and a build dependency
    both = await put_deps(
        api,
        admin,
        app["id"],
        {"service_id": a["id"], "version_constraint": " ~1.4 "},
        {"service_id": a["id"], "type": "build"},
    )
    assert both.status_code == 200, both.text
    assert await edges_of(api, app["id"]) == {
        (a["id"], "runtime", "~1.4"),
        (a["id"], "build", None),
    }
    await put_deps(api, admin, app["id"], {"service_id": b["id"], "version_constraint": "*"})
    assert await edges_of(api, app["id"]) == {(b["id"], "runtime", None)}
    await put_deps(api, admin, app["id"], {"service_id": b["id"]})  # no change: no audit
    await put_deps(api, admin, app["id"])
    assert await edges_of(api, app["id"]) == set()
    assert (await graph(api, admin, app["id"]))["edges"] == []

    entries = await audit(api, app["id"], "service.dependencies.replace")
    assert len(entries) == 3
    assert entries[0].before == {"dependencies": []}
    assert {d["type"] for d in entries[0].after["dependencies"]} == {"runtime", "build"}
    assert entries[1].after == {
        "dependencies": [
            {"depends_on_service_id": b["id"], "type": "runtime", "version_constraint": None}
        ]
    }
    assert entries[2].after == {"dependencies": []}


async def test_runtime_cycles_are_refused_naming_the_cycle(api: Api) -> None:
    admin, _, team = await setup(api)
    a, b, c, d = [await create(api, admin, team["id"], name=unique(p)) for p in "abcd"]
    assert (await put_deps(api, admin, a["id"], {"service_id": b["id"]})).status_code == 200
    assert (await put_deps(api, admin, b["id"], {"service_id": c["id"]})).status_code == 200
    before = {s["id"]: await edges_of(api, s["id"]) for s in (a, b, c)}

    # c -> a closes a -> b -> c -> a (and c's other dependency does not help it through)
    refused = await put_deps(api, admin, c["id"], {"service_id": d["id"]}, {"service": a["name"]})
    err = assert_error(refused, 409, "dependency_cycle")
    path = [c["name"], a["name"], b["name"], c["name"]]
    assert err["details"]["cycle"] == path
    assert err["details"]["cycle_ids"] == [c["id"], a["id"], b["id"], c["id"]]
    assert " -> ".join(path) in err["message"]
    # a two-service cycle
    short = assert_error(await put_deps(api, admin, b["id"], {"service_id": a["id"]}), 409)
    assert short["code"] == "dependency_cycle"
    assert short["details"]["cycle"] == [b["name"], a["name"], b["name"]]
    assert {s["id"]: await edges_of(api, s["id"]) for s in (a, b, c)} == before  # unchanged
    assert await audit(api, c["id"], "service.dependencies.replace") == []

    # build and data edges may point back
    back = await put_deps(
        api,
        admin,
        c["id"],
        {"service_id": a["id"], "type": "build"},
        {"service_id": b["id"], "type": "data"},
    )
    assert back.status_code == 200, back.text
    # ...and are no path for a runtime cycle either
    assert (await put_deps(api, admin, d["id"], {"service_id": a["id"]})).status_code == 200
    assert (
        await put_deps(
            api, admin, a["id"], {"service_id": b["id"]}, {"service_id": d["id"], "type": "build"}
        )
    ).status_code == 200
    # dropping a -> b (the service's own edges are being replaced) makes c -> a possible
    assert (await put_deps(api, admin, a["id"])).status_code == 200
    assert (await put_deps(api, admin, c["id"], {"service_id": a["id"]})).status_code == 200
    # and now a -> b would close a -> b -> c -> a
    err = assert_error(await put_deps(api, admin, a["id"], {"service_id": b["id"]}), 409)
    assert err["details"]["cycle"] == [a["name"], b["name"], c["name"], a["name"]]
    around = await graph(api, admin, c["id"], depth=10)
    assert {n["id"]: n["depth"] for n in around["nodes"]} == {c["id"]: 0, a["id"]: 1, b["id"]: -1}


async def test_bad_dependencies_are_422_and_change_nothing(
    api: Api,
) -> None:
    admin, _, team = await setup(api)
    app, target, gone = [await create(api, admin, team["id"]) for _ in range(3)]
    foreign_team = await make_team(api, admin, (await make_org(api, admin))["id"])
    foreign = await create(api, admin, foreign_team["id"])
    await put_deps(api, admin, app["id"], {"service_id": target["id"], "type": "data"})
    assert (await api.client.delete(f"/services/{gone['id']}", headers=admin)).status_code == 204
    before = await edges_of(api, app["id"])
    ok = {"service_id": target["id"]}

    cases: list[tuple[dict[str, Any], str, str]] = [
        ({"service_id": app["id"]}, "dependencies[1].service_id", "itself"),
        ({"service_id": str(uuid.uuid4())}, "dependencies[1].service_id", "not found"),
        ({"service_id": gone["id"]}, "dependencies[1].service_id", "not found"),
        ({"service_id": foreign["id"]}, "dependencies[1].service_id", "organization"),
        ({"service": foreign["name"]}, "dependencies[1].service", "no service named"),
        ({"service": gone["name"]}, "dependencies[1].service", "no service named"),
        ({}, "dependencies[1]", "either service_id or service"),
        ({"service_id": target["id"], "service": target["name"]}, "dependencies[1]", "not both"),
        ({**ok, "type": "optional"}, "body.dependencies.1.type", "runtime"),
        (
            {**ok, "type": "build", "version_constraint": "latest"},
            "dependencies[1].version_constraint",
            "range",
        ),
        (
            {**ok, "type": "build", "version_constraint": "1.0.0 - ^2"},
            "dependencies[1].version_constraint",
            "range",
        ),
        (
            {**ok, "type": "build", "version_constraint": "~>1.2"},
            "dependencies[1].version_constraint",
            "range",
        ),
        (ok, "dependencies[1]", "listed twice"),
        ({**ok, "colour": "red"}, "body.dependencies.1.colour", "not permitted"),
    ]
    for dep, field, says in cases:
        response = await put_deps(api, admin, app["id"], ok, dep)
        err = assert_error(response, 422, "validation_error")
        assert err["details"][0]["field"] == field, (dep, err)
        assert says in err["details"][0]["message"], (dep, err)
    assert_error(
        await api.client.put(f"/services/{app['id']}/dependencies", json={}, headers=admin), 422
    )
    assert await edges_of(api, app["id"]) == before
    assert len(await audit(api, app["id"], "service.dependencies.replace")) == 1


async def test_a_service_others_depend_on_cannot_be_deleted(api: Api) -> None:
    admin, org, team = await setup(api)
    base, user_a, user_b, leaf = [
        await create(api, admin, team["id"], name=unique(p)) for p in ("base", "ua", "ub", "leaf")
    ]
    await put_deps(api, admin, user_a["id"], {"service_id": base["id"]})
    await put_deps(api, admin, user_b["id"], {"service_id": base["id"], "type": "build"})
    await put_deps(api, admin, base["id"], {"service_id": leaf["id"]})

    refused = await api.client.delete(f"/services/{base['id']}", headers=admin)
    err = assert_error(refused, 409, "conflict")
    assert err["details"] == {"dependents": sorted([user_a["name"], user_b["name"]])}
    assert user_a["name"] in err["message"] and user_b["name"] in err["message"]
    assert (await get(api, admin, base["id"]))["name"] == base["name"]  # still there
    assert await actions(api, "service", base["id"]) == [
        "service.create",
        "service.dependencies.replace",
    ]

    for dependent in (user_a, user_b):
        assert (
            await api.client.delete(f"/services/{dependent['id']}", headers=admin)
        ).status_code == 204
    around = await graph(api, admin, base["id"], depth=5)
    assert {n["id"] for n in around["nodes"]} == {base["id"], leaf["id"]}
    assert (await api.client.delete(f"/services/{base['id']}", headers=admin)).status_code == 204
    # gone from the list and from the graph of what it depended on; its own edges went with it
    assert await names(api, admin, org_id=org["id"]) == [leaf["name"]]
    assert (await graph(api, admin, leaf["id"], depth=5))["nodes"] == [
        next(n for n in around["nodes"] if n["id"] == leaf["id"]) | {"depth": 0}
    ]
    assert await edges_of(api, base["id"]) == set()
    # the name can be used again, and the new service starts with no dependencies
    reborn = await create(api, admin, team["id"], name=base["name"])
    assert (await graph(api, admin, reborn["id"]))["edges"] == []
    tags = await api.fetch(
        select(ServiceTag).where(ServiceTag.service_id == uuid.UUID(reborn["id"]))
    )
    assert tags == []


# -- who may do what -------------------------------------------------------------------------
async def test_team_members_manage_their_teams_services_only(api: Api) -> None:
    admin, org, team = await setup(api)
    other_team = await make_team(api, admin, org["id"])
    _, member = await member_user(api, admin, team["id"], "member")
    theirs = await create(api, admin, other_team["id"], description="not yours")
    theirs_url = f"/services/{theirs['id']}"

    mine = await create(api, member, team["id"], tags=["mine"])
    url = f"/services/{mine['id']}"
    assert mine["created_by"] is not None
    assert (
        await api.client.put(url, json={"lifecycle": "production"}, headers=member)
    ).status_code == 200
    assert (
        await api.client.post(f"{url}/versions", json={"version": "1.0.0"}, headers=member)
    ).status_code == 201
    # a dependency on another team's service is the depending team's business
    assert (
        await put_deps(api, member, mine["id"], {"service_id": theirs["id"]})
    ).status_code == 200
    seen = await graph(api, member, mine["id"])
    assert theirs["name"] in {n["name"] for n in seen["nodes"]}

    def forbidden(response: Any) -> None:
        err = assert_error(response, 403, "forbidden")
        assert err["details"]["permission"] in ("services:write", "services:read")

    forbidden(
        await api.client.post(
            "/services", json={"name": unique(), "owner_team_id": other_team["id"]}, headers=member
        )
    )
    forbidden(await api.client.put(theirs_url, json={"description": "mine now"}, headers=member))
    forbidden(await api.client.delete(theirs_url, headers=member))
    forbidden(
        await api.client.post(f"{theirs_url}/versions", json={"version": "1.0.0"}, headers=member)
    )
    forbidden(await put_deps(api, member, theirs["id"]))
    # handing a service to a team one cannot write to is refused; so is taking one over
    forbidden(await api.client.put(url, json={"owner_team_id": other_team["id"]}, headers=member))
    forbidden(await api.client.put(theirs_url, json={"owner_team_id": team["id"]}, headers=member))
    # reading is scoped to the team too
    forbidden(await api.client.get(theirs_url, headers=member))
    forbidden(await api.client.get(f"{theirs_url}/versions", headers=member))
    forbidden(await api.client.get(f"{theirs_url}/dependencies", headers=member))
    assert await names(api, member, org_id=org["id"]) == [mine["name"]]
    assert await names(api, member) == [mine["name"]]
    assert await names(api, member, owner_team_id=other_team["id"]) == []

    # nothing changed by the refusals
    assert await get(api, admin, theirs["id"]) == theirs
    assert await edges_of(api, theirs["id"]) == set()
    assert (await api.client.get(f"{theirs_url}/versions", headers=admin)).json()["items"] == []
    assert sorted(await names(api, admin, org_id=org["id"])) == sorted(
        [mine["name"], theirs["name"]]
    )
    (entry,) = await audit(api, mine["id"], "service.create")
    assert entry.actor_id is not None and str(entry.actor_id) == mine["created_by"]

    # the member deletes its own service (depending on another team's is no obstacle)
    assert (await api.client.delete(url, headers=member)).status_code == 204
    assert await names(api, admin, org_id=org["id"]) == [theirs["name"]]
    assert (await graph(api, admin, theirs["id"]))["nodes"][0]["id"] == theirs["id"]
    assert len((await graph(api, admin, theirs["id"]))["nodes"]) == 1


async def test_viewers_read_and_scoped_grants_limit_lists(api: Api) -> None:
    admin, org, team = await setup(api)
    other_team = await make_team(api, admin, org["id"])
    other_org = await make_org(api, admin)
    foreign_team = await make_team(api, admin, other_org["id"])
    a = await create(api, admin, team["id"])
    b = await create(api, admin, other_team["id"])
    c = await create(api, admin, foreign_team["id"])

    _, viewer = await api.token("viewer")
    assert (await get(api, viewer, a["id"]))["name"] == a["name"]
    assert (
        await api.client.get(f"/services/{a['id']}/versions", headers=viewer)
    ).status_code == 200
    assert (
        await api.client.get(f"/services/{a['id']}/dependencies", headers=viewer)
    ).status_code == 200
    assert sorted(await names(api, viewer, org_id=org["id"])) == sorted([a["name"], b["name"]])
    for response in (
        await api.client.post(
            "/services", json={"name": unique(), "owner_team_id": team["id"]}, headers=viewer
        ),
        await api.client.put(f"/services/{a['id']}", json={"description": "x"}, headers=viewer),
        await api.client.delete(f"/services/{a['id']}", headers=viewer),
        await api.client.post(
            f"/services/{a['id']}/versions", json={"version": "1.0.0"}, headers=viewer
        ),
        await put_deps(api, viewer, a["id"]),
    ):
        assert assert_error(response, 403)["details"] == {"permission": "services:write"}
    assert await get(api, admin, a["id"]) == a
    assert await actions(api, "service", a["id"]) == ["service.create"]

    # an organization-scoped viewer sees that organization's services only
    _, org_viewer = await scoped_user(api, admin, "viewer", "organization", org["id"])
    assert sorted(await names(api, org_viewer)) == sorted([a["name"], b["name"]])
    assert await names(api, org_viewer, org_id=other_org["id"]) == []
    assert_error(await api.client.get(f"/services/{c['id']}", headers=org_viewer), 403)
    # a team-scoped developer (a role grant, not a membership) likewise
    _, team_dev = await scoped_user(api, admin, "developer", "team", other_team["id"])
    assert await names(api, team_dev) == [b["name"]]
    assert (
        await api.client.put(f"/services/{b['id']}", json={"description": "ok"}, headers=team_dev)
    ).status_code == 200

    # no grant at all, and no token
    _, nobody = await api.token()
    assert assert_error(await api.client.get("/services", headers=nobody), 403)["details"] == {
        "permission": "services:read"
    }
    for method, path in (
        ("GET", "/services"),
        ("POST", "/services"),
        ("GET", f"/services/{a['id']}"),
        ("PUT", f"/services/{a['id']}"),
        ("DELETE", f"/services/{a['id']}"),
        ("GET", f"/services/{a['id']}/versions"),
        ("POST", f"/services/{a['id']}/versions"),
        ("GET", f"/services/{a['id']}/dependencies"),
        ("PUT", f"/services/{a['id']}/dependencies"),
    ):
        body: dict[str, Any] | None = None if method in ("GET", "DELETE") else {}
        assert_error(await api.client.request(method, path, json=body), 401, "unauthorized")


async def test_both_directions_are_the_union_of_each_direction(api: Api) -> None:
    """A service reached both ways (a build edge pointing back) is followed both ways."""
    admin, _, team = await setup(api)
    x, p, q = [await create(api, admin, team["id"], name=unique(n)) for n in "xpq"]
    await put_deps(api, admin, x["id"], {"service_id": p["id"]})
    await put_deps(api, admin, p["id"], {"service_id": q["id"]})
    await put_deps(api, admin, q["id"], {"service_id": p["id"], "type": "build"})

    def depths(g: dict[str, Any]) -> dict[str, int]:
        return {n["id"]: n["depth"] for n in g["nodes"]}

    down = await graph(api, admin, q["id"], depth=2, direction="dependencies")
    up = await graph(api, admin, q["id"], depth=2, direction="dependents")
    assert depths(down) == {q["id"]: 0, p["id"]: 1}
    assert depths(up) == {q["id"]: 0, p["id"]: -1, x["id"]: -2}
    both = await graph(api, admin, q["id"], depth=2)
    assert depths(both) == {q["id"]: 0, p["id"]: 1, x["id"]: -2}
    edges = {(e["source"], e["target"], e["type"]) for e in both["edges"]}
    assert edges == {
        (x["id"], p["id"], "runtime"),
        (p["id"], q["id"], "runtime"),
        (q["id"], p["id"], "build"),
    }


async def test_concurrent_graph_changes_are_serialised(api: Api) -> None:
    """a -> b and b -> a at the same moment: each alone is fine, together a cycle. Without
    serialisation PostgreSQL saved both (each check missed the other's uncommitted edge)."""
    admin, _, team = await setup(api)
    for _ in range(3):
        a, b = [await create(api, admin, team["id"]) for _ in range(2)]
        responses = await asyncio.gather(
            put_deps(api, admin, a["id"], {"service_id": b["id"]}),
            put_deps(api, admin, b["id"], {"service_id": a["id"]}),
        )
        assert sorted(r.status_code for r in responses) == [200, 409]
        refused = next(r for r in responses if r.status_code == 409)
        assert_error(refused, 409, "dependency_cycle")
        assert len(await edges_of(api, a["id"]) | await edges_of(api, b["id"])) == 1

    # a new dependency on a service being deleted: one of the two is refused
    for _ in range(3):
        a, b = [await create(api, admin, team["id"]) for _ in range(2)]
        put, delete = await asyncio.gather(
            put_deps(api, admin, a["id"], {"service_id": b["id"]}),
            api.client.delete(f"/services/{b['id']}", headers=admin),
        )
        assert (put.status_code, delete.status_code) in ((200, 409), (422, 204))
        live = (await api.client.get(f"/services/{b['id']}", headers=admin)).status_code == 200
        assert await edges_of(api, a["id"]) == ({(b["id"], "runtime", None)} if live else set())


async def test_a_team_that_owns_services_cannot_be_deleted(api: Api) -> None:
    _, admin = await api.token("admin")
    org = await make_org(api, admin)
    team = await make_team(api, admin, org["id"])
    other = await make_team(api, admin, org["id"])
    created = await api.client.post(
        "/services",
        json={"name": f"svc-{uuid.uuid4().hex[:8]}", "owner_team_id": team["id"]},
        headers=admin,
    )
    service = created.json()

    refused = await api.client.delete(f"/teams/{team['id']}", headers=admin)
    body = assert_error(refused, 409, "conflict")
    assert service["name"] in body["message"] and body["details"]["services"] == [service["name"]]
    assert (await api.client.get(f"/teams/{team['id']}", headers=admin)).status_code == 200

    moved = await api.client.put(
        f"/services/{service['id']}", json={"owner_team_id": other["id"]}, headers=admin
    )
    assert moved.status_code == 200, moved.text
    assert (await api.client.delete(f"/teams/{team['id']}", headers=admin)).status_code == 204
