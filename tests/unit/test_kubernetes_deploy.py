"""The kubernetes deploy target against kmock (an emulated Kubernetes API for the official
client): the ConfigMap, Secret, Deployment, ResourceQuota and LimitRange it creates have the
expected content, a second deploy replaces them, and the rollout wait reads the Deployment's
status (written by the test, as kmock runs no controllers)."""

from __future__ import annotations

from typing import Any

from kmock import KubernetesEmulator
from kubernetes import client as k8s

from core.deploy.kubernetes import (
    ENVIRONMENT_LABEL,
    ORGANIZATION_LABEL,
    KubernetesRelease,
    KubernetesTarget,
    Owner,
    manifests,
)
from core.environments.policy import ResourceLimits

NS = "shop-staging"
RELEASE = KubernetesRelease(service="shop", version="1.4.0", image="registry/shop:1.4.0")
LIMITS = ResourceLimits(cpu="4", memory="8Gi", pods=20, default_cpu="250m", default_memory="256Mi")
OWNER = Owner(environment_id="3c1f0e9e-env", organization_id="9a7d52b4-org")


def target(kmock: KubernetesEmulator) -> KubernetesTarget:
    api = k8s.ApiClient(k8s.Configuration(host=str(kmock.url).rstrip("/")))
    return KubernetesTarget(api, poll_interval=0.05)


def stored(kmock: KubernetesEmulator, resource: str, name: str) -> dict[str, Any]:
    return dict(kmock.objects[resource, NS, name].history.last.raw)


async def test_objects_have_the_expected_content(kmock: KubernetesEmulator) -> None:
    config, secrets = {"LOG_LEVEL": "info"}, {"DB_PASSWORD": "hunter2"}
    objects = manifests(NS, RELEASE, config, secrets, LIMITS, OWNER)
    await target(kmock).apply(objects)
    for obj in objects:  # every object says whose it is
        labels = obj["metadata"]["labels"]
        assert labels[ENVIRONMENT_LABEL] == OWNER.environment_id, obj["kind"]
        assert labels[ORGANIZATION_LABEL] == OWNER.organization_id, obj["kind"]

    secret = stored(kmock, "v1/secrets", "shop-secrets")
    assert secret["stringData"] == {"DB_PASSWORD": "hunter2"} and secret["type"] == "Opaque"
    assert stored(kmock, "v1/configmaps", "shop-config")["data"] == {"LOG_LEVEL": "info"}

    deployment = stored(kmock, "apps/v1/deployments", "shop")
    pod = deployment["spec"]["template"]
    [container] = pod["spec"]["containers"]
    assert container["image"] == "registry/shop:1.4.0"
    assert {"name": "IDP_VERSION", "value": "1.4.0"} in container["env"]
    assert container["envFrom"] == [
        {"configMapRef": {"name": "shop-config"}},
        {"secretRef": {"name": "shop-secrets"}},
    ]
    assert container["readinessProbe"]["httpGet"] == {"path": "/health", "port": 8080}
    assert pod["metadata"]["labels"]["app.kubernetes.io/version"] == "1.4.0"
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert "hunter2" not in str(deployment)  # the secret travels only in the Secret

    quota = stored(kmock, "v1/resourcequotas", "idp-quota")
    assert quota["spec"]["hard"] == {"limits.cpu": "4", "limits.memory": "8Gi", "pods": "20"}
    limit_range = stored(kmock, "v1/limitranges", "idp-defaults")
    assert limit_range["spec"]["limits"] == [
        {
            "type": "Container",
            "default": {"cpu": "250m", "memory": "256Mi"},
            "defaultRequest": {"cpu": "250m", "memory": "256Mi"},
        }
    ]


async def test_a_second_deploy_replaces_the_objects(kmock: KubernetesEmulator) -> None:
    deploy = target(kmock)
    old = manifests(NS, RELEASE, {"OLD": "x"}, {"OLD_TOKEN": "y"}, ResourceLimits(), OWNER)
    await deploy.apply(old)
    newer = RELEASE.model_copy(update={"version": "1.5.0", "image": "registry/shop:1.5.0"})
    await deploy.apply(manifests(NS, newer, {"A": "1"}, {}, ResourceLimits(), OWNER))
    deployment = stored(kmock, "apps/v1/deployments", "shop")
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"].endswith(":1.5.0")
    config = stored(kmock, "v1/configmaps", "shop-config")["data"]
    assert config["A"] == "1" and config.get("OLD") is None  # removed by a merge-patch null
    assert stored(kmock, "v1/secrets", "shop-secrets")["stringData"].get("OLD_TOKEN") is None
    assert ("v1/resourcequotas", NS, "idp-quota") not in kmock.objects  # no limits, no quota


async def test_the_rollout_wait_reads_the_deployment_status(kmock: KubernetesEmulator) -> None:
    deploy = target(kmock)
    two = RELEASE.model_copy(update={"replicas": 2})
    await deploy.apply(manifests(NS, two, {}, {}, LIMITS, OWNER))
    waiting = await deploy.wait_rollout(NS, "shop", timeout=0.3)
    assert waiting == "shop not rolled out within 0.3s (0/2 updated, 0/2 available)"
    kmock.objects["apps/v1/deployments", NS, "shop"].patch(
        {
            "metadata": {"generation": 1},
            "status": {"observedGeneration": 1, "updatedReplicas": 2, "availableReplicas": 2},
        }
    )
    assert await deploy.wait_rollout(NS, "shop", timeout=5) is None
