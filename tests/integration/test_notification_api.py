"""The notification API without delivery: channels (credentials never returned), template
overrides (checked before saving), preferences, and who may do what."""

from __future__ import annotations

import json
import uuid

from sqlalchemy import select, text

from core.models.audit import AuditLog
from core.models.notifications import NotificationChannel
from tests.integration.identity_helpers import Api, assert_error

SLACK = {
    "type": "slack",
    "name": "deploys",
    "config": {"channel": "#deploys", "team_id": "T0TEAM"},
    "secrets": {"bot_token": "xoxb-test-token-0123456789"},
}
EMAIL = {
    "type": "email",
    "name": "ops mail",
    "config": {
        "host": "smtp.example.com",
        "port": 587,
        "security": "starttls",
        "username": "mailer",
        "from_address": "idp@example.com",
        "to": ["ops@example.com"],
    },
    "secrets": {"password": "smtp-pass-very-secret"},
}


def unique(channel: dict[str, object]) -> dict[str, object]:
    """The tests share a database: each channel gets a name of its own."""
    return {**channel, "name": f"{channel['name']}-{uuid.uuid4().hex[:8]}"}


async def test_channels_keep_credentials_secret(api: Api) -> None:
    _, admin = await api.token("admin")
    slack = unique(SLACK)
    created = await api.client.post("/notifications/channels", json=slack, headers=admin)
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["secrets_set"] == ["bot_token"]
    assert body["config"] == {"channel": "#deploys", "team_id": "T0TEAM"}
    assert "xoxb-test-token" not in created.text and body["signing_secret"] is None

    mail = await api.client.post("/notifications/channels", json=unique(EMAIL), headers=admin)
    assert mail.status_code == 201 and "smtp-pass-very-secret" not in mail.text

    hook = await api.client.post(
        "/notifications/channels",
        json={"type": "webhook", "name": "hook", "config": {"url": "https://hooks.example/x"}},
        headers=admin,
    )
    assert hook.status_code == 201
    generated = hook.json()["signing_secret"]
    assert generated.startswith("whsec_") and len(generated) > 40
    again = await api.client.get(f"/notifications/channels/{hook.json()['id']}", headers=admin)
    assert generated not in again.text and again.json()["secrets_set"] == ["signing_secret"]

    listed = await api.client.get(
        f"/notifications/channels?type=slack&q={slack['name']}", headers=admin
    )
    assert [c["name"] for c in listed.json()["items"]] == [slack["name"]]
    for secret in ("xoxb-test-token", "smtp-pass-very-secret", generated):
        assert secret not in (await api.client.get("/notifications/channels", headers=admin)).text

    # At rest the credentials are ciphertext; the audit log masks them.
    ids = [created.json()["id"], mail.json()["id"], hook.json()["id"]]
    async with api.session() as session:
        raw = (
            await session.execute(
                text("SELECT secrets FROM notification_channels WHERE name = :n"),
                {"n": slack["name"]},
            )
        ).scalar_one()
    assert str(raw).startswith("enc:") and "xoxb" not in str(raw)
    entries = await api.fetch(
        select(AuditLog).where(
            AuditLog.action == "notification_channel.create", AuditLog.resource_id.in_(ids)
        )
    )
    assert len(entries) == 3
    assert "xoxb-test-token" not in json.dumps([e.after for e in entries])


async def test_channel_validation_and_updates(api: Api) -> None:
    _, admin = await api.token("admin")
    names = [SLACK["name"], EMAIL["name"], "h"]
    named = select(NotificationChannel.id).where(NotificationChannel.name.in_(names))
    existing = sorted(await api.fetch(named))  # other tests' channels share the session's database
    bad = await api.client.post(
        "/notifications/channels",
        json={**SLACK, "secrets": {"bot_token": "not-a-token"}},
        headers=admin,
    )
    err = assert_error(bad, 422, "validation_error")
    assert err["details"][0]["field"] == "secrets.bot_token"
    assert "not-a-token" not in bad.text
    unknown_key = await api.client.post(
        "/notifications/channels",
        json={**EMAIL, "config": {**EMAIL["config"], "colour": "red"}},  # type: ignore[dict-item]
        headers=admin,
    )
    assert_error(unknown_key, 422)
    bad_url = await api.client.post(
        "/notifications/channels",
        json={"type": "webhook", "name": "h", "config": {"url": "ftp://x"}},
        headers=admin,
    )
    assert_error(bad_url, 422)
    assert sorted(await api.fetch(named)) == existing  # none of the refused ones was saved

    created = (
        await api.client.post("/notifications/channels", json=unique(EMAIL), headers=admin)
    ).json()
    url = f"/notifications/channels/{created['id']}"
    patched = await api.client.patch(
        url, json={"config": {"port": 2525, "username": None}, "enabled": False}, headers=admin
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["config"]["port"] == 2525 and "username" not in patched.json()["config"]
    assert patched.json()["enabled"] is False and patched.json()["secrets_set"] == ["password"]
    assert_error(await api.client.patch(url, json={"config": {"port": 0}}, headers=admin), 422)
    assert (await api.client.delete(url, headers=admin)).status_code == 204
    assert_error(await api.client.get(url, headers=admin), 404, "not_found")


async def test_who_may_manage_channels(api: Api) -> None:
    _, viewer = await api.token("viewer")
    denied = await api.client.post("/notifications/channels", json=SLACK, headers=viewer)
    assert assert_error(denied, 403)["details"] == {"permission": "notifications:write"}
    assert (await api.client.get("/notifications/channels", headers=viewer)).status_code == 200
    assert_error(await api.client.get("/notifications/channels"), 401)


async def test_template_overrides_are_checked_before_saving(api: Api) -> None:
    _, admin = await api.token("admin")
    defaults = await api.client.get(
        "/notifications/templates/defaults?event=pipeline.failed&channel_type=email",
        headers=admin,
    )
    assert defaults.status_code == 200 and len(defaults.json()) == 1
    default = defaults.json()[0]
    assert default["source"] == "file" and default["subject"] and default["text_body"]

    undeclared = await api.client.post(
        "/notifications/templates",
        json={
            "event": "pipeline.failed",
            "channel_type": "webhook",
            "body": '{"who": {{ no_such_variable | tojson }}}',
        },
        headers=admin,
    )
    assert "no_such_variable" in assert_error(undeclared, 422)["message"] + undeclared.text
    broken = await api.client.post(
        "/notifications/templates",
        json={"event": "pipeline.failed", "channel_type": "webhook", "body": "{% if %}"},
        headers=admin,
    )
    assert_error(broken, 422)
    unknown = await api.client.post(
        "/notifications/templates",
        json={"event": "no.such.event", "channel_type": "slack", "body": "{}"},
        headers=admin,
    )
    assert_error(unknown, 422)

    good = {
        "event": "pipeline.failed",
        "channel_type": "webhook",
        "body": '{"failed": {{ pipeline | tojson }}}',
    }
    created = await api.client.post("/notifications/templates", json=good, headers=admin)
    assert created.status_code == 201, created.text
    assert created.json()["source"] == "database" and "pipeline" in created.json()["variables"]
    dup = await api.client.post("/notifications/templates", json=good, headers=admin)
    assert_error(dup, 409, "conflict")
    url = f"/notifications/templates/{created.json()['id']}"
    updated = await api.client.put(
        url, json={"body": '{"p": {{ pipeline | tojson }}}'}, headers=admin
    )
    assert updated.status_code == 200 and updated.json()["body"].startswith('{"p"')
    assert_error(await api.client.put(url, json={"body": "{{ nope }}"}, headers=admin), 422)
    listed = await api.client.get("/notifications/templates?event=pipeline.failed", headers=admin)
    assert [t["id"] for t in listed.json()["items"]] == [created.json()["id"]]
    events = await api.client.get("/notifications/events", headers=admin)
    names = {e["name"] for e in events.json()}
    assert {"pipeline.failed", "promotion.awaiting_approval", "budget.exceeded"} <= names


async def test_preferences_are_the_callers_own(api: Api) -> None:
    _, me = await api.token("viewer")
    assert (await api.client.get("/users/me/notification-preferences", headers=me)).json() == {
        "preferences": []
    }
    wanted = {
        "preferences": [
            {"channel_type": "email", "event": "*", "enabled": True},
            {"channel_type": "email", "event": "pipeline.started", "enabled": False},
            {
                "channel_type": "slack",
                "event": "*",
                "enabled": True,
                "settings": {"slack_user_id": "U0123ABCD"},
            },
        ]
    }
    put = await api.client.put("/users/me/notification-preferences", json=wanted, headers=me)
    assert put.status_code == 200, put.text
    got = (await api.client.get("/users/me/notification-preferences", headers=me)).json()
    assert len(got["preferences"]) == 3
    assert {p["settings"].get("slack_user_id") for p in got["preferences"]} == {None, "U0123ABCD"}

    for bad in (
        [{"channel_type": "email", "event": "no.such.event"}],
        [{"channel_type": "slack", "settings": {"slack_user_id": "not an id"}}],
        [{"channel_type": "email"}, {"channel_type": "email"}],
        [{"channel_type": "webhook"}],
    ):
        refused = await api.client.put(
            "/users/me/notification-preferences", json={"preferences": bad}, headers=me
        )
        assert_error(refused, 422)
    # A refused change changed nothing.
    again = (await api.client.get("/users/me/notification-preferences", headers=me)).json()
    assert again == got


async def test_team_members_see_and_manage_their_teams_channels_only(api: Api) -> None:
    _, admin = await api.token("admin")
    slug = f"org-{uuid.uuid4().hex[:8]}"
    org = await api.client.post("/organizations", json={"name": "Org", "slug": slug}, headers=admin)
    teams = []
    for name in ("red", "blue"):
        team = await api.client.post(
            "/teams",
            json={"org_id": org.json()["id"], "name": name, "slug": f"{name}-{slug}"},
            headers=admin,
        )
        assert team.status_code == 201, team.text
        teams.append(team.json()["id"])
    red, blue = teams
    member_id, member_email = await api.user()  # no global role: only the red team
    added = await api.client.post(
        f"/teams/{red}/members",
        json={"user_id": str(member_id), "role": "maintainer"},
        headers=admin,
    )
    assert added.status_code == 201, added.text
    member = {"Authorization": f"Bearer {(await api.login(member_email))['access_token']}"}

    mine = await api.client.post(
        "/notifications/channels", json={**unique(SLACK), "team_id": red}, headers=member
    )
    assert mine.status_code == 201, mine.text
    theirs = await api.client.post(
        "/notifications/channels", json={**unique(SLACK), "team_id": blue}, headers=member
    )
    assert assert_error(theirs, 403)["details"] == {"permission": "notifications:write"}
    platform = await api.client.post("/notifications/channels", json=unique(SLACK), headers=member)
    assert_error(platform, 403)
    blue_channel = await api.client.post(
        "/notifications/channels", json={**unique(SLACK), "team_id": blue}, headers=admin
    )
    listed = await api.client.get("/notifications/channels", headers=member)
    assert [c["id"] for c in listed.json()["items"]] == [mine.json()["id"]]
    hidden = await api.client.get(
        f"/notifications/channels/{blue_channel.json()['id']}", headers=member
    )
    assert_error(hidden, 403)

    body = {"event": "custom", "channel_type": "webhook", "body": '{"t": {{ title | tojson }}}'}
    for team in (red, blue):
        made = await api.client.post(
            "/notifications/templates", json={**body, "team_id": team}, headers=admin
        )
        assert made.status_code == 201, made.text
    seen = await api.client.get("/notifications/templates?event=custom", headers=member)
    assert {t["team_id"] for t in seen.json()["items"]} == {red}
