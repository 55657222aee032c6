"""Platform settings: environment variables < config file (YAML/JSON) < command-line overrides.

Environment variable names follow the product specification (DATABASE_URL, JWT_SECRET, ...);
platform-specific ones start with IDP_. A config file and `--set` overrides use either the
field name (`database_url`) or the variable name (`DATABASE_URL`).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from core.durations import Duration, format_duration
from core.errors import AppError, ConfigError
from core.ratelimit import parse_rate_limits

PROJECT_ROOT = Path(__file__).resolve().parent.parent
MASK = "********"

# Drivers the platform speaks, and the spellings it normalises to them.
_DRIVER_ALIASES = {
    "postgres": "postgresql+psycopg",
    "postgresql": "postgresql+psycopg",
    "postgresql+psycopg": "postgresql+psycopg",
    "sqlite": "sqlite+aiosqlite",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
}
# Example values from the product spec's .env sample; never acceptable in production.
_EXAMPLE_SECRETS = {"your-jwt-secret", "changeme", "secret", "change-me"}


def refuse_wildcard_origins(origins: list[str]) -> list[str]:
    """CORS origins without wildcards (ValueError otherwise): the API allows credentials
    (cookies, Authorization) from them, so `*` would let any web site use a visitor's session."""
    wild = [origin for origin in origins if "*" in origin]
    if wild:
        raise ValueError(
            f"{', '.join(wild)}: wildcards are refused because the API allows credentials "
            "from these origins; list each origin (https://host[:port])"
        )
    return origins


def _env(name: str, default: Any = None, **kwargs: Any) -> Any:
    return Field(default, validation_alias=name, **kwargs)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        populate_by_name=True, extra="forbid", case_sensitive=False, validate_default=True
    )

    env: Literal["development", "test", "production"] = _env("IDP_ENV", "development")
    data_dir: Path = _env("IDP_DATA_DIR", Path(".data"))
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = _env("LOG_LEVEL", "INFO")
    log_format: Literal["text", "json"] = _env("LOG_FORMAT", "text")

    # Database
    database_url: str | None = _env("DATABASE_URL")
    database_echo: bool = _env("IDP_DATABASE_ECHO", False)
    # A Temporal call made while holding a database transaction (core/db/transactions.py):
    # `warn` logs it, `raise` fails the call, `off`; unset: `raise` in tests, else `warn`.
    transaction_guard: Literal["off", "warn", "raise"] | None = _env("IDP_TRANSACTION_GUARD")
    # How long a write waits for SQLite's one write lock before the request is a 503.
    sqlite_busy_timeout: float = _env("IDP_SQLITE_BUSY_TIMEOUT", 30.0, gt=0)
    # Rate limits are in-memory by default, in Redis when REDIS_URL is set.
    redis_url: str | None = _env("REDIS_URL")

    # Authentication and secrets
    jwt_secret: SecretStr | None = _env("JWT_SECRET")
    jwt_expires_in: Duration = _env("JWT_EXPIRES_IN", "15m")
    refresh_token_expires_in: Duration = _env("REFRESH_TOKEN_EXPIRES_IN", "7d")
    # How long a Temporal UI codec session (a browser cookie) lasts before signing in again.
    codec_session_expires_in: Duration = _env("CODEC_SESSION_EXPIRES_IN", "8h")
    encryption_key: SecretStr | None = _env("ENCRYPTION_KEY")
    encryption_keys_previous: SecretStr | None = _env("ENCRYPTION_KEYS_PREVIOUS")
    admin_email: str | None = _env("IDP_ADMIN_EMAIL")
    admin_password: SecretStr | None = _env("IDP_ADMIN_PASSWORD")

    # External services
    github_client_id: str | None = _env("GITHUB_CLIENT_ID")
    github_client_secret: SecretStr | None = _env("GITHUB_CLIENT_SECRET")
    # Slack Web API base URL (ends with /api/); a local stand-in in tests.
    slack_api_url: str | None = _env("SLACK_API_URL")
    # Checks that interactive requests (approval buttons) come from the platform's Slack app.
    slack_signing_secret: SecretStr | None = _env("SLACK_SIGNING_SECRET")
    # Slack workspaces (team ids, comma-separated) whose members' emails (users.info) identify
    # platform users when they press a button without a verified link. Empty: only verified
    # links count (docs/notifications.md#linking-your-slack-account).
    slack_email_lookup_team_ids: Annotated[tuple[str, ...], NoDecode] = _env(
        "SLACK_EMAIL_LOOKUP_TEAM_IDS", ()
    )
    # Self-hosted Git hosts the catalog and webhooks accept besides github.com, gitlab.com and
    # bitbucket.org: `host=kind` pairs (kind github, gitlab or bitbucket), comma-separated.
    git_hosts: Annotated[dict[str, str], NoDecode] = _env("GIT_HOSTS", None)
    # Pipelines (docs/pipelines.md). Webhook secrets per host kind: GitHub and Bitbucket sign
    # deliveries with HMAC-SHA256, GitLab sends the token itself.
    github_webhook_secret: SecretStr | None = _env("GITHUB_WEBHOOK_SECRET")
    gitlab_webhook_token: SecretStr | None = _env("GITLAB_WEBHOOK_TOKEN")
    bitbucket_webhook_secret: SecretStr | None = _env("BITBUCKET_WEBHOOK_SECRET")
    # Tokens for cloning private repositories and reporting commit statuses, per host kind.
    github_token: SecretStr | None = _env("GITHUB_TOKEN")
    gitlab_token: SecretStr | None = _env("GITLAB_TOKEN")
    bitbucket_token: SecretStr | None = _env("BITBUCKET_TOKEN")
    # Status API base URLs of self-hosted hosts: `host=url` pairs, comma-separated.
    git_host_apis: Annotated[dict[str, str], NoDecode] = _env("GIT_HOST_APIS", None)
    # Where repositories are cloned from: `prefix=replacement` pairs, comma-separated, like
    # git's url.<base>.insteadOf (a mirror, or a local path in tests).
    git_url_rewrites: Annotated[dict[str, str], NoDecode] = _env("GIT_URL_REWRITES", None)
    # Where pipeline steps run (docs/pipelines.md#runners): `auto` is `sandbox` (bubblewrap)
    # where bwrap works, else the unsandboxed `local` with a warning (refused in production).
    pipeline_runner: Literal["auto", "sandbox", "local", "docker", "kubernetes"] = _env(
        "PIPELINE_RUNNER", "auto"
    )
    # The uid (and gid) steps run as: inside the sandbox, and in docker/kubernetes containers.
    pipeline_step_uid: int = _env("PIPELINE_STEP_UID", 65534, ge=1, le=2**31 - 1)
    pipeline_workspace_dir: Path | None = _env("PIPELINE_WORKSPACE_DIR")  # <data dir>/workspaces
    artifact_dir: Path | None = _env("ARTIFACT_DIR")  # default: <data dir>/artifacts
    kubernetes_context: str | None = _env("KUBERNETES_CONTEXT")
    pipeline_namespace: str = _env("PIPELINE_NAMESPACE", "idp-pipelines")
    # kubernetes runner: a PersistentVolumeClaim holding PIPELINE_WORKSPACE_DIR, mounted into
    # each step's pod (without it, steps see an empty directory, not the checkout).
    pipeline_workspace_claim: str | None = _env("PIPELINE_WORKSPACE_CLAIM")
    # Deploys (docs/environments.md): where the local target keeps its processes' records and
    # logs, and how long a new version may take to become healthy (local or a rollout).
    deploy_dir: Path | None = _env("DEPLOY_DIR")  # default: <data dir>/deployments
    deploy_health_timeout: Duration = _env("DEPLOY_HEALTH_TIMEOUT", "60s")
    # Provisioning (docs/infrastructure.md): the Pulumi state backend (default: a file backend
    # under the data dir) and the stacks' passphrase (default: derived from ENCRYPTION_KEY).
    pulumi_backend_url: str | None = _env("PULUMI_BACKEND_URL")
    pulumi_config_passphrase: SecretStr | None = _env("PULUMI_CONFIG_PASSPHRASE")
    # How long health probe results are kept (uptime is computed over them).
    health_result_retention: Duration = _env("HEALTH_RESULT_RETENTION", "30d")
    prometheus_url: str | None = _env("PROMETHEUS_URL")
    # Cost collectors (docs/infrastructure.md#costs): the OpenCost API for Kubernetes providers
    # without `opencost_url` in their config, and the AWS Cost Explorer endpoint (default
    # AWS's; a proxy or a test stand-in) for AWS providers without `cost_explorer_url`.
    opencost_url: str | None = _env("OPENCOST_URL")
    aws_cost_explorer_url: str | None = _env("AWS_COST_EXPLORER_URL")
    grafana_url: str | None = _env("GRAFANA_URL")
    # The egress guard (core/security/egress.py): internal ranges users' requests (health
    # checks, webhook and email channels, providers' cost URLs) may reach anyway,
    # comma-separated CIDRs. Empty in every mode: loopback, link-local and private refused.
    egress_allowed_cidrs: Annotated[tuple[str, ...], NoDecode] = _env("EGRESS_ALLOWED_CIDRS", ())

    # Single sign-on (docs/configuration.md#sso): GitHub when GITHUB_CLIENT_ID/SECRET are set,
    # an OIDC issuer when OIDC_ISSUER and OIDC_CLIENT_ID are set.
    public_url: str | None = _env("IDP_PUBLIC_URL")  # None: the request's base URL
    github_oauth_base_url: str = _env("GITHUB_OAUTH_BASE_URL", "https://github.com")
    github_api_base_url: str = _env("GITHUB_API_BASE_URL", "https://api.github.com")
    oidc_issuer: str | None = _env("OIDC_ISSUER")
    oidc_client_id: str | None = _env("OIDC_CLIENT_ID")
    oidc_client_secret: SecretStr | None = _env("OIDC_CLIENT_SECRET")
    oidc_provider_name: str = _env("OIDC_PROVIDER_NAME", "oidc", pattern=r"^[a-z][a-z0-9-]{0,59}$")
    oidc_scopes: str = _env("OIDC_SCOPES", "openid email profile")
    # Who may sign in with SSO (comma-separated; empty: anyone the provider vouches for).
    # GitHub organizations (membership checked with GitHub's API; asks for `read:org`) and
    # e-mail domains of the provider's verified address. OIDC's issuer is pinned to OIDC_ISSUER.
    github_allowed_orgs: Annotated[tuple[str, ...], NoDecode] = _env("GITHUB_ALLOWED_ORGS", ())
    sso_allowed_email_domains: Annotated[tuple[str, ...], NoDecode] = _env(
        "SSO_ALLOWED_EMAIL_DOMAINS", ()
    )

    # API
    api_host: str = _env("API_HOST", "127.0.0.1")
    api_port: int = _env("API_PORT", 8000, ge=1, le=65535)
    rate_limit_enabled: bool = _env("RATE_LIMIT_ENABLED", True)
    # Route group -> "COUNT/PERIOD;burst=N", merged over core.ratelimit.DEFAULT_RATE_LIMITS.
    rate_limits: Annotated[dict[str, str], NoDecode] = _env("RATE_LIMITS", None)

    # Temporal
    temporal_config: Path = _env("IDP_TEMPORAL_CONFIG", PROJECT_ROOT / "temporal.yaml")
    temporal_address: str | None = _env("TEMPORAL_ADDRESS")
    temporal_namespace: str | None = _env("TEMPORAL_NAMESPACE")
    temporal_tls: bool | None = _env("TEMPORAL_TLS")
    temporal_tls_cert: Path | None = _env("TEMPORAL_TLS_CERT")
    temporal_tls_key: Path | None = _env("TEMPORAL_TLS_KEY")
    temporal_tls_ca: Path | None = _env("TEMPORAL_TLS_CA")
    temporal_tls_server_name: str | None = _env("TEMPORAL_TLS_SERVER_NAME")
    temporal_api_key: SecretStr | None = _env("TEMPORAL_API_KEY")
    temporal_cli: Path | None = _env("TEMPORAL_CLI_PATH")
    temporal_dev_port: int = _env("TEMPORAL_DEV_PORT", 7233, ge=1, le=65535)
    temporal_ui_port: int = _env("TEMPORAL_UI_PORT", 8233, ge=1, le=65535)
    # Browser origins allowed to call the API (the Temporal UI uses the codec endpoints);
    # default: the embedded Temporal UI.
    # Comma-separated (or a JSON list); a wildcard is refused (credentials are allowed).
    cors_origins: Annotated[list[str] | None, NoDecode] = _env("CORS_ORIGINS")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Earlier sources win: command line (passed as init kwargs, already merged with the
        # config file by `load_settings`) over environment variables.
        return (init_settings, env_settings)

    @field_validator("database_url")
    @classmethod
    def _normalise_database_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        return normalise_database_url(value)

    @field_validator("rate_limits", mode="before")
    @classmethod
    def _parse_rate_limits(cls, value: Any) -> dict[str, str]:
        return parse_rate_limits(value)

    @field_validator("git_hosts", mode="before")
    @classmethod
    def _parse_git_hosts(cls, value: Any) -> dict[str, str]:
        if value is None or value == "":
            return {}
        if isinstance(value, str):
            pairs = [p.partition("=") for p in value.split(",") if p.strip()]
            if any(not sep for _, sep, _ in pairs):
                raise ValueError("expected HOST=KIND pairs, e.g. git.example.com=gitlab")
            value = {h.strip(): k.strip() for h, _, k in pairs}
        if not isinstance(value, dict):
            raise ValueError("expected a mapping of host -> github, gitlab or bitbucket")
        hosts = {str(h).lower(): str(k).lower() for h, k in value.items()}
        wrong = [f"{h}={k}" for h, k in hosts.items() if k not in ("github", "gitlab", "bitbucket")]
        if wrong:
            raise ValueError(f"{', '.join(wrong)}: the kind must be github, gitlab or bitbucket")
        return hosts

    @field_validator("git_host_apis", "git_url_rewrites", mode="before")
    @classmethod
    def _parse_pairs(cls, value: Any, info: ValidationInfo) -> dict[str, str]:
        if value is None or value == "":
            return {}
        if isinstance(value, str):
            pairs = [p.partition("=") for p in value.split(",") if p.strip()]
            if any(not sep or not k.strip() or not v.strip() for k, sep, v in pairs):
                example = (
                    "git.example.com=https://git.example.com/api/v4"
                    if info.field_name == "git_host_apis"
                    else "https://github.com/=file:///srv/mirrors/"
                )
                raise ValueError(f"expected KEY=VALUE pairs, e.g. {example}")
            value = {k.strip(): v.strip() for k, _, v in pairs}
        if not isinstance(value, dict):
            raise ValueError("expected a mapping")
        return {str(k): str(v) for k, v in value.items()}

    @field_validator("slack_email_lookup_team_ids", mode="before")
    @classmethod
    def _parse_slack_teams(cls, value: Any) -> tuple[str, ...]:
        items = value.split(",") if isinstance(value, str) else list(value or ())
        teams = tuple(str(item).strip() for item in items if str(item).strip())
        bad = [t for t in teams if not re.fullmatch(r"[TE][A-Z0-9]{2,20}", t)]
        if bad:
            raise ValueError(f"not Slack team ids (like T0123ABCD): {', '.join(bad)}")
        return teams

    @field_validator("github_allowed_orgs", "sso_allowed_email_domains", mode="before")
    @classmethod
    def _parse_sso_allow_list(cls, value: Any, info: ValidationInfo) -> tuple[str, ...]:
        items = value.split(",") if isinstance(value, str) else list(value or ())
        names = tuple(str(item).strip().lower().lstrip("@") for item in items if str(item).strip())
        shape = (
            r"[a-z0-9](?:[a-z0-9-]{0,38})"  # a GitHub organization's login
            if info.field_name == "github_allowed_orgs"
            else r"(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9-]{2,63}"  # a domain
        )
        bad = [n for n in names if not re.fullmatch(shape, n)]
        if bad:
            what = "GitHub organizations" if info.field_name == "github_allowed_orgs" else "domains"
            raise ValueError(f"not {what}: {', '.join(bad)}")
        return names

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _check_cors_origins(cls, value: Any) -> list[str] | None:
        if value is None or value == "":
            return None
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                try:
                    value = json.loads(text)
                except json.JSONDecodeError:
                    raise ValueError("is not a JSON list of origins") from None
            else:
                value = [part for part in (p.strip() for p in text.split(",")) if part]
        if not isinstance(value, list | tuple) or not all(isinstance(o, str) for o in value):
            raise ValueError("expected origins, comma-separated (https://host[:port])")
        return refuse_wildcard_origins([origin.strip() for origin in value])

    @field_validator("egress_allowed_cidrs", mode="before")
    @classmethod
    def _parse_egress_cidrs(cls, value: Any) -> tuple[str, ...]:
        from core.security.egress import parse_cidrs

        return parse_cidrs(value)

    @field_validator("admin_password")
    @classmethod
    def _check_admin_password(cls, value: SecretStr | None) -> SecretStr | None:
        from core.security.passwords import check_policy  # the same policy as every password

        if value is not None:
            try:
                check_policy(value.get_secret_value())
            except AppError as exc:
                raise ValueError(exc.message) from None
        return value

    @field_validator("temporal_address")
    @classmethod
    def _check_address(cls, value: str | None) -> str | None:
        if not value:
            return None
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(f"{value!r} is not host:port (for example temporal.example.com:7233)")
        return value

    @field_validator("public_url", "github_oauth_base_url", "github_api_base_url", "oidc_issuer")
    @classmethod
    def _check_http_url(cls, value: str | None, info: ValidationInfo) -> str | None:
        if not value and info.field_name in {"public_url", "oidc_issuer"}:
            return None
        parts = urlsplit(value or "")
        if parts.scheme not in {"http", "https"} or not parts.netloc or parts.query:
            raise ValueError(f"{value!r} is not an http(s):// URL (like https://idp.example.com)")
        return str(value).rstrip("/")

    @field_validator("oidc_provider_name")
    @classmethod
    def _check_provider_name(cls, value: str) -> str:
        if value == "github":
            raise ValueError("'github' is the GitHub provider's name; choose another")
        return value

    @model_validator(mode="after")
    def _check_production(self) -> Settings:
        if self.env != "production":
            return self
        for name in ("jwt_secret", "encryption_key"):
            secret: SecretStr | None = getattr(self, name)
            alias = env_name(name)
            if secret is None or not secret.get_secret_value():
                raise ValueError(
                    f"{alias} is not set; production mode refuses to start with an insecure "
                    f"default (generate one with: openssl rand -hex 32)"
                )
            value = secret.get_secret_value()
            if value.lower() in _EXAMPLE_SECRETS or len(value) < 32:
                raise ValueError(f"{alias} is too weak for production; use 32+ random characters")
        if self.temporal_tls_cert is not None and self.temporal_tls_key is None:
            raise ValueError("TEMPORAL_TLS_CERT is set without TEMPORAL_TLS_KEY")
        if self.pipeline_runner == "local":
            raise ValueError(
                "PIPELINE_RUNNER=local runs pipeline steps unsandboxed with the worker's secrets; "
                "production refuses it (use sandbox, docker or kubernetes)"
            )
        return self

    # Derived values -------------------------------------------------------------------
    @property
    def resolved_data_dir(self) -> Path:
        return self.data_dir.expanduser().resolve()

    @property
    def workspace_root(self) -> Path:
        return (self.pipeline_workspace_dir or self.resolved_data_dir / "workspaces").resolve()

    @property
    def artifact_root(self) -> Path:
        return (self.artifact_dir or self.resolved_data_dir / "artifacts").resolve()

    @property
    def deploy_root(self) -> Path:
        return (self.deploy_dir or self.resolved_data_dir / "deployments").resolve()

    @property
    def pulumi_backend(self) -> str:
        return self.pulumi_backend_url or f"file://{self.resolved_data_dir / 'pulumi'}"

    def pulumi_passphrase(self) -> str:
        """The passphrase of every stack's secrets provider."""
        if self.pulumi_config_passphrase is not None:
            return self.pulumi_config_passphrase.get_secret_value()
        key = self.encryption_key.get_secret_value() if self.encryption_key else ""
        return hmac.new(key.encode(), b"idp pulumi passphrase", hashlib.sha256).hexdigest()

    @property
    def platform_url(self) -> str:
        """Where people reach the platform, for links in notifications."""
        return (self.public_url or f"http://{self.api_host}:{self.api_port}").rstrip("/")

    @property
    def effective_transaction_guard(self) -> Literal["off", "warn", "raise"]:
        if self.transaction_guard is not None:
            return self.transaction_guard
        return "raise" if self.env == "test" else "warn"

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{self.resolved_data_dir / 'idp.db'}"

    def masked(self) -> dict[str, Any]:
        """Effective settings keyed by environment variable, secrets and passwords masked."""
        out: dict[str, Any] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                value = MASK if value.get_secret_value() else ""
            elif name in {"database_url", "redis_url"} and value:
                value = mask_url_password(value)
            elif isinstance(value, Path):
                value = str(value)
            elif isinstance(value, timedelta):
                value = format_duration(value)
            out[env_name(name)] = value
        out["DATABASE_URL"] = mask_url_password(self.effective_database_url)
        return out


def env_name(field: str) -> str:
    info: FieldInfo = Settings.model_fields[field]
    return str(info.validation_alias or field.upper())


_BY_ANY_NAME: dict[str, str] = {}


def field_for(key: str) -> str | None:
    """The settings field a config-file key or `--set` key means (field or variable name)."""
    if not _BY_ANY_NAME:
        for name in Settings.model_fields:
            _BY_ANY_NAME[name.lower()] = name
            _BY_ANY_NAME[env_name(name).lower()] = name
    return _BY_ANY_NAME.get(key.strip().lower().replace("-", "_"))


def normalise_database_url(value: str) -> str:
    """Accept the usual spellings of a PostgreSQL or SQLite URL and return the async driver's."""
    try:
        url = make_url(value)
    except ArgumentError:
        raise ValueError(
            "is not a database URL; use postgresql+psycopg://user:pass@host:5432/db "
            "or sqlite+aiosqlite:///path/to/file.db"
        ) from None
    driver = _DRIVER_ALIASES.get(url.drivername)
    if driver is None:
        raise ValueError(
            f"driver {url.drivername!r} is not supported; use postgresql+psycopg:// or "
            "sqlite+aiosqlite://"
        )
    url = url.set(drivername=driver)
    if driver.startswith("postgresql") and not url.database:
        raise ValueError("names no database (postgresql+psycopg://user:pass@host:5432/DBNAME)")
    if driver.startswith("sqlite") and not url.database:
        raise ValueError("names no SQLite file (sqlite+aiosqlite:///path/to/file.db)")
    return url.render_as_string(hide_password=False)


def mask_url_password(value: str) -> str:
    try:
        return make_url(value).render_as_string(hide_password=True)
    except ArgumentError:
        return MASK


def read_config_file(path: Path) -> dict[str, Any]:
    """Read a YAML or JSON settings file into field-name keys; unknown keys are an error."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"config file {path}: cannot read it ({exc.strerror})") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"config file {path}: not valid YAML/JSON: {detail}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: expected a mapping of setting names to values")
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = field_for(str(key))
        if name is None:
            raise ConfigError(f"config file {path}: unknown setting {key!r}")
        out[name] = value
    return out


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """Parse `--set KEY=VALUE` arguments into field-name keys."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ConfigError(f"--set {pair!r}: expected KEY=VALUE")
        name = field_for(key)
        if name is None:
            raise ConfigError(f"--set {key!r}: unknown setting")
        out[name] = value
    return out


def load_settings(
    config_file: Path | None = None, overrides: dict[str, Any] | None = None
) -> Settings:
    """Load settings from the environment, then `config_file`, then `overrides` (highest)."""
    merged: dict[str, Any] = {}
    if config_file is not None:
        merged.update(read_config_file(config_file))
    merged.update({k: v for k, v in (overrides or {}).items() if v is not None})
    try:
        return Settings(**merged)
    except ValidationError as exc:
        raise ConfigError(_one_line(exc)) from None


def _one_line(exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = str(err["loc"][0]) if err["loc"] else ""
    name = field_for(loc)
    where = env_name(name) if name else loc
    msg = str(err["msg"]).removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        return f"unknown setting {where}"
    if not where:
        return msg
    return f"invalid setting {where}: {msg}"
