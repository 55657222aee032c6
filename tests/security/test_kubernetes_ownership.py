"""Kubernetes namespaces and contexts are owned per organization (issue 15, finding 3): an
organization cannot name another's namespace or a context off its allow-list, two
organizations' `production` environments do not collide, the cluster's own namespaces are
never written, and a deploy never takes over an object that lacks its environment's label
(kmock emulates the Kubernetes API)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from kmock import KubernetesEmulator
from kubernetes import client as k8s
from sqlalchemy import select

from activities.promotions import place_of
from core.deploy.kubernetes import ENVIRONMENT_LABEL, ORGANIZATION_LABEL
from core.deploy.targets import DeployTargets, Place, Release, ReleaseInvalid
from core.environments.kubernetes import context_problem, derived_namespace
from core.models.audit import AuditLog
from core.models.environments import Environment
from core.models.identity import Organization
from tests.integration.identity_helpers import Api, assert_error
from tests.integration.test_org_team_api import make_org, scoped_user

Headers = dict[str, str]
RELEASE = {"image": "registry/shop:2.0.0", "replicas": 1}


async def create_env(api: Api, headers: Headers, org_id: str, **body: Any) -> Any:
    body = {"name": "production", "type": "development", "target": "kubernetes", **body}
    return await api.client.post("/environments", json={"org_id": org_id, **body}, headers=headers)


async def maintainer_of(api: Api, admin: Headers) -> tuple[dict[str, Any], Headers]:
    org = await make_org(api, admin)
    _, headers = await scoped_user(api, admin, "maintainer", "organization", org["id"])
    return org, headers


async def test_two_organizations_production_get_different_namespaces(api: Api) -> None:
    _, admin = await api.token("admin")
    (a, a_maint), (b, b_maint) = await maintainer_of(api, admin), await maintainer_of(api, admin)
    env_a = await create_env(api, a_maint, a["id"])
    env_b = await create_env(api, b_maint, b["id"])
    assert env_a.status_code == env_b.status_code == 201, (env_a.text, env_b.text)
    assert env_a.json()["namespace"] == f"{a['slug']}-production"
    assert env_b.json()["namespace"] == f"{b['slug']}-production"


async def test_an_organization_cannot_name_another_organizations_namespace(api: Api) -> None:
    _, admin = await api.token("admin")
    (a, a_maint), (b, b_maint) = await maintainer_of(api, admin), await maintainer_of(api, admin)
    theirs = (await create_env(api, b_maint, b["id"])).json()["namespace"]
    for namespace in (theirs, "kube-system", "default", "anything-else"):
        refused = await create_env(api, a_maint, a["id"], namespace=namespace)
        error = assert_error(refused, 403, "forbidden")
        assert "only a platform admin" in error["message"]
        assert error["details"]["namespace"] == f"{a['slug']}-production"
    # naming the derived namespace itself is no override
    same = await create_env(api, a_maint, a["id"], namespace=f"{a['slug']}-production")
    assert same.status_code == 201, same.text
    assert (
        len(await api.fetch(select(Environment).where(Environment.org_id == uuid.UUID(a["id"]))))
        == 1
    )

    # a platform admin may choose, but not the cluster's own namespaces nor a taken one
    for namespace, status, field in (
        ("kube-system", 422, "namespace"),
        ("default", 422, "namespace"),
        (theirs, 409, "namespace"),
    ):
        answer = await create_env(api, admin, a["id"], name="ops", namespace=namespace)
        error = assert_error(answer, status)
        assert field in str(error["details"]), error
    chosen = await create_env(api, admin, a["id"], name="ops", namespace="shared-ops")
    assert chosen.status_code == 201 and chosen.json()["namespace"] == "shared-ops"


async def test_a_context_must_be_on_the_organizations_allow_list(api: Api) -> None:
    _, admin = await api.token("admin")
    (a, a_maint), (b, _) = await maintainer_of(api, admin), await maintainer_of(api, admin)
    refused = await create_env(api, a_maint, a["id"], cluster_id="prod-eu")
    error = assert_error(refused, 422, "validation_error")
    assert error["details"][0]["field"] == "cluster_id" and "allow-list" in error["message"]

    # only a platform admin keeps the list; an organization's maintainer cannot
    path = f"/organizations/{a['id']}/kubernetes-contexts"
    denied = await api.client.put(path, json={"contexts": ["prod-eu"]}, headers=a_maint)
    assert_error(denied, 403, "forbidden")
    allowed = await api.client.put(path, json={"contexts": ["prod-eu"]}, headers=admin)
    assert allowed.status_code == 200 and allowed.json()["contexts"] == ["prod-eu"], allowed.text
    listed = await api.client.get(path, headers=a_maint)
    assert listed.status_code == 200 and listed.json()["contexts"] == ["prod-eu"]
    [entry] = await api.fetch(
        select(AuditLog).where(
            AuditLog.action == "organization.kubernetes_contexts.update",
            AuditLog.resource_id == a["id"],
        )
    )
    assert entry.before == {"contexts": []} and entry.after == {"contexts": ["prod-eu"]}
    bad = await api.client.put(path, json={"contexts": ["two words"]}, headers=admin)
    assert_error(bad, 422, "validation_error")

    created = await create_env(api, a_maint, a["id"], cluster_id="prod-eu")
    assert created.status_code == 201, created.text
    # another organization's allow-list is its own
    other = await create_env(api, admin, b["id"], cluster_id="prod-eu")
    assert_error(other, 422, "validation_error")

    # taken off the list: the next deploy is refused (checked by the deploy activity)
    [env] = await api.fetch(
        select(Environment).where(Environment.id == uuid.UUID(created.json()["id"]))
    )
    async with api.session() as session:
        assert await context_problem(session, env) is None
    await api.client.put(path, json={"contexts": []}, headers=admin)
    async with api.session() as session:
        problem = await context_problem(session, env)
    assert problem is not None and "'prod-eu' is not on the allow-list" in problem


def test_a_long_derived_namespace_is_cut_and_hashed() -> None:
    org = Organization(id=uuid.uuid4(), name="Org", slug="o" * 60)
    namespace = derived_namespace(org, "production")
    assert len(namespace) == 63 and namespace.startswith("o" * 54 + "-")
    other = Organization(id=uuid.uuid4(), name="Org", slug="o" * 60)
    assert derived_namespace(other, "production") != namespace  # the hash keeps them apart


def targets(kmock: KubernetesEmulator, tmp_path: Path) -> DeployTargets:
    api = k8s.ApiClient(k8s.Configuration(host=str(kmock.url).rstrip("/")))
    return DeployTargets(tmp_path, health_timeout=0.2, kubernetes_client=lambda _: api)


async def test_a_deploy_never_takes_over_an_object_without_its_label(
    api: Api, kmock: KubernetesEmulator, tmp_path: Path
) -> None:
    _, admin = await api.token("admin")
    org, maint = await maintainer_of(api, admin)
    created = await create_env(api, maint, org["id"])
    assert created.status_code == 201, created.text
    [env] = await api.fetch(
        select(Environment).where(Environment.id == uuid.UUID(created.json()["id"]))
    )
    place, namespace = place_of(env), env.namespace
    assert namespace is not None
    # someone else's Deployment already runs under the service's name in that namespace
    foreign: dict[str, Any] = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "shop", "namespace": namespace, "labels": {"team": "theirs"}},
        "spec": {"replicas": 3, "template": {"spec": {"containers": [{"image": "theirs:1"}]}}},
    }
    kmock.objects["apps/v1/deployments", namespace, "shop"] = foreign
    before = len(kmock.objects["apps/v1/deployments", namespace, "shop"].history)

    with pytest.raises(ReleaseInvalid) as refused:
        await targets(kmock, tmp_path).deploy(place, Release("shop", "2.0.0", RELEASE))
    message = str(refused.value)
    assert f"Deployment {namespace}/shop already exists" in message
    assert f"no {ENVIRONMENT_LABEL} label" in message
    stored = kmock.objects["apps/v1/deployments", namespace, "shop"]
    assert len(stored.history) == before  # not patched
    assert stored.history.last.raw["spec"]["template"]["spec"]["containers"] == [
        {"image": "theirs:1"}
    ]
    # nothing else was written before the refusal either
    assert ("v1/secrets", namespace, "shop-secrets") not in kmock.objects
    assert ("v1/configmaps", namespace, "shop-config") not in kmock.objects

    # another environment's object (its label names another environment) is refused too
    kmock.objects["apps/v1/deployments", namespace, "shop"] = {
        **foreign,
        "metadata": {**foreign["metadata"], "labels": {ENVIRONMENT_LABEL: str(uuid.uuid4())}},
    }
    with pytest.raises(ReleaseInvalid, match="is not this environment's"):
        await targets(kmock, tmp_path).deploy(place, Release("shop", "2.0.0", RELEASE))


async def test_a_deploy_labels_its_objects_and_replaces_only_its_own(
    kmock: KubernetesEmulator, tmp_path: Path
) -> None:
    env_id, org_id = str(uuid.uuid4()), str(uuid.uuid4())
    place = Place(
        key="p",
        name="production",
        target="kubernetes",
        namespace="acme-production",
        environment_id=env_id,
        organization_id=org_id,
        limits={"pods": 5},
    )
    deploy = targets(kmock, tmp_path)
    await deploy.deploy(place, Release("shop", "1.0.0", RELEASE, secrets={"TOKEN": "t"}))
    for resource, name in (
        ("apps/v1/deployments", "shop"),
        ("v1/secrets", "shop-secrets"),
        ("v1/configmaps", "shop-config"),
        ("v1/resourcequotas", "idp-quota"),
    ):
        labels = kmock.objects[resource, "acme-production", name].history.last.raw["metadata"][
            "labels"
        ]
        assert labels[ENVIRONMENT_LABEL] == env_id and labels[ORGANIZATION_LABEL] == org_id
    again = await deploy.deploy(place, Release("shop", "1.1.0", {**RELEASE, "image": "r/shop:1.1"}))
    assert again.details["image"] == "r/shop:1.1"  # its own objects: replaced


@pytest.mark.parametrize("namespace", ["kube-system", "kube-public", "default"])
async def test_the_clusters_own_namespaces_are_never_written(
    kmock: KubernetesEmulator, tmp_path: Path, namespace: str
) -> None:
    """An environment stored before the namespace rules (the migration keeps namespaces)."""
    place = Place(
        key="old",
        name="old",
        target="kubernetes",
        namespace=namespace,
        environment_id=str(uuid.uuid4()),
        organization_id=str(uuid.uuid4()),
        limits={"pods": 1},
    )
    with pytest.raises(ReleaseInvalid, match="belongs to the cluster itself"):
        await targets(kmock, tmp_path).deploy(place, Release("shop", "1.0.0", RELEASE))
    assert ("v1/resourcequotas", namespace, "idp-quota") not in kmock.objects
