"""Registering the platform's search attributes in a namespace, and checking them.

`idp dev` registers them when it starts the dev server; a cluster needs `idp temporal setup`
(this module's `register`) once per namespace. A worker checks them before it polls
(`check_registered`): a workflow that upserts an attribute its namespace does not know fails
its workflow task again and again, which an operator sees only as a stuck run.

Temporal Cloud does not take `AddSearchAttributes` from a namespace's API key or certificate;
there `register` raises `RegistrationRefused` with the `tcld` command to run instead.
"""

from __future__ import annotations

import logging
import shlex
from collections.abc import Sequence
from dataclasses import dataclass

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import (
    AddSearchAttributesRequest,
    ListSearchAttributesRequest,
)
from temporalio.client import Client
from temporalio.common import SearchAttributeKey
from temporalio.service import RPCError, RPCStatusCode

from core.errors import ConfigError
from core.temporal.search_attributes import ALL

log = logging.getLogger(__name__)

# The names `temporal`, `tcld` and the UI use for the server's index types.
TYPE_NAMES: dict[int, str] = {
    IndexedValueType.INDEXED_VALUE_TYPE_TEXT: "Text",
    IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD: "Keyword",
    IndexedValueType.INDEXED_VALUE_TYPE_INT: "Int",
    IndexedValueType.INDEXED_VALUE_TYPE_DOUBLE: "Double",
    IndexedValueType.INDEXED_VALUE_TYPE_BOOL: "Bool",
    IndexedValueType.INDEXED_VALUE_TYPE_DATETIME: "Datetime",
    IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD_LIST: "KeywordList",
}

CLOUD_HOST_SUFFIXES = (".tmprl.cloud", ".api.temporal.io")

# How a server says "not with these credentials / not here": a namespace API key on Temporal
# Cloud, or an authorizer of a self-hosted cluster that keeps operator calls for admins.
_REFUSALS = frozenset({RPCStatusCode.PERMISSION_DENIED, RPCStatusCode.UNIMPLEMENTED})


class RegistrationRefused(Exception):
    """Temporal would not list or add search attributes for this client. The message is one
    line (no secret); `command` is what someone with admin rights runs instead."""

    def __init__(self, message: str, command: str) -> None:
        super().__init__(message)
        self.command = command


@dataclass(frozen=True)
class Registered:
    """One of the platform's attributes after `register`: added now or there already."""

    name: str
    type: str
    added: bool

    def line(self) -> str:
        return f"{self.name} ({self.type}): {'added' if self.added else 'already present'}"


def type_name(key: SearchAttributeKey[str]) -> str:
    return TYPE_NAMES[int(key.indexed_value_type)]


def is_cloud(client: Client) -> bool:
    """Temporal Cloud by its address, or by an API key (what Cloud namespaces are reached with)."""
    config = client.service_client.config
    host = config.target_host.rsplit(":", 1)[0].lower()
    return host.endswith(CLOUD_HOST_SUFFIXES) or bool(config.api_key)


def refused(exc: RPCError) -> bool:
    """Whether the server declined the operator call (as opposed to being unreachable)."""
    message = (exc.message or "").lower()
    return exc.status in _REFUSALS or "tcld" in message or "temporal cloud" in message


def manual_command(namespace: str, keys: Sequence[SearchAttributeKey[str]], *, cloud: bool) -> str:
    """What an operator with admin rights runs instead of `idp temporal setup`."""
    ns = shlex.quote(namespace)
    if cloud:
        flags = " ".join(f'--search-attribute "{k.name}={type_name(k)}"' for k in keys)
        return f"tcld namespace search-attributes add --namespace {ns} {flags}"
    by_type: dict[str, list[str]] = {}
    for key in keys:
        by_type.setdefault(type_name(key), []).append(key.name)
    return " && ".join(
        f"temporal operator search-attribute create --namespace {ns} "
        + " ".join(f"--name {name}" for name in names)
        + f" --type {kind}"
        for kind, names in by_type.items()
    )


async def list_custom(client: Client) -> dict[str, str]:
    """The namespace's custom search attributes, name to type name (one RPC)."""
    response = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=client.namespace)
    )
    return {
        name: TYPE_NAMES.get(int(kind), str(kind))
        for name, kind in response.custom_attributes.items()
    }


def _compare(
    present: dict[str, str], keys: Sequence[SearchAttributeKey[str]], namespace: str
) -> list[SearchAttributeKey[str]]:
    """The keys missing from `present`; ConfigError for one registered with another type
    (the platform's values would be indexed wrongly, and it cannot be changed in place)."""
    for key in keys:
        have = present.get(key.name)
        if have is not None and have != type_name(key):
            raise ConfigError(
                f"search attribute {key.name} is registered as {have} in namespace "
                f"{namespace}, the platform needs {type_name(key)}; remove it "
                f"(`temporal operator search-attribute delete --name {key.name}`) "
                "or use another namespace"
            )
    return [key for key in keys if key.name not in present]


def _refusal(
    client: Client, keys: Sequence[SearchAttributeKey[str]], exc: RPCError, doing: str
) -> RegistrationRefused:
    cloud = is_cloud(client)
    where = "Temporal Cloud" if cloud else "Temporal"
    status = exc.status.name if exc.status else "error"
    return RegistrationRefused(
        f"{where} refused to {doing} search attributes in namespace {client.namespace} "
        f"({status}: {exc.message})",
        manual_command(client.namespace, keys, cloud=cloud),
    )


async def register(
    client: Client, keys: Sequence[SearchAttributeKey[str]] = ALL
) -> list[Registered]:
    """Add whichever of `keys` the client's namespace lacks (idempotent).

    RegistrationRefused when the server declines the operator calls (Temporal Cloud with a
    namespace API key); ConfigError when a key exists with another type.
    """
    try:
        present = await list_custom(client)
    except RPCError as exc:
        if refused(exc):
            raise _refusal(client, keys, exc, "list") from None
        raise
    missing = _compare(present, keys, client.namespace)
    if missing:
        try:
            await client.operator_service.add_search_attributes(
                AddSearchAttributesRequest(
                    namespace=client.namespace,
                    search_attributes={
                        k.name: IndexedValueType.ValueType(k.indexed_value_type) for k in missing
                    },
                )
            )
        except RPCError as exc:
            if refused(exc):
                raise _refusal(client, missing, exc, "add") from None
            raise
    added = {k.name for k in missing}
    return [Registered(k.name, type_name(k), k.name in added) for k in keys]


async def check_registered(client: Client, keys: Sequence[SearchAttributeKey[str]] = ALL) -> None:
    """Before a worker polls: ConfigError (one line) unless every key is registered with its
    type. When the server does not let this client list them (Temporal Cloud), a warning."""
    try:
        present = await list_custom(client)
    except RPCError as exc:
        if not refused(exc):
            raise
        log.warning(
            "cannot check the search attributes of namespace %s (%s); if workflow tasks fail "
            "with BadSearchAttributes, register them: %s",
            client.namespace,
            exc.status.name if exc.status else exc.message,
            manual_command(client.namespace, keys, cloud=is_cloud(client)),
        )
        return
    missing = _compare(present, keys, client.namespace)
    if missing:
        raise ConfigError(
            f"search attributes {', '.join(k.name for k in missing)} are not registered in "
            f"namespace {client.namespace}; run `idp temporal setup`"
        )
