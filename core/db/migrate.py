"""Alembic, driven from code: `idp migrate`, `make run`, the test fixtures and readiness."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy.engine import Connection, make_url

from core.db.engine import ensure_sqlite_dir

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent.parent / "migrations"


def sync_url(url: str) -> str:
    """Migrations run on the synchronous driver: pysqlite for SQLite, psycopg (sync) for PostgreSQL."""
    parsed = make_url(url)
    if parsed.drivername == "sqlite+aiosqlite":
        parsed = parsed.set(drivername="sqlite")
    return parsed.render_as_string(hide_password=False)


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["database_url"] = sync_url(url)
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    ensure_sqlite_dir(url)
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str) -> None:
    command.downgrade(alembic_config(url), revision)


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


def current_revision_of(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def current_revision(url: str) -> str | None:
    engine = create_sync_engine(sync_url(url))
    try:
        with engine.connect() as connection:
            return current_revision_of(connection)
    finally:
        engine.dispose()
