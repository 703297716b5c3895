"""`pare socket` over a live Socket Mode connection to the stand-in, all on 127.0.0.1."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest
from slack_bolt.adapter.socket_mode import SocketModeHandler
from slack_sdk.errors import SlackApiError
from slack_sdk.socket_mode.builtin.connection import Connection
from sqlalchemy import select

from bot.db import Database
from bot.settings import Settings
from bot.slack.app import build_app
from bot.standin import SlackStandIn
from models import SlackInstall
from tests.slack.conftest import ALICE, PAYMENTS, SECRET, wait_for
from tests.slack.test_decisions import click, decisions
from tests.slack.test_modals import ENVELOPES, payload_of, posted_items

log = logging.getLogger(__name__)

# The SDK's Socket Mode client would tunnel through these; this test talks to 127.0.0.1 only.
PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy")


@pytest.fixture
def socket_settings(settings: Settings, db: Database, standin: SlackStandIn) -> Settings:
    """The test settings plus the app-level token that Socket Mode needs."""
    return Settings(
        SLACK_BOT_TOKEN=standin.token,
        SLACK_SIGNING_SECRET=SECRET,
        SLACK_APP_TOKEN=standin.app_token,
        SLACK_API_URL=standin.url,
        DATABASE_URL=db.url,
        PARE_TEAMS_FILE=settings.teams_file,
        PARE_DEFER_DAYS=30,
    )


@pytest.fixture
def connected(
    monkeypatch: pytest.MonkeyPatch, socket_settings: Settings, org: Database
) -> Iterator[SocketModeHandler]:
    """Pare's app connected over Socket Mode as `pare socket` connects it."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    app = build_app(socket_settings, org)
    token = socket_settings.slack_app_token
    assert token is not None
    # The handler takes app.client, whose base URL is the stand-in's: apps.connections.open
    # goes there, and the ws:// URL it returns is the stand-in's own WebSocket endpoint.
    handler = SocketModeHandler(app, token.get_secret_value())
    handler.connect()
    yield handler
    handler.close()


def real_envelopes(realdata) -> dict[str, dict]:
    """Return one real envelope of each type from python-slack-sdk's tests."""
    lines = (realdata / ENVELOPES).read_text(encoding="utf-8").splitlines()
    found: dict[str, dict] = {}
    for line in filter(str.strip, lines):
        envelope = json.loads(line)
        found.setdefault(envelope["type"], envelope)
    return found


def installs(db: Database) -> list[SlackInstall]:
    with db.session() as session:
        return list(session.scalars(select(SlackInstall)))


def test_pare_socket_answers_commands_clicks_retries_and_events_over_a_live_connection(
    realdata, connected, settings, org, standin, client
):
    items, ts = posted_items(settings, org, standin, client)
    real = real_envelopes(realdata)
    assert standin.count("apps.connections.open") == 1
    assert connected.client.web_client.base_url == standin.url
    sent: list[str] = []

    command = {
        **real["slash_commands"]["payload"],
        "team_id": "T0STANDIN",
        "channel_id": PAYMENTS,
        "user_id": ALICE,
        "command": "/pare",
        "text": "help",
        "response_url": standin.response_url(PAYMENTS, ALICE),
    }
    sent.append(standin.push("slash_commands", command))
    [answer] = wait_for(lambda: standin.calls["response_url"])
    assert answer["response_type"] == "ephemeral" and answer["text"] == "Pare help"
    assert standin.messages(PAYMENTS)[-1].visible_to == ALICE

    approve = payload_of(click(realdata, standin, ALICE, items[0], ts))
    sent.append(standin.push("interactive", approve))
    wait_for(lambda: standin.count("chat.update") == 1)
    [decision] = decisions(org)
    assert (decision.kind, decision.decided_by) == ("approve", ALICE)

    # Slack redelivers when it thinks the ack was lost; the decision must not be taken twice.
    sent.append(standin.push("interactive", approve, retry_attempt=1, retry_reason="timeout"))
    [told] = wait_for(lambda: standin.calls["chat.postEphemeral"])
    assert "<@U0ALICE> already approved" in told["text"]
    assert len(decisions(org)) == 1 and standin.count("chat.update") == 1

    # Slack refreshes connections now and then: the client must fetch a new URL and carry on.
    standin.ask_to_reconnect()
    wait_for(lambda: standin.links_opened == 2 and standin.count("apps.connections.open") == 2)
    uninstalled = {**real["events_api"]["payload"], "team_id": "T0STANDIN"}
    uninstalled["event"] = {"type": "app_uninstalled", "event_ts": "1700000000.000100"}
    sent.append(standin.push("events_api", uninstalled))
    # The SDK's client reads the new connection only once its read on the old one times out
    # (3 s), so this wait is longer than the others.
    [install] = wait_for(lambda: installs(org), timeout=15)
    assert (install.workspace, install.state) == ("T0STANDIN", "uninstalled")

    assert [standin.wait_ack(envelope_id)["envelope_id"] for envelope_id in sent] == sent
    assert [e["envelope_id"] for e in standin.envelopes] == sent
    assert [e.get("retry_attempt") for e in standin.envelopes] == [None, None, 1, 0]


# The stand-in is only worth testing against if it is as strict as Slack where Pare could slip.
def test_the_stand_in_wants_the_app_token_and_admits_one_connection_per_url(
    monkeypatch, standin, client
):
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)

    with pytest.raises(SlackApiError) as refused:
        client.apps_connections_open(app_token=standin.token)
    assert refused.value.response["error"] == "not_allowed_token_type"

    url = client.apps_connections_open(app_token=standin.app_token)["url"]
    assert url.startswith("ws://127.0.0.1:")
    first, second = (Connection(url=url, logger=log) for _ in range(2))
    try:
        first.connect()
        second.connect()
        assert first.is_active() and not second.is_active()
        assert standin.links_opened == 1
    finally:
        first.close()
