import json
import stat
from datetime import timedelta
from pathlib import Path

import pytest

from core.durations import format_duration, parse_duration
from core.errors import ConfigError
from core.local_secrets import with_local_secrets
from core.settings import MASK, Settings, load_settings, parse_overrides

STRONG = "x" * 40


def test_precedence_env_then_file_then_command_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("API_PORT", "9000")
    monkeypatch.setenv("LOG_LEVEL", "WARNING")
    monkeypatch.setenv("GRAFANA_URL", "http://env-grafana")
    config = tmp_path / "idp.yaml"
    config.write_text("api_port: 9100\nLOG_LEVEL: DEBUG\n")

    assert load_settings().api_port == 9000
    from_file = load_settings(config)
    assert (from_file.api_port, from_file.log_level) == (9100, "DEBUG")
    assert from_file.grafana_url == "http://env-grafana"  # untouched by the file
    top = load_settings(config, parse_overrides(["API_PORT=9200"]))
    assert (top.api_port, top.log_level) == (9200, "DEBUG")


def test_json_config_file(tmp_path: Path) -> None:
    config = tmp_path / "idp.json"
    config.write_text(json.dumps({"jwt_expires_in": "5m", "PROMETHEUS_URL": "http://p:9090"}))
    loaded = load_settings(config)
    assert loaded.jwt_expires_in == timedelta(minutes=5)
    assert loaded.prometheus_url == "http://p:9090"


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("api_prot: 1\n", "unknown setting 'api_prot'"),
        ("api_port: [1\n", "not valid YAML/JSON"),
        ("- a\n- b\n", "expected a mapping"),
    ],
)
def test_bad_config_file_is_one_line_error(tmp_path: Path, content: str, needle: str) -> None:
    config = tmp_path / "idp.yaml"
    config.write_text(content)
    with pytest.raises(ConfigError) as info:
        load_settings(config)
    assert needle in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read it"):
        load_settings(tmp_path / "absent.yaml")


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgresql://u:p@db:5432/idp", "postgresql+psycopg://u:p@db:5432/idp"),
        ("postgres://u@db/idp", "postgresql+psycopg://u@db/idp"),
        ("postgresql+psycopg://u@db/idp", "postgresql+psycopg://u@db/idp"),
        ("sqlite:///tmp/x.db", "sqlite+aiosqlite:///tmp/x.db"),
    ],
)
def test_database_url_is_normalised(given: str, expected: str) -> None:
    assert load_settings(overrides={"database_url": given}).database_url == expected


@pytest.mark.parametrize(
    ("given", "needle"),
    [
        ("not a url", "is not a database URL"),
        ("mysql://u@h/db", "driver 'mysql' is not supported"),
        ("postgresql://u@h", "names no database"),
    ],
)
def test_malformed_database_url(given: str, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(overrides={"database_url": given})
    assert str(info.value).startswith("invalid setting DATABASE_URL")
    assert needle in str(info.value)


def test_bad_values_name_the_variable() -> None:
    with pytest.raises(ConfigError, match="^invalid setting API_PORT"):
        load_settings(overrides={"api_port": "eighty"})
    with pytest.raises(ConfigError, match="^invalid setting JWT_EXPIRES_IN: '5 parsecs'"):
        load_settings(overrides={"jwt_expires_in": "5 parsecs"})
    with pytest.raises(ConfigError, match="--set 'nope': unknown setting"):
        parse_overrides(["nope=1"])
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        parse_overrides(["api_port"])


def test_production_refuses_insecure_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IDP_ENV", "production")
    with pytest.raises(ConfigError, match="^JWT_SECRET is not set; production mode refuses"):
        load_settings()
    monkeypatch.setenv("JWT_SECRET", "your-jwt-secret")
    with pytest.raises(ConfigError, match="JWT_SECRET is too weak"):
        load_settings()
    monkeypatch.setenv("JWT_SECRET", STRONG)
    with pytest.raises(ConfigError, match="^ENCRYPTION_KEY is not set"):
        load_settings()
    monkeypatch.setenv("ENCRYPTION_KEY", STRONG)
    assert load_settings().env == "production"


def test_masked_hides_secrets_and_passwords() -> None:
    loaded = Settings(
        jwt_secret=STRONG,
        temporal_api_key="cloud-key-123",
        database_url="postgresql://app:hunter2@db/idp",
        redis_url="redis://:redispw@cache:6379/0",
    )
    shown = loaded.masked()
    text = json.dumps(shown)
    for secret in (STRONG, "cloud-key-123", "hunter2", "redispw"):
        assert secret not in text
    assert shown["JWT_SECRET"] == MASK
    assert shown["DATABASE_URL"] == "postgresql+psycopg://app:***@db/idp"
    assert shown["GITHUB_CLIENT_SECRET"] is None


def test_local_secrets_are_generated_once_and_private(tmp_path: Path) -> None:
    base = Settings(data_dir=tmp_path)
    first = with_local_secrets(base)
    second = with_local_secrets(base)
    assert first.jwt_secret is not None and second.jwt_secret is not None
    assert first.jwt_secret.get_secret_value() == second.jwt_secret.get_secret_value()
    assert len(first.jwt_secret.get_secret_value()) >= 32
    mode = (tmp_path / "local-secrets.json").stat().st_mode
    assert stat.S_IMODE(mode) == 0o600
    explicit = with_local_secrets(Settings(data_dir=tmp_path, jwt_secret=STRONG))
    assert explicit.jwt_secret is not None and explicit.jwt_secret.get_secret_value() == STRONG


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("15m", 900), ("7d", 604800), ("1h30m", 5400), ("90", 90), ("500ms", 0.5), (30, 30)],
)
def test_durations(text: str | int, seconds: float) -> None:
    parsed = parse_duration(text)
    assert parsed.total_seconds() == seconds
    assert parse_duration(format_duration(parsed)) == parsed


@pytest.mark.parametrize("bad", ["", "15x", "m15", "-5", "1h 30m", True, None, -1])
def test_bad_durations(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(bad)


def test_admin_password_follows_the_password_policy() -> None:
    with pytest.raises(ConfigError, match="^invalid setting IDP_ADMIN_PASSWORD: password must be"):
        load_settings(overrides={"admin_password": "short"})
    assert load_settings(overrides={"admin_password": "a long admin passphrase"}).admin_password
