"""Catalog latency on PostgreSQL (issue 5): 10,000 services with 30,000 dependency edges.

`GET /services` (first page; filtered by text, by tag, by text that matches nothing; a page
deep down the list by cursor) and the depth-3 dependency graph around mid-graph services, over
real HTTP against the real API under uvicorn, each next to a bare FastAPI app on the same
uvicorn serving the same JSON bytes from memory (the floor). Real and floor requests alternate
on one client. Target (product spec): p95 < 200 ms.

Runs against a throw-away database (`idp_bench_<hex>`) created next to BENCH_DATABASE_URL
(default: postgresql+psycopg://postgres@127.0.0.1:5432/postgres) and dropped at the end.
Alone: `python -m bench.catalog_latency`."""

from __future__ import annotations

import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI, Request, Response
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy import insert, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from bench.stats import summary
from core import context
from core.db import migrate
from core.db.engine import create_engine, session_factory, transaction
from core.identity.users import UserService
from core.models.catalog import Service, ServiceDependency, ServiceTag, ServiceVersion
from core.models.identity import Organization, Team
from core.pagination import encode_cursor
from core.settings import PROJECT_ROOT, normalise_database_url
from tests.helpers import free_port

DEFAULT_DATABASE_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
REQUESTS = int(os.environ.get("BENCH_REQUESTS", "300"))
SERVICES = int(os.environ.get("BENCH_CATALOG_SERVICES", "10000"))
EDGES = int(os.environ.get("BENCH_CATALOG_EDGES", str(3 * SERVICES)))
WARMUP = 20
ROTATION = 20  # graphs measured in turn
BENCH_EMAIL = "bench-catalog@example.com"
BENCH_PASSWORD = "bench passphrase 1234"
FLOOR_BODIES_ENV = "BENCH_CATALOG_FLOOR_BODIES"

# -- the synthetic catalog ---------------------------------------------------------------------
DOMAINS = (
    "payments", "billing", "checkout", "cart", "catalog", "search", "inventory", "pricing",
    "shipping", "orders", "returns", "identity", "auth", "accounts", "profile", "notifications",
    "email", "sms", "reviews", "recommendations", "ads", "analytics", "reporting", "ledger",
    "fraud", "risk", "compliance", "support", "chat", "media", "images", "video", "geo",
    "maps", "loyalty", "coupons", "subscriptions", "tax", "invoicing", "warehouse",
)  # fmt: skip
PARTS = (
    "core", "ledger", "gateway", "events", "sync", "export", "import", "rules", "engine",
    "scheduler", "index", "cache", "store", "profile", "session", "token", "feed", "router",
    "matcher", "ranker", "audit", "webhooks", "config", "quota", "metrics",
)  # fmt: skip
ROLES = ("api", "worker", "service", "ui", "db", "consumer", "producer", "cron", "proxy", "lib")
LANGUAGES = ("python", "go", "java", "kotlin", "typescript", "rust")
TAGS = (
    *LANGUAGES, "tier-1", "tier-2", "tier-3", "pci", "gdpr", "pii", "grpc", "rest", "graphql",
    "kafka", "postgres", "redis", "public", "internal", "batch", "realtime", "legacy", "edge",
)  # fmt: skip
QUERY_TERMS = ("ledger", "search", "gateway", "cache", "fraud")
TAG_FILTERS = ("pci", "kafka", "tier-1", "grpc", "legacy")
ABSENT_TERMS = ("nimbus", "quokka", "zephyr")  # match nothing: every row is read


@dataclass
class Catalog:
    services: int = 0
    tags: int = 0
    versions: int = 0
    edges: int = 0
    seconds: float = 0.0
    server_version: str = ""
    roots: list[uuid.UUID] = field(default_factory=list)  # mid-graph services, measured
    deep_cursors: list[str] = field(default_factory=list)  # pages 141-181 of 200 (limit 50)


def _service_rows(
    rng: random.Random, org_id: uuid.UUID, teams: Sequence[uuid.UUID], n: int, now: datetime
) -> list[dict[str, Any]]:
    names = [f"{d}-{p}-{r}" for d in DOMAINS for p in PARTS for r in ROLES]
    rng.shuffle(names)
    while len(names) < n:  # more than the 10,000 combinations: number them
        names.append(f"{rng.choice(DOMAINS)}-{rng.choice(PARTS)}-{len(names)}")
    rows = []
    for i in range(n):
        name = names[i]
        domain, part, role = name.split("-", 2)
        host = "gitlab" if rng.random() < 0.15 else "github"
        path = f"acme/{name}"
        created = now - timedelta(days=rng.uniform(1, 1500))
        rows.append(
            {
                "id": uuid.uuid4(),
                "org_id": org_id,
                "owner_team_id": teams[DOMAINS.index(domain) % len(teams)]
                if rng.random() < 0.8
                else rng.choice(teams),
                "name": name,
                "kind": rng.choices(("component", "api", "resource"), (85, 10, 5))[0],
                "type": rng.choice(("service", "website", "library", None)),
                "description": (
                    f"The {part} {role} of the {domain} domain: "
                    f"{rng.choice(('handles', 'serves', 'owns', 'computes', 'publishes'))} "
                    f"{domain} {part} data for the {rng.choice(DOMAINS)} and "
                    f"{rng.choice(DOMAINS)} teams. Written in {rng.choice(LANGUAGES)}."
                ),
                "repository_url": f"https://{host}.com/{path}",
                "repository_host": host,
                "repository_path": path,
                "docs": [{"title": "Runbook", "url": f"https://docs.acme.dev/{name}"}]
                if rng.random() < 0.3
                else [],
                "lifecycle": rng.choices(
                    ("production", "experimental", "deprecated"), (70, 20, 10)
                )[0],
                "system": domain,
                "provides_apis": [],
                "annotations": {},
                "created_at": created,
                "updated_at": created + timedelta(days=rng.uniform(0, 30)),
            }
        )
    return rows


def _edge_rows(
    rng: random.Random, ids: Sequence[uuid.UUID], majors: dict[int, int], n_edges: int
) -> list[dict[str, Any]]:
    """A DAG: service i depends only on services of lower index, so no cycle. Half the
    targets are near (the same neighbourhood), half anywhere below (shared platform pieces)."""
    n = len(ids)
    seen: set[tuple[int, int]] = set()
    rows: list[dict[str, Any]] = []
    while len(rows) < n_edges:
        source = rng.randrange(1, n)
        if rng.random() < 0.5:
            target = max(0, source - 1 - int(rng.expovariate(1 / 150)))
        else:
            target = rng.randrange(0, source)
        if (source, target) in seen:
            continue
        seen.add((source, target))
        constraint = None
        if target in majors and rng.random() < 0.6:
            major = majors[target] + (1 if rng.random() < 0.1 else 0)  # some unsatisfiable
            constraint = rng.choice((f"^{major}.0.0", f"~{major}.1", f">={major}.0.0 <{major + 1}"))
        rows.append(
            {
                "id": uuid.uuid4(),
                "service_id": ids[source],
                "depends_on_service_id": ids[target],
                "type": rng.choices(("runtime", "build", "data"), (80, 12, 8))[0],
                "version_constraint": constraint,
            }
        )
    return rows


def seed(url: str, n_services: int = SERVICES, n_edges: int = EDGES) -> Catalog:
    """Bulk inserts (SQLAlchemy Core, lists of dicts) in one transaction, then ANALYZE."""
    rng = random.Random(5)
    now = datetime.now(UTC)
    started = time.perf_counter()
    engine = create_sync_engine(migrate.sync_url(url))
    try:
        with engine.begin() as conn:
            org_id = uuid.uuid4()
            conn.execute(insert(Organization), [{"id": org_id, "name": "Acme", "slug": "acme"}])
            team_ids = [uuid.uuid4() for _ in range(20)]
            conn.execute(
                insert(Team),
                [
                    {"id": t, "org_id": org_id, "name": f"Team {d}", "slug": d}
                    for t, d in zip(team_ids, DOMAINS, strict=False)
                ],
            )
            services = _service_rows(rng, org_id, team_ids, n_services, now)
            conn.execute(insert(Service), services)
            tags = [
                {"service_id": s["id"], "tag": tag}
                for s in services
                for tag in rng.sample(TAGS, rng.choice((0, 1, 1, 2, 2, 3)))
            ]
            conn.execute(insert(ServiceTag), tags)
            versions: list[dict[str, Any]] = []
            majors: dict[int, int] = {}
            for i, s in enumerate(services):
                if rng.random() < 0.4:
                    majors[i] = major = rng.randint(0, 4)
                    for minor in range(rng.randint(1, 3)):
                        versions.append(
                            {
                                "service_id": s["id"],
                                "version": f"{major}.{minor}.{rng.randint(0, 9)}",
                                "git_sha": uuid.uuid4().hex + uuid.uuid4().hex[:8],
                                "dockerfile_path": "Dockerfile",
                                "config": {},
                            }
                        )
            conn.execute(insert(ServiceVersion), versions)
            ids = [s["id"] for s in services]
            edges = _edge_rows(rng, ids, majors, n_edges)
            conn.execute(insert(ServiceDependency), edges)
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("ANALYZE"))
            version = str(conn.execute(text("SHOW server_version")).scalar()).split()[0]
    finally:
        engine.dispose()
    return Catalog(
        len(services),
        len(tags),
        len(versions),
        len(edges),
        time.perf_counter() - started,
        version,
        _roots(ids, edges),
        _deep_cursors(services),
    )


def _deep_cursors(services: Sequence[dict[str, Any]]) -> list[str]:
    """Cursors (as the API hands them out: the last name and id of a page) deep in the list
    ordered by name, 70% to 90% of the way down."""
    ordered = sorted((s["name"], s["id"]) for s in services)
    n = len(ordered)
    return [encode_cursor(ordered[n * pct // 100 - 1]) for pct in (70, 75, 80, 85, 90)]


def _roots(ids: Sequence[uuid.UUID], edges: Sequence[dict[str, Any]]) -> list[uuid.UUID]:
    """ROTATION services from the middle fifth of the graph, each with dependencies and
    dependents (the ones a developer looks up; leaves and platform hubs are the extremes)."""
    sources = {e["service_id"] for e in edges}
    targets = {e["depends_on_service_id"] for e in edges}
    n = len(ids)
    mid = [i for i in ids[n * 2 // 5 : n * 3 // 5] if i in sources and i in targets]
    return mid[:: max(1, len(mid) // ROTATION)][:ROTATION]


async def _create_admin(url: str) -> None:
    engine = create_engine(url)
    try:
        async with transaction(session_factory(engine)) as session:
            with context.bound(actor_type="system", actor_label="bench"):
                users = UserService(session)
                user = await users.create(BENCH_EMAIL, "Bench admin", BENCH_PASSWORD)
                await users.grant_role(user, "admin")
    finally:
        await engine.dispose()


# -- the throw-away database -------------------------------------------------------------------
class Unreachable(Exception):
    pass


@contextmanager
def throwaway_database(base_url: str) -> Iterator[str]:
    """A new database next to `base_url`'s, dropped on the way out (even on failure)."""
    try:
        url = make_url(normalise_database_url(base_url))
    except ValueError as exc:
        raise Unreachable(f"BENCH_DATABASE_URL {exc}") from None
    if url.get_backend_name() != "postgresql":
        raise Unreachable("BENCH_DATABASE_URL is not a PostgreSQL URL")
    admin = create_sync_engine(
        migrate.sync_url(url.render_as_string(hide_password=False)),
        isolation_level="AUTOCOMMIT",
        connect_args={"connect_timeout": 5},
    )
    name = f"idp_bench_{uuid.uuid4().hex[:12]}"
    try:
        try:
            with admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
        except SQLAlchemyError as exc:
            reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
            where = url.render_as_string(hide_password=True)
            raise Unreachable(f"cannot create a database on {where}: {reason}") from None
        try:
            yield url.set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


# -- the floor: bare FastAPI serving the captured bodies -----------------------------------------
def create_floor_app() -> FastAPI:
    """uvicorn --factory: the same paths as the API, answering from memory the bytes the API
    answered (read from the file named by BENCH_CATALOG_FLOOR_BODIES)."""
    captured = json.loads(Path(os.environ[FLOOR_BODIES_ENV]).read_text())
    bodies = {key: body.encode() for key, body in captured["bodies"].items()}
    media_type = captured["media_type"]
    app = FastAPI()

    def answer(request: Request) -> Response:
        return Response(bodies[f"{request.url.path}?{request.url.query}"], media_type=media_type)

    @app.get("/api/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/services")
    async def services(request: Request) -> Response:
        return answer(request)

    @app.get("/services/{service_id}/dependencies")
    async def dependencies(service_id: uuid.UUID, request: Request) -> Response:
        return answer(request)

    return app


# -- measuring ---------------------------------------------------------------------------------
def _serve(argv: list[str], port: int, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """Start a server (its output to `log`, not a pipe that could fill up) and wait for it."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            argv, cwd=PROJECT_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        try:
            httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=1)
            return process
        except httpx.HTTPError:
            time.sleep(0.2)
    process.kill()
    process.wait()
    tail = log.read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
    raise RuntimeError(f"{argv} did not start: {tail[0]}")


def _paired(
    client: httpx.Client, api: str, floor: str, paths: Sequence[str], n: int = REQUESTS
) -> tuple[list[float], list[float]]:
    """n requests to each, alternating real and floor, rotating through `paths`."""
    real_ms: list[float] = []
    floor_ms: list[float] = []
    for i in range(WARMUP + n):
        path = paths[i % len(paths)]
        for base, samples in ((api, real_ms), (floor, floor_ms)):
            started = time.perf_counter()
            response = client.get(base + path)
            elapsed = (time.perf_counter() - started) * 1000
            response.raise_for_status()
            if i >= WARMUP:
                samples.append(elapsed)
    return real_ms, floor_ms


def _line(name: str, samples: Sequence[float], floor: Sequence[float] | None = None) -> None:
    """bench.stats.report's format, with the ratio of the p95s as well as the p50s."""
    s = summary(samples)
    figures = " ".join(f"{k}={v:8.2f}ms" for k, v in s.items())
    line = f"{name:<44} n={len(samples):<5} {figures}"
    if floor:
        f = summary(floor)
        line += f"  x{s['p50'] / f['p50']:.2f} of floor p50, x{s['p95'] / f['p95']:.2f} of p95"
    print(line, flush=True)


def _sizes(bodies: Sequence[bytes]) -> str:
    graphs = [json.loads(b) for b in bodies]
    nodes = sorted(len(g["nodes"]) for g in graphs)
    edges = sorted(len(g["edges"]) for g in graphs)
    kb = sorted(len(b) / 1024 for b in bodies)
    return (
        f"nodes {nodes[0]}-{nodes[-1]} (median {statistics.median(nodes):g}), "
        f"edges {edges[0]}-{edges[-1]} (median {statistics.median(edges):g}), "
        f"{kb[0]:.0f}-{kb[-1]:.0f} KiB"
    )


def _benchmark(url: str, catalog: Catalog, temporal_address: str | None) -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="idp-bench-catalog-"))
    env = {
        **os.environ,
        "IDP_DATA_DIR": str(data_dir),
        "DATABASE_URL": url,
        "LOG_LEVEL": "WARNING",
        "RATE_LIMIT_ENABLED": "false",
        "JWT_EXPIRES_IN": "2h",  # outlives the run
    }
    for name in ("IDP_ADMIN_EMAIL", "IDP_ADMIN_PASSWORD", "REDIS_URL"):
        env.pop(name, None)
    if temporal_address:
        env["TEMPORAL_ADDRESS"] = temporal_address
    api_port, floor_port = free_port(), free_port()
    api_base, floor_base = f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{floor_port}"
    processes = [
        _serve(
            [sys.executable, "-m", "workers.cli", "api", "--port", str(api_port)],
            api_port,
            env,
            data_dir / "api.log",
        )
    ]
    try:
        token = httpx.post(
            f"{api_base}/auth/login", json={"email": BENCH_EMAIL, "password": BENCH_PASSWORD}
        ).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        roots = catalog.roots
        cases: list[tuple[str, list[str]]] = [
            ("GET /services?limit=50", ["/services?limit=50"]),
            (
                f"GET /services?limit=50&q=<{len(QUERY_TERMS)} terms>",
                [f"/services?limit=50&q={t}" for t in QUERY_TERMS],
            ),
            (
                f"GET /services?limit=50&tag=<{len(TAG_FILTERS)} tags>",
                [f"/services?limit=50&tag={t}" for t in TAG_FILTERS],
            ),
            (
                f"GET /services?limit=50&q=<{len(ABSENT_TERMS)} absent terms>",
                [f"/services?limit=50&q={t}" for t in ABSENT_TERMS],
            ),
            (
                "GET /services?limit=50&cursor=<70-90% deep>",
                [f"/services?limit=50&cursor={c}" for c in catalog.deep_cursors],
            ),
            (
                "GET depth-3 graph, both directions",
                [f"/services/{r}/dependencies?depth=3&direction=both" for r in roots],
            ),
            (
                "GET depth-3 graph, dependencies only",
                [f"/services/{r}/dependencies?depth=3&direction=dependencies" for r in roots],
            ),
        ]
        with httpx.Client(headers=headers, timeout=60) as client:
            captured: dict[str, str] = {}
            media_types = set()
            for _, paths in cases:
                for path in paths:
                    response = client.get(api_base + path)
                    response.raise_for_status()
                    captured[path] = response.text
                    media_types.add(response.headers["content-type"])
            assert len(media_types) == 1, media_types
            bodies_file = data_dir / "floor-bodies.json"
            bodies_file.write_text(
                json.dumps({"media_type": media_types.pop(), "bodies": captured})
            )
            floor_env = {**env, FLOOR_BODIES_ENV: str(bodies_file)}
            processes.append(
                _serve(
                    [
                        sys.executable,
                        "-m",
                        "uvicorn",
                        "--factory",
                        "bench.catalog_latency:create_floor_app",
                        "--host",
                        "127.0.0.1",
                        "--port",
                        str(floor_port),
                        "--log-level",
                        "warning",
                        "--no-access-log",
                    ],
                    floor_port,
                    floor_env,
                    data_dir / "floor.log",
                )
            )
            for path, body in captured.items():  # the floor answers the same bytes
                assert client.get(floor_base + path).content == body.encode(), path
            for name, paths in cases:
                real_ms, floor_ms = _paired(client, api_base, floor_base, paths)
                _line(f"floor: bare FastAPI, {name.removeprefix('GET ')}", floor_ms)
                _line(f"api: {name}", real_ms, floor_ms)
                if "graph" in name:
                    print(
                        f"  {len(paths)} graphs: {_sizes([captured[p].encode() for p in paths])}",
                        flush=True,
                    )
    finally:
        for process in processes:
            process.terminate()
            process.wait()


def run(temporal_address: str | None = None) -> None:
    base = os.environ.get("BENCH_DATABASE_URL") or DEFAULT_DATABASE_URL
    try:
        with throwaway_database(base) as url:
            migrate.upgrade(url)
            catalog = seed(url)
            asyncio.run(_create_admin(url))
            print(
                f"# catalog on PostgreSQL {catalog.server_version}: {catalog.services:,} services, "
                f"{catalog.edges:,} dependency edges, {catalog.tags:,} tags, "
                f"{catalog.versions:,} versions, seeded in {catalog.seconds:.1f} s",
                flush=True,
            )
            _benchmark(url, catalog, temporal_address)
    except Unreachable as exc:
        print(f"catalog benchmark skipped: {exc}", flush=True)


if __name__ == "__main__":
    run()
