"""The `idp` command: dev stack, API, worker, migrations, settings, self-check.

Settings come from environment variables, then `--config FILE`, then `--set KEY=VALUE`
(highest). A configuration problem prints one line and exits with status 2 before anything
starts.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from core.db import transactions
from core.errors import AppError, ConfigError
from core.local_secrets import local_secrets_path, with_local_secrets
from core.logging import configure_logging
from core.settings import Settings, default_doc, env_name, load_settings, parse_overrides
from core.topology import Topology, load_topology

app = typer.Typer(
    help="Internal Developer Platform: durable Temporal workflows behind a thin FastAPI layer.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
config_app = typer.Typer(help="Inspect the effective configuration.", no_args_is_help=True)
app.add_typer(config_app, name="config")
users_app = typer.Typer(help="Manage users from the command line.", no_args_is_help=True)
app.add_typer(users_app, name="users")
schedules_app = typer.Typer(help="Temporal Schedules of temporal.yaml.", no_args_is_help=True)
app.add_typer(schedules_app, name="schedules")
temporal_app = typer.Typer(help="Prepare a Temporal namespace.", no_args_is_help=True)
app.add_typer(temporal_app, name="temporal")

EXIT_CONFIG = 2


class Options:
    """The global options, kept so commands (and `idp dev`'s children) load the same way."""

    def __init__(self, config: Path | None, overrides: list[str]) -> None:
        self.config = config
        self.overrides = overrides

    def settings(self, **extra: Any) -> Settings:
        values = parse_overrides(self.overrides)
        values.update({k: v for k, v in extra.items() if v is not None})
        return load_settings(self.config, values)

    def argv(self) -> list[str]:
        out = ["--config", str(self.config)] if self.config else []
        for pair in self.overrides:
            out += ["--set", pair]
        return out


def _load(ctx: typer.Context, **extra: Any) -> tuple[Options, Settings, Topology]:
    options: Options = ctx.obj
    settings = with_local_secrets(options.settings(**extra))
    topology = load_topology(settings.temporal_config)
    configure_logging(settings.log_level, settings.log_format)
    transactions.configure(settings.effective_transaction_guard)
    return options, settings, topology


@app.callback()
def main_options(
    ctx: typer.Context,
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="YAML or JSON settings file.")
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set", help="Override a setting: KEY=VALUE (repeatable; highest precedence)."
        ),
    ] = None,
) -> None:
    ctx.obj = Options(config, set_ or [])


@app.command()
def dev(ctx: typer.Context) -> None:
    """Run the whole platform: Temporal dev server + UI, a worker on every queue, the API."""
    from workers.dev import DevStack

    options, settings, topology = _load(ctx)
    raise typer.Exit(DevStack(settings, topology, options.argv()).run())


@app.command()
def api(
    ctx: typer.Context,
    host: Annotated[str | None, typer.Option(help="Bind address (API_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (API_PORT).")] = None,
) -> None:
    """Serve the HTTP API (OpenAPI docs at /docs)."""
    import uvicorn

    from api.app import create_app

    _, settings, topology = _load(ctx, api_host=host, api_port=port)
    uvicorn.run(
        create_app(settings, topology),
        host=settings.api_host,
        port=settings.api_port,
        log_level=settings.log_level.lower(),
        access_log=settings.log_level == "DEBUG",
        log_config=None,
    )


@app.command()
def worker(
    ctx: typer.Context,
    queue: Annotated[
        list[str] | None, typer.Option("--queue", "-q", help="Task queue to serve (repeatable).")
    ] = None,
) -> None:
    """Run Temporal workers for every task queue in temporal.yaml (or only --queue ones)."""
    from workers.runner import run_workers, select_queues

    _, settings, topology = _load(ctx)
    select_queues(topology, queue)  # an unknown queue fails before connecting
    asyncio.run(run_workers(settings, topology, queue))


@app.command()
def migrate(
    ctx: typer.Context,
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
    downgrade: Annotated[bool, typer.Option(help="Downgrade to REVISION instead.")] = False,
) -> None:
    """Bring the database schema to a revision (default: the latest)."""
    from core.db import migrate as migrations
    from core.security.encryption import KeyRing, install_keyring

    _, settings, _ = _load(ctx)
    if settings.encryption_key is not None:  # migrations that re-encrypt secret columns
        install_keyring(KeyRing.from_settings(settings))
    url = settings.effective_database_url
    if downgrade:
        migrations.downgrade(url, revision)
    else:
        migrations.upgrade(url, revision)
    typer.echo(f"database at revision {migrations.current_revision(url) or 'base'}")


@config_app.command("show")
def config_show(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Print the settings in effect, secrets masked: an unset setting shows the value it falls
    back to (the namespace of temporal.yaml, the embedded Temporal UI's origin, ...)."""
    from core.temporal.client import connect_options, find_temporal_cli

    options: Options = ctx.obj
    settings = options.settings()
    values = settings.masked()
    if settings.env != "production":  # unset secrets are generated per data dir (local_secrets)
        for key in ("JWT_SECRET", "ENCRYPTION_KEY"):
            if not values[key]:
                values[key] = f"(generated, kept in {local_secrets_path(settings)})"
    try:  # where and how every process connects: the same code as theirs
        temporal = connect_options(settings, load_topology(settings.temporal_config))
        if settings.temporal_address is None:
            values["TEMPORAL_CLI_PATH"] = str(find_temporal_cli(settings))
    except ConfigError as exc:
        print(f"idp: warning: {exc}", file=sys.stderr)
    else:
        values["TEMPORAL_ADDRESS"] = temporal.target
        values["TEMPORAL_NAMESPACE"] = temporal.namespace
        values["TEMPORAL_TLS"] = temporal.tls is not False
    if as_json:
        typer.echo(json.dumps(values, indent=2, default=str))
        return
    width = max(len(k) for k in values)
    shown = {key: _shown(value) for key, value in values.items()}
    value_width = min(max(len(v) for v in shown.values()), 40)
    for name in Settings.model_fields:
        key = env_name(name)
        note = None if name in settings.model_fields_set else _default_note(name)
        if note == shown[key] or (not shown[key] and note and note.startswith(("none", "empty"))):
            note = None  # the value says it
        line = f"{key:<{width}}  {shown[key]}"
        if note:
            line = f"{key:<{width}}  {shown[key]:<{value_width}}  # default: {note}"
        typer.echo(line.rstrip())


def _shown(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list | tuple):
        return ",".join(map(str, value))
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in value.items())
    return str(value)


def _default_note(name: str) -> str | None:
    """docs/configuration.md's default for an unset setting, as plain text."""
    text = default_doc(name)
    if text is None or name in {"jwt_secret", "encryption_key"}:  # shown as "(generated, ...)"
        return None
    text = text.replace("`", "").removeprefix("unset: ").removeprefix("unset ")
    return text[1:-1] if text.startswith("(") and text.endswith(")") else text


@app.command()
def selfcheck(ctx: typer.Context) -> None:
    """Run SelfCheckWorkflow: is every task queue served and the database migrated?"""
    from workers.selfcheck import print_result, run_selfcheck

    _, settings, topology = _load(ctx)
    result = asyncio.run(run_selfcheck(settings, topology, summary="self-check (idp selfcheck)"))
    print_result(result)
    raise typer.Exit(0 if result.ok else 1)


@schedules_app.command("sync")
def schedules_sync(
    ctx: typer.Context,
    backfill_days: Annotated[
        int, typer.Option(min=0, max=366, help="Also run what fired in the past N days.")
    ] = 0,
    only: Annotated[
        list[str] | None, typer.Option("--schedule", help="Backfill only these (repeatable).")
    ] = None,
    prune: Annotated[
        bool, typer.Option(help="Delete idp- schedules no longer configured.")
    ] = False,
) -> None:
    """Create or update every schedule of temporal.yaml (idempotent); optionally backfill."""
    from datetime import UTC, datetime, timedelta

    from core.temporal.client import connect
    from workers.schedules import backfill, sync_schedules

    _, settings, topology = _load(ctx)
    unknown = sorted(set(only or []) - set(topology.schedules))
    if unknown:
        print(f"idp: error: no schedule {', '.join(unknown)} in temporal.yaml", file=sys.stderr)
        raise typer.Exit(EXIT_CONFIG)

    async def run() -> list[str]:
        client = await connect(settings, topology)
        synced = await sync_schedules(client, topology, prune=prune)
        if backfill_days:
            end = datetime.now(UTC)
            for name in only or list(topology.schedules):
                await backfill(client, name, end - timedelta(days=backfill_days), end)
        return synced

    for sid in asyncio.run(run()):
        typer.echo(f"synced {sid}")
    if backfill_days:
        typer.echo(f"backfilled the past {backfill_days} day(s)")


@temporal_app.command("setup")
def temporal_setup(ctx: typer.Context) -> None:
    """Register the platform's search attributes in the namespace (idempotent).

    `idp dev` does this for its dev server; run it once per namespace of a cluster. On
    Temporal Cloud, where a namespace API key may not add them, it prints the `tcld` command
    to run instead and exits with status 1.
    """
    from temporalio.service import RPCError

    from core.temporal.client import connect, connect_options
    from core.temporal.search_attribute_setup import Registered, RegistrationRefused, register

    _, settings, topology = _load(ctx)
    target = connect_options(settings, topology).target

    async def run() -> list[Registered] | str:
        """The attributes, or why Temporal could not be asked."""
        try:
            client = await connect(settings, topology)
        except RuntimeError as exc:  # the SDK's "Failed client connect: ..."
            return f"cannot connect to Temporal at {target}: {exc}"
        try:
            return await register(client)
        except RPCError as exc:
            return f"Temporal at {target}: {exc.message}"

    try:
        outcome = asyncio.run(run())
    except RegistrationRefused as exc:
        print(f"idp: error: {exc}; run instead:\n{exc.command}", file=sys.stderr)
        raise typer.Exit(1) from None
    if isinstance(outcome, str):
        print(f"idp: error: {outcome}", file=sys.stderr)
        raise typer.Exit(1)
    for item in outcome:
        typer.echo(item.line())


@users_app.command("create-admin")
def create_admin(
    ctx: typer.Context,
    email: Annotated[str, typer.Option(help="The admin's email (login name).")],
    name: Annotated[str, typer.Option(help="Display name.")] = "Administrator",
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from standard input.")
    ] = False,
) -> None:
    """Create a user with the global admin role (or give an existing user that role)."""
    from core.db.engine import create_engine, session_factory, transaction
    from core.db.migrate import schema_status
    from core.identity.bootstrap import create_admin as make_admin
    from core.security.encryption import KeyRing, install_keyring

    _, settings, _ = _load(ctx)
    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    install_keyring(KeyRing.from_settings(settings))

    async def run() -> str:
        engine = create_engine(settings.effective_database_url)
        try:
            async with engine.connect() as conn:
                problem = (await schema_status(conn)).problem
            if problem:
                raise ConfigError(problem)
            async with transaction(session_factory(engine)) as session:
                user = await make_admin(session, email, password, name)
                return str(user.id)
        finally:
            await engine.dispose()

    try:
        user_id = asyncio.run(run())
    except AppError as exc:
        print(f"idp: error: {exc.message}", file=sys.stderr)
        raise typer.Exit(EXIT_CONFIG) from None
    typer.echo(f"admin {email.strip().lower()} ready (user {user_id})")


def main() -> None:
    """Run the command, then leave with `os._exit`: a process that used temporalio can crash
    while the interpreter finalizes (sdk-python issue 300), turning a success into SIGABRT.
    Every command has cleaned up by then (its own `finally` blocks ran)."""
    code: int | str | None = 0
    try:
        app()
    except ConfigError as exc:
        print(f"idp: error: {exc}", file=sys.stderr)
        code = EXIT_CONFIG
    except SystemExit as exc:
        code = exc.code
    if isinstance(code, str):
        print(code, file=sys.stderr)
        code = 1
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code or 0)


if __name__ == "__main__":
    main()
