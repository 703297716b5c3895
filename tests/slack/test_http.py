"""The HTTP endpoint: signatures, malformed bodies, health, and lifecycle events."""

from __future__ import annotations

import json
import logging
import time
import urllib.request
from pathlib import Path

from bot.standin import sign
from tests.slack.conftest import SECRET, payload_file, post

VECTOR = "python-slack-sdk-tests/signature_test_vector.json"


def _vector(realdata: Path) -> dict:
    return json.loads((realdata / "slack_payloads" / VECTOR).read_text(encoding="utf-8"))


def test_signing_matches_slacks_documented_vector(realdata):
    vector = _vector(realdata)
    headers = sign(vector["signing_secret"], vector["body"], int(vector["timestamp"]))
    assert headers["X-Slack-Signature"] == vector["valid_signature"]


def test_stale_request_with_a_once_valid_signature_gets_401(realdata, endpoint, standin, caplog):
    vector = _vector(realdata)
    assert vector["signing_secret"] == SECRET
    caplog.set_level(logging.WARNING, logger="bot.web")

    status, _ = post(
        endpoint,
        vector["body"],
        timestamp=int(vector["timestamp"]),
        signature=vector["valid_signature"],
    )

    assert status == 401
    assert "stale signature" in caplog.text
    assert standin.count("response_url") == 0


def test_forged_signature_gets_401(realdata, endpoint, caplog):
    caplog.set_level(logging.WARNING, logger="bot.web")
    body = _vector(realdata)["body"]
    forged = sign("not-the-secret", body)["X-Slack-Signature"]

    status, _ = post(endpoint, body, signature=forged)

    assert status == 401
    assert "forged or wrong signature" in caplog.text
    assert body not in caplog.text  # ids only, never the payload


def test_malformed_payload_gets_400_not_500(endpoint):
    status, _ = post(endpoint, "payload=%7Bnot-json")
    assert status == 400


def test_malformed_and_unsigned_payload_gets_401(endpoint):
    status, _ = post(endpoint, "payload=%7Bnot-json", signature="v0=" + "0" * 64)
    assert status == 401


def test_health_endpoint_answers(endpoint):
    health = endpoint.replace("/slack/events", "/healthz")
    with urllib.request.urlopen(health, timeout=5) as response:
        assert response.status == 200 and json.loads(response.read()) == {"ok": True}


def test_lifecycle_events_are_acknowledged_and_logged(realdata, endpoint, caplog):
    caplog.set_level(logging.ERROR, logger="handlers.events")
    for name in (
        "scenario_tests__test_events__app_uninstalled_body__L299.json",
        "scenario_tests__test_events__tokens_revoked_body__L315.json",
    ):
        event = payload_file(realdata, name)
        event["event_time"] = int(time.time())
        status, _ = post(endpoint, json.dumps(event), content_type="application/json")
        assert status == 200

    deadline = time.monotonic() + 5
    while "revoked" not in caplog.text and time.monotonic() < deadline:
        time.sleep(0.02)
    assert "uninstalled Pare" in caplog.text and "revoked Pare's tokens" in caplog.text
    assert "verification_token" not in caplog.text
