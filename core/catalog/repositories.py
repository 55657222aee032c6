"""Git repository URLs: recognise GitHub, GitLab and Bitbucket (cloud, or self-hosted hosts
named in GIT_HOSTS) in any of the usual spellings, and normalise them to one https URL."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from core.errors import ValidationFailed

GIT_HOST_KINDS = ("github", "gitlab", "bitbucket")
CLOUD_HOSTS: dict[str, str] = {
    "github.com": "github",
    "gitlab.com": "gitlab",
    "bitbucket.org": "bitbucket",
}
# git@host:owner/name.git (scp-like syntax)
_SCP = re.compile(r"^[\w.-]+@(?P<host>[\w.-]+):(?P<path>[^/].*)$")
_SEGMENT = re.compile(r"^[A-Za-z0-9_.-]+$")
# Pages below owner/name on GitHub and Bitbucket; GitLab's are after `/-/` (older: tree, blob),
# as its groups nest and a subgroup may be called `issues`.
_WEB_PAGES = frozenset(
    {"tree", "blob", "src", "commit", "commits", "pull", "pulls", "pull-requests", "issues"}
)
_GITLAB_PAGES = frozenset({"-", "tree", "blob"})


@dataclass(frozen=True)
class Repository:
    host_kind: str  # github | gitlab | bitbucket
    host: str  # e.g. github.com, or a self-hosted host (with its port, if the URL gave one)
    path: str  # owner/name (GitLab: group/subgroup/name), as written

    @property
    def url(self) -> str:
        return f"https://{self.host}/{self.path}"

    @property
    def key(self) -> str:
        """Case-insensitive identity (host/path in lower case), to match webhooks to services."""
        return f"{self.host}/{self.path}".lower()


def _invalid(url: str, why: str) -> ValidationFailed:
    message = f"repository_url {url!r} {why}"
    return ValidationFailed(message, details=[{"field": "repository_url", "message": message}])


def parse_repository_url(url: str, extra_hosts: Mapping[str, str] | None = None) -> Repository:
    """Parse `https://github.com/o/r`, `git@github.com:o/r.git`, `ssh://git@host/o/r.git`...

    Raises ValidationFailed naming what is wrong: not a URL, an unknown host, or a path that is
    not owner/name."""
    hosts = {**CLOUD_HOSTS, **{h.lower(): k for h, k in (extra_hosts or {}).items()}}
    raw = url.strip()
    scp = _SCP.match(raw) if "://" not in raw else None
    if scp:
        host, path = scp["host"], scp["path"]
    else:
        try:
            parts = urlsplit(raw)
            hostname = parts.hostname
        except ValueError:  # e.g. an unbalanced [ in the host
            hostname = None
        if not hostname or parts.scheme not in ("https", "http", "ssh", "git"):
            raise _invalid(url, "is not a repository URL (use https://host/owner/name)")
        host, path = hostname, parts.path
    host = host.lower().removeprefix("www.")
    kind = hosts.get(host)
    # A web URL's port is part of where the repository is shown; an ssh port is not.
    if kind is not None and not scp and parts.scheme in ("http", "https") and parts.port:
        host = f"{host}:{parts.port}"
    if kind is None:
        known = ", ".join(sorted(hosts))
        raise _invalid(
            url,
            f"is on {host}, which is not a known Git host (known: {known}; self-hosted GitHub, "
            "GitLab or Bitbucket hosts are added with GIT_HOSTS)",
        )
    nested_ok = kind == "gitlab"
    segments = path.strip("/").split("/")
    # Drop a pasted web page of the repository: .../tree/main, .../-/blob/..., .../pull/42.
    pages = _GITLAB_PAGES if nested_ok else _WEB_PAGES
    cut = next((i for i, s in enumerate(segments) if i >= 2 and s in pages), len(segments))
    segments = segments[:cut]
    segments[-1] = segments[-1].removesuffix(".git")
    if len(segments) < 2 or (len(segments) > 2 and not nested_ok):
        shape = "group/…/name" if nested_ok else "owner/name"
        raise _invalid(url, f"does not name a repository: the path must be {shape}")
    if not all(_SEGMENT.fullmatch(s) and s.strip(".") for s in segments):
        raise _invalid(url, "has characters a repository path cannot have")
    return Repository(host_kind=kind, host=host, path="/".join(segments))
