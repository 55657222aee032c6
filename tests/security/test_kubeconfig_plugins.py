"""Kubeconfigs cannot run code or read files on the provisioning worker, and Pulumi runs
without the worker's secrets (issue 15, finding 4): `exec`, `auth-provider` and file
references are refused when a provider is stored (422 naming the field) and again at
provision time for a row stored before that check, whose `exec` command never runs; the
environment handed to the Pulumi CLI holds none of the worker's secrets."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import config as k8s_config
from sqlalchemy import select

from core.infrastructure.engine import (
    AutomationEngine,
    Deployed,
    Output,
    PlannedResource,
    Program,
    StackRef,
    pulumi_environment,
)
from core.infrastructure.providers import CREDENTIALS_PURPOSE
from core.models.infrastructure import Provider
from core.security.encryption import installed_keyring, row_aad
from tests.integration import test_provisioning
from tests.integration.identity_helpers import Api, assert_error
from tests.integration.test_org_team_api import make_org
from tests.integration.test_provisioning import Infra, provisioning_worker

# The provisioning tests' fixtures: an organization, the API and Temporal, the topology.
infra = test_provisioning.infra
_topology = test_provisioning._topology

WORKER_SECRETS = {
    "ENCRYPTION_KEY": "worker-encryption-key-0123456789",
    "JWT_SECRET": "worker-jwt-secret-0123456789",
    "DATABASE_URL": "postgresql://idp:worker-db-password@db/idp",
    "AWS_SECRET_ACCESS_KEY": "another-providers-aws-secret",
    "GOOGLE_CREDENTIALS": "another-providers-gcp-key",
    "KUBECONFIG": "/root/.kube/config",
}


def kubeconfig(user: dict[str, Any], cluster: dict[str, Any] | None = None) -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "c",
                    "cluster": cluster
                    or {"server": "https://10.0.0.1:6443", "certificate-authority-data": "Q0E="},
                }
            ],
            "users": [{"name": "u", "user": user}],
            "contexts": [{"name": "ctx", "context": {"cluster": "c", "user": "u"}}],
            "current-context": "ctx",
        }
    )


def exec_kubeconfig(marker: Path) -> str:
    credential = '{"apiVersion":"client.authentication.k8s.io/v1beta1","status":{"token":"t"}}'
    return kubeconfig(
        {
            "exec": {
                "apiVersion": "client.authentication.k8s.io/v1beta1",
                "command": "sh",
                "args": ["-c", f"touch {marker}; echo '{credential}'"],
            }
        }
    )


async def store(api: Api, admin: dict[str, str], org_id: str, config: str) -> Any:
    body = {
        "org_id": org_id,
        "name": f"k8s-{uuid.uuid4().hex[:6]}",
        "type": "kubernetes",
        "credentials": {"kubeconfig": config},
    }
    return await api.client.post("/infrastructure/providers", json=body, headers=admin)


@pytest.mark.parametrize(
    ("config", "field"),
    [
        (
            kubeconfig({"exec": {"command": "curl", "args": ["-d", "@/proc/self/environ"]}}),
            "credentials.kubeconfig.users[0].user.exec",
        ),
        (
            kubeconfig({"auth-provider": {"name": "gcp", "config": {"cmd-path": "/bin/sh"}}}),
            "credentials.kubeconfig.users[0].user.auth-provider",
        ),
        (
            kubeconfig({"client-certificate": "/etc/idp/tls.crt", "client-key": "/etc/k.pem"}),
            "credentials.kubeconfig.users[0].user.client-certificate",
        ),
        (
            kubeconfig({"tokenFile": "/var/run/secrets/token"}),
            "credentials.kubeconfig.users[0].user.tokenFile",
        ),
        (
            kubeconfig({"token": "t"}, {"server": "https://k", "certificate-authority": "/ca"}),
            "credentials.kubeconfig.clusters[0].cluster.certificate-authority",
        ),
        ("/root/.kube/config", "credentials.kubeconfig"),  # Pulumi would read it as a path
        ("a: &x [1]\nb: *x\n", "credentials.kubeconfig"),  # parsed within bounds
    ],
)
async def test_a_kubeconfig_that_runs_or_reads_something_is_refused(
    api: Api, config: str, field: str
) -> None:
    _, admin = await api.token("admin")
    org = await make_org(api, admin)
    refused = await store(api, admin, org["id"], config)
    error = assert_error(refused, 422, "validation_error")
    assert error["details"][0]["field"] == field, error
    assert "/proc/self/environ" not in refused.text  # the value is not echoed
    assert await api.fetch(select(Provider).where(Provider.org_id == uuid.UUID(org["id"]))) == []


async def test_an_inline_kubeconfig_is_accepted(api: Api) -> None:
    _, admin = await api.token("admin")
    org = await make_org(api, admin)
    inline = kubeconfig({"client-certificate-data": "Q0VSVA==", "client-key-data": "S0VZ"})
    stored = await store(api, admin, org["id"], inline)
    assert stored.status_code == 201, stored.text
    assert stored.json()["credential_names"] == ["kubeconfig"]


class KubeconfigEngine:
    """An engine that does what Pulumi's Kubernetes provider does with the stack's kubeconfig:
    load it with the official client, which runs an `exec` plugin's command on load."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def preview(self, ref: StackRef, program: Program, out: Output) -> list[PlannedResource]:
        self.calls.append("preview")
        text = ref.secret_config["kubernetes:kubeconfig"]
        try:
            k8s_config.load_kube_config_from_dict(yaml.safe_load(text))
        except Exception as exc:  # the command ran; what it answered does not matter here
            out(f"kubeconfig: {exc}")
        return []

    async def up(self, ref: StackRef, program: Program, out: Output) -> Deployed:
        self.calls.append("up")
        return Deployed({}, [])

    async def destroy(
        self, ref: StackRef, program: Program, out: Output, targets: list[str] | None = None
    ) -> list[str]:
        self.calls.append("destroy")
        return []


async def test_an_old_row_with_exec_is_refused_at_provision_time_and_never_run(
    infra: Infra, tmp_path: Path
) -> None:
    marker = tmp_path / "exec-ran"
    engine = KubeconfigEngine()
    # the stand-in engine does run an exec plugin: the attack, were nothing to refuse it
    ref = StackRef(
        "p",
        "s",
        "file:///nowhere",
        "pw",
        secret_config={"kubernetes:kubeconfig": exec_kubeconfig(marker)},
    )
    await engine.preview(ref, lambda: None, lambda _: None)
    assert marker.exists()
    marker.unlink()
    engine.calls.clear()

    clean = kubeconfig({"token": "t"})
    created = await store(infra.api, infra.admin, infra.org_id, clean)
    assert created.status_code == 201, created.text
    provider_id = uuid.UUID(created.json()["id"])
    # stored before the check existed: the row holds an exec kubeconfig
    sealed = installed_keyring().encrypt_str(
        json.dumps({"kubeconfig": exec_kubeconfig(marker)}),
        aad=row_aad(CREDENTIALS_PURPOSE, provider_id),
    )
    async with infra.api.session() as session:
        row = await session.get(Provider, provider_id)
        assert row is not None
        row.credentials = sealed

    env_id = await infra.environment("development")
    infra.provider_id = str(provider_id)
    async with provisioning_worker(infra, engine):
        started = await infra.provision(env_id)
        done = await infra.finished(started["id"])
    assert done["status"] == "failed", done
    assert "credentials.kubeconfig.users[0].user.exec" in done["reason"]
    assert "runs a command on the platform's worker" in done["reason"]
    assert "nothing was run" in done["reason"] and "nothing was created" in done["reason"]
    assert engine.calls == []  # the engine never saw the kubeconfig
    assert not marker.exists()  # and its command never ran


def test_the_pulumi_environment_holds_none_of_the_workers_secrets(tmp_path: Path) -> None:
    worker = {"PATH": "/usr/bin:/bin", "HOME": "/root", "LANG": "C.UTF-8", **WORKER_SECRETS}
    ref = StackRef("idp", "prod", f"file://{tmp_path}/state", "stack-passphrase")
    env = pulumi_environment(ref, str(tmp_path / "home"), worker)
    for name, value in WORKER_SECRETS.items():
        assert name not in env and value not in env.values(), name
    assert env["PATH"] == "/usr/bin:/bin" and env["LANG"] == "C.UTF-8"
    assert env["HOME"] == str(tmp_path / "home")  # not the worker's: no ~/.aws, ~/.kube
    assert env["PULUMI_HOME"] == "/root/.pulumi"  # where the CLI keeps its plugins
    assert env["PULUMI_CONFIG_PASSPHRASE"] == "stack-passphrase"
    # a Pulumi Cloud backend gets its token, and only that
    cloud = StackRef("idp", "prod", "https://api.pulumi.com", "pw")
    with_token = pulumi_environment(cloud, "/tmp/h", {**worker, "PULUMI_ACCESS_TOKEN": "pul-1"})
    assert with_token["PULUMI_ACCESS_TOKEN"] == "pul-1"
    assert not set(WORKER_SECRETS) & set(with_token)


async def test_the_pulumi_cli_is_started_without_the_workers_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Automation API path with a stand-in `pulumi` (the CLI is not installable here) that
    records the environment of every start, answers `version`, and fails anything else."""
    dumps = tmp_path / "dumps"
    dumps.mkdir()
    cli = tmp_path / "bin" / "pulumi"
    cli.parent.mkdir()
    cli.write_text(
        "#!/bin/sh\n"
        f'env > "{dumps}/$$.env"\n'
        'if [ "$1" = version ]; then echo v3.272.0; exit 0; fi\n'
        'echo "stand-in pulumi: $*" >&2\n'
        "exit 1\n"
    )
    cli.chmod(0o755)
    monkeypatch.setenv("PATH", f"{cli.parent}:/usr/bin:/bin")
    monkeypatch.delenv("PULUMI_HOME", raising=False)
    for name, value in WORKER_SECRETS.items():
        monkeypatch.setenv(name, value)
    ref = StackRef(
        "idp",
        "prod",
        f"file://{tmp_path}/state",
        "stack-passphrase",
        secret_config={"kubernetes:kubeconfig": kubeconfig({"token": "t"})},
    )
    with pytest.raises(Exception, match="stand-in pulumi"):
        await AutomationEngine().preview(ref, lambda: None, lambda _: None)
    started = [p.read_text() for p in dumps.iterdir()]
    assert len(started) >= 2  # `version`, then the stack's commands
    for env in started:
        names = {line.split("=", 1)[0] for line in env.splitlines() if "=" in line}
        for name, value in WORKER_SECRETS.items():
            assert name not in names and value not in env, name
        assert "PULUMI_CONFIG_PASSPHRASE=stack-passphrase" in env
        assert f"HOME={Path.home()}\n" not in env
