"""Delivery you can rely on: one post per digest across processes, failures retried, no doubles."""

from __future__ import annotations

import json
import logging
import threading
import urllib.error
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from slack_sdk import WebClient
from sqlalchemy import select

from bot.digest import POST_CLAIM, deliver_digest
from bot.scheduler import run_due
from bot.slack import install
from models import Digest, SlackInstall
from tests.slack.conftest import NOW, PAYMENTS, SEARCH, add_principal, payload_file, post, wait_for


def test_two_processes_delivering_at_the_same_instant_post_once(settings, org, standin, client):
    add_principal(org, "payments", "wide-role", [{"service": f"s{i}"} for i in range(20)])
    start = threading.Barrier(4)

    def deliver(_: int) -> str:
        start.wait()
        return deliver_digest(settings, org, "payments", "2026-W49", client, now=NOW).status

    with ThreadPoolExecutor(4) as pool:
        statuses = sorted(pool.map(deliver, range(4)))

    assert statuses.count("posted") == 1
    assert set(statuses) <= {"posted", "busy", "already"}
    [first] = standin.messages(PAYMENTS)
    assert len(first.replies) == 1
    assert standin.count("chat.postMessage") == 2


def test_a_claim_left_by_a_killed_process_lapses_and_the_post_is_found_not_doubled(
    settings, org, standin, client
):
    class KilledAfterPost(WebClient):
        def chat_postMessage(self, **kwargs):  # type: ignore[no-untyped-def]
            super().chat_postMessage(**kwargs)
            raise SystemExit("killed")

    killed = KilledAfterPost(token=standin.token, base_url=standin.url)
    try:
        deliver_digest(settings, org, "payments", "2026-W49", killed, now=NOW)
    except SystemExit:
        pass

    early = deliver_digest(settings, org, "payments", "2026-W49", client, now=NOW)
    late = deliver_digest(settings, org, "payments", "2026-W49", client, now=NOW + POST_CLAIM)

    assert (early.status, late.status) == ("busy", "posted")
    assert standin.count("chat.postMessage") == 1


def test_a_5xx_after_slack_posted_is_retried_without_doubling(settings, org, standin, client):
    standin.fail("chat.postMessage", times=1, status=500, error="internal_error", after=True)

    outcome = deliver_digest(settings, org, "payments", "2026-W49", client, now=NOW)

    assert outcome.status == "posted"
    assert len(standin.messages(PAYMENTS)) == 1
    assert standin.count("conversations.history") == 1


def test_a_5xx_before_slack_posted_is_retried_with_backoff(settings, org, standin, client):
    standin.fail("chat.postMessage", times=2, status=503, error="service_unavailable")

    outcome = deliver_digest(settings, org, "payments", "2026-W49", client, now=NOW)

    assert outcome.status == "posted"
    assert standin.count("chat.postMessage") == 3 and len(standin.messages(PAYMENTS)) == 1


def test_a_dropped_connection_after_posting_never_doubles(settings, org, standin, client):
    class DroppedAnswer(WebClient):
        dropped = 0

        def chat_postMessage(self, **kwargs):  # type: ignore[no-untyped-def]
            response = super().chat_postMessage(**kwargs)
            if not DroppedAnswer.dropped:
                DroppedAnswer.dropped += 1
                raise urllib.error.URLError(ConnectionResetError("connection reset"))
            return response

    flaky = DroppedAnswer(token=standin.token, base_url=standin.url)
    outcome = deliver_digest(settings, org, "payments", "2026-W49", flaky, now=NOW)

    assert outcome.status == "posted"
    assert standin.count("chat.postMessage") == 1 and len(standin.messages(PAYMENTS)) == 1


def test_operator_errors_are_logged_clearly_and_retried_later(
    settings, org, standin, client, caplog
):
    caplog.set_level(logging.WARNING)
    for number, error in enumerate(
        ["channel_not_found", "not_in_channel", "invalid_auth", "account_inactive"]
    ):
        standin.fail("chat.postMessage", times=1, error=error)
        failed = deliver_digest(settings, org, "payments", f"p{number}", client, now=NOW)
        assert (failed.status, failed.error) == ("failed", error)
        assert f"error={error}:" in caplog.text and "retried later" in caplog.text
        retried = deliver_digest(settings, org, "payments", f"p{number}", client, now=NOW)
        assert retried.status == "posted"
    assert "invite the Pare app" in caplog.text
    assert len(standin.messages(PAYMENTS)) == 4


def test_uninstall_pauses_posting_until_a_working_token_shows_a_reinstall(
    realdata, endpoint, settings, org, standin, client
):
    body = payload_file(realdata, "scenario_tests__test_events__app_uninstalled_body__L299.json")
    assert post(endpoint, json.dumps(body), content_type="application/json")[0] == 200
    wait_for(lambda: _states(org) == {body["team_id"]: install.UNINSTALLED})

    standin.fail("auth.test", times=1, error="account_inactive")
    paused = deliver_digest(settings, org, "payments", "2026-W49", client, now=NOW)
    assert (paused.status, paused.error) == ("failed", install.UNINSTALLED)
    assert standin.count("chat.postMessage") == 0

    resumed = deliver_digest(settings, org, "payments", "2026-W49", client, now=NOW)
    assert resumed.status == "posted" and _states(org) == {body["team_id"]: install.ACTIVE}


def test_revoked_tokens_pause_posting_too(realdata, endpoint, org):
    body = payload_file(realdata, "scenario_tests__test_events__tokens_revoked_body__L315.json")
    post(endpoint, json.dumps(body), content_type="application/json")
    wait_for(lambda: _states(org) == {body["team_id"]: install.TOKENS_REVOKED})


def _states(db) -> dict[str, str]:
    with db.session() as session:
        return {r.workspace: r.state for r in session.scalars(select(SlackInstall))}


def test_many_teams_in_one_tick_are_delivered_concurrently_within_a_bound(
    settings, org, standin, client
):
    running = 0
    peak = 0
    lock = threading.Lock()
    gate = threading.Barrier(2, timeout=5)

    def deliver(*args, **kwargs):  # type: ignore[no-untyped-def]
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        try:
            gate.wait()  # both teams are in flight at once, or this times out
            return deliver_digest(*args, **kwargs)
        finally:
            with lock:
                running -= 1

    with org.session() as session:
        for digest in session.scalars(select(Digest)):
            session.delete(digest)
    monday = NOW.replace(day=7, hour=10)
    ran = run_due(
        settings,
        org,
        monday,
        deliver_digest=deliver,
        post_leaderboard=lambda *a: "posted",
        run_scan=lambda *a: None,
        client=client,
        only=("digest",),
        workers=2,
    )

    assert sorted((r.key.split(":")[0], r.status) for r in ran) == [
        ("payments", "done"),
        ("search", "done"),
    ]
    assert peak == 2
    assert len(standin.messages(PAYMENTS)) == 1 and len(standin.messages(SEARCH)) == 1


def test_a_posted_digest_frees_its_claim_and_freezes_its_head(settings, org, standin, client):
    first = deliver_digest(settings, org, "payments", "2026-W49", client, now=NOW)
    assert first.status == "posted"
    with org.session() as session:
        digest = session.scalars(select(Digest)).one()
        assert digest.claimed_until is None and digest.summary["principals"] == 1
    assert timedelta(minutes=1) < POST_CLAIM
