"""Team digests: choose the open findings, page them, post once per (team, period)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.webhook import WebhookClient
from sqlalchemy import func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bot.db import Database
from bot.decisions import latest_message
from bot.errors import PareError, UnknownTeam
from bot.settings import Settings
from bot.slack import blocks, ids, install, text
from bot.slack.client import (
    OPERATOR_HINTS,
    ChannelPacer,
    error_code,
    find_posted,
    make_client,
    metadata,
    transient,
)
from models import (
    Decision,
    Digest,
    DigestItem,
    DigestMessage,
    Finding,
    Principal,
    Revocation,
    Team,
)

log = logging.getLogger(__name__)

COUNTED_STATUSES = ("unknown", "too_new")
DONE = ("posted", "empty")
# A process posting a digest holds it this long; a crashed one's claim lapses after it.
POST_CLAIM = timedelta(minutes=10)
# Posts are paced per channel across every digest this process delivers.
PACER = ChannelPacer()


@dataclass(frozen=True)
class Backoff:
    """How 5xx and network failures are retried: attempts, first wait, growth, and the sleep."""

    attempts: int = 4
    first: float = 1.0
    factor: float = 2.0
    sleep: Callable[[float], None] = field(default=time.sleep)

    def wait(self, attempt: int) -> None:
        """Sleep before the given retry (1, 2, ...)."""
        self.sleep(self.first * self.factor ** (attempt - 1))


BACKOFF = Backoff()
HOLDER = f"{socket.gethostname()}:{os.getpid()}"


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
    revoked = set(
        session.scalars(
            select(Revocation.decision_id).where(
                Revocation.decision_id.in_([d.id for d in decided.values() if d.kind == "exempt"])
            )
        )
    )
    chosen = []
    for finding in candidates:
        decision = decided.get((finding.id, finding.round))
        if decision is None:
            chosen.append(finding)
        elif _ended(decision, revoked, now):
            if bump:
                finding.round += 1
                log.info("decision ended: finding=%s round=%s", finding.id, finding.round)
            chosen.append(finding)
    return chosen


def _ended(decision: Decision, revoked: set[int], now: datetime) -> bool:
    """Say whether a deferral has expired or an exemption was revoked."""
    if decision.kind == "defer":
        return decision.defer_until is not None and decision.defer_until <= now
    return decision.kind == "exempt" and decision.id in revoked


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
        "team": principal.team.name if principal.team else None,
        "data_state": principal.data_state,
        "kind": finding.kind,
        "service": finding.service,
        "actions": list(finding.actions or []),
        # A whole-service finding is approved as the actions granted when it was shown.
        "granted_actions": (
            list(principal.granted.get(finding.service, []))
            if finding.kind == "unused_permission" and not finding.actions
            else []
        ),
        "resource_id": finding.resource_id,
        "last_used": finding.last_used_at.date().isoformat() if finding.last_used_at else None,
        "source": finding.source,
        "reason": finding.reason,
    }


def _summary(session: Session, team: Team, rows: list[blocks.Row]) -> dict[str, int]:
    """Return the head's counts, frozen with the digest."""
    counts = counted(session, team.id)
    principals = len({row.principal for row in rows})
    return {"offered": len(rows), "principals": principals, **counts}


def _head(team: Team, summary: dict[str, int], defer_days: int) -> blocks.DigestHead:
    champions = tuple(c.slack_user_id for c in team.champions)
    return blocks.DigestHead(
        team.name,
        summary.get("offered", 0),
        summary.get("unknown", 0),
        summary.get("too_new", 0),
        champions,
        defer_days,
        summary.get("principals", 0),
    )


def outcomes(session: Session, items: list[DigestItem]) -> dict[int, blocks.Outcome]:
    """Return the outcome of each decided item, keyed by item id."""
    if not items:
        return {}
    wanted = {(i.finding_id, i.round): i.id for i in items}
    found = list(
        session.scalars(
            select(Decision).where(Decision.finding_id.in_([i.finding_id for i in items]))
        )
    )
    revoked = set(
        session.scalars(
            select(Revocation.decision_id).where(Revocation.decision_id.in_([d.id for d in found]))
        )
    )
    result = {}
    for d in found:
        item_id = wanted.get((d.finding_id, d.round))
        if item_id is not None:
            result[item_id] = blocks.Outcome(
                d.kind, d.decided_by, d.decided_at, d.defer_until, d.reason, d.id in revoked
            )
    return result


def render_message(session: Session, message: DigestMessage, defer_days: int) -> blocks.Payload:
    """Render one posted digest message from stored state (decided rows lose their buttons)."""
    digest = message.digest
    parts = len(digest.messages)
    summary = digest.summary
    if summary is None:
        # Digests planned before heads were frozen: count what they hold now.
        rows = [blocks.Row(str(i.id), i.shown) for m in digest.messages for i in m.items]
        summary = _summary(session, digest.team, rows)
    head = _head(digest.team, summary, defer_days)
    found = outcomes(session, message.items)
    rows = [blocks.Row(str(i.id), i.shown, found.get(i.id)) for i in message.items]
    before = [m for m in digest.messages if m.part == message.part - 1]
    previous = None
    if before and before[0].items:
        last = before[0].items[-1]
        previous = blocks.Row(str(last.id), last.shown)
    return blocks.digest_message(head, rows, message.part, parts, previous)


def _plan(session: Session, team: Team, period: str, now: datetime) -> Digest:
    """Record the digest, its messages and its rows before anything is posted."""
    findings = open_findings(session, team.id, now, bump=True)
    digest = Digest(team_id=team.id, period=period, channel=team.channel, created_at=now)
    digest.status = "posting" if findings else "empty"
    session.add(digest)
    session.flush()
    rows = [blocks.Row(str(i), shown_for(f)) for i, f in enumerate(findings)]
    digest.summary = _summary(session, team, rows)
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


def _take(db: Database, digest_id: int, holder: str, now: datetime) -> bool:
    """Claim the right to post a digest; False if another process holds an unexpired claim."""
    with db.session() as session:
        taken = session.execute(
            update(Digest)
            .where(
                Digest.id == digest_id,
                Digest.status.not_in(DONE),
                or_(Digest.claimed_until.is_(None), Digest.claimed_until <= now),
            )
            .values(claimed_by=holder, claimed_until=now + POST_CLAIM)
        ).rowcount
    return bool(taken)


def _release(db: Database, digest_id: int, holder: str) -> None:
    """Give up a claim this process holds."""
    with db.session() as session:
        session.execute(
            update(Digest)
            .where(Digest.id == digest_id, Digest.claimed_by == holder)
            .values(claimed_until=None)
        )


def deliver_digest(
    settings: Settings,
    db: Database,
    team_name: str,
    period: str,
    client: WebClient,
    now: datetime | None = None,
    *,
    pacer: ChannelPacer | None = None,
    backoff: Backoff | None = None,
) -> DigestOutcome:
    """Post a team's digest for period once; a repeat call posts nothing more.

    The plan (messages and rows) is recorded before posting, and each post carries metadata
    naming its message row. Posting needs a claim on the digest row (a conditional update with
    an expiry), so two processes never post it at once. A call that finds an unfinished plan
    first asks Slack whether the post already exists, so a crash, a 5xx or a dropped connection
    between posting and recording never doubles a message.
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
    why = install.paused(db, client)
    if why is not None:
        log.warning(
            "digest held, Slack posting paused (%s): team=%s period=%s", why, team_name, period
        )
        outcome.status, outcome.error = "failed", why
        return outcome
    holder = f"{HOLDER}:{uuid.uuid4().hex[:8]}"
    if not _take(db, digest_id, holder, now):
        log.info("digest being posted by another process: team=%s period=%s", team_name, period)
        outcome.status = "busy"
        return outcome

    with db.session() as session:
        digest = session.get_one(Digest, digest_id)
        if not created and all(m.ts for m in digest.messages):
            digest.status, digest.claimed_until = "posted", None
            outcome.status = "already"
            return outcome
        try:
            _post_parts(
                session,
                digest,
                client,
                settings.defer_days,
                recovering=not created,
                pacer=pacer or PACER,
                backoff=backoff or BACKOFF,
            )
        except (SlackApiError, OSError) as exc:
            error = error_code(exc)
            digest.status, digest.error, digest.claimed_until = "failed", error, None
            hint = OPERATOR_HINTS.get(error)
            if hint:
                log.error(
                    "digest not delivered: team=%s period=%s channel=%s error=%s: %s; "
                    "retried later",
                    team_name,
                    period,
                    digest.channel,
                    error,
                    hint,
                )
            else:
                log.warning(
                    "digest not delivered, will retry: team=%s period=%s error=%s",
                    team_name,
                    period,
                    error,
                )
            outcome.status, outcome.error = "failed", error
            return outcome
        except Exception:
            # Still alive: free the claim so the next attempt need not wait for it to lapse.
            session.rollback()
            _release(db, digest_id, holder)
            raise
        digest.status = "posted"
        digest.error = None
        digest.claimed_until = None
        digest.posted_at = datetime.now(UTC)
    log.info("digest posted: team=%s period=%s messages=%s", team_name, period, outcome.messages)
    return outcome


def _post_parts(
    session: Session,
    digest: Digest,
    client: WebClient,
    defer_days: int,
    recovering: bool,
    pacer: ChannelPacer,
    backoff: Backoff,
) -> None:
    """Post each unposted message in order, committing its ts as soon as Slack answers."""
    first = digest.messages[0]
    for message in digest.messages:
        if message.ts:
            continue
        thread_ts = None if message.part == 1 else first.ts
        # Wait for the channel's slot before touching the database: no connection is held
        # while sleeping, so many digests can wait side by side.
        pacer.wait(message.channel)
        payload = render_message(session, message, defer_days)
        ts = _send(client, message, payload, thread_ts, recovering, pacer, backoff)
        message.ts = ts
        message.thread_ts = thread_ts
        message.posted_at = datetime.now(UTC)
        session.commit()


def _send(
    client: WebClient,
    message: DigestMessage,
    payload: blocks.Payload,
    thread_ts: str | None,
    recovering: bool,
    pacer: ChannelPacer,
    backoff: Backoff,
) -> str:
    """Post one message; before any retry, look for it first so a lost answer never doubles it."""
    key = str(message.id)
    for attempt in range(backoff.attempts):
        try:
            if attempt or recovering:
                ts = find_posted(client, message.channel, ids.DIGEST_EVENT, key, thread_ts)
                if ts:
                    log.info("found an earlier post: message=%s part=%s", key, message.part)
                    return ts
            if attempt:
                pacer.wait(message.channel)
            response = client.chat_postMessage(
                channel=message.channel,
                text=payload.text,
                blocks=payload.blocks,
                thread_ts=thread_ts,
                metadata=metadata(ids.DIGEST_EVENT, key),
                unfurl_links=False,
                unfurl_media=False,
            )
            pacer.posted(message.channel)
            return str(response["ts"])
        except (SlackApiError, OSError) as exc:
            if not transient(exc) or attempt + 1 >= backoff.attempts:
                raise
            log.warning(
                "Slack failed, retrying: message=%s attempt=%s error=%s",
                key,
                attempt + 1,
                error_code(exc),
            )
            backoff.wait(attempt + 1)
    raise AssertionError("unreachable: the last attempt raises")


def update_message(settings: Settings, db: Database, client: WebClient, message_id: int) -> None:
    """Re-render a posted digest message from stored state and replace it in Slack."""
    with db.session() as session:
        message = session.get_one(DigestMessage, message_id)
        if not message.ts:
            return
        payload = render_message(session, message, settings.defer_days)
        channel, ts = message.channel, message.ts
    client.chat_update(channel=channel, ts=ts, text=payload.text, blocks=payload.blocks)


def decided_rows(db: Database, decision_ids: list[int]) -> blocks.Payload:
    """Render just the decided rows, with their outcomes (to replace an ephemeral message)."""
    with db.session() as session:
        items = list(
            session.scalars(
                select(DigestItem)
                .join(Decision, Decision.digest_item_id == DigestItem.id)
                .where(Decision.id.in_(decision_ids))
                .order_by(DigestItem.id)
            )
        )
        found = outcomes(session, items)
        rows = [blocks.Row(str(i.id), i.shown, found.get(i.id)) for i in items]
    body = blocks.rows_blocks(rows)[: blocks.MAX_BLOCKS]
    return blocks.Payload(
        text.decided(rows[0].outcome.kind if rows and rows[0].outcome else ""), body
    )


def show_outcome(
    settings: Settings,
    db: Database,
    client: WebClient,
    results: list[Any],
    origin: dict[str, Any],
    respond: Any,
    revoked: int | None = None,
) -> None:
    """Show decisions where they were made: chat.update a posted digest, response_url an ephemeral.

    Buttons vanish because the message is re-rendered from stored state.
    """
    message_ids = {r.message_id for r in results}
    if revoked is not None:
        found = latest_message(db, revoked)
        if found is not None:
            message_ids.add(found)
    for message_id in sorted(message_ids):
        update_message(settings, db, client, message_id)
    url = origin.get("response_url")
    if url and results:
        payload = decided_rows(db, [r.decision_id for r in results])
        body = {"replace_original": True, "text": payload.text, "blocks": payload.blocks}
        if respond is not None:
            respond(**body)
        else:
            WebhookClient(url).send_dict(body)


def _rows_from_file(path: Path, team: str) -> tuple[list[blocks.Row], Counter[str]]:
    """Read findings from a `pare analyze --json` file into digest rows (dry run only)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise PareError(f"{path}: cannot read findings: {exc}") from None
    items = data.get("findings", []) if isinstance(data, dict) else data
    if not isinstance(items, list):
        raise PareError(f"{path}: findings must be a list (as `pare analyze --json` writes)")
    rows: list[blocks.Row] = []
    statuses: Counter[str] = Counter()
    for number, item in enumerate(items, start=1):
        _check_item(path, number, item)
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
            # The file does not say who owns what; the dry run shows it as the named team's.
            "team": team,
            "data_state": item.get("data_state") or "complete",
            **{k: item.get(k) for k in ("kind", "service", "actions", "resource_id", "reason")},
            "last_used": item.get("last_used"),
            "source": item.get("source", ""),
        }
        rows.append(blocks.Row(f"dry-run-{number}", shown))
    return rows, statuses


def _check_item(path: Path, number: int, item: object) -> None:
    """Raise PareError naming the finding when an item is not shaped like `pare analyze`'s."""
    if not isinstance(item, dict):
        raise PareError(f"{path}: finding {number} is not an object")
    actions = item.get("actions")
    if actions is not None and not (
        isinstance(actions, list) and all(isinstance(a, str) for a in actions)
    ):
        raise PareError(f"{path}: finding {number}: actions must be a list of strings")


def dry_run_payloads(
    head: blocks.DigestHead, rows: list[blocks.Row], channel: str
) -> list[dict[str, Any]]:
    """Return the exact chat.postMessage bodies a digest would send (thread parts marked)."""
    pages = blocks.paginate(rows) if rows else []
    out = []
    for number, page in enumerate(pages, start=1):
        previous = pages[number - 2][-1] if number > 1 else None
        payload = blocks.digest_message(head, page, number, len(pages), previous)
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
        rows, statuses = _rows_from_file(args.findings, spec.name)
        head = blocks.DigestHead(
            spec.name,
            len(rows),
            statuses["unknown"],
            statuses["too_new"],
            spec.champions,
            settings.defer_days,
            len({row.principal for row in rows}),
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
            head = _head(team, _summary(session, team, rows), settings.defer_days)
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
