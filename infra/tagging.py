"""The platform's tagging standard, and the Pulumi stack transformation that applies it.

Every resource the platform provisions carries five tags: `team`, `service`, `environment`,
`cost-centre` and `managed-by` (always `idp`). The keys are those the compliance rules
require (`core.infrastructure.compliance.REQUIRED_TAGS`) and the cost reports group by.

Values are validated once, when a `Tags` is built (1 to 63 characters from the set every
cloud accepts; the cost centre like `cc-1234`). AWS and Azure take them as given; GCP labels
and Kubernetes labels are stricter (lower case, `a-z 0-9 _ -`, starting and ending with a
letter or digit), so `label_value()` normalises them for those two: `Platform Team` becomes
`platform-team`.

`register_tagging(tags)` registers a stack transformation (it runs in the program's own
process, before a resource is registered, so it works the same under the Automation API
and under `pulumi.runtime.set_mocks`) that merges the tags into every resource whose
inputs take them:

- AWS (`aws:`) and Azure (`azure-native:`): `tags`;
- GCP (`gcp:`): each of `labels`, `resource_labels` (a GKE cluster),
  `node_config.resource_labels` (the VMs of a GKE node pool) and `settings.user_labels`
  (a Cloud SQL instance) that the resource takes;
- Kubernetes (`kubernetes:`): `metadata.labels`.

Whether a resource takes an input is read from its class's constructor, so resources
without tags (an S3 public access block, a GCP network, a role attachment) are left alone.
The standard's tags win over a resource's own tags of the same keys."""

from __future__ import annotations

import copy
import inspect
import re
from collections.abc import Callable, Mapping
from typing import Any

import pulumi
from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator

TAG_KEYS: tuple[str, ...] = ("team", "service", "environment", "cost-centre", "managed-by")
MANAGED_BY = "idp"
MAX_LENGTH = 63  # GCP label and Kubernetes label values: the strictest of the clouds

# What every cloud accepts in a tag value (AWS's set; Azure and GCP/Kubernetes after
# normalisation accept it too): letters, digits, spaces and _ . : / = + - @
_VALUE = re.compile(r"^[\w .:/=+\-@]+$", re.ASCII)
_COST_CENTRE = re.compile(r"^cc-[0-9]{3,6}$")
_LABEL_INVALID = re.compile(r"[^a-z0-9_-]+")
_LABEL_KEY = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")


def validate_value(key: str, value: str) -> str:
    """`value` if it is a valid value of tag `key`; ValueError naming the rule otherwise."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"tag {key!r} must not be empty")
    if value != value.strip():
        raise ValueError(f"tag {key!r} must not start or end with spaces")
    if len(value) > MAX_LENGTH:
        raise ValueError(f"tag {key!r} is longer than {MAX_LENGTH} characters")
    if not _VALUE.match(value):
        raise ValueError(
            f"tag {key!r} may contain only letters, digits, spaces and _ . : / = + - @"
        )
    if key == "cost-centre" and not _COST_CENTRE.match(value.lower()):
        raise ValueError("tag 'cost-centre' must be like cc-1234 (cc- and 3 to 6 digits)")
    if key == "managed-by" and value != MANAGED_BY:
        raise ValueError(f"tag 'managed-by' is always {MANAGED_BY!r}")
    return value


def label_value(value: str) -> str:
    """`value` as a GCP label value and a Kubernetes label value: lower case, runs of other
    characters than a-z 0-9 _ - replaced by one `-`, starting and ending with a letter or
    digit, at most 63 characters."""
    label = _LABEL_INVALID.sub("-", value.lower()).strip("-_")[:MAX_LENGTH].strip("-_")
    if not label:
        raise ValueError(f"{value!r} has no letters or digits to make a label of")
    return label


def label_key(key: str) -> str:
    """`key` as a GCP label key (which must also start with a letter)."""
    label = label_value(key)
    if not _LABEL_KEY.match(label):
        raise ValueError(f"{key!r} cannot be a label key (it must start with a letter)")
    return label


def labels(tags: Mapping[str, str]) -> dict[str, str]:
    """A tag map as GCP / Kubernetes labels."""
    return {label_key(k): label_value(v) for k, v in tags.items()}


class Tags(BaseModel):
    """The tags of one environment stack; `as_dict()` adds `managed-by`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    team: str
    service: str
    environment: str
    cost_centre: str

    @field_validator("team", "service", "environment")
    @classmethod
    def _valid(cls, value: str, info: ValidationInfo) -> str:
        return validate_value(str(info.field_name), value)

    @field_validator("cost_centre")
    @classmethod
    def _valid_cost_centre(cls, value: str) -> str:
        return validate_value("cost-centre", value).lower()

    def as_dict(self) -> dict[str, str]:
        """The five tags, keyed as the standard names them."""
        return {
            "team": self.team,
            "service": self.service,
            "environment": self.environment,
            "cost-centre": self.cost_centre,
            "managed-by": MANAGED_BY,
        }

    def as_labels(self) -> dict[str, str]:
        """The five tags as GCP / Kubernetes labels."""
        return labels(self.as_dict())


# -- the transformation ------------------------------------------------------------------------

# Where a resource's tags go, by provider (the token's package): (input, nested key or None).
# The first that the resource's constructor takes (and, when nested, is set) is merged.
_TARGETS: dict[str, tuple[tuple[str, str | None], ...]] = {
    "aws": (("tags", None),),
    "azure-native": (("tags", None),),
    "gcp": (
        ("labels", None),
        ("resource_labels", None),
        ("settings", "user_labels"),
        ("node_config", "resource_labels"),
    ),
    "kubernetes": (("metadata", "labels"),),
}


_INPUTS: dict[type, frozenset[str]] = {}


def _inputs_of(cls: type) -> frozenset[str]:
    """The input names a generated resource class's constructor takes (none for others)."""
    if cls not in _INPUTS:
        init = getattr(cls, "_internal_init", None)
        names = frozenset(inspect.signature(init).parameters) if init is not None else frozenset()
        _INPUTS[cls] = names - {"__self__", "resource_name", "opts", "__props__"}
    return _INPUTS[cls]


def _merged(existing: Any, extra: Mapping[str, str]) -> Any:
    """`existing` (None, a map, or an Output of one) with `extra` merged over it; anything
    else (such as AWS autoscaling groups' list of tags) is returned unchanged."""
    if existing is None:
        return dict(extra)
    if isinstance(existing, Mapping):
        return {**existing, **extra}
    if isinstance(existing, pulumi.Output):
        return existing.apply(lambda value: _merged(value, extra))
    return existing


def _with_nested(container: Any, key: str, extra: Mapping[str, str]) -> Any:
    """`container` (a map, an input type or an Output of one) with `extra` merged into its
    `key`; None stays None (the resource did not use that block)."""
    if container is None:
        return None
    if isinstance(container, pulumi.Output):
        return container.apply(lambda value: _with_nested(value, key, extra))
    if isinstance(container, Mapping):
        return {**container, key: _merged(container.get(key), extra)}
    if hasattr(container, "__dict__"):  # an input type (`...Args`)
        clone = copy.copy(container)
        pulumi.set(clone, key, _merged(pulumi.get(clone, key), extra))
        return clone
    return container


def apply_tags(
    type_: str, inputs: frozenset[str], props: Mapping[str, Any], tags: Mapping[str, str]
) -> dict[str, Any] | None:
    """`props` of a resource of `type_` (whose constructor takes `inputs`) with the tags
    merged in where its provider keeps them; None when it takes none."""
    package = type_.split(":", 1)[0]
    targets = _TARGETS.get(package)
    if not targets:
        return None
    values = labels(tags) if package in ("gcp", "kubernetes") else dict(tags)
    tagged: dict[str, Any] = {}
    for name, nested in targets:
        if name not in inputs:
            continue
        if nested is None:
            tagged[name] = _merged(props.get(name), values)
            continue
        container = props.get(name)
        if container is None and package != "kubernetes":
            continue  # e.g. a GKE cluster without a default node_config
        tagged[name] = _with_nested({} if container is None else container, nested, values)
    return {**props, **tagged} if tagged else None


def tagging_transformation(
    tags: Mapping[str, str],
) -> Callable[[pulumi.ResourceTransformationArgs], pulumi.ResourceTransformationResult | None]:
    """The stack transformation that applies `tags` (see the module's docstring)."""
    for key, value in tags.items():
        validate_value(key, value)

    def transform(
        args: pulumi.ResourceTransformationArgs,
    ) -> pulumi.ResourceTransformationResult | None:
        if not isinstance(args.resource, pulumi.CustomResource) or isinstance(
            args.resource, pulumi.ProviderResource
        ):
            return None
        if not isinstance(args.props, Mapping):
            return None
        props = apply_tags(args.type_, _inputs_of(type(args.resource)), args.props, tags)
        if props is None:
            return None
        return pulumi.ResourceTransformationResult(props=props, opts=args.opts)

    return transform


def register_tagging(tags: Tags | Mapping[str, str]) -> None:
    """Tag every resource the running program declares from now on."""
    values = tags.as_dict() if isinstance(tags, Tags) else dict(tags)
    missing = [k for k in TAG_KEYS if k not in values]
    if missing:
        raise ValueError(f"missing tags: {', '.join(missing)}")
    pulumi.runtime.register_stack_transformation(tagging_transformation(values))
