"""Compliance rules and the facts they read from each resource type's inputs."""

from __future__ import annotations

from typing import Any

import pytest

from core.infrastructure.compliance import Subject, blocking, evaluate, facts

TAGS = {
    "team": "web",
    "service": "shop",
    "environment": "prod",
    "cost-centre": "cc-1234",
    "managed-by": "idp",
}


def rules(subject: Subject) -> set[str]:
    return {v.rule for v in evaluate([subject])}


def test_a_tagged_private_encrypted_database_in_an_allowed_region_passes() -> None:
    db = Subject(
        name="db",
        type="aws:rds/instance:Instance",
        region="eu-west-1",
        tags=TAGS,
        allowed_regions=("eu-west-1",),
        **facts("aws:rds/instance:Instance", {"storageEncrypted": True}),  # type: ignore[arg-type]
    )
    assert evaluate([db]) == []


def test_each_rule_names_what_is_wrong() -> None:
    bad = Subject(
        name="b",
        type="x",
        region="us-east-1",
        tags={"team": "Web", "cost-centre": "finance"},
        stores_data=True,
        encrypted=None,
        public=True,
        allowed_regions=("eu-west-1", "eu-central-1"),
    )
    found = {v.rule: v.message for v in evaluate([bad])}
    assert found["required-tags"] == "missing tags: service, environment, managed-by"
    assert "cost-centre, team" in found["tag-format"]
    assert found["encryption-at-rest"] == "stores data without encryption at rest"
    assert found["no-public-access"] == "reachable from the internet (public access)"
    assert found["allowed-regions"] == (
        "region us-east-1 is not allowed (allowed: eu-west-1, eu-central-1)"
    )
    assert {v.rule for v in blocking(evaluate([bad]))} == set(found) - {"tag-format"}


@pytest.mark.parametrize(
    ("type", "inputs", "encrypted", "public"),
    [
        ("aws:s3/bucketV2:BucketV2", {}, True, False),
        ("aws:s3/bucket:Bucket", {"acl": "public-read"}, True, True),
        ("aws:rds/instance:Instance", {"publiclyAccessible": True}, False, True),
        ("gcp:storage/bucket:Bucket", {"publicAccessPrevention": "enforced"}, True, False),
        ("gcp:storage/bucket:Bucket", {}, True, True),
        (
            "gcp:sql/databaseInstance:DatabaseInstance",
            {"settings": {"ipConfiguration": {"ipv4Enabled": True}}},
            True,
            True,
        ),
        (
            "azure-native:storage:StorageAccount",
            {"allowBlobPublicAccess": False, "publicNetworkAccess": "Disabled"},
            True,
            False,
        ),
        (
            "azure-native:dbforpostgresql:Server",
            {"network": {"publicNetworkAccess": "Enabled"}},
            True,
            True,
        ),
    ],
)
def test_facts_of_data_stores(
    type: str, inputs: dict[str, Any], encrypted: bool, public: bool
) -> None:
    assert facts(type, inputs) == {"stores_data": True, "encrypted": encrypted, "public": public}


def test_other_types_store_nothing() -> None:
    assert facts("aws:ec2/vpc:Vpc", {}) == {
        "stores_data": False,
        "encrypted": None,
        "public": False,
    }
    assert rules(Subject(name="vpc", type="aws:ec2/vpc:Vpc", tags=TAGS)) == set()
