"""Decisions through Bolt's real dispatch: champions, refusals, exactly one per round, defer."""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from bot.digest import deliver_digest, open_findings
from bot.slack import ids
from bot.standin import form_body
from models import Decision, DigestItem, Finding, Team
from tests.slack.conftest import (
    ADMIN,
    ALICE,
    BOB,
    MALLORY,
    PAYMENTS,
    payload_file,
    post,
    submit,
    wait_for,
)

# A real block_actions body from bolt-python's tests, adapted to a Pare digest row.
SOURCE = "scenario_tests__test_block_actions__body__L161.json"


@pytest.fixture
def posted(settings, org, standin, client):
    """The payments digest, posted; returns its first item id and message ts."""
    deliver_digest(settings, org, "payments", "2026-W49", client, now=datetime.now(UTC))
    with org.session() as session:
        items = session.scalars(select(DigestItem).order_by(DigestItem.id)).all()
    [message] = standin.messages(PAYMENTS)
    return [str(i.id) for i in items], message.ts


def click(realdata, standin, user: str, item: str, ts: str, action: str = ids.APPROVE) -> str:
    """Return a form body for a click on a digest row, adapted from a real payload."""
    body = payload_file(realdata, SOURCE)
    body["user"].update(id=user, username=user.lower(), name=user.lower())
    body["container"].update(message_ts=ts, channel_id=PAYMENTS, is_ephemeral=False)
    body["channel"] = {"id": PAYMENTS, "name": "payments"}
    body["response_url"] = standin.response_url(PAYMENTS, user, ts)
    body["actions"][0].update(action_id=action, block_id=ids.actions_block(item), value=item)
    return form_body(body)


def decisions(db) -> list[Decision]:
    with db.session() as session:
        return session.scalars(select(Decision)).all()


def row_buttons(message, item: str) -> bool:
    return any(b.get("block_id") == ids.actions_block(item) for b in message.blocks)


def test_champion_approve_records_one_decision_and_drops_that_rows_buttons(
    realdata, endpoint, org, standin, posted
):
    items, ts = posted

    status, _ = post(endpoint, click(realdata, standin, ALICE, items[0], ts))

    assert status == 200
    wait_for(lambda: standin.count("chat.update") == 1)
    [decision] = decisions(org)
    assert (decision.kind, decision.decided_by, decision.round) == ("approve", ALICE, 1)
    assert decision.frozen["actions"] == ["s3:DeleteBucket", "s3:PutBucketPolicy"]
    message = standin.messages(PAYMENTS)[0]
    assert not row_buttons(message, items[0]) and row_buttons(message, items[1])
    assert f"Approved by @{ALICE}" in standin.transcript(PAYMENTS)


def test_double_click_and_redelivery_give_one_decision_and_tell_who_decided(
    realdata, endpoint, org, standin, posted
):
    items, ts = posted
    body = click(realdata, standin, ALICE, items[0], ts)

    post(endpoint, body)
    post(endpoint, body)
    post(endpoint, body, retry_num=1)

    wait_for(lambda: standin.count("chat.postEphemeral") == 2)
    assert len(decisions(org)) == 1
    assert standin.count("chat.update") == 1
    told = [c["text"] for c in standin.calls["chat.postEphemeral"]]
    assert all(f"<@{ALICE}> already approved" in t for t in told)


def test_two_champions_at_once_the_later_is_told(realdata, endpoint, org, standin, posted):
    items, ts = posted

    post(endpoint, click(realdata, standin, ALICE, items[1], ts))
    wait_for(lambda: decisions(org))
    post(endpoint, click(realdata, standin, BOB, items[1], ts, ids.DEFER))

    wait_for(lambda: standin.count("chat.postEphemeral") == 1)
    [decision] = decisions(org)
    assert decision.decided_by == ALICE
    [told] = standin.calls["chat.postEphemeral"]
    assert told["user"] == BOB and f"<@{ALICE}> already approved" in told["text"]


def test_non_champion_is_refused_politely_and_nothing_changes(
    realdata, endpoint, org, standin, posted
):
    items, ts = posted

    status, _ = post(endpoint, click(realdata, standin, MALLORY, items[0], ts))

    assert status == 200
    wait_for(lambda: standin.count("chat.postEphemeral") == 1)
    [refusal] = standin.calls["chat.postEphemeral"]
    assert refusal["user"] == MALLORY
    assert f"<@{ALICE}>" in refusal["text"] and f"<@{BOB}>" in refusal["text"]
    assert "Nothing was changed" in refusal["text"]
    assert decisions(org) == [] and standin.count("chat.update") == 0
    assert row_buttons(standin.messages(PAYMENTS)[0], items[0])


def test_configured_admin_may_decide(realdata, endpoint, org, standin, posted):
    items, ts = posted
    post(endpoint, click(realdata, standin, ADMIN, items[0], ts))
    wait_for(lambda: standin.count("chat.update") == 1)
    assert [d.decided_by for d in decisions(org)] == [ADMIN]


def test_stale_button_value_gets_a_polite_answer(realdata, endpoint, org, standin, posted):
    _, ts = posted
    post(endpoint, click(realdata, standin, ALICE, "999999", ts))
    wait_for(lambda: standin.count("chat.postEphemeral") == 1)
    assert "no digest row" in standin.calls["chat.postEphemeral"][0]["text"]


def test_defer_hides_the_finding_until_it_expires(
    realdata, endpoint, settings, org, standin, client, posted
):
    items, ts = posted

    post(endpoint, click(realdata, standin, BOB, items[0], ts, ids.DEFER))
    [view] = wait_for(lambda: standin.views)
    assert decisions(org) == []  # the modal asks first
    submit(endpoint, BOB, view, "payments migration in flight", days=14)
    wait_for(lambda: standin.count("chat.update") == 1)

    [decision] = decisions(org)
    assert (decision.kind, decision.reason) == ("defer", "payments migration in flight")
    assert decision.defer_until - decision.decided_at == timedelta(days=14)
    assert "Deferred by @U0BOB" in standin.transcript(PAYMENTS)
    with org.session() as session:
        team_id = session.scalar(select(Team.id).where(Team.name == "payments"))
        assert len(open_findings(session, team_id, decision.decided_at + timedelta(days=1))) == 1

    later = decision.defer_until + timedelta(hours=1)
    outcome = deliver_digest(settings, org, "payments", "2027-W02", client, now=later)

    assert outcome.offered == 2
    with org.session() as session:
        assert session.get_one(Finding, decision.finding_id).round == 2
    shown_again = [i for i in _items(org) if i.finding_id == decision.finding_id]
    assert [i.round for i in shown_again] == [1, 2]
    new_ts = standin.messages(PAYMENTS)[-1].ts
    item = str(shown_again[-1].id)
    post(endpoint, click(realdata, standin, ALICE, item, new_ts))
    wait_for(lambda: standin.count("chat.update") == 2)
    assert [(d.kind, d.round) for d in decisions(org)] == [("defer", 1), ("approve", 2)]


def _items(db) -> list[DigestItem]:
    with db.session() as session:
        return session.scalars(select(DigestItem).order_by(DigestItem.id)).all()


def test_ack_comes_before_the_slow_work(realdata, endpoint, standin, posted):
    items, ts = posted
    standin.rate_limit("chat.update", times=1, retry_after=2)
    started = datetime.now(UTC)

    status, _ = post(endpoint, click(realdata, standin, ALICE, items[0], ts))

    assert status == 200
    assert (datetime.now(UTC) - started).total_seconds() < 1.5
    wait_for(lambda: standin.count("chat.update") == 2, timeout=6)


def test_simultaneous_clicks_from_two_champions_give_one_decision(
    realdata, endpoint, org, standin, posted
):
    items, ts = posted
    bodies = [
        click(realdata, standin, ALICE, items[0], ts),
        click(realdata, standin, BOB, items[0], ts),
    ]
    start = threading.Barrier(len(bodies))

    def send(body: str) -> int:
        start.wait()
        return post(endpoint, body)[0]

    with ThreadPoolExecutor(len(bodies)) as pool:
        assert list(pool.map(send, bodies)) == [200, 200]

    wait_for(lambda: standin.count("chat.update") == 1 and standin.count("chat.postEphemeral"))
    [decision] = decisions(org)
    [told] = standin.calls["chat.postEphemeral"]
    assert told["user"] != decision.decided_by
    assert f"<@{decision.decided_by}> already" in told["text"]


def test_unexpected_error_gives_a_reference_that_is_also_logged(
    realdata, endpoint, standin, posted, monkeypatch, caplog
):
    items, ts = posted

    def broken(*args, **kwargs):
        raise RuntimeError("database on fire")

    monkeypatch.setattr("handlers.actions.decide", broken)
    caplog.set_level(logging.ERROR, logger="bot.slack.app")

    post(endpoint, click(realdata, standin, ALICE, items[0], ts))

    wait_for(lambda: standin.count("chat.postEphemeral") == 1)
    told = standin.calls["chat.postEphemeral"][0]["text"]
    reference = told.split("`")[1]
    assert "Nothing was changed" in told and "database on fire" not in told
    assert f"ref={reference}" in caplog.text
