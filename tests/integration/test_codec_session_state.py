"""The sign-in page the Temporal UI's codec error links to: it names the UI address `idp dev`
prints, and it reads this browser's session state from `GET /api/temporal/codec/session`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import delete

from api.routers.temporal_codec import render_sign_in_page
from core.models.identity import UserRole
from core.settings import Settings
from tests.integration.identity_helpers import Api, assert_error
from tests.integration.test_codec_session import COOKIE, SESSION, session_cookie, start_session

SIGN_IN = "/api/temporal/codec/sign-in"


async def test_the_session_state_of_this_browser(api: Api) -> None:
    user_id, admin = await api.token("admin")
    before = datetime.now(UTC)
    started = await start_session(api, admin)
    cookie = session_cookie(started)

    state = await api.client.get(SESSION, headers={"Cookie": f"{COOKIE}={cookie}"})
    assert state.status_code == 200, state.text
    assert state.json()["email"] == started.json()["email"]
    expires = datetime.fromisoformat(state.json()["expires_at"])
    ttl = api.settings.codec_session_expires_in
    assert before + ttl - timedelta(seconds=5) <= expires <= datetime.now(UTC) + ttl

    # No cookie, or a token instead of one: no session in this browser.
    assert_error(await api.client.get(SESSION), 401)
    assert_error(await api.client.get(SESSION, headers=admin), 401, "no_codec_session")
    # The account lost the permission: the session no longer decodes, and the page says why.
    await api.run_sql(delete(UserRole).where(UserRole.user_id == user_id))
    denied = await api.client.get(SESSION, headers={"Cookie": f"{COOKIE}={cookie}"})
    assert assert_error(denied, 403, "forbidden")["details"] == {"permission": "workflows:decode"}


async def test_the_page_names_the_ui_that_decodes(api: Api) -> None:
    page = await api.client.get(SIGN_IN)
    assert page.status_code == 200
    ui = f"http://127.0.0.1:{api.settings.temporal_ui_port}"
    assert f'reload the Temporal UI tab; <span id="ui-phrase">the UI at <a href="{ui}">' in (
        page.text
    )
    assert "__TEMPORAL_UI__" not in page.text
    assert 'id="why"' in page.text  # the explanation shown without a session


def test_the_page_with_an_external_cluster_names_no_address(settings: Settings) -> None:
    external = settings.model_copy(update={"temporal_address": "temporal.example:7233"})
    page = render_sign_in_page(external)
    assert "127.0.0.1" not in page and "__TEMPORAL_UI__" not in page
    assert "the Temporal UI (its server's codec settings point here" in page
