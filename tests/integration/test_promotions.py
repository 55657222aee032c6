"""Promotions end to end on a real Temporal server, the real database and real processes on
this host (the `local` target), with Slack's Web API as a stand-in: policy checks, approvals
through the API and signed Slack button presses, deploys, verification and roll backs."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import select, update
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowExecutionStatus, WorkflowFailureError, WorkflowHistory
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.worker import Replayer

from core.environments.policy import ProtectionPolicy
from core.models.audit import AuditLog
from core.models.environments import Environment
from core.models.notifications import Notification
from core.models.promotions import ServiceDeployment
from core.security.encryption import KeyRing
from core.settings import PROJECT_ROOT, Settings
from core.temporal import policies
from core.temporal.codec import EncryptionCodec
from core.temporal.converter import data_converter
from core.topology import Topology
from tests.helpers import free_port, wait_until
from tests.integration.identity_helpers import assert_error, running_api
from tests.integration.promotion_helpers import (
    SLACK_CHANNEL,
    PromotionStack,
    World,
    activity_summaries,
    current_details,
    indexed,
    listed,
    promotion_workers,
    slack_headers,
    slack_interaction,
)
from workers.runner import sandbox_runner
from workflows.promotion import PromotionWorkflow


@pytest.fixture
def stack(promotions: PromotionStack) -> PromotionStack:
    return promotions


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


async def _slack_ts(stack: PromotionStack, promotion_id: str) -> str:
    """The ts of the promotion's approval request in Slack, once it is posted."""
    found: list[str] = []

    async def posted() -> bool:
        found[:] = [
            r.ts
            for r in stack.slack.calls("chat.postMessage")
            if r.ok
            and r.ts
            and "Approval needed" in (r.text or "")
            and promotion_id in str(r.blocks)
        ]
        return bool(found)

    await wait_until("the approval request posted to Slack", posted, timeout=15)

    async def recorded() -> bool:  # the delivery is stored after Slack answers the post
        rows = await stack.api.fetch(
            select(Notification.id).where(
                Notification.reference == f"promotion:{promotion_id}",
                Notification.remote_id == found[-1],
                Notification.status == "delivered",
            )
        )
        return bool(rows)

    await wait_until("the approval request's delivery recorded", recorded, timeout=15)
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

        # a decision taken through the API updates the Slack message too
        async def shows_alice() -> bool:
            return any(
                "Approved so far" in str(r.blocks) and "Test User (API)" in str(r.blocks)
                for r in stack.slack.calls("chat.update")
            )

        await wait_until("the Slack message shows the API approval", shows_alice, timeout=15)

        # the second approval: Bob presses Approve in Slack (mapped by users.info's email)
        pressed = await stack.slack_press("approve", pid, "U0BOB", await _slack_ts(stack, pid))
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
        message = stack.slack.messages[(SLACK_CHANNEL, await _slack_ts(stack, pid))]
        shown = str(message.blocks)
        assert "Promotion approved" in (message.text or "")
        assert "Test User (API)" in shown and "Test User (Slack)" in shown

        # the secret is in no workflow history (the client decodes payloads), which replays
        history = await stack.client.get_workflow_handle(done["workflow_id"]).fetch_history()
        assert "s3cr3t-prod" not in str(history.to_json())
        replayer = Replayer(
            workflows=[PromotionWorkflow],
            workflow_runner=sandbox_runner(),
            data_converter=stack.client.data_converter,
        )
        await replayer.replay_workflow(history)

    audit = await stack.api.fetch(
        select(AuditLog).where(AuditLog.resource_id == pid).order_by(AuditLog.occurred_at)
    )
    actions = [(a.action, a.actor_label) for a in audit]
    assert ("promotion.approve", alice.email) in actions
    assert ("promotion.approve", f"{bob.email} (Slack)") in actions


async def _notified(stack: PromotionStack, promotion_id: str, event: str) -> None:
    async def sent() -> bool:
        rows = await stack.api.fetch(
            select(Notification).where(
                Notification.reference == f"promotion:{promotion_id}",
                Notification.event == event,
                Notification.status == "delivered",
            )
        )
        return bool(rows)

    await wait_until(f"{event} delivered", sent, timeout=15)


async def test_rejection_expiry_cancel_and_refused_slack_presses(stack: PromotionStack) -> None:
    world = await stack.world(prod_policy={"approval_timeout": "4s", "reminder_interval": "1s"})
    approver = await stack.person("approver", teams=(world.approvers_team,))
    stranger = await stack.person("viewer")
    stack.slack.users["U0STRANGER"] = stranger.email
    await stack.version(world, "2.0.0")
    async with promotion_workers(stack):
        await stack.promoted(world, "dev", "2.0.0")

        # prod: one rejection ends it, with the reviewer's comment
        await stack.promoted(world, "staging", "2.0.0")
        first = (await stack.deploy(world, "prod", "2.0.0"))["id"]
        await stack.until(first, "awaiting_approval")
        no_comment = await stack.post(f"/promotions/{first}/reject", {}, approver.headers)
        assert_error(no_comment, 422)
        rejected = await stack.post(
            f"/promotions/{first}/reject", {"comment": "not this week"}, approver.headers
        )
        assert rejected.status_code == 200, rejected.text
        done = await stack.finished(first)
        assert done["status"] == "rejected" and "not this week" in done["reason"], done
        await _notified(stack, first, "promotion.rejected")

        # a Slack user who is not an approver: told so, alone, and nothing changes
        second = (await stack.deploy(world, "prod", "2.0.0"))["id"]
        await stack.until(second, "awaiting_approval")
        ts = await _slack_ts(stack, second)
        refused = await stack.slack_press("approve", second, "U0STRANGER", ts)
        assert refused.status_code == 200
        [answer] = stack.slack.responses
        assert answer["response_type"] == "ephemeral" and "promotions:approve" in answer["text"]
        unlinked = await stack.slack_press("approve", second, "U0NOBODY", ts)
        assert unlinked.status_code == 200 and "not linked" in stack.slack.responses[-1]["text"]
        # forged, replayed and unsigned presses are 401 and change nothing
        body = slack_interaction(
            "approve", second, "U0STRANGER", message_ts=ts, response_url="http://x"
        )
        for headers in (
            slack_headers(body, secret="wrong-secret"),
            slack_headers(body, at=time.time() - 600),
            {"Content-Type": "application/x-www-form-urlencoded"},
        ):
            forged = await stack.api.client.post(
                "/integrations/slack/interactions", content=body, headers=headers
            )
            assert_error(forged, 401, "invalid_signature")
        tampered = slack_headers(body)
        forged = await stack.api.client.post(
            "/integrations/slack/interactions", content=body + b"x", headers=tampered
        )
        assert_error(forged, 401, "invalid_signature")
        # ... and expiry: nobody approved within 4s
        expired = await stack.finished(second)
        assert expired["status"] == "expired" and expired["decisions"] == [], expired
        assert "0 of 2 approvals" in expired["reason"]
        await _notified(stack, second, "promotion.expired")
        requests = await stack.api.fetch(
            select(Notification).where(
                Notification.reference == f"promotion:{second}",
                Notification.event == "promotion.awaiting_approval",
            )
        )
        assert any("Reminder" in str(n.context.get("comment")) for n in requests)  # after 1s

        # cancel while waiting; a second cancel is refused
        third = (await stack.deploy(world, "prod", "2.0.0"))["id"]
        await stack.until(third, "awaiting_approval")
        cancelled = await stack.post(f"/promotions/{third}/cancel", {"reason": "wrong version"})
        assert cancelled.status_code == 200, cancelled.text
        done = await stack.finished(third)
        assert done["status"] == "cancelled" and "wrong version" in done["reason"]
        again = await stack.post(f"/promotions/{third}/cancel", {})
        assert_error(again, 409)
        late = await stack.post(f"/promotions/{third}/approve", {}, approver.headers)
        assert_error(late, 409)

    listed = await stack.api.client.get(
        "/promotions",
        params={"environment_id": world.envs["prod"]["id"], "status": "expired"},
        headers=stack.admin,
    )
    assert [p["id"] for p in listed.json()["items"]] == [second]
    nothing = await stack.api.fetch(
        select(ServiceDeployment).where(
            ServiceDeployment.environment_id == uuid.UUID(world.envs["prod"]["id"])
        )
    )
    assert nothing == []  # no promotion to prod deployed anything


async def test_failed_health_check_and_verification_roll_back(stack: PromotionStack) -> None:
    world = await stack.world(dev_policy={"verification_window": "3s"})
    dev = world.envs["dev"]["id"]
    for version, mode in (("3.0.0", "ok"), ("3.1.0", "fail"), ("3.2.0", "degrade")):
        await stack.version(world, version, mode)
    async with promotion_workers(stack):
        await stack.promoted(world, "dev", "3.0.0")
        assert (await _served(stack, world, "dev")).startswith("3.0.0")

        # 3.1.0 exits at once: never healthy, 3.0.0 keeps serving
        failed = await stack.finished((await stack.deploy(world, "dev", "3.1.0"))["id"])
        assert failed["status"] == "rolled_back" and "exited" in failed["reason"], failed
        assert (await _served(stack, world, "dev")).startswith("3.0.0")

        # 3.2.0 is healthy at first, then fails verification: 3.0.0 is put back
        degraded = await stack.finished((await stack.deploy(world, "dev", "3.2.0"))["id"])
        assert degraded["status"] == "rolled_back", degraded
        assert "3.0.0 runs again" in degraded["reason"]
        # the user's version failed, not the platform: the workflow completed, rolled_back
        wid = degraded["workflow_id"]
        described = await stack.client.get_workflow_handle(wid).describe()
        assert described.status == WorkflowExecutionStatus.COMPLETED
        assert (await indexed(stack.client, wid))["IdpStatus"] == "rolled_back"
        summaries = await activity_summaries(stack.client, wid)
        dev_name = world.envs["dev"]["name"]
        assert f"deploy 3.2.0 to {dev_name}" in summaries and "roll back to 3.0.0" in summaries
        assert (await _served(stack, world, "dev")).startswith("3.0.0")
        await _notified(stack, degraded["id"], "promotion.rolled_back")

        # the deployment records say what happened
        rows = await stack.api.fetch(
            select(ServiceDeployment)
            .where(ServiceDeployment.environment_id == uuid.UUID(dev))
            .order_by(ServiceDeployment.created_at)
        )
        assert [(r.version, r.status) for r in rows] == [
            ("3.0.0", "superseded"),
            ("3.1.0", "failed"),
            ("3.2.0", "rolled_back"),
            ("3.0.0", "healthy"),
        ]

        # an explicit roll back needs a version that ran there before
        nothing_before = await stack.post(
            f"/environments/{dev}/rollback", {"service_id": world.service_id, "version": "9.9.9"}
        )
        assert_error(nothing_before, 422)


async def test_soak_time_and_freeze_window_wait_then_proceed(stack: PromotionStack) -> None:
    # the soak is longer than the dev promotion's verification window plus polling, even on a
    # loaded machine, so the staging request always arrives while it is still soaking
    world = await stack.world(
        staging_policy={"soak_time": "6s"},
        prod_policy={"required_approvals": 0},
    )
    await stack.version(world, "4.0.0")
    await stack.version(world, "4.1.0")
    async with promotion_workers(stack):
        await stack.promoted(world, "dev", "4.0.0")
        # staging: 4.0.0 has not soaked 6s in dev yet; it waits (a durable timer), then goes
        soaking = (await stack.deploy(world, "staging", "4.0.0"))["id"]
        waiting = await stack.until(soaking, "waiting", "succeeded", "refused", "failed")
        assert waiting["status"] == "waiting", waiting
        assert "soak time" in waiting["waiting_on"] and waiting["wait_until"]
        assert (await stack.finished(soaking))["status"] == "succeeded"

        # prod: inside a freeze window (set just before the request), it waits for its end
        now = datetime.now(UTC)
        freeze = {
            "starts_at": (now - timedelta(minutes=1)).isoformat(),
            "ends_at": (now + timedelta(seconds=5)).isoformat(),
            "reason": "release freeze",
        }
        frozen_policy = ProtectionPolicy.model_validate(
            {**world.envs["prod"]["policy"], "freeze_windows": [freeze]}
        )
        await stack.api.run_sql(
            update(Environment)
            .where(Environment.id == uuid.UUID(world.envs["prod"]["id"]))
            .values(policy=frozen_policy.model_dump(mode="json"))
        )
        frozen = (await stack.deploy(world, "prod", "4.0.0"))["id"]
        waiting = await stack.until(frozen, "waiting", "succeeded", "refused", "failed")
        assert waiting["status"] == "waiting", waiting
        assert "release freeze" in waiting["waiting_on"]
        done = await stack.finished(frozen)
        assert done["status"] == "succeeded"
        assert datetime.fromisoformat(done["finished_at"]) >= datetime.fromisoformat(
            freeze["ends_at"]
        )

        # a second version, then an explicit roll back to the one before
        await stack.promoted(world, "dev", "4.1.0")
        assert (await _served(stack, world, "dev")).startswith("4.1.0")
        dev = world.envs["dev"]["id"]
        back = await stack.post(f"/environments/{dev}/rollback", {"service_id": world.service_id})
        assert back.status_code == 202, back.text
        assert back.json()["kind"] == "rollback" and back.json()["version"] == "4.0.0"
        assert (await stack.finished(back.json()["id"]))["status"] == "succeeded"
        assert (await _served(stack, world, "dev")).startswith("4.0.0")

        resources = await stack.api.client.get(
            f"/environments/{dev}/resources", headers=stack.admin
        )
        assert resources.status_code == 200, resources.text
        [running] = resources.json()["deployments"]
        assert running["version"] == "4.0.0" and running["usage"]["rss_bytes"] > 0


async def test_a_request_while_temporal_is_down_is_503_and_recorded_failed(
    stack: PromotionStack, topology: Topology, database_url: str
) -> None:
    world = await stack.world()
    await stack.version(world, "5.0.0")
    dev = world.envs["dev"]["id"]
    body = {"service_id": world.service_id, "version": "5.0.0"}
    down = stack.settings.model_copy(update={"temporal_address": f"127.0.0.1:{free_port()}"})
    async with running_api(down, topology, database_url) as api_down:
        refused = await api_down.client.post(
            f"/environments/{dev}/deploy", json=body, headers=stack.admin
        )
        assert_error(refused, 503, "unavailable")
    listed = await stack.api.client.get(
        "/promotions", params={"environment_id": dev}, headers=stack.admin
    )
    [kept] = listed.json()["items"]
    assert kept["status"] == "failed" and "Temporal" in kept["reason"], kept
    async with promotion_workers(stack):  # with Temporal back, a new request goes through
        await stack.promoted(world, "dev", "5.0.0")


async def test_a_branch_the_policy_does_not_allow_is_refused(stack: PromotionStack) -> None:
    world = await stack.world(dev_policy={"allowed_branches": ["release/*"]})
    run_id = await stack.build(world, "main")  # built from main, as its pipeline run says
    await stack.version(world, "6.0.0", built_by=run_id)
    async with promotion_workers(stack):
        refused = await stack.finished((await stack.deploy(world, "dev", "6.0.0"))["id"])
        assert refused["status"] == "refused", refused
        assert refused["branch"] == "main" and refused["pipeline_run_id"] == run_id, refused
        assert refused["provenance"].startswith(f"main (from pipeline run {run_id}: ci-")
        assert refused["reason"] == (
            f"branch {refused['provenance']} may not go to {world.envs['dev']['name']} "
            "(allowed: release/*)"
        )
        await _notified(stack, refused["id"], "promotion.failed")
    assert (
        await stack.api.fetch(
            select(ServiceDeployment).where(
                ServiceDeployment.environment_id == uuid.UUID(world.envs["dev"]["id"])
            )
        )
        == []
    )


async def test_the_temporal_ui_labels_filters_and_explains_a_promotion(
    stack: PromotionStack,
) -> None:
    world = await stack.world(prod_policy={"approval_timeout": "3h"})
    staging, prod = world.envs["staging"]["name"], world.envs["prod"]["name"]
    [approvers] = world.envs["prod"]["policy"]["approver_teams"]
    requester = await stack.person("developer")
    alice = await stack.person("approver", teams=(world.approvers_team,))
    bob = await stack.person("approver", teams=(world.approvers_team,))
    run_id = await stack.build(world, "main")
    await stack.version(world, "7.0.0", built_by=run_id)
    client = stack.client
    async with promotion_workers(stack):
        await stack.promoted(world, "dev", "7.0.0")
        done = await stack.promoted(world, "staging", "7.0.0")
        # a finished promotion: completed, its outcome indexed, every activity summarised
        assert (await indexed(client, done["workflow_id"]))["IdpStatus"] == "succeeded"
        summaries = await activity_summaries(client, done["workflow_id"])
        assert None not in summaries, summaries
        assert {
            "read the promotion and its policy",
            f"check {staging}'s policy",
            f"deploy 7.0.0 to {staging}",
            f"verify {world.service} in {staging}",
            "record succeeded",
        } <= set(summaries), summaries

        # waiting for approval in production: filterable, labelled, and saying for whom
        pid = (await stack.deploy(world, "prod", "7.0.0", requester.headers))["id"]
        row = await stack.until(pid, "awaiting_approval")
        wid, sha = row["workflow_id"], row["git_sha"]
        assert sha and len(sha) == 40
        assert await indexed(client, wid) == {
            "IdpOrganization": world.org_slug,
            "IdpTeam": world.owner_slug,
            "IdpService": world.service,
            "IdpEnvironment": prod,
            "IdpCommit": sha,
            "IdpActor": requester.email,
            "IdpStatus": "awaiting_approval",
        }
        details = await current_details(client, wid)
        assert details.startswith(
            f"waiting for 2 more approvals from team {approvers}, expires in 3h (at "
        ), details
        described = await client.get_workflow_handle(wid).describe()
        assert await described.static_summary() == (
            f"promote {world.service} 7.0.0 to {prod}, requested by Test User"
        )
        static = await described.static_details() or ""
        assert f"- commit: {sha}" in static and f"- source run: {run_id}" in static, static
        assert "- approvals required: 2" in static and requester.email in static
        await listed(
            client, f'IdpService = "{world.service}" AND IdpStatus = "awaiting_approval"', wid
        )
        await listed(client, f'IdpEnvironment = "{prod}" AND IdpStatus = "awaiting_approval"', wid)
        await listed(client, f'IdpCommit = "{sha}"', wid)  # everything of one commit

        # one approval: the details say who is still missing
        approved = await stack.post(f"/promotions/{pid}/approve", {}, alice.headers)
        assert approved.status_code == 200, approved.text
        waiting: list[str] = []

        async def one_missing() -> bool:
            waiting[:] = [await current_details(client, wid)]
            return waiting[0].startswith(f"waiting for 1 more approval from team {approvers}")

        await wait_until("the details show one approval missing", one_missing, timeout=15)
        assert "(approved by Test User (API))" in waiting[0], waiting

        # a rejection is the user's outcome: completed, indexed rejected
        rejected = await stack.post(
            f"/promotions/{pid}/reject", {"comment": "not today"}, bob.headers
        )
        assert rejected.status_code == 200, rejected.text
        assert (await stack.finished(pid))["status"] == "rejected"
        described = await client.get_workflow_handle(wid).describe()
        assert described.status == WorkflowExecutionStatus.COMPLETED
        assert (await indexed(client, wid))["IdpStatus"] == "rejected"
        summaries = await activity_summaries(client, wid)
        assert summaries.count("check approver Test User") == 2, summaries
        await listed(
            client,
            f'IdpService = "{world.service}" AND IdpStatus = "rejected" '
            'AND ExecutionStatus = "Completed"',
            wid,
        )


async def test_a_deploy_target_that_fails_fails_the_workflow_with_what_and_where(
    stack: PromotionStack, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # no kubeconfig: the Kubernetes target cannot reach an API server, attempt after attempt
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-kubeconfig"))
    world = await stack.world(chain=("dev",))
    contexts = await stack.api.client.put(
        f"/organizations/{world.org_id}/kubernetes-contexts",
        json={"contexts": ["test-cluster"]},
        headers=stack.admin,
    )
    assert contexts.status_code == 200, contexts.text
    env = await stack.created(
        "/environments",
        {
            "org_id": world.org_id,
            "name": f"k8s-{uuid.uuid4().hex[:6]}",
            "type": "development",
            "target": "kubernetes",
            "cluster_id": "test-cluster",
            "policy": {"verification_window": "1s"},
        },
    )
    world.envs["k8s"] = env
    await stack.created(
        f"/services/{world.service_id}/versions",
        {"version": "8.0.0", "config": {"image": "registry.invalid/shop:8.0.0"}},
    )
    where = f"kubernetes, context test-cluster, namespace {env['namespace']}"
    client = stack.client
    async with promotion_workers(stack):
        row = await stack.finished((await stack.deploy(world, "k8s", "8.0.0"))["id"], timeout=120)
        assert row["status"] == "failed", row
        assert "no Kubernetes API server configured" in row["reason"], row
        handle = client.get_workflow_handle(row["workflow_id"])
        with pytest.raises(WorkflowFailureError) as failed:
            await handle.result()
        failure = failed.value.cause
        assert isinstance(failure, ApplicationError) and failure.type == "DeployFailed"
        assert failure.non_retryable
        assert failure.message.startswith(
            f"deploying {world.service} 8.0.0 to {env['name']} failed on its target ({where}): "
        ), failure.message
        assert "no Kubernetes API server configured" in failure.message
        assert isinstance(failure.cause, ActivityError)  # the activity's own error, chained
        assert (await handle.describe()).status == WorkflowExecutionStatus.FAILED
        assert (await indexed(client, row["workflow_id"]))["IdpStatus"] == "failed"
        await listed(
            client,
            f'IdpService = "{world.service}" AND IdpStatus = "failed" '
            'AND ExecutionStatus = "Failed"',
            row["workflow_id"],
        )
        # each attempt's deployment record ended failed (none left `deploying`)
        attempts = await stack.api.fetch(
            select(ServiceDeployment).where(
                ServiceDeployment.environment_id == uuid.UUID(env["id"])
            )
        )
        assert len(attempts) > 1 and {a.status for a in attempts} == {"failed"}, attempts

        # the context taken off the organization's allow-list: a misconfiguration, at once
        await stack.api.run_sql(
            update(Environment)
            .where(Environment.id == uuid.UUID(env["id"]))
            .values(cluster_id="removed-cluster")
        )
        refused = await stack.finished((await stack.deploy(world, "k8s", "8.0.0"))["id"])
        assert refused["status"] == "failed" and "allow-list" in refused["reason"], refused
        with pytest.raises(WorkflowFailureError) as failed:
            await client.get_workflow_handle(refused["workflow_id"]).result()
        failure = failed.value.cause
        assert isinstance(failure, ApplicationError) and failure.type == "DeployFailed"
        assert isinstance(failure.cause, ActivityError)
        activity_failure = failure.cause.cause
        assert isinstance(activity_failure, ApplicationError)
        assert activity_failure.type == "DeployContextRefused"


# A deploy its target refused (the cluster context off the allow-list), recorded by the code
# from before a platform failure failed the workflow (payloads encrypted with this fixture-only
# key): it completed then, and replays so (no `promotion-platform-failure-fails` marker).
HISTORY = (
    PROJECT_ROOT
    / "tests/fixtures/histories/promotion_deploy_failed_before_platform_failures_failed.json"
)
HISTORY_KEY = "history-fixture-key-not-a-secret-0123456789"


async def test_a_promotion_whose_deploy_failed_before_the_rule_still_replays(
    topology: Topology,
) -> None:
    policies.install(topology)
    history = WorkflowHistory.from_json("promotion-deploy-failed", HISTORY.read_text())
    kinds = [e.event_type for e in history.events]
    assert EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED in kinds
    assert kinds[-1] == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED
    ring = KeyRing.from_settings(Settings(env="test", encryption_key=SecretStr(HISTORY_KEY)))
    replayer = Replayer(
        workflows=[PromotionWorkflow],
        workflow_runner=sandbox_runner(),
        data_converter=data_converter(EncryptionCodec(ring)),
    )
    await replayer.replay_workflow(history)
