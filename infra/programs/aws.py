"""The AWS environment stack: a VPC over two zones (public subnets with one NAT gateway,
private subnets for everything else), an EKS cluster with a managed node group, a
PostgreSQL RDS instance and an S3 bucket.

Security defaults: the database is encrypted (`storage_encrypted`), private
(`publicly_accessible=False`, private subnets, port 5432 open to the VPC only) and keeps its
master password in Secrets Manager (`manage_master_user_password`); the bucket has all four
public access blocks on, ACLs disabled, SSE-KMS default encryption, versioning, and a policy
that refuses plain HTTP."""

from __future__ import annotations

import json

import pulumi
import pulumi_aws as aws

from infra.stacks import StackSpec
from infra.tagging import register_tagging

VPC_CIDR = "10.0.0.0/16"
PUBLIC_CIDRS = ("10.0.0.0/24", "10.0.1.0/24")
PRIVATE_CIDRS = ("10.0.16.0/20", "10.0.32.0/20")
POSTGRES_VERSION = "16"


def _assume_role(service: str) -> str:
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}
            ],
        }
    )


def program(spec: StackSpec) -> None:
    register_tagging(spec.tags)
    size, name, region = spec.size, spec.name, spec.region

    # -- network ---------------------------------------------------------------------------
    zones = aws.get_availability_zones_output(state="available", region=region)
    vpc = aws.ec2.Vpc(
        f"{name}-vpc",
        cidr_block=VPC_CIDR,
        enable_dns_hostnames=True,
        enable_dns_support=True,
        region=region,
    )
    gateway = aws.ec2.InternetGateway(f"{name}-igw", vpc_id=vpc.id, region=region)
    public_routes = aws.ec2.RouteTable(
        f"{name}-public",
        vpc_id=vpc.id,
        routes=[{"cidr_block": "0.0.0.0/0", "gateway_id": gateway.id}],
        region=region,
    )
    public, private = [], []
    for i, (public_cidr, private_cidr) in enumerate(zip(PUBLIC_CIDRS, PRIVATE_CIDRS, strict=True)):
        zone = zones.names[i]  # every region has two zones or more
        subnet = aws.ec2.Subnet(
            f"{name}-public-{i}",
            vpc_id=vpc.id,
            cidr_block=public_cidr,
            availability_zone=zone,
            map_public_ip_on_launch=False,
            tags={"kubernetes.io/role/elb": "1"},
            region=region,
        )
        aws.ec2.RouteTableAssociation(
            f"{name}-public-{i}",
            subnet_id=subnet.id,
            route_table_id=public_routes.id,
            region=region,
        )
        public.append(subnet)
        private.append(
            aws.ec2.Subnet(
                f"{name}-private-{i}",
                vpc_id=vpc.id,
                cidr_block=private_cidr,
                availability_zone=zone,
                tags={"kubernetes.io/role/internal-elb": "1"},
                region=region,
            )
        )
    nat_ip = aws.ec2.Eip(f"{name}-nat", domain="vpc", region=region)
    nat = aws.ec2.NatGateway(
        f"{name}-nat",
        subnet_id=public[0].id,
        allocation_id=nat_ip.id,
        region=region,
        opts=pulumi.ResourceOptions(depends_on=[gateway]),
    )
    private_routes = aws.ec2.RouteTable(
        f"{name}-private",
        vpc_id=vpc.id,
        routes=[{"cidr_block": "0.0.0.0/0", "nat_gateway_id": nat.id}],
        region=region,
    )
    for i, subnet in enumerate(private):
        aws.ec2.RouteTableAssociation(
            f"{name}-private-{i}",
            subnet_id=subnet.id,
            route_table_id=private_routes.id,
            region=region,
        )
    private_ids = [s.id for s in private]

    # -- Kubernetes: EKS ---------------------------------------------------------------------
    cluster_role = aws.iam.Role(
        f"{name}-eks-cluster", assume_role_policy=_assume_role("eks.amazonaws.com")
    )
    cluster_policy = aws.iam.RolePolicyAttachment(
        f"{name}-eks-cluster",
        role=cluster_role.name,
        policy_arn="arn:aws:iam::aws:policy/AmazonEKSClusterPolicy",
    )
    cluster = aws.eks.Cluster(
        f"{name}-eks",
        role_arn=cluster_role.arn,
        vpc_config={
            "subnet_ids": private_ids,
            "endpoint_private_access": True,
            "endpoint_public_access": True,  # the platform deploys from outside the VPC
        },
        access_config={
            "authentication_mode": "API",
            "bootstrap_cluster_creator_admin_permissions": True,
        },
        enabled_cluster_log_types=["api", "audit", "authenticator"],
        region=region,
        opts=pulumi.ResourceOptions(depends_on=[cluster_policy]),
    )
    node_role = aws.iam.Role(
        f"{name}-eks-nodes", assume_role_policy=_assume_role("ec2.amazonaws.com")
    )
    node_policies = [
        aws.iam.RolePolicyAttachment(
            f"{name}-eks-nodes-{policy.split('/')[-1]}",
            role=node_role.name,
            policy_arn=policy,
        )
        for policy in (
            "arn:aws:iam::aws:policy/AmazonEKSWorkerNodePolicy",
            "arn:aws:iam::aws:policy/AmazonEKS_CNI_Policy",
            "arn:aws:iam::aws:policy/AmazonEC2ContainerRegistryReadOnly",
        )
    ]
    aws.eks.NodeGroup(
        f"{name}-nodes",
        cluster_name=cluster.name,
        node_role_arn=node_role.arn,
        subnet_ids=private_ids,
        instance_types=[size.aws_node_type],
        scaling_config={
            "min_size": size.nodes_min,
            "desired_size": size.nodes_min,
            "max_size": size.nodes_max,
        },
        update_config={"max_unavailable": 1},
        region=region,
        opts=pulumi.ResourceOptions(depends_on=node_policies),
    )

    # -- PostgreSQL: RDS -----------------------------------------------------------------------
    db_security = aws.ec2.SecurityGroup(
        f"{name}-db",
        vpc_id=vpc.id,
        description="PostgreSQL from inside the VPC only",
        ingress=[
            {
                "protocol": "tcp",
                "from_port": 5432,
                "to_port": 5432,
                "cidr_blocks": [VPC_CIDR],
                "description": "PostgreSQL from the VPC",
            }
        ],
        region=region,
    )
    db_subnets = aws.rds.SubnetGroup(f"{name}-db", subnet_ids=private_ids, region=region)
    database = aws.rds.Instance(
        f"{name}-db",
        engine="postgres",
        engine_version=POSTGRES_VERSION,
        instance_class=size.aws_db_class,
        allocated_storage=size.db_storage_gb,
        max_allocated_storage=size.db_storage_gb * 2,
        storage_type="gp3",
        storage_encrypted=True,
        publicly_accessible=False,
        multi_az=size.high_availability,
        db_name="app",
        username="idp_admin",
        manage_master_user_password=True,
        iam_database_authentication_enabled=True,
        db_subnet_group_name=db_subnets.name,
        vpc_security_group_ids=[db_security.id],
        backup_retention_period=size.db_backup_days,
        copy_tags_to_snapshot=True,
        delete_automated_backups=False,  # kept for their retention after a destroy
        skip_final_snapshot=True,
        auto_minor_version_upgrade=True,
        region=region,
    )

    # -- object storage: S3 --------------------------------------------------------------------
    bucket = aws.s3.Bucket(f"{name}-data", force_destroy=False, region=region)
    aws.s3.BucketOwnershipControls(
        f"{name}-data",
        bucket=bucket.id,
        rule={"object_ownership": "BucketOwnerEnforced"},  # no ACLs
        region=region,
    )
    block = aws.s3.BucketPublicAccessBlock(
        f"{name}-data",
        bucket=bucket.id,
        block_public_acls=True,
        block_public_policy=True,
        ignore_public_acls=True,
        restrict_public_buckets=True,
        region=region,
    )
    aws.s3.BucketServerSideEncryptionConfiguration(
        f"{name}-data",
        bucket=bucket.id,
        rules=[
            {
                "apply_server_side_encryption_by_default": {"sse_algorithm": "aws:kms"},
                "bucket_key_enabled": True,
            }
        ],
        region=region,
    )
    aws.s3.BucketVersioning(
        f"{name}-data",
        bucket=bucket.id,
        versioning_configuration={"status": "Enabled"},
        region=region,
    )
    aws.s3.BucketPolicy(
        f"{name}-data-tls-only",
        bucket=bucket.id,
        policy=bucket.arn.apply(
            lambda arn: json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Sid": "DenyInsecureTransport",
                            "Effect": "Deny",
                            "Principal": "*",
                            "Action": "s3:*",
                            "Resource": [arn, f"{arn}/*"],
                            "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                        }
                    ],
                }
            )
        ),
        region=region,
        opts=pulumi.ResourceOptions(depends_on=[block]),
    )

    pulumi.export("network_id", vpc.id)
    pulumi.export("cluster_name", cluster.name)
    pulumi.export("database_endpoint", database.endpoint)
    pulumi.export("bucket_name", bucket.bucket)
