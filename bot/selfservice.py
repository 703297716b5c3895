"""Self-service answers to `/pare`: help, status (your teams) and role NAME."""

from __future__ import annotations

import logging

from slack_sdk import WebClient
from sqlalchemy import func, select

from bot.db import Database
from bot.digest import open_findings
from bot.slack import text
from bot.slack.blocks import HomeExemption, HomeTeam, Payload, answer, home_view
from bot.slack.escape import escape
from models import Champion, Decision, Finding, Principal, Revocation, Team

log = logging.getLogger(__name__)

MAX_PRINCIPALS = 10
MAX_FINDINGS_EACH = 15


def answer_command(db: Database, user_id: str, command_text: str) -> Payload:
    """Answer `/pare ...`; an unknown subcommand gets the help."""
    words = command_text.strip().split(maxsplit=1)
    sub = words[0].lower() if words else "help"
    log.info("command: user=%s sub=%s", user_id, sub if sub in ("status", "role") else "help")
    if sub == "status":
        return status_answer(db, user_id)
    if sub == "role":
        return role_answer(db, words[1].strip() if len(words) > 1 else "")
    return help_answer()


def help_answer() -> Payload:
    """Return the help text."""
    return answer([text.HELP], "Pare help")


def status_answer(db: Database, user_id: str) -> Payload:
    """Return open and decided counts for each team the user champions."""
    lines = []
    with db.sessions() as session:
        teams = session.scalars(
            select(Team)
            .join(Champion, Champion.team_id == Team.id)
            .where(Champion.slack_user_id == user_id, Team.active.is_(True))
            .order_by(Team.name)
        ).all()
        for team in teams:
            open_count = len(open_findings(session, team.id, bump=False))
            decided = dict(
                session.execute(
                    select(Decision.kind, func.count())
                    .join(Finding, Decision.finding_id == Finding.id)
                    .join(Principal, Finding.principal_id == Principal.id)
                    .where(Principal.team_id == team.id)
                    .group_by(Decision.kind)
                ).all()
            )
            lines.append(text.status_team(escape(team.name), team.channel, open_count, decided))
        # open_findings(bump=False) writes nothing; roll back to be sure the answer is read-only.
        session.rollback()
    return answer(lines or [text.status_none()], "Your Pare status")


def role_answer(db: Database, name: str) -> Payload:
    """Return what Pare found on every role or user called name, across accounts."""
    if not name:
        return answer([text.role_usage()], "Pare role")
    lines: list[str] = []
    with db.sessions() as session:
        principals = session.scalars(
            select(Principal)
            .where(func.lower(Principal.name) == name.lower(), Principal.gone_at.is_(None))
            .order_by(Principal.account_id, Principal.arn)
        ).all()
        for principal in principals[:MAX_PRINCIPALS]:
            account = principal.account
            label = f"{account.name} ({account.account_id})" if account.name else account.account_id
            team = principal.team.name if principal.team else None
            lines.append(
                text.role_principal(
                    escape(principal.name),
                    principal.kind,
                    escape(label),
                    escape(team) if team else None,
                    escape(principal.data_state),
                )
            )
            findings = [f for f in principal.findings if f.closed_at is None]
            for finding in findings[:MAX_FINDINGS_EACH]:
                current = [d for d in finding.decisions if d.round == finding.round]
                decision = None
                if current:
                    decision = f"{text.DECISION_VERBS.get(current[0].kind)} by " + text.mention(
                        current[0].decided_by
                    )
                lines.append(
                    text.role_finding(
                        finding.kind, escape(finding.service), finding.status, decision
                    )
                )
            if len(findings) > MAX_FINDINGS_EACH:
                lines.append(text.role_more(len(findings) - MAX_FINDINGS_EACH))
        if len(principals) > MAX_PRINCIPALS:
            lines.append(text.role_more(len(principals) - MAX_PRINCIPALS))
    return answer(lines or [text.role_none(escape(name))], "Pare role")


def home_data(
    db: Database, user_id: str, admins: tuple[str, ...] = ()
) -> tuple[list[HomeTeam], list[HomeExemption]]:
    """Return the user's teams with open counts, and the standing exemptions on them."""
    with db.sessions() as session:
        query = select(Team).where(Team.active.is_(True)).order_by(Team.name)
        if user_id not in admins:
            query = query.join(Champion, Champion.team_id == Team.id).where(
                Champion.slack_user_id == user_id
            )
        teams = session.scalars(query).all()
        home_teams = [
            HomeTeam(t.name, t.channel, len(open_findings(session, t.id, bump=False)))
            for t in teams
        ]
        names = {t.id: t.name for t in teams}
        revoked = select(Revocation.decision_id)
        rows = session.execute(
            select(Decision, Principal.team_id)
            .join(Finding, Decision.finding_id == Finding.id)
            .join(Principal, Finding.principal_id == Principal.id)
            .where(
                Decision.kind == "exempt",
                Decision.round == Finding.round,
                Finding.closed_at.is_(None),
                Principal.team_id.in_(list(names)),
                Decision.id.not_in(revoked),
            )
            .order_by(Decision.decided_at.desc())
        ).all()
        exemptions = [
            HomeExemption(
                d.id, names[team_id], dict(d.frozen), d.decided_by, d.decided_at, d.reason or ""
            )
            for d, team_id in rows
        ]
        # open_findings(bump=False) writes nothing; roll back to be sure the Home is read-only.
        session.rollback()
    return home_teams, exemptions


def publish_home(db: Database, client: WebClient, user_id: str, admins: tuple[str, ...]) -> None:
    """Publish the user's App Home tab."""
    teams, exemptions = home_data(db, user_id, admins)
    client.views_publish(user_id=user_id, view=home_view(teams, exemptions))
    log.info("home published: user=%s teams=%s exemptions=%s", user_id, len(teams), len(exemptions))
