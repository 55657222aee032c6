"""The platform's custom search attributes: what an operator filters on in the Temporal UI.

The client that starts a domain workflow sets the static ones (organization, team, service,
environment, pipeline, commit, actor) and the first status; the workflow upserts `IdpStatus`
as it moves (see `set_status`). Values are names a person types (`IdpService = "shop"`), never
secrets: search attributes are stored unencrypted by the Temporal server.

Importable by the workflow sandbox (only the SDK is imported at module level).
"""

from __future__ import annotations

from collections.abc import Sequence

from temporalio import workflow
from temporalio.common import (
    SearchAttributeKey,
    SearchAttributePair,
    TypedSearchAttributes,
)

ORGANIZATION = SearchAttributeKey.for_keyword("IdpOrganization")
TEAM = SearchAttributeKey.for_keyword("IdpTeam")
SERVICE = SearchAttributeKey.for_keyword("IdpService")
ENVIRONMENT = SearchAttributeKey.for_keyword("IdpEnvironment")
PIPELINE = SearchAttributeKey.for_keyword("IdpPipeline")
COMMIT = SearchAttributeKey.for_keyword("IdpCommit")
ACTOR = SearchAttributeKey.for_keyword("IdpActor")
"""Who started it: the pusher of a commit, the requester of a promotion or provisioning run."""
STATUS = SearchAttributeKey.for_keyword("IdpStatus")
"""The domain status, lower-case (`queued`, `running`, `awaiting_approval`, `succeeded`, ...)."""

ALL: tuple[SearchAttributeKey[str], ...] = (
    ORGANIZATION,
    TEAM,
    SERVICE,
    ENVIRONMENT,
    PIPELINE,
    COMMIT,
    ACTOR,
    STATUS,
)

# The visibility store's limit for a Keyword value is 2 KiB; names are far shorter, but a
# value is cut rather than let a long one fail the start.
_MAX_VALUE = 255

# Workflows that were open before their code upserted search attributes replay without it.
PATCH_ID = "operator-view-search-attributes"


def _value(value: str) -> str:
    return value[:_MAX_VALUE]


def attributes(
    *,
    organization: str | None = None,
    team: str | None = None,
    service: str | None = None,
    environment: str | None = None,
    pipeline: str | None = None,
    commit: str | None = None,
    actor: str | None = None,
    status: str | None = None,
) -> TypedSearchAttributes:
    """The attributes to start a workflow with; absent (None or empty) values are left out."""
    values: Sequence[tuple[SearchAttributeKey[str], str | None]] = (
        (ORGANIZATION, organization),
        (TEAM, team),
        (SERVICE, service),
        (ENVIRONMENT, environment),
        (PIPELINE, pipeline),
        (COMMIT, commit),
        (ACTOR, actor),
        (STATUS, status),
    )
    return TypedSearchAttributes(
        [SearchAttributePair(key, _value(value)) for key, value in values if value]
    )


def set_status(status: str) -> None:
    """In a workflow: upsert `IdpStatus` (guarded for histories from before it existed)."""
    if workflow.patched(PATCH_ID):
        workflow.upsert_search_attributes([STATUS.value_set(_value(status))])


def set_attributes(**values: str | None) -> None:
    """In a workflow: upsert attributes learnt after the start (e.g. a commit resolved)."""
    if workflow.patched(PATCH_ID):
        pairs = attributes(**values)
        if pairs.search_attributes:
            workflow.upsert_search_attributes(
                [pair.key.value_set(pair.value) for pair in pairs.search_attributes]
            )


def dev_server_flags() -> list[str]:
    """`temporal server start-dev` arguments that register every attribute."""
    flags: list[str] = []
    for key in ALL:
        flags += ["--search-attribute", f"{key.name}=Keyword"]
    return flags
