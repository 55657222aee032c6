"""The Kubernetes environment stack, for a provider that is an existing cluster: a namespace
with a resource quota and default container limits, a network policy that admits traffic
from the namespace's own pods only, and PostgreSQL as a one-replica StatefulSet (a headless
ClusterIP service, a generated password in a Secret, a persistent volume sized by the tier).

No network, cluster or bucket: those belong to the cluster's owner. Encryption at rest of
the database volume is the cluster's storage class's (the default class is used)."""

from __future__ import annotations

import pulumi
import pulumi_kubernetes as k8s
import pulumi_random as random

from infra.stacks import StackSpec
from infra.tagging import register_tagging

POSTGRES_IMAGE = "postgres:16"
POSTGRES_UID = 999  # the postgres user of the official image
DB_LABELS = {"app.kubernetes.io/name": "postgres", "app.kubernetes.io/component": "database"}


def program(spec: StackSpec) -> None:
    register_tagging(spec.tags)
    size, name = spec.size, spec.name

    namespace = k8s.core.v1.Namespace(f"{name}-ns", metadata={"name": name})
    ns: pulumi.Output[str] = namespace.metadata.apply(lambda m: m.name or name)

    def meta(object_name: str) -> k8s.meta.v1.ObjectMetaArgsDict:
        return {"name": object_name, "namespace": ns}

    k8s.core.v1.ResourceQuota(
        f"{name}-quota",
        metadata=meta("quota"),
        spec={
            "hard": {
                "requests.cpu": size.quota_cpu,
                "requests.memory": size.quota_memory,
                "limits.memory": size.quota_memory,
                "pods": str(size.quota_pods),
                "persistentvolumeclaims": "10",
                "requests.storage": size.quota_storage,
            }
        },
    )
    k8s.core.v1.LimitRange(
        f"{name}-limits",
        metadata=meta("defaults"),
        spec={
            "limits": [
                {
                    "type": "Container",
                    "default": {"cpu": "500m", "memory": "512Mi"},
                    "default_request": {"cpu": "100m", "memory": "128Mi"},
                }
            ]
        },
    )
    k8s.networking.v1.NetworkPolicy(
        f"{name}-isolation",
        metadata=meta("same-namespace-only"),
        spec={
            "pod_selector": {},
            "policy_types": ["Ingress"],
            "ingress": [{"from_": [{"pod_selector": {}}]}],
        },
    )

    # -- PostgreSQL ----------------------------------------------------------------------------
    password = random.RandomPassword(f"{name}-db", length=32, special=False)
    secret = k8s.core.v1.Secret(
        f"{name}-db",
        metadata=meta("postgres"),
        type="Opaque",
        string_data={
            "POSTGRES_USER": "app",
            "POSTGRES_DB": "app",
            "POSTGRES_PASSWORD": password.result,
        },
    )
    service = k8s.core.v1.Service(
        f"{name}-db",
        metadata=meta("postgres"),
        spec={
            "type": "ClusterIP",
            "cluster_ip": "None",
            "selector": DB_LABELS,
            "ports": [{"name": "postgres", "port": 5432, "target_port": 5432}],
        },
    )
    k8s.apps.v1.StatefulSet(
        f"{name}-db",
        metadata=meta("postgres"),
        spec={
            "service_name": "postgres",
            "replicas": 1,
            "selector": {"match_labels": DB_LABELS},
            "template": {
                "metadata": {"labels": DB_LABELS},
                "spec": {
                    "security_context": {
                        "run_as_non_root": True,
                        "run_as_user": POSTGRES_UID,
                        "run_as_group": POSTGRES_UID,
                        "fs_group": POSTGRES_UID,
                    },
                    "containers": [
                        {
                            "name": "postgres",
                            "image": POSTGRES_IMAGE,
                            "ports": [{"name": "postgres", "container_port": 5432}],
                            "env_from": [{"secret_ref": {"name": "postgres"}}],
                            "env": [{"name": "PGDATA", "value": "/var/lib/postgresql/data/pgdata"}],
                            "resources": {
                                "requests": {"cpu": size.db_cpu, "memory": size.db_memory},
                                "limits": {"memory": size.db_memory},
                            },
                            "volume_mounts": [
                                {"name": "data", "mount_path": "/var/lib/postgresql/data"}
                            ],
                            "readiness_probe": {
                                "exec_": {"command": ["pg_isready", "-U", "app", "-d", "app"]},
                                "period_seconds": 10,
                            },
                            "security_context": {"allow_privilege_escalation": False},
                        }
                    ],
                },
            },
            "volume_claim_templates": [
                {
                    "metadata": {"name": "data"},
                    "spec": {
                        "access_modes": ["ReadWriteOnce"],
                        "resources": {"requests": {"storage": f"{size.db_storage_gb}Gi"}},
                    },
                }
            ],
        },
        opts=pulumi.ResourceOptions(depends_on=[secret, service]),
    )

    pulumi.export("namespace", ns)
    pulumi.export("database_endpoint", pulumi.Output.concat("postgres.", ns, ".svc:5432"))
    pulumi.export("database_secret", secret.metadata.apply(lambda m: m.name))
