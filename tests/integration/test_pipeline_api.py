"""Pipelines over HTTP on a real database: create from YAML, an object or a template; errors
that name the line and field and save nothing; repository-sourced pipelines; permissions by
owner team; audit; soft delete."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select

from core.models.audit import AuditLog
from core.models.pipelines import Pipeline
from tests.helpers import add_git_connection
from tests.integration.identity_helpers import Api, assert_error
from tests.integration.test_org_team_api import make_org, make_team, member_user

Headers = dict[str, str]

YAML = """\
stages:
  - name: test
    steps:
      - name: unit
        run: pytest -q
        timeout: 10m
  - name: build
    steps:
      - name: wheel
        run: python -m build
        artifacts:
          - name: wheel
            path: dist
"""


async def _service(api: Api, admin: Headers, **extra: Any) -> dict[str, Any]:
    org = await make_org(api, admin)
    team = await make_team(api, admin, org["id"])
    if "repository_url" in extra:  # binding it needs the organization's connection
        await add_git_connection(api.client, admin, org["id"])
    body = {"name": f"svc-{uuid.uuid4().hex[:8]}", "owner_team_id": team["id"], **extra}
    created = await api.client.post("/services", json=body, headers=admin)
    assert created.status_code == 201, created.text
    return dict(created.json())


async def _pipelines_of(api: Api, service_id: str) -> list[Pipeline]:
    return await api.fetch(select(Pipeline).where(Pipeline.service_id == uuid.UUID(service_id)))


async def test_create_read_update_delete_with_audit(api: Api) -> None:
    _, admin = await api.token("admin")
    service = await _service(api, admin)
    created = await api.client.post(
        "/pipelines",
        json={
            "service_id": service["id"],
            "name": "ci",
            "definition": YAML,
            "triggers": {"push": {"branches": ["main", "release/*"]}},
        },
        headers=admin,
    )
    assert created.status_code == 201, created.text
    pipeline = created.json()
    assert pipeline["definition"] == YAML
    assert [s["name"] for s in pipeline["config"]["stages"]] == ["test", "build"]
    assert pipeline["triggers"]["push"]["branches"] == ["main", "release/*"]

    listed = await api.client.get(f"/pipelines?service_id={service['id']}", headers=admin)
    assert [p["id"] for p in listed.json()["items"]] == [pipeline["id"]]

    duplicate = await api.client.post(
        "/pipelines",
        json={"service_id": service["id"], "name": "ci", "definition": YAML},
        headers=admin,
    )
    assert_error(duplicate, 409, "conflict")

    changed = await api.client.put(
        f"/pipelines/{pipeline['id']}",
        json={"concurrency_limit": 2, "cancel_superseded": True},
        headers=admin,
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["concurrency_limit"] == 2
    assert changed.json()["definition"] == YAML  # untouched

    deleted = await api.client.delete(f"/pipelines/{pipeline['id']}", headers=admin)
    assert deleted.status_code == 204
    assert_error(await api.client.get(f"/pipelines/{pipeline['id']}", headers=admin), 404)
    actions = await api.fetch(
        select(AuditLog.action)
        .where(AuditLog.resource_id == pipeline["id"])
        .order_by(AuditLog.occurred_at, AuditLog.id)
    )
    assert actions == ["pipeline.create", "pipeline.update", "pipeline.delete"]


async def test_definition_errors_name_line_and_field_and_save_nothing(api: Api) -> None:
    _, admin = await api.token("admin")
    service = await _service(api, admin)
    broken = YAML.replace("timeout: 10m", "timeout: often")
    response = await api.client.post(
        "/pipelines",
        json={"service_id": service["id"], "name": "ci", "definition": broken},
        headers=admin,
    )
    body = assert_error(response, 422, "validation_error")
    [problem] = [d for d in body["details"] if d["field"] == "stages[0].steps[0].timeout"]
    assert problem["line"] == 6

    not_yaml = await api.client.post(
        "/pipelines",
        json={"service_id": service["id"], "name": "ci", "definition": "stages: [\n  - x"},
        headers=admin,
    )
    assert "line" in assert_error(not_yaml, 422)["message"]

    nothing = await api.client.post(
        "/pipelines", json={"service_id": service["id"], "name": "ci"}, headers=admin
    )
    assert assert_error(nothing, 422)["details"][0]["field"] == "definition"
    assert await _pipelines_of(api, service["id"]) == []


async def test_object_definitions_and_templates(api: Api) -> None:
    _, admin = await api.token("admin")
    service = await _service(api, admin)
    as_object = await api.client.post(
        "/pipelines",
        json={
            "service_id": service["id"],
            "name": "object",
            "definition": {"stages": [{"name": "s", "steps": [{"name": "a", "run": "true"}]}]},
        },
        headers=admin,
    )
    assert as_object.status_code == 201, as_object.text
    assert "run: 'true'" in as_object.json()["definition"]

    templated = await api.client.post(
        "/pipelines",
        json={"service_id": service["id"], "name": "py", "template": {"name": "python"}},
        headers=admin,
    )
    assert templated.status_code == 201, templated.text
    assert templated.json()["config"]["stages"]

    unknown = await api.client.post(
        "/pipelines",
        json={"service_id": service["id"], "name": "x", "template": {"name": "cobol"}},
        headers=admin,
    )
    assert_error(unknown, 404)


async def test_repository_sourced_pipelines_need_a_repository(api: Api) -> None:
    _, admin = await api.token("admin")
    bare = await _service(api, admin)
    refused = await api.client.post(
        "/pipelines",
        json={"service_id": bare["id"], "name": "ci", "source": "repository"},
        headers=admin,
    )
    assert assert_error(refused, 422)["details"][0]["field"] == "source"

    repository_url = f"https://github.com/acme-{uuid.uuid4().hex[:8]}/pay"
    with_repo = await _service(api, admin, repository_url=repository_url)
    created = await api.client.post(
        "/pipelines",
        json={"service_id": with_repo["id"], "name": "ci", "source": "repository"},
        headers=admin,
    )
    assert created.status_code == 201, created.text
    assert created.json()["definition"] is None


async def test_only_the_owner_team_writes(api: Api) -> None:
    _, admin = await api.token("admin")
    service = await _service(api, admin)
    other = await _service(api, admin)
    _, member = await member_user(api, admin, service["owner_team_id"], "member")

    mine = await api.client.post(
        "/pipelines",
        json={"service_id": service["id"], "name": "ci", "definition": YAML},
        headers=member,
    )
    assert mine.status_code == 201, mine.text
    theirs = await api.client.post(
        "/pipelines",
        json={"service_id": other["id"], "name": "ci", "definition": YAML},
        headers=member,
    )
    assert_error(theirs, 403, "forbidden")
    listed = await api.client.get("/pipelines", headers=member)
    assert {p["service_id"] for p in listed.json()["items"]} == {service["id"]}

    _, viewer = await api.token("viewer")
    assert (
        await api.client.get(f"/pipelines/{mine.json()['id']}", headers=viewer)
    ).status_code == 200
    denied = await api.client.put(
        f"/pipelines/{mine.json()['id']}", json={"enabled": False}, headers=viewer
    )
    assert_error(denied, 403)
