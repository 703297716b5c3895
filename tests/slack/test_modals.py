"""Defer and Exempt modals, approve-all, revocation in the App Home, ephemeral rows, Socket Mode."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs

from slack_bolt.adapter.socket_mode.internals import run_bolt_app
from slack_sdk.socket_mode.request import SocketModeRequest
from sqlalchemy import select

from bot.digest import deliver_digest
from bot.slack import ids
from bot.slack.app import build_app
from bot.standin import form_body
from models import DigestItem, Revocation
from tests.slack.conftest import ALICE, BOB, MALLORY, PAYMENTS, post, submit, wait_for
from tests.slack.test_decisions import click, decisions, row_buttons

ENVELOPES = "slack_payloads/python-slack-sdk-tests/socket_mode_envelopes.jsonl"


def payload_of(form: str) -> dict:
    """Return the JSON payload inside a form-encoded interactive request."""
    return json.loads(parse_qs(form)["payload"][0])


def deliver(settings, org, client, period: str = "2026-W49", now=None):
    return deliver_digest(settings, org, "payments", period, client, now=now or datetime.now(UTC))


def posted_items(settings, org, standin, client) -> tuple[list[str], str]:
    deliver(settings, org, client)
    with org.session() as session:
        items = [str(i.id) for i in session.scalars(select(DigestItem).order_by(DigestItem.id))]
    return items, standin.messages(PAYMENTS)[-1].ts


def open_modal(realdata, endpoint, standin, user, item, ts, action) -> dict:
    before = len(standin.views)
    post(endpoint, click(realdata, standin, user, item, ts, action))
    wait_for(lambda: len(standin.views) > before)
    return standin.views[-1]


def test_exempt_needs_a_reason_and_stays_until_revoked_in_the_app_home(
    realdata, endpoint, settings, org, standin, client
):
    items, ts = posted_items(settings, org, standin, client)
    view = open_modal(realdata, endpoint, standin, ALICE, items[0], ts, ids.EXEMPT)
    assert view["callback_id"] == ids.EXEMPT_VIEW and "billing-worker" in json.dumps(view)

    status, body = submit(endpoint, ALICE, view, reason="  ")
    assert status == 200 and json.loads(body)["response_action"] == "errors"
    assert decisions(org) == []

    submit(endpoint, ALICE, view, reason="Break-glass <!channel> path, audited yearly")
    wait_for(lambda: standin.count("chat.update") == 1)
    [exempt] = decisions(org)
    assert (exempt.kind, exempt.defer_until) == ("exempt", None)
    shown = standin.transcript(PAYMENTS)
    assert "Exempted by @U0ALICE" in shown and "<!channel> path" in shown
    assert not row_buttons(standin.messages(PAYMENTS)[0], items[0])

    # A year later it is still not offered: an exemption has no expiry.
    later = datetime.now(UTC) + timedelta(days=400)
    assert deliver(settings, org, client, "2027-W50", later).offered == 1

    # The App Home lists it with a Revoke button; revoking brings it back next time.
    home = {"type": "app_home_opened", "user": ALICE, "tab": "home", "channel": "D0ALICE"}
    post(endpoint, json.dumps(event_body(home)), content_type="application/json")
    view = wait_for(lambda: standin.homes.get(ALICE))
    assert "*payments* (<#C0PAY>)" in json.dumps(view) and "audited yearly" in json.dumps(view)
    revoke = next(b["accessory"] for b in view["blocks"] if b.get("accessory"))
    assert revoke["value"] == str(exempt.id)
    post(endpoint, form_body(home_click(MALLORY, revoke)))
    refusal = wait_for(lambda: standin.messages(MALLORY))
    assert "Only payments's champions" in refusal[0].text
    post(endpoint, form_body(home_click(ALICE, revoke)))
    wait_for(lambda: standin.count("views.publish") == 2)
    with org.session() as session:
        [revocation] = session.scalars(select(Revocation)).all()
        assert revocation.revoked_by == ALICE
    assert "No standing exemptions" in json.dumps(standin.homes[ALICE])
    assert "exemption since revoked" in standin.transcript(PAYMENTS)
    assert deliver(settings, org, client, "2027-W51", later).offered == 2


def event_body(event: dict) -> dict:
    return {
        "token": "unused",
        "team_id": "T0STANDIN",
        "api_app_id": "A0PARE",
        "event": event,
        "type": "event_callback",
        "event_id": "Ev0HOME",
        "event_time": 1700000000,
    }


def home_click(user: str, button: dict) -> dict:
    return {
        "type": "block_actions",
        "user": {"id": user, "username": user.lower(), "team_id": "T0STANDIN"},
        "api_app_id": "A0PARE",
        "token": "unused",
        "container": {"type": "view", "view_id": "V0HOME"},
        "trigger_id": "1.2.3",
        "team": {"id": "T0STANDIN", "domain": "standin"},
        "view": {"id": "V0HOME", "type": "home", "private_metadata": ""},
        "actions": [{**button, "block_id": "x", "action_ts": "1.2"}],
    }


def test_non_champion_gets_no_modal_and_is_refused(
    realdata, endpoint, settings, org, standin, client
):
    items, ts = posted_items(settings, org, standin, client)

    post(endpoint, click(realdata, standin, MALLORY, items[0], ts, ids.EXEMPT))

    wait_for(lambda: standin.count("chat.postEphemeral") == 1)
    assert standin.views == [] and decisions(org) == []
    assert "<@U0ALICE>" in standin.calls["chat.postEphemeral"][0]["text"]


def test_approve_all_decides_each_row_of_the_principal_once(
    realdata, endpoint, settings, org, standin, client
):
    items, ts = posted_items(settings, org, standin, client)
    message = standin.messages(PAYMENTS)[0]
    [button] = [b["accessory"] for b in message.blocks if b.get("accessory")]
    assert button["action_id"] == ids.APPROVE_ALL and button["text"]["text"] == "Approve all 2"

    body = click(realdata, standin, ALICE, button["value"], ts, ids.APPROVE_ALL)
    post(endpoint, body)
    wait_for(lambda: standin.count("chat.update") == 1)
    post(endpoint, body, retry_num=1)
    wait_for(lambda: standin.count("chat.postEphemeral") == 1)

    assert sorted((d.kind, d.decided_by) for d in decisions(org)) == [("approve", ALICE)] * 2
    message = standin.messages(PAYMENTS)[0]
    assert not any(b.get("accessory") for b in message.blocks)
    assert not any(row_buttons(message, i) for i in items)
    assert "Nothing left to approve" in standin.calls["chat.postEphemeral"][0]["text"]


def test_a_click_in_an_ephemeral_message_replaces_it_through_its_response_url(
    realdata, endpoint, settings, org, standin, client
):
    items, ts = posted_items(settings, org, standin, client)
    ephemeral = standin._add_ephemeral(PAYMENTS, ALICE, {"text": "rows", "blocks": []})
    body = payload_of(click(realdata, standin, ALICE, items[0], ts))
    body["container"].update(is_ephemeral=True, message_ts=ephemeral.ts)
    body["response_url"] = standin.response_url(PAYMENTS, ALICE, ephemeral.ts)

    post(endpoint, form_body(body))

    wait_for(lambda: standin.count("response_url") == 1 and standin.count("chat.update") == 1)
    [replaced] = standin.calls["response_url"]
    assert replaced["replace_original"] is True
    assert "Approved by" in json.dumps(replaced["blocks"]) and "actions" not in json.dumps(
        [b["type"] for b in replaced["blocks"]]
    )
    assert ephemeral.edits == 1


def test_two_champions_submitting_modals_at_once_give_one_decision(
    realdata, endpoint, settings, org, standin, client
):
    items, ts = posted_items(settings, org, standin, client)
    defer = open_modal(realdata, endpoint, standin, ALICE, items[1], ts, ids.DEFER)
    exempt = open_modal(realdata, endpoint, standin, BOB, items[1], ts, ids.EXEMPT)
    start = threading.Barrier(2)

    def send(args) -> int:
        user, view, reason, days = args
        start.wait()
        return submit(endpoint, user, view, reason, days)[0]

    jobs = [(ALICE, defer, "next quarter", 30), (BOB, exempt, "break-glass", None)]
    with ThreadPoolExecutor(2) as pool:
        assert list(pool.map(send, jobs)) == [200, 200]

    wait_for(lambda: standin.count("chat.update") == 1 and standin.count("chat.postEphemeral"))
    [decision] = decisions(org)
    [told] = standin.calls["chat.postEphemeral"]
    assert told["user"] != decision.decided_by and told["channel"] == PAYMENTS
    verb = {"defer": "deferred", "exempt": "exempted"}[decision.kind]
    assert f"<@{decision.decided_by}> already {verb}" in told["text"]


def test_a_modal_submitted_after_someone_else_decided_is_told_who(
    realdata, endpoint, settings, org, standin, client
):
    items, ts = posted_items(settings, org, standin, client)
    view = open_modal(realdata, endpoint, standin, BOB, items[0], ts, ids.DEFER)
    post(endpoint, click(realdata, standin, ALICE, items[0], ts))
    wait_for(lambda: decisions(org))

    submit(endpoint, BOB, view, "", 7)

    wait_for(lambda: standin.count("chat.postEphemeral") == 1)
    assert "<@U0ALICE> already approved" in standin.calls["chat.postEphemeral"][0]["text"]
    assert [d.kind for d in decisions(org)] == ["approve"]


def test_socket_mode_redelivery_with_retry_attempt_records_one_decision(
    realdata, settings, org, standin, client
):
    items, ts = posted_items(settings, org, standin, client)
    app = build_app(settings, org, process_before_response=True)
    lines = (realdata / ENVELOPES).read_text(encoding="utf-8").splitlines()
    envelopes = [json.loads(line) for line in lines if line.strip()]
    retried = next(e for e in envelopes if "retry_attempt" in e)
    clicked = next(e for e in envelopes if e["payload"].get("type") == "block_actions")
    payload = payload_of(click(realdata, standin, ALICE, items[0], ts))

    for attempt in (0, 1):
        envelope = {
            **clicked,
            "payload": payload,
            "retry_attempt": attempt,
            "retry_reason": retried["retry_reason"] or "timeout",
        }
        response = run_bolt_app(app, SocketModeRequest.from_dict(envelope))
        assert response.status == 200

    assert len(decisions(org)) == 1
    assert standin.count("chat.update") == 1
    assert "already approved" in standin.calls["chat.postEphemeral"][0]["text"]


def test_socket_mode_home_event_envelope_publishes_the_home(realdata, settings, org, standin):
    app = build_app(settings, org, process_before_response=True)
    lines = (realdata / ENVELOPES).read_text(encoding="utf-8").splitlines()
    retried = next(json.loads(x) for x in lines if x.strip() and "retry_attempt" in x)
    home = {"type": "app_home_opened", "user": ALICE, "tab": "home", "channel": "D0ALICE"}
    envelope = {**retried, "payload": {**retried["payload"], "event": home}, "retry_attempt": 2}

    run_bolt_app(app, SocketModeRequest.from_dict(envelope))

    assert "2 open finding(s)" in json.dumps(standin.homes[ALICE])


def test_approve_all_decides_only_the_rows_its_message_shows(settings, org, standin, client):
    from bot.decisions import decide_all
    from models import DigestMessage

    items, _ = posted_items(settings, org, standin, client)
    # The same principal continued in a thread reply, as a long digest pages it.
    with org.session() as session:
        first = session.get_one(DigestItem, int(items[0]))
        reply = DigestMessage(digest_id=first.message.digest_id, part=2, channel=PAYMENTS)
        session.add(reply)
        session.flush()
        later = session.get_one(DigestItem, int(items[1]))
        later.message_id = reply.id
        first_finding = first.finding_id

    bulk = decide_all(org, items[0], ALICE)

    # The button in the first message said "Approve all 1" for what it showed: one row.
    assert [r.finding_id for r in bulk.made] == [first_finding]
    assert sorted(d.kind for d in decisions(org)) == ["approve"]
