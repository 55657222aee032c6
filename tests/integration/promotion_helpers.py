"""Shared by the promotion tests and the promotion benchmark: an API wired to a Temporal server
and a Slack API stand-in, the promotions and notifications workers, an organization with a
service, its versions (a small HTTP app on this host) and a development -> staging ->
production chain, approvers, signed Slack button presses, and what the Temporal UI shows of a
workflow (search attributes, current details, activity summaries)."""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from pydantic import SecretStr
from temporalio.api.sdk.v1 import WorkflowMetadata
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.worker import Worker

from activities.notifications import NotificationActivities
from activities.promotions import PromotionActivities
from core.db.engine import create_engine, session_factory
from core.deploy.targets import DeployTargets
from core.models.pipelines import Pipeline
from core.notifications.dispatch import SenderSettings
from core.pipelines.dispatch import event_request
from core.pipelines.events import GitEvent
from core.pipelines.runs import RunRequest, RunService
from core.settings import Settings
from core.slack.interactions import sign
from core.temporal.client import connect
from core.topology import Topology
from tests.helpers import local_egress, wait_until
from tests.integration.identity_helpers import Api, running_api
from tests.integration.pipeline_helpers import retire_runs
from tests.standins.slack_api import DEFAULT_TEAM, SlackApiStandin
from workers.runner import HEARTBEAT_THROTTLE, sandbox_runner
from workflows.notification import (
    NOTIFICATIONS_QUEUE,
    NotificationWorkflow,
    SlackMessageUpdateWorkflow,
)
from workflows.promotion import PROMOTIONS_QUEUE, PromotionWorkflow

SIGNING_SECRET = "slack-signing-secret-for-tests"
BOT_TOKEN = "xoxb-promotions-test"
SLACK_CHANNEL = "C0DEPLOYS"
SLACK_TEAM = DEFAULT_TEAM  # the stand-in's workspace: channels pin it (auth.test)
FINISHED = ("succeeded", "rolled_back", "failed", "rejected", "expired", "cancelled", "refused")
Headers = dict[str, str]

# A service version on the local target: answers /health with 200 (APP_MODE=ok), never
# (fail: it exits at once), or for its first second only (degrade); / tells its version and
# the configuration it was given.
APP = """\
import http.server, os, sys, time
mode, started = os.environ.get("APP_MODE", "ok"), time.time()
if mode == "fail":
    sys.exit(3)
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        healthy = mode == "ok" or time.time() - started < 1.0
        body = " ".join([os.environ["IDP_VERSION"], os.environ.get("GREETING", "-"),
                         os.environ.get("API_TOKEN", "-")]).encode()
        self.send_response(200 if healthy or self.path != "/health" else 500)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
"""


def slack_interaction(
    action: str,
    promotion_id: str,
    slack_user: str,
    *,
    message_ts: str | None,
    response_url: str,
    kind: str = "promotion",
    team: str = SLACK_TEAM,
) -> bytes:
    """A `block_actions` payload as Slack posts it (form-encoded `payload`); `kind` is what
    the button decides on (`promotion`, `provision`); `team` the presser's workspace."""
    payload = {
        "type": "block_actions",
        "user": {"id": slack_user, "username": slack_user, "team_id": team},
        "team": {"id": team},
        "channel": {"id": SLACK_CHANNEL},
        "container": {"type": "message", "channel_id": SLACK_CHANNEL, "message_ts": message_ts},
        "message": {"ts": message_ts},
        "response_url": response_url,
        "trigger_id": "1.2.3",
        "actions": [
            {
                "action_id": f"{kind}.{action}",
                "block_id": f"{kind}-{promotion_id}",
                "value": promotion_id,
                "type": "button",
            }
        ],
    }
    return urlencode({"payload": json.dumps(payload)}).encode()


def slack_headers(body: bytes, *, at: float | None = None, secret: str = SIGNING_SECRET) -> Headers:
    stamp = int(time.time() if at is None else at)
    return {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Slack-Request-Timestamp": str(stamp),
        "X-Slack-Signature": sign(body, stamp, secret),
    }


@dataclass
class Person:
    id: str
    email: str
    headers: Headers


@dataclass
class World:
    """One organization: a service with an owner team (with a Slack channel), an approvers
    team, and environments dev -> staging -> prod."""

    org_id: str
    service_id: str
    service: str
    owner_team: str
    approvers_team: str
    envs: dict[str, dict[str, Any]] = field(default_factory=dict)
    org_slug: str = ""
    owner_slug: str = ""


@dataclass
class PromotionStack:
    api: Api
    client: Client
    admin: Headers
    settings: Settings
    slack: SlackApiStandin
    app_path: Path

    async def post(self, path: str, body: Any = None, headers: Headers | None = None) -> Any:
        return await self.api.client.post(path, json=body, headers=headers or self.admin)

    async def created(self, path: str, body: Any, headers: Headers | None = None) -> Any:
        answer = await self.post(path, body, headers)
        assert answer.status_code in (200, 201, 202), answer.text
        return answer.json()

    async def person(self, *roles: str, teams: tuple[str, ...] = ()) -> Person:
        user_id, email = await self.api.user()
        for role in roles:
            await self.created(f"/users/{user_id}/roles", {"role": role})
        for team in teams:
            await self.created(f"/teams/{team}/members", {"user_id": str(user_id)})
        tokens = await self.api.login(email)
        return Person(str(user_id), email, {"Authorization": f"Bearer {tokens['access_token']}"})

    async def world(
        self,
        prod_policy: dict[str, Any] | None = None,
        staging_policy: dict[str, Any] | None = None,
        dev_policy: dict[str, Any] | None = None,
        chain: tuple[str, ...] = ("dev", "staging", "prod"),
    ) -> World:
        """The organization, with the environments of `chain` in that order (each one's
        `previous_id` the one before)."""
        suffix = uuid.uuid4().hex[:8]
        org = await self.created("/organizations", {"name": "Org", "slug": f"org-{suffix}"})
        owner = await self.created(
            "/teams", {"org_id": org["id"], "name": "Shop", "slug": f"shop-{suffix}"}
        )
        approvers = await self.created(
            "/teams", {"org_id": org["id"], "name": "Approvers", "slug": f"approvers-{suffix}"}
        )
        service = await self.created(
            "/services", {"name": f"shop-{suffix}", "owner_team_id": owner["id"]}
        )
        await self.created(
            "/notifications/channels",
            {
                "type": "slack",
                "name": "deploys",
                "team_id": owner["id"],
                "config": {"channel": SLACK_CHANNEL},
                "secrets": {"bot_token": BOT_TOKEN},
            },
        )
        world = World(
            org["id"],
            service["id"],
            service["name"],
            owner["id"],
            approvers["id"],
            org_slug=org["slug"],
            owner_slug=owner["slug"],
        )
        previous = None
        quick = {"verification_window": "1s"}
        policies = {
            "dev": {**quick, **(dev_policy or {})},
            "staging": {**quick, **(staging_policy or {})},
            "prod": {
                **quick,
                "required_approvals": 2,
                "approver_teams": [approvers["slug"]],
                **(prod_policy or {}),
            },
        }
        kinds = {"dev": "development", "staging": "staging", "prod": "production"}
        for name in chain:
            kind = kinds[name]
            env = await self.created(
                "/environments",
                {
                    "org_id": org["id"],
                    "name": f"{name}-{suffix}",
                    "type": kind,
                    "previous_id": previous,
                    "policy": policies[name],
                },
            )
            world.envs[name] = env
            previous = env["id"]
        return world

    async def version(
        self, world: World, version: str, mode: str = "ok", *, built_by: str | None = None
    ) -> dict[str, Any]:
        """Register `version`; `built_by` links the pipeline run that built it (its
        provenance), else it is registered by hand (its branch is unknown). The config's
        `branch` is a claim the platform ignores."""
        return dict(
            await self.created(
                f"/services/{world.service_id}/versions",
                {
                    "version": version,
                    "config": {
                        "command": f"{sys.executable} {self.app_path}",
                        "env": {"APP_MODE": mode},
                        "branch": "main",
                    },
                    **({"pipeline_run_id": built_by} if built_by else {}),
                },
            )
        )

    async def build(self, world: World, branch: str, *, pushed: bool = True) -> str:
        """A succeeded run of a pipeline of the service at `branch`, recorded as the platform
        records one: started by the Git host's push delivery (`pushed`), or a manual run whose
        caller named the commit. Returns its id."""
        sha = uuid.uuid4().hex + uuid.uuid4().hex[:8]
        async with self.api.session() as session:
            pipeline = Pipeline(
                service_id=uuid.UUID(world.service_id),
                name=f"ci-{uuid.uuid4().hex[:8]}",
                config={},
                triggers={},
            )
            session.add(pipeline)
            await session.flush()
            if pushed:
                event = GitEvent(
                    kind="push", ref=f"refs/heads/{branch}", branch=branch, sha=sha, sender="dev"
                )
                request = event_request(event, f"delivery-{uuid.uuid4()}")
            else:
                request = RunRequest(trigger_type="manual", ref=branch, sha=sha, branch=branch)
            run, _ = await RunService(session).create(pipeline, request)
            run.status = "succeeded"
            return str(run.id)

    async def deploy(
        self, world: World, env: str, version: str, headers: Headers | None = None
    ) -> dict[str, Any]:
        answer = await self.post(
            f"/environments/{world.envs[env]['id']}/deploy",
            {"service_id": world.service_id, "version": version},
            headers,
        )
        assert answer.status_code == 202, answer.text
        return dict(answer.json())

    async def promotion(self, promotion_id: str) -> dict[str, Any]:
        got = await self.api.client.get(f"/promotions/{promotion_id}", headers=self.admin)
        assert got.status_code == 200, got.text
        return dict(got.json())

    async def until(self, promotion_id: str, *statuses: str, timeout: float = 30) -> dict[str, Any]:
        found: dict[str, Any] = {}

        async def reached() -> bool:
            found.update(await self.promotion(promotion_id))
            return found["status"] in statuses

        await wait_until(
            f"promotion {promotion_id} {statuses}", reached, timeout=timeout, every=0.2
        )
        return found

    async def finished(self, promotion_id: str, timeout: float = 60) -> dict[str, Any]:
        """The promotion once its workflow has closed (its last records are written)."""
        row = await self.until(promotion_id, *FINISHED, timeout=timeout)
        handle = self.client.get_workflow_handle(row["workflow_id"])

        async def closed() -> bool:
            return (await handle.describe()).status != WorkflowExecutionStatus.RUNNING

        await wait_until(f"promotion {promotion_id} closed", closed, timeout=timeout, every=0.2)
        return await self.promotion(promotion_id)

    async def promoted(self, world: World, env: str, version: str) -> dict[str, Any]:
        row = await self.finished((await self.deploy(world, env, version))["id"])
        assert row["status"] == "succeeded", row
        return row

    async def slack_press(
        self, action: str, promotion_id: str, slack_user: str, message_ts: str | None
    ) -> Any:
        body = slack_interaction(
            action,
            promotion_id,
            slack_user,
            message_ts=message_ts,
            response_url=self.slack.response_url(uuid.uuid4().hex),
        )
        return await self.api.client.post(
            "/integrations/slack/interactions", content=body, headers=slack_headers(body)
        )


async def indexed(client: Client, workflow_id: str) -> dict[str, str]:
    """The platform's search attributes (`Idp...`) of a workflow by name, as `describe` (and
    the UI) has them now."""
    described = await client.get_workflow_handle(workflow_id).describe()
    pairs = described.typed_search_attributes
    return {pair.key.name: pair.value for pair in pairs if pair.key.name.startswith("Idp")}


async def current_details(client: Client, workflow_id: str) -> str:
    """A running workflow's current details (what the UI shows on its page)."""
    metadata = await client.get_workflow_handle(workflow_id).query(
        "__temporal_workflow_metadata", result_type=WorkflowMetadata
    )
    return str(metadata.current_details)


async def activity_summaries(client: Client, workflow_id: str) -> list[str | None]:
    """The summary of every activity the workflow scheduled, in order (None where none),
    decoded from its history with the client's data converter (and codec)."""
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    found: list[str | None] = []
    for event in history.events:
        if not event.HasField("activity_task_scheduled_event_attributes"):
            continue
        summary = event.user_metadata.summary
        if event.HasField("user_metadata") and event.user_metadata.HasField("summary"):
            [text] = await client.data_converter.decode([summary], [str])
            found.append(text)
        else:
            found.append(None)
    return found


async def listed(client: Client, query: str, workflow_id: str, timeout: float = 15) -> None:
    """Wait until the visibility query `query` lists `workflow_id` (it is eventually
    consistent)."""

    async def found() -> bool:
        return workflow_id in [w.id async for w in client.list_workflows(query)]

    await wait_until(f"{workflow_id} listed by {query}", found, timeout=timeout, every=0.2)


def stack_settings(settings: Settings, client: Client, slack: SlackApiStandin) -> Settings:
    return settings.model_copy(
        update={
            "temporal_address": client.service_client.config.target_host,
            "slack_signing_secret": SecretStr(SIGNING_SECRET),
            "slack_api_url": slack.base_url,
            # The tests' Slack users are found by their email in the stand-in's workspace.
            "slack_email_lookup_team_ids": (SLACK_TEAM,),
            "public_url": "http://idp.test",
        }
    )


@asynccontextmanager
async def promotion_stack(
    settings: Settings, topology: Topology, database_url: str, client: Client, tmp_path: Path
) -> AsyncIterator[PromotionStack]:
    with SlackApiStandin(tokens={BOT_TOKEN}, channels={SLACK_CHANNEL: "deploys"}) as slack:
        configured = stack_settings(settings, client, slack)
        async with running_api(configured, topology, database_url) as api:
            api_client = await connect(api.settings, topology)  # the API's codec
            _, admin = await api.token("admin")
            app_path = tmp_path / "app.py"
            app_path.write_text(APP)
            for queue in (PROMOTIONS_QUEUE, NOTIFICATIONS_QUEUE):
                await retire_runs(api_client, queue)
            try:
                yield PromotionStack(api, api_client, admin, api.settings, slack, app_path)
            finally:
                for queue in (PROMOTIONS_QUEUE, NOTIFICATIONS_QUEUE):
                    await retire_runs(api_client, queue)


@asynccontextmanager
async def promotion_workers(
    stack: PromotionStack, *, health_timeout: float = 5.0
) -> AsyncIterator[DeployTargets]:
    """Workers on `promotions` and `notifications` (Slack through the stand-in); yields the
    deploy targets, whose local processes are stopped at the end."""
    settings = stack.settings
    engine = create_engine(settings.effective_database_url)
    sessions = session_factory(engine)
    targets = DeployTargets(settings.deploy_root, health_timeout=health_timeout)
    promotions = PromotionActivities(sessions, targets, platform_url=settings.platform_url)
    notifications = NotificationActivities(
        sessions,
        SenderSettings(slack_api_url=stack.slack.base_url, egress=local_egress()),
        platform_url="http://idp.test",
    )
    try:
        async with AsyncExitStack() as workers:
            await workers.enter_async_context(
                Worker(
                    stack.client,
                    task_queue=PROMOTIONS_QUEUE,
                    workflows=[PromotionWorkflow],
                    activities=promotions.all(),
                    workflow_runner=sandbox_runner(),
                    max_heartbeat_throttle_interval=HEARTBEAT_THROTTLE,
                )
            )
            await workers.enter_async_context(
                Worker(
                    stack.client,
                    task_queue=NOTIFICATIONS_QUEUE,
                    workflows=[NotificationWorkflow, SlackMessageUpdateWorkflow],
                    activities=[
                        notifications.prepare,
                        notifications.deliver,
                        notifications.mark_failed,
                        notifications.update_message,
                    ],
                    workflow_runner=sandbox_runner(),
                )
            )
            yield targets
    finally:
        await stop_all(targets, settings.deploy_root)
        await engine.dispose()


async def stop_all(targets: DeployTargets, root: Path) -> None:
    """Stop every process the local target recorded under `root`."""
    for record in root.glob("*/*/current.json"):
        running = targets.local.current(record.parent.parent.name, record.parent.name)
        if running is not None:
            await targets.local.stop(running)
    await asyncio.sleep(0)
