"""Shared by the pipeline run tests: a real git repository on disk, an API wired to the session's
Temporal dev server with webhook secrets and clone rewrites, an in-process pipelines worker,
signed webhook deliveries and waiting for a run to finish; what the Temporal UI shows of a
run (its current details, its activities' summaries, the runs a visibility query lists)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import subprocess
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from pydantic import SecretStr
from temporalio.api.sdk.v1 import WorkflowMetadata
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.notifications import NotificationActivities
from activities.pipelines import PipelineActivities
from core.catalog.repositories import parse_repository_url
from core.db.engine import create_engine, session_factory
from core.notifications.dispatch import SenderSettings
from core.pipelines.artifacts import ArtifactStore
from core.pipelines.commit_status import CommitStatusReporter
from core.pipelines.runners import Runner
from core.pipelines.runners.factory import build_runner
from core.pipelines.webhooks import sign
from core.settings import Settings
from core.temporal.client import connect
from core.topology import Topology
from tests.helpers import add_git_connection, local_egress, wait_until
from tests.integration.identity_helpers import Api, running_api
from workers.registry import git_access
from workers.runner import HEARTBEAT_THROTTLE, sandbox_runner
from workflows.notification import (
    NOTIFICATIONS_QUEUE,
    NotificationWorkflow,
    SlackMessageUpdateWorkflow,
)
from workflows.pipeline_run import PIPELINES_QUEUE, PipelineRunWorkflow

SECRET = "webhook-secret-for-tests"
Headers = dict[str, str]


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-c", "user.name=Dev", "-c", "user.email=dev@example.com", *args],
        cwd=repo,
        check=True,
        capture_output=True,
        text=True,
    )
    return done.stdout.strip()


def make_repo(path: Path, files: Mapping[str, str], branch: str = "main") -> str:
    """A repository at `path` with one commit of `files`; returns the commit's SHA."""
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q", "-b", branch)
    return commit(path, files, "initial")


def commit(repo: Path, files: Mapping[str, str], message: str) -> str:
    for name, text in files.items():
        target = repo / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD")


@dataclass
class Stack:
    api: Api
    client: Client
    admin: Headers
    settings: Settings

    async def service(self, repository_url: str, **connection: Any) -> dict[str, Any]:
        org = await self.api.client.post(
            "/organizations",
            json={"name": "Org", "slug": f"org-{uuid.uuid4().hex[:8]}"},
            headers=self.admin,
        )
        team = await self.api.client.post(
            "/teams",
            json={"org_id": org.json()["id"], "name": "T", "slug": f"t-{uuid.uuid4().hex[:8]}"},
            headers=self.admin,
        )
        # The organization's connection for the host, signing with the tests' secret.
        host = parse_repository_url(repository_url, self.settings.git_hosts).host
        body = {"webhook_secret": SECRET, **connection}
        await add_git_connection(self.api.client, self.admin, org.json()["id"], host, **body)
        created = await self.api.client.post(
            "/services",
            json={
                "name": f"svc-{uuid.uuid4().hex[:8]}",
                "owner_team_id": team.json()["id"],
                "repository_url": repository_url,
            },
            headers=self.admin,
        )
        assert created.status_code == 201, created.text
        return dict(created.json())

    async def pipeline(self, service_id: str, **body: Any) -> dict[str, Any]:
        body = {"name": f"ci-{uuid.uuid4().hex[:6]}", "service_id": service_id, **body}
        created = await self.api.client.post("/pipelines", json=body, headers=self.admin)
        assert created.status_code == 201, created.text
        return dict(created.json())

    async def start(self, pipeline_id: str, **body: Any) -> str:
        """Start a manual run; its id."""
        started = await self.api.client.post(
            f"/pipelines/{pipeline_id}/run", json=body, headers=self.admin
        )
        assert started.status_code == 202, started.text
        return str(started.json()["id"])

    async def run(self, run_id: str) -> dict[str, Any]:
        got = await self.api.client.get(f"/pipelines/runs/{run_id}", headers=self.admin)
        assert got.status_code == 200, got.text
        return dict(got.json())

    async def finished(self, run_id: str, timeout: float = 60) -> dict[str, Any]:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            run = await self.run(run_id)
            if run["status"] in ("succeeded", "failed", "cancelled"):
                return run
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"run {run_id} did not finish: {run}")
            await asyncio.sleep(0.1)

    async def until_status(self, run_id: str, status: str) -> None:
        async def reached() -> bool:
            return bool((await self.run(run_id))["status"] == status)

        await wait_until(f"run {run_id} {status}", reached, timeout=10)

    async def settled(self, run: dict[str, Any], timeout: float = 30) -> dict[str, Any]:
        """The run once its workflow has closed (its last commit status and notification
        are sent after the record says finished)."""
        handle = self.client.get_workflow_handle(run["workflow_id"])
        deadline = asyncio.get_running_loop().time() + timeout
        while (await handle.describe()).status == WorkflowExecutionStatus.RUNNING:
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"workflow of run {run['id']} did not close")
            await asyncio.sleep(0.1)
        return await self.run(run["id"])

    async def logs(self, run_id: str) -> str:
        got = await self.api.client.get(f"/pipelines/runs/{run_id}/logs", headers=self.admin)
        assert got.status_code == 200, got.text
        return got.text


def push_payload(owner: str, name: str, sha: str, branch: str = "main") -> dict[str, Any]:
    """A GitHub push event, as GitHub sends it (the fields the platform reads)."""
    return {
        "ref": f"refs/heads/{branch}",
        "before": "0" * 40,
        "after": sha,
        "deleted": False,
        "repository": {
            "full_name": f"{owner}/{name}",
            "html_url": f"https://github.com/{owner}/{name}",
            "clone_url": f"https://github.com/{owner}/{name}.git",
        },
        "sender": {"login": "octocat"},
        "head_commit": {"id": sha, "message": "change", "url": f"https://github.com/x/{sha}"},
    }


def github_delivery(
    payload: dict[str, Any], *, delivery: str | None = None, secret: str = SECRET
) -> tuple[bytes, Headers]:
    body = json.dumps(payload).encode()
    headers = {
        "Content-Type": "application/json",
        "X-GitHub-Event": "push",
        "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
        "X-Hub-Signature-256": sign(body, secret),
    }
    return body, headers


def stack_settings(
    settings: Settings, temporal_env: WorkflowEnvironment, rewrites: dict[str, str], **extra: Any
) -> Settings:
    address = temporal_env.client.service_client.config.target_host
    return settings.model_copy(
        update={
            "temporal_address": address,
            "github_webhook_secret": SecretStr(SECRET),
            "git_url_rewrites": rewrites,
            "public_url": "http://idp.test",
            **extra,
        }
    )


@asynccontextmanager
async def pipeline_stack(
    settings: Settings, topology: Topology, database_url: str
) -> AsyncIterator[Stack]:
    async with running_api(settings, topology, database_url) as api:
        client = await connect(api.settings, topology)  # the API's codec
        _, admin = await api.token("admin")
        await retire_runs(client)
        try:
            yield Stack(api, client, admin, api.settings)
        finally:
            await retire_runs(client)


async def current_details(client: Client, workflow_id: str) -> str:
    """What the workflow says it is doing now (the UI's "current details")."""
    metadata = await client.get_workflow_handle(workflow_id).query(
        "__temporal_workflow_metadata", result_type=WorkflowMetadata
    )
    return str(metadata.current_details)


async def activity_summaries(client: Client, workflow_id: str) -> list[str]:
    """The summaries of the workflow's scheduled activities, in order (the UI's timeline),
    decoded with the client's data converter (they are encrypted like any payload)."""
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    summaries = []
    for event in history.events:
        if not event.HasField("activity_task_scheduled_event_attributes"):
            continue
        if not event.user_metadata.HasField("summary"):
            summaries.append("")  # an activity without one: the timeline shows its name only
            continue
        [summary] = await client.data_converter.decode([event.user_metadata.summary])
        summaries.append(str(summary))
    return summaries


async def until_listed(client: Client, query: str, workflow_id: str) -> None:
    """Wait (bounded: visibility is eventually consistent) until `query` lists the workflow."""

    async def found() -> bool:
        return any([e.id == workflow_id async for e in client.list_workflows(query)])

    await wait_until(f"{query} to list {workflow_id}", found, timeout=15, every=0.2)


async def retire_runs(client: Client, queue: str = PIPELINES_QUEUE) -> None:
    """Terminate the workflows still open on `queue` of the shared dev server, so no test's
    worker picks up another test's run (encrypted with another test's key)."""
    query = f"TaskQueue = '{queue}' AND ExecutionStatus = 'Running'"
    async for execution in client.list_workflows(query):
        with contextlib.suppress(RPCError):
            await client.get_workflow_handle(execution.id).terminate("test cleanup")


@asynccontextmanager
async def pipelines_worker(
    client: Client,
    settings: Settings,
    *,
    reporter: CommitStatusReporter | None = None,
    runner: Runner | None = None,
    queue: str = PIPELINES_QUEUE,
) -> AsyncIterator[PipelineActivities]:
    engine = create_engine(settings.effective_database_url)
    acts = PipelineActivities(
        session_factory(engine),
        runner or build_runner(settings, kill_grace=1.0),  # the default: the sandbox
        artifacts=ArtifactStore(settings.artifact_root),
        workspace_root=settings.workspace_root,
        git=git_access(settings),
        reporter=reporter,
        platform_url=settings.platform_url,
    )
    try:
        async with AsyncExitStack() as stack:
            await stack.enter_async_context(
                Worker(
                    client,
                    task_queue=queue,
                    workflows=[PipelineRunWorkflow],
                    activities=acts.all(),
                    workflow_runner=sandbox_runner(),
                    max_heartbeat_throttle_interval=HEARTBEAT_THROTTLE,
                )
            )
            yield acts
    finally:
        await engine.dispose()


@asynccontextmanager
async def served(api: Api) -> AsyncIterator[str]:
    """The app on a real loopback HTTP server in this event loop (streams are not buffered,
    as they are through the in-process transport); yields its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = int(sock.getsockname()[1])
    config = uvicorn.Config(api.app, log_level="warning", lifespan="off", access_log=False)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
        sock.close()


@asynccontextmanager
async def notifications_worker(
    client: Client, settings: Settings, *, slack_api_url: str | None = None
) -> AsyncIterator[None]:
    """A worker on the `notifications` queue (the one runs notify through), emptied of other
    tests' notifications first; Slack through `slack_api_url` when given."""
    await retire_runs(client, NOTIFICATIONS_QUEUE)
    engine = create_engine(settings.effective_database_url)
    acts = NotificationActivities(
        session_factory(engine), SenderSettings(slack_api_url=slack_api_url, egress=local_egress())
    )
    try:
        async with Worker(
            client,
            task_queue=NOTIFICATIONS_QUEUE,
            workflows=[NotificationWorkflow, SlackMessageUpdateWorkflow],
            activities=[acts.prepare, acts.deliver, acts.mark_failed, acts.update_message],
            workflow_runner=sandbox_runner(),
        ):
            yield
    finally:
        await retire_runs(client, NOTIFICATIONS_QUEUE)
        await engine.dispose()


async def sse_events(response: httpx.Response) -> AsyncIterator[tuple[str, Any]]:
    """The (event, data) pairs of a Server-Sent Events stream, each data decoded from JSON."""
    event = ""
    async for line in response.aiter_lines():
        if line.startswith("event: "):
            event = line.removeprefix("event: ")
        elif line.startswith("data: "):
            yield event, json.loads(line.removeprefix("data: "))
