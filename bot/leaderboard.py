"""The leaderboard: teams ranked by how much of their unused access is resolved."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from slack_sdk import WebClient
from sqlalchemy import select

from bot.db import Database
from bot.errors import ConfigError
from bot.settings import Settings
from bot.slack import blocks, ids
from bot.slack.client import make_client
from bot.slack.posting import post_once
from models import Decision, Finding, Principal, Team

log = logging.getLogger(__name__)

# Distinct from the scheduler's own job names, so its run records and ours never collide.
JOB = "leaderboard_post"


def standings(db: Database) -> list[blocks.Standing]:
    """Rank active teams: share of unused findings resolved (approved, or closed as used)."""
    with db.sessions() as session:
        teams = {t.id: t.name for t in session.scalars(select(Team).where(Team.active.is_(True)))}
        found = dict.fromkeys(teams, 0)
        resolved = dict.fromkeys(teams, 0)
        # Only an approval of the finding's current round counts: an undone removal starts a
        # new round, and the finding is open again.
        approved = set(
            session.scalars(
                select(Decision.finding_id)
                .join(Finding, Decision.finding_id == Finding.id)
                .where(Decision.kind == "approve", Decision.round == Finding.round)
            )
        )
        rows = session.execute(
            select(Finding.id, Finding.closed_at, Principal.team_id)
            .join(Principal, Finding.principal_id == Principal.id)
            .where(Finding.status == "unused", Principal.team_id.in_(list(teams)))
        )
        for finding_id, closed_at, team_id in rows:
            found[team_id] += 1
            if closed_at is not None or finding_id in approved:
                resolved[team_id] += 1
    ranked = [blocks.Standing(teams[t], resolved[t], found[t]) for t in teams]
    ranked.sort(key=lambda s: (-(s.resolved / s.found if s.found else 0), -s.resolved, s.team))
    return ranked


def as_text(ranking: list[blocks.Standing]) -> str:
    """Return the ranking as plain lines for the terminal."""
    lines = []
    for rank, s in enumerate(ranking, start=1):
        share = f"{100 * s.resolved / s.found:.0f}%" if s.found else "n/a"
        lines.append(f"{rank:>3}. {s.team:<30} {share:>5}  {s.resolved}/{s.found} resolved")
    return "\n".join(lines) or "no teams"


def post_leaderboard(settings: Settings, db: Database, client: WebClient, period: str) -> str:
    """Post the leaderboard for period once; return posted, already or failed."""
    channel = settings.teams.leaderboard_channel
    if not channel:
        raise ConfigError(f"{settings.teams_file}: leaderboard_channel is not set")
    result = post_once(
        db,
        client,
        JOB,
        period,
        channel,
        ids.LEADERBOARD_EVENT,
        lambda: blocks.leaderboard(standings(db)),
    )
    if result != "posted":
        return result
    log.info("leaderboard posted: period=%s channel=%s", period, channel)
    return "posted"


def run_leaderboard_command(settings: Settings, post: bool = True) -> int:
    """Run `pare leaderboard`: print the ranking, and post it unless --print-only."""
    from bot.sync import sync_config

    db = Database(settings.database_url)
    with db.session() as session:
        sync_config(session, settings.teams)
    print(as_text(standings(db)))
    if not post:
        return 0
    settings.require_slack()
    period = "manual-" + datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    result = post_leaderboard(settings, db, make_client(settings), period)
    print(f"leaderboard: {result}")
    return 0
