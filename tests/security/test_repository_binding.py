"""A repository belongs to one organization (issue 15, finding 2).

The attack: organization A registers organization B's repository, then reads its source
through a run, receives its pushes, and posts `success` statuses that satisfy B's branch
protection; a tenant who knows the shared webhook secret forges deliveries for other
organizations' repositories; a captured signed delivery resent with a new delivery id starts
new runs. Now a repository is bound to the organization whose Git host connection proves it
(its token sees the repository through the host's API), webhooks are checked with that
connection's own secret, clones and statuses use its token, statuses carry the
organization's slug, a manual run only runs the repository's own commits, and a delivery is
recognised by its body's hash as well as its id."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, update

from core.models.audit import AuditLog
from core.models.catalog import Service
from core.models.git_hosts import GitHostConnection
from core.models.pipelines import PipelineRun
from core.pipelines.commit_status import CommitStatusReporter, build_host_configs
from core.settings import Settings
from core.temporal import policies
from core.topology import Topology
from tests.helpers import add_git_connection
from tests.integration.identity_helpers import Api, assert_error, running_api
from tests.integration.pipeline_helpers import (
    Stack,
    git,
    github_delivery,
    make_repo,
    pipeline_stack,
    pipelines_worker,
    push_payload,
    stack_settings,
)
from tests.integration.test_org_team_api import make_org, make_team
from tests.standins.git_host_api import GitHostApiStandin

TOKEN = "ghp_connection_token_of_org_a_0123"
ONE_STEP = "stages:\n  - name: s\n    steps:\n      - name: a\n        run: 'true'\n"


@pytest.fixture(autouse=True)
def _topology(topology: Topology) -> None:
    policies.install(topology)  # the workflows' activity options


@pytest.fixture
def git_api() -> Iterator[GitHostApiStandin]:
    with GitHostApiStandin(github_token=TOKEN) as running:
        yield running


class Repo:
    def __init__(self, root: Path) -> None:
        self.owner, self.name = f"org-b-{uuid.uuid4().hex[:8]}", "private"
        self.path = root / "repo"
        self.url = f"https://github.com/{self.owner}/{self.name}"
        self.key = f"github.com/{self.owner}/{self.name}"


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    return Repo(tmp_path)


@pytest.fixture
async def stack(
    settings: Settings,
    topology: Topology,
    database_url: str,
    temporal_env: Any,
    repo: Repo,
    git_api: GitHostApiStandin,
) -> AsyncIterator[Stack]:
    configured = stack_settings(
        settings,
        temporal_env,
        {repo.url: f"file://{repo.path}"},
        github_token=None,
        git_host_apis={"github.com": git_api.github_url},
    )
    async with pipeline_stack(configured, topology, database_url) as running:
        yield running


async def _org_and_team(api: Api, admin: dict[str, str]) -> tuple[dict[str, Any], str]:
    org = await make_org(api, admin)
    return org, (await make_team(api, admin, org["id"]))["id"]


def _service(team_id: str, url: str | None) -> dict[str, Any]:
    return {"name": f"svc-{uuid.uuid4().hex[:8]}", "owner_team_id": team_id, "repository_url": url}


async def test_a_second_organization_cannot_bind_a_repository_another_one_holds(
    api: Api,
) -> None:
    _, admin = await api.token("admin")
    (org_b, team_b), (org_a, team_a) = (
        await _org_and_team(api, admin),
        await _org_and_team(api, admin),
    )
    url = f"https://github.com/victim-{uuid.uuid4().hex[:8]}/private"
    # Without a connection for the host, nothing is bound.
    refused = await api.client.post("/services", json=_service(team_b, url), headers=admin)
    assert_error(refused, 422, "git_connection_required")
    for org in (org_a, org_b):
        await add_git_connection(api.client, admin, org["id"])
    owner = await api.client.post("/services", json=_service(team_b, url), headers=admin)
    assert owner.status_code == 201, owner.text

    # A registers B's repository, in any spelling: 409 in the one error shape, naming no one.
    scp = "git@github.com:" + url.removeprefix("https://github.com/").upper() + ".git"
    for spelling in (url, scp):
        attempt = await api.client.post("/services", json=_service(team_a, spelling), headers=admin)
        err = assert_error(attempt, 409, "repository_bound_elsewhere")
        assert org_b["id"] not in err["message"] and org_b["slug"] not in err["message"]
    # ...nor by moving one of its services onto it, nor through a catalog import.
    mine = await api.client.post("/services", json=_service(team_a, None), headers=admin)
    moved = await api.client.put(
        f"/services/{mine.json()['id']}", json={"repository_url": url}, headers=admin
    )
    assert_error(moved, 409, "repository_bound_elsewhere")
    team_slug = (await api.client.get(f"/teams/{team_a}", headers=admin)).json()["slug"]
    document = (
        "apiVersion: backstage.io/v1alpha1\nkind: Component\nmetadata:\n  name: stolen\n"
        f"  annotations:\n    backstage.io/source-location: url:{url}\n"
        f"spec:\n  type: service\n  lifecycle: production\n  owner: group:{team_slug}\n"
    )
    imported = await api.client.post(
        "/catalog/import", json={"org_id": org_a["id"], "content": document}, headers=admin
    )
    [entity] = imported.json()["entities"]
    assert entity["action"] == "refused" and "another organization" in entity["reasons"][0]
    holders = await api.fetch(
        select(Service.org_id).where(
            Service.repository_path == url.removeprefix("https://").lower(),
            Service.deleted_at.is_(None),
        )
    )
    assert holders == [uuid.UUID(org_b["id"])]

    # Once B lets it go (its last service on it is deleted), A may bind it.
    deleted = await api.client.delete(f"/services/{owner.json()['id']}", headers=admin)
    assert deleted.status_code == 204
    retry = await api.client.post("/services", json=_service(team_a, url), headers=admin)
    assert retry.status_code == 201, retry.text


async def test_binding_needs_a_token_that_sees_the_repository(
    settings: Settings, topology: Topology, database_url: str
) -> None:
    visible = f"acme-{uuid.uuid4().hex[:8]}/app"
    with GitHostApiStandin(github_token=TOKEN, repositories={"github": [visible]}) as host:
        configured = settings.model_copy(update={"git_host_apis": {"github.com": host.github_url}})
        async with running_api(configured, topology, database_url) as api:
            _, admin = await api.token("admin")
            org, team = await _org_and_team(api, admin)
            await add_git_connection(api.client, admin, org["id"], token=TOKEN)
            hidden = "https://github.com/someone-else/secret"
            answer = await api.client.post("/services", json=_service(team, hidden), headers=admin)
            err = assert_error(answer, 422, "repository_not_visible")
            assert "404" in err["message"] and TOKEN not in answer.text
            seen = f"https://github.com/{visible}"
            assert (
                await api.client.post("/services", json=_service(team, seen), headers=admin)
            ).status_code == 201
            probes = [r for r in host.requests if r.method == "GET"]
            assert {r.header("Authorization") for r in probes} == {f"Bearer {TOKEN}"}


async def test_connection_secrets_are_shown_once_and_never_again(api: Api) -> None:
    _, admin = await api.token("admin")
    org, _ = await _org_and_team(api, admin)
    created = await add_git_connection(api.client, admin, org["id"], token=TOKEN)
    secret = created["webhook_secret"]
    assert len(secret) >= 32 and created["has_token"] is True
    base = f"/organizations/{org['id']}/git-connections"
    listed = await api.client.get(base, headers=admin)
    got = await api.client.get(f"{base}/{created['id']}", headers=admin)
    rotated = await api.client.post(f"{base}/{created['id']}/rotate-webhook-secret", headers=admin)
    assert rotated.status_code == 200 and rotated.json()["webhook_secret"] != secret
    for answer in (listed, got):
        assert answer.status_code == 200
        assert secret not in answer.text and TOKEN not in answer.text
        assert 'webhook_secret"' not in answer.text
    [row] = await api.fetch(
        select(GitHostConnection).where(GitHostConnection.id == uuid.UUID(created["id"]))
    )
    assert TOKEN not in (row.token or "") and secret not in row.webhook_secret  # encrypted
    entries = await api.fetch(
        select(AuditLog).where(AuditLog.resource_id == created["id"]).order_by(AuditLog.occurred_at)
    )
    assert [e.action for e in entries] == [
        "git_connection.create",
        "git_connection.rotate_webhook_secret",
    ]
    for entry in entries:
        text = str(entry.before) + str(entry.after)
        assert TOKEN not in text and secret not in text
        assert rotated.json()["webhook_secret"] not in text
    # Another organization's admin-less user cannot read them; another org's id is not found.
    _, viewer = await api.token()
    assert_error(await api.client.get(base, headers=viewer), 403)
    other, _ = await _org_and_team(api, admin)
    elsewhere = f"/organizations/{other['id']}/git-connections/{created['id']}"
    assert_error(await api.client.get(elsewhere, headers=admin), 404)


async def test_webhooks_need_the_connections_secret_and_a_replayed_body_starts_nothing(
    stack: Stack, repo: Repo
) -> None:
    sha = make_repo(repo.path, {".idp/pipeline.yaml": ONE_STEP})
    api, admin = stack.api, stack.admin
    # B holds the repository through its own connection (a secret the server generated).
    service = await stack.service(repo.url, webhook_secret=None)
    org_b = service["org_id"]
    [b_conn] = (
        await api.client.get(f"/organizations/{org_b}/git-connections", headers=admin)
    ).json()["items"]
    rotated = await api.client.post(
        f"/organizations/{org_b}/git-connections/{b_conn['id']}/rotate-webhook-secret",
        headers=admin,
    )
    b_secret = rotated.json()["webhook_secret"]
    pipeline = await stack.pipeline(service["id"], source="repository", triggers={"push": {}})
    # A has a connection of its own (its secret known to A), and a legacy service on the same
    # repository, as the 0013 migration leaves a second organization's service.
    org_a, team_a = await _org_and_team(api, admin)
    a_secret = (await add_git_connection(api.client, admin, org_a["id"]))["webhook_secret"]
    legacy = await api.client.post("/services", json=_service(team_a, None), headers=admin)
    await api.run_sql(
        update(Service)
        .where(Service.id == uuid.UUID(legacy.json()["id"]))
        .values(repository_url=repo.url, repository_host="github", repository_path=repo.key)
    )
    a_pipeline = await stack.pipeline(
        legacy.json()["id"], definition=ONE_STEP, triggers={"push": {}}
    )

    payload = push_payload(repo.owner, repo.name, sha)
    for wrong in (a_secret, "webhook-secret-for-tests"):  # A's secret, the global secret
        body, headers = github_delivery(payload, secret=wrong)
        refused = await api.client.post("/webhooks/github", content=body, headers=headers)
        assert_error(refused, 401, "invalid_signature")

    async def runs(pipeline_id: str) -> int:
        [count] = await api.fetch(
            select(func.count())
            .select_from(PipelineRun)
            .where(PipelineRun.pipeline_id == uuid.UUID(pipeline_id))
        )
        return int(count)

    assert await runs(pipeline["id"]) == 0
    async with pipelines_worker(stack.client, stack.settings):
        body, headers = github_delivery(payload, secret=b_secret)
        answer = await api.client.post("/webhooks/github", content=body, headers=headers)
        assert answer.status_code == 202, answer.text
        [started] = answer.json()["runs"]
        assert started["pipeline_id"] == pipeline["id"]  # B's pipeline only, never A's
        # The captured body, resent under a new delivery id: the same run, nothing new.
        replay_headers = {**headers, "X-GitHub-Delivery": str(uuid.uuid4())}
        replayed = await api.client.post("/webhooks/github", content=body, headers=replay_headers)
        assert replayed.status_code == 202
        [again] = replayed.json()["runs"]
        assert again["id"] == started["id"] and again["duplicate"] is True
        assert (await stack.finished(started["id"]))["status"] == "succeeded"
    assert await runs(pipeline["id"]) == 1 and await runs(a_pipeline["id"]) == 0


async def test_runs_clone_and_report_with_the_connection_and_only_the_repositorys_commits(
    stack: Stack, repo: Repo, git_api: GitHostApiStandin
) -> None:
    reachable = make_repo(repo.path, {".idp/pipeline.yaml": ONE_STEP})
    # A commit only a pull request ref holds (hosts serve those, and forks' commits, by SHA).
    git(repo.path, "checkout", "-q", "-b", "topic")
    (repo.path / "stolen.txt").write_text("not on any branch\n")
    git(repo.path, "add", "-A")
    git(repo.path, "commit", "-q", "-m", "pull request head")
    hidden = git(repo.path, "rev-parse", "HEAD")
    git(repo.path, "update-ref", "refs/pull/1/head", hidden)
    git(repo.path, "checkout", "-q", "main")
    git(repo.path, "branch", "-q", "-D", "topic")

    service = await stack.service(repo.url, token=TOKEN)
    org = await stack.api.client.get(f"/organizations/{service['org_id']}", headers=stack.admin)
    pipeline = await stack.pipeline(service["id"], source="repository")
    # The worker's own (global) configuration has no token: only the connection's can work.
    reporter = CommitStatusReporter(
        build_host_configs({"github.com": {"kind": "github", "api_url": git_api.github_url}})
    )
    async with pipelines_worker(stack.client, stack.settings, reporter=reporter):
        named = await stack.start(pipeline["id"], sha=reachable)  # on main: it runs
        good = await stack.settled(await stack.finished(named))
        bad = await stack.finished(await stack.start(pipeline["id"], sha=hidden))
    assert good["status"] == "succeeded" and good["git_sha"] == reachable
    assert bad["status"] == "failed" and bad["git_sha"] in (None, hidden)
    assert "not reachable from a branch or tag" in (bad["error"] or ""), bad

    statuses = [s for s in git_api.statuses if s.sha == reachable]
    assert [s.state for s in statuses] == ["pending", "success"]
    assert {s.context for s in statuses} == {f"idp/{org.json()['slug']}/{pipeline['name']}"}
    assert "success" not in {s.state for s in git_api.statuses if s.sha == hidden}
    posted = [r for r in git_api.requests if r.method == "POST"]
    assert posted and {r.header("Authorization") for r in posted} == {f"Bearer {TOKEN}"}
