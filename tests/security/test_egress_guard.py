"""Server-side request forgery is refused (issue 15, finding 7): the destinations users name
(health check endpoints, webhook channel URLs, SMTP hosts, providers' OpenCost and Cost
Explorer URLs) may not reach loopback, link-local (the cloud metadata address), private,
unique-local or other internal ranges, in any spelling, unless EGRESS_ALLOWED_CIDRS allows
them; a 422 says so at creation, the attempt's error at send time, and a name that changes its
answer between the check and the connection (DNS rebinding) is connected to at the vetted
address only.

The suite's stand-ins listen on loopback, so tests/conftest.py allows 127.0.0.0/8 and ::1;
the tests here take that away again (`guarded_api`, `EgressPolicy()`)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import date, timedelta
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import WorkflowFailureError
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.costs import CostActivities
from activities.health import HealthActivities
from activities.notifications import NotificationActivities
from core.catalog.health_messages import ProbeRequest
from core.db.engine import create_engine, session_factory
from core.infrastructure.cost_messages import CollectInput
from core.infrastructure.costs import PriceCatalog
from core.models.catalog import HealthCheck
from core.models.notifications import Notification, NotificationAttempt
from core.notifications.dispatch import SenderSettings
from core.notifications.messages import NotificationRequest, NotificationSummary
from core.notifications.starter import start_notification
from core.security.egress import (
    EgressPolicy,
    EgressRefused,
    parse_address,
    parse_cidrs,
    range_of,
)
from core.settings import Settings
from core.temporal import policies
from core.topology import Topology
from tests.helpers import free_port
from tests.integration.health_helpers import add_check, make_owner
from tests.integration.identity_helpers import Api, assert_error, running_api
from tests.standins.cost_explorer import CostExplorerStandin
from tests.standins.http_target import HttpTarget
from tests.standins.opencost import OpenCostStandin
from tests.standins.smtp import SmtpStandin
from tests.standins.webhook_receiver import WebhookReceiver
from workers.runner import sandbox_runner
from workflows.notification import DELIVERY_FAILED, NotificationWorkflow

# -- the ranges ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("127.255.0.9", "loopback"),
        ("::1", "loopback"),
        ("169.254.169.254", "link-local (cloud metadata)"),
        ("169.254.10.1", "link-local"),
        ("fe80::1", "link-local"),
        ("10.0.0.1", "private"),
        ("172.16.0.1", "private"),
        ("172.31.255.255", "private"),
        ("192.168.1.1", "private"),
        ("fc00::1", "unique-local"),
        ("fd12:3456::1", "unique-local"),
        ("100.64.0.1", "shared (CGNAT)"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("0.1.2.3", "reserved"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("255.255.255.255", "reserved"),
        ("192.0.2.1", "reserved"),
        # IPv6 spellings of IPv4 addresses are judged by the IPv4 address they carry
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:169.254.169.254", "link-local (cloud metadata)"),
        ("::ffff:10.1.2.3", "private"),
        ("::127.0.0.1", "loopback"),  # IPv4-compatible (deprecated)
        ("64:ff9b::a00:1", "private"),  # NAT64 of 10.0.0.1
        ("2002:a9fe:a9fe::1", "link-local (cloud metadata)"),  # 6to4 of 169.254.169.254
        ("2001:db8::1", "reserved"),
    ],
)
def test_internal_addresses_are_in_a_refused_range(address: str, kind: str) -> None:
    assert range_of(parse_address(address)) == kind
    assert EgressPolicy().refusal(parse_address(address)) == kind


@pytest.mark.parametrize(
    "address",
    ["8.8.8.8", "1.1.1.1", "172.32.0.1", "100.128.0.1", "2606:4700:4700::1111", "::ffff:8.8.8.8"],
)
def test_public_addresses_pass(address: str) -> None:
    assert range_of(parse_address(address)) is None
    assert EgressPolicy().refusal(parse_address(address)) is None


def test_the_allow_list_lets_its_ranges_through_and_only_those() -> None:
    policy = EgressPolicy.parse("127.0.0.0/8, 10.20.0.0/16")
    assert policy.refusal(parse_address("127.0.0.1")) is None
    assert policy.refusal(parse_address("::ffff:127.0.0.1")) is None  # the same address
    assert policy.refusal(parse_address("10.20.3.4")) is None
    assert policy.refusal(parse_address("10.21.0.1")) == "private"
    assert policy.refusal(parse_address("::1")) == "loopback"  # IPv6 loopback: not listed
    assert policy.refusal(parse_address("169.254.169.254")) == "link-local (cloud metadata)"
    # only_allowed: public addresses are refused too (a provider's own Cost Explorer URL)
    strict = policy.only_allowed()
    assert strict.refusal(parse_address("8.8.8.8")) == "a public address"
    assert strict.refusal(parse_address("10.20.0.1")) is None


def test_the_setting_is_empty_by_default_and_parsed_strictly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("EGRESS_ALLOWED_CIDRS")
    secrets = {"jwt_secret": SecretStr("j" * 40), "encryption_key": SecretStr("e" * 64)}
    for env in ("development", "test", "production"):
        assert Settings.model_validate({"env": env, **secrets}).egress_allowed_cidrs == ()
    assert parse_cidrs(" 10.0.0.9/8 , ::1 ,, 127.0.0.1") == (
        "10.0.0.0/8",
        "::1/128",
        "127.0.0.1/32",
    )
    monkeypatch.setenv("EGRESS_ALLOWED_CIDRS", "10.0.0.0/8,localhost")
    with pytest.raises(ValueError, match="'localhost' is not a CIDR"):
        Settings()


# -- refused at creation -----------------------------------------------------------------------


@pytest.fixture
async def guarded_api(
    settings: Settings, topology: Topology, database_url: str
) -> AsyncIterator[Api]:
    """The app with EGRESS_ALLOWED_CIDRS as it is by default: empty."""
    plain = settings.model_copy(update={"egress_allowed_cidrs": ()})
    async with running_api(plain, topology, database_url) as running:
        yield running


def _refused(response: httpx.Response, field: str, addresses: set[str]) -> dict[str, Any]:
    error = assert_error(response, 422, "egress_refused")
    [detail] = error["details"]
    assert detail["field"] == field
    assert detail["address"] in addresses
    assert detail["setting"] == "EGRESS_ALLOWED_CIDRS"
    assert detail["allow"].startswith("EGRESS_ALLOWED_CIDRS=")
    assert f"an operator sets {detail['allow']} " in error["message"]
    return error


LOOPBACK_NAMES = {"127.0.0.1", "::1"}  # what `localhost` resolves to, depending on /etc/hosts


@pytest.mark.parametrize(
    ("endpoint", "addresses"),
    [
        ("http://127.0.0.1:{port}/healthz", {"127.0.0.1"}),
        ("http://169.254.169.254/latest/meta-data/iam/security-credentials/", {"169.254.169.254"}),
        ("http://[::1]:{port}/", {"::1"}),
        ("http://10.0.0.1/", {"10.0.0.1"}),
        ("http://localhost:{port}/healthz", LOOPBACK_NAMES),
        ("http://[::ffff:127.0.0.1]:{port}/", {"::ffff:127.0.0.1"}),
        ("http://2130706433:{port}/", {"127.0.0.1"}),  # decimal
        ("http://0177.0.0.1:{port}/", {"127.0.0.1"}),  # octal
        ("http://0x7f.1:{port}/", {"127.0.0.1"}),  # hex, short form
        ("https://[fd00::1]/", {"fd00::1"}),
        ("http://100.64.0.1/", {"100.64.0.1"}),
        ("http://0.0.0.0:{port}/", {"0.0.0.0"}),
    ],
)
async def test_a_health_check_to_an_internal_address_is_refused_at_creation(
    guarded_api: Api, endpoint: str, addresses: set[str]
) -> None:
    api = guarded_api
    _, admin = await api.token("admin")
    owner = await make_owner(api, admin)
    with HttpTarget() as target:
        url = endpoint.format(port=target.port)
        body = {"name": "probe", "endpoint": url}
        answer = await api.client.post(
            f"/services/{owner.service_id}/health-checks", json=body, headers=admin
        )
        _refused(answer, "endpoint", addresses)
        assert target.hits == []
    assert (
        await api.fetch(select(HealthCheck).where(HealthCheck.service_id == owner.service_id)) == []
    )


async def test_changing_a_check_to_an_internal_endpoint_is_refused(guarded_api: Api) -> None:
    api = guarded_api
    _, admin = await api.token("admin")
    owner = await make_owner(api, admin)
    check = await add_check(api, owner.service_id, endpoint="https://203.0.114.1/healthz")
    check_id = check.id
    answer = await api.client.put(
        f"/services/{owner.service_id}/health-checks/{check_id}",
        json={"endpoint": "http://169.254.169.254/latest/meta-data/"},
        headers=admin,
    )
    _refused(answer, "endpoint", {"169.254.169.254"})
    [row] = await api.fetch(select(HealthCheck).where(HealthCheck.id == check_id))
    assert row.endpoint == "https://203.0.114.1/healthz"


async def test_notification_channels_to_internal_addresses_are_refused(guarded_api: Api) -> None:
    api = guarded_api
    _, admin = await api.token("admin")
    with WebhookReceiver(secret=None) as receiver:
        hook = {"type": "webhook", "name": "hook", "config": {"url": receiver.url}}
        answer = await api.client.post("/notifications/channels", json=hook, headers=admin)
        _refused(answer, "config.url", {"127.0.0.1"})
        assert receiver.deliveries == []
    mail = {
        "type": "email",
        "name": "mail",
        "config": {"host": "localhost", "port": 25, "from_address": "idp@example.com"},
    }
    answer = await api.client.post("/notifications/channels", json=mail, headers=admin)
    _refused(answer, "config.host", LOOPBACK_NAMES)

    # A channel to a public address is made; changing it to the metadata address is refused.
    public = {"type": "webhook", "name": "pub", "config": {"url": "https://203.0.114.9/hook"}}
    created = await api.client.post("/notifications/channels", json=public, headers=admin)
    assert created.status_code == 201, created.text
    channel_id = created.json()["id"]
    answer = await api.client.patch(
        f"/notifications/channels/{channel_id}",
        json={"config": {"url": "http://[::ffff:a9fe:a9fe]/latest/"}},
        headers=admin,
    )
    _refused(answer, "config.url", {"::ffff:169.254.169.254"})
    shown = await api.client.get(f"/notifications/channels/{channel_id}", headers=admin)
    assert shown.json()["config"]["url"] == "https://203.0.114.9/hook"


async def test_providers_cost_urls_are_refused_at_creation(guarded_api: Api) -> None:
    api = guarded_api
    _, admin = await api.token("admin")
    org = await api.client.post(
        "/organizations", json={"name": "Org", "slug": f"org-{uuid.uuid4().hex[:8]}"}, headers=admin
    )
    org_id = org.json()["id"]

    async def provider(type_: str, **config: str) -> httpx.Response:
        body = {"org_id": org_id, "name": f"p-{uuid.uuid4().hex[:8]}", "type": type_}
        return await api.client.post(
            "/infrastructure/providers", json={**body, "config": config}, headers=admin
        )

    _refused(
        await provider("kubernetes", opencost_url="http://10.96.0.12:9003"),
        "config.opencost_url",
        {"10.96.0.12"},
    )
    _refused(
        await provider("aws", cost_explorer_url="http://169.254.169.254/"),
        "config.cost_explorer_url",
        {"169.254.169.254"},
    )
    # The signed Cost Explorer request (and session token) goes to AWS, or where an operator
    # allowed: any other public host is refused too.
    error = _refused(
        await provider("aws", cost_explorer_url="https://8.8.8.8/"),
        "config.cost_explorer_url",
        {"8.8.8.8"},
    )
    assert "must be https://ce.<region>.amazonaws.com/" in error["message"]
    assert (
        await provider("aws", cost_explorer_url="https://ce.us-east-1.amazonaws.com/")
    ).status_code == 201


async def test_an_allowed_range_lets_a_channel_through(api: Api) -> None:
    # `api` runs with the suite's EGRESS_ALLOWED_CIDRS=127.0.0.0/8,::1/128
    _, admin = await api.token("admin")
    hook = {"type": "webhook", "name": "hook", "config": {"url": "http://127.0.0.1:9/hook"}}
    answer = await api.client.post("/notifications/channels", json=hook, headers=admin)
    assert answer.status_code == 201, answer.text


# -- refused at send time, and DNS rebinding ---------------------------------------------------


async def test_a_probe_to_an_internal_address_fails_with_the_guards_reason(
    db_engine: AsyncEngine,
) -> None:
    with HttpTarget() as target:
        request = ProbeRequest(
            check_id=uuid.uuid4(),
            endpoint=target.url,
            method="GET",
            expected_status=200,
            timeout_seconds=5,
        )
        refused = HealthActivities(session_factory(db_engine), egress=EgressPolicy())
        allowed = HealthActivities(
            session_factory(db_engine), egress=EgressPolicy.parse("127.0.0.1/32")
        )
        try:
            result = await refused.probe(request)
            assert not result.ok and result.status_code is None
            assert result.error is not None
            assert result.error.startswith("refused by the egress guard: 127.0.0.1 is a loopback")
            assert "EGRESS_ALLOWED_CIDRS=127.0.0.1/32" in result.error
            assert target.hits == []

            assert (await allowed.probe(request)).ok
            assert target.hits == [("GET", "/healthz")]
        finally:
            await refused.close()
            await allowed.close()


async def test_a_refused_webhook_and_smtp_host_are_the_delivery_attempts_error(
    api: Api, temporal_env: WorkflowEnvironment, topology: Topology
) -> None:
    # Channels made while loopback was allowed (the suite's setting); the worker delivering
    # them runs with the default, empty allow-list.
    policies.install(topology)
    _, admin = await api.token("admin")
    queue = f"egress-{uuid.uuid4().hex[:8]}"
    with WebhookReceiver(secret=None) as receiver, SmtpStandin() as smtp:
        bodies = [
            {"type": "webhook", "name": "hook", "config": {"url": receiver.url}},
            {
                "type": "email",
                "name": "mail",
                "config": {
                    "host": "127.0.0.1",
                    "port": smtp.port,
                    "security": "none",
                    "from_address": "idp@example.com",
                    "to": ["ops@example.com"],
                },
            },
        ]
        ids = []
        for body in bodies:
            made = await api.client.post("/notifications/channels", json=body, headers=admin)
            assert made.status_code == 201, made.text
            ids.append(uuid.UUID(made.json()["id"]))
        request = NotificationRequest(
            event="custom", context={"title": "t", "message": "m"}, channel_ids=ids
        )
        engine = create_engine(api.settings.effective_database_url)
        acts = NotificationActivities(session_factory(engine), SenderSettings())
        try:
            async with Worker(
                temporal_env.client,
                task_queue=queue,
                workflows=[NotificationWorkflow],
                activities=[acts.prepare, acts.deliver, acts.mark_failed],
                workflow_runner=sandbox_runner(),
            ):
                workflow_id = await start_notification(
                    temporal_env.client, request, task_queue=queue
                )
                handle = temporal_env.client.get_workflow_handle(
                    workflow_id, result_type=NotificationSummary
                )
                with pytest.raises(WorkflowFailureError) as caught:  # the channels failed
                    await asyncio.wait_for(handle.result(), timeout=120)
        finally:
            await engine.dispose()
        assert receiver.deliveries == [] and smtp.messages == []
    error = caught.value.cause
    assert isinstance(error, ApplicationError) and error.type == DELIVERY_FAILED
    assert "is a loopback address" in error.message
    summary = NotificationSummary.model_validate(error.details[0])
    assert summary.count("failed") == 2
    rows = await api.fetch(
        select(Notification)
        .where(Notification.request_id == request.request_id)
        .order_by(Notification.channel_type)
    )
    expected = {
        "email": "the SMTP host was refused: 127.0.0.1 is a loopback address",
        "webhook": "the webhook URL was refused: 127.0.0.1 is a loopback address",
    }
    for row in rows:
        [attempt] = await api.fetch(
            select(NotificationAttempt).where(NotificationAttempt.notification_id == row.id)
        )
        assert row.status == "failed"
        assert attempt.status == "failed" and attempt.retryable is False
        assert attempt.error is not None
        assert attempt.error.startswith(expected[row.channel_type])
        assert "EGRESS_ALLOWED_CIDRS=127.0.0.1/32" in attempt.error


async def test_a_providers_cost_url_to_an_internal_address_is_not_called(api: Api) -> None:
    # Providers stored while loopback was allowed (the suite's setting); the collection runs
    # with the default, empty allow-list, and AWS_COST_EXPLORER_URL unset.
    _, admin = await api.token("admin")
    org = await api.client.post(
        "/organizations", json={"name": "Org", "slug": f"org-{uuid.uuid4().hex[:8]}"}, headers=admin
    )
    day = date.today() - timedelta(days=2)
    keys = {"access_key_id": "AKIDEGRESS0001", "secret_access_key": "egress/secret"}
    with OpenCostStandin() as opencost, CostExplorerStandin(keys={"AKIDEGRESS0001": "x"}) as ce:
        made = {}
        for type_, config, credentials in (
            ("kubernetes", {"opencost_url": opencost.url}, {}),
            ("aws", {"cost_explorer_url": ce.url}, keys),
        ):
            body = {"org_id": org.json()["id"], "name": f"p-{uuid.uuid4().hex[:8]}", "type": type_}
            body |= {"config": config, "credentials": credentials}
            answer = await api.client.post("/infrastructure/providers", json=body, headers=admin)
            assert answer.status_code == 201, answer.text
            made[type_] = uuid.UUID(answer.json()["id"])
        plain = api.settings.model_copy(update={"egress_allowed_cidrs": ()})
        engine = create_engine(api.settings.effective_database_url)
        try:
            acts = CostActivities(session_factory(engine), PriceCatalog.load(), settings=plain)
            for source, type_ in (("opencost", "kubernetes"), ("aws", "aws")):
                only = CollectInput(day=day, source=source, providers=[made[type_]])
                result = await acts.collect(only)
                [note] = result.notes
                assert "refused by the egress guard: 127.0.0.1 is " in note
                assert "EGRESS_ALLOWED_CIDRS=127.0.0.1/32" in note
        finally:
            await engine.dispose()
        assert opencost.requests == [] and ce.requests == []


class _Rebinding:
    """A resolver whose answer changes after the first question, as a rebinding attacker's
    DNS server does (a short TTL, then another address)."""

    def __init__(self, first: str, then: str) -> None:
        self.answers = [first, then]
        self.asked: list[str] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.asked.append(host)
        return [self.answers[min(len(self.asked), 2) - 1]]


async def _http_server(host: str, port: int, seen: list[str]) -> asyncio.Server:
    """A minimal HTTP server on `host`:`port` recording each request's Host header; it answers
    `/redirect` with a redirect to the same port on 127.0.0.1, anything else with "ok"."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode()
        lines = head.split("\r\n")
        hosts = [line[5:].strip() for line in lines if line.lower().startswith("host:")]
        seen.append(hosts[0] if hosts else "")
        if " /redirect " in lines[0]:
            where = f"http://127.0.0.1:{port}/"
            writer.write(
                f"HTTP/1.1 302 Found\r\nLocation: {where}\r\nContent-Length: 0\r\n"
                "Connection: close\r\n\r\n".encode()
            )
        else:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        await writer.drain()
        writer.close()

    return await asyncio.start_server(handle, host, port)


async def _with_servers(test: Callable[[int, list[str], list[str]], Awaitable[None]]) -> None:
    """A "public" server on 127.0.0.2 and an "internal" one on 127.0.0.1, on the same port (the
    policy allows 127.0.0.2/32 only, standing in for a public address)."""
    port = free_port()
    public: list[str] = []
    internal: list[str] = []
    servers = [
        await _http_server("127.0.0.2", port, public),
        await _http_server("127.0.0.1", port, internal),
    ]
    try:
        await test(port, public, internal)
    finally:
        for server in servers:
            server.close()
            await server.wait_closed()


async def test_dns_rebinding_cannot_move_a_request_onto_loopback() -> None:
    async def run(port: int, public: list[str], internal: list[str]) -> None:
        url = f"http://rebind.test:{port}/"
        # 1. The connection goes to the address that was vetted, resolved once: a changed
        #    answer later cannot redirect it, and the Host header keeps the name.
        resolver = _Rebinding(first="127.0.0.2", then="127.0.0.1")
        policy = EgressPolicy.parse("127.0.0.2/32").with_resolver(resolver)
        async with policy.client() as http:
            assert (await http.get(url)).text == "ok"
        assert public == [f"rebind.test:{port}"] and internal == []
        assert resolver.asked == ["rebind.test"]

        # 2. Checked at creation (public then), rebound before the send: the send resolves
        #    again, vets that answer, and refuses it; nothing reaches loopback.
        resolver = _Rebinding(first="127.0.0.2", then="127.0.0.1")
        policy = EgressPolicy.parse("127.0.0.2/32").with_resolver(resolver)
        await policy.check_url(url, field="config.url")  # passes: 127.0.0.2 is allowed
        async with policy.client() as http:
            with pytest.raises(EgressRefused) as refused:
                await http.get(url)
        assert str(refused.value.address) == "127.0.0.1"
        assert "rebind.test resolves to 127.0.0.1, a loopback address" in str(refused.value)
        assert internal == []

        # 3. A redirect to loopback, were one followed, is a new connection: vetted again.
        policy = EgressPolicy.parse("127.0.0.2/32")
        async with policy.client(follow_redirects=True) as http:
            with pytest.raises(EgressRefused):
                await http.get(f"http://127.0.0.2:{port}/redirect")
        assert public[-1] == f"127.0.0.2:{port}" and internal == []

    await _with_servers(run)


async def test_a_name_with_one_internal_address_among_public_ones_is_refused() -> None:
    async def both(host: str, port: int) -> list[str]:
        return ["8.8.8.8", "10.0.0.7"]

    policy = EgressPolicy().with_resolver(both)
    with pytest.raises(EgressRefused, match="mixed.test resolves to 10.0.0.7, a private"):
        await policy.connect_address("mixed.test")
