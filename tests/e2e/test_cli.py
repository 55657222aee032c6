"""The `idp` command as a user runs it: configuration errors are one line, exit status 2,
and start nothing."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from core.db import migrate
from core.settings import PROJECT_ROOT
from tests.helpers import free_port

pytestmark = pytest.mark.e2e
IDP = [sys.executable, "-m", "workers.cli"]


def idp(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("IDP_", "TEMPORAL_", "DATABASE_URL", "JWT_", "ENCRYPTION_KEY", "API_"))
    }
    return subprocess.run(
        [*IDP, *args],
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
        env={**base, **(env or {})},
        timeout=timeout,
        input=stdin,
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], needle: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("idp: error: ")
    assert needle in lines[0]


def test_bad_temporal_yaml(tmp_path: Path) -> None:
    bad = tmp_path / "temporal.yaml"
    bad.write_text(
        (PROJECT_ROOT / "temporal.yaml")
        .read_text()
        .replace("max_concurrent_activities: 8", "max_concurrent_activites: 8")
    )
    port = free_port()
    for command in (["worker"], ["api"], ["dev"]):
        result = idp(
            "--set",
            f"IDP_TEMPORAL_CONFIG={bad}",
            "--set",
            f"api_port={port}",
            "--set",
            f"IDP_DATA_DIR={tmp_path / 'data'}",
            *command,
        )
        assert_one_line_error(result, "task_queues.pipelines.max_concurrent_activites: unknown key")
    assert not (tmp_path / "data" / "idp.db").exists()  # nothing migrated, nothing started


def test_malformed_database_url(tmp_path: Path) -> None:
    result = idp("migrate", env={"DATABASE_URL": "postgresql//oops", "IDP_DATA_DIR": str(tmp_path)})
    assert_one_line_error(result, "invalid setting DATABASE_URL")


def test_missing_production_secret(tmp_path: Path) -> None:
    result = idp("dev", env={"IDP_ENV": "production", "IDP_DATA_DIR": str(tmp_path)})
    assert_one_line_error(result, "JWT_SECRET is not set; production mode refuses to start")
    assert not any(tmp_path.iterdir())


def test_config_file_and_set_precedence_and_masking(tmp_path: Path) -> None:
    config = tmp_path / "idp.yaml"
    config.write_text("api_port: 9100\nlog_level: DEBUG\n")
    result = idp(
        "--config",
        str(config),
        "--set",
        "LOG_LEVEL=ERROR",
        "config",
        "show",
        "--json",
        env={
            "API_PORT": "9000",
            "JWT_SECRET": "s3cr3t-value-that-must-not-show",
            "DATABASE_URL": "postgresql://app:hunter2@db:5432/idp",
        },
    )
    assert result.returncode == 0, result.stderr
    assert "s3cr3t-value" not in result.stdout and "hunter2" not in result.stdout
    import json

    shown = json.loads(result.stdout)
    assert shown["API_PORT"] == 9100 and shown["LOG_LEVEL"] == "ERROR"
    assert shown["JWT_SECRET"] == "********"
    assert shown["DATABASE_URL"] == "postgresql+psycopg://app:***@db:5432/idp"


def test_migrate_and_unknown_queue(tmp_path: Path) -> None:
    env = {"IDP_DATA_DIR": str(tmp_path)}
    result = idp("migrate", env=env)
    assert result.returncode == 0, result.stderr
    assert f"database at revision {migrate.head_revision()}" in result.stdout
    assert (tmp_path / "idp.db").exists()
    assert (
        idp("migrate", "base", "--downgrade", env=env).stdout.strip() == "database at revision base"
    )
    assert_one_line_error(idp("worker", "--queue", "nope", env=env), "unknown task queue 'nope'")


def test_unreachable_database(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    result = idp(
        "migrate",
        env={
            "DATABASE_URL": f"postgresql://idp:pw@127.0.0.1:{port}/idp",
            "IDP_DATA_DIR": str(tmp_path),
        },
    )
    assert_one_line_error(
        result, f"cannot connect to database postgresql+psycopg://idp:***@127.0.0.1:{port}/idp: "
    )


def test_create_admin_command(tmp_path: Path) -> None:
    env = {"IDP_DATA_DIR": str(tmp_path)}
    create = ("users", "create-admin", "--password-stdin", "--email")
    early = idp(*create, "a@example.com", env=env, stdin="a long enough admin passphrase\n")
    assert_one_line_error(early, "database has no schema yet: run `idp migrate`")
    assert idp("migrate", env=env).returncode == 0
    made = idp(*create, "Root@Example.com", env=env, stdin="a long enough admin passphrase\n")
    assert made.returncode == 0, made.stderr
    assert made.stdout.startswith("admin root@example.com ready (user ")
    weak = idp(*create, "b@example.com", env=env, stdin="short\n")
    assert_one_line_error(weak, "password must be 12 to 256 characters long")


async def test_schedules_sync(tmp_path: Path, temporal_env: WorkflowEnvironment) -> None:
    assert_one_line_error(
        idp("schedules", "sync", "--schedule", "nope", env={"IDP_DATA_DIR": str(tmp_path)}),
        "no schedule nope in temporal.yaml",
    )
    address = temporal_env.client.service_client.config.target_host
    env = {"IDP_DATA_DIR": str(tmp_path), "TEMPORAL_ADDRESS": address}
    try:
        for _ in range(2):  # idempotent: the second run updates what the first created
            result = idp("schedules", "sync", env=env)
            assert result.returncode == 0, result.stderr
            assert result.stdout.splitlines() == [
                "synced idp-selfcheck",
                "synced idp-cost-collection",
            ]
        described = await temporal_env.client.get_schedule_handle("idp-cost-collection").describe()
        assert described.schedule.spec.cron_expressions or described.schedule.spec.calendars
    finally:
        for sid in ("idp-selfcheck", "idp-cost-collection"):
            with contextlib.suppress(RPCError):
                await temporal_env.client.get_schedule_handle(sid).delete()
