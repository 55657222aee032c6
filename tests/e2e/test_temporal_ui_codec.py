"""An operator reads an encrypted workflow payload in the real Temporal UI, in a real browser.

`idp dev` runs the platform and the Temporal UI; headless Chromium plays the operator: the UI's
Codec Server setting points at the API with "include cross-origin credentials" on; before
signing in, the UI's decode call is refused and the secret stays hidden; after signing in at
the codec sign-in page, the UI shows the decrypted input; after signing out, it is hidden again.

Needs Chromium (`apt-get install chromium`; or IDP_CHROMIUM=/path). Without it the test is
skipped, except where IDP_REQUIRE_BROWSER=1 (CI sets it), where it fails.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, sync_playwright

from core.temporal.client import connect
from core.topology import load_topology
from tests.e2e.stack import Stack

pytestmark = pytest.mark.e2e
ADMIN_EMAIL = "operator@example.com"
ADMIN_PASSWORD = "e2e operator passphrase 42"
WAIT_MS = 30_000


def chromium() -> str:
    found = os.environ.get("IDP_CHROMIUM") or next(
        filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None
    )
    if found:
        return found
    message = "Chromium is not installed (apt-get install chromium, or set IDP_CHROMIUM)"
    if os.environ.get("IDP_REQUIRE_BROWSER") == "1":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    s = Stack(
        tmp_path / "data",
        extra_settings={"IDP_ADMIN_EMAIL": ADMIN_EMAIL, "IDP_ADMIN_PASSWORD": ADMIN_PASSWORD},
    )
    yield s
    if s.process and s.process.poll() is None:
        s.process.kill()
        s.process.wait()


def start_workflow_holding(stack: Stack, secret: str) -> str:
    """A workflow whose input carries `secret`; nobody runs it, its input is in history."""

    async def go() -> str:
        settings = stack.settings()
        client = await connect(settings, load_topology(settings.temporal_config))
        workflow_id = f"e2e-ui-codec-{uuid.uuid4().hex[:8]}"
        await client.start_workflow(
            "DatabaseMigration", {"db_password": secret}, id=workflow_id, task_queue="e2e-nobody"
        )
        return workflow_id

    return asyncio.run(go())


def open_workflow(page: Page, stack: Stack, workflow_id: str) -> int:
    """Open the workflow in the UI; the status of the UI's call to our decode endpoint."""
    with page.expect_response(
        lambda r: "/api/temporal/codec/decode" in r.url, timeout=WAIT_MS
    ) as d:
        page.goto(f"{stack.ui}/namespaces/default/workflows/{workflow_id}")
    return d.value.status


def test_operator_reads_an_encrypted_payload_in_the_temporal_ui(stack: Stack) -> None:
    browser_path = chromium()
    stack.start()
    secret = f"hunter2-{uuid.uuid4().hex[:10]}"
    workflow_id = start_workflow_holding(stack, secret)

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=browser_path, args=["--no-sandbox"])
        page = browser.new_page()
        # The UI's Codec Server dialog stores these for this browser: the endpoint, "include
        # cross-origin credentials", and "use this browser's setting".
        page.goto(stack.ui)
        page.evaluate(
            """endpoint => {
                localStorage.setItem('endpoint', JSON.stringify(endpoint));
                localStorage.setItem('includeCredentials', 'true');
                localStorage.setItem('overrideRemoteCodecConfiguration', 'true');
            }""",
            f"{stack.api}/api/temporal/codec",
        )

        assert open_workflow(page, stack, workflow_id) == 401  # no codec session yet
        assert secret not in page.content()

        page.goto(f"{stack.api}/api/temporal/codec/sign-in")
        page.fill("#email", ADMIN_EMAIL)
        page.fill("#password", ADMIN_PASSWORD)
        page.click("#sign-in")
        page.wait_for_selector("#status.ok", timeout=WAIT_MS)
        assert ADMIN_EMAIL in page.inner_text("#status")

        assert open_workflow(page, stack, workflow_id) == 200
        page.get_by_text(secret).first.wait_for(timeout=WAIT_MS)  # the decrypted input

        page.goto(f"{stack.api}/api/temporal/codec/sign-in")
        page.evaluate("fetch('/api/temporal/codec/session', {method: 'DELETE'})")
        assert open_workflow(page, stack, workflow_id) == 401
        assert secret not in page.content()
        browser.close()

    stack.interrupt()
    assert stack.leftovers() == []
