"""Promotions end to end on a real Temporal server, the real database and real processes on
this host (the `local` target), with Slack's Web API as a stand-in: policy checks, approvals
through the API and signed Slack button presses, deploys, verification and roll backs."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select
from temporalio.testing import WorkflowEnvironment

from core.models.audit import AuditLog
from core.models.promotions import ServiceDeployment
from core.settings import Settings
from core.temporal import policies
from core.topology import Topology
from tests.helpers import wait_until
from tests.integration.identity_helpers import assert_error
from tests.integration.promotion_helpers import (
    SLACK_CHANNEL,
    PromotionStack,
    World,
    promotion_stack,
    promotion_workers,
)


@pytest.fixture(autouse=True)
def _topology(topology: Topology) -> Iterator[None]:
    policies.install(topology)
    yield


@pytest.fixture
async def stack(
    settings: Settings,
    topology: Topology,
    database_url: str,
    temporal_env: WorkflowEnvironment,
    tmp_path: Path,
) -> AsyncIterator[PromotionStack]:
    async with promotion_stack(
        settings, topology, database_url, temporal_env.client, tmp_path
    ) as running:
        yield running


async def _served(stack: PromotionStack, world: World, env: str) -> str:
    """What the service answers in `env` now (its version and configuration)."""
    rows = await stack.api.fetch(
        select(ServiceDeployment).where(
            ServiceDeployment.environment_id == uuid.UUID(world.envs[env]["id"]),
            ServiceDeployment.status == "healthy",
        )
    )
    assert len(rows) == 1, rows
    async with httpx.AsyncClient() as http:
        return (await http.get(rows[0].details["url"] + "/")).text


async def _slack_ts(stack: PromotionStack) -> str:
    """The ts of the (last) approval request posted to Slack, once it is."""
    found: list[str] = []

    async def posted() -> bool:
        found[:] = [
            r.ts
            for r in stack.slack.calls("chat.postMessage")
            if r.ok and r.ts and "Approval needed" in (r.text or "")
        ]
        return bool(found)

    await wait_until("the approval request posted to Slack", posted, timeout=15)
    return found[-1]


async def test_dev_staging_production_with_api_and_slack_approvals(
    stack: PromotionStack,
) -> None:
    world = await stack.world()
    prod = world.envs["prod"]["id"]
    requester = await stack.person("developer", "approver", teams=(world.approvers_team,))
    alice = await stack.person("approver", teams=(world.approvers_team,))
    bob = await stack.person("approver", teams=(world.approvers_team,))
    outsider = await stack.person("approver")  # may approve somewhere, but not on this team
    stack.slack.users["U0BOB"] = bob.email
    entries = [
        {"key": "GREETING", "value": "hello"},
        {"key": "API_TOKEN", "value": "s3cr3t-prod", "is_secret": True},
    ]
    put = await stack.api.client.put(
        f"/environments/{prod}/config", json={"entries": entries}, headers=stack.admin
    )
    assert put.status_code == 200, put.text
    await stack.version(world, "1.0.0")

    async with promotion_workers(stack):
        # production before staging: refused by the policy, nothing deployed
        early = await stack.finished(
            (await stack.deploy(world, "prod", "1.0.0", requester.headers))["id"]
        )
        assert early["status"] == "refused" and "staging" in early["reason"], early

        await stack.promoted(world, "dev", "1.0.0")
        await stack.promoted(world, "staging", "1.0.0")
        started = await stack.deploy(world, "prod", "1.0.0", requester.headers)
        pid = started["id"]
        waiting = await stack.until(pid, "awaiting_approval")
        assert waiting["required_approvals"] == 2 and waiting["approvals"] == 0
        assert waiting["live"] and "2 more approval(s)" in waiting["waiting_on"]
        assert 0 < waiting["seconds_left"] <= 86_400

        # the requester may not approve their own promotion; an outsider is not an approver
        own = await stack.post(f"/promotions/{pid}/approve", {}, requester.headers)
        assert "someone else" in assert_error(own, 403)["message"]
        other = await stack.post(f"/promotions/{pid}/approve", {}, outsider.headers)
        assert "only approvers" in assert_error(other, 403)["message"]

        first = await stack.post(f"/promotions/{pid}/approve", {"comment": "lgtm"}, alice.headers)
        assert first.status_code == 200, first.text
        assert first.json()["approvals"] == 1 and first.json()["status"] == "awaiting_approval"
        again = await stack.post(f"/promotions/{pid}/approve", {}, alice.headers)
        assert "already decided" in assert_error(again, 409)["message"]

        # the second approval: Bob presses Approve in Slack (mapped by users.info's email)
        pressed = await stack.slack_press("approve", pid, "U0BOB", await _slack_ts(stack))
        assert pressed.status_code == 200, pressed.text
        assert stack.slack.responses == []  # no ephemeral refusal
        done = await stack.finished(pid)
        assert done["status"] == "succeeded", done
        assert [(d["decision"], d["via"]) for d in done["decisions"]] == [
            ("approve", "api"),
            ("approve", "slack"),
        ]
        served = await _served(stack, world, "prod")
        assert served == "1.0.0 hello s3cr3t-prod"  # configuration and secret injected

        # the Slack message was updated in place and names both approvers
        async def updated() -> bool:
            return any(
                "Promotion approved" in (r.text or "") for r in stack.slack.calls("chat.update")
            )

        await wait_until("Slack message updated", updated, timeout=15)
        message = stack.slack.messages[(SLACK_CHANNEL, await _slack_ts(stack))]
        shown = str(message.blocks)
        assert "Promotion approved" in (message.text or "")
        assert "Test User (API)" in shown and "Test User (Slack)" in shown

        # the secret is in no workflow history (the client decodes payloads)
        history = await stack.client.get_workflow_handle(done["workflow_id"]).fetch_history()
        assert "s3cr3t-prod" not in str(history.to_json())

    audit = await stack.api.fetch(
        select(AuditLog).where(AuditLog.resource_id == pid).order_by(AuditLog.occurred_at)
    )
    actions = [(a.action, a.actor_label) for a in audit]
    assert ("promotion.approve", alice.email) in actions
    assert ("promotion.approve", f"{bob.email} (Slack)") in actions
