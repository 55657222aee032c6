"""Organizations, teams, memberships and custom roles over HTTP on a real database:
CRUD, 401/403/404/409/422 in the error shape, scoped authorization, membership grants taking
effect on the next request, and audit entries for every change."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from core.db.engine import create_engine, session_factory
from core.identity.grants import load_grants
from core.models.audit import AuditLog
from core.models.identity import Organization, Role, Team, TeamMembership
from core.security.authorization import Principal, Resource
from core.security.permissions import BUILTIN_ROLES, PERMISSIONS
from tests.integration.identity_helpers import Api
from tests.integration.identity_helpers import assert_error as error

Headers = dict[str, str]


def slug(prefix: str = "s") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def forbidden(response: httpx.Response, permission: str) -> None:
    body = error(response, 403, "forbidden")
    assert permission in body["message"]
    assert body["details"] == {"permission": permission}


async def actions(api: Api, resource_type: str, resource_id: object) -> list[str]:
    rows = await api.fetch(
        select(AuditLog)
        .where(AuditLog.resource_type == resource_type, AuditLog.resource_id == str(resource_id))
        .order_by(AuditLog.occurred_at, AuditLog.id),
    )
    return [r.action for r in rows]


async def make_org(api: Api, admin: Headers, **extra: Any) -> dict[str, Any]:
    body = {"name": "Org", "slug": slug("org"), **extra}
    response = await api.client.post("/organizations", json=body, headers=admin)
    assert response.status_code == 201, response.text
    return dict(response.json())


async def make_team(api: Api, headers: Headers, org_id: str, **extra: Any) -> dict[str, Any]:
    body = {"org_id": org_id, "name": "Team", "slug": slug("team"), **extra}
    response = await api.client.post("/teams", json=body, headers=headers)
    assert response.status_code == 201, response.text
    return dict(response.json())


async def scoped_user(
    api: Api, admin: Headers, role: str, scope: str, scope_id: str
) -> tuple[uuid.UUID, Headers]:
    """A user whose only grant is `role` at one organization or team; its auth header."""
    user_id, email = await api.user()
    grant = await api.client.post(
        f"/users/{user_id}/roles",
        json={"role": role, "scope": scope, "scope_id": scope_id},
        headers=admin,
    )
    assert grant.status_code == 201, grant.text
    tokens = await api.login(email)
    return user_id, {"Authorization": f"Bearer {tokens['access_token']}"}


async def member_user(
    api: Api, admin: Headers, team_id: str, role: str
) -> tuple[uuid.UUID, Headers]:
    """A user with no role grant, only a membership of one team; its auth header."""
    user_id, email = await api.user()
    added = await api.client.post(
        f"/teams/{team_id}/members", json={"user_id": str(user_id), "role": role}, headers=admin
    )
    assert added.status_code == 201, added.text
    tokens = await api.login(email)
    return user_id, {"Authorization": f"Bearer {tokens['access_token']}"}


async def principal_of(api: Api, user_id: uuid.UUID) -> Principal:
    engine = create_engine(api.settings.effective_database_url)
    try:
        async with session_factory(engine)() as session:
            grants = await load_grants(session, user_id)
    finally:
        await engine.dispose()
    return Principal(user_id=user_id, label="test", grants=grants)


# -- organizations ---------------------------------------------------------------------------
async def test_organizations_crud_and_audit(api: Api) -> None:
    _, admin = await api.token("admin")
    org_slug = slug("acme")
    created = await api.client.post(
        "/organizations",
        json={"name": " Acme ", "slug": org_slug, "settings": {"region": "eu", "tier": 2}},
        headers=admin,
    )
    assert created.status_code == 201, created.text
    org = created.json()
    assert org["name"] == "Acme" and org["slug"] == org_slug
    assert org["settings"] == {"region": "eu", "tier": 2} and org["deleted_at"] is None

    clash = await api.client.post(
        "/organizations", json={"name": "Other", "slug": org_slug}, headers=admin
    )
    body = error(clash, 409, "conflict")
    assert org_slug in body["message"] and body["details"] == {"slug": org_slug}

    got = await api.client.get(f"/organizations/{org['id']}", headers=admin)
    assert got.status_code == 200 and got.json()["slug"] == org_slug
    listed = await api.client.get("/organizations", params={"q": org_slug}, headers=admin)
    assert [o["id"] for o in listed.json()["items"]] == [org["id"]]

    patched = await api.client.patch(
        f"/organizations/{org['id']}",
        json={"name": "Acme Corp", "settings": {"region": "us"}},
        headers=admin,
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["name"] == "Acme Corp" and patched.json()["settings"] == {"region": "us"}
    assert patched.json()["slug"] == org_slug
    other = await make_org(api, admin)
    error(
        await api.client.patch(
            f"/organizations/{org['id']}", json={"slug": other["slug"]}, headers=admin
        ),
        409,
    )
    new_slug = slug("renamed")
    renamed = await api.client.patch(
        f"/organizations/{org['id']}", json={"slug": new_slug}, headers=admin
    )
    assert renamed.json()["slug"] == new_slug

    assert (
        await api.client.delete(f"/organizations/{org['id']}", headers=admin)
    ).status_code == 204
    error(await api.client.get(f"/organizations/{org['id']}", headers=admin), 404, "not_found")
    error(await api.client.patch(f"/organizations/{org['id']}", json={}, headers=admin), 404)
    error(await api.client.delete(f"/organizations/{org['id']}", headers=admin), 404)
    listed = await api.client.get("/organizations", params={"q": new_slug}, headers=admin)
    assert listed.json()["items"] == []
    row = (await api.fetch(select(Organization).where(Organization.slug == new_slug)))[0]
    assert row.deleted_at is not None  # soft
    # a deleted organization's slug stays taken
    error(
        await api.client.post(
            "/organizations", json={"name": "Again", "slug": new_slug}, headers=admin
        ),
        409,
    )
    assert await actions(api, "organization", org["id"]) == [
        "organization.create",
        "organization.update",
        "organization.update",
        "organization.delete",
    ]


@pytest.mark.parametrize(
    "body",
    [
        {"name": "x", "slug": "Upper"},
        {"name": "x", "slug": "-leading"},
        {"name": "x", "slug": "under_score"},
        {"name": "x", "slug": "trailing\n"},
        {"name": "x", "slug": ""},
        {"name": "x", "slug": "a" * 64},
        {"name": "", "slug": "fine-slug"},
        {"name": "   ", "slug": "fine-slug-2"},
        {"slug": "no-name"},
        {"name": "x", "slug": "ok-settings", "settings": ["not", "an", "object"]},
    ],
)
async def test_organization_bad_input_is_422(api: Api, body: dict[str, Any]) -> None:
    _, admin = await api.token("admin")
    error(await api.client.post("/organizations", json=body, headers=admin), 422)
    if body.get("slug"):
        assert await api.fetch(select(Organization).where(Organization.slug == body["slug"])) == []


async def test_longest_slug_is_accepted(api: Api) -> None:
    _, admin = await api.token("admin")
    longest = uuid.uuid4().hex + "-" + "a" * 30  # 63 characters
    assert len(longest) == 63
    created = await api.client.post(
        "/organizations", json={"name": "Long", "slug": longest}, headers=admin
    )
    assert created.status_code == 201, created.text


async def test_organization_with_teams_cannot_be_deleted(api: Api) -> None:
    _, admin = await api.token("admin")
    org = await make_org(api, admin)
    team = await make_team(api, admin, org["id"])
    body = error(await api.client.delete(f"/organizations/{org['id']}", headers=admin), 409)
    assert "1 team" in body["message"] and body["details"] == {"teams": 1}
    assert (await api.client.delete(f"/teams/{team['id']}", headers=admin)).status_code == 204
    assert (
        await api.client.delete(f"/organizations/{org['id']}", headers=admin)
    ).status_code == 204


async def test_organization_authorization(api: Api) -> None:
    _, admin = await api.token("admin")
    _, viewer = await api.token("viewer")
    org = await make_org(api, admin)
    other = await make_org(api, admin)
    url = f"/organizations/{org['id']}"

    for method, path in (
        ("GET", "/organizations"),
        ("POST", "/organizations"),
        ("GET", url),
        ("PATCH", url),
        ("DELETE", url),
    ):
        response = await api.client.request(method, path, json={} if method != "GET" else None)
        error(response, 401, "unauthorized")

    assert (await api.client.get("/organizations", headers=viewer)).status_code == 200
    assert (await api.client.get(url, headers=viewer)).status_code == 200
    forbidden(
        await api.client.post("/organizations", json={"name": "x", "slug": slug()}, headers=viewer),
        "organizations:write",
    )
    forbidden(
        await api.client.patch(url, json={"name": "hijacked"}, headers=viewer),
        "organizations:write",
    )
    forbidden(await api.client.delete(url, headers=viewer), "organizations:write")
    _, nobody = await api.token()  # no grant at all
    forbidden(await api.client.get("/organizations", headers=nobody), "organizations:read")

    # an organization-scoped admin manages that organization only, and cannot create one
    _, org_admin = await scoped_user(api, admin, "admin", "organization", org["id"])
    assert (await api.client.get(url, headers=org_admin)).status_code == 200
    patched = await api.client.patch(url, json={"name": "Mine"}, headers=org_admin)
    assert patched.status_code == 200 and patched.json()["name"] == "Mine"
    forbidden(
        await api.client.get(f"/organizations/{other['id']}", headers=org_admin),
        "organizations:read",
    )
    forbidden(
        await api.client.patch(
            f"/organizations/{other['id']}", json={"name": "x"}, headers=org_admin
        ),
        "organizations:write",
    )
    forbidden(
        await api.client.post(
            "/organizations", json={"name": "x", "slug": slug()}, headers=org_admin
        ),
        "organizations:write",
    )
    # the list shows only what the caller may read
    seen = await api.client.get("/organizations", params={"limit": 200}, headers=org_admin)
    assert [o["id"] for o in seen.json()["items"]] == [org["id"]]
    # nothing changed by the refused requests
    assert (await api.client.get(f"/organizations/{other['id']}", headers=admin)).json()[
        "name"
    ] == "Org"


# -- teams -----------------------------------------------------------------------------------
async def test_teams_crud_list_and_audit(api: Api) -> None:
    _, admin = await api.token("admin")
    org = await make_org(api, admin)
    other_org = await make_org(api, admin)
    team_slug = slug("payments")
    created = await api.client.post(
        "/teams",
        json={
            "org_id": org["id"],
            "name": "Payments",
            "slug": team_slug,
            "description": "Money in, money out",
        },
        headers=admin,
    )
    assert created.status_code == 201, created.text
    team = created.json()
    assert team["org_id"] == org["id"] and team["slug"] == team_slug
    assert team["description"] == "Money in, money out"

    clash = await api.client.post(
        "/teams", json={"org_id": org["id"], "name": "P2", "slug": team_slug}, headers=admin
    )
    assert team_slug in error(clash, 409, "conflict")["message"]
    # the same slug in another organization is fine
    elsewhere = await make_team(api, admin, other_org["id"], slug=team_slug)
    error(
        await api.client.post(
            "/teams", json={"org_id": org["id"], "name": "x", "slug": "Bad Slug"}, headers=admin
        ),
        422,
    )
    unknown = str(uuid.uuid4())
    error(
        await api.client.post(
            "/teams", json={"org_id": unknown, "name": "x", "slug": slug()}, headers=admin
        ),
        404,
        "not_found",
    )

    second = await make_team(api, admin, org["id"], name="Search")
    listed = await api.client.get("/teams", params={"org_id": org["id"], "limit": 1}, headers=admin)
    page = listed.json()
    assert [t["id"] for t in page["items"]] == [team["id"]] and page["next_cursor"]
    follow = await api.client.get(page["next"], headers=admin)
    assert [t["id"] for t in follow.json()["items"]] == [second["id"]]
    assert follow.json()["next"] is None
    found = await api.client.get(
        "/teams", params={"org_id": org["id"], "q": "searc"}, headers=admin
    )
    assert [t["id"] for t in found.json()["items"]] == [second["id"]]
    by_slug = await api.client.get("/teams", params={"q": team_slug}, headers=admin)
    assert {t["id"] for t in by_slug.json()["items"]} == {team["id"], elsewhere["id"]}

    got = await api.client.get(f"/teams/{team['id']}", headers=admin)
    assert got.status_code == 200 and got.json()["name"] == "Payments"
    patched = await api.client.patch(
        f"/teams/{team['id']}", json={"name": "Payments Core", "description": ""}, headers=admin
    )
    assert patched.json()["name"] == "Payments Core" and patched.json()["description"] == ""
    error(
        await api.client.patch(
            f"/teams/{team['id']}", json={"slug": second["slug"]}, headers=admin
        ),
        409,
    )
    assert (await api.client.delete(f"/teams/{team['id']}", headers=admin)).status_code == 204
    error(await api.client.get(f"/teams/{team['id']}", headers=admin), 404, "not_found")
    error(await api.client.get(f"/teams/{uuid.uuid4()}", headers=admin), 404)
    row = (await api.fetch(select(Team).where(Team.id == uuid.UUID(team["id"]))))[0]
    assert row.deleted_at is not None
    assert await actions(api, "team", team["id"]) == [
        "team.create",
        "team.update",
        "team.delete",
    ]

    # a deleted organization takes no new teams
    lonely = await make_org(api, admin)
    assert (
        await api.client.delete(f"/organizations/{lonely['id']}", headers=admin)
    ).status_code == 204
    error(
        await api.client.post(
            "/teams", json={"org_id": lonely["id"], "name": "x", "slug": slug()}, headers=admin
        ),
        404,
    )


async def test_team_authorization(api: Api) -> None:
    _, admin = await api.token("admin")
    _, viewer = await api.token("viewer")
    org_a, org_b = await make_org(api, admin), await make_org(api, admin)
    team_a = await make_team(api, admin, org_a["id"])
    team_b = await make_team(api, admin, org_b["id"])
    url = f"/teams/{team_a['id']}"

    for method, path in (
        ("GET", "/teams"),
        ("POST", "/teams"),
        ("GET", url),
        ("PATCH", url),
        ("DELETE", url),
        ("GET", f"{url}/members"),
        ("POST", f"{url}/members"),
        ("PATCH", f"{url}/members/{uuid.uuid4()}"),
        ("DELETE", f"{url}/members/{uuid.uuid4()}"),
    ):
        response = await api.client.request(method, path, json={} if method != "GET" else None)
        error(response, 401, "unauthorized")

    assert (await api.client.get(url, headers=viewer)).status_code == 200
    assert (await api.client.get(f"{url}/members", headers=viewer)).status_code == 200
    forbidden(
        await api.client.post(
            "/teams", json={"org_id": org_a["id"], "name": "x", "slug": slug()}, headers=viewer
        ),
        "teams:write",
    )
    forbidden(await api.client.patch(url, json={"name": "x"}, headers=viewer), "teams:write")
    forbidden(await api.client.delete(url, headers=viewer), "teams:write")
    user_id, _ = await api.user()
    forbidden(
        await api.client.post(f"{url}/members", json={"user_id": str(user_id)}, headers=viewer),
        "teams:write",
    )

    # an organization-scoped admin covers the teams of that organization only
    _, org_admin = await scoped_user(api, admin, "admin", "organization", org_a["id"])
    mine = await make_team(api, org_admin, org_a["id"])
    forbidden(
        await api.client.post(
            "/teams", json={"org_id": org_b["id"], "name": "x", "slug": slug()}, headers=org_admin
        ),
        "teams:write",
    )
    assert (await api.client.patch(url, json={"name": "A"}, headers=org_admin)).status_code == 200
    forbidden(
        await api.client.patch(f"/teams/{team_b['id']}", json={"name": "x"}, headers=org_admin),
        "teams:write",
    )
    forbidden(await api.client.get(f"/teams/{team_b['id']}", headers=org_admin), "teams:read")
    added = await api.client.post(
        f"{url}/members", json={"user_id": str(user_id)}, headers=org_admin
    )
    assert added.status_code == 201, added.text
    forbidden(
        await api.client.post(
            f"/teams/{team_b['id']}/members", json={"user_id": str(user_id)}, headers=org_admin
        ),
        "teams:write",
    )
    seen = await api.client.get("/teams", params={"limit": 200}, headers=org_admin)
    assert {t["id"] for t in seen.json()["items"]} == {team_a["id"], mine["id"]}
    assert (await api.client.delete(f"/teams/{mine['id']}", headers=org_admin)).status_code == 204
    # the refused requests changed nothing
    assert (await api.client.get(f"/teams/{team_b['id']}", headers=admin)).json()["name"] == "Team"


# -- members ---------------------------------------------------------------------------------
async def test_members_add_list_change_remove(api: Api) -> None:
    admin_id, admin = await api.token("admin")
    org = await make_org(api, admin)
    team = await make_team(api, admin, org["id"])
    url = f"/teams/{team['id']}/members"
    owner_id, owner_email = await api.user()
    dev_id, _ = await api.user()

    added = await api.client.post(
        url, json={"user_id": str(owner_id), "role": "owner"}, headers=admin
    )
    assert added.status_code == 201, added.text
    assert added.json()["email"] == owner_email and added.json()["role"] == "owner"
    default = await api.client.post(url, json={"user_id": str(dev_id)}, headers=admin)
    assert default.json()["role"] == "member"
    dup = await api.client.post(url, json={"user_id": str(dev_id)}, headers=admin)
    assert error(dup, 409, "conflict")["details"] == {"user_id": str(dev_id)}
    error(await api.client.post(url, json={"user_id": str(uuid.uuid4())}, headers=admin), 404)
    error(
        await api.client.post(url, json={"user_id": str(dev_id), "role": "emperor"}, headers=admin),
        422,
    )
    gone_id, _ = await api.user()
    assert (await api.client.delete(f"/users/{gone_id}", headers=admin)).status_code == 204
    error(await api.client.post(url, json={"user_id": str(gone_id)}, headers=admin), 404)
    error(
        await api.client.post(
            f"/teams/{uuid.uuid4()}/members", json={"user_id": str(dev_id)}, headers=admin
        ),
        404,
    )

    listed = await api.client.get(url, headers=admin)
    assert [(m["user_id"], m["role"]) for m in listed.json()["items"]] == [
        (str(owner_id), "owner"),
        (str(dev_id), "member"),
    ]
    first = await api.client.get(url, params={"limit": 1}, headers=admin)
    assert [m["user_id"] for m in first.json()["items"]] == [str(owner_id)]
    rest = await api.client.get(first.json()["next"], headers=admin)
    assert [m["user_id"] for m in rest.json()["items"]] == [str(dev_id)]

    # the last owner can be neither demoted nor removed
    body = error(
        await api.client.patch(f"{url}/{owner_id}", json={"role": "member"}, headers=admin), 409
    )
    assert "last owner" in body["message"]
    assert (
        "last owner"
        in error(await api.client.delete(f"{url}/{owner_id}", headers=admin), 409)["message"]
    )
    promoted = await api.client.patch(f"{url}/{dev_id}", json={"role": "owner"}, headers=admin)
    assert promoted.status_code == 200 and promoted.json()["role"] == "owner"
    demoted = await api.client.patch(
        f"{url}/{owner_id}", json={"role": "maintainer"}, headers=admin
    )
    assert demoted.json()["role"] == "maintainer"
    error(await api.client.patch(f"{url}/{dev_id}", json={"role": "nope"}, headers=admin), 422)
    error(await api.client.patch(f"{url}/{admin_id}", json={"role": "member"}, headers=admin), 404)
    assert (await api.client.delete(f"{url}/{owner_id}", headers=admin)).status_code == 204
    error(await api.client.delete(f"{url}/{owner_id}", headers=admin), 404)
    error(await api.client.delete(f"{url}/{dev_id}", headers=admin), 409)  # last owner now

    rows = await api.fetch(
        select(TeamMembership).where(TeamMembership.team_id == uuid.UUID(team["id"]))
    )
    assert [(r.user_id, r.role, r.created_by) for r in rows] == [(dev_id, "owner", admin_id)]
    audit = await api.fetch(
        select(AuditLog)
        .where(AuditLog.resource_type == "team", AuditLog.resource_id == team["id"])
        .order_by(AuditLog.occurred_at, AuditLog.id),
    )
    assert [a.action for a in audit] == [
        "team.create",
        "team.member.add",
        "team.member.add",
        "team.member.update",
        "team.member.update",
        "team.member.remove",
    ]
    update = audit[3]
    assert update.before["role"] == "member" and update.after["role"] == "owner"
    assert update.actor_id == admin_id and update.request_id
    assert audit[5].before["user_id"] == str(owner_id)


async def test_membership_grants_take_effect_on_the_next_request(api: Api) -> None:
    _, admin = await api.token("admin")
    org = await make_org(api, admin)
    team = await make_team(api, admin, org["id"])
    other = await make_team(api, admin, org["id"])
    here = Resource(organization_id=uuid.UUID(org["id"]), team_id=uuid.UUID(team["id"]))
    there = Resource(organization_id=uuid.UUID(org["id"]), team_id=uuid.UUID(other["id"]))
    user_id, headers = await api.token()  # no role at all
    assert not (await principal_of(api, user_id)).can("services:write", here)
    me = (await api.client.get("/auth/me", headers=headers)).json()
    assert me["roles"] == []

    added = await api.client.post(
        f"/teams/{team['id']}/members", json={"user_id": str(user_id)}, headers=admin
    )
    assert added.status_code == 201
    principal = await principal_of(api, user_id)
    assert principal.can("services:write", here) and principal.can("pipelines:run", here)
    assert not principal.can("services:write", there)
    assert not principal.can("teams:write", here)  # a member is a developer
    me = (await api.client.get("/auth/me", headers=headers)).json()  # the same token
    assert [(g["role"], g["scope"], g["scope_id"], g["source"]) for g in me["roles"]] == [
        ("developer", "team", team["id"], "membership")
    ]
    assert "services:write" in me["scoped_permissions"]
    # and the member can now read its team (teams:read on it)
    assert (await api.client.get(f"/teams/{team['id']}", headers=headers)).status_code == 200
    forbidden(await api.client.get(f"/teams/{other['id']}", headers=headers), "teams:read")

    await api.client.patch(
        f"/teams/{team['id']}/members/{user_id}", json={"role": "maintainer"}, headers=admin
    )
    assert (await principal_of(api, user_id)).can("teams:write", here)
    await api.client.delete(f"/teams/{team['id']}/members/{user_id}", headers=admin)
    assert not (await principal_of(api, user_id)).can("services:write", here)
    assert (await api.client.get("/auth/me", headers=headers)).json()["roles"] == []

    # a deleted team's memberships grant nothing
    await api.client.post(
        f"/teams/{other['id']}/members", json={"user_id": str(user_id)}, headers=admin
    )
    assert (await principal_of(api, user_id)).can("services:write", there)
    await api.client.delete(f"/teams/{other['id']}", headers=admin)
    assert not (await principal_of(api, user_id)).can("services:write", there)


async def test_team_maintainers_and_owners_manage_their_own_team_only(api: Api) -> None:
    _, admin = await api.token("admin")
    org = await make_org(api, admin)
    team_a = await make_team(api, admin, org["id"])
    team_b = await make_team(api, admin, org["id"])
    _, maintainer = await scoped_user(api, admin, "maintainer", "team", team_a["id"])
    _, owner = await member_user(api, admin, team_a["id"], "owner")
    _, member = await member_user(api, admin, team_a["id"], "member")

    for headers in (maintainer, owner):
        newcomer, _ = await api.user()
        added = await api.client.post(
            f"/teams/{team_a['id']}/members", json={"user_id": str(newcomer)}, headers=headers
        )
        assert added.status_code == 201, added.text
        changed = await api.client.patch(
            f"/teams/{team_a['id']}/members/{newcomer}", json={"role": "owner"}, headers=headers
        )
        assert changed.status_code == 200
        removed = await api.client.delete(
            f"/teams/{team_a['id']}/members/{newcomer}", headers=headers
        )
        assert removed.status_code == 204
        forbidden(
            await api.client.post(
                f"/teams/{team_b['id']}/members", json={"user_id": str(newcomer)}, headers=headers
            ),
            "teams:write",
        )
        forbidden(
            await api.client.get(f"/teams/{team_b['id']}/members", headers=headers), "teams:read"
        )
        # team-scoped: no new teams in the organization
        forbidden(
            await api.client.post(
                "/teams", json={"org_id": org["id"], "name": "x", "slug": slug()}, headers=headers
            ),
            "teams:write",
        )
        # the list shows the caller's team only
        seen = await api.client.get("/teams", params={"org_id": org["id"]}, headers=headers)
        assert [t["id"] for t in seen.json()["items"]] == [team_a["id"]]

    # a plain member reads the team but cannot manage it
    listed = await api.client.get(f"/teams/{team_a['id']}/members", headers=member)
    assert listed.status_code == 200 and len(listed.json()["items"]) == 2
    someone, _ = await api.user()
    forbidden(
        await api.client.post(
            f"/teams/{team_a['id']}/members", json={"user_id": str(someone)}, headers=member
        ),
        "teams:write",
    )
    assert (
        len((await api.client.get(f"/teams/{team_a['id']}/members", headers=admin)).json()["items"])
        == 2
    )


# -- roles -----------------------------------------------------------------------------------
async def test_roles_list_builtin_and_custom(api: Api) -> None:
    _, admin = await api.token("admin")
    _, nobody = await api.token()
    error(await api.client.get("/roles"), 401, "unauthorized")
    name = slug("deployer")
    created = await api.client.post(
        "/roles",
        json={
            "name": name,
            "description": "Deploys only",
            "permissions": ["services:read", "environments:deploy", "services:read"],
        },
        headers=admin,
    )
    assert created.status_code == 201, created.text
    role = created.json()
    assert role["builtin"] is False
    assert role["permissions"] == ["services:read", "environments:deploy"]

    listed = await api.client.get("/roles", params={"limit": 200}, headers=nobody)
    assert listed.status_code == 200
    by_name = {r["name"]: r for r in listed.json()["items"]}
    for builtin, (_, permissions) in BUILTIN_ROLES.items():
        assert by_name[builtin]["builtin"] is True
        assert by_name[builtin]["permissions"] == permissions
    assert set(by_name["admin"]["permissions"]) == set(PERMISSIONS)
    assert by_name[name]["id"] == role["id"]
    one = await api.client.get(f"/roles/{role['id']}", headers=nobody)
    assert one.json()["permissions"] == ["services:read", "environments:deploy"]
    error(await api.client.get(f"/roles/{uuid.uuid4()}", headers=nobody), 404)


async def test_custom_roles_lifecycle(api: Api) -> None:
    _, admin = await api.token("admin")
    _, viewer = await api.token("viewer")
    name = slug("release")

    forbidden(
        await api.client.post(
            "/roles", json={"name": name, "permissions": ["services:read"]}, headers=viewer
        ),
        "roles:admin",
    )
    unknown = await api.client.post(
        "/roles",
        json={"name": name, "permissions": ["services:read", "services:fly"]},
        headers=admin,
    )
    body = error(unknown, 422, "validation_error")
    assert "services:fly" in body["message"] and body["details"] == {"unknown": ["services:fly"]}
    for bad in ("Release", "-release", "rel ease", "r" * 61):
        error(
            await api.client.post(
                "/roles", json={"name": bad, "permissions": ["services:read"]}, headers=admin
            ),
            422,
        )
    error(
        await api.client.post("/roles", json={"name": name, "permissions": []}, headers=admin), 422
    )
    assert await api.fetch(select(Role).where(Role.name == name)) == []

    created = await api.client.post(
        "/roles", json={"name": name, "permissions": ["services:read"]}, headers=admin
    )
    assert created.status_code == 201, created.text
    role_id = created.json()["id"]
    for clash in (name, "viewer"):
        body = error(
            await api.client.post(
                "/roles", json={"name": clash, "permissions": ["services:read"]}, headers=admin
            ),
            409,
        )
        assert clash in body["message"]

    patched = await api.client.patch(
        f"/roles/{role_id}",
        json={"description": "Ships releases", "permissions": ["services:read", "pipelines:run"]},
        headers=admin,
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["permissions"] == ["services:read", "pipelines:run"]
    assert patched.json()["description"] == "Ships releases"
    error(
        await api.client.patch(
            f"/roles/{role_id}", json={"permissions": ["nope:nope"]}, headers=admin
        ),
        422,
    )
    error(await api.client.patch(f"/roles/{role_id}", json={"name": "admin"}, headers=admin), 409)
    forbidden(
        await api.client.patch(f"/roles/{role_id}", json={"description": "x"}, headers=viewer),
        "roles:admin",
    )
    forbidden(await api.client.delete(f"/roles/{role_id}", headers=viewer), "roles:admin")

    # built-in roles are read-only
    roles = (await api.client.get("/roles", params={"limit": 200}, headers=admin)).json()["items"]
    builtin_viewer = next(r for r in roles if r["name"] == "viewer")
    body = error(
        await api.client.patch(
            f"/roles/{builtin_viewer['id']}", json={"permissions": ["users:admin"]}, headers=admin
        ),
        409,
    )
    assert "built-in" in body["message"]
    error(await api.client.delete(f"/roles/{builtin_viewer['id']}", headers=admin), 409)

    # the custom role, granted, gives its permissions; while granted it cannot be deleted
    user_id, headers = await api.token()
    grant = await api.client.post(f"/users/{user_id}/roles", json={"role": name}, headers=admin)
    assert grant.status_code == 201, grant.text
    me = (await api.client.get("/auth/me", headers=headers)).json()
    assert set(me["permissions"]) == {"services:read", "pipelines:run"}
    body = error(await api.client.delete(f"/roles/{role_id}", headers=admin), 409)
    assert "1 time" in body["message"] and body["details"] == {"grants": 1}
    # a change to the role applies to its holders at once
    await api.client.patch(
        f"/roles/{role_id}", json={"permissions": ["services:read"]}, headers=admin
    )
    me = (await api.client.get("/auth/me", headers=headers)).json()
    assert me["permissions"] == ["services:read"]

    grant_id = grant.json()["grant_id"]
    await api.client.delete(f"/users/{user_id}/roles/{grant_id}", headers=admin)
    assert (await api.client.delete(f"/roles/{role_id}", headers=admin)).status_code == 204
    error(await api.client.get(f"/roles/{role_id}", headers=admin), 404)
    error(await api.client.delete(f"/roles/{role_id}", headers=admin), 404)
    assert await actions(api, "role", role_id) == [
        "role.create",
        "role.update",
        "role.update",
        "role.delete",
    ]


async def test_a_role_admin_cannot_define_more_than_it_holds(api: Api) -> None:
    _, admin = await api.token("admin")
    curator = slug("curator")
    created = await api.client.post(
        "/roles",
        json={"name": curator, "permissions": ["roles:admin", "services:read"]},
        headers=admin,
    )
    assert created.status_code == 201
    user_id, headers = await api.token()
    grant = await api.client.post(f"/users/{user_id}/roles", json={"role": curator}, headers=admin)
    assert grant.status_code == 201, grant.text

    ok = await api.client.post(
        "/roles", json={"name": slug("reader"), "permissions": ["services:read"]}, headers=headers
    )
    assert ok.status_code == 201, ok.text
    too_much = await api.client.post(
        "/roles",
        json={"name": slug("boss"), "permissions": ["services:read", "users:admin"]},
        headers=headers,
    )
    assert error(too_much, 403, "forbidden")["details"] == {"permissions": ["users:admin"]}
    escalate = await api.client.patch(
        f"/roles/{created.json()['id']}",
        json={"permissions": ["roles:admin", "users:admin"]},
        headers=headers,
    )
    error(escalate, 403)
    unchanged = await api.client.get(f"/roles/{created.json()['id']}", headers=admin)
    assert unchanged.json()["permissions"] == ["roles:admin", "services:read"]
