"""The `kubernetes` deploy target: a service version as a Deployment in the environment's
namespace, its configuration as a ConfigMap (plain values) and a Secret (secret values), and
the environment's limits as a ResourceQuota and a LimitRange.

`manifests()` builds the objects (pure, tested for content); `KubernetesTarget.apply()`
creates each or replaces the one of the same name, and `wait_rollout()` waits until the
Deployment's new pods are all updated and available (or says why not in time). The official
client's blocking calls run in threads."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Mapping
from typing import Any

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from pydantic import BaseModel, Field

from core.environments.policy import ResourceLimits

MANAGED_BY = {"app.kubernetes.io/managed-by": "idp"}
QUOTA_NAME = "idp-quota"
LIMIT_RANGE_NAME = "idp-defaults"


class KubernetesRelease(BaseModel):
    service: str
    version: str
    image: str
    port: int = Field(8080, ge=1, le=65535)
    replicas: int = Field(1, ge=0, le=100)
    health_path: str = "/health"


def _labels(release: KubernetesRelease) -> dict[str, str]:
    return {**MANAGED_BY, "app.kubernetes.io/name": release.service}


def manifests(
    namespace: str,
    release: KubernetesRelease,
    config: Mapping[str, str],
    secrets: Mapping[str, str],
    limits: ResourceLimits,
) -> list[dict[str, Any]]:
    """ConfigMap, Secret, Deployment, and the quota and defaults when limits are set."""
    meta = {"namespace": namespace, "labels": _labels(release)}
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
    pod_labels = {**_labels(release), "app.kubernetes.io/version": release.version}
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
                "metadata": {"namespace": namespace, "name": QUOTA_NAME, "labels": MANAGED_BY},
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
                    "labels": MANAGED_BY,
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

    def _apply_one(self, obj: dict[str, Any]) -> None:
        """Create; when it exists, patch it to the wanted content (keys of a ConfigMap or
        Secret that are no longer wanted are removed with nulls, as a merge patch does)."""
        kind, ns, name = obj["kind"], obj["metadata"]["namespace"], obj["metadata"]["name"]
        create, read, patch = self._calls(kind)
        try:
            create(ns, obj)
            return
        except ApiException as exc:
            if exc.status != 409:
                raise
        existing = json.loads(read(name, ns, _preload_content=False).data)
        patch(name, ns, _without_stale_keys(existing, obj))

    async def apply(self, objects: list[dict[str, Any]]) -> None:
        """Create each object, or replace the existing one of the same name."""
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
