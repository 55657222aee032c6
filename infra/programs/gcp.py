"""The GCP environment stack: a custom-mode VPC with one regional subnetwork (secondary
ranges for pods and services) and Cloud NAT, a regional private GKE cluster with an
autoscaled node pool, a PostgreSQL Cloud SQL instance on a private IP, and a Cloud Storage
bucket.

Security defaults: Cloud SQL has no public IPv4 (`ipv4_enabled=False`), is reached over
private services access in the VPC and accepts only TLS; the bucket has uniform
bucket-level access and `public_access_prevention="enforced"`, versioning on. Both are
encrypted at rest by Google (always on; customer-managed keys are not configured here).
GKE nodes have no public IPs (private nodes) and use shielded VMs with secure boot."""

from __future__ import annotations

import pulumi
import pulumi_gcp as gcp

from infra.stacks import StackSpec
from infra.tagging import register_tagging

SUBNET_CIDR = "10.0.0.0/20"
PODS_CIDR = "10.4.0.0/14"
SERVICES_CIDR = "10.8.0.0/20"
MASTER_CIDR = "172.16.0.0/28"
POSTGRES_VERSION = "POSTGRES_16"


def program(spec: StackSpec) -> None:
    register_tagging(spec.tags)
    size, name, region = spec.size, spec.name, spec.region

    # -- network ---------------------------------------------------------------------------
    network = gcp.compute.Network(
        f"{name}-vpc", auto_create_subnetworks=False, routing_mode="REGIONAL"
    )
    subnet = gcp.compute.Subnetwork(
        f"{name}-subnet",
        network=network.id,
        region=region,
        ip_cidr_range=SUBNET_CIDR,
        private_ip_google_access=True,
        secondary_ip_ranges=[
            {"range_name": "pods", "ip_cidr_range": PODS_CIDR},
            {"range_name": "services", "ip_cidr_range": SERVICES_CIDR},
        ],
    )
    router = gcp.compute.Router(f"{name}-router", network=network.id, region=region)
    gcp.compute.RouterNat(
        f"{name}-nat",
        router=router.name,
        region=region,
        nat_ip_allocate_option="AUTO_ONLY",
        source_subnetwork_ip_ranges_to_nat="ALL_SUBNETWORKS_ALL_IP_RANGES",
    )
    # Private services access: the range Cloud SQL's private IP comes from.
    services_range = gcp.compute.GlobalAddress(
        f"{name}-services",
        network=network.id,
        purpose="VPC_PEERING",
        address_type="INTERNAL",
        prefix_length=16,
    )
    peering = gcp.servicenetworking.Connection(
        f"{name}-services",
        network=network.id,
        service="servicenetworking.googleapis.com",
        reserved_peering_ranges=[services_range.name],
    )

    # -- Kubernetes: GKE -----------------------------------------------------------------------
    cluster = gcp.container.Cluster(
        f"{name}-gke",
        location=region,
        network=network.id,
        subnetwork=subnet.id,
        remove_default_node_pool=True,
        initial_node_count=1,
        ip_allocation_policy={
            "cluster_secondary_range_name": "pods",
            "services_secondary_range_name": "services",
        },
        private_cluster_config={
            "enable_private_nodes": True,
            "enable_private_endpoint": False,  # the platform deploys from outside the VPC
            "master_ipv4_cidr_block": MASTER_CIDR,
        },
        release_channel={"channel": "REGULAR"},
        enable_shielded_nodes=True,
        deletion_protection=False,  # the platform destroys environments
    )
    gcp.container.NodePool(
        f"{name}-nodes",
        cluster=cluster.id,
        location=region,
        initial_node_count=1,  # per zone
        autoscaling={
            "total_min_node_count": size.nodes_min,
            "total_max_node_count": size.nodes_max,
            "location_policy": "BALANCED",
        },
        management={"auto_repair": True, "auto_upgrade": True},
        node_config={
            "machine_type": size.gcp_machine_type,
            "disk_size_gb": 50,
            "disk_type": "pd-balanced",
            "oauth_scopes": ["https://www.googleapis.com/auth/cloud-platform"],
            "metadata": {"disable-legacy-endpoints": "true"},
            "shielded_instance_config": {
                "enable_secure_boot": True,
                "enable_integrity_monitoring": True,
            },
        },
    )

    # -- PostgreSQL: Cloud SQL -----------------------------------------------------------------
    database = gcp.sql.DatabaseInstance(
        f"{name}-db",
        region=region,
        database_version=POSTGRES_VERSION,
        deletion_protection=False,  # the platform destroys environments
        settings={
            "tier": size.gcp_db_tier,
            "edition": "ENTERPRISE",  # shared-core and custom tiers
            "disk_size": size.db_storage_gb,
            "disk_type": "PD_SSD",
            "disk_autoresize": True,
            "availability_type": "REGIONAL" if size.high_availability else "ZONAL",
            "backup_configuration": {
                "enabled": True,
                "point_in_time_recovery_enabled": True,
                "backup_retention_settings": {"retained_backups": size.db_backup_days},
            },
            "ip_configuration": {
                "ipv4_enabled": False,
                "private_network": network.id,
                "ssl_mode": "ENCRYPTED_ONLY",
            },
        },
        opts=pulumi.ResourceOptions(depends_on=[peering]),
    )

    # -- object storage: Cloud Storage ---------------------------------------------------------
    bucket = gcp.storage.Bucket(
        f"{name}-data",
        location=(region or "").upper(),
        uniform_bucket_level_access=True,
        public_access_prevention="enforced",
        versioning={"enabled": True},
        force_destroy=False,
    )

    pulumi.export("network_id", network.id)
    pulumi.export("cluster_name", cluster.name)
    pulumi.export("database_endpoint", database.private_ip_address)
    pulumi.export("bucket_name", bucket.name)
