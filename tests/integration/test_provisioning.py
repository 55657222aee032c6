"""ProvisionWorkflow and DestroyWorkflow on the real Temporal dev server, with the API, the
database and a worker on `provisioning`; only the Pulumi Automation API boundary (`Engine`)
is replaced by an in-memory engine that plans, creates and destroys what it is told. The
missing-CLI case runs the real `AutomationEngine` on a PATH without `pulumi`.

What an operator sees in the Temporal UI is checked too: a platform failure (the CLI missing,
`up` failing) fails the execution with a typed ApplicationError and is found by its search
attributes; a rejection completes; the runs and their activities carry summaries."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import select
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHistory,
)
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer, Worker

from activities.provisioning import ProvisioningActivities
from core.db.engine import create_engine, session_factory
from core.infrastructure.costs import PriceCatalog
from core.infrastructure.engine import (
    AutomationEngine,
    Deployed,
    DeployedResource,
    Engine,
    Output,
    PlannedResource,
    Program,
    StackRef,
)
from core.models.audit import AuditLog
from core.models.identity import User
from core.models.infrastructure import Resource, ResourceRelationship
from core.models.notifications import Notification
from core.security.encryption import KeyRing
from core.settings import PROJECT_ROOT, Settings
from core.temporal import policies, search_attributes
from core.temporal.client import connect
from core.temporal.codec import EncryptionCodec
from core.temporal.converter import data_converter
from core.topology import Topology
from tests.helpers import wait_until
from tests.integration.identity_helpers import Api, assert_error, running_api
from tests.integration.operator_view import activity_summaries, current_details, executions
from tests.integration.pipeline_helpers import notifications_worker, retire_runs
from tests.integration.promotion_helpers import (
    BOT_TOKEN,
    SLACK_CHANNEL,
    slack_headers,
    slack_interaction,
    stack_settings,
)
from tests.standins.slack_api import SlackApiStandin
from tests.standins.webhook_receiver import WebhookReceiver
from workers.runner import HEARTBEAT_THROTTLE, sandbox_runner
from workflows.provisioning import (
    PROVISIONING_QUEUE,
    DestroyWorkflow,
    PreviewExpiryWorkflow,
    ProvisionWorkflow,
)

Headers = dict[str, str]
FINISHED = ("succeeded", "destroyed", "compensated", "blocked", "failed", "rejected", "expired")
TAGS = ("team", "service", "environment", "cost-centre", "managed-by")


def _urn(stack: str, type_: str, name: str) -> str:
    return f"urn:pulumi:{stack}::idp-environments::{type_}::{name}"


@dataclass
class FakeEngine:
    """The Automation API boundary: `plan` is what a preview shows and `up` creates (with the
    tagging standard's tags unless `untagged`); `fail_up_after` makes `up` fail after creating
    that many resources. It keeps each stack's resources, as Pulumi's state would."""

    fail_up_after: int | None = None
    untagged: tuple[str, ...] = ()
    state: dict[str, list[PlannedResource]] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)

    def plan(self, ref: StackRef) -> list[PlannedResource]:
        tags = {"team": "web", "service": "shop", "environment": "e", "cost-centre": "cc-1234"}
        tags["managed-by"] = "idp"
        items = [
            ("aws:ec2/vpc:Vpc", "net", {"cidrBlock": "10.0.0.0/16"}),
            ("aws:s3/bucketV2:BucketV2", "bucket", {}),
            ("aws:rds/instance:Instance", "db", {"instanceClass": "db.t4g.micro"}),
        ]
        planned = [
            PlannedResource(
                urn=_urn(ref.stack, t, n),
                type=t,
                name=n,
                op="create",
                inputs={
                    **inputs,
                    **({"tags": dict(tags)} if n not in self.untagged else {}),
                    **({"storageEncrypted": True} if n == "db" else {}),
                },
            )
            for t, n, inputs in items
        ]
        block = "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock"
        planned.append(  # takes no tags: the required-tags rule does not apply to it
            PlannedResource(
                _urn(ref.stack, block, "bucket-block"), block, "bucket-block", "create", {}
            )
        )
        return planned

    async def preview(self, ref: StackRef, program: Program, out: Output) -> list[PlannedResource]:
        self.calls.append(f"preview {ref.stack}")
        planned = self.plan(ref)
        out(f"Previewing update ({ref.stack}):")
        for item in planned:
            out(f"    + {item.type} {item.name} create")
        return planned

    async def up(self, ref: StackRef, program: Program, out: Output) -> Deployed:
        self.calls.append(f"up {ref.stack}")
        assert ref.secret_config.get("aws:secretKey") == "s3cr3t-key"  # credentials reach it
        created = self.state.setdefault(ref.stack, [])
        for item in self.plan(ref):
            if item.urn in {c.urn for c in created}:
                continue
            if self.fail_up_after is not None and len(created) >= self.fail_up_after:
                out(f"    error: creating {item.name}: AccessDenied")
                raise RuntimeError(f"creating {item.name}: AccessDenied (403)")
            created.append(item)
            out(f"    + {item.type} {item.name} created")
        net = _urn(ref.stack, "aws:ec2/vpc:Vpc", "net")
        resources = [
            DeployedResource(
                urn=c.urn,
                type=c.type,
                name=c.name,
                id=f"id-{c.name}",
                parent=None,
                inputs=c.inputs,
                outputs={},
                dependencies=(net,) if c.name == "db" else (),
            )
            for c in created
        ]
        outputs = {"bucket_name": "bucket-1a2b", "database_endpoint": "db.internal:5432"}
        return Deployed(outputs | {"database_password": "[secret]"}, resources)

    async def destroy(
        self, ref: StackRef, program: Program, out: Output, targets: list[str] | None = None
    ) -> list[str]:
        self.calls.append(f"destroy {ref.stack} {sorted(targets or [])}")
        held = self.state.get(ref.stack, [])
        gone = [c for c in held if targets is None or c.urn in targets]
        self.state[ref.stack] = [c for c in held if c not in gone]
        for item in gone:
            out(f"    - {item.type} {item.name} deleted")
        return [c.name for c in gone]


@dataclass
class Infra:
    api: Api
    client: Client
    admin: Headers
    settings: Settings
    org_id: str = ""
    team_id: str = ""
    approvers: str = ""
    approvers_id: str = ""
    provider_id: str = ""
    org_slug: str = ""
    admin_email: str = ""
    names: dict[str, str] = field(default_factory=dict)  # environment id -> name

    async def created(self, path: str, body: Any, headers: Headers | None = None) -> Any:
        answer = await self.api.client.post(path, json=body, headers=headers or self.admin)
        assert answer.status_code in (200, 201, 202), answer.text
        return answer.json()

    async def environment(self, kind: str, **policy: Any) -> str:
        env = await self.created(
            "/environments",
            {
                "org_id": self.org_id,
                "name": f"{kind[:4]}-{uuid.uuid4().hex[:6]}",
                "type": kind,
                "policy": policy,
            },
        )
        self.names[str(env["id"])] = env["name"]
        return str(env["id"])

    async def provision(
        self, env_id: str, headers: Headers | None = None, **extra: Any
    ) -> dict[str, Any]:
        body = {
            "environment_id": env_id,
            "provider_id": self.provider_id,
            "team_id": self.team_id,
            "cost_centre": "cc-1234",
            "service": "shop",
            **extra,
        }
        return dict(await self.created("/infrastructure/provision", body, headers))

    async def run(self, provision_id: str) -> dict[str, Any]:
        got = await self.api.client.get(
            f"/infrastructure/provisions/{provision_id}", headers=self.admin
        )
        assert got.status_code == 200, got.text
        return dict(got.json())

    async def until(self, provision_id: str, *statuses: str, timeout: float = 30) -> dict[str, Any]:
        found: dict[str, Any] = {}

        async def reached() -> bool:
            found.update(await self.run(provision_id))
            return found["status"] in statuses

        await wait_until(f"run {provision_id} {statuses}", reached, timeout=timeout, every=0.2)
        return found

    async def finished(self, provision_id: str) -> dict[str, Any]:
        row = await self.until(provision_id, *FINISHED)
        handle = self.client.get_workflow_handle(row["workflow_id"])

        async def closed() -> bool:
            return (await handle.describe()).status != WorkflowExecutionStatus.RUNNING

        await wait_until("the run's workflow closed", closed, timeout=30, every=0.2)
        return await self.run(provision_id)

    async def log(self, provision_id: str) -> str:
        got = await self.api.client.get(
            f"/infrastructure/provisions/{provision_id}/logs", headers=self.admin
        )
        assert got.status_code == 200, got.text
        return got.text

    async def resources(self, env_id: str) -> list[Resource]:
        return await self.api.fetch(
            select(Resource).where(Resource.environment_id == uuid.UUID(env_id))
        )


@pytest.fixture(autouse=True)
def _topology(topology: Topology) -> Iterator[None]:
    policies.install(topology)
    yield


@pytest.fixture
async def infra(
    settings: Settings, topology: Topology, database_url: str, temporal_env: WorkflowEnvironment
) -> AsyncIterator[Infra]:
    configured = settings.model_copy(
        update={"temporal_address": temporal_env.client.service_client.config.target_host}
    )
    async with running_api(configured, topology, database_url) as api:
        client = await connect(api.settings, topology)  # the API's codec
        admin_id, admin = await api.token("admin")
        await retire_runs(client, PROVISIONING_QUEUE)
        found = Infra(api, client, admin, api.settings)
        [found.admin_email] = await api.fetch(select(User.email).where(User.id == admin_id))
        suffix = uuid.uuid4().hex[:8]
        org = await found.created("/organizations", {"name": "Org", "slug": f"org-{suffix}"})
        found.org_id, found.org_slug = org["id"], org["slug"]
        team = await found.created("/teams", {"org_id": org["id"], "name": "Web", "slug": "web"})
        found.team_id = team["id"]
        approvers = await found.created(
            "/teams", {"org_id": org["id"], "name": "SRE", "slug": f"sre-{suffix}"}
        )
        found.approvers, found.approvers_id = approvers["slug"], approvers["id"]
        provider = await found.created(
            "/infrastructure/providers",
            {
                "org_id": org["id"],
                "name": "aws-main",
                "type": "aws",
                "regions": ["eu-west-1"],
                "credentials": {"access_key_id": "AKIAEXAMPLE", "secret_access_key": "s3cr3t-key"},
            },
        )
        found.provider_id = provider["id"]
        try:
            yield found
        finally:
            await retire_runs(client, PROVISIONING_QUEUE)


@asynccontextmanager
async def provisioning_worker(infra: Infra, engine: Engine) -> AsyncIterator[None]:
    settings = infra.settings
    db = create_engine(settings.effective_database_url)
    activities = ProvisioningActivities(
        session_factory(db),
        engine,
        PriceCatalog.load(),
        backend_url=settings.pulumi_backend,
        passphrase=settings.pulumi_passphrase(),
        platform_url=settings.platform_url,
    )
    try:
        async with AsyncExitStack() as stack:
            await stack.enter_async_context(
                Worker(
                    infra.client,
                    task_queue=PROVISIONING_QUEUE,
                    workflows=[ProvisionWorkflow, DestroyWorkflow, PreviewExpiryWorkflow],
                    activities=activities.all(),
                    workflow_runner=sandbox_runner(),
                    max_heartbeat_throttle_interval=HEARTBEAT_THROTTLE,
                )
            )
            yield
    finally:
        await db.dispose()


async def failure_of(client: Client, workflow_id: str) -> ApplicationError:
    """The ApplicationError the run's execution failed with (it must have failed)."""
    handle = client.get_workflow_handle(workflow_id)
    assert (await handle.describe()).status == WorkflowExecutionStatus.FAILED
    with pytest.raises(WorkflowFailureError) as failed:
        await handle.result()
    cause = failed.value.cause
    assert isinstance(cause, ApplicationError), cause
    assert cause.non_retryable
    return cause


async def attributes(client: Client, workflow_id: str) -> dict[str, str | None]:
    found = (await client.get_workflow_handle(workflow_id).describe()).typed_search_attributes
    return {key.name: found.get(key) for key in search_attributes.ALL}


async def test_provision_records_resources_then_destroy_one_and_its_dependents(
    infra: Infra,
) -> None:
    engine = FakeEngine()
    env_id = await infra.environment("development")
    async with provisioning_worker(infra, engine):
        started = await infra.provision(env_id)
        assert started["status"] == "pending" and started["action"] == "up"
        duplicate = await infra.api.client.post(
            "/infrastructure/provision",
            json={
                "environment_id": env_id,
                "provider_id": infra.provider_id,
                "team_id": infra.team_id,
                "cost_centre": "cc-1234",
            },
            headers=infra.admin,
        )
        assert duplicate.status_code in (202, 409), duplicate.text  # 409 while it runs
        done = await infra.finished(started["id"])
        assert done["status"] == "succeeded", done
        assert done["plan"]["changes"] == {"create": 4}
        # the Temporal UI: a completed run, its summary, searchable, each activity summarised
        name = infra.names[env_id]
        handle = infra.client.get_workflow_handle(done["workflow_id"])
        described = await handle.describe()
        assert described.status == WorkflowExecutionStatus.COMPLETED
        assert await described.static_summary() == (
            f"provision {name} of shop (aws, up), requested by Test User"
        )
        assert await attributes(infra.client, done["workflow_id"]) == {
            "IdpOrganization": infra.org_slug,
            "IdpTeam": "web",
            "IdpService": "shop",
            "IdpEnvironment": name,
            "IdpPipeline": None,
            "IdpCommit": None,
            "IdpActor": infra.admin_email,
            "IdpStatus": "succeeded",
        }
        summaries = await activity_summaries(infra.client, handle)
        assert f"preview {name} (aws)" in summaries and f"up {name} (aws)" in summaries
        assert "record provisioning" in summaries and "record succeeded" in summaries
        assert float(done["estimate_monthly"]) == 13.98  # bucket 2.30 + db.t4g.micro 11.68
        assert done["violations"] == [] and done["approval_reason"] is None
        assert done["outputs"]["bucket_name"] == "bucket-1a2b"
        assert done["outputs"]["database_password"] == "[secret]"
        log = await infra.log(started["id"])
        assert "Previewing update" in log and "aws:rds/instance:Instance db created" in log

        rows = {r.name: r for r in await infra.resources(env_id)}
        assert set(rows) == {"net", "bucket", "db", "bucket-block"}
        assert all(r.status == "active" and r.stack == done["stack"] for r in rows.values())
        assert set(rows["db"].tags) == set(TAGS) and rows["db"].region == "eu-west-1"
        assert rows["db"].cost_monthly == Decimal("11.68")  # the catalog's db.t4g.micro
        links = await infra.api.fetch(
            select(ResourceRelationship).where(ResourceRelationship.child_id == rows["db"].id)
        )
        assert [(link.parent_id, link.relationship_type) for link in links] == [
            (rows["net"].id, "depends_on")
        ]
        listed = await infra.api.client.get(
            "/infrastructure/resources",
            params={"environment_id": env_id, "tag": "team=web"},
            headers=infra.admin,
        )
        assert listed.status_code == 200 and len(listed.json()["items"]) == 3  # the block: no tags

        # destroying the network destroys the database that depends on it, nothing else
        gone = await infra.api.client.delete(
            f"/infrastructure/resources/{rows['net'].id}", headers=infra.admin
        )
        assert gone.status_code == 202, gone.text
        destroyed = await infra.finished(gone.json()["id"])
        assert destroyed["status"] == "destroyed", destroyed
        assert destroyed["reason"] == "destroyed: db, net"
        described = await infra.client.get_workflow_handle(destroyed["workflow_id"]).describe()
        assert await described.static_summary() == (
            f"destroy net in {name} of shop (aws, destroy), requested by Test User"
        )
        assert (await attributes(infra.client, destroyed["workflow_id"]))["IdpStatus"] == (
            "destroyed"
        )
        statuses = {r.name: r.status for r in await infra.resources(env_id)}
        assert statuses == {
            "net": "destroyed",
            "db": "destroyed",
            "bucket": "active",
            "bucket-block": "active",
        }
        assert [c.name for c in engine.state[done["stack"].split("/")[1]]] == [
            "bucket",
            "bucket-block",
        ]
        again = await infra.api.client.delete(
            f"/infrastructure/resources/{rows['net'].id}", headers=infra.admin
        )
        assert_error(again, 409)

        # provisioning the environment again (the same workflow id) puts back what is missing
        rerun = await infra.finished((await infra.provision(env_id))["id"])
        assert rerun["status"] == "succeeded" and rerun["workflow_id"] == done["workflow_id"]
        statuses = {r.name: r.status for r in await infra.resources(env_id)}
        assert set(statuses.values()) == {"active"} and len(statuses) == 4
    audited = await infra.api.fetch(
        select(AuditLog.action).where(AuditLog.resource_id.in_([started["id"], gone.json()["id"]]))
    )
    assert {"infrastructure.provision", "infrastructure.destroy"} <= set(audited)


async def test_a_failed_up_is_compensated_and_says_so(infra: Infra) -> None:
    engine = FakeEngine(fail_up_after=2)
    env_id = await infra.environment("staging")
    with WebhookReceiver(secret="hook-signing-secret") as receiver:
        await infra.created(
            "/notifications/channels",
            {
                "type": "webhook",
                "name": f"infra-{uuid.uuid4().hex[:6]}",
                "team_id": infra.team_id,
                "config": {"url": receiver.url},
                "secrets": {"signing_secret": "hook-signing-secret"},
            },
        )
        async with (
            provisioning_worker(infra, engine),
            notifications_worker(infra.client, infra.settings),
        ):
            started = await infra.provision(env_id)
            done = await infra.finished(started["id"])
            await wait_until(
                "the failure notified", lambda: asyncio.sleep(0, bool(receiver.accepted))
            )
    [sent] = [d.json() for d in receiver.accepted]
    assert sent["event"] == "environment.failed"
    assert "compensated: destroyed what the stack had created" in sent["data"]["error"]
    assert done["status"] == "compensated", done
    reason = done["reason"]
    assert "pulumi up failed" in reason and "AccessDenied" in reason
    assert "compensated: destroyed what the stack had created (bucket, net)" in reason
    # the platform failed (the cloud refused): compensated, then the execution FAILED
    failure = await failure_of(infra.client, done["workflow_id"])
    assert failure.type == "ProvisioningFailed"
    assert failure.message == reason  # what the record says, where: environment and provider
    assert f"in {infra.names[env_id]} on aws-main (aws)" in failure.message
    name = infra.names[env_id]
    [found] = await executions(
        infra.client, f'IdpEnvironment = "{name}" AND IdpStatus = "compensated"'
    )
    assert found.id == done["workflow_id"] and found.status == WorkflowExecutionStatus.FAILED
    handle = infra.client.get_workflow_handle(done["workflow_id"])
    summaries = await activity_summaries(infra.client, handle)
    assert f"destroy {name} (aws): compensate the failed up" in summaries
    stack = done["stack"].split("/")[1]
    assert engine.state[stack] == []  # nothing the failed up created remains
    assert engine.calls.count(f"destroy {stack} []") == 1
    assert await infra.resources(env_id) == []  # nothing recorded half-way
    log = await infra.log(started["id"])
    assert "error: creating db" in log and "aws:ec2/vpc:Vpc net deleted" in log


async def test_production_waits_for_approval_and_a_blocking_rule_stops_before_up(
    infra: Infra,
) -> None:
    engine = FakeEngine()
    prod = await infra.environment(
        "production", required_approvals=1, approver_teams=[infra.approvers]
    )
    requester_id, requester = await infra.api.token("maintainer")
    approver_id, approver = await infra.api.token("approver")
    await infra.created(f"/teams/{infra.approvers_id}/members", {"user_id": str(approver_id)})
    outsider_id, outsider = await infra.api.token("approver")
    assert requester_id and outsider_id
    async with provisioning_worker(infra, engine):
        started = await infra.provision(prod, requester)
        waiting = await infra.until(started["id"], "awaiting_approval", "failed", "succeeded")
        assert waiting["status"] == "awaiting_approval", waiting
        assert waiting["approval_reason"] == "production environment"
        assert waiting["live"] and waiting["required_approvals"] == 1
        assert not [c for c in engine.calls if c.startswith("up")]  # nothing changes yet
        # what waits for approval in production: found by its attributes, saying for whom
        [found] = await executions(
            infra.client,
            f'IdpEnvironment = "{infra.names[prod]}" AND IdpStatus = "awaiting_approval"',
        )
        assert found.id == waiting["workflow_id"]
        details = await current_details(infra.client.get_workflow_handle(found.id))
        assert details.startswith(
            f"waiting for 1 more approval from team {infra.approvers}, expires in 1d"
        ), details

        own = await infra.api.client.post(
            f"/infrastructure/provisions/{started['id']}/approve", headers=requester
        )
        assert_error(own, 403)  # a maintainer lacks infrastructure:approve
        other = await infra.api.client.post(
            f"/infrastructure/provisions/{started['id']}/approve", headers=outsider
        )
        assert_error(other, 403)  # not on the approver team
        assert "only approvers" in other.json()["error"]["message"]
        ok = await infra.api.client.post(
            f"/infrastructure/provisions/{started['id']}/approve",
            json={"comment": "go"},
            headers=approver,
        )
        assert ok.status_code == 200, ok.text
        done = await infra.finished(started["id"])
        assert done["status"] == "succeeded", done
        assert [d["decision"] for d in done["decisions"]] == ["approve"]
        # the history (approval Update included) replays on the current code
        history = await infra.client.get_workflow_handle(done["workflow_id"]).fetch_history()
        await Replayer(
            workflows=[ProvisionWorkflow],
            workflow_runner=sandbox_runner(),
            data_converter=infra.client.data_converter,
        ).replay_workflow(history)

        # a second run in another environment is rejected by its approver: nothing changes
        prod2 = await infra.environment(
            "production", required_approvals=1, approver_teams=[infra.approvers]
        )
        second = await infra.provision(prod2, requester)
        await infra.until(second["id"], "awaiting_approval")
        no = await infra.api.client.post(
            f"/infrastructure/provisions/{second['id']}/reject",
            json={"comment": "not this quarter"},
            headers=approver,
        )
        assert no.status_code == 200, no.text
        rejected = await infra.finished(second["id"])
        assert rejected["status"] == "rejected" and "not this quarter" in rejected["reason"]
        assert await infra.resources(prod2) == []
        # a rejection is the people's decision, not a failure of the platform: it completes
        assert (await attributes(infra.client, rejected["workflow_id"]))["IdpStatus"] == "rejected"
        closed = await infra.client.get_workflow_handle(rejected["workflow_id"]).describe()
        assert closed.status == WorkflowExecutionStatus.COMPLETED

        # an untagged bucket breaks a blocking rule: the run ends before approval or up
        engine.untagged = ("bucket",)
        dev = await infra.environment("development")
        blocked = await infra.finished((await infra.provision(dev))["id"])
        assert blocked["status"] == "blocked", blocked
        assert "bucket: required-tags" in blocked["reason"]
        assert {v["rule"] for v in blocked["violations"]} == {"required-tags"}
        assert await infra.resources(dev) == []
    assert sum(c.startswith("up") for c in engine.calls) == 1


async def test_without_the_pulumi_cli_it_fails_at_once_and_records_nothing(
    infra: Infra, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(Path(sys.executable).parent))  # no `pulumi` on it
    monkeypatch.delenv("PULUMI_HOME", raising=False)
    env_id = await infra.environment("development")
    async with provisioning_worker(infra, AutomationEngine()):
        started = await infra.provision(env_id)
        done = await infra.finished(started["id"])
    assert done["status"] == "failed", done
    assert "the Pulumi CLI is not installed" in done["reason"]
    assert "https://www.pulumi.com/docs/install/" in done["reason"]
    assert "nothing was created" in done["reason"]
    assert await infra.resources(env_id) == []
    backend = Path(infra.settings.pulumi_backend.removeprefix("file://"))
    assert not backend.exists()  # no workspace, no state written
    handle = infra.client.get_workflow_handle(done["workflow_id"])
    history = await handle.fetch_history()
    attempts = [
        e.activity_task_started_event_attributes.attempt
        for e in history.events
        if e.HasField("activity_task_started_event_attributes")
    ]
    assert max(attempts) == 1  # not retried
    assert os.environ["PATH"] == str(Path(sys.executable).parent)

    # The platform could not do its job: the execution FAILED (the UI's Failures), typed,
    # naming the missing CLI, the worker's host and the environment.
    name = infra.names[env_id]
    failure = await failure_of(infra.client, done["workflow_id"])
    assert failure.type == "PulumiCliMissing"
    assert failure.message == done["reason"]
    assert failure.message.startswith(f"cannot provision {name} on aws-main (aws): ")
    assert f"the Pulumi CLI is not installed on this worker (host {socket.gethostname()})" in (
        failure.message
    )
    [found] = await executions(infra.client, f'IdpEnvironment = "{name}" AND IdpStatus = "failed"')
    assert found.id == done["workflow_id"] and found.status == WorkflowExecutionStatus.FAILED
    [same] = await executions(
        infra.client,
        f'IdpOrganization = "{infra.org_slug}" AND IdpService = "shop" AND '
        'IdpStatus = "failed" AND ExecutionStatus = "Failed"',
    )
    assert same.id == done["workflow_id"]
    described = await handle.describe()
    assert await described.static_summary() == (
        f"provision {name} of shop (aws, up), requested by Test User"
    )
    assert await activity_summaries(infra.client, handle) == [
        f"read provisioning run {done['id']}",
        f"preview {name} (aws)",
        "record previewing",
        "record failed",
    ]
    # the failed history replays on the current code
    await Replayer(
        workflows=[ProvisionWorkflow],
        workflow_runner=sandbox_runner(),
        data_converter=infra.client.data_converter,
    ).replay_workflow(history)


# Runs recorded by the code from before a platform failure failed the execution (payloads
# encrypted with this fixture-only key): they completed, and still replay to completion.
HISTORIES = PROJECT_ROOT / "tests/fixtures/histories"
HISTORY_KEY = "history-fixture-key-not-a-secret-0123456789"


@pytest.mark.parametrize(
    "fixture", ["provision_cli_missing_before_failing", "provision_compensated_before_failing"]
)
async def test_runs_that_completed_on_a_platform_failure_before_still_replay(
    fixture: str,
) -> None:
    ring = KeyRing.from_settings(Settings(env="test", encryption_key=SecretStr(HISTORY_KEY)))
    history = WorkflowHistory.from_json(fixture, (HISTORIES / f"{fixture}.json").read_text())
    assert history.events[-1].HasField("workflow_execution_completed_event_attributes")
    replayer = Replayer(
        workflows=[ProvisionWorkflow],
        workflow_runner=sandbox_runner(),
        data_converter=data_converter(EncryptionCodec(ring)),
    )
    await replayer.replay_workflow(history)


async def test_a_preview_environment_is_destroyed_when_its_time_to_live_ends(
    infra: Infra,
) -> None:
    engine = FakeEngine()
    env_id = await infra.environment("preview")
    async with provisioning_worker(infra, engine):
        refused = await infra.api.client.post(
            "/infrastructure/provision",
            json={
                "environment_id": await infra.environment("development"),
                "provider_id": infra.provider_id,
                "team_id": infra.team_id,
                "cost_centre": "cc-1234",
                "ttl": "1h",
            },
            headers=infra.admin,
        )
        assert_error(refused, 422)  # only preview environments have one
        started = await infra.provision(env_id, ttl="3s")
        done = await infra.finished(started["id"])
        assert done["status"] == "succeeded" and done["destroy_at"], done
        first = done["destroy_at"]
        extended = await infra.api.client.post(
            f"/infrastructure/provisions/{started['id']}/extend",
            json={"by": "2s"},
            headers=infra.admin,
        )
        assert extended.status_code == 200, extended.text
        assert extended.json()["destroy_at"] > first

        async def destroyed() -> bool:
            rows = await infra.resources(env_id)
            return bool(rows) and all(r.status == "destroyed" for r in rows)

        await wait_until("the preview environment destroyed", destroyed, timeout=30)
        listed = await infra.api.client.get(
            "/infrastructure/provisions",
            params={"environment_id": env_id},
            headers=infra.admin,
        )
        runs = listed.json()["items"]
        assert [r["action"] for r in runs] == ["destroy", "up"]
        destroy = await infra.finished(runs[0]["id"])
        # the time to live and the destroy it started carry the environment's attributes
        name = infra.names[env_id]
        by_ttl = await attributes(infra.client, destroy["workflow_id"])
        assert (by_ttl["IdpEnvironment"], by_ttl["IdpService"]) == (name, "shop")
        assert by_ttl["IdpStatus"] == "destroyed"
        described = await infra.client.get_workflow_handle(destroy["workflow_id"]).describe()
        assert await described.static_summary() == (
            f"destroy {name} (aws, destroy): its time to live ended"
        )
        ttl_run = infra.client.get_workflow_handle(f"preview-expiry-{env_id}")

        async def expiry_done() -> bool:
            return (await ttl_run.describe()).status == WorkflowExecutionStatus.COMPLETED

        await wait_until("the time to live completed", expiry_done, timeout=15, every=0.2)
        assert (await attributes(infra.client, ttl_run.id))["IdpStatus"] == "destroyed"

        # destroying a preview environment's stack by hand ends its time to live too
        other = await infra.environment("preview")
        kept = await infra.finished((await infra.provision(other, ttl="1h"))["id"])
        assert kept["status"] == "succeeded", kept
        [bucket] = [r for r in await infra.resources(other) if r.name == "bucket"]
        gone = await infra.api.client.delete(
            f"/infrastructure/resources/{bucket.id}",
            params={"scope": "stack"},
            headers=infra.admin,
        )
        assert gone.status_code == 202, gone.text
        assert (await infra.finished(gone.json()["id"]))["status"] == "destroyed"
        expiry = infra.client.get_workflow_handle(f"preview-expiry-{other}")

        async def ended() -> bool:
            status = (await expiry.describe()).status
            return status == WorkflowExecutionStatus.CANCELED

        await wait_until("the time to live ended", ended, timeout=15, every=0.2)
        assert {r.status for r in await infra.resources(other)} == {"destroyed"}
        found = await attributes(infra.client, expiry.id)
        assert (found["IdpEnvironment"], found["IdpStatus"]) == (infra.names[other], "cancelled")
    assert destroy["status"] == "destroyed", destroy
    assert "time to live ended" in destroy["reason"]


async def test_a_production_run_is_approved_with_a_slack_button_and_the_message_says_so(
    infra: Infra, settings: Settings, topology: Topology, database_url: str
) -> None:
    engine = FakeEngine()
    with SlackApiStandin(tokens={BOT_TOKEN}, channels={SLACK_CHANNEL: "infra"}) as slack:
        configured = stack_settings(infra.settings, infra.client, slack)
        async with running_api(configured, topology, database_url) as api:
            infra.api = api
            await infra.created(
                "/notifications/channels",
                {
                    "type": "slack",
                    "name": f"infra-{uuid.uuid4().hex[:6]}",
                    "team_id": infra.team_id,
                    "config": {"channel": SLACK_CHANNEL},
                    "secrets": {"bot_token": BOT_TOKEN},
                },
            )
            prod = await infra.environment(
                "production", required_approvals=1, approver_teams=[infra.approvers]
            )
            bob_id, bob = await api.user("approver")
            await infra.created(f"/teams/{infra.approvers_id}/members", {"user_id": str(bob_id)})
            slack.users["U0BOB"] = bob
            async with (
                provisioning_worker(infra, engine),
                notifications_worker(infra.client, configured, slack_api_url=slack.base_url),
            ):
                started = await infra.provision(prod)
                await infra.until(started["id"], "awaiting_approval")

                async def delivered() -> bool:
                    rows = await api.fetch(
                        select(Notification.remote_id).where(
                            Notification.reference == f"provision:{started['id']}",
                            Notification.status == "delivered",
                        )
                    )
                    return bool(rows)

                await wait_until("the approval request delivered", delivered, timeout=20)
                [posted] = [r for r in slack.calls("chat.postMessage") if r.ok]
                assert "Approval needed: provision environment" in (posted.text or "")
                body = slack_interaction(
                    "approve",
                    started["id"],
                    "U0BOB",
                    message_ts=posted.ts,
                    response_url=slack.response_url(uuid.uuid4().hex),
                    kind="provision",
                )
                pressed = await api.client.post(
                    "/integrations/slack/interactions", content=body, headers=slack_headers(body)
                )
                assert pressed.status_code == 200, pressed.text
                done = await infra.finished(started["id"])
                assert done["status"] == "succeeded", done
                assert [(d["name"], d["via"]) for d in done["decisions"]] == [
                    ("Test User", "slack")
                ]

                async def updated() -> bool:
                    return any(
                        "approved by Test User (Slack)" in str(r.blocks)
                        for r in slack.calls("chat.update")
                        if r.ok
                    )

                await wait_until("the Slack message shows the decision", updated, timeout=20)
    [last] = [r for r in slack.calls("chat.update") if r.ok][-1:]
    assert "provision.approve" not in str(last.blocks)  # the buttons are gone
