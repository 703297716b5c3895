"""Escalation: teams whose findings wait too long, or whose champions left, go to one channel."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from sqlalchemy import func, select

from bot.db import Database
from bot.settings import Settings
from bot.slack import blocks, ids, text
from bot.slack.client import error_code
from bot.slack.escape import escape
from bot.slack.posting import post_once
from models import Decision, DigestItem, DigestMessage, Finding, Principal, Team

log = logging.getLogger(__name__)

# Distinct from the scheduler's own job names, so its run records and ours never collide.
JOB = "escalation_post"
GONE_ERRORS = ("user_not_found", "users_not_found")


@dataclass(frozen=True)
class Concern:
    """Why one team is escalated."""

    team: str
    channel: str
    waiting: int = 0
    gone: tuple[str, ...] = ()
    champions_left: int = 0


def waiting_findings(db: Database, team_id: int, since: datetime) -> int:
    """Count open findings first shown (this round) before `since` and still undecided."""
    with db.sessions() as session:
        first_shown = (
            select(
                DigestItem.finding_id,
                DigestItem.round,
                func.min(DigestMessage.posted_at).label("shown_at"),
            )
            .join(DigestMessage, DigestItem.message_id == DigestMessage.id)
            .where(DigestMessage.posted_at.is_not(None))
            .group_by(DigestItem.finding_id, DigestItem.round)
            .subquery()
        )
        decided = select(Decision.id).where(
            Decision.finding_id == Finding.id, Decision.round == Finding.round
        )
        count = session.scalar(
            select(func.count(Finding.id))
            .join(Principal, Finding.principal_id == Principal.id)
            .join(
                first_shown,
                (first_shown.c.finding_id == Finding.id) & (first_shown.c.round == Finding.round),
            )
            .where(
                Principal.team_id == team_id,
                Finding.status == "unused",
                Finding.closed_at.is_(None),
                first_shown.c.shown_at <= since,
                ~decided.exists(),
            )
        )
    return int(count or 0)


def gone_champions(client: WebClient, champions: list[str]) -> list[str]:
    """Return the champions Slack no longer knows (deleted, or not found)."""
    gone = []
    for user in champions:
        try:
            found = client.users_info(user=user).get("user") or {}
        except SlackApiError as exc:
            if exc.response.get("error") in GONE_ERRORS:
                gone.append(user)
            else:
                # An outage is not a departure: never escalate on an error we cannot read.
                log.warning("could not check champion %s: %s", user, error_code(exc))
            continue
        if found.get("deleted"):
            gone.append(user)
    return gone


def concerns(settings: Settings, db: Database, client: WebClient, now: datetime) -> list[Concern]:
    """Return every active team that needs escalating now."""
    config = settings.teams.escalation
    if config is None:
        return []
    since = now - timedelta(days=config.after_days)
    with db.sessions() as session:
        teams = [
            (t.id, t.name, t.channel, [c.slack_user_id for c in t.champions])
            for t in session.scalars(select(Team).where(Team.active.is_(True)).order_by(Team.name))
        ]
    found = []
    for team_id, name, channel, champions in teams:
        waiting = waiting_findings(db, team_id, since)
        gone = gone_champions(client, champions)
        if waiting or gone:
            left = len(champions) - len(gone)
            found.append(Concern(name, channel, waiting, tuple(gone), left))
    return found


def lines_for(found: list[Concern], after_days: int) -> list[str]:
    """Return the message lines for the concerns (team names escaped)."""
    lines = []
    for c in found:
        team = escape(c.team)
        if c.waiting:
            lines.append(text.escalation_waiting(team, c.channel, c.waiting, after_days))
        if c.gone:
            lines.append(text.escalation_champions(team, c.channel, list(c.gone), c.champions_left))
    return lines


def escalate(
    settings: Settings,
    db: Database,
    client: WebClient,
    period: str,
    now: datetime | None = None,
) -> str:
    """Post the period's escalations once; return posted, already, nothing or off."""
    config = settings.teams.escalation
    if config is None:
        return "off"
    now = now or datetime.now(UTC)
    found: list[Concern] = []

    def build() -> blocks.Payload | None:
        found.extend(concerns(settings, db, client, now))
        return blocks.escalation(lines_for(found, config.after_days)) if found else None

    result = post_once(db, client, JOB, period, config.channel, ids.ESCALATION_EVENT, build)
    if result != "posted":
        log.info("escalation: %s, period=%s", result, period)
        return result
    log.warning("escalated: period=%s teams=%s", period, ",".join(sorted({c.team for c in found})))
    return "posted"
