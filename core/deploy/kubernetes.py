"""The `kubernetes` deploy target: a service version as a Deployment in the environment's
namespace, its configuration as a ConfigMap (plain values) and a Secret (secret values), and
the environment's limits as a ResourceQuota and a LimitRange.

`manifests()` builds the objects (pure, tested for content); `KubernetesTarget.apply()`
creates each or replaces the one of the same name, and `wait_rollout()` waits until the
Deployment's new pods are all updated and available (or says why not in time). The official
client's blocking calls run in threads.

Ownership: every object carries the environment's id and its organization's id as labels
(`idp.dev/environment-id`, `idp.dev/organization-id`). `apply()` reads every object it would
replace first and refuses the whole deploy (`ObjectNotOwned`, nothing written) when one exists
without this environment's label: an object someone else made, or another environment's, is
never taken over. Namespaces of the cluster itself (`kube-*`, `default`) are never written."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from pydantic import BaseModel, Field

from core.environments.policy import ResourceLimits

MANAGED_BY = {"app.kubernetes.io/managed-by": "idp"}
ENVIRONMENT_LABEL = "idp.dev/environment-id"
ORGANIZATION_LABEL = "idp.dev/organization-id"
QUOTA_NAME = "idp-quota"
LIMIT_RANGE_NAME = "idp-defaults"
NAMESPACE_MAX = 63
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


def namespace_problem(namespace: str) -> str | None:
    """Why `namespace` may not be written by the platform (None when it may): a DNS-1123
    label of at most 63 characters, and not one of the cluster's own namespaces."""
    if len(namespace) > NAMESPACE_MAX or not _DNS_LABEL.fullmatch(namespace):
        return (
            f"namespace {namespace!r} must be 1 to {NAMESPACE_MAX} lower-case letters, digits "
            "or hyphens, starting and ending with a letter or digit"
        )
    if namespace == "default" or namespace.startswith("kube-"):
        return f"namespace {namespace!r} belongs to the cluster itself (default, kube-*)"
    return None


class ObjectNotOwned(Exception):
    """An object the deploy would replace exists without this environment's label."""


@dataclass(frozen=True)
class Owner:
    """Whose objects these are: written as labels on every object, checked before a patch."""

    environment_id: str
    organization_id: str

    @property
    def labels(self) -> dict[str, str]:
        return {ENVIRONMENT_LABEL: self.environment_id, ORGANIZATION_LABEL: self.organization_id}


class KubernetesRelease(BaseModel):
    service: str
    version: str
    image: str
    port: int = Field(8080, ge=1, le=65535)
    replicas: int = Field(1, ge=0, le=100)
    health_path: str = "/health"


def _labels(release: KubernetesRelease, owner: Owner) -> dict[str, str]:
    return {**MANAGED_BY, **owner.labels, "app.kubernetes.io/name": release.service}


def manifests(
    namespace: str,
    release: KubernetesRelease,
    config: Mapping[str, str],
    secrets: Mapping[str, str],
    limits: ResourceLimits,
    owner: Owner,
) -> list[dict[str, Any]]:
    """ConfigMap, Secret, Deployment, and the quota and defaults when limits are set, each
    labelled with its `owner`."""
    meta = {"namespace": namespace, "labels": _labels(release, owner)}
    name = release.service
    objects: list[dict[str, Any]] = [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {**meta, "name": f"{name}-config"},
            "data": dict(config),
        },
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "Opaque",
            "metadata": {**meta, "name": f"{name}-secrets"},
            "stringData": dict(secrets),
        },
    ]
    probe = {"httpGet": {"path": release.health_path, "port": release.port}}
    pod_labels = {**_labels(release, owner), "app.kubernetes.io/version": release.version}
    objects.append(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {**meta, "name": name},
            "spec": {
                "replicas": release.replicas,
                "selector": {"matchLabels": {"app.kubernetes.io/name": name}},
                "strategy": {
                    "type": "RollingUpdate",
                    "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
                },
                "template": {
                    "metadata": {"labels": pod_labels},
                    "spec": {
                        "containers": [
                            {
                                "name": name,
                                "image": release.image,
                                "ports": [{"containerPort": release.port}],
                                "env": [
                                    {"name": "PORT", "value": str(release.port)},
                                    {"name": "IDP_VERSION", "value": release.version},
                                ],
                                "envFrom": [
                                    {"configMapRef": {"name": f"{name}-config"}},
                                    {"secretRef": {"name": f"{name}-secrets"}},
                                ],
                                "readinessProbe": probe,
                                "livenessProbe": {**probe, "initialDelaySeconds": 10},
                            }
                        ]
                    },
                },
            },
        }
    )
    owned = {**MANAGED_BY, **owner.labels}
    hard = {
        key: value
        for key, value in (
            ("limits.cpu", limits.cpu),
            ("limits.memory", limits.memory),
            ("pods", str(limits.pods) if limits.pods else None),
        )
        if value is not None
    }
    if hard:
        objects.append(
            {
                "apiVersion": "v1",
                "kind": "ResourceQuota",
                "metadata": {"namespace": namespace, "name": QUOTA_NAME, "labels": owned},
                "spec": {"hard": hard},
            }
        )
    defaults = {
        k: v for k, v in (("cpu", limits.default_cpu), ("memory", limits.default_memory)) if v
    }
    if defaults:
        objects.append(
            {
                "apiVersion": "v1",
                "kind": "LimitRange",
                "metadata": {
                    "namespace": namespace,
                    "name": LIMIT_RANGE_NAME,
                    "labels": owned,
                },
                "spec": {
                    "limits": [
                        {"type": "Container", "default": defaults, "defaultRequest": defaults}
                    ]
                },
            }
        )
    return objects


def _without_stale_keys(existing: dict[str, Any], wanted: dict[str, Any]) -> dict[str, Any]:
    if wanted["kind"] not in ("ConfigMap", "Secret"):
        return wanted
    field = "data" if wanted["kind"] == "ConfigMap" else "stringData"
    keys = set(wanted.get(field) or {})
    stale = {k for f in ("data", "stringData") for k in existing.get(f) or {}} - keys
    body = dict(wanted)
    body[field] = {**(wanted.get(field) or {}), **dict.fromkeys(sorted(stale))}
    if wanted["kind"] == "Secret" and stale:
        body["data"] = dict.fromkeys(sorted(stale))
    return body


def _check_owner(obj: dict[str, Any], existing: dict[str, Any] | None) -> None:
    """ObjectNotOwned when `existing` (the object of `obj`'s name) lacks `obj`'s environment."""
    if existing is None:
        return
    meta = obj["metadata"]
    ours = meta["labels"][ENVIRONMENT_LABEL]
    theirs = ((existing.get("metadata") or {}).get("labels") or {}).get(ENVIRONMENT_LABEL)
    if theirs == ours:
        return
    whose = f"its {ENVIRONMENT_LABEL} is {theirs}" if theirs else f"no {ENVIRONMENT_LABEL} label"
    raise ObjectNotOwned(
        f"{obj['kind']} {meta['namespace']}/{meta['name']} already exists and is not this "
        f"environment's ({whose}); the platform does not take it over: delete or rename "
        f"it, or label it {ENVIRONMENT_LABEL}={ours} if it is this environment's"
    )


class KubernetesTarget:
    def __init__(self, api_client: k8s.ApiClient, *, poll_interval: float = 1.0) -> None:
        self.api_client = api_client
        self.poll_interval = poll_interval

    def _calls(self, kind: str) -> tuple[Callable[..., Any], ...]:
        """create, read and patch of a kind."""
        core, apps = k8s.CoreV1Api(self.api_client), k8s.AppsV1Api(self.api_client)
        calls: dict[str, tuple[Callable[..., Any], ...]] = {
            "ConfigMap": (
                core.create_namespaced_config_map,
                core.read_namespaced_config_map,
                core.patch_namespaced_config_map,
            ),
            "Secret": (
                core.create_namespaced_secret,
                core.read_namespaced_secret,
                core.patch_namespaced_secret,
            ),
            "ResourceQuota": (
                core.create_namespaced_resource_quota,
                core.read_namespaced_resource_quota,
                core.patch_namespaced_resource_quota,
            ),
            "LimitRange": (
                core.create_namespaced_limit_range,
                core.read_namespaced_limit_range,
                core.patch_namespaced_limit_range,
            ),
            "Deployment": (
                apps.create_namespaced_deployment,
                apps.read_namespaced_deployment,
                apps.patch_namespaced_deployment,
            ),
        }
        return calls[kind]

    def _existing(self, obj: dict[str, Any]) -> dict[str, Any] | None:
        """The object of the same kind, namespace and name as `obj`, or None."""
        kind, ns, name = obj["kind"], obj["metadata"]["namespace"], obj["metadata"]["name"]
        _, read, _ = self._calls(kind)
        try:
            data: dict[str, Any] = json.loads(read(name, ns, _preload_content=False).data)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return data

    def _check(self, obj: dict[str, Any]) -> None:
        """ObjectNotOwned unless `obj` may be written: its namespace is not the cluster's
        own, and it is new or the existing one carries the same environment label."""
        problem = namespace_problem(obj["metadata"]["namespace"])
        if problem is not None:
            raise ObjectNotOwned(f"refused to write: {problem}")
        _check_owner(obj, self._existing(obj))

    def _apply_one(self, obj: dict[str, Any]) -> None:
        """Create; when it exists, patch it to the wanted content (keys of a ConfigMap or
        Secret that are no longer wanted are removed with nulls, as a merge patch does)."""
        kind, ns, name = obj["kind"], obj["metadata"]["namespace"], obj["metadata"]["name"]
        create, _, patch = self._calls(kind)
        try:
            create(ns, obj)
            return
        except ApiException as exc:
            if exc.status != 409:
                raise
        existing = self._existing(obj)
        if existing is None:  # deleted since the create: create it again
            create(ns, obj)
            return
        _check_owner(obj, existing)  # someone may have made it since `apply` checked
        patch(name, ns, _without_stale_keys(existing, obj))

    async def apply(self, objects: list[dict[str, Any]]) -> None:
        """Create each object, or replace the existing one of the same name when it carries
        the same environment label; ObjectNotOwned before anything is written otherwise."""
        for obj in objects:
            await asyncio.to_thread(self._check, obj)
        for obj in objects:
            await asyncio.to_thread(self._apply_one, obj)

    def _read_deployment(self, namespace: str, name: str) -> dict[str, Any]:
        """The Deployment as the API returns it (status included), as plain JSON."""
        apps = k8s.AppsV1Api(self.api_client)
        response = apps.read_namespaced_deployment(name, namespace, _preload_content=False)
        data: dict[str, Any] = json.loads(response.data)  # type: ignore[attr-defined]
        return data

    async def rollout_problem(self, namespace: str, name: str) -> str | None:
        """None when every replica runs the current template and is available; else what
        is missing."""
        deployment = await asyncio.to_thread(self._read_deployment, namespace, name)
        spec = deployment.get("spec") or {}
        status = deployment.get("status") or {}
        wanted = int(spec.get("replicas", 1))
        generation = int((deployment.get("metadata") or {}).get("generation") or 0)
        observed = int(status.get("observedGeneration") or 0)
        updated = int(status.get("updatedReplicas") or 0)
        available = int(status.get("availableReplicas") or 0)
        if observed >= generation and updated >= wanted and available >= wanted:
            return None
        return f"{updated}/{wanted} updated, {available}/{wanted} available"

    async def wait_rollout(self, namespace: str, name: str, timeout: float) -> str | None:
        """None once every replica runs the new template; else why not within `timeout`."""
        deadline = time.monotonic() + timeout
        last = "no status yet"
        while time.monotonic() < deadline:
            problem = await self.rollout_problem(namespace, name)
            if problem is None:
                return None
            last = problem
            await asyncio.sleep(self.poll_interval)
        return f"{name} not rolled out within {timeout:g}s ({last})"
