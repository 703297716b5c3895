"""Escalation: findings waiting too long, or champions who left, reach the configured channel."""

from __future__ import annotations

from datetime import timedelta

import pytest

from bot.digest import deliver_digest
from bot.errors import ConfigError
from bot.escalation import escalate
from bot.scheduler import run_due
from bot.settings import Settings
from bot.teams import parse_teams
from tests.slack.conftest import ALICE, BOB, CAROL, NOW, TEAMS_YAML

ESCALATE = "C0ESCALATE"


@pytest.fixture
def escalating(settings: Settings, tmp_path) -> Settings:
    """Settings whose teams file escalates to ESCALATE after 14 days."""
    teams = tmp_path / "escalating.yaml"
    teams.write_text(TEAMS_YAML + f"escalation:\n  channel: {ESCALATE}\n  after_days: 14\n")
    return settings.model_copy(update={"teams_file": teams})


def test_the_teams_file_validates_the_escalation_section():
    config = parse_teams(
        TEAMS_YAML + "escalation: {channel: C0ESC, after_days: 3}", "t.yaml", "yaml"
    )
    assert (config.escalation.channel, config.escalation.after_days) == ("C0ESC", 3)
    with pytest.raises(ConfigError, match=r"t.yaml: escalation.channel: 'general' is not"):
        parse_teams(TEAMS_YAML + "escalation: {channel: general}", "t.yaml", "yaml")
    with pytest.raises(ConfigError, match="escalation.after_days"):
        parse_teams(TEAMS_YAML + "escalation: {channel: C0ESC, after_days: 0}", "t.yaml", "yaml")


def test_findings_waiting_too_long_and_departed_champions_are_escalated_once(
    escalating, org, standin, client
):
    for user in (ALICE, CAROL):
        standin.add_user(user, user.lower())
    standin.add_user(BOB, "bob", deleted=True)
    deliver_digest(escalating, org, "payments", "2026-W49", client, now=NOW)

    early = escalate(escalating, org, client, "2026-12-10", now=NOW + timedelta(days=6))
    assert early == "posted"  # only Bob's departure so far
    shown = standin.transcript(ESCALATE)
    assert "`U0BOB` no longer in the workspace; 1 champion(s) remain" in shown
    assert "waiting longer" not in shown

    later = NOW + timedelta(days=15)
    assert escalate(escalating, org, client, "2026-12-19", now=later) == "posted"
    assert escalate(escalating, org, client, "2026-12-19", now=later) == "already"
    shown = standin.transcript(ESCALATE)
    assert "*payments* (<#C0PAY>): 2 finding(s) waiting longer than 14 days" in shown
    assert "search" not in shown  # its digest was never posted, so nothing waits
    assert len(standin.messages(ESCALATE)) == 2


def test_an_unresolvable_champion_is_escalated_but_an_outage_is_not(
    escalating, org, standin, client
):
    standin.add_user(ALICE, "alice")
    standin.add_user(CAROL, "carol")
    standin.fail("users.info", times=1, error="ratelimited")  # Alice: an outage, not a departure

    assert escalate(escalating, org, client, "2026-12-05", now=NOW) == "posted"

    shown = standin.transcript(ESCALATE)
    assert "`U0BOB`" in shown and "`U0ALICE`" not in shown  # Bob: user_not_found


def test_the_scheduler_runs_escalation_daily_when_configured(escalating, org, standin, client):
    calls = []
    ran = run_due(
        escalating,
        org,
        NOW.replace(hour=13),
        deliver_digest=lambda *a, **k: None,
        post_leaderboard=lambda *a: None,
        run_scan=lambda *a: None,
        escalate=lambda *a: calls.append(a[-1]) or "nothing",
        only=("escalation",),
    )
    again = run_due(
        escalating,
        org,
        NOW.replace(hour=14),
        deliver_digest=lambda *a, **k: None,
        post_leaderboard=lambda *a: None,
        run_scan=lambda *a: None,
        escalate=lambda *a: calls.append(a[-1]) or "nothing",
        only=("escalation",),
    )

    assert [(r.job, r.status) for r in ran] == [("escalation", "done")] and again == []
    assert calls == [NOW.date().isoformat()]
