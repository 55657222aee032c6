"""The Azure environment stack: a resource group, a virtual network (a subnet for AKS with
a storage service endpoint, a subnet delegated to PostgreSQL), an AKS cluster with an
autoscaled system pool, a PostgreSQL flexible server with VNet integration, and a storage
account with one blob container.

Security defaults: the database has public network access disabled (delegated subnet and a
private DNS zone), Microsoft Entra authentication only (no password; the deploying identity
is its administrator) and is encrypted at rest (always, by Azure). The storage account
refuses public blob access, plain HTTP, TLS below 1.2 and shared keys, denies every network
but the AKS subnet, and encrypts blobs and files (with infrastructure encryption on top);
the container is private."""

from __future__ import annotations

import pulumi
import pulumi_azure_native as azure_native

from infra.stacks import StackSpec
from infra.tagging import register_tagging

VNET_CIDR = "10.0.0.0/16"
AKS_SUBNET_CIDR = "10.0.0.0/20"
DB_SUBNET_CIDR = "10.0.16.0/24"
SERVICE_CIDR = "10.1.0.0/16"
DNS_SERVICE_IP = "10.1.0.10"
POSTGRES_VERSION = "16"


def program(spec: StackSpec) -> None:
    register_tagging(spec.tags)
    size, name, location = spec.size, spec.name, spec.region
    client = azure_native.authorization.get_client_config_output()

    group = azure_native.resources.ResourceGroup(f"{name}-rg", location=location)

    # -- network ---------------------------------------------------------------------------
    vnet = azure_native.network.VirtualNetwork(
        f"{name}-vnet",
        resource_group_name=group.name,
        location=location,
        address_space={"address_prefixes": [VNET_CIDR]},
    )
    aks_subnet = azure_native.network.Subnet(
        f"{name}-aks",
        resource_group_name=group.name,
        virtual_network_name=vnet.name,
        address_prefix=AKS_SUBNET_CIDR,
        service_endpoints=[{"service": "Microsoft.Storage"}],
    )
    db_subnet = azure_native.network.Subnet(
        f"{name}-db",
        resource_group_name=group.name,
        virtual_network_name=vnet.name,
        address_prefix=DB_SUBNET_CIDR,
        delegations=[
            {"name": "postgres", "service_name": "Microsoft.DBforPostgreSQL/flexibleServers"}
        ],
        opts=pulumi.ResourceOptions(depends_on=[aks_subnet]),  # one subnet change at a time
    )
    zone = azure_native.privatedns.PrivateZone(
        f"{name}-db-dns",
        private_zone_name=f"{name}.private.postgres.database.azure.com",
        resource_group_name=group.name,
        location="global",
    )
    link = azure_native.privatedns.VirtualNetworkLink(
        f"{name}-db-dns",
        private_zone_name=zone.name,
        resource_group_name=group.name,
        location="global",
        virtual_network={"id": vnet.id},
        registration_enabled=False,
    )

    # -- Kubernetes: AKS -----------------------------------------------------------------------
    cluster = azure_native.containerservice.ManagedCluster(
        f"{name}-aks",
        dns_prefix=name,
        identity={"type": azure_native.containerservice.ResourceIdentityType.SYSTEM_ASSIGNED},
        enable_rbac=True,
        agent_pool_profiles=[
            {
                "name": "system",
                "mode": "System",
                "type": "VirtualMachineScaleSets",
                "os_type": "Linux",
                "vm_size": size.azure_vm_size,
                "enable_auto_scaling": True,
                "count": size.nodes_min,
                "min_count": size.nodes_min,
                "max_count": size.nodes_max,
                "vnet_subnet_id": aks_subnet.id,
                "enable_node_public_ip": False,
            }
        ],
        network_profile={
            "network_plugin": "azure",
            "service_cidr": SERVICE_CIDR,
            "dns_service_ip": DNS_SERVICE_IP,
        },
        sku={"name": "Base", "tier": "Standard" if size.high_availability else "Free"},
        resource_group_name=group.name,
        location=location,
    )

    # -- PostgreSQL: flexible server ----------------------------------------------------------
    database = azure_native.dbforpostgresql.Server(
        f"{name}-db",
        version=POSTGRES_VERSION,
        sku={"name": size.azure_db_sku, "tier": size.azure_db_sku_tier},
        storage={"storage_size_gb": size.db_storage_gb, "auto_grow": "Enabled"},
        backup={"backup_retention_days": size.db_backup_days, "geo_redundant_backup": "Disabled"},
        high_availability={"mode": "ZoneRedundant" if size.high_availability else "Disabled"},
        network={
            "delegated_subnet_resource_id": db_subnet.id,
            "private_dns_zone_arm_resource_id": zone.id,
            "public_network_access": "Disabled",
        },
        auth_config={
            "active_directory_auth": "Enabled",
            "password_auth": "Disabled",
            "tenant_id": client.tenant_id,
        },
        resource_group_name=group.name,
        location=location,
        opts=pulumi.ResourceOptions(depends_on=[link]),
    )
    azure_native.dbforpostgresql.Administrator(
        f"{name}-db-admin",
        resource_group_name=group.name,
        server_name=database.name,
        object_id=client.object_id,
        tenant_id=client.tenant_id,
        principal_name="idp-platform",
        principal_type="ServicePrincipal",
    )

    # -- object storage: a storage account and a container ----------------------------------
    # Storage account names are 3-24 lower-case letters and digits, unique in Azure; the
    # provider appends a random suffix to the logical name.
    account = azure_native.storage.StorageAccount(
        f"st{name.replace('-', '')}"[:15],
        kind="StorageV2",
        sku={"name": "Standard_ZRS" if size.high_availability else "Standard_LRS"},
        access_tier=azure_native.storage.AccessTier.HOT,
        allow_blob_public_access=False,
        allow_shared_key_access=False,
        enable_https_traffic_only=True,
        minimum_tls_version="TLS1_2",
        encryption={
            "key_source": "Microsoft.Storage",
            "require_infrastructure_encryption": True,
            "services": {
                "blob": {"enabled": True, "key_type": "Account"},
                "file": {"enabled": True, "key_type": "Account"},
            },
        },
        network_rule_set={
            "default_action": azure_native.storage.DefaultAction.DENY,
            "bypass": "AzureServices",
            "virtual_network_rules": [
                {
                    "virtual_network_resource_id": aks_subnet.id,
                    "action": azure_native.storage.Action.ALLOW,
                }
            ],
        },
        resource_group_name=group.name,
        location=location,
    )
    container = azure_native.storage.BlobContainer(
        f"{name}-data",
        container_name="data",
        account_name=account.name,
        resource_group_name=group.name,
        public_access=azure_native.storage.PublicAccess.NONE,
    )

    pulumi.export("network_id", vnet.id)
    pulumi.export("cluster_name", cluster.name)
    pulumi.export("database_endpoint", database.fully_qualified_domain_name)
    pulumi.export("bucket_name", container.name)
    pulumi.export("storage_account", account.name)
    pulumi.export("resource_group", group.name)
