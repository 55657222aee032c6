"""Proof that a connection's token can see a repository, through the host's API:

* GitHub: ``GET {api}/repos/{owner}/{repo}`` (``Authorization: Bearer``)
* GitLab: ``GET {api}/projects/{url-encoded full path}`` (``PRIVATE-TOKEN``)
* Bitbucket Cloud: ``GET {api}/repositories/{workspace}/{slug}`` (``Authorization: Bearer``)

A 200 proves it; 401, 403 and 404 are a 422 naming the repository and the connection; a host
that cannot be reached or answers 5xx is a 503 (nothing is bound; try again). The API base URL
is GIT_HOST_APIS' entry for the host, else the cloud API (or /api/v3, /api/v4 of a self-hosted
GitHub or GitLab). Call it with no database transaction open (it is network I/O)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import cast
from urllib.parse import quote

import httpx

from core.catalog.repositories import Repository
from core.db.transactions import guard
from core.errors import Unavailable, ValidationFailed
from core.notifications.senders.errors import redact
from core.pipelines.commit_status import (
    GITHUB_API_VERSION,
    HOST_NAMES,
    USER_AGENT,
    HostKind,
    default_api_url,
)


def api_url_for(host: str, kind: str, git_host_apis: Mapping[str, str]) -> str | None:
    """The API base URL of `host`: GIT_HOST_APIS, else the cloud or usual self-hosted one."""
    configured = {h.lower(): u for h, u in git_host_apis.items()}.get(host.lower())
    return (configured or default_api_url(host.lower(), cast(HostKind, kind)) or "").rstrip(
        "/"
    ) or None


def _request(repo: Repository, api_url: str, token: str) -> tuple[str, dict[str, str]]:
    headers = {"Accept": "application/json", "User-Agent": USER_AGENT}
    if repo.host_kind == "gitlab":
        return f"{api_url}/projects/{quote(repo.path, safe='')}", {
            **headers,
            "PRIVATE-TOKEN": token,
        }
    owner, name = (quote(s, safe="") for s in repo.path.split("/", 1))
    auth = {"Authorization": f"Bearer {token}"}
    if repo.host_kind == "github":
        github = {
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": GITHUB_API_VERSION,
        }
        return f"{api_url}/repos/{owner}/{name}", {**headers, **github, **auth}
    return f"{api_url}/repositories/{owner}/{name}", {**headers, **auth}


async def check_visible(
    repo: Repository,
    token: str,
    git_host_apis: Mapping[str, str],
    *,
    connection: str,
    timeout: float = 10.0,
    transport: httpx.AsyncBaseTransport | None = None,
) -> None:
    """Raise unless `token` can read `repo` through its host's API (see the module text)."""
    name = HOST_NAMES[cast(HostKind, repo.host_kind)]
    api_url = api_url_for(repo.host, repo.host_kind, git_host_apis)
    if api_url is None:
        raise ValidationFailed.on(
            "repository_url",
            f"no API URL is configured for {repo.host} (GIT_HOST_APIS), so connection "
            f"{connection} cannot prove it can see {repo.path}",
        )
    url, headers = _request(repo, api_url, token)
    guard(f"HTTP GET {name} API")
    try:
        async with httpx.AsyncClient(
            transport=transport, timeout=timeout, follow_redirects=False
        ) as client:
            response = await client.get(url, headers=headers)
    except httpx.HTTPError as exc:
        detail = redact((str(exc) or type(exc).__name__)[:200], token)
        raise Unavailable(
            f"{name} ({repo.host}) could not be reached to check connection {connection}'s "
            f"access to {repo.path}: {detail}; try again"
        ) from None
    code = response.status_code
    if code == 200:
        return
    if code >= 500 or code == 429:
        raise Unavailable(
            f"{name} answered {code} while checking connection {connection}'s access to "
            f"{repo.path}; try again"
        )
    message = (
        f"connection {connection}'s token cannot see {repo.host}/{repo.path} ({name} answered "
        f"{code}): the repository must exist and the token must have read access to it"
    )
    raise ValidationFailed(
        message,
        code="repository_not_visible",
        details=[{"field": "repository_url", "message": message}],
    )
