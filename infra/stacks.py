"""Environment stacks: what to provision (`StackSpec`), how big (`TIERS`), and the Pulumi
program that provisions it (`program_for`), one per cloud in `infra.programs`.

A program is an inline program for the Pulumi Automation API: a function of no arguments
that declares resources and exports outputs::

    from pulumi import automation as auto

    spec = StackSpec(cloud="aws", region="eu-west-1", tier="small", tags=Tags(...))
    stack = auto.create_or_select_stack(
        stack_name=spec.name, project_name="idp-environments", program=program_for(spec)
    )
    stack.set_all_config({k: auto.ConfigValue(v) for k, v in stack_config(spec).items()})
    stack.up()

The providers are the default ones, configured by the stack's configuration (`stack_config`
gives the region; credentials are the caller's: `aws:accessKey`, `gcp:credentials`,
`azure-native:clientSecret`, `kubernetes:kubeconfig`, ... or the providers' environment
variables). This module imports no cloud package, so specs can be built and validated
without the `cloud` extra; `program_for` imports the one cloud's package when called."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, model_validator

from infra.tagging import Tags, label_value

Cloud = Literal["aws", "gcp", "azure", "kubernetes"]
TierName = Literal["small", "medium", "large"]
CLOUDS: tuple[str, ...] = ("aws", "gcp", "azure", "kubernetes")

# Every output a program exports; a cloud's program exports those that apply to it.
OUTPUTS: dict[str, tuple[str, ...]] = {
    "aws": ("network_id", "cluster_name", "database_endpoint", "bucket_name"),
    "gcp": ("network_id", "cluster_name", "database_endpoint", "bucket_name"),
    "azure": (
        "network_id",
        "cluster_name",
        "database_endpoint",
        "bucket_name",
        "storage_account",
        "resource_group",
    ),
    "kubernetes": ("namespace", "database_endpoint", "database_secret"),
}


@dataclass(frozen=True)
class Tier:
    """What a tier buys, on every cloud (one row of the README's table)."""

    # Kubernetes worker nodes (autoscaled between min and max)
    nodes_min: int
    nodes_max: int
    aws_node_type: str  # EKS managed node group instance type
    gcp_machine_type: str  # GKE node pool machine type
    azure_vm_size: str  # AKS system pool VM size
    # PostgreSQL
    aws_db_class: str  # RDS instance class
    gcp_db_tier: str  # Cloud SQL tier
    azure_db_sku: str  # Flexible server SKU ...
    azure_db_sku_tier: str  # ... and its tier
    db_storage_gb: int
    db_backup_days: int
    # Standby database / multi-zone storage / paid control plane SLA
    high_availability: bool
    # The `kubernetes` variant: the namespace's quota and the database pod's requests
    quota_cpu: str
    quota_memory: str
    quota_pods: int
    quota_storage: str
    db_cpu: str
    db_memory: str


TIERS: dict[str, Tier] = {
    "small": Tier(
        nodes_min=1,
        nodes_max=3,
        aws_node_type="t3.medium",
        gcp_machine_type="e2-medium",
        azure_vm_size="Standard_B2s",
        aws_db_class="db.t4g.micro",
        gcp_db_tier="db-f1-micro",
        azure_db_sku="Standard_B1ms",
        azure_db_sku_tier="Burstable",
        db_storage_gb=20,
        db_backup_days=7,
        high_availability=False,
        quota_cpu="4",
        quota_memory="8Gi",
        quota_pods=20,
        quota_storage="50Gi",
        db_cpu="250m",
        db_memory="512Mi",
    ),
    "medium": Tier(
        nodes_min=2,
        nodes_max=6,
        aws_node_type="t3.large",
        gcp_machine_type="e2-standard-2",
        azure_vm_size="Standard_D2s_v3",
        aws_db_class="db.t4g.medium",
        gcp_db_tier="db-custom-1-3840",
        azure_db_sku="Standard_D2s_v3",
        azure_db_sku_tier="GeneralPurpose",
        db_storage_gb=50,
        db_backup_days=7,
        high_availability=False,
        quota_cpu="8",
        quota_memory="16Gi",
        quota_pods=50,
        quota_storage="200Gi",
        db_cpu="500m",
        db_memory="1Gi",
    ),
    "large": Tier(
        nodes_min=3,
        nodes_max=9,
        aws_node_type="m6i.xlarge",
        gcp_machine_type="e2-standard-4",
        azure_vm_size="Standard_D4s_v3",
        aws_db_class="db.m6g.large",
        gcp_db_tier="db-custom-4-15360",
        azure_db_sku="Standard_D4s_v3",
        azure_db_sku_tier="GeneralPurpose",
        db_storage_gb=200,
        db_backup_days=14,
        high_availability=True,
        quota_cpu="32",
        quota_memory="64Gi",
        quota_pods=200,
        quota_storage="1Ti",
        db_cpu="2",
        db_memory="4Gi",
    ),
}

# Logical names are `<name>-<part>`; Pulumi appends a random suffix to physical names, and the
# strictest limit among them (a GKE cluster, 40 characters) leaves 24 for `name`.
_NAME_LENGTH = 24


class StackSpec(BaseModel):
    """One environment stack: where, how big, and whose (the environment is the tags')."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    cloud: Cloud
    region: str | None = None  # AWS region, GCP region, Azure location; unused by kubernetes
    tier: TierName = "small"
    tags: Tags

    @model_validator(mode="after")
    def _region_given(self) -> StackSpec:
        if self.cloud != "kubernetes" and not self.region:
            raise ValueError(f"a {self.cloud} stack needs a region")
        return self

    @property
    def environment(self) -> str:
        return self.tags.environment

    @property
    def size(self) -> Tier:
        return TIERS[self.tier]

    @property
    def name(self) -> str:
        """`<service>-<environment>` made safe for every cloud's resource names: lower case
        letters, digits and `-`, starting with a letter, at most 24 characters."""
        slug = label_value(f"{self.tags.service}-{self.tags.environment}").replace("_", "-")
        if not slug[0].isalpha():
            slug = f"e-{slug}"
        return slug[:_NAME_LENGTH].rstrip("-")


def stack_config(spec: StackSpec) -> dict[str, str]:
    """The stack configuration the program's default providers need besides credentials."""
    region = spec.region or ""
    return {
        "aws": {"aws:region": region},
        "gcp": {"gcp:region": region},
        "azure": {"azure-native:location": region},
        "kubernetes": {},
    }[spec.cloud]


def program_for(spec: StackSpec) -> Callable[[], None]:
    """The inline Pulumi program that provisions `spec`."""
    module = importlib.import_module(f"infra.programs.{spec.cloud}")
    program: Callable[[StackSpec], None] = module.program

    def run() -> None:
        program(spec)

    run.__name__ = f"{spec.cloud}_{spec.name.replace('-', '_')}"
    return run
