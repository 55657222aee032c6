"""DeployTargets, the one interface the deploy activity uses: the kubernetes target through
kmock (a rollout that completes, one that does not, and the health check after it), and what a
version's configuration must hold for each target."""

from __future__ import annotations

from pathlib import Path

import pytest
from kmock import KubernetesEmulator
from kubernetes import client as k8s

from core.deploy.targets import DeployTargets, Place, Release, ReleaseInvalid

PLACE = Place(
    key="prod-1234abcd",
    name="prod",
    target="kubernetes",
    namespace="shop-prod",
    cluster_id="test-context",
    limits={"cpu": "2", "memory": "4Gi", "pods": 10},
    environment_id="5b0e2a64-prod",
    organization_id="c2d9f1aa-shop",
)
RELEASE = {"image": "registry/shop:2.0.0", "replicas": 2, "health_path": "/ready"}


def targets(kmock: KubernetesEmulator, tmp_path: Path, contexts: list[str | None]) -> DeployTargets:
    def client(context: str | None) -> k8s.ApiClient:
        contexts.append(context)
        return k8s.ApiClient(k8s.Configuration(host=str(kmock.url).rstrip("/")))

    return DeployTargets(tmp_path, health_timeout=0.5, kubernetes_client=client)


def roll_out(kmock: KubernetesEmulator, available: int) -> None:
    kmock.objects["apps/v1/deployments", "shop-prod", "shop"].patch(
        {
            "metadata": {"generation": 1},
            "status": {
                "observedGeneration": 1,
                "updatedReplicas": 2,
                "availableReplicas": available,
            },
        }
    )


async def test_kubernetes_deploy_applies_waits_and_checks_health(
    kmock: KubernetesEmulator, tmp_path: Path
) -> None:
    contexts: list[str | None] = []
    deploy = targets(kmock, tmp_path, contexts)
    applied = await deploy.deploy(
        PLACE, Release("shop", "2.0.0", RELEASE, {"LOG_LEVEL": "info"}, {"DB_PASSWORD": "pw"})
    )
    # kmock runs no controllers: nothing becomes available, so the rollout wait gives up
    assert not applied.ok and applied.switched
    assert applied.error == "shop not rolled out within 0.5s (0/2 updated, 0/2 available)"
    assert contexts == ["test-context"]  # the environment's kubeconfig context

    deployment = kmock.objects["apps/v1/deployments", "shop-prod", "shop"].history.last.raw
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "registry/shop:2.0.0" and deployment["spec"]["replicas"] == 2
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    secret = kmock.objects["v1/secrets", "shop-prod", "shop-secrets"].history.last.raw
    assert secret["stringData"] == {"DB_PASSWORD": "pw"}
    quota = kmock.objects["v1/resourcequotas", "shop-prod", "idp-quota"].history.last.raw
    assert quota["spec"]["hard"] == {"limits.cpu": "2", "limits.memory": "4Gi", "pods": "10"}

    roll_out(kmock, available=2)
    again = await deploy.deploy(PLACE, Release("shop", "2.0.0", RELEASE))
    assert again.ok and again.details == {
        "namespace": "shop-prod",
        "deployment": "shop",
        "image": "registry/shop:2.0.0",
    }
    assert await deploy.problem(PLACE, "shop", again.details) is None
    roll_out(kmock, available=1)  # a replica is lost during verification
    assert await deploy.problem(PLACE, "shop", again.details) == "2/2 updated, 1/2 available"
    assert contexts == ["test-context"]  # one client per context, reused


@pytest.mark.parametrize(
    ("target", "config", "missing"),
    [("local", {"health_path": "/h"}, "command"), ("kubernetes", {"port": 80}, "image")],
)
async def test_a_version_without_what_the_target_needs_is_invalid(
    tmp_path: Path, target: str, config: dict[str, object], missing: str
) -> None:
    place = Place(key="dev-1", name="dev", target=target, namespace="dev")
    deploy = DeployTargets(tmp_path, kubernetes_client=lambda _: k8s.ApiClient())
    with pytest.raises(ReleaseInvalid) as raised:
        await deploy.deploy(place, Release("shop", "1.0.0", config))
    assert f"{missing}: Field required" in str(raised.value)
    assert "shop 1.0.0 cannot be deployed" in str(raised.value)
