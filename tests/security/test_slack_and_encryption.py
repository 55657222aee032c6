"""Slack identities, workspaces and references, and secrets bound to their rows (issue 15,
finding 9; review M7 and L4), each performed as the attack and seen refused:

- a user who claims an approver's Slack member id in their preferences gets none of that
  approver's button presses; a Slack member counts only through a link verified with a code
  the bot sent them (and guessing that code is bounded);
- a button press from another Slack workspace than the one pinned on the channel is refused,
  logged and audited, and decides nothing;
- `POST /notifications` cannot set `reference="promotion:<another org's id>"`, and a message
  the caller sent is never updated with that promotion's decisions nor accepted as its button;
- two channels' (or providers') encrypted secrets swapped in the database no longer decrypt,
  and the migration re-encrypts rows written with the old constant associated data."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, select, text, update

from core.db import migrate
from core.infrastructure.providers import credentials_of
from core.models.audit import AuditLog
from core.models.infrastructure import Provider
from core.models.notifications import Notification, NotificationChannel
from core.notifications.channels import channel_secrets
from core.security.encryption import DecryptionError, KeyRing, install_keyring, row_aad
from core.slack.links import MAX_ATTEMPTS
from tests.helpers import wait_until
from tests.integration.identity_helpers import Api, assert_error
from tests.integration.promotion_helpers import (
    SLACK_CHANNEL,
    SLACK_TEAM,
    Person,
    PromotionStack,
    World,
    promotion_workers,
    slack_headers,
    slack_interaction,
)

# Unique per session: a verified link is kept in the database the other tests share, and the
# promotion tests press buttons as "U0BOB" in the same workspace.
BOB_SLACK = f"U0BOB{uuid.uuid4().hex[:8].upper()}"


@pytest.fixture
def stack(promotions: PromotionStack) -> PromotionStack:
    return promotions


async def _channel_id(stack: PromotionStack, world: World) -> str:
    found = await stack.api.client.get(
        "/notifications/channels", params={"team_id": world.owner_team}, headers=stack.admin
    )
    [channel] = found.json()["items"]
    assert channel["config"]["team_id"] == SLACK_TEAM  # pinned from auth.test at creation
    return str(channel["id"])


async def _approval_ts(stack: PromotionStack, promotion_id: str) -> str:
    """The ts of the promotion's approval request, once posted and recorded."""
    found: list[str] = []

    async def recorded() -> bool:
        rows = await stack.api.fetch(
            select(Notification).where(
                Notification.reference == f"promotion:{promotion_id}",
                Notification.event == "promotion.awaiting_approval",
                Notification.status == "delivered",
            )
        )
        found[:] = [r.remote_id for r in rows if r.remote_id]
        return bool(found)

    await wait_until("the approval request delivered", recorded, timeout=20)
    return found[0]


async def _press(
    stack: PromotionStack, promotion_id: str, slack_user: str, ts: str, team: str = SLACK_TEAM
) -> str:
    """Press Approve as `slack_user` of `team`; the ephemeral answer ("" when none)."""
    before = len(stack.slack.responses)
    body = slack_interaction(
        "approve",
        promotion_id,
        slack_user,
        message_ts=ts,
        response_url=stack.slack.response_url(uuid.uuid4().hex),
        team=team,
    )
    pressed = await stack.api.client.post(
        "/integrations/slack/interactions", content=body, headers=slack_headers(body)
    )
    assert pressed.status_code == 200, pressed.text
    if len(stack.slack.responses) == before:
        return ""
    return str(stack.slack.responses[-1]["text"])


def _code(stack: PromotionStack, slack_user: str) -> str:
    [*_, last] = stack.slack.dms(slack_user)
    match = re.search(r"\*(\d{8})\*", last)
    assert match, last
    return match.group(1)


async def _link(stack: PromotionStack, who: Person, channel_id: str, slack_user: str) -> Any:
    asked = await stack.post(
        "/users/me/slack-links",
        {"channel_id": channel_id, "slack_user_id": slack_user},
        who.headers,
    )
    assert asked.status_code == 202, asked.text
    assert asked.json()["slack_team_id"] == SLACK_TEAM and "code" not in asked.json()
    return asked.json()


async def _decisions(stack: PromotionStack, promotion_id: str) -> list[dict[str, Any]]:
    return list((await stack.promotion(promotion_id))["decisions"])


async def test_slack_identity_claims_workspaces_and_references(stack: PromotionStack) -> None:
    world = await stack.world(prod_policy={"required_approvals": 1})
    channel_id = await _channel_id(stack, world)
    bob = await stack.person("approver", teams=(world.approvers_team,))
    mallory = await stack.person("approver", teams=(world.approvers_team,))
    # Bob's Slack email is not his platform email: only a verified link can name him.
    stack.slack.users[BOB_SLACK] = "bob@personal.example"

    # The attack of review M7: Mallory claims Bob's Slack member id as hers.
    claim = await stack.api.client.put(
        "/users/me/notification-preferences",
        json={"preferences": [{"channel_type": "slack", "settings": {"slack_user_id": BOB_SLACK}}]},
        headers=mallory.headers,
    )
    assert claim.status_code == 200, claim.text

    # Another organization's maintainer, with a Slack channel of their own team.
    other = await stack.world(chain=("dev",))
    attacker = await stack.person()
    joined = await stack.post(
        f"/teams/{other.owner_team}/members", {"user_id": attacker.id, "role": "owner"}
    )
    assert joined.status_code in (200, 201), joined.text
    attacker_channel = await _channel_id(stack, other)
    await stack.version(world, "1.0.0")

    async with promotion_workers(stack):
        await stack.promoted(world, "dev", "1.0.0")
        await stack.promoted(world, "staging", "1.0.0")
        pid = (await stack.deploy(world, "prod", "1.0.0"))["id"]
        await stack.until(pid, "awaiting_approval")
        ts = await _approval_ts(stack, pid)

        # 1. Bob presses before he linked: Mallory's claim does not make it hers.
        answer = await _press(stack, pid, BOB_SLACK, ts)
        assert "not linked" in answer
        assert await _decisions(stack, pid) == []

        # 2. Mallory asks to link Bob's member id: the code goes to Bob, and guessing is bounded.
        await _link(stack, mallory, channel_id, BOB_SLACK)
        assert mallory.email in stack.slack.dms(BOB_SLACK)[-1]  # Bob sees who asked
        real = _code(stack, BOB_SLACK)
        for n in range(MAX_ATTEMPTS):
            guess = f"{(int(real) + n + 1) % 10**8:08d}"
            wrong = await stack.post(
                "/users/me/slack-links/confirm", {"code": guess}, mallory.headers
            )
            assert_error(wrong, 422, "validation_error")
        late = await stack.post("/users/me/slack-links/confirm", {"code": real}, mallory.headers)
        assert late.status_code in (404, 422), late.text  # the right code, too late: no tries left
        mine = await stack.api.client.get("/users/me/slack-links", headers=mallory.headers)
        assert mine.json() == {"links": [], "pending": None}

        # 3. Bob links his account with the code the bot sent him (hashed at rest).
        await _link(stack, bob, channel_id, BOB_SLACK)
        async with stack.api.session() as session:
            stored = await session.execute(text("SELECT code_hash FROM slack_link_challenges"))
            hashes = [row[0] for row in stored]
        code = _code(stack, BOB_SLACK)
        assert hashes and code not in str(hashes)
        linked = await stack.post("/users/me/slack-links/confirm", {"code": code}, bob.headers)
        assert linked.status_code == 201, linked.text
        assert linked.json()["slack_user_id"] == BOB_SLACK

        # 4. A press from another Slack workspace (the same app installed elsewhere, validly
        #    signed) is refused, logged and audited, and decides nothing.
        answer = await _press(stack, pid, BOB_SLACK, ts, team="T0EVIL")
        assert "another Slack workspace" in answer
        assert await _decisions(stack, pid) == []

        # 5. POST /notifications cannot point a message at this promotion from another org.
        stolen = await stack.post(
            "/notifications",
            {
                "event": "custom",
                "context": {"title": "t", "message": "m"},
                "channel_ids": [attacker_channel],
                "reference": f"promotion:{pid}",
            },
            attacker.headers,
        )
        assert "reference" in assert_error(stolen, 422, "validation_error")["message"]
        # Sent without a reference, the attacker's message is not one the promotion's
        # buttons are accepted on.
        sent = await stack.post(
            "/notifications",
            {
                "event": "custom",
                "context": {"title": "t", "message": "m"},
                "channel_ids": [attacker_channel],
            },
            attacker.headers,
        )
        assert sent.status_code == 202, sent.text
        request_id = uuid.UUID(sent.json()["request_id"])

        async def delivered() -> list[Notification]:
            return await stack.api.fetch(
                select(Notification).where(
                    Notification.request_id == request_id, Notification.status == "delivered"
                )
            )

        await wait_until("the attacker's message delivered", delivered, timeout=20)
        [theirs] = await delivered()
        assert theirs.reference is None and theirs.remote_id
        answer = await _press(stack, pid, BOB_SLACK, theirs.remote_id)
        assert "not on a message the platform sent" in answer
        assert await _decisions(stack, pid) == []

        # 6. Bob's own press, from the pinned workspace, is his.
        assert await _press(stack, pid, BOB_SLACK, ts) == ""
        done = await stack.finished(pid)
        assert done["status"] == "succeeded", done
        [decision] = done["decisions"]
        assert decision["via"] == "slack"

        async def decided_message_updated() -> bool:
            return any(
                "Promotion approved" in (r.text or "") for r in stack.slack.calls("chat.update")
            )

        await wait_until("the approval message updated", decided_message_updated, timeout=20)
        updated = {r.ts for r in stack.slack.calls("chat.update")}
        assert ts in updated and theirs.remote_id not in updated

    audit = await stack.api.fetch(select(AuditLog).where(AuditLog.resource_id == pid))
    approvals = [(a.action, a.actor_label) for a in audit]
    assert ("promotion.approve", f"{bob.email} (Slack)") in approvals
    assert not any(mallory.email in str(label) for _, label in approvals)
    refused = await stack.api.fetch(
        select(AuditLog).where(AuditLog.action == "slack.interaction_refused")
    )
    reasons = [(a.after or {}) for a in refused if (a.after or {}).get("value") == pid]
    assert {r["slack_team_id"] for r in reasons} >= {"T0EVIL", SLACK_TEAM}
    link_actions = {
        a.action
        for a in await stack.api.fetch(
            select(AuditLog).where(AuditLog.resource_id.in_([bob.id, mallory.id]))
        )
    }
    assert {"slack_link.request", "slack_link.confirm_failed", "slack_link.verify"} <= link_actions
    assert not any(str(code) in json.dumps(a.after) for a in audit)


async def test_a_slack_channel_pins_its_workspace_and_a_token_slack_refuses_is_a_422(
    stack: PromotionStack,
) -> None:
    body = {
        "type": "slack",
        "name": f"pins-{uuid.uuid4().hex[:6]}",
        "config": {"channel": SLACK_CHANNEL},
        "secrets": {"bot_token": "xoxb-unknown-to-slack-0000"},
    }
    refused = await stack.post("/notifications/channels", body)
    assert "auth.test" in assert_error(refused, 422, "validation_error")["message"]
    given = await stack.post(
        "/notifications/channels", {**body, "config": {**body["config"], "team_id": "T0GIVEN"}}
    )
    assert given.status_code == 201 and given.json()["config"]["team_id"] == "T0GIVEN"


async def test_swapped_ciphertexts_between_rows_do_not_decrypt(api: Api) -> None:
    _, admin = await api.token("admin")
    ids = []
    for n in range(2):
        created = await api.client.post(
            "/notifications/channels",
            json={
                "type": "slack",
                "name": f"swap-{n}-{uuid.uuid4().hex[:6]}",
                "config": {"channel": "#x", "team_id": "T0TEAM"},
                "secrets": {"bot_token": f"xoxb-swap-token-{n}-0123456789"},
            },
            headers=admin,
        )
        assert created.status_code == 201, created.text
        ids.append(uuid.UUID(created.json()["id"]))
    org = await api.client.post(
        "/organizations",
        json={"name": "Swap", "slug": f"swap-{uuid.uuid4().hex[:6]}"},
        headers=admin,
    )
    providers = []
    for n in range(2):
        made = await api.client.post(
            "/infrastructure/providers",
            json={
                "org_id": org.json()["id"],
                "name": f"aws-{n}",
                "type": "aws",
                "credentials": {"access_key_id": f"AK{n}", "secret_access_key": f"SK{n}"},
            },
            headers=admin,
        )
        assert made.status_code == 201, made.text
        providers.append(uuid.UUID(made.json()["id"]))

    async with api.session() as session:
        channels = [await session.get(NotificationChannel, i) for i in ids]
        assert [channel_secrets(c)["bot_token"] for c in channels if c] == [
            "xoxb-swap-token-0-0123456789",
            "xoxb-swap-token-1-0123456789",
        ]
        first, second = (c.secrets for c in channels if c)
        rows = [await session.get(Provider, i) for i in providers]
        one, two = (r.credentials for r in rows if r)
    # Someone with write access to the database swaps the two rows' ciphertexts.
    for model, (a, b), column, values in (
        (NotificationChannel, ids, "secrets", (first, second)),
        (Provider, providers, "credentials", (one, two)),
    ):
        await api.run_sql(update(model).where(model.id == a).values({column: values[1]}))
        await api.run_sql(update(model).where(model.id == b).values({column: values[0]}))
    async with api.session() as session:
        for channel_id in ids:
            channel = await session.get(NotificationChannel, channel_id)
            assert channel is not None
            with pytest.raises(DecryptionError):
                channel_secrets(channel)
        for provider_id in providers:
            provider = await session.get(Provider, provider_id)
            assert provider is not None
            with pytest.raises(DecryptionError):
                credentials_of(provider)


def test_the_migration_binds_old_ciphertexts_to_their_rows_and_clears_caller_references(
    tmp_path: Path,
) -> None:
    """Rows written before 0017 (constant associated data; a reference set by a caller) are
    re-encrypted bound to their row id, and the caller's reference is cleared."""
    url = f"sqlite:///{tmp_path / 'old.db'}"
    migrate.upgrade(url, "0016")
    ring = KeyRing.from_material("migration-test-key-" + "k" * 32)
    previous = install_keyring(ring)  # the ring `idp migrate` installs from its settings
    try:
        _migrate_old_rows(url, ring)
    finally:
        install_keyring(previous)


def _migrate_old_rows(url: str, ring: KeyRing) -> None:
    channel_id, provider_id, request_id = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    old_secret = ring.encrypt_str(
        json.dumps({"bot_token": "xoxb-old-0123456789"}), aad=b"notification_channels.secrets"
    )
    old_credentials = ring.encrypt_str(
        json.dumps({"access_key_id": "AK", "secret_access_key": "SK"}),
        aad=b"providers.credentials",
    )
    engine = create_engine(url)
    now = "2026-12-01 00:00:00.000000"
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO notification_channels (id, type, name, config, secrets, "
                "secret_names, enabled, created_at, updated_at) VALUES (:id, 'slack', 'old', "
                "'{}', :secrets, '[\"bot_token\"]', 1, :now, :now)"
            ),
            {"id": channel_id.hex, "secrets": old_secret, "now": now},
        )
        org_columns = {c[1] for c in conn.execute(text("PRAGMA table_info(providers)"))}
        assert "credentials" in org_columns
        conn.execute(
            text(
                "INSERT INTO providers (id, org_id, name, type, regions, config, "
                "credential_names, credentials, created_at, updated_at) VALUES (:id, :org, "
                "'aws', 'aws', '[]', '{}', '[]', :credentials, :now, :now)"
            ),
            {
                "id": provider_id.hex,
                "org": uuid.uuid4().hex,
                "credentials": old_credentials,
                "now": now,
            },
        )
        conn.execute(
            text(
                "INSERT INTO notifications (id, request_id, event, channel_id, channel_type, "
                "recipient, status, attempts, context, reference, created_at, updated_at) "
                "VALUES (:id, :request, 'custom', :channel, 'slack', 'C1', 'delivered', 1, "
                "'{}', 'promotion:someone-elses', :now, :now)"
            ),
            {
                "id": uuid.uuid4().hex,
                "request": request_id.hex,
                "channel": channel_id.hex,
                "now": now,
            },
        )
        conn.execute(
            text(
                "INSERT INTO audit_logs (id, occurred_at, actor_type, action, resource_type, "
                "resource_id) VALUES (:id, :now, 'user', 'notification.send', "
                "'notification_request', :request)"
            ),
            {"id": uuid.uuid4().hex, "now": now, "request": str(request_id)},
        )
    migrate.upgrade(url)
    with engine.connect() as conn:
        secret = conn.execute(
            text("SELECT secrets FROM notification_channels WHERE id = :id"), {"id": channel_id.hex}
        ).scalar_one()
        credentials = conn.execute(
            text("SELECT credentials FROM providers WHERE id = :id"), {"id": provider_id.hex}
        ).scalar_one()
        reference = conn.execute(
            text("SELECT reference FROM notifications WHERE request_id = :r"),
            {"r": request_id.hex},
        ).scalar_one()
    engine.dispose()
    bound = ring.decrypt_str(secret, aad=row_aad("notification_channels.secrets", channel_id))
    assert json.loads(bound) == {"bot_token": "xoxb-old-0123456789"}
    with pytest.raises(DecryptionError):
        ring.decrypt_str(secret, aad=b"notification_channels.secrets")
    assert json.loads(
        ring.decrypt_str(credentials, aad=row_aad("providers.credentials", provider_id))
    ) == {"access_key_id": "AK", "secret_access_key": "SK"}
    assert reference is None
