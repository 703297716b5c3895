"""Bring the teams, champions and accounts tables in line with the teams file."""

from __future__ import annotations

import logging

from sqlalchemy import select
from sqlalchemy.orm import Session

from bot.teams import TeamsConfig
from models import Account, Champion, Team

log = logging.getLogger(__name__)


def sync_config(session: Session, config: TeamsConfig) -> None:
    """Upsert teams, champions and accounts; teams no longer listed become inactive."""
    existing = {t.name: t for t in session.scalars(select(Team))}
    for spec in config.teams:
        team = existing.get(spec.name)
        if team is None:
            team = Team(name=spec.name)
            session.add(team)
            log.info("team added: %s", spec.name)
        team.channel = spec.channel
        team.timezone = spec.timezone
        team.digest_day = spec.digest.day
        team.digest_hour = spec.digest.hour
        team.active = True
        wanted = set(spec.champions)
        team.champions[:] = [c for c in team.champions if c.slack_user_id in wanted]
        have = {c.slack_user_id for c in team.champions}
        for user in spec.champions:
            if user not in have:
                team.champions.append(Champion(slack_user_id=user))
    listed = {t.name for t in config.teams}
    for name, team in existing.items():
        if name not in listed and team.active:
            team.active = False
            log.info("team no longer in the teams file, kept inactive: %s", name)

    accounts = {a.account_id: a for a in session.scalars(select(Account))}
    for spec in config.accounts:
        account = accounts.get(spec.id)
        if account is None:
            account = Account(account_id=spec.id)
            session.add(account)
        account.name = spec.name
        account.apply_enabled = spec.apply
    session.flush()
