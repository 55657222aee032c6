"""The environment stacks' Pulumi programs (infra/), run against `pulumi.runtime.set_mocks`:
which resources each cloud declares, that every taggable one carries the five tags, that
buckets and databases are encrypted and private, that tiers size them, and the outputs.

Each program runs in a thread of its own: the Pulumi runtime keeps its settings, its root
stack and its event loop in context variables and the thread's loop, so nothing of one run
(nor of set_mocks) is seen by another run or by the rest of the suite."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest

pulumi = pytest.importorskip("pulumi")
for _package in ("pulumi_aws", "pulumi_gcp", "pulumi_azure_native", "pulumi_kubernetes"):
    pytest.importorskip(_package, reason="the `cloud` extra is not installed")

from pulumi.runtime import rpc  # noqa: E402
from pulumi.runtime.mocks import MockCallArgs, MockResourceArgs, Mocks  # noqa: E402

from core.infrastructure.compliance import REQUIRED_TAGS, Subject, evaluate, facts  # noqa: E402
from infra.stacks import OUTPUTS, TIERS, StackSpec, program_for, stack_config  # noqa: E402
from infra.tagging import TAG_KEYS, Tags, apply_tags, label_value, labels  # noqa: E402

# The provider packages deprecate old resource classes when their modules are first imported.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

REGIONS = {"aws": "eu-west-1", "gcp": "europe-west1", "azure": "westeurope", "kubernetes": None}
TAGS = Tags(team="payments", service="checkout", environment="staging", cost_centre="cc-1234")
STANDARD = TAGS.as_dict()


@dataclass
class Registered:
    type: str
    name: str
    inputs: dict[str, Any]


@dataclass
class Run:
    resources: list[Registered]
    outputs: dict[str, Any]
    invokes: list[str] = field(default_factory=list)

    def of(self, type_: str) -> list[Registered]:
        return [r for r in self.resources if r.type == type_]

    def one(self, type_: str) -> Registered:
        found = self.of(type_)
        assert len(found) == 1, f"{len(found)} resources of {type_}"
        return found[0]

    @property
    def types(self) -> set[str]:
        return {r.type for r in self.resources}


class RecordingMocks(Mocks):
    """Records every resource (its inputs as the engine would receive them: camelCase) and
    answers with its inputs plus the few computed outputs the programs export."""

    def __init__(self) -> None:
        self.resources: list[Registered] = []
        self.invokes: list[str] = []

    def new_resource(self, args: MockResourceArgs) -> tuple[str, dict[str, Any]]:
        self.resources.append(Registered(args.typ, args.name, dict(args.inputs)))
        state = {**args.inputs, "name": args.inputs.get("name", f"{args.name}-physical")}
        computed: dict[str, dict[str, Any]] = {
            "aws:rds/instance:Instance": {"endpoint": f"{args.name}.rds.local:5432"},
            "aws:s3/bucket:Bucket": {"bucket": f"{args.name}-bucket", "arn": "arn:bucket"},
            "aws:eks/cluster:Cluster": {"name": f"{args.name}-eks"},
            "gcp:sql/databaseInstance:DatabaseInstance": {"privateIpAddress": "10.20.0.3"},
            "azure-native:dbforpostgresql:Server": {
                "fullyQualifiedDomainName": f"{args.name}.postgres.database.azure.com"
            },
            "azure-native:storage:BlobContainer": {"name": args.inputs.get("containerName")},
            "random:index/randomPassword:RandomPassword": {"result": "generated"},
        }
        state.update(computed.get(args.typ, {}))
        return f"{args.name}-id", state

    def call(self, args: MockCallArgs) -> tuple[dict[str, Any], list[tuple[str, str]]]:
        self.invokes.append(args.token)
        if args.token == "aws:index/getAvailabilityZones:getAvailabilityZones":
            return {"names": ["eu-west-1a", "eu-west-1b", "eu-west-1c"]}, []
        if args.token == "azure-native:authorization:getClientConfig":
            return {
                "clientId": "client",
                "objectId": "00000000-0000-0000-0000-00000000000a",
                "subscriptionId": "subscription",
                "tenantId": "00000000-0000-0000-0000-00000000000b",
            }, []
        return {}, []


def run_program(spec: StackSpec) -> Run:
    """Run `spec`'s program under fresh mocks in a thread of its own; what it registered."""
    mocks = RecordingMocks()
    result: dict[str, Any] = {}

    def target() -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            pulumi.runtime.set_mocks(mocks, project="idp-environments", stack=spec.name)
            outputs: dict[str, Any] = {}

            @pulumi.runtime.test
            def declare() -> Any:
                program_for(spec)()
                stack = pulumi.runtime.get_root_resource()
                return pulumi.Output.from_input(stack.outputs).apply(outputs.update)

            declare()
            result["run"] = Run(mocks.resources, outputs, mocks.invokes)
        except BaseException as exc:  # re-raised in the test's thread
            result["error"] = exc
        finally:
            asyncio.set_event_loop(None)
            loop.close()

    thread = threading.Thread(target=target, name=f"pulumi-{spec.cloud}")
    thread.start()
    thread.join(timeout=60)
    assert not thread.is_alive(), "the program did not finish"
    if "error" in result:
        raise result["error"]
    return result["run"]


_RUNS: dict[tuple[str, str], Run] = {}


def run(cloud: str, tier: str = "small") -> Run:
    """The (cached) run of a cloud's program for a tier: programs are deterministic."""
    if (cloud, tier) not in _RUNS:
        spec = StackSpec(cloud=cloud, region=REGIONS[cloud], tier=tier, tags=TAGS)
        _RUNS[cloud, tier] = run_program(spec)
    return _RUNS[cloud, tier]


# -- what each cloud declares -------------------------------------------------------------------

EXPECTED_TYPES = {
    "aws": {
        "aws:ec2/vpc:Vpc",
        "aws:ec2/subnet:Subnet",
        "aws:ec2/natGateway:NatGateway",
        "aws:eks/cluster:Cluster",
        "aws:eks/nodeGroup:NodeGroup",
        "aws:rds/instance:Instance",
        "aws:s3/bucket:Bucket",
        "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock",
        "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration",
    },
    "gcp": {
        "gcp:compute/network:Network",
        "gcp:compute/subnetwork:Subnetwork",
        "gcp:container/cluster:Cluster",
        "gcp:container/nodePool:NodePool",
        "gcp:sql/databaseInstance:DatabaseInstance",
        "gcp:storage/bucket:Bucket",
    },
    "azure": {
        "azure-native:resources:ResourceGroup",
        "azure-native:network:VirtualNetwork",
        "azure-native:network:Subnet",
        "azure-native:containerservice:ManagedCluster",
        "azure-native:dbforpostgresql:Server",
        "azure-native:storage:StorageAccount",
        "azure-native:storage:BlobContainer",
    },
    "kubernetes": {
        "kubernetes:core/v1:Namespace",
        "kubernetes:core/v1:ResourceQuota",
        "kubernetes:core/v1:LimitRange",
        "kubernetes:networking.k8s.io/v1:NetworkPolicy",
        "kubernetes:apps/v1:StatefulSet",
        "kubernetes:core/v1:Service",
        "kubernetes:core/v1:Secret",
    },
}
CLOUDS = sorted(EXPECTED_TYPES)


@pytest.mark.parametrize("cloud", CLOUDS)
def test_the_program_declares_the_environment_stack(cloud: str) -> None:
    declared = run(cloud).types
    assert EXPECTED_TYPES[cloud] <= declared, EXPECTED_TYPES[cloud] - declared


@pytest.mark.parametrize("cloud", CLOUDS)
def test_the_outputs_are_set(cloud: str) -> None:
    outputs = run(cloud).outputs
    assert set(outputs) == set(OUTPUTS[cloud])
    assert all(outputs[key] for key in OUTPUTS[cloud]), outputs


def test_the_outputs_come_from_the_resources() -> None:
    aws = run("aws")
    assert aws.outputs["network_id"] == f"{aws.one('aws:ec2/vpc:Vpc').name}-id"
    assert aws.outputs["database_endpoint"].endswith(".rds.local:5432")
    gcp = run("gcp")
    assert gcp.outputs["database_endpoint"] == "10.20.0.3"
    azure = run("azure")
    assert azure.outputs["database_endpoint"].endswith(".postgres.database.azure.com")
    assert azure.outputs["bucket_name"] == "data"
    k8s = run("kubernetes")
    assert k8s.outputs["namespace"] == "checkout-staging"
    assert k8s.outputs["database_endpoint"] == "postgres.checkout-staging.svc:5432"


# -- tags ---------------------------------------------------------------------------------------


def _tag_maps(cloud: str, resource: Registered) -> list[Mapping[str, str]] | None:
    """Where a resource of `cloud` keeps its tags (None: it takes none)."""
    i = resource.inputs
    if cloud in ("aws", "azure"):
        return [i["tags"]] if "tags" in i else None
    if cloud == "kubernetes":
        return [i["metadata"]["labels"]] if "metadata" in i else None
    found = [i[k] for k in ("labels", "resourceLabels") if k in i]
    found += [i["settings"]["userLabels"]] if "settings" in i else []
    found += [i["nodeConfig"]["resourceLabels"]] if "nodeConfig" in i else []
    return found or None


# Types that take tags, each cloud: the transformation must have reached every one.
TAGGABLE = {
    "aws": {
        "aws:ec2/vpc:Vpc",
        "aws:ec2/subnet:Subnet",
        "aws:ec2/internetGateway:InternetGateway",
        "aws:ec2/natGateway:NatGateway",
        "aws:ec2/eip:Eip",
        "aws:ec2/routeTable:RouteTable",
        "aws:ec2/securityGroup:SecurityGroup",
        "aws:iam/role:Role",
        "aws:eks/cluster:Cluster",
        "aws:eks/nodeGroup:NodeGroup",
        "aws:rds/subnetGroup:SubnetGroup",
        "aws:rds/instance:Instance",
        "aws:s3/bucket:Bucket",
    },
    "gcp": {
        "gcp:compute/globalAddress:GlobalAddress",
        "gcp:container/cluster:Cluster",
        "gcp:container/nodePool:NodePool",
        "gcp:sql/databaseInstance:DatabaseInstance",
        "gcp:storage/bucket:Bucket",
    },
    "azure": {
        "azure-native:resources:ResourceGroup",
        "azure-native:network:VirtualNetwork",
        "azure-native:privatedns:PrivateZone",
        "azure-native:privatedns:VirtualNetworkLink",
        "azure-native:containerservice:ManagedCluster",
        "azure-native:dbforpostgresql:Server",
        "azure-native:storage:StorageAccount",
    },
    "kubernetes": EXPECTED_TYPES["kubernetes"],
}


@pytest.mark.parametrize("cloud", CLOUDS)
def test_every_taggable_resource_carries_the_five_tags(cloud: str) -> None:
    expected = labels(STANDARD) if cloud in ("gcp", "kubernetes") else STANDARD
    tagged = set()
    for resource in run(cloud).resources:
        maps = _tag_maps(cloud, resource)
        if maps is None:
            continue
        tagged.add(resource.type)
        for tags in maps:
            assert {k: tags.get(k) for k in expected} == expected, (resource.type, tags)
    assert TAGGABLE[cloud] <= tagged, TAGGABLE[cloud] - tagged


def test_resources_without_tags_are_left_alone() -> None:
    aws = run("aws")
    block = aws.one("aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock")
    assert "tags" not in block.inputs
    assert all(
        "tags" not in r.inputs for r in aws.of("aws:iam/rolePolicyAttachment:RolePolicyAttachment")
    )
    gcp = run("gcp")
    assert "labels" not in gcp.one("gcp:compute/network:Network").inputs
    password = run("kubernetes").one("random:index/randomPassword:RandomPassword")
    assert "metadata" not in password.inputs


def test_a_resources_own_tags_are_kept_and_the_standard_wins() -> None:
    subnets = run("aws").of("aws:ec2/subnet:Subnet")
    assert {s.inputs["tags"].get("kubernetes.io/role/elb") for s in subnets} == {"1", None}
    assert all(s.inputs["tags"]["managed-by"] == "idp" for s in subnets)


def test_gcp_labels_are_normalised() -> None:
    tags = Tags(
        team="Platform Team", service="Web.Shop", environment="Prod", cost_centre="CC-42424"
    )
    assert tags.cost_centre == "cc-42424"
    spec = StackSpec(cloud="gcp", region="europe-west1", tier="small", tags=tags)
    bucket = run_program(spec).one("gcp:storage/bucket:Bucket")
    assert bucket.inputs["labels"] == {
        "team": "platform-team",
        "service": "web-shop",
        "environment": "prod",
        "cost-centre": "cc-42424",
        "managed-by": "idp",
    }


def test_tags_merge_into_input_type_objects_without_changing_them() -> None:
    import pulumi_gcp as gcp
    import pulumi_kubernetes as k8s

    settings = gcp.sql.DatabaseInstanceSettingsArgs(tier="db-f1-micro", user_labels={"own": "x"})
    props = apply_tags(
        "gcp:sql/databaseInstance:DatabaseInstance",
        frozenset({"settings", "region"}),
        {"settings": settings, "region": "europe-west1"},
        STANDARD,
    )
    assert props is not None
    assert props["settings"].user_labels == {"own": "x", **labels(STANDARD)}
    assert props["settings"].tier == "db-f1-micro"
    assert settings.user_labels == {"own": "x"}
    meta = k8s.meta.v1.ObjectMetaArgs(name="web", labels={"app": "web"})
    props = apply_tags(
        "kubernetes:core/v1:ConfigMap", frozenset({"metadata"}), {"metadata": meta}, STANDARD
    )
    assert props is not None
    assert props["metadata"].labels == {"app": "web", **labels(STANDARD)}
    assert (
        apply_tags("random:index/randomId:RandomId", frozenset({"keepers"}), {}, STANDARD) is None
    )
    assert (
        apply_tags("aws:s3/bucketPolicy:BucketPolicy", frozenset({"bucket"}), {}, STANDARD) is None
    )


def test_the_tagging_standard_is_the_compliance_rules() -> None:
    assert TAG_KEYS == REQUIRED_TAGS
    assert set(STANDARD) == set(TAG_KEYS)
    assert STANDARD["managed-by"] == "idp"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("team", ""),
        ("team", " padded"),
        ("service", "x" * 64),
        ("service", "semi;colon"),
        ("cost_centre", "1234"),
        ("cost_centre", "cc-12"),
    ],
)
def test_invalid_tag_values_are_refused(field: str, value: str) -> None:
    values = {"team": "web", "service": "shop", "environment": "dev", "cost_centre": "cc-123"}
    with pytest.raises(ValueError):
        Tags(**{**values, field: value})


def test_label_values() -> None:
    assert label_value("Team A/B") == "team-a-b"
    assert label_value("--x--") == "x"
    assert label_value("a" * 80) == "a" * 63
    assert label_value("under_score") == "under_score"
    with pytest.raises(ValueError):
        label_value("///")


# -- security defaults -------------------------------------------------------------------------


def test_aws_bucket_is_encrypted_and_not_public() -> None:
    aws = run("aws")
    bucket = aws.one("aws:s3/bucket:Bucket")
    block = aws.one("aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock")
    assert block.inputs["bucket"] == f"{bucket.name}-id"
    assert all(
        block.inputs[k] is True
        for k in (
            "blockPublicAcls",
            "blockPublicPolicy",
            "ignorePublicAcls",
            "restrictPublicBuckets",
        )
    )
    sse = aws.one(
        "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration"
    )
    assert sse.inputs["bucket"] == f"{bucket.name}-id"
    default = sse.inputs["rules"][0]["applyServerSideEncryptionByDefault"]
    assert default["sseAlgorithm"] == "aws:kms"
    assert "acl" not in bucket.inputs
    ownership = aws.one("aws:s3/bucketOwnershipControls:BucketOwnershipControls")
    assert ownership.inputs["rule"]["objectOwnership"] == "BucketOwnerEnforced"


def test_aws_database_is_encrypted_and_private() -> None:
    db = run("aws").one("aws:rds/instance:Instance").inputs
    assert db["storageEncrypted"] is True
    assert db["publiclyAccessible"] is False
    assert db["manageMasterUserPassword"] is True
    assert "password" not in db
    group = run("aws").one("aws:ec2/securityGroup:SecurityGroup").inputs
    assert [rule["cidrBlocks"] for rule in group["ingress"]] == [["10.0.0.0/16"]]


def test_gcp_bucket_and_database_are_private() -> None:
    gcp = run("gcp")
    bucket = gcp.one("gcp:storage/bucket:Bucket").inputs
    assert bucket["uniformBucketLevelAccess"] is True
    assert bucket["publicAccessPrevention"] == "enforced"
    ip = gcp.one("gcp:sql/databaseInstance:DatabaseInstance").inputs["settings"]["ipConfiguration"]
    assert ip["ipv4Enabled"] is False
    assert ip["privateNetwork"] == f"{gcp.one('gcp:compute/network:Network').name}-id"
    assert ip["sslMode"] == "ENCRYPTED_ONLY"
    cluster = gcp.one("gcp:container/cluster:Cluster").inputs
    assert cluster["privateClusterConfig"]["enablePrivateNodes"] is True


def test_azure_storage_and_database_are_encrypted_and_private() -> None:
    azure = run("azure")
    account = azure.one("azure-native:storage:StorageAccount").inputs
    assert account["allowBlobPublicAccess"] is False
    assert account["enableHttpsTrafficOnly"] is True
    assert account["minimumTlsVersion"] == "TLS1_2"
    assert account["allowSharedKeyAccess"] is False
    assert account["encryption"]["services"]["blob"]["enabled"] is True
    assert account["encryption"]["requireInfrastructureEncryption"] is True
    assert account["networkRuleSet"]["defaultAction"] == "Deny"
    container = azure.one("azure-native:storage:BlobContainer").inputs
    assert container["publicAccess"] == "None"
    server = azure.one("azure-native:dbforpostgresql:Server").inputs
    assert server["network"]["publicNetworkAccess"] == "Disabled"
    assert server["network"]["delegatedSubnetResourceId"]
    assert server["authConfig"] == {
        "activeDirectoryAuth": "Enabled",
        "passwordAuth": "Disabled",
        "tenantId": "00000000-0000-0000-0000-00000000000b",
    }
    assert "administratorLoginPassword" not in server


def test_kubernetes_database_is_reachable_inside_the_namespace_only() -> None:
    k8s = run("kubernetes")
    service = k8s.one("kubernetes:core/v1:Service").inputs["spec"]
    assert service["type"] == "ClusterIP"
    policy = k8s.one("kubernetes:networking.k8s.io/v1:NetworkPolicy").inputs["spec"]
    assert policy["policyTypes"] == ["Ingress"]
    assert policy["ingress"] == [{"from": [{"podSelector": {}}]}]
    data = k8s.one("kubernetes:core/v1:Secret").inputs["stringData"]
    assert data[rpc._special_sig_key] == rpc._special_secret_sig  # sent as a secret
    assert data["value"]["POSTGRES_PASSWORD"] == "generated"


@pytest.mark.parametrize("cloud", ["aws", "gcp", "azure"])
def test_the_stack_passes_the_platforms_compliance_rules(cloud: str) -> None:
    """The rules the provisioning preview applies, over what the program declares (the
    required tags are checked above, per cloud's place for them)."""
    subjects = []
    for r in run(cloud).resources:
        found = facts(r.type, r.inputs)
        subjects.append(
            Subject(
                name=r.name,
                type=r.type,
                tags=STANDARD,
                stores_data=bool(found["stores_data"]),
                encrypted=found["encrypted"],
                public=found["public"],
            )
        )
    stores_data = [s for s in subjects if s.stores_data]
    assert len(stores_data) >= 2  # the database and the bucket
    violations = evaluate(subjects)
    assert violations == []


# -- tiers --------------------------------------------------------------------------------------


def test_tiers_size_the_aws_stack() -> None:
    small, large = run("aws", "small"), run("aws", "large")
    db_small = small.one("aws:rds/instance:Instance").inputs
    db_large = large.one("aws:rds/instance:Instance").inputs
    assert (db_small["instanceClass"], db_small["allocatedStorage"]) == ("db.t4g.micro", 20)
    assert (db_large["instanceClass"], db_large["allocatedStorage"]) == ("db.m6g.large", 200)
    assert (db_small["multiAz"], db_large["multiAz"]) == (False, True)
    nodes_small = small.one("aws:eks/nodeGroup:NodeGroup").inputs
    nodes_large = large.one("aws:eks/nodeGroup:NodeGroup").inputs
    assert nodes_small["instanceTypes"] == [TIERS["small"].aws_node_type]
    assert nodes_large["instanceTypes"] == [TIERS["large"].aws_node_type]
    assert nodes_small["scalingConfig"] == {"minSize": 1, "desiredSize": 1, "maxSize": 3}
    assert nodes_large["scalingConfig"] == {"minSize": 3, "desiredSize": 3, "maxSize": 9}


def test_tiers_size_the_gcp_stack() -> None:
    small, large = run("gcp", "small"), run("gcp", "large")
    s = small.one("gcp:sql/databaseInstance:DatabaseInstance").inputs["settings"]
    big = large.one("gcp:sql/databaseInstance:DatabaseInstance").inputs["settings"]
    assert (s["tier"], s["diskSize"], s["availabilityType"]) == ("db-f1-micro", 20, "ZONAL")
    assert (big["tier"], big["diskSize"], big["availabilityType"]) == (
        "db-custom-4-15360",
        200,
        "REGIONAL",
    )
    pool_small = small.one("gcp:container/nodePool:NodePool").inputs
    pool_large = large.one("gcp:container/nodePool:NodePool").inputs
    assert pool_small["nodeConfig"]["machineType"] == "e2-medium"
    assert pool_large["nodeConfig"]["machineType"] == "e2-standard-4"
    assert pool_large["autoscaling"]["totalMaxNodeCount"] == 9


def test_tiers_size_the_azure_stack() -> None:
    small, large = run("azure", "small"), run("azure", "large")
    s = small.one("azure-native:dbforpostgresql:Server").inputs
    big = large.one("azure-native:dbforpostgresql:Server").inputs
    assert s["sku"] == {"name": "Standard_B1ms", "tier": "Burstable"}
    assert big["sku"] == {"name": "Standard_D4s_v3", "tier": "GeneralPurpose"}
    assert (s["storage"]["storageSizeGB"], big["storage"]["storageSizeGB"]) == (20, 200)
    assert big["highAvailability"]["mode"] == "ZoneRedundant"
    pool = large.one("azure-native:containerservice:ManagedCluster").inputs["agentPoolProfiles"]
    assert (pool[0]["vmSize"], pool[0]["maxCount"]) == ("Standard_D4s_v3", 9)
    account = large.one("azure-native:storage:StorageAccount").inputs
    assert account["sku"]["name"] == "Standard_ZRS"


def test_tiers_size_the_kubernetes_namespace() -> None:
    small, large = run("kubernetes", "small"), run("kubernetes", "large")
    quota_small = small.one("kubernetes:core/v1:ResourceQuota").inputs["spec"]["hard"]
    quota_large = large.one("kubernetes:core/v1:ResourceQuota").inputs["spec"]["hard"]
    assert (quota_small["requests.cpu"], quota_large["requests.cpu"]) == ("4", "32")
    claims = large.one("kubernetes:apps/v1:StatefulSet").inputs["spec"]["volumeClaimTemplates"]
    assert claims[0]["spec"]["resources"]["requests"]["storage"] == "200Gi"


def test_every_tier_has_every_size() -> None:
    assert set(TIERS) == {"small", "medium", "large"}
    assert (
        TIERS["small"].db_storage_gb < TIERS["medium"].db_storage_gb < TIERS["large"].db_storage_gb
    )


# -- the spec -----------------------------------------------------------------------------------


def test_a_cloud_stack_needs_a_region() -> None:
    with pytest.raises(ValueError, match="needs a region"):
        StackSpec(cloud="aws", tier="small", tags=TAGS)
    StackSpec(cloud="kubernetes", tags=TAGS)


def test_names_and_stack_configuration() -> None:
    spec = StackSpec(cloud="azure", region="westeurope", tags=TAGS)
    assert spec.name == "checkout-staging"
    assert spec.environment == "staging"
    assert stack_config(spec) == {"azure-native:location": "westeurope"}
    odd = Tags(team="t", service="9 Lives Service", environment="qa_1", cost_centre="cc-001")
    assert StackSpec(cloud="kubernetes", tags=odd).name == "e-9-lives-service-qa-1"
    assert callable(program_for(spec))
