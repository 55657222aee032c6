"""Pipeline runs end to end on a real Temporal dev server, a real database and real git: a signed
push webhook runs the repository's commands through the local runner, with logs, artifacts
and commit statuses recorded; duplicate deliveries start one run; forged ones start nothing;
failures skip what follows and re-run from the failed stage; cancel kills the step's
processes; the concurrency limit queues runs; the live log stream. What an operator sees in the
Temporal UI: search attributes, summaries, current details, and which failures fail the
workflow (the platform's) and which complete it (the user's work)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import func, select
from temporalio.client import WorkflowExecutionStatus, WorkflowFailureError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer

from core.db.engine import create_engine, session_factory
from core.models.audit import AuditLog
from core.models.identity import Organization, Team
from core.models.pipelines import Pipeline, PipelineRun
from core.pipelines.commit_status import CommitStatusReporter, build_host_configs
from core.pipelines.dispatch import ensure_queued_runs
from core.pipelines.runners.docker import DockerRunner
from core.pipelines.runs import RunRequest, RunService
from core.settings import Settings
from core.temporal import policies
from core.temporal import search_attributes as sa
from core.topology import Topology
from tests.helpers import free_port, wait_until
from tests.integration.identity_helpers import assert_error, running_api
from tests.integration.pipeline_helpers import (
    Stack,
    activity_summaries,
    current_details,
    git,
    github_delivery,
    make_repo,
    notifications_worker,
    pipeline_stack,
    pipelines_worker,
    push_payload,
    served,
    sse_events,
    stack_settings,
    until_listed,
)
from tests.standins.git_host_api import GitHostApiStandin
from tests.standins.webhook_receiver import WebhookReceiver
from workers.runner import sandbox_runner
from workflows.pipeline_run import PipelineRunWorkflow

FIXTURES = Path(__file__).parent.parent / "fixtures" / "webhooks"
GH_TOKEN = "ghp_pipeline_test_token_0123456789"

PIPELINE = """\
stages:
  - name: test
    steps:
      - name: unit
        run: ./check.sh
  - name: build
    parallel: true
    steps:
      - name: package
        run: |
          mkdir -p dist
          echo "built $IDP_GIT_SHA" > dist/app.txt
          echo packaged
        artifacts:
          - name: app
            path: dist/app.txt
      - name: docs
        run: echo docs-built
  - name: release
    when:
      branches: [release/*]
    steps:
      - name: publish
        run: echo publishing
"""


def one_step(run: str, step: str = "a") -> str:
    """A pipeline of one stage `s` with one step running `run` (YAML single-quoted)."""
    return f"stages:\n  - name: s\n    steps:\n      - name: {step}\n        run: '{run}'\n"


ONE_STEP = one_step("true")
CHECK = "#!/bin/sh\necho checking $GREETING\necho warn >&2\n"


@pytest.fixture(autouse=True)
def _topology(topology: Topology) -> Iterator[None]:
    policies.install(topology)
    yield


@pytest.fixture
def git_api() -> Iterator[GitHostApiStandin]:
    with GitHostApiStandin(github_token=GH_TOKEN) as running:
        yield running


class Repo:
    def __init__(self, root: Path) -> None:
        self.owner = f"acme-{uuid.uuid4().hex[:8]}"
        self.name = "app"
        self.path = root / "repo"
        self.url = f"https://github.com/{self.owner}/{self.name}"

    def init(self, pipeline: str = PIPELINE, check: str = CHECK) -> str:
        make_repo(self.path, {".idp/pipeline.yaml": pipeline, "check.sh": check})
        git(self.path, "update-index", "--chmod=+x", "check.sh")
        git(self.path, "commit", "-q", "--amend", "--no-edit")
        return git(self.path, "rev-parse", "HEAD")


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    return Repo(tmp_path)


@pytest.fixture
async def stack(
    settings: Settings,
    topology: Topology,
    database_url: str,
    temporal_env: WorkflowEnvironment,
    repo: Repo,
) -> AsyncIterator[Stack]:
    configured = stack_settings(
        settings, temporal_env, {repo.url: f"file://{repo.path}"}, github_token=None
    )
    async with pipeline_stack(configured, topology, database_url) as running:
        yield running


def reporter(git_api: GitHostApiStandin) -> CommitStatusReporter:
    return CommitStatusReporter(
        build_host_configs(
            {"github.com": {"kind": "github", "api_url": git_api.github_url, "token": GH_TOKEN}}
        )
    )


async def deliver(stack: Stack, body: bytes, headers: dict[str, str]) -> Any:
    return await stack.api.client.post("/webhooks/github", content=body, headers=headers)


async def run_count(stack: Stack, pipeline_id: str) -> int:
    [count] = await stack.api.fetch(
        select(func.count())
        .select_from(PipelineRun)
        .where(PipelineRun.pipeline_id == uuid.UUID(pipeline_id))
    )
    return int(count)


async def test_signed_push_runs_the_repositorys_commands_with_logs_artifacts_and_statuses(
    stack: Stack, repo: Repo, git_api: GitHostApiStandin
) -> None:
    sha = repo.init()
    service = await stack.service(repo.url)
    pipeline = await stack.pipeline(
        service["id"],
        source="repository",
        triggers={"push": {"branches": ["main"]}},
    )
    async with pipelines_worker(stack.client, stack.settings, reporter=reporter(git_api)):
        body, headers = github_delivery(push_payload(repo.owner, repo.name, sha))
        answer = await deliver(stack, body, headers)
        assert answer.status_code == 202, answer.text
        [started] = answer.json()["runs"]
        assert started["pipeline_id"] == pipeline["id"] and started["duplicate"] is False
        run = await stack.settled(await stack.finished(started["id"]))

    assert run["status"] == "succeeded", run
    assert run["git_sha"] == sha and run["trigger_type"] == "push"
    assert run["triggered_by"] == "octocat" and run["branch"] == "main"
    stages = {s["name"]: s for s in run["stages"]}
    assert [s["name"] for s in run["stages"]] == ["test", "build", "release"]
    assert stages["test"]["status"] == "succeeded"
    assert stages["build"]["status"] == "succeeded"
    assert stages["release"]["status"] == "skipped"  # `when: release/*` on main
    assert {st["name"]: st["status"] for st in stages["build"]["steps"]} == {
        "package": "succeeded",
        "docs": "succeeded",
    }
    assert all(st["duration_seconds"] is not None for st in stages["test"]["steps"])

    logs = await stack.logs(run["id"])
    assert "test/unit | checking" in logs and "test/unit | warn" in logs
    assert "build/package | packaged" in logs and "build/docs | docs-built" in logs
    assert "publishing" not in logs

    artifacts = await stack.api.client.get(
        f"/pipelines/runs/{run['id']}/artifacts", headers=stack.admin
    )
    [artifact] = artifacts.json()
    assert artifact["name"] == "app" and artifact["size"] == len(f"built {sha}\n")
    download = await stack.api.client.get(artifact["download_url"], headers=stack.admin)
    assert download.status_code == 200 and download.text == f"built {sha}\n"
    assert hashlib.sha256(download.content).hexdigest() == artifact["sha256"]

    reported = [s for s in git_api.statuses if s.sha == sha]
    assert [s.state for s in reported] == ["pending", "success"]
    assert {s.repository for s in reported} == {f"{repo.owner}/{repo.name}"}
    assert reported[-1].target_url == f"http://idp.test/pipelines/runs/{run['id']}"
    org = await stack.api.client.get(f"/organizations/{service['org_id']}", headers=stack.admin)
    assert reported[0].context == f"idp/{org.json()['slug']}/{pipeline['name']}"
    recorded = run["commit_statuses"]
    assert [(c["state"], c["reported"]) for c in recorded] == [
        ("pending", True),
        ("success", True),
    ]
    assert not (stack.settings.workspace_root / run["id"]).exists()  # workspace removed


async def test_ten_concurrent_deliveries_start_one_run_and_forgeries_start_none(
    stack: Stack, repo: Repo
) -> None:
    sha = repo.init(
        pipeline="stages:\n  - name: s\n    steps:\n      - name: a\n        run: 'true'\n"
    )
    service = await stack.service(repo.url)
    pipeline = await stack.pipeline(service["id"], source="repository", triggers={"push": {}})
    body, headers = github_delivery(push_payload(repo.owner, repo.name, sha))
    async with pipelines_worker(stack.client, stack.settings):
        answers = await asyncio.gather(*(deliver(stack, body, headers) for _ in range(10)))
        assert {a.status_code for a in answers} == {202}
        ids = {a.json()["runs"][0]["id"] for a in answers}
        assert len(ids) == 1
        assert sum(1 for a in answers if not a.json()["runs"][0]["duplicate"]) == 1
        run = await stack.finished(ids.pop())
        assert run["status"] == "succeeded"
        # A redelivery after the run finished starts nothing new.
        again = await deliver(stack, body, headers)
        assert again.status_code == 202 and again.json()["runs"][0]["duplicate"] is True
    assert await run_count(stack, pipeline["id"]) == 1

    forged_body, forged = github_delivery(
        push_payload(repo.owner, repo.name, sha), secret="not-the-secret"
    )
    refused = await deliver(stack, forged_body, forged)
    assert_error(refused, 401, "invalid_signature")
    tampered = await deliver(stack, body.replace(b"octocat", b"mallory"), headers)
    assert_error(tampered, 401, "invalid_signature")
    unsigned = {k: v for k, v in headers.items() if k != "X-Hub-Signature-256"}
    assert_error(await deliver(stack, body, unsigned), 401, "invalid_signature")
    assert await run_count(stack, pipeline["id"]) == 1

    ping_body, ping = github_delivery({"zen": "hi", "hook_id": 1})
    ping["X-GitHub-Event"] = "ping"
    pong = await deliver(stack, ping_body, ping)
    assert pong.status_code == 200 and pong.json()["status"] == "pong"
    star_body, star = github_delivery({"action": "created"})
    star["X-GitHub-Event"] = "star"
    ignored = await deliver(stack, star_body, star)
    assert ignored.status_code == 200 and ignored.json()["status"] == "ignored"
    other_body, other = github_delivery(push_payload(repo.owner, "elsewhere", sha))
    unmatched = await deliver(stack, other_body, other)
    assert unmatched.status_code == 200 and unmatched.json()["status"] == "no_match"
    assert await run_count(stack, pipeline["id"]) == 1


FAILING = """\
stages:
  - name: test
    steps:
      - name: lint
        run: echo lint-ok
      - name: flaky
        run: "test -f fixed || (echo broken >&2; exit 3)"
        continue_on_error: false
      - name: never
        run: echo never-runs
  - name: build
    steps:
      - name: pack
        run: echo packed
"""


async def test_failed_step_skips_the_rest_and_a_rerun_starts_from_the_failed_stage(
    stack: Stack, repo: Repo
) -> None:
    repo.init(pipeline=FAILING)
    service = await stack.service(repo.url)
    pipeline = await stack.pipeline(service["id"], source="repository")
    async with pipelines_worker(stack.client, stack.settings):
        started = await stack.api.client.post(
            f"/pipelines/{pipeline['id']}/run", json={"ref": "main"}, headers=stack.admin
        )
        assert started.status_code == 202, started.text
        # settled: the live view says `failed` a moment before the record has the error
        run = await stack.settled(await stack.finished(started.json()["id"]))
        assert run["status"] == "failed"
        assert "exited with code 3" in run["error"] and "flaky" in run["error"]
        steps = {st["name"]: st for s in run["stages"] for st in s["steps"]}
        assert steps["lint"]["status"] == "succeeded"
        assert steps["flaky"]["status"] == "failed" and steps["flaky"]["exit_code"] == 3
        assert steps["never"]["status"] == "skipped"
        assert steps["pack"]["status"] == "skipped"
        assert "test/flaky | broken" in await stack.logs(run["id"])

        bad = await stack.api.client.post(
            f"/pipelines/runs/{run['id']}/rerun", json={"from_stage": "nope"}, headers=stack.admin
        )
        assert_error(bad, 400, "bad_request")
        rerun = await stack.api.client.post(
            f"/pipelines/runs/{run['id']}/rerun", json={}, headers=stack.admin
        )
        assert rerun.status_code == 202, rerun.text
        again = await stack.settled(await stack.finished(rerun.json()["id"]))
    assert again["trigger_type"] == "rerun" and again["rerun_of_id"] == run["id"]
    assert again["git_sha"] == run["git_sha"] and again["number"] == run["number"] + 1
    assert again["status"] == "failed"  # the same commit fails the same way
    assert [s["status"] for s in again["stages"]] == ["failed", "skipped"]

    # Both histories replay on the current code (a change that breaks them needs patching).
    replayer = Replayer(
        workflows=[PipelineRunWorkflow],
        workflow_runner=sandbox_runner(),
        data_converter=stack.client.data_converter,
    )
    for done in (run, again):
        history = await stack.client.get_workflow_handle(done["workflow_id"]).fetch_history()
        await replayer.replay_workflow(history)


def processes_running(marker: str) -> list[int]:
    """The worker's host's live processes whose command line holds `marker` (a step's, in
    whatever pid namespace the runner gave it)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if marker.encode() in (proc / "cmdline").read_bytes():
                stat = (proc / "stat").read_text()
                if stat[stat.rfind(")") + 2] not in "ZX":
                    found.append(int(proc.name))
        except (OSError, ValueError):
            continue
    return found


GATED = "while [ ! -f gate ]; do sleep 0.05; done"  # in the run's workspace: see open_gate


async def open_gate(stack: Stack, run_id: str) -> None:
    """Let a GATED step of `run_id` end: the file appears in its workspace (once checked out),
    the one place of the worker a sandboxed step sees."""
    workspace = stack.settings.workspace_root / run_id
    await wait_until("the checkout", lambda: asyncio.sleep(0, (workspace / ".git").exists()))
    (workspace / "gate").write_text("open")


async def test_cancel_kills_the_steps_processes_and_records_cancelled(
    stack: Stack, repo: Repo
) -> None:
    marker = f"300.{uuid.uuid4().int % 10**6:06d}"  # `sleep 300.NNNNNN`, found by its argv
    slow = one_step(f"echo started; sleep {marker} & wait", "long")
    repo.init(pipeline=slow)
    service = await stack.service(repo.url)
    pipeline = await stack.pipeline(service["id"], source="repository")
    async with pipelines_worker(stack.client, stack.settings):
        started = await stack.api.client.post(
            f"/pipelines/{pipeline['id']}/run", json={}, headers=stack.admin
        )
        run_id = started.json()["id"]
        await wait_until(
            "the step's sleep", lambda: asyncio.sleep(0, bool(processes_running(marker)))
        )
        live = await stack.run(run_id)
        assert live["live"] is True and live["status"] == "running"
        assert live["phase"] == "running s"
        cancelled = await stack.api.client.post(
            f"/pipelines/{pipeline['id']}/cancel", headers=stack.admin
        )
        assert cancelled.json()["cancelled"] == [run_id]
        run = await stack.finished(run_id)
    assert run["status"] == "cancelled"
    assert run["stages"][0]["steps"][0]["status"] == "cancelled"
    assert processes_running(marker) == []
    again = await stack.api.client.post(f"/pipelines/runs/{run_id}/cancel", headers=stack.admin)
    assert_error(again, 409, "conflict")


async def test_concurrency_limit_queues_the_second_run_until_the_first_ends(
    stack: Stack, repo: Repo
) -> None:
    waiting = one_step(GATED, "wait")
    repo.init(pipeline=waiting)
    service = await stack.service(repo.url)
    pipeline = await stack.pipeline(service["id"], source="repository", concurrency_limit=1)
    async with pipelines_worker(stack.client, stack.settings):
        first = await stack.start(pipeline["id"])
        await stack.until_status(first, "running")
        second = await stack.start(pipeline["id"])
        await asyncio.sleep(1.0)
        queued = await stack.run(second)
        assert queued["status"] == "queued" and queued["live"] is True
        assert "1 of at most 1" in queued["waiting_reason"]
        await open_gate(stack, first)
        done = [await stack.settled(await stack.finished(first))]  # its record: completed_at
        await open_gate(stack, second)
        done.append(await stack.finished(second, timeout=20))
    assert [r["status"] for r in done] == ["succeeded", "succeeded"]
    assert done[1]["started_at"] >= done[0]["completed_at"]
    listed = await stack.api.client.get(
        "/pipelines/runs",
        params={"pipeline_id": pipeline["id"], "limit": 1},
        headers=stack.admin,
    )
    page = listed.json()
    assert [r["id"] for r in page["items"]] == [second] and page["next_cursor"]


async def test_live_log_stream_follows_a_running_step_until_the_run_ends(
    stack: Stack, repo: Repo
) -> None:
    ticking = one_step("for i in 1 2 3 4 5; do echo tick-$i; sleep 0.4; done", "tick")
    repo.init(pipeline=ticking)
    service = await stack.service(repo.url)
    pipeline = await stack.pipeline(service["id"], source="repository")
    async with pipelines_worker(stack.client, stack.settings):
        run_id = await stack.start(pipeline["id"])
        seen: list[tuple[float, str]] = []
        events: list[str] = []
        loop = asyncio.get_running_loop()
        async with (
            served(stack.api) as base_url,
            httpx.AsyncClient(base_url=base_url, headers=stack.admin, timeout=60) as http,
            http.stream("GET", f"/pipelines/runs/{run_id}/logs?follow=true") as response,
        ):
            assert response.headers["content-type"].startswith("text/event-stream")
            async for event, data in sse_events(response):
                events.append(event)
                if event == "log":
                    seen.extend((loop.time(), entry["text"]) for entry in data)
                elif event == "end":
                    break
    texts = [t for _, t in seen]
    assert texts == [f"tick-{i}" for i in range(1, 6)]
    # lines arrived while the step ran (spread over its ~2 s), not all at the end
    assert seen[-1][0] - seen[0][0] > 1.0
    assert events[-1] == "end" and "status" in events


async def test_cron_trigger_keeps_a_schedule_whose_firing_records_and_runs_a_cron_run(
    stack: Stack, repo: Repo
) -> None:
    repo.init(
        pipeline="stages:\n  - name: s\n    steps:\n      - name: a\n        run: echo nightly\n"
    )
    service = await stack.service(repo.url)
    pipeline = await stack.pipeline(
        service["id"], source="repository", triggers={"cron": ["0 3 * * *"]}
    )
    handle = stack.client.get_schedule_handle(f"pipeline-cron-{pipeline['id']}")
    try:
        described = await handle.describe()
        assert described.schedule.state.paused is False
        assert {(t.hour, t.minute) for t in described.info.next_action_times} == {(3, 0)}

        disabled = await stack.api.client.put(
            f"/pipelines/{pipeline['id']}", json={"enabled": False}, headers=stack.admin
        )
        assert disabled.status_code == 200, disabled.text
        assert (await handle.describe()).schedule.state.paused is True
        enabled = await stack.api.client.put(
            f"/pipelines/{pipeline['id']}",
            json={"enabled": True, "triggers": {"cron": ["*/30 * * * *"]}},
            headers=stack.admin,
        )
        assert enabled.status_code == 200, enabled.text
        changed = (await handle.describe()).info.next_action_times
        assert changed and {t.minute for t in changed} <= {0, 30}

        async with pipelines_worker(stack.client, stack.settings):
            await handle.trigger()  # as if the time had come
            for _ in range(200):
                listed = await stack.api.client.get(
                    "/pipelines/runs", params={"pipeline_id": pipeline["id"]}, headers=stack.admin
                )
                if listed.json()["items"]:
                    break
                await asyncio.sleep(0.05)
            [run] = listed.json()["items"]
            assert run["trigger_type"] == "cron"
            assert run["workflow_id"].startswith(f"pipeline-cron-{pipeline['id']}-run")
            done = await stack.settled(await stack.finished(run["id"]))
        assert done["status"] == "succeeded"
        assert "s/a | nightly" in await stack.logs(run["id"])
        # The firing started with the pipeline's name; the run, once recorded, added the rest.
        org, team = await labels_of(stack, service)
        firing = await stack.client.get_workflow_handle(run["workflow_id"]).describe()
        attributes = firing.typed_search_attributes
        assert attributes.get(sa.PIPELINE) == pipeline["name"]
        assert attributes.get(sa.STATUS) == "succeeded"
        assert attributes.get(sa.SERVICE) == service["name"]
        assert attributes.get(sa.ORGANIZATION) == org and attributes.get(sa.TEAM) == team
        assert attributes.get(sa.COMMIT) == done["git_sha"]
        assert await firing.static_summary() == f"pipeline {pipeline['name']}: a cron firing"
    finally:
        deleted = await stack.api.client.delete(f"/pipelines/{pipeline['id']}", headers=stack.admin)
        assert deleted.status_code == 204
    with pytest.raises(RPCError):
        await handle.describe()  # the schedule went with the pipeline


async def test_start_and_success_are_notified_to_the_owner_teams_channel(
    stack: Stack, repo: Repo
) -> None:
    repo.init(pipeline=ONE_STEP)
    service = await stack.service(repo.url)
    with WebhookReceiver(secret="hook-signing-secret") as receiver:
        channel = await stack.api.client.post(
            "/notifications/channels",
            json={
                "type": "webhook",
                "name": f"ci-{uuid.uuid4().hex[:6]}",
                "team_id": service["owner_team_id"],
                "config": {"url": receiver.url},
                "secrets": {"signing_secret": "hook-signing-secret"},
            },
            headers=stack.admin,
        )
        assert channel.status_code == 201, channel.text
        pipeline = await stack.pipeline(service["id"], source="repository")
        async with (
            pipelines_worker(stack.client, stack.settings),
            notifications_worker(stack.client, stack.settings),
        ):
            run = await stack.api.client.post(
                f"/pipelines/{pipeline['id']}/run", json={}, headers=stack.admin
            )
            run_id = run.json()["id"]
            await stack.settled(await stack.finished(run_id))
            await wait_until(
                "two notifications", lambda: asyncio.sleep(0, len(receiver.accepted) >= 2)
            )
    events = sorted(d.json()["event"] for d in receiver.accepted)
    assert events == ["pipeline.started", "pipeline.succeeded"]
    assert all(d.json()["data"]["run_id"] == run_id for d in receiver.accepted)
    assert all(d.signature_valid for d in receiver.accepted)


async def test_a_new_push_cancels_the_superseded_run_of_its_branch(
    stack: Stack, repo: Repo
) -> None:
    waiting = one_step(GATED, "wait")
    sha = repo.init(pipeline=waiting)
    service = await stack.service(repo.url)
    await stack.pipeline(
        service["id"], source="repository", triggers={"push": {}}, cancel_superseded=True
    )
    async with pipelines_worker(stack.client, stack.settings):
        first_body, first_headers = github_delivery(push_payload(repo.owner, repo.name, sha))
        first = (await deliver(stack, first_body, first_headers)).json()["runs"][0]["id"]
        await stack.until_status(first, "running")
        pushed_again = push_payload(repo.owner, repo.name, sha)
        pushed_again["head_commit"]["message"] = "pushed again"  # another push: another body
        body, headers = github_delivery(pushed_again)
        second = (await deliver(stack, body, headers)).json()["runs"][0]["id"]
        superseded = await stack.finished(first)
        assert superseded["status"] == "cancelled"
        await open_gate(stack, second)
        latest = await stack.finished(second)
    assert latest["status"] == "succeeded"


GITLAB_CONNECTION_TOKEN = "gitlab-connection-token"


async def test_a_gitlab_push_with_its_token_starts_a_run(
    settings: Settings,
    topology: Topology,
    database_url: str,
    temporal_env: WorkflowEnvironment,
    repo: Repo,
) -> None:
    gitlab_url = f"https://gitlab.com/{repo.owner}/{repo.name}"
    configured = stack_settings(
        settings,
        temporal_env,
        {gitlab_url: f"file://{repo.path}"},
        gitlab_webhook_token=SecretStr("gitlab-token"),
    )
    sha = repo.init(pipeline=ONE_STEP)
    payload = json.loads((FIXTURES / "gitlab_push.json").read_text())
    payload |= {"ref": "refs/heads/main", "after": sha, "checkout_sha": sha}
    payload["project"] |= {"web_url": gitlab_url}
    body = json.dumps(payload).encode()
    headers = {"X-Gitlab-Event": "Push Hook", "X-Gitlab-Event-UUID": str(uuid.uuid4())}
    async with pipeline_stack(configured, topology, database_url) as stack:
        service = await stack.service(gitlab_url, webhook_secret=GITLAB_CONNECTION_TOKEN)
        await stack.pipeline(service["id"], source="repository", triggers={"push": {}})
        for token in ("nope", "gitlab-token"):  # the global token is not the connection's
            wrong = await stack.api.client.post(
                "/webhooks/gitlab", content=body, headers={**headers, "X-Gitlab-Token": token}
            )
            assert_error(wrong, 401, "invalid_signature")
        async with pipelines_worker(stack.client, stack.settings):
            answer = await stack.api.client.post(
                "/webhooks/gitlab",
                content=body,
                headers={**headers, "X-Gitlab-Token": GITLAB_CONNECTION_TOKEN},
            )
            assert answer.status_code == 202, answer.text
            run = await stack.finished(answer.json()["runs"][0]["id"])
    assert run["status"] == "succeeded" and run["git_sha"] == sha
    assert run["triggered_by"] == "linus.t"


async def test_a_delivery_while_temporal_is_down_is_kept_and_its_redelivery_starts_it(
    settings: Settings,
    topology: Topology,
    database_url: str,
    temporal_env: WorkflowEnvironment,
    repo: Repo,
) -> None:
    sha = repo.init(pipeline=ONE_STEP)
    up = stack_settings(settings, temporal_env, {repo.url: f"file://{repo.path}"})
    down = up.model_copy(update={"temporal_address": f"127.0.0.1:{free_port()}"})
    body, headers = github_delivery(push_payload(repo.owner, repo.name, sha))
    async with pipeline_stack(up, topology, database_url) as stack:
        service = await stack.service(repo.url)
        pipeline = await stack.pipeline(service["id"], source="repository", triggers={"push": {}})
    async with running_api(down, topology, database_url) as api_down:
        refused = await api_down.client.post("/webhooks/github", content=body, headers=headers)
        assert_error(refused, 503, "unavailable")
    async with pipeline_stack(up, topology, database_url) as stack:
        [kept] = (
            await stack.api.client.get(
                "/pipelines/runs", params={"pipeline_id": pipeline["id"]}, headers=stack.admin
            )
        ).json()["items"]
        assert kept["status"] == "queued"
        async with pipelines_worker(stack.client, stack.settings):
            again = await deliver(stack, body, headers)
            assert again.status_code == 202 and again.json()["runs"][0]["id"] == kept["id"]
            run = await stack.finished(kept["id"])
    assert run["status"] == "succeeded"
    assert await run_count(stack, pipeline["id"]) == 1


async def test_a_cron_change_while_temporal_is_down_is_reverted_and_answered_503(
    settings: Settings,
    topology: Topology,
    database_url: str,
    temporal_env: WorkflowEnvironment,
    repo: Repo,
) -> None:
    repo.init(pipeline=ONE_STEP)
    up = stack_settings(settings, temporal_env, {repo.url: f"file://{repo.path}"})
    down = up.model_copy(update={"temporal_address": f"127.0.0.1:{free_port()}"})
    async with pipeline_stack(up, topology, database_url) as stack:
        service = await stack.service(repo.url)
        pipeline = await stack.pipeline(service["id"], source="repository", triggers={"push": {}})
        admin = stack.admin
    cron = {"cron": ["0 3 * * *"]}
    async with running_api(down, topology, database_url) as api_down:
        created = await api_down.client.post(
            "/pipelines",
            json={
                "name": "nightly",
                "service_id": service["id"],
                "source": "repository",
                "triggers": cron,
            },
            headers=admin,
        )
        assert "Temporal" in assert_error(created, 503, "unavailable")["message"]
        changed = await api_down.client.put(
            f"/pipelines/{pipeline['id']}", json={"triggers": cron}, headers=admin
        )
        assert_error(changed, 503, "unavailable")
        # Nothing changed: the new pipeline went again, the old one kept its triggers.
        live = await api_down.fetch(
            select(Pipeline.name).where(
                Pipeline.service_id == uuid.UUID(service["id"]), Pipeline.deleted_at.is_(None)
            )
        )
        assert live == [pipeline["name"]]
        got = await api_down.client.get(f"/pipelines/{pipeline['id']}", headers=admin)
        assert got.json()["triggers"] == pipeline["triggers"]
        # Both were saved before Temporal was asked, then reverted, as the audit log says.
        reverts = [
            entry
            for entry in await api_down.fetch(
                select(AuditLog).where(AuditLog.action == "pipeline.revert")
            )
            if entry.before["service_id"] == service["id"]
        ]
        assert sorted(e.before["name"] for e in reverts) == sorted(["nightly", pipeline["name"]])
        assert all("Temporal" in e.after["reason"] for e in reverts)


async def test_a_run_cancelled_before_admission_is_recorded_cancelled(
    stack: Stack, repo: Repo
) -> None:
    repo.init(pipeline=ONE_STEP)
    service = await stack.service(repo.url)
    pipeline = await stack.pipeline(service["id"], source="repository")
    run_id = await stack.start(pipeline["id"])  # no worker yet: its admission waits
    cancelled = await stack.api.client.post(f"/pipelines/runs/{run_id}/cancel", headers=stack.admin)
    assert cancelled.status_code == 200 and cancelled.json()["cancelled"] == [run_id]
    async with pipelines_worker(stack.client, stack.settings):
        run = await stack.finished(run_id)
    assert run["status"] == "cancelled" and run["started_at"] is None
    assert (
        await stack.api.client.get(f"/pipelines/runs/{run_id}/logs", headers=stack.admin)
    ).text == ""


async def test_a_worker_starting_up_starts_the_runs_left_queued(stack: Stack, repo: Repo) -> None:
    repo.init(pipeline=ONE_STEP)
    service = await stack.service(repo.url)
    pipeline = await stack.pipeline(service["id"], source="repository")
    async with stack.api.session() as session:  # recorded, never started (Temporal was down)
        row = await session.get(Pipeline, uuid.UUID(pipeline["id"]))
        assert row is not None
        left, _ = await RunService(session).create(row, RunRequest(trigger_type="manual"))
        left.created_at = left.created_at - timedelta(minutes=5)
    fresh = await stack.start(pipeline["id"])  # started normally, and too young to touch
    engine = create_engine(stack.settings.effective_database_url)
    try:
        async with pipelines_worker(stack.client, stack.settings):
            # (other tests' leftovers on a shared database may be asked too)
            assert await ensure_queued_runs(stack.client, session_factory(engine)) >= 1
            assert (await stack.finished(str(left.id)))["status"] == "succeeded"
            assert (await stack.finished(fresh))["status"] == "succeeded"
        again = await stack.run(str(left.id))
        assert again["status"] == "succeeded" and again["trigger_type"] == "manual"
    finally:
        await engine.dispose()


# -- what an operator sees in the Temporal UI ---------------------------------------------------

GATED_FAILURE = f"""\
stages:
  - name: test
    steps:
      - name: lint
        run: 'true'
      - name: unit
        run: '{GATED}; echo broken; exit 3'
  - name: build
    steps:
      - name: pack
        run: 'true'
"""


def quick_retries(topology: Topology, *kinds: str) -> Topology:
    """temporal.yaml's policies with `kinds` retried twice, quickly: a test waits seconds."""
    activities = dict(topology.activities)
    for kind in kinds:
        spec = activities[kind]
        retry = spec.retry.model_copy(
            update={
                "initial_interval": timedelta(milliseconds=100),
                "maximum_interval": timedelta(milliseconds=200),
                "maximum_attempts": 2,
            }
        )
        activities[kind] = spec.model_copy(update={"retry": retry})
    return topology.model_copy(update={"activities": activities})


async def labels_of(stack: Stack, service: dict[str, Any]) -> tuple[str, str]:
    """The service's organization's and owner team's slugs."""
    [org] = await stack.api.fetch(
        select(Organization.slug).where(Organization.id == uuid.UUID(service["org_id"]))
    )
    [team] = await stack.api.fetch(
        select(Team.slug).where(Team.id == uuid.UUID(service["owner_team_id"]))
    )
    return str(org), str(team)


async def test_a_run_its_step_failed_completes_labelled_summarised_and_found_by_a_query(
    stack: Stack, repo: Repo
) -> None:
    sha = repo.init(pipeline=GATED_FAILURE)
    service = await stack.service(repo.url)
    pipeline = await stack.pipeline(
        service["id"], source="repository", triggers={"push": {"branches": ["main"]}}
    )
    org, team = await labels_of(stack, service)
    async with pipelines_worker(stack.client, stack.settings):
        body, headers = github_delivery(push_payload(repo.owner, repo.name, sha))
        answer = await deliver(stack, body, headers)
        assert answer.status_code == 202, answer.text
        [started] = answer.json()["runs"]
        workflow_id = started["workflow_id"]
        handle = stack.client.get_workflow_handle(workflow_id)
        # While it runs: its status and what it is doing now.
        doing = "stage test: step unit running (1 of 3 steps done)"

        async def at_unit() -> bool:
            return await current_details(stack.client, workflow_id) == doing

        await wait_until(doing, at_unit, timeout=30)
        attributes = (await handle.describe()).typed_search_attributes
        assert attributes.get(sa.STATUS) == "running"
        await open_gate(stack, started["id"])
        run = await stack.settled(await stack.finished(started["id"]))
        assert (await current_details(stack.client, workflow_id)).startswith("failed: test / unit")

    assert run["status"] == "failed" and "exited with code 3" in run["error"]
    # The user's work failed: the workflow completed, its outcome in IdpStatus.
    described = await handle.describe()
    assert described.status == WorkflowExecutionStatus.COMPLETED
    attributes = described.typed_search_attributes
    assert attributes.get(sa.STATUS) == "failed"
    assert attributes.get(sa.PIPELINE) == pipeline["name"]
    assert attributes.get(sa.SERVICE) == service["name"]
    assert attributes.get(sa.COMMIT) == sha
    assert attributes.get(sa.ORGANIZATION) == org and attributes.get(sa.TEAM) == team
    assert attributes.get(sa.ACTOR) == "octocat"
    assert await described.static_summary() == (
        f"pipeline {pipeline['name']} #1 of {service['name']} at {sha[:7]}, push by octocat"
    )
    details = await described.static_details() or ""
    assert f"**Commit:** {sha}" in details and "**Branch:** main" in details
    assert f"**Organization:** {org} (team {team})" in details

    await until_listed(
        stack.client, f'IdpPipeline = "{pipeline["name"]}" AND IdpStatus = "failed"', workflow_id
    )
    await until_listed(
        stack.client, f'IdpCommit = "{sha}" AND IdpOrganization = "{org}"', workflow_id
    )

    summaries = await activity_summaries(stack.client, workflow_id)
    assert summaries[0] == "admit" and "" not in summaries, summaries
    assert {
        f"checkout {sha[:7]}",
        "step lint (stage test)",
        "step unit (stage test)",
        "record stage test failed",
        "commit status pending",
        "commit status failure",
        "finish failed",
        "remove the workspace",
    } <= set(summaries), summaries
    assert "step pack (stage build)" not in summaries  # skipped: never scheduled

    await Replayer(
        workflows=[PipelineRunWorkflow],
        workflow_runner=sandbox_runner(),
        data_converter=stack.client.data_converter,
    ).replay_workflow(await handle.fetch_history())


async def test_what_the_user_got_wrong_completes_and_a_git_host_down_fails_the_workflow(
    stack: Stack, repo: Repo, topology: Topology
) -> None:
    policies.install(quick_retries(topology, "git"))
    repo.init(pipeline="stages:\n  - name: s\n    steps: nope\n")
    service = await stack.service(repo.url)
    pipeline = await stack.pipeline(service["id"], source="repository")
    # Rewritten like the repository, to a path where nothing is: its Git host is down.
    gone_url = f"{repo.url}-gone"
    gone_service = await stack.service(gone_url)
    gone_pipeline = await stack.pipeline(gone_service["id"], source="repository")
    async with pipelines_worker(stack.client, stack.settings):
        invalid = await stack.start(pipeline["id"], ref="main")
        unknown = await stack.start(pipeline["id"], ref="no-such-branch")
        down = await stack.start(gone_pipeline["id"], ref="main")
        runs = [await stack.settled(await stack.finished(r)) for r in (invalid, unknown, down)]

    assert [r["status"] for r in runs] == ["failed", "failed", "failed"]
    assert ".idp/pipeline.yaml at " in runs[0]["error"] and "is invalid" in runs[0]["error"]
    assert "unknown ref or commit 'no-such-branch'" in runs[1]["error"]
    assert gone_url in runs[2]["error"]
    # The user's: completed, failed in IdpStatus.
    for run in runs[:2]:
        described = await stack.client.get_workflow_handle(run["workflow_id"]).describe()
        assert described.status == WorkflowExecutionStatus.COMPLETED, run
        assert described.typed_search_attributes.get(sa.STATUS) == "failed"
    # The platform's: recorded failed, then the workflow failed saying what and where.
    handle = stack.client.get_workflow_handle(runs[2]["workflow_id"])
    described = await handle.describe()
    assert described.status == WorkflowExecutionStatus.FAILED
    assert described.typed_search_attributes.get(sa.STATUS) == "failed"
    with pytest.raises(WorkflowFailureError) as failed:
        await handle.result()
    cause = failed.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == "GitCheckoutFailed"
    assert cause.non_retryable
    assert gone_url in cause.message and "does not appear to be a git repository" in cause.message
    assert cause.message.startswith(
        f"pipeline {gone_pipeline['name']} #1 of service {gone_service['name']}: checkout of main"
    )
    query = f'IdpService = "{gone_service["name"]}" AND IdpStatus = "failed"'
    await until_listed(stack.client, f"{query} AND ExecutionStatus = 'Failed'", handle.id)

    replayer = Replayer(
        workflows=[PipelineRunWorkflow],
        workflow_runner=sandbox_runner(),
        data_converter=stack.client.data_converter,
    )
    for run in runs:
        history = await stack.client.get_workflow_handle(run["workflow_id"]).fetch_history()
        await replayer.replay_workflow(history)


async def test_a_runner_that_cannot_be_reached_fails_the_workflow_naming_it(
    stack: Stack, repo: Repo, topology: Topology, tmp_path: Path
) -> None:
    policies.install(quick_retries(topology, "pipeline_step"))
    repo.init(pipeline=ONE_STEP)
    service = await stack.service(repo.url)
    pipeline = await stack.pipeline(service["id"], source="repository")
    engine = f"unix://{tmp_path}/no-docker-engine.sock"  # the Docker engine is down
    runner = DockerRunner(base_url=engine)
    async with pipelines_worker(stack.client, stack.settings, runner=runner):
        run = await stack.settled(await stack.finished(await stack.start(pipeline["id"])))

    assert run["status"] == "failed" and engine in run["error"]
    [step] = run["stages"][0]["steps"]
    assert step["status"] == "failed" and engine in step["error"]
    handle = stack.client.get_workflow_handle(run["workflow_id"])
    with pytest.raises(WorkflowFailureError) as failed:
        await handle.result()
    cause = failed.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == "RunnerUnavailable"
    assert f"step a of stage s could not run: the Docker engine at {engine}" in cause.message
    assert (await handle.describe()).typed_search_attributes.get(sa.STATUS) == "failed"
