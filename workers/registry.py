"""Which workflows and activities each task queue of temporal.yaml serves.

A new workflow or activity class is registered here, on the queue its domain belongs to.
Every queue also serves `selfcheck.ping`, which is how the self-check proves a queue is served.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from activities.costs import CostActivities
from activities.health import HealthActivities
from activities.notifications import NotificationActivities
from activities.pipelines import GitAccess, PipelineActivities
from activities.promotions import PromotionActivities
from activities.provisioning import ProvisioningActivities
from activities.selfcheck import PingActivities, SelfCheckActivities
from core.deploy.targets import DeployTargets
from core.errors import ConfigError
from core.infrastructure.costs import PriceCatalog
from core.infrastructure.engine import AutomationEngine
from core.notifications.dispatch import SenderSettings
from core.pipelines.artifacts import ArtifactStore
from core.pipelines.commit_status import CommitStatusReporter, build_host_configs
from core.pipelines.runners.factory import build_runner
from core.security.egress import EgressPolicy
from core.settings import Settings
from core.topology import Topology
from workers.resources import WorkerResources
from workflows.cost_collection import CostCollectionWorkflow
from workflows.health_monitor import HealthMonitorWorkflow
from workflows.notification import NotificationWorkflow, SlackMessageUpdateWorkflow
from workflows.pipeline_run import PipelineRunWorkflow
from workflows.promotion import PromotionWorkflow
from workflows.provisioning import DestroyWorkflow, PreviewExpiryWorkflow, ProvisionWorkflow
from workflows.selfcheck import SelfCheckWorkflow

ActivityFactory = Callable[[WorkerResources], Sequence[Callable[..., Any]]]


@dataclass(frozen=True)
class QueueBinding:
    workflows: tuple[type, ...] = ()
    activities: tuple[ActivityFactory, ...] = ()


def _selfcheck(res: WorkerResources) -> Sequence[Callable[..., Any]]:
    checks = SelfCheckActivities(res.sessions, list(res.topology.task_queues))
    return [checks.task_queues, checks.database]


def _notifications(res: WorkerResources) -> Sequence[Callable[..., Any]]:
    acts = NotificationActivities(
        res.sessions,
        SenderSettings(
            slack_api_url=res.settings.slack_api_url, egress=EgressPolicy.of(res.settings)
        ),
        platform_url=res.settings.platform_url,
    )
    return [acts.prepare, acts.deliver, acts.mark_failed, acts.update_message]


def _health(res: WorkerResources) -> Sequence[Callable[..., Any]]:
    acts = HealthActivities(
        res.sessions,
        platform_url=res.settings.platform_url,
        retention=res.settings.health_result_retention,
        egress=EgressPolicy.of(res.settings),
    )
    return [acts.probe, acts.record, acts.prune]


CLOUD_HOSTS = {"github": "github.com", "gitlab": "gitlab.com", "bitbucket": "bitbucket.org"}


def git_tokens(settings: Settings) -> dict[str, str]:
    """Host kind -> token, for the kinds with one set."""
    tokens = {
        "github": settings.github_token,
        "gitlab": settings.gitlab_token,
        "bitbucket": settings.bitbucket_token,
    }
    return {kind: t.get_secret_value() for kind, t in tokens.items() if t is not None}


def git_access(settings: Settings) -> GitAccess:
    return GitAccess(
        rewrites=settings.git_url_rewrites,
        tokens=git_tokens(settings),
        extra_hosts=settings.git_hosts,
        allow_global_tokens=settings.env != "production",  # connections' tokens only
    )


def commit_status_reporter(settings: Settings) -> CommitStatusReporter:
    """The cloud hosts and every self-hosted host of GIT_HOSTS (its API from GIT_HOST_APIS),
    each with its kind's token."""
    tokens = git_tokens(settings)
    entries: dict[str, dict[str, str]] = {}
    for kind, host in CLOUD_HOSTS.items():
        entries[host] = {"kind": kind, **({"token": tokens[kind]} if kind in tokens else {})}
    for host, kind in settings.git_hosts.items():
        entry = {"kind": kind, **({"token": tokens[kind]} if kind in tokens else {})}
        if host in settings.git_host_apis:
            entry["api_url"] = settings.git_host_apis[host]
        entries[host] = entry
    return CommitStatusReporter(build_host_configs(entries))


def _pipelines(res: WorkerResources) -> Sequence[Callable[..., Any]]:
    settings = res.settings
    acts = PipelineActivities(
        res.sessions,
        build_runner(settings),
        artifacts=ArtifactStore(settings.artifact_root),
        workspace_root=settings.workspace_root,
        git=git_access(settings),
        reporter=commit_status_reporter(settings),
        platform_url=settings.platform_url,
    )
    return acts.all()


def deploy_targets(settings: Settings) -> DeployTargets:
    return DeployTargets(
        settings.deploy_root, health_timeout=settings.deploy_health_timeout.total_seconds()
    )


def _promotions(res: WorkerResources) -> Sequence[Callable[..., Any]]:
    acts = PromotionActivities(
        res.sessions, deploy_targets(res.settings), platform_url=res.settings.platform_url
    )
    return acts.all()


def _provisioning(res: WorkerResources) -> Sequence[Callable[..., Any]]:
    settings = res.settings
    return ProvisioningActivities(
        res.sessions,
        AutomationEngine(),
        PriceCatalog.load(),
        backend_url=settings.pulumi_backend,
        passphrase=settings.pulumi_passphrase(),
        platform_url=settings.platform_url,
    ).all()


def _costs(res: WorkerResources) -> Sequence[Callable[..., Any]]:
    return CostActivities(res.sessions, PriceCatalog.load(), settings=res.settings).all()


BINDINGS: dict[str, QueueBinding] = {
    "platform": QueueBinding(workflows=(SelfCheckWorkflow,), activities=(_selfcheck,)),
    "pipelines": QueueBinding(workflows=(PipelineRunWorkflow,), activities=(_pipelines,)),
    "promotions": QueueBinding(workflows=(PromotionWorkflow,), activities=(_promotions,)),
    "provisioning": QueueBinding(
        workflows=(ProvisionWorkflow, DestroyWorkflow, PreviewExpiryWorkflow),
        activities=(_provisioning,),
    ),
    "notifications": QueueBinding(
        workflows=(NotificationWorkflow, SlackMessageUpdateWorkflow),
        activities=(_notifications,),
    ),
    "costs": QueueBinding(workflows=(CostCollectionWorkflow,), activities=(_costs,)),
    "health": QueueBinding(workflows=(HealthMonitorWorkflow,), activities=(_health,)),
}


def workflow_name(cls: type) -> str:
    defn = getattr(cls, "__temporal_workflow_definition")
    return str(defn.name)


def check_topology(topology: Topology, bindings: dict[str, QueueBinding] = BINDINGS) -> None:
    """Every declared queue has a binding, and every schedule names a workflow its queue runs."""
    for queue in topology.task_queues:
        if queue not in bindings:
            raise ConfigError(
                f"task queue {queue!r} in temporal.yaml has no workflows or activities "
                f"registered (workers/registry.py knows: {', '.join(sorted(bindings))})"
            )
    for name, schedule in topology.schedules.items():
        served = {workflow_name(w) for w in bindings[schedule.task_queue].workflows}
        if schedule.workflow not in served:
            raise ConfigError(
                f"schedules.{name}.workflow: {schedule.workflow!r} is not a workflow of task "
                f"queue {schedule.task_queue!r} (it runs: {', '.join(sorted(served)) or 'none'})"
            )


def activities_for(queue: str, res: WorkerResources) -> list[Callable[..., Any]]:
    binding = BINDINGS[queue]
    found: list[Callable[..., Any]] = [PingActivities().ping]
    for factory in binding.activities:
        found.extend(factory(res))
    return found
