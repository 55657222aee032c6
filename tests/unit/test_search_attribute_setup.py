"""How `idp temporal setup` recognises Temporal Cloud and a refusal, and what it tells an
operator to run instead (the calls themselves: tests/integration/test_search_attributes.py)."""

from __future__ import annotations

import pytest
from temporalio.client import Client
from temporalio.common import SearchAttributeKey
from temporalio.service import RPCError, RPCStatusCode

from core.temporal.search_attribute_setup import is_cloud, manual_command, refused


@pytest.mark.parametrize(
    ("target", "api_key", "cloud"),
    [
        ("acme.a1b2c.tmprl.cloud:7233", None, True),
        ("us-east-1.aws.api.temporal.io:7233", None, True),
        ("temporal.internal:7233", "a-key", True),  # API keys are how Cloud namespaces are reached
        ("temporal.internal:7233", None, False),
        ("127.0.0.1:7233", None, False),
        ("tmprl.cloud.example.com:7233", None, False),
    ],
)
async def test_cloud_is_recognised_by_address_or_api_key(
    target: str, api_key: str | None, cloud: bool
) -> None:
    client = await Client.connect(target, api_key=api_key, lazy=True)
    assert is_cloud(client) is cloud


@pytest.mark.parametrize(
    ("status", "message", "expected"),
    [
        (RPCStatusCode.PERMISSION_DENIED, "Request unauthorized.", True),
        (RPCStatusCode.UNIMPLEMENTED, "unknown method", True),
        (RPCStatusCode.INVALID_ARGUMENT, "use tcld to manage search attributes", True),
        (RPCStatusCode.UNAVAILABLE, "connection refused", False),
        (RPCStatusCode.INVALID_ARGUMENT, "cannot have more than 10 search attribute", False),
    ],
)
def test_a_refusal_is_told_from_a_failure(
    status: RPCStatusCode, message: str, expected: bool
) -> None:
    assert refused(RPCError(message, status, b"")) is expected


def test_self_hosted_command_has_one_create_per_type() -> None:
    keys = [
        SearchAttributeKey.for_keyword("IdpService"),
        SearchAttributeKey.for_text("Notes"),
        SearchAttributeKey.for_keyword("IdpStatus"),
    ]
    assert manual_command("team a", keys, cloud=False) == (
        "temporal operator search-attribute create --namespace 'team a' --name IdpService "
        "--name IdpStatus --type Keyword && temporal operator search-attribute create "
        "--namespace 'team a' --name Notes --type Text"
    )
    assert manual_command("acme.a1b2c", keys, cloud=True) == (
        "tcld namespace search-attributes add --namespace acme.a1b2c --search-attribute "
        '"IdpService=Keyword" --search-attribute "Notes=Text" --search-attribute '
        '"IdpStatus=Keyword"'
    )
