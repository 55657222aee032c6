"""Reaching Temporal does not bypass authorization (issue 15, finding 6; review M1): a
`decide` Update sent straight to the promotion's workflow with `permitted: true` (and the
approver team and an admin role claimed) for a user who holds no right is refused, because the
workflow reads the approver's grants and teams from the database in an activity; and in
production the payload codec refuses unencrypted payloads, in the workers and the codec route."""

from __future__ import annotations

import base64
import dataclasses
import uuid

import pytest
from pydantic import SecretStr
from temporalio.api.common.v1 import Payload
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHistory, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.worker import Replayer

from core.approvals import Approver, Decision
from core.security.encryption import KeyRing
from core.settings import PROJECT_ROOT, Settings
from core.temporal.client import connect
from core.temporal.codec import ENCODING, REFUSED, EncryptionCodec, PlaintextPayloadRefused
from core.temporal.converter import data_converter
from core.topology import Topology
from tests.integration.identity_helpers import assert_error
from tests.integration.promotion_helpers import PromotionStack, promotion_workers
from workers.runner import sandbox_runner
from workflows.promotion import PromotionWorkflow


@pytest.fixture
def stack(promotions: PromotionStack) -> PromotionStack:
    return promotions


def _forged(user_id: str, team: str) -> Decision:
    """What an attacker sends: every claim the old validator trusted."""
    return Decision(
        approver=Approver(
            user_id=uuid.UUID(user_id),
            name="Release Manager",
            permitted=True,
            teams=[team],
            roles=["admin", "approver"],
        ),
        decision="approve",
        via="api",
    )


async def test_a_forged_decide_update_is_refused_and_the_promotion_waits(
    stack: PromotionStack,
) -> None:
    world = await stack.world(prod_policy={"required_approvals": 1}, chain=("prod",))
    team = await stack.api.client.get(f"/teams/{world.approvers_team}", headers=stack.admin)
    approvers_slug = team.json()["slug"]
    mallory = await stack.person()  # signed up, holds no role and is in no team
    approver = await stack.person("approver", teams=(world.approvers_team,))
    await stack.version(world, "1.0.0")
    async with promotion_workers(stack):
        started = await stack.deploy(world, "prod", "1.0.0")
        waiting = await stack.until(started["id"], "awaiting_approval")
        handle = stack.client.get_workflow_handle(waiting["workflow_id"])

        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await handle.execute_update(
                PromotionWorkflow.decide, _forged(mallory.id, approvers_slug)
            )
        cause = refused.value.cause
        assert isinstance(cause, ApplicationError) and cause.type == "Forbidden", cause
        assert "promotions:approve" in cause.message

        # The same through a client without the platform's codec (plain payloads, which
        # development accepts): refused just the same.
        plain = await Client.connect(
            stack.client.service_client.config.target_host,
            namespace=stack.client.namespace,
            data_converter=data_converter(),
        )
        plain_handle = plain.get_workflow_handle(waiting["workflow_id"])
        with pytest.raises(WorkflowUpdateFailedError):
            await plain_handle.execute_update(
                PromotionWorkflow.decide, _forged(mallory.id, approvers_slug)
            )

        still = await stack.promotion(started["id"])
        assert still["status"] == "awaiting_approval" and still["approvals"] == 0, still
        assert still["decisions"] == []

        # Claiming to be a real approver who is in the team but lacks the permission on
        # this environment does not help either: teams and roles come from the database.
        member = await stack.person(teams=(world.approvers_team,))
        with pytest.raises(WorkflowUpdateFailedError):
            await handle.execute_update(
                PromotionWorkflow.decide, _forged(member.id, approvers_slug)
            )

        # the approval through the API still goes through, checked the same way
        approved = await stack.post(f"/promotions/{started['id']}/approve", {}, approver.headers)
        assert approved.status_code == 200, approved.text
        done = await stack.finished(started["id"])
    assert done["status"] == "succeeded", done
    assert [d["user_id"] for d in done["decisions"]] == [approver.id]


async def test_production_workers_reject_an_unencrypted_update_and_carry_on(
    stack: PromotionStack, topology: Topology
) -> None:
    """Someone who reaches the frontend without the key: their plain `decide` Update is
    rejected with the reason, and the promotion still waits for (and takes) a real approval."""
    world = await stack.world(prod_policy={"required_approvals": 1}, chain=("prod",))
    team = await stack.api.client.get(f"/teams/{world.approvers_team}", headers=stack.admin)
    approver = await stack.person("approver", teams=(world.approvers_team,))
    await stack.version(world, "1.0.0")
    production = await connect(stack.settings.model_copy(update={"env": "production"}), topology)
    async with promotion_workers(dataclasses.replace(stack, client=production)):
        started = await stack.deploy(world, "prod", "1.0.0")
        waiting = await stack.until(started["id"], "awaiting_approval")
        plain = await Client.connect(
            stack.client.service_client.config.target_host,
            namespace=stack.client.namespace,
            data_converter=data_converter(),
        )
        handle = plain.get_workflow_handle(waiting["workflow_id"])
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await handle.execute_update(
                PromotionWorkflow.decide, _forged(approver.id, team.json()["slug"])
            )
        cause = refused.value.cause
        assert isinstance(cause, ApplicationError) and cause.type == "Forbidden", cause
        assert cause.message.startswith("refused an unencrypted Temporal payload (encoding json/")
        still = await stack.promotion(started["id"])
        assert still["status"] == "awaiting_approval" and still["decisions"] == [], still

        approved = await stack.post(f"/promotions/{started['id']}/approve", {}, approver.headers)
        assert approved.status_code == 200, approved.text
        done = await stack.finished(started["id"])
    assert done["status"] == "succeeded", done


async def test_the_production_codec_refuses_unencrypted_payloads(
    stack: PromotionStack, topology: Topology
) -> None:
    ring = KeyRing.from_settings(stack.settings)
    plain = Payload(metadata={"encoding": b"json/plain"}, data=b'{"permitted": true}')
    production = EncryptionCodec(ring, allow_plaintext=False)
    with pytest.raises(PlaintextPayloadRefused) as refused:
        await production.decode_strict([plain])
    assert "unencrypted Temporal payload (encoding json/plain)" in refused.value.message
    # in a worker or client the payload becomes a refusal, never the sender's data ...
    [stand_in] = await production.decode([plain])
    assert stand_in.metadata["encoding"] == REFUSED and b"permitted" not in stand_in.data
    # ... which the data converter refuses to turn into a value
    with pytest.raises(ApplicationError) as unconverted:
        data_converter().payload_converter.from_payloads([stand_in])
    assert unconverted.value.type == "Forbidden" and unconverted.value.non_retryable
    [encrypted] = await production.encode([plain])
    assert encrypted.metadata["encoding"] == ENCODING
    assert await production.decode_strict([encrypted]) == [plain]
    # development keeps accepting them (the Temporal CLI and UI send plain payloads)
    assert await EncryptionCodec(ring).decode_strict([plain]) == [plain]

    # the clients (and so the workers) built from production settings use that codec
    prod_settings = stack.settings.model_copy(update={"env": "production"})
    client = await connect(prod_settings, topology, lazy=True)
    codec = client.data_converter.payload_codec
    assert isinstance(codec, EncryptionCodec) and codec.allow_plaintext is False

    # and so does the codec route of an API running in production
    state = stack.api.app.state.idp
    _, admin = await stack.api.token("admin")
    body = {
        "payloads": [
            {
                "metadata": {"encoding": base64.b64encode(b"json/plain").decode()},
                "data": base64.b64encode(b'{"permitted": true}').decode(),
            }
        ]
    }
    development = await stack.api.client.post(
        "/api/temporal/codec/decode", json=body, headers=admin
    )
    assert development.status_code == 200, development.text
    state.settings = prod_settings
    try:
        refused_route = await stack.api.client.post(
            "/api/temporal/codec/decode", json=body, headers=admin
        )
    finally:
        state.settings = stack.settings
    error = assert_error(refused_route, 400, "unencrypted_payload")
    assert "in production every payload must be encrypted" in error["message"]


# A promotion approved twice through the API, recorded by the code before the approver check
# (its payloads encrypted with this fixture-only key): open workflows started before the
# change take the old path when they replay (no `approver-checked-by-activity` marker).
HISTORY = PROJECT_ROOT / "tests/fixtures/histories/promotion_approved_before_approver_check.json"
HISTORY_KEY = "history-fixture-key-not-a-secret-0123456789"


async def test_a_promotion_decided_before_the_check_still_replays() -> None:
    ring = KeyRing.from_settings(Settings(env="test", encryption_key=SecretStr(HISTORY_KEY)))
    history = WorkflowHistory.from_json("promotion-before-check", HISTORY.read_text())
    kinds = [e.event_type for e in history.events]
    assert kinds.count(EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_COMPLETED) == 2
    replayer = Replayer(
        workflows=[PromotionWorkflow],
        workflow_runner=sandbox_runner(),
        data_converter=data_converter(EncryptionCodec(ring)),
    )
    await replayer.replay_workflow(history)
