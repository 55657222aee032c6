"""Report a pipeline run's state on its commit through the Git host's status API.

One platform state (`CommitState`) is mapped to each host's own:

============  ==========  ===========  ===========
platform      GitHub      GitLab       Bitbucket
============  ==========  ===========  ===========
``pending``   pending     pending      INPROGRESS
``running``   pending     running      INPROGRESS
``success``   success     success      SUCCESSFUL
``failure``   failure     failed       FAILED
``error``     error       canceled     STOPPED
============  ==========  ===========  ===========

`error` means the run ended without a verdict on the code: it was cancelled, or the platform
could not run it. GitLab and Bitbucket have a state for exactly that (canceled, STOPPED), shown
apart from a failed build; GitHub has only `error` (shown like a failure).

The endpoints (`{api}` is the host's API base URL, see `DEFAULT_API_URLS`):

* GitHub: ``POST {api}/repos/{owner}/{repo}/statuses/{sha}`` with ``state``, ``target_url``,
  ``description`` (at most 140 characters, or GitHub answers 422) and ``context``; the token
  as ``Authorization: Bearer``.
* GitLab: ``POST {api}/projects/{id}/statuses/{sha}`` where ``id`` is the project's full path
  (every group, nested ones too) URL-encoded as one segment (``acme%2Fplatform%2Fapi``), with
  ``state``, ``name`` (the context), ``target_url``, ``description`` and, when known, ``ref``;
  the token in ``PRIVATE-TOKEN``. GitLab answers 400 "Cannot transition status via :run from
  :running" when a status that is already pending or running is set to pending or running
  again (a repeated attempt, or a second run of the same commit): that is taken as reported.
* Bitbucket Cloud: ``POST {api}/repositories/{workspace}/{repo_slug}/commit/{sha}/statuses/build``
  with ``key`` (at most 40 characters and stable per context, so later states overwrite the
  first), ``state``, ``name``, ``url`` (required) and ``description``; the token as
  ``Authorization: Bearer``, or HTTP basic auth with ``username:app password`` when a username
  is configured. Bitbucket Data Center's build-status API (a different shape) is not spoken.

Failures: a 5xx, 408, 425 or 429 answer (and GitHub's 403 when its rate limit is used up), a
timeout or a connection failure raise `StatusReportRetryable`; any other refusal raises
`StatusReportRejected` with a message saying what to fix. No message, log line or exception
ever contains a token.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
import time
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any, ClassVar, Literal, cast
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ConfigDict, SecretStr, field_validator

from core.notifications.senders.errors import redact, retry_after_seconds

log = logging.getLogger("idp.pipelines.commit_status")

CommitState = Literal["pending", "running", "success", "failure", "error"]
HostKind = Literal["github", "gitlab", "bitbucket"]

HOST_KINDS: tuple[HostKind, ...] = ("github", "gitlab", "bitbucket")
CLOUD_HOSTS: dict[str, HostKind] = {
    "github.com": "github",
    "gitlab.com": "gitlab",
    "bitbucket.org": "bitbucket",
}
DEFAULT_API_URLS: dict[str, str] = {
    "github.com": "https://api.github.com",
    "gitlab.com": "https://gitlab.com/api/v4",
    "bitbucket.org": "https://api.bitbucket.org/2.0",
}
#: Where a self-hosted host's API is when GIT_HOST_APIS does not say (GitHub Enterprise Server,
#: GitLab self-managed). A self-hosted Bitbucket has no default: its base URL must be given.
SELF_HOSTED_API_PATHS: dict[HostKind, str] = {"github": "/api/v3", "gitlab": "/api/v4"}
#: The settings holding each kind's token, named in messages about a missing token.
TOKEN_SETTINGS: dict[HostKind, str] = {
    "github": "GITHUB_TOKEN",
    "gitlab": "GITLAB_TOKEN",
    "bitbucket": "BITBUCKET_TOKEN",
}
HOST_NAMES: dict[HostKind, str] = {"github": "GitHub", "gitlab": "GitLab", "bitbucket": "Bitbucket"}

GITHUB_STATES: dict[CommitState, str] = {
    "pending": "pending",
    "running": "pending",
    "success": "success",
    "failure": "failure",
    "error": "error",
}
GITLAB_STATES: dict[CommitState, str] = {
    "pending": "pending",
    "running": "running",
    "success": "success",
    "failure": "failed",
    "error": "canceled",
}
BITBUCKET_STATES: dict[CommitState, str] = {
    "pending": "INPROGRESS",
    "running": "INPROGRESS",
    "success": "SUCCESSFUL",
    "failure": "FAILED",
    "error": "STOPPED",
}
HOST_STATES: dict[HostKind, dict[CommitState, str]] = {
    "github": GITHUB_STATES,
    "gitlab": GITLAB_STATES,
    "bitbucket": BITBUCKET_STATES,
}
#: A pipeline run's status (core.models.pipelines.PipelineRun.status) as a commit state.
RUN_STATUS_STATES: dict[str, CommitState] = {
    "awaiting_approval": "pending",  # a fork's pull request, not yet approved
    "queued": "pending",
    "running": "running",
    "succeeded": "success",
    "failed": "failure",
    "cancelled": "error",
}

# Longest description each host takes. GitHub answers 422 above 140 characters; GitLab and
# Bitbucket take more, and are kept to 255 characters to stay well inside their limits.
DESCRIPTION_LIMITS: dict[HostKind, int] = {"github": 140, "gitlab": 255, "bitbucket": 255}
CONTEXT_LIMIT = 255
BITBUCKET_KEY_LIMIT = 40
USER_AGENT = "idp-commit-status/1"
GITHUB_API_VERSION = "2022-11-28"

#: Statuses after which the same request may succeed later (besides every 5xx).
RETRYABLE_STATUSES = frozenset({408, 425, 429})

_HOST = re.compile(r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:[0-9]{1,5})?$")
_SEGMENT = re.compile(r"^[a-z0-9_.-]+$")
_SHA = re.compile(r"^[0-9a-f]{7,64}$")
_GITLAB_TRANSITION = re.compile(r"Cannot transition status via :(\w+) from :(\w+)")
_ACTIVE_GITLAB_STATES = frozenset({"pending", "running"})
_CONFIG_FIELDS = frozenset({"kind", "api_url", "token", "username"})


# -- errors and results ----------------------------------------------------------------------
class StatusReportError(Exception):
    """A status that was not reported. `message` is meant for a person and never contains a
    token; `http_status` is the host's answer, when there was one."""

    retryable: ClassVar[bool] = False

    def __init__(self, message: str, *, http_status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.http_status = http_status

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, http_status={self.http_status})"


class StatusReportRetryable(StatusReportError):
    """The host could not take the status now (5xx, 429, timeout, no connection): try again,
    after `retry_after` seconds when the host said."""

    retryable = True

    def __init__(
        self, message: str, *, http_status: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message, http_status=http_status)
        self.retry_after = retry_after


class StatusReportRejected(StatusReportError):
    """The host refused the status (bad token, no access, unknown repository or commit, invalid
    request): another attempt cannot succeed until someone changes something."""


class ReportResult(BaseModel):
    """What became of one status: reported, or skipped (with the reason) because this platform
    has no way to report it (no token or API configured for the host). A skip is not an error."""

    model_config = ConfigDict(frozen=True)

    reported: bool
    skipped_reason: str | None = None
    http_status: int | None = None
    detail: str | None = None  # e.g. GitLab's "already running"


# -- configuration ---------------------------------------------------------------------------
class GitHostConfig(BaseModel):
    """How to reach one Git host's status API. `token` is a SecretStr: it shows as ********** in
    repr() and logs; `username` switches Bitbucket to basic auth (username + app password)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: HostKind
    api_url: str
    token: SecretStr | None = None
    username: str | None = None

    @field_validator("api_url")
    @classmethod
    def _check_api_url(cls, value: str) -> str:
        return _normalise_api_url(value)

    @field_validator("token", mode="before")
    @classmethod
    def _blank_token(cls, value: Any) -> Any:
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        if isinstance(value, str):
            value = value.strip()
            return value or None
        return value

    @field_validator("username")
    @classmethod
    def _blank_username(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip()
        if ":" in value:
            raise ValueError("a username cannot contain ':'")
        return value or None


def _normalise_api_url(value: str) -> str:
    raw = value.strip().rstrip("/")
    try:
        url = httpx.URL(raw)
    except (httpx.InvalidURL, TypeError, ValueError):
        raise ValueError("the API URL is not a valid URL") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError(
            "the API URL must be http(s)://host[/path], e.g. https://git.example.com/api/v4"
        )
    if url.userinfo:
        raise ValueError("the API URL must not carry credentials; configure the token instead")
    if url.query or url.fragment:
        raise ValueError("the API URL must not have a query or a fragment")
    return raw


def default_api_url(host: str, kind: HostKind) -> str | None:
    """The API base URL of a cloud host, or the usual one of a self-hosted GitHub or GitLab;
    None for a self-hosted Bitbucket (it must be configured)."""
    if host in DEFAULT_API_URLS:
        return DEFAULT_API_URLS[host]
    path = SELF_HOSTED_API_PATHS.get(kind)
    return f"https://{host}{path}" if path else None


def _normalise_host(host: str) -> str:
    value = host.strip().lower().removeprefix("www.")
    if not _HOST.fullmatch(value):
        raise ValueError(
            f"git host {host!r} is not a host name (write it as in repository URLs, e.g. "
            "git.example.com or git.example.com:8443, without a scheme or path)"
        )
    return value


def build_host_configs(entries: Mapping[str, Mapping[str, str]]) -> dict[str, GitHostConfig]:
    """Build the per-host configuration from `{host: {kind, api_url?, token?, username?}}`.

    `kind` may be left out for github.com, gitlab.com and bitbucket.org; `api_url` defaults to
    the cloud API, or to https://<host>/api/v3 (GitHub Enterprise) or /api/v4 (GitLab) for a
    self-hosted host; a self-hosted Bitbucket needs it. A blank token means none. Raises
    ValueError naming the host and what is wrong (never echoing a token)."""
    configs: dict[str, GitHostConfig] = {}
    for raw_host, entry in entries.items():
        host = _normalise_host(raw_host)
        if host in configs:
            raise ValueError(f"git host {host!r} is configured twice")
        unknown = sorted(set(entry) - _CONFIG_FIELDS)
        if unknown:
            raise ValueError(
                f"git host {host!r}: unknown setting(s) {', '.join(unknown)} "
                f"(known: {', '.join(sorted(_CONFIG_FIELDS))})"
            )
        values = {k: v.strip() for k, v in entry.items() if isinstance(v, str) and v.strip()}
        cloud_kind = CLOUD_HOSTS.get(host)
        named = values.get("kind", "").lower() or cloud_kind
        if named is None:
            raise ValueError(
                f"git host {host!r}: the kind is missing (github, gitlab or bitbucket)"
            )
        if named not in HOST_KINDS:
            raise ValueError(
                f"git host {host!r}: kind {named!r} is not github, gitlab or bitbucket"
            )
        kind = cast(HostKind, named)
        if cloud_kind is not None and kind != cloud_kind:
            raise ValueError(f"git host {host!r} is {cloud_kind}, not {kind}")
        api_url = values.get("api_url") or default_api_url(host, kind)
        if api_url is None:
            raise ValueError(
                f"git host {host!r}: a self-hosted {HOST_NAMES[kind]} needs its API URL "
                "(GIT_HOST_APIS)"
            )
        try:
            api_url = _normalise_api_url(api_url)
        except ValueError as exc:
            raise ValueError(f"git host {host!r}: {exc}") from None
        if ":" in values.get("username", ""):
            raise ValueError(f"git host {host!r}: a username cannot contain ':'")
        configs[host] = GitHostConfig(
            kind=kind,
            api_url=api_url,
            token=SecretStr(values["token"]) if "token" in values else None,
            username=values.get("username"),
        )
    return configs


# -- the status ------------------------------------------------------------------------------
class CommitStatus(BaseModel):
    """One state to show on one commit. `repository` is the catalog's key (`host/owner/name`,
    GitLab `host/group/…/name`, in lower case); `context` names the check and stays the same for
    a pipeline across its states (e.g. `idp/<pipeline name>`), so each state replaces the last."""

    model_config = ConfigDict(frozen=True)

    host_kind: HostKind | None = None
    repository: str
    sha: str
    state: CommitState
    target_url: str | None = None
    description: str | None = None
    context: str
    ref: str | None = None  # the branch or tag, when known (GitLab's ref, Bitbucket's refname)

    @field_validator("repository")
    @classmethod
    def _check_repository(cls, value: str) -> str:
        key = value.strip().strip("/").lower()
        host, _, path = key.partition("/")
        segments = path.split("/") if path else []
        if (
            not _HOST.fullmatch(host)
            or len(segments) < 2
            or not all(_SEGMENT.fullmatch(s) and s.strip(".") for s in segments)
        ):
            raise ValueError(f"repository {value!r} is not a repository key (host/owner/name)")
        return key

    @field_validator("sha")
    @classmethod
    def _check_sha(cls, value: str) -> str:
        sha = value.strip().lower()
        if not _SHA.fullmatch(sha):
            raise ValueError(f"sha {value!r} is not a commit id (7 to 64 hexadecimal digits)")
        return sha

    @field_validator("context")
    @classmethod
    def _check_context(cls, value: str) -> str:
        context = " ".join(value.split())
        if not context:
            raise ValueError("the context must not be empty")
        return context[:CONTEXT_LIMIT]

    @field_validator("target_url")
    @classmethod
    def _check_target_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        try:
            url = httpx.URL(value.strip())
        except (httpx.InvalidURL, TypeError, ValueError):
            raise ValueError("target_url is not a valid URL") from None
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError("target_url must be an http(s) URL")
        return value.strip()

    @property
    def host(self) -> str:
        return self.repository.partition("/")[0]

    @property
    def path(self) -> str:
        return self.repository.partition("/")[2]


def state_for_run_status(status: str) -> CommitState:
    """The commit state for a pipeline run's status (awaiting_approval, queued, running,
    succeeded, failed, cancelled). Raises ValueError for another value."""
    try:
        return RUN_STATUS_STATES[status]
    except KeyError:
        raise ValueError(
            f"run status {status!r} has no commit state (known: {', '.join(RUN_STATUS_STATES)})"
        ) from None


def truncate(text: str | None, limit: int) -> str | None:
    """`text` on one line, cut to `limit` characters with an ellipsis when longer."""
    if text is None:
        return None
    flat = " ".join(text.split())
    if len(flat) <= limit:
        return flat
    return flat[: limit - 1].rstrip() + "…"


def bitbucket_key(context: str) -> str:
    """Bitbucket's `key` for a context: the context itself when it fits in 40 characters, else
    its start and a hash of all of it (stable, and distinct for distinct contexts)."""
    if len(context) <= BITBUCKET_KEY_LIMIT:
        return context
    digest = hashlib.sha256(context.encode()).hexdigest()[:8]
    return f"{context[: BITBUCKET_KEY_LIMIT - 9]}-{digest}"


# -- the reporter ----------------------------------------------------------------------------
class _Request:
    __slots__ = ("body", "headers", "url")

    def __init__(self, url: str, headers: dict[str, str], body: dict[str, Any]) -> None:
        self.url, self.headers, self.body = url, headers, body


class CommitStatusReporter:
    """Reports commit statuses with one HTTP client; close it with `aclose()` (or use
    `async with`). `hosts` maps a host (as in repository keys) to its configuration; a cloud
    host without an entry uses its public API and, having no token, is skipped."""

    def __init__(
        self,
        hosts: Mapping[str, GitHostConfig] | None = None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = 10.0,
    ) -> None:
        self._hosts = {_normalise_host(h): c for h, c in (hosts or {}).items()}
        self._timeout = timeout
        self._client = httpx.AsyncClient(
            transport=transport,
            timeout=timeout,
            follow_redirects=False,
            headers={"User-Agent": USER_AGENT},
        )

    async def __aenter__(self) -> CommitStatusReporter:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()

    def config_for(self, host: str) -> GitHostConfig | None:
        """The configuration of `host`: its own entry, else the cloud default; None for a
        self-hosted host nobody configured."""
        host = host.lower()
        config = self._hosts.get(host)
        if config is None and host in CLOUD_HOSTS:
            config = GitHostConfig(kind=CLOUD_HOSTS[host], api_url=DEFAULT_API_URLS[host])
        return config

    async def report(
        self, status: CommitStatus, *, token: str | None = None, default_token: bool = True
    ) -> ReportResult:
        """Send `status` to its host, with `token` (a Git host connection's) or else, when
        `default_token`, the host's configured one. Returns a skipped result when no token or
        API is there for the host; raises StatusReportRetryable or StatusReportRejected."""
        host = status.host
        config = self.config_for(host)
        if config is None:
            return self._skipped(
                status, f"no status API is configured for {host} (GIT_HOSTS, GIT_HOST_APIS)"
            )
        if token is not None or not default_token:
            config = config.model_copy(update={"token": SecretStr(token) if token else None})
        if config.token is None:
            setting = TOKEN_SETTINGS[config.kind]
            return self._skipped(status, f"no token is configured for {host} (set {setting})")
        token = config.token.get_secret_value()
        name = HOST_NAMES[config.kind]
        where = f"{status.path}@{status.sha[:7]}"
        if status.host_kind is not None and status.host_kind != config.kind:
            raise StatusReportRejected(
                f"{host} is configured as {name}, but the status for {where} is for "
                f"{HOST_NAMES[status.host_kind]}; check the kind configured for {host}"
            )
        request = self._build(config, status, token)
        try:
            response = await self._client.post(
                request.url,
                content=json.dumps(request.body).encode(),
                headers=request.headers,
            )
        except httpx.TimeoutException:
            raise StatusReportRetryable(
                f"{name} ({_origin(config.api_url)}) did not answer within {self._timeout:g}s "
                f"while reporting {status.state} for {where}"
            ) from None
        except (httpx.UnsupportedProtocol, httpx.InvalidURL, httpx.LocalProtocolError) as exc:
            message = f"the status request to {name} for {where} could not be made: {exc}"
            raise StatusReportRejected(redact(message, token)) from None
        except httpx.TransportError as exc:
            detail = (str(exc) or type(exc).__name__)[:200]
            message = (
                f"{name} ({_origin(config.api_url)}) could not be reached while reporting "
                f"{status.state} for {where}: {detail}"
            )
            raise StatusReportRetryable(redact(message, token)) from None

        code = response.status_code
        if 200 <= code < 300:
            log.info("reported %s (%s) on %s for %s", status.state, status.context, where, host)
            return ReportResult(reported=True, http_status=code)
        said = _api_message(response, token)
        if config.kind == "gitlab" and code == 400 and said:
            already = _gitlab_already(said, GITLAB_STATES[status.state])
            if already:
                log.info(
                    "%s (%s) on %s is already %s", status.state, status.context, where, already
                )
                return ReportResult(reported=True, http_status=code, detail=f"already {already}")
        answered = f"{code} {_phrase(code)}".rstrip()
        # GitHub's "Not Found" or GitLab's "401 Unauthorized" would only repeat the status line.
        repeats = said and said.lower() in (answered.lower(), _phrase(code).lower())
        said_part = f" ({name} said: {said})" if said and not repeats else ""
        retry_after = _retry_after(config.kind, response)
        rate_limited = code in (403, 429) and (
            retry_after is not None or response.headers.get("x-ratelimit-remaining") == "0"
        )
        if code >= 500 or code in RETRYABLE_STATUSES or rate_limited:
            wait = f"; retry after {retry_after:g}s" if retry_after is not None else ""
            message = redact(
                f"{name} could not take the status for {where} now: {answered}{said_part}{wait}",
                token,
            )
            log.warning("%s", message)
            raise StatusReportRetryable(message, http_status=code, retry_after=retry_after)
        hint = _hint(config, code)
        message = redact(
            f"{name} refused the status for {where}: {answered}{said_part}"
            + (f" — {hint}" if hint else ""),
            token,
        )
        log.warning("%s", message)
        raise StatusReportRejected(message, http_status=code)

    # -- per host ------------------------------------------------------------------------------
    def _build(self, config: GitHostConfig, status: CommitStatus, token: str) -> _Request:
        segments = status.path.split("/")
        name = HOST_NAMES[config.kind]
        if config.kind != "gitlab" and len(segments) != 2:
            raise StatusReportRejected(
                f"{status.repository} is not a {name} repository (owner/name expected)"
            )
        description = truncate(status.description, DESCRIPTION_LIMITS[config.kind])
        state = HOST_STATES[config.kind][status.state]
        headers = {"Content-Type": "application/json"}
        body: dict[str, Any]
        if config.kind == "github":
            owner, repo = (quote(s, safe="") for s in segments)
            url = f"{config.api_url}/repos/{owner}/{repo}/statuses/{status.sha}"
            headers |= {
                "Accept": "application/vnd.github+json",
                "X-GitHub-Api-Version": GITHUB_API_VERSION,
                "Authorization": f"Bearer {token}",
            }
            body = {"state": state, "context": status.context}
            if status.target_url:
                body["target_url"] = status.target_url
            if description:
                body["description"] = description
        elif config.kind == "gitlab":
            project = quote(status.path, safe="")
            url = f"{config.api_url}/projects/{project}/statuses/{status.sha}"
            headers |= {"Accept": "application/json", "PRIVATE-TOKEN": token}
            body = {"state": state, "name": status.context}
            if status.target_url:
                body["target_url"] = status.target_url
            if description:
                body["description"] = description
            if status.ref:
                body["ref"] = status.ref
        else:
            if not status.target_url:
                raise StatusReportRejected(
                    f"Bitbucket needs a link (target_url) with every status; none was given "
                    f"for {status.path}@{status.sha[:7]} (is the platform URL configured?)"
                )
            workspace, slug = (quote(s, safe="") for s in segments)
            url = (
                f"{config.api_url}/repositories/{workspace}/{slug}"
                f"/commit/{status.sha}/statuses/build"
            )
            headers["Accept"] = "application/json"
            if config.username:  # an app password (or API token) with its account's username
                pair = f"{config.username}:{token}".encode()
                headers["Authorization"] = f"Basic {base64.b64encode(pair).decode('ascii')}"
            else:
                headers["Authorization"] = f"Bearer {token}"
            body = {
                "key": bitbucket_key(status.context),
                "state": state,
                "name": status.context,
                "url": status.target_url,
            }
            if description:
                body["description"] = description
            if status.ref:
                body["refname"] = status.ref
        return _Request(url, headers, body)

    @staticmethod
    def _skipped(status: CommitStatus, reason: str) -> ReportResult:
        log.info(
            "commit status %s for %s@%s not reported: %s",
            status.state,
            status.repository,
            status.sha[:7],
            reason,
        )
        return ReportResult(reported=False, skipped_reason=reason)


# -- helpers ---------------------------------------------------------------------------------
_HINTS: dict[tuple[HostKind, int], str] = {
    ("github", 401): "the token is invalid or expired; check the token configured for the host",
    ("github", 403): (
        "the token may not set statuses: it needs the repo:status scope (classic token) or "
        "Commit statuses: write (fine-grained token)"
    ),
    ("github", 404): ("does the token have repo:status scope and access to the repository?"),
    ("github", 422): "is the commit in the repository, and the status valid?",
    ("gitlab", 401): "the token is invalid, expired or revoked",
    ("gitlab", 403): "the token needs the api scope and at least the Developer role in the project",
    ("gitlab", 404): (
        "does the project exist at this path, and can the token (api scope, Developer role) "
        "see it and the commit?"
    ),
    ("bitbucket", 401): "the token (or the username and app password) is invalid or expired",
    ("bitbucket", 403): (
        "the token lacks access to the repository, or another account created the status with "
        "this key (only it, or a repository admin, may change it)"
    ),
    ("bitbucket", 404): "does the repository exist, can the token see it, and is the commit in it?",
}


def _hint(config: GitHostConfig, code: int) -> str | None:
    if 300 <= code < 400:
        return f"the API answered a redirect; is the API URL {config.api_url} right?"
    return _HINTS.get((config.kind, code))


def _phrase(code: int) -> str:
    try:
        return HTTPStatus(code).phrase
    except ValueError:
        return ""


def _origin(api_url: str) -> str:
    url = httpx.URL(api_url)
    return f"{url.host}:{url.port}" if url.port else url.host


def _api_message(response: httpx.Response, token: str) -> str | None:
    """The host's own explanation, on one line and short: GitHub's message and errors, GitLab's
    message or error, Bitbucket's error.message and fields."""
    try:
        data = response.json()
    except ValueError:
        return None
    parts: list[str] = []

    def add(value: Any) -> None:
        if isinstance(value, str):
            if value.strip():
                parts.append(value.strip())
        elif isinstance(value, dict):
            for field, problem in value.items():
                text = "; ".join(map(str, problem)) if isinstance(problem, list) else str(problem)
                parts.append(f"{field}: {text}")
        elif isinstance(value, list):
            for item in value:
                if isinstance(item, dict):
                    add(item.get("message") or {k: v for k, v in item.items() if k != "resource"})
                else:
                    add(str(item))

    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict):  # Bitbucket
            add(error.get("message"))
            add(error.get("fields"))
        else:
            add(data.get("message"))
            add(error)
            add(data.get("errors"))
    text = " ".join("; ".join(parts).split())
    if not text:
        return None
    return redact(text[:300] + ("…" if len(text) > 300 else ""), token)


def _gitlab_already(said: str, wanted: str) -> str | None:
    """The state a GitLab status is already in, when GitLab refused to set it to `wanted` only
    because it is already pending or running and `wanted` is pending or running."""
    match = _GITLAB_TRANSITION.search(said)
    if match and wanted in _ACTIVE_GITLAB_STATES and match[2] in _ACTIVE_GITLAB_STATES:
        return match[2]
    return None


def _retry_after(kind: HostKind, response: httpx.Response) -> float | None:
    """How long the host asked us to wait: Retry-After, or GitHub's exhausted rate limit (403 or
    429 with x-ratelimit-remaining: 0, until x-ratelimit-reset). None when it did not say."""
    wait = retry_after_seconds(response.headers.get("retry-after"))
    if wait is not None:
        return wait
    if kind == "github" and response.headers.get("x-ratelimit-remaining") == "0":
        reset = response.headers.get("x-ratelimit-reset", "")
        if reset.isdigit():
            return retry_after_seconds(str(max(int(reset) - int(time.time()), 0)))
        return 60.0
    return None
