"""Hostile requests at the Slack edge: refused before anything acts on them, never a 500."""

from __future__ import annotations

import io
import json
import logging
import sys
import time
from collections.abc import Iterator

import pytest

from bot import logs
from bot.slack import ids, text
from bot.standin import form_body
from bot.web import build_wsgi_app, serve_in_thread
from tests.slack.conftest import ALICE, PAYMENTS, post, wait_for
from tests.slack.test_decisions import click, decisions, posted  # noqa: F401 - fixture

FORGER = "U0FORGER"
MARKER = "CUSTOMER-DATA-MARKER-5150"
UNSIGNED = "v0=" + "0" * 64


def forged_click(standin) -> str:
    """A click that would make Pare answer in a channel and at a response_url it names."""
    return form_body(
        {
            "type": "block_actions",
            "user": {"id": FORGER},
            "channel": {"id": PAYMENTS},
            "response_url": standin.response_url(PAYMENTS, FORGER),
            "actions": [{"action_id": ids.APPROVE, "value": "1"}],
        }
    )


def nothing_sent(standin) -> bool:
    time.sleep(0.3)  # listeners would run after the ack; give them the chance to misbehave
    calls = ("chat.postEphemeral", "chat.postMessage", "response_url", "views.open")
    return all(standin.count(method) == 0 for method in calls)


# Arabic-Indic digits as they arrive: UTF-8 bytes, read by the server as Latin-1.
ARABIC = "١٢٣".encode().decode("latin-1")


@pytest.mark.parametrize("stamp", ["abc", "", "1e9", " 1", "1_0", ARABIC, "9" * 40])
def test_unsigned_request_with_an_odd_timestamp_gets_401_and_nothing_is_sent(
    endpoint, standin, org, caplog, stamp
):
    caplog.set_level(logging.INFO)

    status, _ = post(endpoint, forged_click(standin), timestamp=stamp, signature=UNSIGNED)

    assert status == 401
    assert nothing_sent(standin)
    assert decisions(org) == []
    assert FORGER not in caplog.text
    assert "unexpected error" not in caplog.text


@pytest.fixture
def pare_logging() -> Iterator[io.StringIO]:
    """The logging `pare serve` sets up (bot.logs.configure at INFO), written to a buffer."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    stream = io.StringIO()
    real, sys.stderr = sys.stderr, stream
    try:
        logs.configure("INFO")
    finally:
        sys.stderr = real
    yield stream
    root.handlers[:], level = saved
    root.setLevel(level)


def test_no_request_body_is_logged_with_pare_serve_logging(pare_logging, settings, org):
    # Built after logging is configured, as `pare serve` does: Bolt copies levels at build.
    server = serve_in_thread(build_wsgi_app(settings, org))
    url = server.url + "/slack/events"
    body = form_body({"type": "block_actions", "secret_marker": MARKER})
    try:
        forged = post(url, body, signature=UNSIGNED)[0]
        stale = post(url, body, timestamp=int(time.time()) - 3600)[0]
        # Signed, for a button Pare never made: Bolt's warning would quote its action id.
        foreign = form_body(
            {
                "type": "block_actions",
                "user": {"id": ALICE},
                "actions": [{"action_id": f"someone.else.{MARKER}", "value": "1"}],
            }
        )
        post(url, foreign)
    finally:
        server.stop()

    logged = pare_logging.getvalue()
    assert (forged, stale) == (401, 401)
    assert "forged or wrong signature" in logged and "stale signature" in logged
    assert MARKER not in logged


DEEP = "payload=" + "%5B" * 200_000


@pytest.mark.parametrize(
    ("body", "signed", "expected"),
    [
        (b"payload=\xff\xfe\xfd", False, 401),
        (b"payload=\xff\xfe\xfd", True, 400),
        (DEEP, False, 401),
        (DEEP, True, 400),
        ("", True, 400),
        ("just some text", True, 400),
        ("payload=%7B%7D", True, 400),
        (form_body({"type": "block_actions", "user": {"id": ALICE}, "actions": []}), True, 400),
        (form_body({"type": "block_actions", "user": {"id": ALICE}, "actions": "x"}), True, 400),
        (json.dumps({"type": "event_callback", "event": "app_home_opened"}), True, 400),
        (
            form_body(
                {
                    "type": "view_submission",
                    "user": {"id": ALICE},
                    "view": {"callback_id": ids.EXEMPT_VIEW, "private_metadata": "{}"},
                }
            ),
            True,
            400,
        ),
        (json.dumps({"type": "event_callback", "event": {"type": "reaction_added"}}), True, 200),
        (form_body({"type": "shortcut", "user": {"id": ALICE}}), True, 200),
    ],
)
def test_malformed_or_foreign_bodies_get_a_clear_status_not_500(
    endpoint, standin, org, caplog, body, signed, expected
):
    caplog.set_level(logging.INFO)
    kind = "application/json" if str(body).startswith("{") else "application/x-www-form-urlencoded"

    status, _ = post(endpoint, body, content_type=kind, signature=None if signed else UNSIGNED)

    assert status == expected
    assert nothing_sent(standin)
    assert decisions(org) == []
    assert "ERROR" not in {r.levelname for r in caplog.records}


@pytest.mark.parametrize("value", [" 1 ", "1_0", "١", "9" * 30, "0", "-1", ""])
def test_a_button_value_that_is_not_a_row_id_is_politely_refused(
    realdata,
    endpoint,
    standin,
    org,
    posted,  # noqa: F811 - the fixture, imported above
    caplog,
    value,
):
    _, ts = posted
    caplog.set_level(logging.INFO)

    for action in (ids.APPROVE, ids.APPROVE_ALL, ids.EXEMPT, ids.REVOKE):
        status, _ = post(endpoint, click(realdata, standin, ALICE, value, ts, action))
        assert status == 200

    wait_for(lambda: len(standin.calls["response_url"]) + standin.count("chat.postEphemeral") >= 4)
    shown = [m.text for m in standin.messages(PAYMENTS) if m.visible_to == ALICE]
    assert shown and set(shown) == {text.button_invalid()}
    assert decisions(org) == [] and standin.views == []
    assert "ERROR" not in {r.levelname for r in caplog.records}


def test_an_oversized_body_is_refused_before_it_is_read():
    import http.client

    from bot.web import MAX_BODY_BYTES, serve_in_thread

    def app(environ, start_response):  # never reached for an oversized body
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"read"]

    server = serve_in_thread(app)
    try:
        host, port = server.url.removeprefix("http://").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=5)
        conn.putrequest("POST", "/slack/events")
        conn.putheader("Content-Length", str(MAX_BODY_BYTES + 1))
        conn.endheaders()
        assert conn.getresponse().status == 413
    finally:
        server.stop()
