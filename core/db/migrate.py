"""Alembic, driven from code: `idp migrate`, `make run`, the test fixtures and readiness."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy import inspect
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection

from core.db.engine import ensure_sqlite_dir
from core.errors import ConfigError

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent.parent / "migrations"


def sync_url(url: str) -> str:
    """Migrations use the synchronous driver: pysqlite for SQLite, psycopg for PostgreSQL."""
    parsed = make_url(url)
    if parsed.drivername == "sqlite+aiosqlite":
        parsed = parsed.set(drivername="sqlite")
    return parsed.render_as_string(hide_password=False)


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["database_url"] = sync_url(url)
    return cfg


def _unreachable(url: str, exc: OperationalError) -> ConfigError:
    reason = str(exc.orig).strip().splitlines()[0] if exc.orig else type(exc).__name__
    masked = make_url(url).render_as_string(hide_password=True)
    return ConfigError(f"cannot connect to database {masked}: {reason}")


def upgrade(url: str, revision: str = "head") -> None:
    ensure_sqlite_dir(url)
    try:
        command.upgrade(alembic_config(url), revision)
    except OperationalError as exc:
        raise _unreachable(url, exc) from None


def downgrade(url: str, revision: str) -> None:
    try:
        command.downgrade(alembic_config(url), revision)
    except OperationalError as exc:
        raise _unreachable(url, exc) from None


@cache
def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


def current_revision_of(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


@dataclass(frozen=True)
class SchemaStatus:
    revision: str | None
    expected: str | None

    @property
    def problem(self) -> str | None:
        if self.revision == self.expected:
            return None
        if self.revision is None:
            return "database has no schema yet: run `idp migrate`"
        return f"schema at {self.revision}, expected {self.expected}: run `idp migrate`"


def _status(connection: Connection) -> SchemaStatus:
    revision = (
        current_revision_of(connection)
        if inspect(connection).has_table("alembic_version")
        else None
    )
    return SchemaStatus(revision=revision, expected=head_revision())


async def schema_status(connection: AsyncConnection) -> SchemaStatus:
    """Where the database's schema is, against the latest migration."""
    return await connection.run_sync(_status)


def current_revision(url: str) -> str | None:
    engine = create_sync_engine(sync_url(url))
    try:
        with engine.connect() as connection:
            return current_revision_of(connection)
    finally:
        engine.dispose()
