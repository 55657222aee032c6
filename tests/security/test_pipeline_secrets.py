"""Pipeline secrets stay secret (issue 15, finding 1; review L3).

The attacks: read a secret back through the API or the audit log, from another organization,
from a step's log (the step echoes it, or prints it across the runner's cut of an over-long
line), from Temporal's history, or from a fork's pull request. Each is refused: the API shows
names only, the audit names only, another organization is 403, the log shows `***`, the
history holds no value, and a fork's run gets no secret at all."""

from __future__ import annotations

import json
import uuid

from sqlalchemy import select

from core.models.audit import AuditLog
from core.models.pipelines import PipelineSecret
from core.pipelines.secrets import CUT_LINE_BYTES, MASK, LogMasker
from tests.integration.identity_helpers import assert_error
from tests.integration.pipeline_helpers import Stack, pipelines_worker
from tests.security.pipeline_attack_helpers import (
    ForkedRepo,
    decoded_history,
    deliver_pull_request,
    forked,
    pull_request_payload,
    stack,
)

__all__ = ["forked", "stack"]  # fixtures

TOKEN = "s3cr3t-Deploy-T0ken-4f1c9a"
SHORT = "abc"
PEM = "line-one-of-the-key\nline-two-of-the-key"
# The step prints the token on its own, inside a line, after 65533 bytes (so the runner cuts
# the line inside the token), each line of a multi-line value, and a value too short to mask.
ECHO = (
    'echo "token=$DEPLOY_TOKEN"; '
    "printf %065533d 0 | tr 0 a; printf '%s\\n' \"$DEPLOY_TOKEN\"; "
    'printf "%s\\n" "$PEM_KEY"; echo "short=$SHORT_ONE"; echo "fork=${DEPLOY_TOKEN:-unset}"'
)
DEFINITION = {"stages": [{"name": "s", "steps": [{"name": "echo", "run": ECHO}]}]}


def test_the_masker_masks_values_lines_and_values_across_a_cut_line() -> None:
    masker = LogMasker([TOKEN, PEM, SHORT])
    assert masker.text(f"a {TOKEN} b {TOKEN}") == f"a {MASK} b {MASK}"
    assert masker.text("line-two-of-the-key") == MASK
    assert masker.text("abc abc") == "abc abc"  # under 4 characters: not masked
    head = "a" * (CUT_LINE_BYTES - 2) + TOKEN[:5]
    lines = [
        {"stream": "stdout", "text": head},
        {"stream": "stdout", "text": TOKEN[5:] + " tail"},
    ]
    assert masker.feed(lines[:1]) == []  # held until its continuation comes
    out = masker.feed(lines[1:])
    assert [line["text"] for line in out] == ["a" * (CUT_LINE_BYTES - 2) + MASK, " tail"]
    assert masker.feed([{"stream": "stdout", "text": head}]) == []
    assert masker.flush()[0]["text"].endswith(TOKEN[:5])  # no continuation: nothing to match


async def _secret_rows(stack: Stack, pipeline_id: str) -> list[PipelineSecret]:
    return await stack.api.fetch(
        select(PipelineSecret).where(PipelineSecret.pipeline_id == uuid.UUID(pipeline_id))
    )


async def test_secrets_are_write_only_audited_by_name_and_scoped_to_their_organization(
    stack: Stack, forked: ForkedRepo
) -> None:
    forked.init({"README": "x"})
    service = await stack.service(forked.url)
    pipeline = await stack.pipeline(service["id"], definition=DEFINITION)
    url = f"/pipelines/{pipeline['id']}/secrets"
    created = await stack.api.client.put(
        f"{url}/DEPLOY_TOKEN", json={"value": TOKEN}, headers=stack.admin
    )
    assert created.status_code == 201, created.text
    replaced = await stack.api.client.put(
        f"{url}/DEPLOY_TOKEN", json={"value": TOKEN + "x"}, headers=stack.admin
    )
    assert replaced.status_code == 200 and replaced.json()["name"] == "DEPLOY_TOKEN"
    listed = await stack.api.client.get(url, headers=stack.admin)
    assert [s["name"] for s in listed.json()] == ["DEPLOY_TOKEN"]
    assert listed.json()[0]["updated_by"] is not None
    for response in (created, replaced, listed):
        assert TOKEN not in response.text
    [row] = await _secret_rows(stack, pipeline["id"])
    assert row.value.startswith("enc:v1:") and TOKEN not in row.value

    # Bad input changes nothing.
    bad_input = [("IDP_RUN_ID", {"value": "x"}), ("CI", {"value": "x"}), ("A-B", {"value": "x"})]
    bad_input.append(("OK", {"value": "a\u0000b"}))
    for name, body in [*bad_input, ("1BAD", {"value": "x"}), ("OK", {}), ("OK", {"value": ""})]:
        bad = await stack.api.client.put(f"{url}/{name}", json=body, headers=stack.admin)
        assert_error(bad, 422)
    # A viewer sees names, cannot set; another organization's admin cannot even list.
    _, viewer = await stack.api.token("viewer")
    assert (await stack.api.client.get(url, headers=viewer)).status_code == 200
    denied = await stack.api.client.put(f"{url}/X_TOKEN", json={"value": "v"}, headers=viewer)
    assert_error(denied, 403, "forbidden")
    other = await stack.service(forked.url.replace("acme-", "other-"))
    other_admin_id, other_email = await stack.api.user()
    async with stack.api.session() as session:
        from core.identity.users import UserService
        from core.models.catalog import Service
        from core.models.identity import User

        users = UserService(session)
        user = await session.get(User, other_admin_id)
        svc = await session.get(Service, uuid.UUID(other["id"]))
        assert user is not None and svc is not None
        await users.grant_role(user, "admin", "organization", svc.org_id)
    tokens = await stack.api.login(other_email)
    outsider = {"Authorization": f"Bearer {tokens['access_token']}"}
    assert_error(await stack.api.client.get(url, headers=outsider), 403)
    assert_error(
        await stack.api.client.put(f"{url}/DEPLOY_TOKEN", json={"value": "v"}, headers=outsider),
        403,
    )
    assert_error(await stack.api.client.delete(f"{url}/DEPLOY_TOKEN", headers=outsider), 403)
    assert len(await _secret_rows(stack, pipeline["id"])) == 1

    deleted = await stack.api.client.delete(f"{url}/DEPLOY_TOKEN", headers=stack.admin)
    assert deleted.status_code == 204
    assert_error(await stack.api.client.delete(f"{url}/DEPLOY_TOKEN", headers=stack.admin), 404)
    audit = await stack.api.fetch(
        select(AuditLog)
        .where(AuditLog.resource_type == "pipeline_secret")
        .order_by(AuditLog.occurred_at)
    )
    assert [a.action for a in audit if a.resource_id == str(row.id)] == [
        "pipeline_secret.create",
        "pipeline_secret.update",
        "pipeline_secret.delete",
    ]
    assert TOKEN not in json.dumps([(a.before, a.after) for a in audit])


async def _put(stack: Stack, pipeline_id: str, name: str, value: str) -> None:
    answer = await stack.api.client.put(
        f"/pipelines/{pipeline_id}/secrets/{name}", json={"value": value}, headers=stack.admin
    )
    assert answer.status_code in (200, 201), answer.text


async def test_a_step_gets_its_secrets_masked_in_its_log_stream_and_history(
    stack: Stack, forked: ForkedRepo
) -> None:
    forked.init({"README": "x"})
    service = await stack.service(forked.url)
    pipeline = await stack.pipeline(service["id"], definition=DEFINITION)
    for name, value in [("DEPLOY_TOKEN", TOKEN), ("PEM_KEY", PEM), ("SHORT_ONE", SHORT)]:
        await _put(stack, pipeline["id"], name, value)
    async with pipelines_worker(stack.client, stack.settings):
        run_id = await stack.start(pipeline["id"], ref="main")
        run = await stack.settled(await stack.finished(run_id))
    assert run["status"] == "succeeded", run

    logs = await stack.logs(run_id)
    assert TOKEN not in logs
    assert f"token={MASK}" in logs and f"fork={MASK}" in logs
    assert "line-one-of-the-key" not in logs and "line-two-of-the-key" not in logs
    assert "a" * 100 + MASK in logs  # across the runner's cut of the 64 KiB line
    assert f"short={SHORT}" in logs  # under 4 characters: given, not masked (documented)
    stream = await stack.api.client.get(
        f"/pipelines/runs/{run_id}/logs", params={"follow": "true"}, headers=stack.admin
    )
    assert stream.headers["content-type"].startswith("text/event-stream")
    assert f"token={MASK}" in stream.text and TOKEN not in stream.text
    detail = await stack.api.client.get(f"/pipelines/runs/{run_id}", headers=stack.admin)
    assert TOKEN not in detail.text
    history = await decoded_history(stack.client, str(run["workflow_id"]))
    assert TOKEN not in history and "line-one-of-the-key" not in history


async def test_a_fork_pull_request_gets_no_secrets(stack: Stack, forked: ForkedRepo) -> None:
    step = 'echo "fork=${DEPLOY_TOKEN:-unset}"'
    definition = f"stages:\n  - name: s\n    steps:\n      - name: a\n        run: '{step}'\n"
    forked.init({".idp/pipeline.yaml": definition})
    fork_sha = forked.fork_pull_request(4, {"README": "fork"})
    service = await stack.service(forked.url)
    pipeline = await stack.pipeline(
        service["id"], source="repository", triggers={"pull_request": {"branches": ["main"]}}
    )
    await _put(stack, pipeline["id"], "DEPLOY_TOKEN", TOKEN)
    async with pipelines_worker(stack.client, stack.settings):
        started = await deliver_pull_request(stack, pull_request_payload(forked, 4, fork_sha))
        await stack.until_status(started["id"], "awaiting_approval")
        approved = await stack.api.client.post(
            f"/pipelines/runs/{started['id']}/approve", headers=stack.admin
        )
        assert approved.status_code == 200, approved.text
        run = await stack.finished(started["id"])
        rerun = await stack.api.client.post(
            f"/pipelines/runs/{run['id']}/rerun", json={"all_stages": True}, headers=stack.admin
        )
        assert rerun.status_code == 202, rerun.text
        again = await stack.finished(rerun.json()["id"])
    for done in (run, again):
        assert done["status"] == "succeeded" and done["from_fork"] is True, done
        logs = await stack.logs(done["id"])
        assert "fork=unset" in logs and TOKEN not in logs
        assert "secret(s) are not given" in logs
