"""Webhooks from Git hosts: check a delivery's signature (or token) and turn its body into
host-independent `GitEvent`s. Pure functions: no FastAPI, no database.

- `verify(host_kind, headers, body, secret)` raises `Unauthorized` (code `invalid_signature`).
- `parse(host_kind, headers, body, extra_hosts)` returns a `ParsedDelivery`: the events to match
  against triggers (none for an event kind the platform ignores, with the reason), the host's
  delivery id and the host's name for the event.

Header names are looked up without regard to case. The repository is the catalog's key
(`core.catalog.repositories.parse_repository_url(url, extra_hosts).key`), so self-hosted hosts
named in GIT_HOSTS work as they do in the catalog."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args
from urllib.parse import parse_qs

from core.catalog.repositories import parse_repository_url
from core.errors import BadRequest, Unauthorized, ValidationFailed
from core.headers import HeaderView
from core.pipelines.events import GitEvent
from core.pipelines.triggers import PULL_REQUEST_ACTIONS

HostKind = Literal["github", "gitlab", "bitbucket"]
HOST_KINDS: tuple[str, ...] = get_args(HostKind)

# The header carrying the host's name for the event, and the headers carrying its delivery id
# (the first one present wins).
EVENT_HEADERS: dict[str, str] = {
    "github": "X-GitHub-Event",
    "gitlab": "X-Gitlab-Event",
    "bitbucket": "X-Event-Key",
}
DELIVERY_HEADERS: dict[str, tuple[str, ...]] = {
    "github": ("X-GitHub-Delivery",),
    # Idempotency-Key stays the same when GitLab retries a delivery, so it is the best key to
    # recognise duplicates; older GitLab versions send only the UUID headers.
    "gitlab": ("Idempotency-Key", "X-Gitlab-Event-UUID", "X-Gitlab-Webhook-UUID"),
    # X-Hook-UUID names the webhook (the same for all of its deliveries), not a delivery.
    "bitbucket": ("X-Request-UUID",),
}
SIGNATURE_HEADERS: dict[str, str] = {
    "github": "X-Hub-Signature-256",
    "gitlab": "X-Gitlab-Token",
    "bitbucket": "X-Hub-Signature",
}
_HOST_NAMES = {"github": "GitHub", "gitlab": "GitLab", "bitbucket": "Bitbucket"}

# How each host names a pull request's action, in the triggers' vocabulary
# (`core.pipelines.triggers.PULL_REQUEST_ACTIONS`).
_GITLAB_MR_ACTIONS = {"open": "opened", "reopen": "reopened", "close": "closed", "merge": "merged"}
_BITBUCKET_PR_EVENTS = {
    "pullrequest:created": "opened",
    "pullrequest:updated": "synchronize",
    "pullrequest:fulfilled": "merged",
    "pullrequest:rejected": "closed",
}


@dataclass
class ParsedDelivery:
    """What one delivery asks for. `events` is empty when the platform ignores the delivery
    (then `ignored_reason` says why); a Bitbucket push naming several refs gives one event per
    ref, in the payload's order (deleted refs included, flagged `deleted`)."""

    host_kind: HostKind
    host_event: str
    delivery_id: str | None
    events: list[GitEvent] = field(default_factory=list)
    ignored_reason: str | None = None

    @property
    def event(self) -> GitEvent | None:
        """The first event, or None when the delivery is ignored."""
        return self.events[0] if self.events else None


def _host(host_kind: str) -> HostKind:
    if host_kind not in HOST_KINDS:
        raise BadRequest(
            f"unknown Git host kind {host_kind!r}; expected one of {', '.join(HOST_KINDS)}"
        )
    return host_kind  # type: ignore[return-value]


# --- Signatures --------------------------------------------------------------------------


def _invalid(message: str) -> Unauthorized:
    return Unauthorized(message, code="invalid_signature")


def _same(expected: str, given: str) -> bool:
    return hmac.compare_digest(
        expected.encode("utf-8"), given.encode("utf-8", errors="backslashreplace")
    )


def sign(body: bytes, secret: str) -> str:
    """The `sha256=<hex>` signature GitHub and Bitbucket Cloud send for `body`."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def verify(host_kind: str, headers: Mapping[str, str], body: bytes, secret: str) -> None:
    """Check that a delivery comes from the host: GitHub's `X-Hub-Signature-256` and Bitbucket
    Cloud's `X-Hub-Signature` (`sha256=<hex>`, the HMAC-SHA256 of the raw body keyed with the
    secret) or GitLab's `X-Gitlab-Token` (the secret itself), compared in constant time.

    Raises Unauthorized (code `invalid_signature`) saying whether the header is missing, badly
    formed or does not match; also when `secret` is empty, as nothing could then be checked."""
    kind = _host(host_kind)
    name = _HOST_NAMES[kind]
    header = SIGNATURE_HEADERS[kind]
    if not secret:
        raise _invalid(f"no webhook secret is set for {name}, so its deliveries cannot be checked")
    view = HeaderView(headers)
    given = view.get(header)
    if not given:
        extra = ""
        if kind == "github" and view.get("X-Hub-Signature"):
            extra = " (the SHA-1 X-Hub-Signature is not accepted)"
        what = "token" if kind == "gitlab" else "signature"
        raise _invalid(f"the {name} delivery has no {header} header{extra}: its {what} is missing")
    if kind == "gitlab":
        if not _same(secret, given):
            raise _invalid(f"the {header} header does not match the webhook secret")
        return
    algorithm, sep, digest = given.partition("=")
    if not sep or algorithm.lower() != "sha256" or not digest:
        raise _invalid(f"the {header} header must be sha256=<hex digest>, got {given[:20]!r}")
    if not _same(sign(body, secret), f"sha256={digest.lower()}"):
        raise _invalid(
            f"the {header} signature does not match the body: wrong secret, or the body changed"
        )


# --- Payload helpers ---------------------------------------------------------------------


def _load(kind: HostKind, headers: HeaderView, body: bytes) -> dict[str, Any]:
    text: str | bytes = body
    content_type = (headers.get("Content-Type") or "").lower()
    if kind == "github" and content_type.startswith("application/x-www-form-urlencoded"):
        # A GitHub webhook set to the form content type sends the JSON as `payload=`.
        try:
            form = parse_qs(body.decode("utf-8"), strict_parsing=True)
        except (UnicodeDecodeError, ValueError):
            raise BadRequest(
                "the body is not a valid form (application/x-www-form-urlencoded)"
            ) from None
        if len(form.get("payload", [])) != 1:
            raise BadRequest("the form body has no payload field")
        text = form["payload"][0]
    try:
        data = json.loads(text)
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BadRequest(f"the body must be a JSON object, not {type(data).__name__}")
    return data


class _Payload:
    """Reads dotted paths from one payload; a missing required field is a BadRequest naming
    it and the event."""

    def __init__(self, data: dict[str, Any], what: str) -> None:
        self.data = data
        self.what = what

    def get(self, path: str, data: Any = None) -> Any:
        node: Any = self.data if data is None else data
        for part in path.split("."):
            if not isinstance(node, dict):
                return None
            node = node.get(part)
        return node

    def missing(self, path: str, expected: str) -> BadRequest:
        return BadRequest(f"the {self.what} payload has no {path} ({expected})")

    def text(self, path: str, data: Any = None) -> str | None:
        value = self.get(path, data)
        return value if isinstance(value, str) and value else None

    def need_text(self, path: str, data: Any = None) -> str:
        value = self.text(path, data)
        if value is None:
            raise self.missing(path, "a non-empty string")
        return value

    def need_int(self, path: str, data: Any = None) -> int:
        value = self.get(path, data)
        if not isinstance(value, int) or isinstance(value, bool):
            raise self.missing(path, "a number")
        return value

    def need_dict(self, path: str, data: Any = None) -> dict[str, Any]:
        value = self.get(path, data)
        if not isinstance(value, dict):
            raise self.missing(path, "an object")
        return value

    def repository(self, path: str, extra_hosts: Mapping[str, str] | None) -> str:
        url = self.need_text(path)
        try:
            return parse_repository_url(url, extra_hosts).key
        except ValidationFailed as exc:
            raise BadRequest(f"the {self.what} payload's {path}: {exc.message}") from None


def _sha(value: str | None) -> str | None:
    """A commit id, or None for the host's all-zero "no commit"."""
    return None if not value or set(value) == {"0"} else value


def _first_line(message: Any) -> str | None:
    if not isinstance(message, str) or not message.strip():
        return None
    return message.strip().splitlines()[0]


def _ref_event(ref: str, **fields: Any) -> tuple[Literal["push", "tag"] | None, dict[str, Any]]:
    """Push or tag, with branch or tag filled, from a full ref; (None, None) for other refs."""
    if ref.startswith("refs/heads/"):
        return "push", {"ref": ref, "branch": ref.removeprefix("refs/heads/"), **fields}
    if ref.startswith("refs/tags/"):
        return "tag", {"ref": ref, "tag": ref.removeprefix("refs/tags/"), **fields}
    return None, {}


def _ignored(base: dict[str, Any], reason: str) -> ParsedDelivery:
    return ParsedDelivery(**base, ignored_reason=reason)


# --- GitHub ------------------------------------------------------------------------------


def _github(
    base: dict[str, Any], event: str, data: dict[str, Any], extra: Mapping[str, str] | None
) -> ParsedDelivery:
    p = _Payload(data, f"GitHub {event}")
    common: dict[str, Any] = {"host_kind": "github", "delivery_id": base["delivery_id"]}
    common["sender"] = p.text("sender.login")
    if event == "ping":
        repository = p.get("repository")
        key = p.repository("repository.html_url", extra) if repository is not None else None
        return ParsedDelivery(**base, events=[GitEvent(kind="ping", repository=key, **common)])
    if event == "push":
        ref = p.need_text("ref")
        after = _sha(p.need_text("after"))
        deleted = p.get("deleted") is True or after is None
        kind, fields = _ref_event(
            ref,
            repository=p.repository("repository.html_url", extra),
            sha=None if deleted else after,
            before_sha=_sha(p.text("before")),
            deleted=deleted,
            message=_first_line(p.get("head_commit.message")),
            url=p.text("head_commit.url") or p.text("compare"),
            **common,
        )
        if kind is None:
            return _ignored(base, f"a push to {ref}, which is neither a branch nor a tag")
        return ParsedDelivery(**base, events=[GitEvent(kind=kind, **fields)])
    if event == "pull_request":
        action = p.need_text("action")
        pr = p.need_dict("pull_request")
        if action == "closed" and p.get("merged", pr) is True:
            action = "merged"
        if action not in PULL_REQUEST_ACTIONS:
            return _ignored(base, f"pull request action {action!r} starts no pipeline")
        number = p.need_int("number") if "number" in data else p.need_int("pull_request.number")
        fork = _github_fork(p.get("pull_request.head.repo"), p.get("pull_request.base.repo"))
        created = GitEvent(
            kind="pull_request",
            repository=p.repository("repository.html_url", extra),
            ref=f"refs/pull/{number}/head",
            branch=p.need_text("pull_request.head.ref"),
            target_branch=p.need_text("pull_request.base.ref"),
            sha=p.need_text("pull_request.head.sha"),
            before_sha=_sha(p.text("before")),
            pull_request=number,
            action=action,
            url=p.text("pull_request.html_url"),
            fork=fork,
            **common,
        )
        return ParsedDelivery(**base, events=[created])
    if event == "create":
        return _ignored(
            base, "GitHub create events are ignored: a new tag or branch comes as a push"
        )
    return _ignored(base, f"GitHub event {event!r} starts no pipeline")


def _github_fork(head: Any, base: Any) -> bool:
    """Whether a pull request's head repository is another than its base (by id, else by
    full name). A deleted fork has no head repository: unknown counts as a fork."""
    if not isinstance(head, dict) or not isinstance(base, dict):
        return True
    if head.get("id") is not None and base.get("id") is not None:
        return bool(head["id"] != base["id"])
    names = [str(r.get("full_name") or "").lower() for r in (head, base)]
    return not names[0] or names[0] != names[1]


# --- GitLab ------------------------------------------------------------------------------


def _gitlab_repository(p: _Payload, extra: Mapping[str, str] | None) -> str:
    if p.text("project.web_url") is None and p.text("repository.homepage") is not None:
        return p.repository("repository.homepage", extra)  # older GitLab versions
    return p.repository("project.web_url", extra)


def _gitlab(
    base: dict[str, Any], event: str, data: dict[str, Any], extra: Mapping[str, str] | None
) -> ParsedDelivery:
    p = _Payload(data, f"GitLab {event}")
    common: dict[str, Any] = {"host_kind": "gitlab", "delivery_id": base["delivery_id"]}
    if event in ("Push Hook", "Tag Push Hook"):
        ref = p.need_text("ref")
        after = _sha(p.need_text("after"))
        deleted = after is None
        sha = None if deleted else _sha(p.text("checkout_sha")) or after
        commits = p.get("commits")
        head: dict[str, Any] = {}
        if isinstance(commits, list):
            head = next(
                (c for c in commits if isinstance(c, dict) and c.get("id") == after),
                commits[-1] if commits and isinstance(commits[-1], dict) else {},
            )
        repository = _gitlab_repository(p, extra)
        web_url = p.text("project.web_url")
        url = p.text("url", head) or (f"{web_url}/-/commit/{sha}" if web_url and sha else None)
        kind, fields = _ref_event(
            ref,
            repository=repository,
            sha=sha,
            before_sha=_sha(p.text("before")),
            deleted=deleted,
            sender=p.text("user_username"),
            message=_first_line(head.get("message")),
            url=url,
            **common,
        )
        if kind is None:
            return _ignored(base, f"a push to {ref}, which is neither a branch nor a tag")
        return ParsedDelivery(**base, events=[GitEvent(kind=kind, **fields)])
    if event == "Merge Request Hook":
        attributes = p.need_dict("object_attributes")
        raw_action = p.text("action", attributes) or "open"
        action = _GITLAB_MR_ACTIONS.get(raw_action)
        if raw_action == "update":
            # New commits carry the previous head as oldrev; otherwise the title, labels,
            # description or draft status changed.
            draft = p.get("changes.draft") or p.get("changes.work_in_progress") or {}
            if p.text("oldrev", attributes):
                action = "synchronize"
            elif isinstance(draft, dict) and draft.get("previous") and not draft.get("current"):
                action = "ready_for_review"
            else:
                action = "edited"
        if action is None:
            return _ignored(base, f"merge request action {raw_action!r} starts no pipeline")
        iid = p.need_int("object_attributes.iid")
        source_project = p.get("object_attributes.source_project_id")
        fork = source_project is None or source_project != p.get(
            "object_attributes.target_project_id"
        )
        created = GitEvent(
            kind="pull_request",
            repository=_gitlab_repository(p, extra),
            ref=f"refs/merge-requests/{iid}/head",
            branch=p.need_text("object_attributes.source_branch"),
            target_branch=p.need_text("object_attributes.target_branch"),
            sha=p.text("object_attributes.last_commit.id"),
            before_sha=_sha(p.text("object_attributes.oldrev")),
            pull_request=iid,
            action=action,
            sender=p.text("user.username"),
            message=_first_line(p.get("object_attributes.last_commit.message")),
            url=p.text("object_attributes.url"),
            fork=fork,
            **common,
        )
        return ParsedDelivery(**base, events=[created])
    if event == "System Hook":
        return ParsedDelivery(
            **base, events=[GitEvent(kind="ping", sender=p.text("user_username"), **common)]
        )
    return _ignored(base, f"GitLab event {event!r} starts no pipeline")


# --- Bitbucket Cloud ---------------------------------------------------------------------


def _bitbucket_change(
    p: _Payload, index: int, change: Any, common: dict[str, Any]
) -> GitEvent | None:
    if not isinstance(change, dict):
        raise p.missing(f"push.changes[{index}]", "an object")
    new, old = change.get("new"), change.get("old")
    side = new if isinstance(new, dict) else old
    if not isinstance(side, dict):
        raise p.missing(f"push.changes[{index}].new", "an object, or an old one when deleted")
    where = "new" if side is new else "old"
    name = p.text("name", side)
    if name is None:
        raise p.missing(f"push.changes[{index}].{where}.name", "a non-empty string")
    ref_type = p.text("type", side)
    if ref_type == "branch":
        ref = f"refs/heads/{name}"
    elif ref_type in ("tag", "annotated_tag"):
        ref = f"refs/tags/{name}"
    else:
        return None
    deleted = not isinstance(new, dict)
    kind, fields = _ref_event(
        ref,
        sha=None if deleted else p.text("target.hash", new),
        before_sha=p.text("target.hash", old) if isinstance(old, dict) else None,
        deleted=deleted,
        message=None if deleted else _first_line(p.get("target.message", new)),
        url=None if deleted else p.text("target.links.html.href", new),
        **common,
    )
    return GitEvent(kind=kind, **fields) if kind else None


def _bitbucket(
    base: dict[str, Any], event: str, data: dict[str, Any], extra: Mapping[str, str] | None
) -> ParsedDelivery:
    p = _Payload(data, f"Bitbucket {event}")
    common: dict[str, Any] = {"host_kind": "bitbucket", "delivery_id": base["delivery_id"]}
    common["sender"] = p.text("actor.nickname") or p.text("actor.display_name")
    if event == "diagnostics:ping":
        return ParsedDelivery(**base, events=[GitEvent(kind="ping", **common)])
    if event == "repo:push":
        common["repository"] = p.repository("repository.links.html.href", extra)
        changes = p.get("push.changes")
        if not isinstance(changes, list):
            raise p.missing("push.changes", "a list")
        found = [_bitbucket_change(p, i, c, common) for i, c in enumerate(changes)]
        events = [e for e in found if e is not None]
        if not events:
            return _ignored(base, "the push changed no branch or tag")
        return ParsedDelivery(**base, events=events)
    if event in _BITBUCKET_PR_EVENTS:
        pr = p.need_dict("pullrequest")
        number = p.need_int("pullrequest.id")
        branch = p.need_text("pullrequest.source.branch.name")
        source_repo = p.text("source.repository.full_name", pr)
        target_repo = p.text("destination.repository.full_name", pr)
        # Bitbucket has no ref for a pull request: the source branch is one when it is in the
        # same repository (not a fork).
        same_repo = source_repo is None or source_repo == target_repo
        created = GitEvent(
            kind="pull_request",
            repository=p.repository("repository.links.html.href", extra),
            ref=f"refs/heads/{branch}" if same_repo else None,
            branch=branch,
            target_branch=p.need_text("pullrequest.destination.branch.name"),
            sha=p.text("source.commit.hash", pr),
            pull_request=number,
            action=_BITBUCKET_PR_EVENTS[event],
            url=p.text("links.html.href", pr),
            fork=source_repo is None or source_repo != target_repo,
            **common,
        )
        return ParsedDelivery(**base, events=[created])
    return _ignored(base, f"Bitbucket event {event!r} starts no pipeline")


_PARSERS = {"github": _github, "gitlab": _gitlab, "bitbucket": _bitbucket}


def parse(
    host_kind: str,
    headers: Mapping[str, str],
    body: bytes,
    extra_hosts: Mapping[str, str] | None = None,
) -> ParsedDelivery:
    """Read one verified delivery into host-independent events.

    GitHub: `push` (a branch push is kind `push`, a tag push kind `tag`; a deleting push is
    flagged `deleted`), `pull_request` (its action, `closed` with merged → `merged`), `ping`;
    `create` and the rest are ignored. GitLab: `Push Hook`, `Tag Push Hook`, `Merge Request
    Hook`, `System Hook` (a ping). Bitbucket Cloud: `repo:push` (one event per changed ref),
    `pullrequest:created|updated|fulfilled|rejected`, `diagnostics:ping`.

    Raises BadRequest for a missing event header, a body that is not a JSON object, or a
    handled event whose payload lacks a field the event needs (the message names it), or whose
    repository URL is not on a known host (`extra_hosts` is the GIT_HOSTS setting)."""
    kind = _host(host_kind)
    view = HeaderView(headers)
    event_header = EVENT_HEADERS[kind]
    event = view.get(event_header)
    if not event:
        raise BadRequest(f"the {_HOST_NAMES[kind]} delivery has no {event_header} header")
    delivery_id = next((v for h in DELIVERY_HEADERS[kind] if (v := view.get(h))), None)
    base: dict[str, Any] = {"host_kind": kind, "host_event": event, "delivery_id": delivery_id}
    known = {
        "github": ("ping", "push", "pull_request", "create"),
        "gitlab": ("Push Hook", "Tag Push Hook", "Merge Request Hook", "System Hook"),
        "bitbucket": ("repo:push", "diagnostics:ping", *_BITBUCKET_PR_EVENTS),
    }[kind]
    if event not in known:
        return _ignored(base, f"{_HOST_NAMES[kind]} event {event!r} starts no pipeline")
    return _PARSERS[kind](base, event, _load(kind, view, body), extra_hosts)


# Where each host's payloads name the repository (GitLab's older versions: repository.homepage).
_REPOSITORY_FIELDS: dict[str, tuple[str, ...]] = {
    "github": ("repository.html_url",),
    "gitlab": ("project.web_url", "repository.homepage"),
    "bitbucket": ("repository.links.html.href",),
}


def delivery_repository(
    host_kind: str,
    headers: Mapping[str, str],
    body: bytes,
    extra_hosts: Mapping[str, str] | None = None,
) -> str | None:
    """The repository key a delivery names, read before its signature is checked (to find the
    connection whose secret checks it), whatever the event; None when the body names none or
    is not a payload at all (then only the development default secret can check it)."""
    try:
        kind = _host(host_kind)
        p = _Payload(_load(kind, HeaderView(headers), body), f"{_HOST_NAMES[kind]} delivery")
        url = next((u for f in _REPOSITORY_FIELDS[kind] if (u := p.text(f))), None)
        return parse_repository_url(url, extra_hosts).key if url else None
    except (BadRequest, ValidationFailed):
        return None
