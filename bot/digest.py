"""Team digests: choose the open findings, page them, post once per (team, period)."""

from __future__ import annotations

import argparse
import json
import logging
from collections import Counter
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bot.db import Database
from bot.errors import PareError, UnknownTeam
from bot.settings import Settings
from bot.slack import blocks, ids
from bot.slack.client import find_posted, make_client, metadata
from models import Decision, Digest, DigestItem, DigestMessage, Finding, Principal, Team

log = logging.getLogger(__name__)

COUNTED_STATUSES = ("unknown", "too_new")
DONE = ("posted", "empty")


@dataclass
class DigestOutcome:
    """What one delivery did: posted, empty, already (done before), or failed (retry later)."""

    team: str
    period: str
    status: str
    digest_id: int | None = None
    messages: int = 0
    offered: int = 0
    error: str | None = None


def _now(now: datetime | None) -> datetime:
    return now if now is not None else datetime.now(UTC)


def open_findings(
    session: Session, team_id: int, now: datetime | None = None, bump: bool = True
) -> list[Finding]:
    """Return a team's findings to offer; a deferral that has ended starts a new round."""
    now = _now(now)
    candidates = list(
        session.scalars(
            select(Finding)
            .join(Principal, Finding.principal_id == Principal.id)
            .where(
                Principal.team_id == team_id,
                Principal.data_state == "complete",
                Principal.gone_at.is_(None),
                Finding.status == "unused",
                Finding.closed_at.is_(None),
            )
            .order_by(Principal.name, Principal.account_id, Finding.kind, Finding.service)
        )
    )
    if not candidates:
        return []
    decided = {
        (d.finding_id, d.round): d
        for d in session.scalars(
            select(Decision).where(Decision.finding_id.in_([f.id for f in candidates]))
        )
    }
    chosen = []
    for finding in candidates:
        decision = decided.get((finding.id, finding.round))
        if decision is None:
            chosen.append(finding)
        elif decision.kind == "defer" and decision.defer_until and decision.defer_until <= now:
            if bump:
                finding.round += 1
                log.info("deferral ended: finding=%s round=%s", finding.id, finding.round)
            chosen.append(finding)
    return chosen


def counted(session: Session, team_id: int) -> dict[str, int]:
    """Return how many open unknown and too-new grants a team has (counted, never offered)."""
    rows = session.execute(
        select(Finding.status, func.count())
        .join(Principal, Finding.principal_id == Principal.id)
        .where(
            Principal.team_id == team_id,
            Finding.status.in_(COUNTED_STATUSES),
            Finding.closed_at.is_(None),
        )
        .group_by(Finding.status)
    )
    counts = dict.fromkeys(COUNTED_STATUSES, 0)
    counts.update({status: n for status, n in rows})
    return counts


def shown_for(finding: Finding) -> dict[str, Any]:
    """Return the frozen view of a finding: what a champion sees and approves."""
    principal = finding.principal
    account = principal.account
    label = f"{account.name} ({account.account_id})" if account.name else account.account_id
    return {
        "finding_id": finding.id,
        "round": finding.round,
        "principal": principal.name,
        "principal_kind": principal.kind,
        "arn": principal.arn,
        "account": label,
        "kind": finding.kind,
        "service": finding.service,
        "actions": list(finding.actions or []),
        "resource_id": finding.resource_id,
        "last_used": finding.last_used_at.date().isoformat() if finding.last_used_at else None,
        "source": finding.source,
        "reason": finding.reason,
    }


def _head(session: Session, team: Team, offered: int, defer_days: int) -> blocks.DigestHead:
    counts = counted(session, team.id)
    champions = tuple(c.slack_user_id for c in team.champions)
    return blocks.DigestHead(
        team.name, offered, counts["unknown"], counts["too_new"], champions, defer_days
    )


def _outcomes(session: Session, items: list[DigestItem]) -> dict[int, blocks.Outcome]:
    if not items:
        return {}
    wanted = {(i.finding_id, i.round): i.id for i in items}
    found = session.scalars(
        select(Decision).where(Decision.finding_id.in_([i.finding_id for i in items]))
    )
    outcomes = {}
    for d in found:
        item_id = wanted.get((d.finding_id, d.round))
        if item_id is not None:
            outcomes[item_id] = blocks.Outcome(d.kind, d.decided_by, d.decided_at, d.defer_until)
    return outcomes


def render_message(session: Session, message: DigestMessage, defer_days: int) -> blocks.Payload:
    """Render one posted digest message from stored state (decided rows lose their buttons)."""
    digest = message.digest
    parts = len(digest.messages)
    offered = session.scalar(
        select(func.count(DigestItem.id))
        .join(DigestMessage, DigestItem.message_id == DigestMessage.id)
        .where(DigestMessage.digest_id == digest.id)
    )
    head = _head(session, digest.team, int(offered or 0), defer_days)
    outcomes = _outcomes(session, message.items)
    rows = [blocks.Row(str(i.id), i.shown, outcomes.get(i.id)) for i in message.items]
    return blocks.digest_message(head, rows, message.part, parts)


def _plan(session: Session, team: Team, period: str, now: datetime) -> Digest:
    """Record the digest, its messages and its rows before anything is posted."""
    findings = open_findings(session, team.id, now, bump=True)
    digest = Digest(team_id=team.id, period=period, channel=team.channel, created_at=now)
    digest.status = "posting" if findings else "empty"
    session.add(digest)
    session.flush()
    rows = [blocks.Row(str(i), shown_for(f)) for i, f in enumerate(findings)]
    for number, page in enumerate(blocks.paginate(rows) if rows else [], start=1):
        message = DigestMessage(digest_id=digest.id, part=number, channel=team.channel)
        session.add(message)
        session.flush()
        for row in page:
            finding = findings[int(row.item_id)]
            session.add(
                DigestItem(
                    message_id=message.id,
                    finding_id=finding.id,
                    round=finding.round,
                    shown=row.shown,
                )
            )
    session.flush()
    log.info("digest planned: team=%s period=%s findings=%s", team.name, period, len(findings))
    return digest


def _claim(db: Database, team_name: str, period: str, now: datetime) -> tuple[int, bool]:
    """Return the digest id for (team, period) and whether this call created it."""
    try:
        with db.session() as session:
            team = session.scalar(select(Team).where(Team.name == team_name))
            if team is None:
                raise UnknownTeam(team_name)
            digest = session.scalar(
                select(Digest).where(Digest.team_id == team.id, Digest.period == period)
            )
            if digest is not None:
                return digest.id, False
            return _plan(session, team, period, now).id, True
    except IntegrityError:
        # Another runner planned the same (team, period) at the same moment; use theirs.
        with db.session() as session:
            digest_id = session.scalar(
                select(Digest.id)
                .join(Team, Digest.team_id == Team.id)
                .where(Team.name == team_name, Digest.period == period)
            )
            if digest_id is None:
                raise
            return digest_id, False


def deliver_digest(
    settings: Settings,
    db: Database,
    team_name: str,
    period: str,
    client: WebClient,
    now: datetime | None = None,
) -> DigestOutcome:
    """Post a team's digest for period once; a repeat call posts nothing more.

    The plan (messages and rows) is recorded before posting, and each post carries metadata
    naming its message row. A call that finds an unfinished plan first asks Slack whether the
    post already exists, so a crash between posting and recording never doubles a message.
    """
    now = _now(now)
    digest_id, created = _claim(db, team_name, period, now)
    outcome = DigestOutcome(team_name, period, "posted", digest_id)
    with db.session() as session:
        digest = session.get_one(Digest, digest_id)
        outcome.offered = sum(len(m.items) for m in digest.messages)
        outcome.messages = len(digest.messages)
        if digest.status in DONE:
            outcome.status = digest.status if created else "already"
            return outcome
        if not created and all(m.ts for m in digest.messages):
            digest.status = "posted"
            outcome.status = "already"
            return outcome
        try:
            _post_parts(session, digest, client, settings.defer_days, recovering=not created)
        except SlackApiError as exc:
            error = str(exc.response.get("error") or exc.response.status_code)
            digest.status = "failed"
            digest.error = error
            log.warning(
                "digest not delivered, will retry: team=%s period=%s error=%s",
                team_name,
                period,
                error,
            )
            outcome.status, outcome.error = "failed", error
            return outcome
        digest.status = "posted"
        digest.error = None
        digest.posted_at = datetime.now(UTC)
    log.info("digest posted: team=%s period=%s messages=%s", team_name, period, outcome.messages)
    return outcome


def _post_parts(
    session: Session, digest: Digest, client: WebClient, defer_days: int, recovering: bool
) -> None:
    """Post each unposted message in order, committing its ts as soon as Slack answers."""
    first = digest.messages[0]
    for message in digest.messages:
        if message.ts:
            continue
        thread_ts = None if message.part == 1 else first.ts
        key = str(message.id)
        ts = None
        if recovering:
            ts = find_posted(client, message.channel, ids.DIGEST_EVENT, key, thread_ts)
            if ts:
                log.info("found an earlier post: digest=%s part=%s", digest.id, message.part)
        if ts is None:
            payload = render_message(session, message, defer_days)
            response = client.chat_postMessage(
                channel=message.channel,
                text=payload.text,
                blocks=payload.blocks,
                thread_ts=thread_ts,
                metadata=metadata(ids.DIGEST_EVENT, key),
                unfurl_links=False,
                unfurl_media=False,
            )
            ts = str(response["ts"])
        message.ts = ts
        message.thread_ts = thread_ts
        message.posted_at = datetime.now(UTC)
        session.commit()


def update_message(settings: Settings, db: Database, client: WebClient, message_id: int) -> None:
    """Re-render a posted digest message from stored state and replace it in Slack."""
    with db.session() as session:
        message = session.get_one(DigestMessage, message_id)
        if not message.ts:
            return
        payload = render_message(session, message, settings.defer_days)
        channel, ts = message.channel, message.ts
    client.chat_update(channel=channel, ts=ts, text=payload.text, blocks=payload.blocks)


def _rows_from_file(path: Path) -> tuple[list[blocks.Row], Counter[str]]:
    """Read findings from a `pare analyze --json` file into digest rows (dry run only)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise PareError(f"{path}: cannot read findings: {exc}") from None
    items = data.get("findings", []) if isinstance(data, dict) else data
    rows: list[blocks.Row] = []
    statuses: Counter[str] = Counter()
    for number, item in enumerate(items, start=1):
        statuses[str(item.get("status"))] += 1
        if item.get("status") != "unused":
            continue
        arn = str(item.get("principal_arn", ""))
        parts = arn.split(":")
        shown = {
            "principal": arn.rsplit("/", 1)[-1],
            "principal_kind": "user" if ":user/" in arn else "role",
            "arn": arn,
            "account": parts[4] if len(parts) > 4 else "",
            **{k: item.get(k) for k in ("kind", "service", "actions", "resource_id", "reason")},
            "last_used": item.get("last_used"),
            "source": item.get("source", ""),
        }
        rows.append(blocks.Row(f"dry-run-{number}", shown))
    return rows, statuses


def dry_run_payloads(
    head: blocks.DigestHead, rows: list[blocks.Row], channel: str
) -> list[dict[str, Any]]:
    """Return the exact chat.postMessage bodies a digest would send (thread parts marked)."""
    pages = blocks.paginate(rows) if rows else []
    out = []
    for number, page in enumerate(pages, start=1):
        payload = blocks.digest_message(head, page, number, len(pages))
        body: dict[str, Any] = {"channel": channel, **asdict(payload)}
        if number > 1:
            body["thread_ts"] = "(ts of part 1)"
        out.append(body)
    return out


def run_digest_command(args: argparse.Namespace) -> int:
    """Run `pare digest --team NAME [--dry-run] [--findings FILE]`."""
    from bot.cli import load_settings
    from bot.sync import sync_config

    settings = load_settings()
    spec = settings.teams.team(args.team)
    if args.findings is not None:
        if not args.dry_run:
            raise PareError("--findings works with --dry-run only (buttons need stored rows)")
        rows, statuses = _rows_from_file(args.findings)
        head = blocks.DigestHead(
            spec.name,
            len(rows),
            statuses["unknown"],
            statuses["too_new"],
            spec.champions,
            settings.defer_days,
        )
        print(json.dumps(dry_run_payloads(head, rows, spec.channel), indent=2))
        return 0

    db = Database(settings.database_url)
    if args.dry_run:
        with db.sessions() as session:
            sync_config(session, settings.teams)
            team = session.scalars(select(Team).where(Team.name == spec.name)).one()
            findings = open_findings(session, team.id, bump=False)
            rows = [blocks.Row(f"dry-run-{f.id}", shown_for(f)) for f in findings]
            head = _head(session, team, len(rows), settings.defer_days)
            session.rollback()
        print(json.dumps(dry_run_payloads(head, rows, spec.channel), indent=2))
        return 0

    settings.require_slack()
    with db.session() as session:
        sync_config(session, settings.teams)
    period = "manual-" + datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    outcome = deliver_digest(settings, db, spec.name, period, make_client(settings))
    print(
        f"digest for {outcome.team}: {outcome.status}, {outcome.offered} finding(s) "
        f"in {outcome.messages} message(s)" + (f" ({outcome.error})" if outcome.error else "")
    )
    return 0 if outcome.status in ("posted", "empty", "already") else 1
