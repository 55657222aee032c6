"""Webhooks from Git hosts: signatures and tokens, and payloads read into GitEvents."""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from core.errors import BadRequest, Unauthorized
from core.pipelines.triggers import matches, parse_triggers
from core.pipelines.webhooks import (
    EVENT_HEADERS,
    ParsedDelivery,
    delivery_repository,
    parse,
    sign,
    verify,
)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "webhooks"
SECRET = "s3cr3t-webhook-key"
SELF_HOSTED = {"git.acme.internal": "gitlab"}
GH_REPO = "github.com/acme-corp/payments-api"
GL_REPO = "git.acme.internal/finance/core/ledger"
BB_REPO = "bitbucket.org/acme-team/mobile-app"


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text())
    return data


def body_of(data: Any) -> bytes:
    return json.dumps(data).encode()


def github(event: str, data: Any, **headers: str) -> ParsedDelivery:
    return parse(
        "github",
        {"X-GitHub-Event": event, "X-GitHub-Delivery": "72d3162e-cc78-11e3-81ab-4c9367dc0958"}
        | headers,
        body_of(data),
    )


def gitlab(event: str, data: Any, **headers: str) -> ParsedDelivery:
    return parse(
        "gitlab",
        {"X-Gitlab-Event": event, "X-Gitlab-Event-UUID": "13792a34-cac6-4fda-95a8-c58e00a3954e"}
        | headers,
        body_of(data),
        SELF_HOSTED,
    )


def bitbucket(event: str, data: Any) -> ParsedDelivery:
    return parse(
        "bitbucket",
        {
            "X-Event-Key": event,
            "X-Request-UUID": "b1f4c0de-7a2e-4d6b-9c1a-3e5f7a9b1c2d",
            "X-Hook-UUID": "{e8a1d2c3-b4f5-4a6b-8c7d-9e0f1a2b3c4d}",
        },
        body_of(data),
    )


def _fails(exc_type: type[Exception], call: Any, *args: Any) -> str:
    with pytest.raises(exc_type) as caught:
        call(*args)
    return str(caught.value)


# --- verify --------------------------------------------------------------------------------


def test_github_signature_is_hmac_sha256_of_the_raw_body() -> None:
    body = (FIXTURES / "github_push.json").read_bytes()
    digest = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert sign(body, SECRET) == f"sha256={digest}"
    verify("github", {"X-Hub-Signature-256": f"sha256={digest}"}, body, SECRET)
    # Header names in any case, as proxies and ASGI servers send them.
    verify("github", {"x-hub-signature-256": f"sha256={digest}"}, body, SECRET)
    verify("github", {"X-HUB-SIGNATURE-256": f"sha256={digest.upper()}"}, body, SECRET)


@pytest.mark.parametrize(
    ("host", "header"), [("github", "X-Hub-Signature-256"), ("bitbucket", "X-Hub-Signature")]
)
def test_a_wrong_signature_is_refused(host: str, header: str) -> None:
    body = b'{"a": 1}'
    verify(host, {header: sign(body, SECRET)}, body, SECRET)
    cases = {
        "wrong secret": sign(body, "another-secret"),
        "changed body": sign(b'{"a": 2}', SECRET),
    }
    for why, signature in cases.items():
        with pytest.raises(Unauthorized) as caught:
            verify(host, {header: signature}, body, SECRET)
        assert caught.value.code == "invalid_signature", why
        assert caught.value.status_code == 401
        assert "does not match" in caught.value.message
    message = _fails(Unauthorized, verify, host, {header: "sha1=abc"}, body, SECRET)
    assert "sha256=<hex digest>" in message


@pytest.mark.parametrize("host", ["github", "gitlab", "bitbucket"])
def test_a_missing_signature_header_says_it_is_missing(host: str) -> None:
    with pytest.raises(Unauthorized) as caught:
        verify(host, {"Content-Type": "application/json"}, b"{}", SECRET)
    assert caught.value.code == "invalid_signature"
    assert "missing" in caught.value.message
    assert "does not match" not in caught.value.message


def test_github_sha1_signature_alone_is_not_enough() -> None:
    sha1 = "sha1=" + hmac.new(SECRET.encode(), b"{}", hashlib.sha1).hexdigest()
    message = _fails(Unauthorized, verify, "github", {"X-Hub-Signature": sha1}, b"{}", SECRET)
    assert "X-Hub-Signature-256" in message and "SHA-1" in message


def test_gitlab_token_is_compared_with_the_secret() -> None:
    verify("gitlab", {"X-Gitlab-Token": SECRET}, b"{}", SECRET)
    verify("gitlab", {"x-gitlab-token": SECRET}, b"anything", SECRET)
    with pytest.raises(Unauthorized) as caught:
        verify("gitlab", {"X-Gitlab-Token": SECRET + "x"}, b"{}", SECRET)
    assert caught.value.code == "invalid_signature"
    assert "does not match" in caught.value.message
    # A token that is not ASCII is a mismatch, not a crash.
    message = _fails(Unauthorized, verify, "gitlab", {"X-Gitlab-Token": "sécret"}, b"{}", SECRET)
    assert "does not match" in message


def test_an_empty_secret_verifies_nothing() -> None:
    body = b"{}"
    message = _fails(
        Unauthorized, verify, "github", {"X-Hub-Signature-256": sign(body, "")}, body, ""
    )
    assert "no webhook secret" in message
    assert "no webhook secret" in _fails(
        Unauthorized, verify, "gitlab", {"X-Gitlab-Token": ""}, body, ""
    )


def test_an_unknown_host_kind_is_a_bad_request() -> None:
    assert "gitea" in _fails(BadRequest, verify, "gitea", {}, b"{}", SECRET)
    assert "gitea" in _fails(BadRequest, parse, "gitea", {}, b"{}")


# --- GitHub --------------------------------------------------------------------------------


def test_github_branch_push() -> None:
    parsed = github("push", load("github_push"))
    assert parsed.host_event == "push"
    assert parsed.delivery_id == "72d3162e-cc78-11e3-81ab-4c9367dc0958"
    assert parsed.ignored_reason is None
    assert len(parsed.events) == 1
    event = parsed.event
    assert event is not None
    assert event.model_dump() == {
        "kind": "push",
        "host_kind": "github",
        "delivery_id": "72d3162e-cc78-11e3-81ab-4c9367dc0958",
        "repository": GH_REPO,
        "ref": "refs/heads/main",
        "branch": "main",
        "target_branch": None,
        "tag": None,
        "sha": "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c",
        "before_sha": "6113728f27ae82c7b1a177c8d03f9e96e0adf246",
        "pull_request": None,
        "action": None,
        "deleted": False,
        "fork": False,
        "sender": "ada-l",
        "message": "Retry card captures on timeout",
        "url": "https://github.com/Acme-Corp/Payments-API/commit/0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c",
    }
    assert matches(parse_triggers({"push": {"branches": ["main"]}}), event)


def test_github_tag_push_is_a_tag_event() -> None:
    event = github("push", load("github_push_tag")).event
    assert event is not None
    assert (event.kind, event.tag, event.ref, event.branch) == (
        "tag",
        "v1.4.0",
        "refs/tags/v1.4.0",
        None,
    )
    assert event.before_sha is None  # created: GitHub's all-zero "before"
    assert event.sha == "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c"
    assert event.sender == "release-bot"
    assert matches(parse_triggers({"tag": {"patterns": ["v*"]}}), event)


def test_github_deleted_branch_push_is_flagged_and_starts_nothing() -> None:
    event = github("push", load("github_push_deleted")).event
    assert event is not None
    assert event.kind == "push" and event.deleted
    assert event.branch == "feature/old-checkout"
    assert event.sha is None
    assert event.before_sha == "9c2f1e0b7a51d3e4c8f6a2b1d0e9f8a7b6c5d4e3"
    assert event.message is None
    assert event.url.startswith("https://github.com/Acme-Corp/Payments-API/compare/")  # type: ignore[union-attr]
    assert not matches(parse_triggers({"push": {}}), event)


def test_github_pull_request() -> None:
    data = load("github_pull_request")
    event = github("pull_request", data).event
    assert event is not None
    assert event.kind == "pull_request"
    assert event.action == "opened"
    assert event.pull_request == 57
    assert event.ref == "refs/pull/57/head"
    assert event.branch == "refund-idempotency"
    assert event.target_branch == "main"
    assert event.sha == "a7c3e5f1b2d4069e8f7a6b5c4d3e2f1a0b9c8d7e"
    assert event.repository == GH_REPO  # the base repository, not the fork
    assert event.fork  # from grace-h/Payments-API into Acme-Corp/Payments-API
    assert event.sender == "grace-h"
    assert event.url == "https://github.com/Acme-Corp/Payments-API/pull/57"
    assert matches(parse_triggers({"pull_request": {"branches": ["main"]}}), event)

    synchronize = copy.deepcopy(data) | {
        "action": "synchronize",
        "before": "1111111111111111111111111111111111111111",
        "after": "a7c3e5f1b2d4069e8f7a6b5c4d3e2f1a0b9c8d7e",
    }
    event = github("pull_request", synchronize).event
    assert event is not None
    assert (event.action, event.before_sha) == (
        "synchronize",
        "1111111111111111111111111111111111111111",
    )
    for action in ("reopened", "closed", "edited", "ready_for_review"):
        event = github("pull_request", data | {"action": action}).event
        assert event is not None and event.action == action


def test_pull_requests_from_forks_are_flagged_on_every_host() -> None:
    data = load("github_pull_request")
    same = copy.deepcopy(data)
    same["pull_request"]["head"]["repo"] = same["pull_request"]["base"]["repo"]
    assert github("pull_request", same).event.fork is False  # type: ignore[union-attr]
    gone = copy.deepcopy(data)
    gone["pull_request"]["head"]["repo"] = None  # the fork was deleted: unknown is a fork
    assert github("pull_request", gone).event.fork is True  # type: ignore[union-attr]
    gl = load("gitlab_merge_request")
    gl["object_attributes"]["source_project_id"] = 999
    assert gitlab("Merge Request Hook", gl).event.fork is True  # type: ignore[union-attr]
    bb = load("bitbucket_pullrequest")
    bb["pullrequest"]["source"]["repository"]["full_name"] = "mallory/Mobile-App"
    assert bitbucket("pullrequest:created", bb).event.fork is True  # type: ignore[union-attr]


def test_github_merged_pull_request_is_merged_not_closed() -> None:
    data = load("github_pull_request")
    data["action"] = "closed"
    data["pull_request"]["merged"] = True
    event = github("pull_request", data).event
    assert event is not None and event.action == "merged"


def test_github_pull_request_actions_without_pipelines_are_ignored() -> None:
    parsed = github("pull_request", load("github_pull_request") | {"action": "labeled"})
    assert parsed.events == [] and parsed.event is None
    assert parsed.ignored_reason is not None and "labeled" in parsed.ignored_reason


def test_github_ping() -> None:
    parsed = github("ping", load("github_ping"))
    event = parsed.event
    assert event is not None
    assert (event.kind, event.repository, event.sender) == ("ping", GH_REPO, "ada-l")
    assert event.delivery_id == parsed.delivery_id
    # An organisation's hook pings without a repository.
    org = load("github_ping")
    del org["repository"]
    org_event = github("ping", org).event
    assert org_event is not None and org_event.repository is None


def test_github_create_and_unknown_events_are_ignored_with_a_reason() -> None:
    create = github("create", {"ref": "v1.4.0", "ref_type": "tag"})
    assert create.events == []
    assert create.ignored_reason is not None and "push" in create.ignored_reason
    # Unknown events are not read at all: even a body that is not JSON is only ignored.
    issues = github("issues", "not an object")
    assert issues.event is None and issues.host_event == "issues"
    assert issues.ignored_reason is not None and "'issues'" in issues.ignored_reason
    garbage = parse("github", {"X-GitHub-Event": "star"}, b"\xff not json")
    assert garbage.event is None and garbage.delivery_id is None


def test_github_push_to_another_kind_of_ref_is_ignored() -> None:
    parsed = github("push", load("github_push") | {"ref": "refs/notes/commits"})
    assert parsed.event is None
    assert parsed.ignored_reason is not None and "refs/notes/commits" in parsed.ignored_reason


def test_github_form_encoded_body() -> None:
    body = urlencode({"payload": json.dumps(load("github_push"))}).encode()
    parsed = parse(
        "github",
        {"X-GitHub-Event": "push", "Content-Type": "application/x-www-form-urlencoded"},
        body,
    )
    assert parsed.event is not None and parsed.event.branch == "main"


def test_github_enterprise_host_from_git_hosts() -> None:
    data = load("github_push")
    data["repository"]["html_url"] = "https://GHE.acme.internal/Acme-Corp/Payments-API"
    with pytest.raises(BadRequest) as caught:
        github("push", data)
    assert "repository.html_url" in caught.value.message
    assert "GIT_HOSTS" in caught.value.message
    parsed = parse(
        "github",
        {"X-GitHub-Event": "push"},
        body_of(data),
        {"ghe.acme.internal": "github"},
    )
    assert parsed.event is not None
    assert parsed.event.repository == "ghe.acme.internal/acme-corp/payments-api"


# --- GitLab --------------------------------------------------------------------------------


def test_gitlab_push_on_a_self_hosted_instance_with_nested_groups() -> None:
    parsed = gitlab("Push Hook", load("gitlab_push"))
    assert parsed.host_event == "Push Hook"
    assert parsed.delivery_id == "13792a34-cac6-4fda-95a8-c58e00a3954e"
    event = parsed.event
    assert event is not None
    assert event.kind == "push" and event.host_kind == "gitlab"
    assert event.repository == GL_REPO
    assert (event.ref, event.branch) == ("refs/heads/release/2.3", "release/2.3")
    assert event.sha == "e4d3c2b1a0f9e8d7c6b5a4f3e2d1c0b9a8f7e6d5"
    assert event.before_sha == "5b1f3a9c7e2d4f6a8b0c1d2e3f4a5b6c7d8e9f01"
    assert event.sender == "linus.t"
    assert event.message == "Bump version to 2.3.1"  # the head commit, not the first one
    assert event.url is not None and event.url.endswith(
        "/-/commit/e4d3c2b1a0f9e8d7c6b5a4f3e2d1c0b9a8f7e6d5"
    )
    assert not event.deleted


def test_gitlab_without_git_hosts_does_not_know_the_host() -> None:
    with pytest.raises(BadRequest) as caught:
        parse("gitlab", {"X-Gitlab-Event": "Push Hook"}, body_of(load("gitlab_push")))
    assert "git.acme.internal" in caught.value.message
    assert "project.web_url" in caught.value.message


def test_gitlab_delivery_id_prefers_the_idempotency_key() -> None:
    data = load("gitlab_push")
    parsed = gitlab(
        "Push Hook", data, **{"Idempotency-Key": "0f0e0d0c-aaaa-4bbb-8ccc-000000000001"}
    )
    assert parsed.delivery_id == "0f0e0d0c-aaaa-4bbb-8ccc-000000000001"
    assert parsed.event is not None and parsed.event.delivery_id == parsed.delivery_id
    older = parse(
        "gitlab",
        {
            "x-gitlab-event": "Push Hook",
            "x-gitlab-webhook-uuid": "7d1e6c2a-0000-4000-8000-00000000abcd",
        },
        body_of(data),
        SELF_HOSTED,
    )
    assert older.delivery_id == "7d1e6c2a-0000-4000-8000-00000000abcd"


def test_gitlab_deleted_branch_push() -> None:
    data = load("gitlab_push") | {
        "after": "0000000000000000000000000000000000000000",
        "checkout_sha": None,
        "commits": [],
        "total_commits_count": 0,
    }
    event = gitlab("Push Hook", data).event
    assert event is not None
    assert event.deleted and event.kind == "push"
    assert event.sha is None and event.url is None
    assert event.before_sha == "5b1f3a9c7e2d4f6a8b0c1d2e3f4a5b6c7d8e9f01"


def test_gitlab_tag_push_uses_the_tagged_commit() -> None:
    event = gitlab("Tag Push Hook", load("gitlab_tag_push")).event
    assert event is not None
    assert (event.kind, event.tag, event.ref) == ("tag", "v2.3.1", "refs/tags/v2.3.1")
    # `after` is the annotated tag object; checkout_sha is the commit to build.
    assert event.sha == "e4d3c2b1a0f9e8d7c6b5a4f3e2d1c0b9a8f7e6d5"
    assert event.before_sha is None
    deleted = gitlab(
        "Tag Push Hook",
        load("gitlab_tag_push") | {"after": "0" * 40, "checkout_sha": None},
    ).event
    assert deleted is not None and deleted.deleted and deleted.kind == "tag"


def test_gitlab_merge_request() -> None:
    data = load("gitlab_merge_request")
    event = gitlab("Merge Request Hook", data).event
    assert event is not None
    assert event.kind == "pull_request" and event.action == "opened"
    assert event.pull_request == 318
    assert event.ref == "refs/merge-requests/318/head"
    assert (event.branch, event.target_branch) == ("batch-period-close", "main")
    assert event.sha == "b7e9d1c3a5f7092e4d6c8b0a2f4e6d8c0b2a4f6e"
    assert event.sender == "barbara.l"
    assert event.message == "Close periods 500 accounts at a time"
    assert event.url == "https://git.acme.internal/Finance/Core/Ledger/-/merge_requests/318"
    assert not event.fork  # source_project_id == target_project_id
    assert event.repository == GL_REPO


@pytest.mark.parametrize(
    ("action", "extra", "expected"),
    [
        ("reopen", {}, "reopened"),
        ("close", {}, "closed"),
        ("merge", {}, "merged"),
        ("update", {"oldrev": "9999999999999999999999999999999999999999"}, "synchronize"),
        ("update", {}, "edited"),
    ],
)
def test_gitlab_merge_request_actions(action: str, extra: dict[str, str], expected: str) -> None:
    data = load("gitlab_merge_request")
    data["object_attributes"] |= {"action": action, **extra}
    event = gitlab("Merge Request Hook", data).event
    assert event is not None and event.action == expected
    if "oldrev" in extra:
        assert event.before_sha == extra["oldrev"]


def test_gitlab_merge_request_marked_ready() -> None:
    data = load("gitlab_merge_request")
    data["object_attributes"]["action"] = "update"
    data["changes"] = {"draft": {"previous": True, "current": False}}
    event = gitlab("Merge Request Hook", data).event
    assert event is not None and event.action == "ready_for_review"


def test_gitlab_merge_request_approval_is_ignored() -> None:
    data = load("gitlab_merge_request")
    data["object_attributes"]["action"] = "approved"
    parsed = gitlab("Merge Request Hook", data)
    assert parsed.event is None
    assert parsed.ignored_reason is not None and "approved" in parsed.ignored_reason


def test_gitlab_system_hook_is_a_ping_and_other_events_are_ignored() -> None:
    ping = gitlab("System Hook", {"event_name": "repository_update", "user_username": "root"})
    assert ping.event is not None
    assert (ping.event.kind, ping.event.sender) == ("ping", "root")
    note = gitlab("Note Hook", {"object_kind": "note"})
    assert note.event is None and note.ignored_reason is not None


# --- Bitbucket Cloud ----------------------------------------------------------------------


def test_bitbucket_push_with_several_changes_gives_one_event_each() -> None:
    parsed = bitbucket("repo:push", load("bitbucket_push"))
    assert parsed.host_event == "repo:push"
    # X-Request-UUID names the delivery; X-Hook-UUID names the webhook and is not used.
    assert parsed.delivery_id == "b1f4c0de-7a2e-4d6b-9c1a-3e5f7a9b1c2d"
    summary = [(e.kind, e.branch or e.tag, e.deleted, e.sha, e.before_sha) for e in parsed.events]
    head = "3f9a1c7e5b2d4f6a8c0e1b3d5f7a9c2e4b6d8f0a"
    assert summary == [
        ("push", "main", False, head, "1e2d3c4b5a69788796a5b4c3d2e1f0a9b8c7d6e5"),
        ("push", "spike/offline-sync", True, None, "aa11bb22cc33dd44ee55ff6677889900aabbccdd"),
        ("push", "release/5.2", False, head, None),
        ("tag", "5.2.0", False, head, None),
    ]
    assert parsed.event == parsed.events[0]
    main = parsed.events[0]
    assert main.repository == BB_REPO
    assert main.ref == "refs/heads/main"
    assert main.sender == "mhamilton"
    assert main.message == "Fix crash when the camera permission is revoked"
    assert main.url == f"https://bitbucket.org/acme-team/Mobile-App/commits/{head}"
    assert parsed.events[3].ref == "refs/tags/5.2.0"
    assert all(e.delivery_id == parsed.delivery_id for e in parsed.events)
    # Each branch can start its own runs; the deleted one starts none.
    triggers = parse_triggers({"push": {"branches": ["main", "release/*", "spike/*"]}})
    assert [matches(triggers, e) for e in parsed.events] == [True, False, True, False]


def test_bitbucket_push_of_nothing_is_ignored() -> None:
    data = load("bitbucket_push")
    data["push"]["changes"] = []
    parsed = bitbucket("repo:push", data)
    assert parsed.events == [] and parsed.ignored_reason is not None


def test_bitbucket_pull_request() -> None:
    data = load("bitbucket_pullrequest")
    event = bitbucket("pullrequest:created", data).event
    assert event is not None
    assert event.kind == "pull_request" and event.action == "opened"
    assert event.pull_request == 212
    assert (event.branch, event.target_branch) == ("feature/tile-cache", "develop")
    assert event.ref == "refs/heads/feature/tile-cache"
    assert event.sha == "4c5d6e7f8a9b"  # Bitbucket sends a short hash here
    assert not event.fork  # the same repository on both sides
    assert event.repository == BB_REPO
    assert event.sender == "kjohnson"
    assert event.url == "https://bitbucket.org/acme-team/Mobile-App/pull-requests/212"
    assert matches(parse_triggers({"pull_request": {"branches": ["develop"]}}), event)
    for key, action in [
        ("pullrequest:updated", "synchronize"),
        ("pullrequest:fulfilled", "merged"),
        ("pullrequest:rejected", "closed"),
    ]:
        other = bitbucket(key, data).event
        assert other is not None and other.action == action
    fork = copy.deepcopy(data)
    fork["pullrequest"]["source"]["repository"]["full_name"] = "kjohnson/Mobile-App"
    forked = bitbucket("pullrequest:created", fork).event
    assert forked is not None and forked.ref is None and forked.branch == "feature/tile-cache"


def test_bitbucket_ping_and_ignored_events() -> None:
    ping = bitbucket("diagnostics:ping", {"test": True})
    assert ping.event is not None and ping.event.kind == "ping"
    approved = bitbucket("pullrequest:approved", load("bitbucket_pullrequest"))
    assert approved.event is None
    assert approved.ignored_reason is not None and "pullrequest:approved" in approved.ignored_reason


def test_bitbucket_headers_in_lower_case() -> None:
    parsed = parse(
        "bitbucket",
        {"x-event-key": "repo:push", "x-request-uuid": "abc-123"},
        body_of(load("bitbucket_push")),
    )
    assert parsed.delivery_id == "abc-123" and len(parsed.events) == 4


# --- Bad deliveries ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "header"),
    [("github", "X-GitHub-Event"), ("gitlab", "X-Gitlab-Event"), ("bitbucket", "X-Event-Key")],
)
def test_a_delivery_without_its_event_header_is_a_bad_request(host: str, header: str) -> None:
    with pytest.raises(BadRequest) as caught:
        parse(host, {"Content-Type": "application/json"}, b"{}")
    assert header in caught.value.message
    assert caught.value.status_code == 400


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"{not json", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (b"[1, 2]", "JSON object"),
        (b"", "not valid JSON"),
    ],
)
def test_malformed_bodies(body: bytes, says: str) -> None:
    for host, event in [("github", "push"), ("gitlab", "Push Hook"), ("bitbucket", "repo:push")]:
        header = {"github": "X-GitHub-Event", "gitlab": "X-Gitlab-Event"}.get(host, "X-Event-Key")
        with pytest.raises(BadRequest) as caught:
            parse(host, {header: event}, body)
        assert says in caught.value.message


def _drop(data: dict[str, Any], path: str) -> dict[str, Any]:
    data = copy.deepcopy(data)
    *parents, last = path.split(".")
    node = data
    for part in parents:
        node = node[part]
    del node[last]
    return data


@pytest.mark.parametrize(
    ("call", "fixture", "path"),
    [
        (lambda d: github("push", d), "github_push", "ref"),
        (lambda d: github("push", d), "github_push", "repository.html_url"),
        (lambda d: github("push", d), "github_push", "after"),
        (lambda d: github("pull_request", d), "github_pull_request", "pull_request.head.ref"),
        (lambda d: github("pull_request", d), "github_pull_request", "pull_request.base.ref"),
        (lambda d: github("pull_request", d), "github_pull_request", "action"),
        (lambda d: gitlab("Push Hook", d), "gitlab_push", "ref"),
        (lambda d: gitlab("Push Hook", d), "gitlab_push", "after"),
        (lambda d: gitlab("Merge Request Hook", d), "gitlab_merge_request", "object_attributes"),
        (
            lambda d: gitlab("Merge Request Hook", d),
            "gitlab_merge_request",
            "object_attributes.target_branch",
        ),
        (lambda d: bitbucket("repo:push", d), "bitbucket_push", "push"),
        (lambda d: bitbucket("repo:push", d), "bitbucket_push", "repository.links"),
        (
            lambda d: bitbucket("pullrequest:created", d),
            "bitbucket_pullrequest",
            "pullrequest.destination.branch.name",
        ),
    ],
)
def test_missing_required_fields_are_named(call: Any, fixture: str, path: str) -> None:
    with pytest.raises(BadRequest) as caught:
        call(_drop(load(fixture), path))
    message = caught.value.message
    assert "payload has no" in message or "payload's" in message
    named = path if not path.endswith("links") else "repository.links.html.href"
    assert named in message or path.split(".")[-1] in message


def test_gitlab_push_without_a_project_url_is_a_bad_request() -> None:
    data = _drop(_drop(load("gitlab_push"), "project.web_url"), "repository.homepage")
    message = _fails(BadRequest, gitlab, "Push Hook", data)
    assert "project.web_url" in message


def test_bitbucket_change_without_new_or_old_is_a_bad_request() -> None:
    data = load("bitbucket_push")
    data["push"]["changes"][1] = {"new": None, "old": None, "closed": True}
    message = _fails(BadRequest, bitbucket, "repo:push", data)
    assert "push.changes[1]" in message


def test_wrong_types_are_bad_requests_not_crashes() -> None:
    data = load("github_pull_request")
    data["number"] = "57"
    assert "number" in _fails(BadRequest, github, "pull_request", data)
    data = load("bitbucket_push")
    data["push"]["changes"] = {"0": {}}
    assert "push.changes" in _fails(BadRequest, bitbucket, "repo:push", data)
    data = load("github_push")
    data["repository"]["html_url"] = "not a url"
    assert "repository.html_url" in _fails(BadRequest, github, "push", data)


@pytest.mark.parametrize(
    ("host", "event", "fixture"),
    [
        ("github", "push", "github_push"),
        ("gitlab", "Push Hook", "gitlab_push"),
        ("bitbucket", "repo:push", "bitbucket_push"),
    ],
)
def test_the_repository_is_read_before_the_signature_to_find_the_connection(
    host: str, event: str, fixture: str
) -> None:
    body = (FIXTURES / f"{fixture}.json").read_bytes()
    headers = {EVENT_HEADERS[host]: event}
    expected = parse(host, headers, body, SELF_HOSTED).events[0].repository
    assert expected is not None
    assert delivery_repository(host, headers, body, SELF_HOSTED) == expected
    # Whatever the event (even one the platform ignores); nothing for a non-payload.
    other = {EVENT_HEADERS[host]: "something-else"}
    assert delivery_repository(host, other, body, SELF_HOSTED) == expected
    assert delivery_repository(host, headers, b"not json") is None
    assert delivery_repository(host, headers, b'{"repository": {"html_url": "ftp://x"}}') is None
