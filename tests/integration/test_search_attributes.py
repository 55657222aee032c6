"""Registering the platform's search attributes on a Temporal server that lacks them
(`idp temporal setup`), the worker's start-up check, the refusals of a server that keeps its
operator API for admins (Temporal Cloud), and the queries docs/operations.md gives on-call
engineers, run against a real dev server so the page cannot drift."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from temporalio import workflow
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.common import TypedSearchAttributes
from temporalio.exceptions import ApplicationError
from temporalio.service import TLSConfig
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from core.errors import ConfigError
from core.settings import PROJECT_ROOT
from core.temporal import search_attributes
from core.temporal.client import find_temporal_cli
from core.temporal.search_attribute_setup import check_registered, list_custom, register
from tests.helpers import wait_until
from tests.standins.temporal_cloud import TemporalCloudStandin

NAMES = [key.name for key in search_attributes.ALL]
# One namespace per test on the bare server: what one test registers, another does not see.
NAMESPACES = ("sa-setup", "sa-check", "sa-conflict", "sa-docs")
OPERATIONS = PROJECT_ROOT / "docs" / "operations.md"


@pytest.fixture(scope="module")
async def bare() -> AsyncIterator[WorkflowEnvironment]:
    """A dev server started without the platform's search attributes."""
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(find_temporal_cli()),
        dev_server_log_level="error",
        dev_server_extra_args=[arg for ns in NAMESPACES for arg in ("--namespace", ns)],
    )
    yield env
    await env.shutdown()


def address(env: WorkflowEnvironment) -> str:
    return env.client.service_client.config.target_host


async def connect_to(env: WorkflowEnvironment, namespace: str) -> Client:
    return await Client.connect(address(env), namespace=namespace)


async def idp(
    *args: str, settings: dict[str, str], data_dir: Path
) -> subprocess.CompletedProcess[str]:
    """The `idp` command as an operator runs it, with `settings` as `--set` options."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IDP_", "TEMPORAL_"))}
    sets = [
        arg
        for k, v in {**settings, "IDP_DATA_DIR": str(data_dir)}.items()
        for arg in ("--set", f"{k}={v}")
    ]
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "workers.cli", *sets, *args],
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
        env=env,
        timeout=120,
    )


def on(env: WorkflowEnvironment, namespace: str) -> dict[str, str]:
    return {"TEMPORAL_ADDRESS": address(env), "TEMPORAL_NAMESPACE": namespace}


def one_error_line(result: subprocess.CompletedProcess[str], status: int) -> str:
    assert result.returncode == status, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


# -- idp temporal setup and the worker's check on a real server -------------------------------
async def test_setup_registers_the_missing_then_finds_them_present(
    bare: WorkflowEnvironment, tmp_path: Path
) -> None:
    client = await connect_to(bare, "sa-setup")
    assert not set(NAMES) & set(await list_custom(client))

    first = await idp("temporal", "setup", settings=on(bare, "sa-setup"), data_dir=tmp_path)
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines() == [f"{name} (Keyword): added" for name in NAMES]
    registered = await list_custom(client)
    assert {name: registered.get(name) for name in NAMES} == dict.fromkeys(NAMES, "Keyword")

    again = await idp("temporal", "setup", settings=on(bare, "sa-setup"), data_dir=tmp_path)
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines() == [f"{name} (Keyword): already present" for name in NAMES]


async def test_worker_refuses_to_start_until_they_are_registered(
    bare: WorkflowEnvironment, tmp_path: Path
) -> None:
    result = await idp("worker", settings=on(bare, "sa-check"), data_dir=tmp_path)
    assert one_error_line(result, 2) == (
        f"idp: error: search attributes {', '.join(NAMES)} are not registered in namespace "
        "sa-check; run `idp temporal setup`"
    )

    client = await connect_to(bare, "sa-check")
    await register(client, search_attributes.ALL[:3])
    with pytest.raises(ConfigError, match=r"search attributes IdpEnvironment, IdpPipeline, "):
        await check_registered(client)
    await register(client)
    await check_registered(client)  # all there: the worker goes on to poll


async def test_an_attribute_of_another_type_is_reported_and_nothing_is_added(
    bare: WorkflowEnvironment, tmp_path: Path
) -> None:
    client = await connect_to(bare, "sa-conflict")
    await client.operator_service.add_search_attributes(
        AddSearchAttributesRequest(
            namespace="sa-conflict",
            search_attributes={"IdpTeam": IndexedValueType.INDEXED_VALUE_TYPE_TEXT},
        )
    )
    result = await idp("temporal", "setup", settings=on(bare, "sa-conflict"), data_dir=tmp_path)
    line = one_error_line(result, 2)
    assert line.startswith(
        "idp: error: search attribute IdpTeam is registered as Text in namespace sa-conflict, "
        "the platform needs Keyword; "
    )
    assert result.stdout == ""
    assert {k: v for k, v in (await list_custom(client)).items() if k in NAMES} == {
        "IdpTeam": "Text"
    }
    with pytest.raises(ConfigError, match="IdpTeam is registered as Text"):
        await check_registered(client)


# -- a server that refuses the operator calls (stand-in: Temporal Cloud cannot run here) ------
API_KEY = "standin-namespace-api-key-3f9a"


def cloud_settings(cloud: TemporalCloudStandin) -> dict[str, str]:
    return {
        "TEMPORAL_ADDRESS": cloud.address,
        "TEMPORAL_NAMESPACE": "acme.a1b2c",
        "TEMPORAL_API_KEY": API_KEY,
        "TEMPORAL_TLS_CA": str(cloud.ca_file),
        "TEMPORAL_TLS_SERVER_NAME": "localhost",
    }


def tcld(names: Sequence[str]) -> str:
    flags = " ".join(f'--search-attribute "{name}=Keyword"' for name in names)
    return f"tcld namespace search-attributes add --namespace acme.a1b2c {flags}"


def refusal(result: subprocess.CompletedProcess[str]) -> tuple[str, str]:
    """The two lines of a refusal: what happened, and the command to run instead."""
    assert result.returncode == 1, (result.returncode, result.stderr)
    assert result.stdout == ""
    assert API_KEY not in result.stderr
    message, command = result.stderr.strip().splitlines()
    return message, command


async def test_cloud_refusal_prints_the_tcld_command(tmp_path: Path) -> None:
    with TemporalCloudStandin(tmp_path) as cloud:
        result = await idp("temporal", "setup", settings=cloud_settings(cloud), data_dir=tmp_path)
    message, command = refusal(result)
    assert message == (
        "idp: error: Temporal Cloud refused to list search attributes in namespace acme.a1b2c "
        "(PERMISSION_DENIED: Request unauthorized.); run instead:"
    )
    assert command == tcld(NAMES)
    assert cloud.authorization == [f"Bearer {API_KEY}"] * len(cloud.authorization)
    assert not any(call.endswith("/AddSearchAttributes") for call in cloud.calls)


async def test_cloud_refusal_to_add_names_only_the_missing(tmp_path: Path) -> None:
    have = {"IdpTeam": IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD}
    with TemporalCloudStandin(tmp_path, registered=have) as cloud:
        result = await idp("temporal", "setup", settings=cloud_settings(cloud), data_dir=tmp_path)
    message, command = refusal(result)
    assert message.startswith("idp: error: Temporal Cloud refused to add search attributes ")
    assert command == tcld([name for name in NAMES if name != "IdpTeam"])
    assert cloud.calls[-1].endswith("/AddSearchAttributes")


async def test_self_hosted_refusal_prints_the_temporal_cli_command(tmp_path: Path) -> None:
    with TemporalCloudStandin(tmp_path, tls=False) as cloud:
        settings = {"TEMPORAL_ADDRESS": cloud.address, "TEMPORAL_NAMESPACE": "idp"}
        result = await idp("temporal", "setup", settings=settings, data_dir=tmp_path)
    message, command = refusal(result)
    assert message.startswith("idp: error: Temporal refused to list search attributes ")
    assert command == (
        "temporal operator search-attribute create --namespace idp "
        + " ".join(f"--name {name}" for name in NAMES)
        + " --type Keyword"
    )


async def test_worker_check_warns_and_goes_on_where_it_may_not_list(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with TemporalCloudStandin(tmp_path) as cloud:
        client = await Client.connect(
            cloud.address,
            namespace="acme.a1b2c",
            api_key=API_KEY,
            tls=TLSConfig(server_root_ca_cert=cloud.ca_file.read_bytes(), domain="localhost"),
        )
        with caplog.at_level(logging.WARNING):
            await check_registered(client)  # no exception: the worker starts
    [warning] = [r for r in caplog.records if r.levelno == logging.WARNING]
    text = warning.getMessage()
    assert "cannot check the search attributes of namespace acme.a1b2c (PERMISSION_DENIED)" in text
    assert tcld(NAMES) in text and API_KEY not in text


# -- the on-call queries of docs/operations.md -------------------------------------------------
SHA = "a1b2c3d4e5f60718293a4b5c6d7e8f9012345678"


@workflow.defn(name="OpsDocWaiting", sandboxed=False)
class Waiting:
    """A promotion waiting for its approval."""

    @workflow.run
    async def run(self) -> None:
        await workflow.wait_condition(lambda: False)


@workflow.defn(name="OpsDocPlatformFailure", sandboxed=False)
class PlatformFailure:
    """The platform could not do its job: the run ends Failed (the failure rule)."""

    @workflow.run
    async def run(self) -> None:
        search_attributes.set_status("failed")
        raise ApplicationError(
            "the Pulumi CLI is not installed on worker w1",
            type="PulumiCliMissing",
            non_retryable=True,
        )


@workflow.defn(name="OpsDocUserFailure", sandboxed=False)
class UserFailure:
    """The user's work failed (a test step): the run completes with that outcome."""

    @workflow.run
    async def run(self) -> str:
        search_attributes.set_status("failed")
        return "failed"


SEEDS: dict[str, tuple[Any, TypedSearchAttributes]] = {
    "ops-awaiting": (
        Waiting.run,
        search_attributes.attributes(
            organization="acme",
            service="shop",
            environment="production",
            commit=SHA,
            actor="alice@example.com",
            status="awaiting_approval",
        ),
    ),
    "ops-platform-failed": (
        PlatformFailure.run,
        search_attributes.attributes(
            organization="acme",
            service="shop",
            environment="staging",
            actor="bob@example.com",
            status="provisioning",
        ),
    ),
    "ops-user-failed": (
        UserFailure.run,
        search_attributes.attributes(
            organization="acme",
            service="shop",
            pipeline="ci",
            commit=SHA,
            actor="alice@example.com",
            status="running",
        ),
    ),
}


def fenced(text: str, info: str) -> list[str]:
    """The bodies of the fenced blocks whose info string is `info`."""
    return [m.group(1) for m in re.finditer(rf"^```{info}\n(.*?)^```$", text, re.M | re.S)]


async def temporal_cli(
    args: Sequence[str] | str, env: WorkflowEnvironment, *, shell: bool = False
) -> subprocess.CompletedProcess[str]:
    """The `temporal` CLI (or a shell script using it) pointed at the sa-docs namespace."""
    path = f"{find_temporal_cli().parent}{os.pathsep}{os.environ.get('PATH', '')}"
    environ = {
        **{k: v for k, v in os.environ.items() if not k.startswith("TEMPORAL_")},
        "PATH": path,
        "TEMPORAL_ADDRESS": address(env),
        "TEMPORAL_NAMESPACE": "sa-docs",
    }
    command: Sequence[str] | str = args if shell else ["temporal", *args]
    return await asyncio.to_thread(
        subprocess.run,
        command,
        shell=shell,
        executable="/bin/bash" if shell else None,
        capture_output=True,
        text=True,
        env=environ,
        timeout=60,
    )


@pytest.fixture(scope="module")
async def seeded(bare: WorkflowEnvironment) -> AsyncIterator[WorkflowEnvironment]:
    """The sa-docs namespace, registered with `register`, holding one run of each kind the
    page's queries look for: waiting for approval, failed by the platform, failed by the user."""
    client = await connect_to(bare, "sa-docs")
    await register(client)
    async with Worker(
        client,
        task_queue="ops-docs",
        workflows=[Waiting, PlatformFailure, UserFailure],
    ):
        handles: dict[str, WorkflowHandle[Any, Any]] = {
            wid: await client.start_workflow(
                run, id=wid, task_queue="ops-docs", search_attributes=attrs
            )
            for wid, (run, attrs) in SEEDS.items()
        }
        with pytest.raises(WorkflowFailureError):
            await handles["ops-platform-failed"].result()
        assert await handles["ops-user-failed"].result() == "failed"

        async def all_indexed() -> bool:
            found = await client.count_workflows(
                'IdpStatus = "failed" OR IdpStatus = "awaiting_approval"'
            )
            return found.count == 3

        await wait_until("the seeded runs in the visibility store", all_indexed, timeout=30)
        yield bare
        await handles["ops-awaiting"].terminate()


async def test_every_documented_query_runs_and_finds_its_runs(seeded: WorkflowEnvironment) -> None:
    queries = fenced(OPERATIONS.read_text(), "temporal-query")
    assert len(queries) >= 6, "docs/operations.md lost its on-call queries"
    found: dict[str, set[str]] = {}
    for block in queries:
        query = " ".join(block.split())
        result = await temporal_cli(["workflow", "list", "--query", query, "-o", "json"], seeded)
        assert result.returncode == 0, f"{query}: {result.stderr}"
        found[query] = {run["execution"]["workflowId"] for run in json.loads(result.stdout or "[]")}
        assert found[query] & set(SEEDS), f"{query} finds none of the runs it describes"
    for query, ids in found.items():  # the platform's failures only, not the user's
        if 'ExecutionStatus = "Failed"' in query:
            assert ids == {"ops-platform-failed"}, query


async def test_every_documented_cli_command_runs(seeded: WorkflowEnvironment) -> None:
    scripts = [s for s in fenced(OPERATIONS.read_text(), "sh") if "temporal workflow" in s]
    assert len(scripts) >= 2
    for script in scripts:
        result = await temporal_cli(f"set -euo pipefail\n{script}", seeded, shell=True)
        assert result.returncode == 0, f"{script}: {result.stderr}"
        assert set(SEEDS) & set(result.stdout.split()) or re.search(
            r"^Total: [1-9]", result.stdout, re.M
        ), f"{script} found nothing: {result.stdout}"
