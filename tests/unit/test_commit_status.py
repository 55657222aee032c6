"""Commit statuses reported to GitHub, GitLab and Bitbucket, against the local stand-in of their
status APIs (tests.standins.git_host_api)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from pydantic import SecretStr, ValidationError

from core.pipelines.commit_status import (
    BITBUCKET_KEY_LIMIT,
    CommitStatus,
    CommitStatusReporter,
    GitHostConfig,
    StatusReportRejected,
    StatusReportRetryable,
    bitbucket_key,
    build_host_configs,
    state_for_run_status,
)
from tests.helpers import free_port
from tests.standins.git_host_api import GitHostApiStandin

SHA = "abc1234" + "0" * 33


@pytest.fixture
def api() -> Iterator[GitHostApiStandin]:
    with GitHostApiStandin() as standin:
        yield standin


def cloud_configs(api: GitHostApiStandin, **overrides: dict[str, str]) -> dict[str, GitHostConfig]:
    """The three cloud hosts, pointed at the stand-in, with its tokens."""
    entries: dict[str, dict[str, str]] = {
        "github.com": {"api_url": api.github_url, "token": api.github_token},
        "gitlab.com": {"api_url": api.gitlab_url, "token": api.gitlab_token},
        "bitbucket.org": {"api_url": api.bitbucket_url, "token": api.bitbucket_token},
    }
    entries.update(overrides)
    return build_host_configs(entries)


@pytest.fixture
async def reporter(api: GitHostApiStandin) -> AsyncIterator[CommitStatusReporter]:
    async with CommitStatusReporter(cloud_configs(api), timeout=5) as reporter:
        yield reporter


def status(repository: str = "github.com/acme/api", **fields: Any) -> CommitStatus:
    values: dict[str, Any] = {
        "repository": repository,
        "sha": SHA,
        "state": "success",
        "target_url": "https://idp.example.com/pipelines/runs/42",
        "description": "Pipeline succeeded",
        "context": "idp/build",
    }
    values.update(fields)
    return CommitStatus(**values)


# -- GitHub ------------------------------------------------------------------------------------
async def test_github_status_is_posted_to_the_statuses_endpoint(
    api: GitHostApiStandin, reporter: CommitStatusReporter
) -> None:
    result = await reporter.report(status(host_kind="github"))

    assert result.reported and result.http_status == 201 and result.skipped_reason is None
    [request] = api.requests
    assert request.method == "POST"
    assert request.path == f"/github/api/v3/repos/acme/api/statuses/{SHA}"
    assert request.header("Authorization") == f"Bearer {api.github_token}"
    assert request.header("Accept") == "application/vnd.github+json"
    assert request.json() == {
        "state": "success",
        "target_url": "https://idp.example.com/pipelines/runs/42",
        "description": "Pipeline succeeded",
        "context": "idp/build",
    }
    [accepted] = api.statuses
    assert (accepted.host_kind, accepted.repository, accepted.sha) == ("github", "acme/api", SHA)
    assert accepted.context == "idp/build"


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        ("pending", "pending"),
        ("running", "pending"),
        ("success", "success"),
        ("failure", "failure"),
        ("error", "error"),
    ],
)
async def test_github_state_mapping(
    api: GitHostApiStandin, reporter: CommitStatusReporter, state: str, expected: str
) -> None:
    await reporter.report(status(state=state))
    assert api.statuses[-1].state == expected


async def test_github_refuses_a_long_description_so_it_is_truncated_to_140(
    api: GitHostApiStandin, reporter: CommitStatusReporter
) -> None:
    long = "Step 'integration tests' failed: " + "x" * 300
    # The stand-in answers like GitHub: a description over 140 characters is a 422.
    async with httpx.AsyncClient() as client:
        raw = await client.post(
            f"{api.github_url}/repos/acme/api/statuses/{SHA}",
            json={"state": "failure", "description": long, "context": "idp/build"},
            headers={"Authorization": f"Bearer {api.github_token}"},
        )
    assert raw.status_code == 422

    result = await reporter.report(status(state="failure", description=long))

    assert result.reported
    description = api.statuses[-1].description
    assert description is not None and len(description) == 140
    assert description.startswith("Step 'integration tests' failed: xxx")
    assert description.endswith("…")


async def test_github_enterprise_host_uses_its_configured_api_url(api: GitHostApiStandin) -> None:
    configs = build_host_configs(
        {
            "ghe.example.com:8443": {
                "kind": "github",
                "api_url": api.github_url + "/",
                "token": api.github_token,
            }
        }
    )
    async with CommitStatusReporter(configs) as reporter:
        result = await reporter.report(status("ghe.example.com:8443/platform/api"))

    assert result.reported
    assert api.requests[-1].path == f"/github/api/v3/repos/platform/api/statuses/{SHA}"
    assert api.statuses[-1].repository == "platform/api"


# -- GitLab ------------------------------------------------------------------------------------
async def test_gitlab_nested_group_path_is_one_url_encoded_segment(
    api: GitHostApiStandin, reporter: CommitStatusReporter
) -> None:
    result = await reporter.report(
        status("gitlab.com/acme/platform/api", host_kind="gitlab", ref="main")
    )

    assert result.reported and result.http_status == 201
    [request] = api.requests
    assert request.path == f"/gitlab/api/v4/projects/acme%2Fplatform%2Fapi/statuses/{SHA}"
    assert request.header("PRIVATE-TOKEN") == api.gitlab_token
    assert request.header("Authorization") is None
    assert request.json() == {
        "state": "success",
        "name": "idp/build",
        "target_url": "https://idp.example.com/pipelines/runs/42",
        "description": "Pipeline succeeded",
        "ref": "main",
    }
    [accepted] = api.statuses
    assert accepted.repository == "acme/platform/api"
    assert (accepted.name, accepted.ref) == ("idp/build", "main")


async def test_gitlab_standin_does_not_find_an_unencoded_project_path(
    api: GitHostApiStandin,
) -> None:
    async with httpx.AsyncClient() as client:
        raw = await client.post(
            f"{api.gitlab_url}/projects/acme/platform/api/statuses/{SHA}",
            json={"state": "success"},
            headers={"PRIVATE-TOKEN": api.gitlab_token},
        )
    assert raw.status_code == 404
    assert api.statuses == []


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        ("pending", "pending"),
        ("running", "running"),
        ("success", "success"),
        ("failure", "failed"),
        ("error", "canceled"),
    ],
)
async def test_gitlab_state_mapping(
    api: GitHostApiStandin, reporter: CommitStatusReporter, state: str, expected: str
) -> None:
    await reporter.report(status("gitlab.com/acme/api", state=state))
    assert api.statuses[-1].state == expected


async def test_gitlab_pipeline_lifecycle_and_a_repeated_running_state(
    api: GitHostApiStandin, reporter: CommitStatusReporter
) -> None:
    repo = "gitlab.com/acme/api"
    await reporter.report(status(repo, state="pending"))
    await reporter.report(status(repo, state="running"))
    # A repeated attempt: GitLab answers 400 "Cannot transition status via :run from :running".
    again = await reporter.report(status(repo, state="running"))
    await reporter.report(status(repo, state="success"))

    assert again.reported and again.http_status == 400 and again.detail == "already running"
    assert [r.status for r in api.requests] == [201, 201, 400, 201]
    assert [s.state for s in api.statuses] == ["pending", "running", "success"]


async def test_gitlab_self_managed_host_gets_the_default_or_configured_api_url(
    api: GitHostApiStandin,
) -> None:
    default = build_host_configs({"git.example.com": {"kind": "gitlab"}})
    assert default["git.example.com"].api_url == "https://git.example.com/api/v4"

    configs = build_host_configs(
        {
            "git.example.com": {
                "kind": "gitlab",
                "api_url": api.gitlab_url,
                "token": api.gitlab_token,
            }
        }
    )
    async with CommitStatusReporter(configs) as reporter:
        result = await reporter.report(status("git.example.com/team/sub/svc", state="failure"))

    assert result.reported
    assert api.requests[-1].path == f"/gitlab/api/v4/projects/team%2Fsub%2Fsvc/statuses/{SHA}"
    assert (api.statuses[-1].repository, api.statuses[-1].state) == ("team/sub/svc", "failed")


# -- Bitbucket ---------------------------------------------------------------------------------
async def test_bitbucket_build_status_with_bearer_token(
    api: GitHostApiStandin, reporter: CommitStatusReporter
) -> None:
    result = await reporter.report(
        status("bitbucket.org/acme/api", host_kind="bitbucket", state="running", ref="main")
    )

    assert result.reported and result.http_status == 201
    [request] = api.requests
    assert request.path == f"/bitbucket/2.0/repositories/acme/api/commit/{SHA}/statuses/build"
    assert request.header("Authorization") == f"Bearer {api.bitbucket_token}"
    assert request.json() == {
        "key": "idp/build",
        "state": "INPROGRESS",
        "name": "idp/build",
        "url": "https://idp.example.com/pipelines/runs/42",
        "description": "Pipeline succeeded",
        "refname": "main",
    }
    [accepted] = api.statuses
    assert (accepted.repository, accepted.context, accepted.auth) == (
        "acme/api",
        "idp/build",
        "bearer",
    )


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        ("pending", "INPROGRESS"),
        ("running", "INPROGRESS"),
        ("success", "SUCCESSFUL"),
        ("failure", "FAILED"),
        ("error", "STOPPED"),
    ],
)
async def test_bitbucket_state_mapping(
    api: GitHostApiStandin, reporter: CommitStatusReporter, state: str, expected: str
) -> None:
    await reporter.report(status("bitbucket.org/acme/api", state=state))
    assert api.statuses[-1].state == expected


async def test_bitbucket_basic_auth_when_a_username_is_configured() -> None:
    with GitHostApiStandin(bitbucket_username="ci-bot") as api:
        configs = build_host_configs(
            {
                "bitbucket.org": {
                    "api_url": api.bitbucket_url,
                    "token": api.bitbucket_token,
                    "username": "ci-bot",
                }
            }
        )
        async with CommitStatusReporter(configs) as reporter:
            result = await reporter.report(status("bitbucket.org/acme/api"))

        assert result.reported
        assert (api.requests[-1].header("Authorization") or "").startswith("Basic ")
        assert api.statuses[-1].auth == "basic"


async def test_bitbucket_long_context_gets_a_stable_key_of_at_most_40_characters(
    api: GitHostApiStandin, reporter: CommitStatusReporter
) -> None:
    context = "idp/" + "deploy-to-production-eu-west-and-us-east-" * 2
    other = context + "2"
    for state in ("running", "success"):
        await reporter.report(status("bitbucket.org/acme/api", state=state, context=context))
    await reporter.report(status("bitbucket.org/acme/api", context=other))

    keys = [s.context for s in api.statuses]
    assert all(len(key) <= BITBUCKET_KEY_LIMIT for key in keys)
    assert keys[0] == keys[1] == bitbucket_key(context)  # the same status, overwritten
    assert keys[2] != keys[0]
    assert api.statuses[0].name == context  # the full context is still shown


async def test_bitbucket_without_a_link_is_rejected_before_any_request(
    api: GitHostApiStandin, reporter: CommitStatusReporter
) -> None:
    with pytest.raises(StatusReportRejected, match="target_url"):
        await reporter.report(status("bitbucket.org/acme/api", target_url=None))
    assert api.requests == []


async def test_bitbucket_standin_requires_key_state_and_url(api: GitHostApiStandin) -> None:
    async with httpx.AsyncClient() as client:
        raw = await client.post(
            f"{api.bitbucket_url}/repositories/acme/api/commit/{SHA}/statuses/build",
            json={"state": "SUCCESSFUL"},
            headers={"Authorization": f"Bearer {api.bitbucket_token}"},
        )
    assert raw.status_code == 400
    assert set(raw.json()["error"]["fields"]) == {"key", "url"}


# -- skipped -----------------------------------------------------------------------------------
async def test_host_without_a_token_is_skipped_not_an_error(api: GitHostApiStandin) -> None:
    configs = build_host_configs({"github.com": {"api_url": api.github_url, "token": "  "}})
    async with CommitStatusReporter(configs) as reporter:
        no_token = await reporter.report(status("github.com/acme/api"))
        default_cloud = await reporter.report(status("gitlab.com/acme/api"))
        unknown = await reporter.report(status("git.unknown.example/acme/api"))

    assert not no_token.reported and no_token.skipped_reason is not None
    assert "GITHUB_TOKEN" in no_token.skipped_reason
    assert not default_cloud.reported and "GITLAB_TOKEN" in (default_cloud.skipped_reason or "")
    assert not unknown.reported and "git.unknown.example" in (unknown.skipped_reason or "")
    assert api.requests == []


# -- failures ----------------------------------------------------------------------------------
async def test_server_error_is_retryable_and_the_next_attempt_succeeds(
    api: GitHostApiStandin, reporter: CommitStatusReporter
) -> None:
    api.fail_next(1, 502)

    with pytest.raises(StatusReportRetryable) as failure:
        await reporter.report(status())
    assert failure.value.http_status == 502 and failure.value.retryable
    assert "502 Bad Gateway" in failure.value.message

    result = await reporter.report(status())
    assert result.reported and len(api.statuses) == 1


@pytest.mark.parametrize("repository", ["gitlab.com/acme/api", "bitbucket.org/acme/api"])
async def test_rate_limit_is_retryable_with_the_hosts_wait(
    api: GitHostApiStandin, reporter: CommitStatusReporter, repository: str
) -> None:
    api.fail_next(1, 429, headers={"Retry-After": "7"}, body=b'{"message": "slow down"}')

    with pytest.raises(StatusReportRetryable) as failure:
        await reporter.report(status(repository))
    assert failure.value.http_status == 429 and failure.value.retry_after == 7


async def test_github_403_with_an_exhausted_rate_limit_is_retryable(
    api: GitHostApiStandin, reporter: CommitStatusReporter
) -> None:
    api.fail_next(
        1,
        403,
        headers={"x-ratelimit-remaining": "0", "x-ratelimit-reset": "0"},
        body=b'{"message": "API rate limit exceeded"}',
    )
    with pytest.raises(StatusReportRetryable) as failure:
        await reporter.report(status())
    assert failure.value.http_status == 403


async def test_timeout_and_refused_connection_are_retryable(api: GitHostApiStandin) -> None:
    api.fail_next(1, 201, delay=1.0)
    async with CommitStatusReporter(cloud_configs(api), timeout=0.2) as reporter:
        with pytest.raises(StatusReportRetryable, match="did not answer"):
            await reporter.report(status())

    closed = build_host_configs(
        {"github.com": {"api_url": f"http://127.0.0.1:{free_port()}", "token": "ghp_unused1234"}}
    )
    async with CommitStatusReporter(closed) as reporter:
        with pytest.raises(StatusReportRetryable, match="could not be reached"):
            await reporter.report(status())


async def test_unknown_repository_is_rejected_with_an_actionable_message_without_the_token(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    with GitHostApiStandin(repositories={"github": ["acme/other"]}) as api:
        async with CommitStatusReporter(cloud_configs(api)) as reporter:
            with pytest.raises(StatusReportRejected) as failure:
                await reporter.report(status())

    error = failure.value
    assert error.http_status == 404 and not error.retryable
    assert error.message == (
        f"GitHub refused the status for acme/api@{SHA[:7]}: 404 Not Found — does the token "
        "have repo:status scope and access to the repository?"
    )
    for text in (error.message, str(error), repr(error), caplog.text):
        assert api.github_token not in text


@pytest.mark.parametrize(
    ("repository", "hint"),
    [
        ("github.com/acme/api", "token is invalid or expired"),
        ("gitlab.com/acme/platform/api", "invalid, expired or revoked"),
        ("bitbucket.org/acme/api", "invalid or expired"),
    ],
)
async def test_wrong_token_is_rejected_without_showing_either_token(
    api: GitHostApiStandin, repository: str, hint: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "wrong-token-0123456789abcdef"
    configs = cloud_configs(api)
    configs = {
        host: config.model_copy(update={"token": SecretStr(wrong)})
        for host, config in configs.items()
    }
    async with CommitStatusReporter(configs) as reporter:
        with pytest.raises(StatusReportRejected) as failure:
            await reporter.report(status(repository))

    assert failure.value.http_status == 401
    assert "401 Unauthorized" in failure.value.message and hint in failure.value.message
    for text in (failure.value.message, repr(failure.value), caplog.text):
        assert wrong not in text
        assert api.github_token not in text and api.gitlab_token not in text
    assert api.statuses == []


async def test_gitlab_unknown_project_is_rejected(api: GitHostApiStandin) -> None:
    with GitHostApiStandin(repositories={"gitlab": ["acme/api"]}) as other:
        async with CommitStatusReporter(cloud_configs(other)) as reporter:
            with pytest.raises(StatusReportRejected) as failure:
                await reporter.report(status("gitlab.com/acme/platform/api"))
    assert failure.value.http_status == 404
    assert "404 Project Not Found" in failure.value.message
    assert "Developer role" in failure.value.message


async def test_host_kind_that_contradicts_the_configuration_is_rejected(
    api: GitHostApiStandin, reporter: CommitStatusReporter
) -> None:
    with pytest.raises(StatusReportRejected, match="configured as GitHub"):
        await reporter.report(status("github.com/acme/api", host_kind="gitlab"))
    assert api.requests == []


async def test_the_given_transport_is_used(api: GitHostApiStandin) -> None:
    class Counting(httpx.AsyncHTTPTransport):
        calls = 0

        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            Counting.calls += 1
            return await super().handle_async_request(request)

    async with CommitStatusReporter(cloud_configs(api), transport=Counting()) as reporter:
        await reporter.report(status())
    assert Counting.calls == 1 and len(api.statuses) == 1


# -- configuration and inputs ------------------------------------------------------------------
def test_cloud_defaults_and_self_hosted_defaults() -> None:
    configs = build_host_configs(
        {
            "GitHub.com": {"token": "ghp_secret_value_1234"},
            "gitlab.com": {},
            "bitbucket.org": {"kind": "bitbucket"},
            "ghe.example.com": {"kind": "github"},
        }
    )
    assert configs["github.com"].api_url == "https://api.github.com"
    assert configs["github.com"].kind == "github"
    assert configs["gitlab.com"].api_url == "https://gitlab.com/api/v4"
    assert configs["gitlab.com"].token is None
    assert configs["bitbucket.org"].api_url == "https://api.bitbucket.org/2.0"
    assert configs["ghe.example.com"].api_url == "https://ghe.example.com/api/v3"


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ({"git.example.com": {}}, "kind is missing"),
        ({"git.example.com": {"kind": "gitea"}}, "is not github, gitlab or bitbucket"),
        ({"github.com": {"kind": "gitlab"}}, "is github, not gitlab"),
        ({"bb.example.com": {"kind": "bitbucket"}}, "needs its API URL"),
        ({"github.com": {"api_url": "ftp://api.github.com"}}, "must be http(s)"),
        ({"github.com": {"api_url": "not a url"}}, "API URL"),
        ({"github.com": {"api_url": "https://u:p@api.github.com"}}, "credentials"),
        ({"github.com": {"api_url": "https://api.github.com?x=1"}}, "query"),
        ({"github.com": {"tokn": "x"}}, "unknown setting"),
        ({"https://github.com/": {}}, "not a host name"),
    ],
)
def test_bad_host_configuration_is_a_clear_value_error(
    entries: dict[str, dict[str, str]], message: str
) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        build_host_configs(entries)


def test_bad_configuration_message_never_shows_the_token() -> None:
    token = "ghp_very_secret_token_value_42"
    with pytest.raises(ValueError) as failure:
        build_host_configs({"github.com": {"api_url": "ftp://x", "token": token}})
    assert token not in str(failure.value)


def test_token_is_not_in_the_configs_repr() -> None:
    token = "ghp_very_secret_token_value_42"
    config = build_host_configs({"github.com": {"token": token}})["github.com"]
    assert config.token is not None and config.token.get_secret_value() == token
    for text in (repr(config), str(config), config.model_dump_json(), repr({"c": config})):
        assert token not in text


def test_commit_status_validates_its_inputs() -> None:
    with pytest.raises(ValidationError, match="not a commit id"):
        status(sha="main")
    with pytest.raises(ValidationError, match="not a repository key"):
        status("github.com/acme")
    with pytest.raises(ValidationError, match="not a repository key"):
        status("github.com/acme/../../etc")
    with pytest.raises(ValidationError):
        status(state="cancelled")
    normalised = status("GitHub.com/Acme/API", sha=SHA.upper())
    assert normalised.repository == "github.com/acme/api" and normalised.sha == SHA


def test_run_status_to_commit_state() -> None:
    assert [
        state_for_run_status(s) for s in ("queued", "running", "succeeded", "failed", "cancelled")
    ] == ["pending", "running", "success", "failure", "error"]
    assert state_for_run_status("awaiting_approval") == "pending"
    with pytest.raises(ValueError, match="no commit state"):
        state_for_run_status("exploded")


async def test_a_connections_token_replaces_the_configured_one_and_none_means_skipped(
    api: GitHostApiStandin,
) -> None:
    configs = cloud_configs(api, **{"github.com": {"api_url": api.github_url, "token": "global"}})
    async with CommitStatusReporter(configs, timeout=5) as reporter:
        sent = await reporter.report(status(), token=api.github_token)
        skipped = await reporter.report(status(), default_token=False)
    assert sent.reported and not skipped.reported and "no token" in str(skipped.skipped_reason)
    [request] = api.requests  # the skipped one sent nothing, nor the global token
    assert request.header("Authorization") == f"Bearer {api.github_token}"
