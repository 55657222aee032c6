"""Environments over HTTP on a real database: a promotion order development -> staging ->
production with a protection policy; bad input that names the field and saves nothing;
configuration with secrets encrypted at rest, masked in responses and the audit log;
permissions by organization and environment."""

from __future__ import annotations

import json
import uuid
from typing import Any

from sqlalchemy import select

from core.environments.environments import reveal
from core.models.audit import AuditLog
from core.models.environments import Environment, EnvironmentConfig
from core.models.identity import User
from tests.integration.identity_helpers import Api, assert_error
from tests.integration.test_org_team_api import make_org, make_team, member_user, scoped_user

Headers = dict[str, str]
SECRET = "s3cr3t-db-password-0123456789"


async def create(api: Api, headers: Headers, **body: Any) -> Any:
    body.setdefault("name", f"env-{uuid.uuid4().hex[:6]}")
    return await api.client.post("/environments", json=body, headers=headers)


async def environments_of(api: Api, org_id: str) -> list[Environment]:
    return await api.fetch(select(Environment).where(Environment.org_id == uuid.UUID(org_id)))


async def test_a_promotion_order_with_a_protected_production(api: Api) -> None:
    _, admin = await api.token("admin")
    org = await make_org(api, admin)
    dev = await create(api, admin, org_id=org["id"], name="development", type="development")
    assert dev.status_code == 201, dev.text
    staging = await create(
        api,
        admin,
        org_id=org["id"],
        name="staging",
        type="staging",
        previous_id=dev.json()["id"],
        limits={"cpu": "4", "memory": "8Gi", "pods": 20},
    )
    assert staging.status_code == 201, staging.text
    contexts = await api.client.put(  # a platform admin allows the organization its cluster
        f"/organizations/{org['id']}/kubernetes-contexts",
        json={"contexts": ["prod-eu"]},
        headers=admin,
    )
    assert contexts.status_code == 200, contexts.text
    production = await create(
        api,
        admin,
        org_id=org["id"],
        name="production",
        type="production",
        target="kubernetes",
        cluster_id="prod-eu",
        previous_id=staging.json()["id"],
        policy={
            "required_approvals": 2,
            "approver_teams": ["sre"],
            "soak_time": "1h",
            "allowed_branches": ["main", "release/*"],
            "freeze_windows": [
                {"starts_at": "2026-12-24T00:00:00Z", "ends_at": "2026-12-27T00:00:00Z"}
            ],
        },
    )
    assert production.status_code == 201, production.text
    prod = production.json()
    assert prod["position"] == 2 and prod["namespace"] == f"{org['slug']}-production"
    assert prod["policy"]["required_approvals"] == 2
    assert prod["policy"]["soak_time"] == "1h" and prod["policy"]["approval_timeout"] == "1d"
    assert prod["policy"]["allow_self_approval"] is False
    assert staging.json()["limits"] == {"cpu": "4", "memory": "8Gi", "pods": 20}

    listed = await api.client.get("/environments", params={"org_id": org["id"]}, headers=admin)
    assert [e["name"] for e in listed.json()["items"]] == ["development", "staging", "production"]
    got = await api.client.get(f"/environments/{prod['id']}", headers=admin)
    assert got.status_code == 200 and got.json()["previous_id"] == staging.json()["id"]
    [entry] = await api.fetch(
        select(AuditLog).where(
            AuditLog.action == "environment.create", AuditLog.resource_id == prod["id"]
        )
    )
    assert entry.after["name"] == "production"


async def test_bad_environments_name_the_field_and_save_nothing(api: Api) -> None:
    _, admin = await api.token("admin")
    org, other = await make_org(api, admin), await make_org(api, admin)
    elsewhere = await create(api, admin, org_id=other["id"], type="development")
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"type": "qa"}, 422, "body.type"),
        ({"type": "staging", "name": "Not A Slug"}, 422, "name"),
        ({"type": "staging", "limits": {"cpu": "lots"}}, 422, "limits.cpu"),
        ({"type": "staging", "limits": {"gpus": 1}}, 422, "limits.gpus"),
        ({"type": "production", "policy": {"required_approvals": 1}}, 422, "policy"),
        ({"type": "staging", "policy": {"soak_time": "soon"}}, 422, "policy.soak_time"),
        (
            {
                "type": "staging",
                "policy": {
                    "freeze_windows": [
                        {"starts_at": "2026-12-27T00:00:00Z", "ends_at": "2026-12-24T00:00:00Z"}
                    ]
                },
            },
            422,
            "policy.freeze_windows[0]",
        ),
        ({"type": "staging", "previous_id": elsewhere.json()["id"]}, 422, "previous_id"),
    ]
    for body, status, field in cases:
        answer = await create(api, admin, org_id=org["id"], **body)
        error = assert_error(answer, status)
        assert any(d["field"] == field for d in error["details"]), (body, error)
    assert await environments_of(api, org["id"]) == []
    first = await create(api, admin, org_id=org["id"], name="dev", type="development")
    assert first.status_code == 201
    again = await create(api, admin, org_id=org["id"], name="dev", type="development")
    assert_error(again, 409, "conflict")
    assert len(await environments_of(api, org["id"])) == 1


async def test_config_secrets_are_encrypted_at_rest_and_masked_everywhere(api: Api) -> None:
    _, admin = await api.token("admin")
    org = await make_org(api, admin)
    env = (await create(api, admin, org_id=org["id"], type="staging")).json()
    url = f"/environments/{env['id']}/config"
    changed = await api.client.put(
        url,
        json={
            "entries": [
                {"key": "LOG_LEVEL", "value": "debug"},
                {"key": "DB_PASSWORD", "value": SECRET, "is_secret": True},
            ]
        },
        headers=admin,
    )
    assert changed.status_code == 200, changed.text
    shown = {e["key"]: e for e in changed.json()["entries"]}
    assert shown["LOG_LEVEL"]["value"] == "debug"
    assert shown["DB_PASSWORD"] == {**shown["DB_PASSWORD"], "value": "********", "is_secret": True}
    got = await api.client.get(f"/environments/{env['id']}", headers=admin)
    assert SECRET not in got.text

    rows = await api.fetch(
        select(EnvironmentConfig).where(EnvironmentConfig.env_id == uuid.UUID(env["id"]))
    )
    stored = {r.key: r for r in rows}
    assert stored["DB_PASSWORD"].value.startswith("enc:v1:")
    assert SECRET not in stored["DB_PASSWORD"].value
    assert reveal(stored["DB_PASSWORD"]) == SECRET and reveal(stored["LOG_LEVEL"]) == "debug"

    removed = await api.client.put(url, json={"remove": ["LOG_LEVEL"]}, headers=admin)
    assert [e["key"] for e in removed.json()["entries"]] == ["DB_PASSWORD"]
    missing = await api.client.put(url, json={"remove": ["NOPE"]}, headers=admin)
    assert_error(missing, 404, "not_found")
    twice = await api.client.put(
        url,
        json={"entries": [{"key": "A", "value": "1"}, {"key": "A", "value": "2"}]},
        headers=admin,
    )
    assert_error(twice, 422, "validation_error")
    spaced = await api.client.put(
        url, json={"entries": [{"key": "A B", "value": "1"}]}, headers=admin
    )
    assert assert_error(spaced, 422)["details"][0]["field"] == "entries[0].key"

    audits = await api.fetch(
        select(AuditLog).where(
            AuditLog.action == "environment.config.update",
            AuditLog.resource_id == env["id"],
        )
    )
    assert len(audits) == 2
    assert all(SECRET not in json.dumps([a.before, a.after]) for a in audits)
    assert audits[0].after["_changed"] in (["DB_PASSWORD", "LOG_LEVEL"], ["LOG_LEVEL"])


async def test_permissions_by_organization_and_environment(api: Api) -> None:
    _, admin = await api.token("admin")
    org, other = await make_org(api, admin), await make_org(api, admin)
    mine = (await create(api, admin, org_id=org["id"], type="development")).json()
    theirs = (await create(api, admin, org_id=other["id"], type="development")).json()
    _, maintainer = await scoped_user(api, admin, "maintainer", "organization", org["id"])
    made = await create(api, maintainer, org_id=org["id"], type="staging")
    assert made.status_code == 201, made.text
    refused = await create(api, maintainer, org_id=other["id"], type="staging")
    assert_error(refused, 403, "forbidden")
    assert_error(await api.client.get(f"/environments/{theirs['id']}", headers=maintainer), 403)
    listed = await api.client.get("/environments", headers=maintainer)
    names = {e["id"] for e in listed.json()["items"]}
    assert mine["id"] in names and theirs["id"] not in names

    _, viewer = await scoped_user(api, admin, "viewer", "environment", theirs["id"])
    seen = await api.client.get("/environments", headers=viewer)
    assert [e["id"] for e in seen.json()["items"]] == [theirs["id"]]
    change = await api.client.put(
        f"/environments/{theirs['id']}/config",
        json={"entries": [{"key": "A", "value": "1"}]},
        headers=viewer,
    )
    assert_error(change, 403, "forbidden")


async def test_access_grants_on_one_environment_to_a_user_or_a_team(api: Api) -> None:
    _, admin = await api.token("admin")
    org = await make_org(api, admin)
    team = await make_team(api, admin, org["id"])
    staging = (await create(api, admin, org_id=org["id"], type="staging")).json()
    production = (await create(api, admin, org_id=org["id"], type="production")).json()
    user_id, member = await member_user(api, admin, team["id"], "member")
    # a team member sees no environment until the team is granted one
    assert_error(await api.client.get(f"/environments/{production['id']}", headers=member), 403)

    url = f"/environments/{production['id']}/access"
    granted = await api.client.post(
        url,
        json={"team_id": team["id"], "permissions": ["environments:read", "promotions:approve"]},
        headers=admin,
    )
    assert granted.status_code == 201, granted.text
    _, member = await member_user_login(api, user_id)
    assert (await api.client.get(f"/environments/{production['id']}", headers=member)).is_success
    assert_error(await api.client.get(f"/environments/{staging['id']}", headers=member), 403)
    listed = await api.client.get("/environments", params={"org_id": org["id"]}, headers=member)
    assert [e["id"] for e in listed.json()["items"]] == [production["id"]]

    # sharing, not raising: a holder of environments:write there can grant only what it holds
    _, writer = await scoped_user(api, admin, "developer", "environment", production["id"])
    beyond = await api.client.post(
        url, json={"user_id": str(user_id), "permissions": ["environments:write"]}, headers=writer
    )
    assert_error(beyond, 403, "forbidden")
    bad = [
        ({"permissions": ["environments:read"]}, "user_id"),
        ({"user_id": str(user_id), "permissions": ["users:admin"]}, "permissions"),
        ({"team_id": str(uuid.uuid4()), "permissions": ["environments:read"]}, "team_id"),
    ]
    for body, field in bad:
        error = assert_error(await api.client.post(url, json=body, headers=admin), 422)
        assert error["details"][0]["field"] == field

    access = (await api.client.get(url, headers=admin)).json()
    assert [a["team_id"] for a in access] == [team["id"]]
    revoked = await api.client.delete(f"{url}/{access[0]['id']}", headers=admin)
    assert revoked.status_code == 204
    _, member = await member_user_login(api, user_id)
    assert_error(await api.client.get(f"/environments/{production['id']}", headers=member), 403)
    actions = [
        a.action
        for a in await api.fetch(
            select(AuditLog)
            .where(AuditLog.resource_id == production["id"])
            .order_by(AuditLog.occurred_at)
        )
    ]
    assert actions[-2:] == ["environment.access.grant", "environment.access.revoke"]


async def member_user_login(api: Api, user_id: uuid.UUID) -> tuple[uuid.UUID, Headers]:
    """A fresh token for the user (grants are loaded per request; a new login is not needed,
    but keeps the test's steps explicit)."""
    [email] = await api.fetch(select(User.email).where(User.id == user_id))
    tokens = await api.login(email)
    return user_id, {"Authorization": f"Bearer {tokens['access_token']}"}
