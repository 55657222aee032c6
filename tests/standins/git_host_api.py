"""A stand-in for the commit status endpoints of GitHub, GitLab and Bitbucket Cloud, and for
reading a repository (what a Git host connection's token can see): one server on 127.0.0.1
speaking all three, each under its own API base URL.

    with GitHostApiStandin() as api:
        config = GitHostConfig(kind="github", api_url=api.github_url, token=api.github_token)
        ...
        api.statuses[-1].state  # as the host stores it: "success", "failed", "SUCCESSFUL"...

Like the real APIs it checks the token (401 otherwise: GitHub's `Authorization: Bearer|token`,
GitLab's `PRIVATE-TOKEN` or Bearer, Bitbucket's Bearer or basic auth with a username), answers
404 for a repository it does not know (when `repositories` is given), and validates bodies:
GitHub 422 on a bad state or a description over 140 characters; GitLab 400 on a missing or bad
state and on setting a pending/running status to pending/running again ("Cannot transition
status via :enqueue from :pending"); Bitbucket 400 when key, state or url is missing or bad.
A GitLab project is one URL-encoded path segment (`acme%2Fplatform%2Fapi`); an unencoded slash
makes the path unknown (404), as on GitLab.

`fail_next(n, status, ...)` answers the next n requests with that status (and headers, e.g.
Retry-After), optionally after a delay. Every request is recorded (`requests`); every accepted
status too (`statuses`), as the host stored it.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote

from tests.standins import BackgroundHTTPServer, StandinRequestHandler

DEFAULT_GITHUB_TOKEN = "ghp_standinGithubToken0123456789"
DEFAULT_GITLAB_TOKEN = "glpat-standinGitlabToken012345"
DEFAULT_BITBUCKET_TOKEN = "bbat-standinBitbucketToken0123"

GITHUB_PREFIX = "/github/api/v3"
GITLAB_PREFIX = "/gitlab/api/v4"
BITBUCKET_PREFIX = "/bitbucket/2.0"

GITHUB_STATES = frozenset({"pending", "success", "failure", "error"})
GITLAB_STATES = frozenset({"pending", "running", "success", "failed", "canceled", "skipped"})
BITBUCKET_STATES = frozenset({"INPROGRESS", "SUCCESSFUL", "FAILED", "STOPPED"})
GITHUB_DESCRIPTION_LIMIT = 140
BITBUCKET_KEY_LIMIT = 40

_SHA = r"(?P<sha>[0-9a-fA-F]{7,64})"
_GITHUB = re.compile(rf"^{GITHUB_PREFIX}/repos/(?P<owner>[^/]+)/(?P<repo>[^/]+)/statuses/{_SHA}/?$")
_GITLAB = re.compile(rf"^{GITLAB_PREFIX}/projects/(?P<project>[^/]+)/statuses/{_SHA}/?$")
_GITHUB_REPO = re.compile(rf"^{GITHUB_PREFIX}/repos/(?P<owner>[^/]+)/(?P<repo>[^/]+)/?$")
_GITLAB_REPO = re.compile(rf"^{GITLAB_PREFIX}/projects/(?P<project>[^/]+)/?$")
_BITBUCKET_REPO = re.compile(
    rf"^{BITBUCKET_PREFIX}/repositories/(?P<workspace>[^/]+)/(?P<slug>[^/]+)/?$"
)
_BITBUCKET = re.compile(
    rf"^{BITBUCKET_PREFIX}/repositories/(?P<workspace>[^/]+)/(?P<slug>[^/]+)"
    rf"/commit/{_SHA}/statuses/build/?$"
)


@dataclass(frozen=True)
class RecordedRequest:
    """One request the stand-in received, and what it answered."""

    method: str
    path: str  # raw, as sent (percent-encoding kept)
    headers: dict[str, str]
    body: bytes
    status: int
    time: float = field(default_factory=time.time)

    def header(self, name: str) -> str | None:
        for key, value in self.headers.items():
            if key.lower() == name.lower():
                return value
        return None

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(frozen=True)
class AcceptedStatus:
    """A status the stand-in accepted, in the host's own terms."""

    host_kind: str  # github | gitlab | bitbucket
    repository: str  # owner/name, or GitLab's decoded full path group/…/name
    sha: str
    state: str  # the host's state: pending/success… (GitHub), failed/canceled… (GitLab), FAILED…
    target_url: str | None
    description: str | None
    context: str  # GitHub's context, GitLab's name, Bitbucket's key
    name: str | None  # GitLab's name, Bitbucket's name (None on GitHub)
    ref: str | None  # GitLab's ref, Bitbucket's refname
    auth: str  # how the request authenticated: bearer, token, private-token or basic


class _Answer(Exception):
    def __init__(self, status: int, data: Any, headers: dict[str, str] | None = None) -> None:
        super().__init__(status)
        self.status, self.data, self.headers = status, data, headers or {}


class GitHostApiStandin(BackgroundHTTPServer):
    def __init__(
        self,
        *,
        github_token: str = DEFAULT_GITHUB_TOKEN,
        gitlab_token: str = DEFAULT_GITLAB_TOKEN,
        bitbucket_token: str = DEFAULT_BITBUCKET_TOKEN,
        bitbucket_username: str | None = None,
        repositories: Mapping[str, Iterable[str]] | None = None,
        port: int | None = None,
    ) -> None:
        """`repositories` maps a host kind to the repository paths it has (case-insensitive);
        without it every repository exists. `bitbucket_username` makes Bitbucket expect basic
        auth (username + token as app password) instead of a Bearer token."""
        super().__init__(_GitHostHandler, port=port)
        self.github_token = github_token
        self.gitlab_token = gitlab_token
        self.bitbucket_token = bitbucket_token
        self.bitbucket_username = bitbucket_username
        self.repositories = (
            None
            if repositories is None
            else {kind: {p.lower() for p in paths} for kind, paths in repositories.items()}
        )
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._statuses: list[AcceptedStatus] = []
        self._script: list[tuple[int, dict[str, str], bytes, float]] = []
        # GitLab: the current state of each (project, sha, name) status
        self._gitlab_current: dict[tuple[str, str, str], str] = {}
        self._next_id = 1

    # -- what tests configure and read ---------------------------------------------------------
    @property
    def github_url(self) -> str:
        return f"{self.origin}{GITHUB_PREFIX}"

    @property
    def gitlab_url(self) -> str:
        return f"{self.origin}{GITLAB_PREFIX}"

    @property
    def bitbucket_url(self) -> str:
        return f"{self.origin}{BITBUCKET_PREFIX}"

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    @property
    def statuses(self) -> list[AcceptedStatus]:
        with self._lock:
            return list(self._statuses)

    def fail_next(
        self,
        n: int,
        status: int = 502,
        *,
        headers: Mapping[str, str] | None = None,
        body: bytes = b"<html><body>502 Bad Gateway</body></html>",
        delay: float = 0,
    ) -> None:
        """Answer the next `n` requests with `status` (and headers, e.g. Retry-After) after
        waiting `delay` seconds, whatever they are."""
        with self._lock:
            self._script += [(status, dict(headers or {}), body, delay)] * n

    # -- request handling (called from the server's threads) -----------------------------------
    def _take_scripted(self) -> tuple[int, dict[str, str], bytes, float] | None:
        with self._lock:
            return self._script.pop(0) if self._script else None

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(request)

    def _accept(self, status: AcceptedStatus) -> int:
        with self._lock:
            self._statuses.append(status)
            self._next_id += 1
            return self._next_id - 1

    def _has_repository(self, kind: str, path: str) -> bool:
        return self.repositories is None or path.lower() in self.repositories.get(kind, set())

    def _gitlab_transition(self, key: tuple[str, str, str], state: str) -> None:
        """GitLab reuses a status that is pending or running (and starts a new one after a
        finished one); an active status cannot be enqueued or run again."""
        with self._lock:
            current = self._gitlab_current.get(key)
            event = {"pending": "enqueue", "running": "run"}.get(state)
            # pending -> running is the one move between active states GitLab allows.
            moving_on = current == "pending" and state == "running"
            if current in ("pending", "running") and event is not None and not moving_on:
                reason = f'Status cannot transition via "{event}"'
                message = f"Cannot transition status via :{event} from :{current}"
                raise _Answer(400, {"message": f"{message} (Reason(s): {reason})"})
            self._gitlab_current[key] = state


class _GitHostHandler(StandinRequestHandler):
    def do_POST(self) -> None:
        standin: GitHostApiStandin = self.server.owner
        body = self.read_body()
        headers = {name: value for name, value in self.headers.items()}
        path = self.path.split("?", 1)[0]

        scripted = standin._take_scripted()
        if scripted is not None:
            status, extra, answer, delay = scripted
            if delay:
                time.sleep(delay)
            standin._record(RecordedRequest(self.command, self.path, headers, body, status))
            kind = "application/json" if answer.startswith(b"{") else "text/html"
            self.answer(status, answer, content_type=kind, headers=extra)
            return

        try:
            if match := _GITHUB.match(path):
                status, data = self._github(standin, match, body)
            elif match := _GITLAB.match(path):
                status, data = self._gitlab(standin, match, body)
            elif match := _BITBUCKET.match(path):
                status, data = self._bitbucket(standin, match, body)
            else:
                raise _Answer(404, {"message": "Not Found"})
        except _Answer as answer:
            standin._record(RecordedRequest(self.command, self.path, headers, body, answer.status))
            self.answer_json(answer.status, answer.data, headers=answer.headers)
            return
        standin._record(RecordedRequest(self.command, self.path, headers, body, status))
        self.answer_json(status, data)

    def do_GET(self) -> None:
        """A repository's metadata (what a connection's token can see): GitHub's
        `GET /repos/{owner}/{repo}`, GitLab's `GET /projects/{id}`, Bitbucket's
        `GET /repositories/{workspace}/{slug}`; 401 for a wrong token, 404 for an unknown
        repository, as the hosts answer."""
        standin: GitHostApiStandin = self.server.owner
        headers = {name: value for name, value in self.headers.items()}
        path = self.path.split("?", 1)[0]
        try:
            if match := _GITHUB_REPO.match(path):
                auth = self.headers.get("Authorization") or ""
                scheme, _, token = auth.partition(" ")
                if scheme.lower() not in ("bearer", "token") or token != standin.github_token:
                    raise _Answer(401, {"message": "Bad credentials"})
                kind, repository = "github", f"{unquote(match['owner'])}/{unquote(match['repo'])}"
            elif match := _GITLAB_REPO.match(path):
                if self.headers.get("PRIVATE-TOKEN") != standin.gitlab_token:
                    raise _Answer(401, {"message": "401 Unauthorized"})
                kind, repository = "gitlab", unquote(match["project"])
            elif match := _BITBUCKET_REPO.match(path):
                self._bitbucket_auth(standin)
                kind = "bitbucket"
                repository = f"{unquote(match['workspace'])}/{unquote(match['slug'])}"
            else:
                raise _Answer(404, {"message": "Not Found"})
            if not standin._has_repository(kind, repository):
                raise _Answer(404, {"message": "Not Found"})
        except _Answer as answer:
            standin._record(RecordedRequest(self.command, self.path, headers, b"", answer.status))
            self.answer_json(answer.status, answer.data, headers=answer.headers)
            return
        standin._record(RecordedRequest(self.command, self.path, headers, b"", 200))
        self.answer_json(200, {"full_name": repository, "private": True})

    # -- GitHub --------------------------------------------------------------------------------
    def _github(
        self, standin: GitHostApiStandin, match: re.Match[str], body: bytes
    ) -> tuple[int, dict[str, Any]]:
        docs = "https://docs.github.com/rest/commits/statuses#create-a-commit-status"
        authorization = self.headers.get("Authorization")
        if not authorization:
            raise _Answer(401, {"message": "Requires authentication", "documentation_url": docs})
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() not in ("bearer", "token") or token.strip() != standin.github_token:
            raise _Answer(401, {"message": "Bad credentials", "documentation_url": docs})
        repository = f"{unquote(match['owner'])}/{unquote(match['repo'])}"
        if not standin._has_repository("github", repository):
            raise _Answer(404, {"message": "Not Found", "documentation_url": docs})
        data = _json_object(body)
        if data is None:
            raise _Answer(400, {"message": "Problems parsing JSON", "documentation_url": docs})
        errors = []
        state = data.get("state")
        if state not in GITHUB_STATES:
            errors.append(_github_error("state", "state is not included in the list"))
        description = data.get("description")
        if isinstance(description, str) and len(description) > GITHUB_DESCRIPTION_LIMIT:
            errors.append(
                _github_error("description", "description is too long (maximum is 140 characters)")
            )
        if errors:
            raise _Answer(
                422, {"message": "Validation Failed", "errors": errors, "documentation_url": docs}
            )
        context = str(data.get("context") or "default")
        status_id = standin._accept(
            AcceptedStatus(
                host_kind="github",
                repository=repository,
                sha=match["sha"],
                state=str(state),
                target_url=data.get("target_url"),
                description=description,
                context=context,
                name=None,
                ref=None,
                auth=scheme.lower(),
            )
        )
        return 201, {
            "url": f"{standin.github_url}/repos/{repository}/statuses/{match['sha']}",
            "id": status_id,
            "state": state,
            "description": description,
            "target_url": data.get("target_url"),
            "context": context,
            "created_at": _now(),
            "updated_at": _now(),
        }

    # -- GitLab --------------------------------------------------------------------------------
    def _gitlab(
        self, standin: GitHostApiStandin, match: re.Match[str], body: bytes
    ) -> tuple[int, dict[str, Any]]:
        token = self.headers.get("PRIVATE-TOKEN")
        auth = "private-token"
        if token is None:
            scheme, _, bearer = (self.headers.get("Authorization") or "").partition(" ")
            token, auth = (bearer.strip(), "bearer") if scheme.lower() == "bearer" else (None, "")
        if token != standin.gitlab_token:
            raise _Answer(401, {"message": "401 Unauthorized"})
        project = unquote(match["project"])
        if not standin._has_repository("gitlab", project):
            raise _Answer(404, {"message": "404 Project Not Found"})
        content_type = self.headers.get("Content-Type") or ""
        if content_type.startswith("application/json"):
            data = _json_object(body)
            if data is None:
                raise _Answer(400, {"error": "The provided content-type is not supported."})
        else:
            form = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
            data = {key: values[-1] for key, values in form.items()}
        state = data.get("state")
        if state is None:
            raise _Answer(400, {"error": "state is missing"})
        if state not in GITLAB_STATES:
            raise _Answer(400, {"error": "state does not have a valid value"})
        name = str(data.get("name") or data.get("context") or "default")
        sha = match["sha"]
        standin._gitlab_transition((project.lower(), sha, name), str(state))
        status_id = standin._accept(
            AcceptedStatus(
                host_kind="gitlab",
                repository=project,
                sha=sha,
                state=str(state),
                target_url=data.get("target_url"),
                description=data.get("description"),
                context=name,
                name=name,
                ref=data.get("ref"),
                auth=auth,
            )
        )
        return 201, {
            "id": status_id,
            "sha": sha,
            "ref": data.get("ref"),
            "status": state,
            "name": name,
            "target_url": data.get("target_url"),
            "description": data.get("description"),
            "created_at": _now(),
            "allow_failure": False,
        }

    # -- Bitbucket -----------------------------------------------------------------------------
    def _bitbucket(
        self, standin: GitHostApiStandin, match: re.Match[str], body: bytes
    ) -> tuple[int, dict[str, Any]]:
        auth = self._bitbucket_auth(standin)
        repository = f"{unquote(match['workspace'])}/{unquote(match['slug'])}"
        if not standin._has_repository("bitbucket", repository):
            raise _Answer(
                404,
                {"type": "error", "error": {"message": f"Repository {repository} not found"}},
            )
        data = _json_object(body)
        if data is None:
            raise _Answer(400, _bitbucket_error("Bad request", {}))
        fields: dict[str, list[str]] = {}
        for required in ("key", "state", "url"):
            if not data.get(required):
                fields[required] = ["This field is required."]
        state = data.get("state")
        if state and state not in BITBUCKET_STATES:
            fields["state"] = [f'"{state}" is not a valid choice.']
        key = data.get("key")
        if isinstance(key, str) and len(key) > BITBUCKET_KEY_LIMIT:
            fields["key"] = [f"Ensure this value has at most {BITBUCKET_KEY_LIMIT} characters."]
        if fields:
            first = next(iter(fields))
            raise _Answer(400, _bitbucket_error(f"{first}: {fields[first][0]}", fields))
        sha = match["sha"]
        standin._accept(
            AcceptedStatus(
                host_kind="bitbucket",
                repository=repository,
                sha=sha,
                state=str(state),
                target_url=data.get("url"),
                description=data.get("description"),
                context=str(key),
                name=data.get("name"),
                ref=data.get("refname"),
                auth=auth,
            )
        )
        return 201, {
            "type": "build",
            "key": key,
            "state": state,
            "name": data.get("name"),
            "url": data.get("url"),
            "description": data.get("description"),
            "refname": data.get("refname"),
            "created_on": _now(),
            "updated_on": _now(),
        }

    def _bitbucket_auth(self, standin: GitHostApiStandin) -> str:
        scheme, _, credentials = (self.headers.get("Authorization") or "").partition(" ")
        unauthorized = _Answer(
            401,
            {"type": "error", "error": {"message": "Access denied. Invalid credentials."}},
            headers={"WWW-Authenticate": 'Basic realm="Bitbucket.org HTTP"'},
        )
        if standin.bitbucket_username is None:
            if scheme.lower() != "bearer" or credentials.strip() != standin.bitbucket_token:
                raise unauthorized
            return "bearer"
        if scheme.lower() != "basic":
            raise unauthorized
        try:
            decoded = base64.b64decode(credentials.strip(), validate=True).decode()
        except ValueError:
            raise unauthorized from None
        if decoded != f"{standin.bitbucket_username}:{standin.bitbucket_token}":
            raise unauthorized
        return "basic"


def _json_object(body: bytes) -> dict[str, Any] | None:
    try:
        data = json.loads(body or b"null")
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _github_error(field_name: str, message: str) -> dict[str, str]:
    return {"resource": "Status", "code": "custom", "field": field_name, "message": message}


def _bitbucket_error(message: str, fields: dict[str, list[str]]) -> dict[str, Any]:
    error: dict[str, Any] = {"message": message}
    if fields:
        error["fields"] = fields
    return {"type": "error", "error": error}


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
