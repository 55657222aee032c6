"""One interface over the deploy targets an environment can have: `local` (processes on this
host, blue-green) and `kubernetes` (a Deployment with its ConfigMap, Secret, quota and
defaults). The deploy activity calls `deploy`, the verification calls `problem`.

What to run comes from the service version's `config`:
- local: `command` (listens on `$PORT`), `health_path` (default `/health`), `env`;
- kubernetes: `image`, `port` (default 8080), `replicas` (default 1), `health_path`."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client as k8s
from pydantic import ValidationError

from core.deploy.kubernetes import (
    KubernetesRelease,
    KubernetesTarget,
    ObjectNotOwned,
    Owner,
    manifests,
    namespace_problem,
)
from core.deploy.local import LocalRelease, LocalTarget, RunningRelease
from core.environments.policy import ResourceLimits


class ReleaseInvalid(Exception):
    """The version's configuration cannot be deployed to this target, or the target refuses
    it (a namespace of the cluster's own, an object another owner holds): not worth retrying."""


@dataclass(frozen=True)
class Place:
    """Where a deploy goes: one environment's target."""

    key: str  # a directory name for local, unique per environment
    name: str
    target: str  # local | kubernetes
    namespace: str | None = None
    cluster_id: str | None = None
    limits: dict[str, Any] = field(default_factory=dict)
    environment_id: str = ""  # labels every Kubernetes object (ownership)
    organization_id: str = ""


@dataclass(frozen=True)
class Release:
    """One version of a service, with what it is given: the environment's configuration and
    its decrypted secrets."""

    service: str
    version: str
    spec: Mapping[str, Any]  # the version's config: command, image, health_path...
    config: Mapping[str, str] = field(default_factory=dict)
    secrets: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Applied:
    ok: bool
    switched: bool  # the target now runs (or tried to run) the new version
    details: dict[str, Any]
    error: str | None = None


def _release(model: type[Any], release: Release) -> Any:
    """The target's own model of `release`, from the version's config."""
    service, version = release.service, release.version
    fields = set(model.model_fields) - {"service", "version"}
    wanted = {k: v for k, v in release.spec.items() if k in fields}
    try:
        return model.model_validate({"service": service, "version": version, **wanted})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise ReleaseInvalid(
            f"{service} {version} cannot be deployed: its version config is not valid for "
            f"this target ({problems})"
        ) from None


class DeployTargets:
    def __init__(
        self,
        local_root: Path,
        *,
        health_timeout: float = 60.0,
        kubernetes_client: Callable[[str | None], k8s.ApiClient] | None = None,
    ) -> None:
        self.local = LocalTarget(local_root, health_timeout=health_timeout)
        self.health_timeout = health_timeout
        self._kubernetes_client = kubernetes_client
        self._clients: dict[str | None, k8s.ApiClient] = {}

    async def _kubernetes(self, place: Place) -> KubernetesTarget:
        if place.cluster_id not in self._clients:
            if self._kubernetes_client is None:
                from core.pipelines.runners.kubernetes import load_api_client

                factory: Callable[[str | None], k8s.ApiClient] = load_api_client
            else:
                factory = self._kubernetes_client
            self._clients[place.cluster_id] = await asyncio.to_thread(factory, place.cluster_id)
        return KubernetesTarget(self._clients[place.cluster_id])

    async def deploy(self, place: Place, release: Release) -> Applied:
        if place.target == "kubernetes":
            return await self._deploy_kubernetes(place, release)
        local: LocalRelease = _release(LocalRelease, release)
        limits = ResourceLimits.model_validate(place.limits or {})
        outcome = await self.local.deploy(
            place.key,
            local,
            {**release.config, **release.secrets},
            memory_limit=limits.process_memory,
        )
        current = outcome.current
        details = _local_details(current, local.health_path) if outcome.ok and current else {}
        return Applied(ok=outcome.ok, switched=outcome.ok, details=details, error=outcome.error)

    async def _deploy_kubernetes(self, place: Place, release: Release) -> Applied:
        spec: KubernetesRelease = _release(KubernetesRelease, release)
        namespace = place.namespace or place.name
        problem = namespace_problem(namespace)
        if problem is not None:
            raise ReleaseInvalid(f"refused to deploy: {problem}")
        if not place.environment_id or not place.organization_id:
            raise ReleaseInvalid("a Kubernetes deploy needs its environment and organization")
        limits = ResourceLimits.model_validate(place.limits or {})
        owner = Owner(place.environment_id, place.organization_id)
        objects = manifests(namespace, spec, release.config, release.secrets, limits, owner)
        target = await self._kubernetes(place)
        try:
            await target.apply(objects)
        except ObjectNotOwned as exc:
            raise ReleaseInvalid(str(exc)) from None
        error = await target.wait_rollout(namespace, spec.service, self.health_timeout)
        details = {"namespace": namespace, "deployment": spec.service, "image": spec.image}
        return Applied(ok=error is None, switched=True, details=details, error=error)

    async def problem(self, place: Place, service: str, details: Mapping[str, Any]) -> str | None:
        """One health check of what the deployment runs: None when healthy, else why not."""
        if place.target == "kubernetes":
            target = await self._kubernetes(place)
            return await target.rollout_problem(details["namespace"], details["deployment"])
        running = self.local.current(place.key, service)
        if running is None or running.pid != details.get("pid"):
            return f"{service} is no longer running (pid {details.get('pid')})"
        path = str(details.get("health_path") or "/health")
        if not await self.local.probe(running, path):
            return f"{service} does not answer 2xx on {running.url}{path}"
        return None


def _local_details(running: RunningRelease, health_path: str) -> dict[str, Any]:
    return {
        "pid": running.pid,
        "port": running.port,
        "url": running.url,
        "health_path": health_path,
        "log_path": running.log_path,
        "started_at": running.started_at.isoformat(),
    }
