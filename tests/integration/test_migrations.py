"""Alembic migrations: upgrade, downgrade and upgrade again on each backend, and the models
match what the migrations build."""

import os

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect

import core.models  # noqa: F401
from core.db import migrate
from core.db.base import Base

BACKENDS = ["sqlite"] + (["postgresql"] if os.environ.get("TEST_DATABASE_URL") else [])


def tables(url: str) -> set[str]:
    engine = create_engine(migrate.sync_url(url))
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


@pytest.mark.parametrize("fresh_database_url", BACKENDS, indirect=True)
def test_upgrade_downgrade_upgrade(fresh_database_url: str) -> None:
    url = fresh_database_url
    assert migrate.current_revision(url) is None
    migrate.upgrade(url)
    assert migrate.current_revision(url) == migrate.head_revision()
    assert {"audit_logs", "alembic_version"} <= tables(url)
    migrate.downgrade(url, "base")
    assert migrate.current_revision(url) is None
    assert tables(url) <= {"alembic_version"}
    migrate.upgrade(url)
    assert "audit_logs" in tables(url)


def test_models_match_migrations(database_url: str) -> None:
    engine = create_engine(migrate.sync_url(database_url))
    try:
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    finally:
        engine.dispose()
    assert diff == []
