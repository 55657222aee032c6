"""What a Git host's webhook (or a person, or a schedule) asks of the pipelines: one event in a
host-independent shape, which triggers are matched against."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

EventKind = Literal["push", "pull_request", "tag", "manual", "cron", "ping"]


class GitEvent(BaseModel):
    """One event. `repository` is the catalog's key for the repository (`host/owner/name` in
    lower case, as `core.catalog.repositories.Repository.key`), so services match it."""

    kind: EventKind
    host_kind: Literal["github", "gitlab", "bitbucket"] | None = None
    delivery_id: str | None = Field(None, description="The host's id of this delivery")
    repository: str | None = None
    ref: str | None = Field(None, description="Full ref, e.g. refs/heads/main, refs/tags/v1.2.0")
    branch: str | None = Field(None, description="Branch pushed to, or a pull request's source")
    target_branch: str | None = Field(None, description="A pull request's target branch")
    tag: str | None = None
    sha: str | None = None
    before_sha: str | None = None
    pull_request: int | None = None
    action: str | None = Field(None, description="A pull request's action: opened, synchronize…")
    deleted: bool = Field(False, description="A push that deleted the branch or tag")
    fork: bool = Field(
        False,
        description="A pull request from another repository (a fork, or one the payload does "
        "not name): its run waits for approval and gets no secrets",
    )
    sender: str | None = Field(None, description="Who caused it, as the host names them")
    message: str | None = Field(None, description="Head commit message, first line")
    url: str | None = Field(None, description="Link to the commit or pull request on the host")
