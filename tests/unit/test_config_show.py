"""`idp config show` prints the values in effect: an unset setting shows what it falls back to
(temporal.yaml's namespace, the embedded UI's CORS origin, the data dir's database), and
secrets stay masked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from core.settings import MASK, PROJECT_ROOT, Settings, env_name
from workers.cli import app

pytestmark = pytest.mark.usefixtures("clean_env")


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No setting from the test run's own environment."""
    for name in Settings.model_fields:
        monkeypatch.delenv(env_name(name), raising=False)


@pytest.fixture
def base_args(tmp_path: Path) -> list[str]:
    """A data dir and a temporal.yaml whose namespace is `ops`."""
    topology = tmp_path / "temporal.yaml"
    topology.write_text(
        (PROJECT_ROOT / "temporal.yaml").read_text().replace("namespace: default", "namespace: ops")
    )
    return [
        "--set",
        f"IDP_DATA_DIR={tmp_path / 'data'}",
        "--set",
        f"IDP_TEMPORAL_CONFIG={topology}",
    ]


def show(*args: str, env: dict[str, str] | None = None, as_json: bool = False) -> str:
    result = CliRunner().invoke(
        app, [*args, "config", "show", *(["--json"] if as_json else [])], env=env
    )
    assert result.exit_code == 0, result.output
    return result.stdout


def test_unset_settings_show_the_values_in_use(base_args: list[str], tmp_path: Path) -> None:
    out = show(*base_args, "--set", "TEMPORAL_UI_PORT=9233")
    lines = {line.split()[0]: line for line in out.splitlines()}
    value = {key: line.split()[1] if len(line.split()) > 1 else "" for key, line in lines.items()}
    data = (tmp_path / "data").resolve()
    assert value["CORS_ORIGINS"] == "http://127.0.0.1:9233"
    assert "# default: the embedded Temporal UI" in lines["CORS_ORIGINS"]
    assert value["TEMPORAL_NAMESPACE"] == "ops"
    assert "# default: namespace of temporal.yaml" in lines["TEMPORAL_NAMESPACE"]
    assert value["TEMPORAL_ADDRESS"] == "127.0.0.1:7233"
    assert value["TEMPORAL_TLS"] == "false"
    assert value["DATABASE_URL"] == f"sqlite+aiosqlite:///{data}/idp.db"
    assert value["DEPLOY_DIR"] == str(data / "deployments")
    assert value["PULUMI_BACKEND_URL"] == f"file://{data}/pulumi"
    assert value["IDP_TRANSACTION_GUARD"] == "warn"
    assert lines["API_PORT"].split()[1:] == ["8000"]  # a plain default needs no note
    assert lines["TEMPORAL_UI_PORT"].split()[1:] == ["9233"]
    assert "(generated, kept in" in lines["JWT_SECRET"]
    assert len(lines) == len(Settings.model_fields)


def test_set_values_win_and_have_no_default_note(base_args: list[str]) -> None:
    out = show(
        *base_args,
        env={
            "CORS_ORIGINS": "https://ui.example.com",
            "TEMPORAL_NAMESPACE": "prod",
            "TEMPORAL_ADDRESS": "temporal.example.com:7233",
        },
    )
    lines = {line.split()[0]: line.split() for line in out.splitlines()}
    assert lines["CORS_ORIGINS"] == ["CORS_ORIGINS", "https://ui.example.com"]
    assert lines["TEMPORAL_NAMESPACE"] == ["TEMPORAL_NAMESPACE", "prod"]
    assert lines["TEMPORAL_ADDRESS"] == ["TEMPORAL_ADDRESS", "temporal.example.com:7233"]


def test_json_has_the_effective_values_and_masks_secrets(base_args: list[str]) -> None:
    out = show(
        *base_args,
        "--set",
        "TEMPORAL_API_KEY=cloud-key-123",
        "--set",
        "PULUMI_BACKEND_URL=postgres://pulumi:pgsecret@db:5432/state",
        env={"JWT_SECRET": "j" * 40},
        as_json=True,
    )
    values = json.loads(out)
    assert values["TEMPORAL_NAMESPACE"] == "ops"
    assert values["CORS_ORIGINS"] == ["http://127.0.0.1:8233"]
    assert values["TEMPORAL_TLS"] is True  # an API key turns TLS on
    assert values["TEMPORAL_API_KEY"] == MASK and values["JWT_SECRET"] == MASK
    assert values["PULUMI_BACKEND_URL"] == "postgres://pulumi:***@db:5432/state"
    for secret in ("cloud-key-123", "pgsecret", "j" * 40):
        assert secret not in out


def test_a_broken_temporal_yaml_is_a_warning_not_a_failure(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        ["--set", f"IDP_TEMPORAL_CONFIG={tmp_path / 'missing.yaml'}", "config", "show", "--json"],
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["TEMPORAL_NAMESPACE"] is None
    assert result.stderr.startswith("idp: warning: ") and "missing.yaml" in result.stderr


def test_ports_come_from_the_environment_as_the_port_in_use_error_suggests(
    base_args: list[str],
) -> None:
    """`API_PORT=8001 make run` works because every setting is read from the environment."""
    ports = {"API_PORT": "8001", "TEMPORAL_DEV_PORT": "7234", "TEMPORAL_UI_PORT": "8234"}
    values = json.loads(show(*base_args, env=ports, as_json=True))
    assert {key: values[key] for key in ports} == {k: int(v) for k, v in ports.items()}
    assert values["TEMPORAL_ADDRESS"] == "127.0.0.1:7234"
    assert values["CORS_ORIGINS"] == ["http://127.0.0.1:8234"]
