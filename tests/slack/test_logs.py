"""Logs carry ids, never payloads, tokens or the signing secret."""

from __future__ import annotations

import json
import logging

from pydantic import SecretStr

from bot.digest import deliver_digest
from bot.slack import ids
from bot.slack.client import make_client
from bot.standin import SlackStandIn
from bot.web import build_wsgi_app, serve_in_thread
from tests.slack.conftest import ALICE, MALLORY, NOW, PAYMENTS, SECRET, post, submit, wait_for
from tests.slack.test_commands import command
from tests.slack.test_decisions import click

TOKEN = "xoxb-PARE-DISTINCTIVE-TOKEN-4242"
TEXT = "DISTINCTIVE-PAYLOAD-TEXT-7331"


def test_requests_errors_and_refusals_leave_no_secret_or_payload_in_the_logs(
    realdata, settings, org, caplog, monkeypatch
):
    caplog.set_level(logging.INFO)
    for name in ("bot", "handlers"):
        caplog.set_level(logging.DEBUG, logger=name)
    with SlackStandIn(token=TOKEN) as standin:
        aimed = settings.model_copy(
            update={"slack_api_url": standin.url, "slack_bot_token": SecretStr(TOKEN)}
        )
        client = make_client(aimed)
        deliver_digest(aimed, org, "payments", "2026-W49", client, now=NOW)
        ts = standin.messages(PAYMENTS)[0].ts
        server = serve_in_thread(build_wsgi_app(aimed, org))
        url = server.url + "/slack/events"
        try:
            post(url, command(realdata, standin, MALLORY, f"role {TEXT}"))
            post(url, click(realdata, standin, MALLORY, "1", ts))  # refused
            post(url, click(realdata, standin, ALICE, "1", ts, ids.EXEMPT))
            view = wait_for(lambda: standin.views)[0]
            submit(url, ALICE, view, reason=TEXT)
            wait_for(lambda: standin.count("chat.update") == 1)
            monkeypatch.setattr("handlers.actions.decide", _broken)
            post(url, click(realdata, standin, ALICE, "2", ts))  # an unexpected error
            wait_for(lambda: "unexpected error ref=" in caplog.text)
            post(url, json.dumps({"type": "event_callback", "x": TEXT}), signature="v0=forged")
        finally:
            server.stop()

    logged = caplog.text
    assert "decision refused, not a champion: user=U0MALLORY" in logged
    assert "unexpected error ref=" in logged
    for secret in (TOKEN, SECRET, TEXT, "unused-verification-token"):
        assert secret not in logged


def _broken(*args, **kwargs):
    raise RuntimeError(f"boom {TEXT}")
