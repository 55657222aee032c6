"""Compliance rules, evaluated over the inventory and over every provisioning preview (the
same rules, so what `up` would create is judged before it exists).

A subject is a resource reduced to what the rules read: its type, name, region, tags and
three normalised facts (`stores_data`, `encrypted`, `public`), derived from the provider's
inputs by `facts()` for the resource types the platform's programs create. A rule is
`blocking` (provisioning stops before `up`) or `warning` (reported)."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Severity = Literal["blocking", "warning"]
REQUIRED_TAGS: tuple[str, ...] = ("team", "service", "environment", "cost-centre", "managed-by")
# Tag values: lower-case words (GCP labels allow nothing more); cost centres like cc-1234.
_TAG_VALUE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_COST_CENTRE = re.compile(r"^cc-[0-9]{3,6}$")


@dataclass(frozen=True)
class Subject:
    name: str
    type: str
    region: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)
    stores_data: bool = False
    encrypted: bool | None = None  # None: not known
    public: bool | None = None
    allowed_regions: tuple[str, ...] = ()  # empty: any
    resource_id: str | None = None
    taggable: bool = True  # False: the resource takes no tags (a role attachment, a route)


@dataclass(frozen=True)
class Rule:
    id: str
    severity: Severity
    description: str
    check: Callable[[Subject], str | None]  # a violation's message, or None


@dataclass(frozen=True)
class Violation:
    rule: str
    severity: Severity
    message: str
    subject: Subject


def _required_tags(s: Subject) -> str | None:
    if not s.taggable:
        return None
    missing = [t for t in REQUIRED_TAGS if not s.tags.get(t)]
    return f"missing tags: {', '.join(missing)}" if missing else None


def _tag_format(s: Subject) -> str | None:
    bad = [k for k, v in s.tags.items() if k in REQUIRED_TAGS and v and not _TAG_VALUE.match(v)]
    centre = s.tags.get("cost-centre")
    if centre and _TAG_VALUE.match(centre) and not _COST_CENTRE.match(centre):
        bad.append("cost-centre")
    if not bad:
        return None
    listed = ", ".join(sorted(bad))
    return f"tags not in the standard format (lower-case; cost-centre like cc-1234): {listed}"


def _encrypted(s: Subject) -> str | None:
    if s.stores_data and s.encrypted is not True:
        return "stores data without encryption at rest"
    return None


def _private(s: Subject) -> str | None:
    return "reachable from the internet (public access)" if s.public else None


def _region(s: Subject) -> str | None:
    if s.allowed_regions and s.region and s.region not in s.allowed_regions:
        return f"region {s.region} is not allowed (allowed: {', '.join(s.allowed_regions)})"
    return None


RULES: tuple[Rule, ...] = (
    Rule(
        "required-tags",
        "blocking",
        f"Every resource has the tags {', '.join(REQUIRED_TAGS)}",
        _required_tags,
    ),
    Rule(
        "tag-format",
        "warning",
        "Tag values are lower-case; cost-centre is like cc-1234",
        _tag_format,
    ),
    Rule(
        "encryption-at-rest", "blocking", "Buckets and databases are encrypted at rest", _encrypted
    ),
    Rule("no-public-access", "blocking", "Nothing is reachable from the internet", _private),
    Rule("allowed-regions", "blocking", "Resources are in the provider's regions", _region),
)


def evaluate(subjects: list[Subject], rules: tuple[Rule, ...] = RULES) -> list[Violation]:
    found = []
    for subject in subjects:
        for rule in rules:
            message = rule.check(subject)
            if message is not None:
                found.append(Violation(rule.id, rule.severity, message, subject))
    return found


def blocking(violations: list[Violation]) -> list[Violation]:
    return [v for v in violations if v.severity == "blocking"]


def _flag(inputs: Mapping[str, Any], *path: str) -> Any:
    value: Any = inputs
    for key in path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


def facts(type: str, inputs: Mapping[str, Any]) -> dict[str, bool | None]:
    """`stores_data`, `encrypted` and `public` of a resource from its inputs, for the types
    the platform's programs create; other types store nothing and are not public."""
    if type in ("aws:s3/bucket:Bucket", "aws:s3/bucketV2:BucketV2"):
        acl = str(inputs.get("acl") or "private")
        # S3 encrypts every object at rest (SSE-S3 at least) since January 2023.
        return {"stores_data": True, "encrypted": True, "public": acl.startswith("public")}
    if type.startswith("aws:rds/instance"):
        return {
            "stores_data": True,
            "encrypted": bool(inputs.get("storageEncrypted")),
            "public": bool(inputs.get("publiclyAccessible")),
        }
    if type.startswith("gcp:storage/bucket:Bucket"):
        return {
            "stores_data": True,
            "encrypted": True,  # Google encrypts every bucket at rest
            "public": inputs.get("publicAccessPrevention") != "enforced",
        }
    if type.startswith("gcp:sql/databaseInstance"):
        return {
            "stores_data": True,
            "encrypted": True,
            "public": bool(_flag(inputs, "settings", "ipConfiguration", "ipv4Enabled")),
        }
    if type.startswith("azure-native:storage:StorageAccount"):
        return {
            "stores_data": True,
            "encrypted": _flag(inputs, "encryption", "services", "blob", "enabled") is not False,
            "public": bool(inputs.get("allowBlobPublicAccess"))
            or inputs.get("publicNetworkAccess") == "Enabled",
        }
    if type.startswith("azure-native:dbforpostgresql:"):
        return {
            "stores_data": True,
            "encrypted": True,  # always encrypted at rest
            "public": _flag(inputs, "network", "publicNetworkAccess") == "Enabled",
        }
    return {"stores_data": False, "encrypted": None, "public": False}
