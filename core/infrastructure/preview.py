"""Judging a Pulumi preview before `up`: what it would change, what the result would cost a
month (the price catalog over the resources that would exist), and the compliance rules over
every resource it would create or update, read from the inputs the engine planned."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from core.infrastructure.compliance import Subject, Violation, evaluate, facts
from core.infrastructure.costs import PriceCatalog
from core.infrastructure.engine import PlannedResource
from core.models.infrastructure import Resource

# Where each cloud's resources take their tags, as the tagging transformation fills them.
_TAG_PATHS: tuple[tuple[str, ...], ...] = (
    ("tags",),
    ("labels",),
    ("resourceLabels",),
    ("metadata", "labels"),
    ("settings", "userLabels"),
    ("nodeConfig", "resourceLabels"),
)
_REMAINS = ("create", "update", "replace", "same", "create-replacement")


def tags_in(inputs: Mapping[str, Any]) -> dict[str, str] | None:
    """The tags (or labels) a planned resource carries; None when it takes none."""
    for path in _TAG_PATHS:
        value: Any = inputs
        for key in path:
            value = value.get(key) if isinstance(value, Mapping) else None
        if isinstance(value, Mapping):
            return {str(k): str(v) for k, v in value.items()}
    return None


def planned_subject(
    resource: PlannedResource, region: str | None, allowed_regions: tuple[str, ...]
) -> Subject:
    tags = tags_in(resource.inputs)
    derived: dict[str, Any] = facts(resource.type, resource.inputs)
    return Subject(
        name=resource.name,
        type=resource.type,
        region=region,
        tags=tags or {},
        # The tagging transformation fills every resource that takes tags, so one planned
        # without any takes none (a role attachment); what stores data always takes them.
        taggable=tags is not None or bool(derived["stores_data"]),
        allowed_regions=allowed_regions,
        **derived,
    )


@dataclass(frozen=True)
class Assessment:
    changes: dict[str, int]
    estimate_monthly: Decimal
    violations: list[Violation]


def assess(
    planned: list[PlannedResource],
    catalog: PriceCatalog,
    region: str | None,
    allowed_regions: tuple[str, ...],
) -> Assessment:
    remaining = [r for r in planned if r.op in _REMAINS]
    estimate = Decimal(0)
    for resource in remaining:
        monthly, _ = catalog.monthly(Resource(type=resource.type, properties=dict(resource.inputs)))
        estimate += monthly or Decimal(0)
    judged = [r for r in remaining if r.op != "same"]
    violations = evaluate([planned_subject(r, region, allowed_regions) for r in judged])
    return Assessment(dict(Counter(r.op for r in planned)), estimate, violations)
