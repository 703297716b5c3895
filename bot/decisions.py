"""Champions' decisions: exactly one per (finding, round), only from the team's champions."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from bot.db import Database
from bot.errors import FindingNotFound, NotAChampion, PareError
from models import Decision, DigestItem

log = logging.getLogger(__name__)

KINDS = ("approve", "defer", "exempt")


@dataclass(frozen=True)
class DecisionResult:
    """The decision that stands for a finding's round, and whether this call made it."""

    created: bool
    decision_id: int
    finding_id: int
    kind: str
    decided_by: str
    decided_at: datetime
    defer_until: datetime | None
    message_id: int


def _result(decision: Decision, created: bool, message_id: int) -> DecisionResult:
    return DecisionResult(
        created,
        decision.id,
        decision.finding_id,
        decision.kind,
        decision.decided_by,
        decision.decided_at,
        decision.defer_until,
        message_id,
    )


def _existing(db: Database, finding_id: int, round_: int) -> Decision | None:
    with db.session() as session:
        return session.scalar(
            select(Decision).where(Decision.finding_id == finding_id, Decision.round == round_)
        )


def decide(
    db: Database,
    digest_item_id: int | str,
    user_id: str,
    kind: str,
    *,
    admins: tuple[str, ...] = (),
    defer_days: int = 30,
    reason: str | None = None,
    now: datetime | None = None,
) -> DecisionResult:
    """Record a champion's decision on a digest row; a later click gets the standing one."""
    if kind not in KINDS:
        raise PareError(f"unknown decision {kind!r}")
    try:
        item_id = int(digest_item_id)
    except (TypeError, ValueError):
        raise FindingNotFound(f"no digest row {digest_item_id!r}") from None
    now = now if now is not None else datetime.now(UTC)

    with db.session() as session:
        item = session.get(DigestItem, item_id)
        if item is None:
            raise FindingNotFound(f"no digest row {item_id}")
        team = item.message.digest.team
        champions = [c.slack_user_id for c in team.champions]
        finding_id, round_, message_id = item.finding_id, item.round, item.message_id
        frozen = dict(item.shown)
        if user_id not in champions and user_id not in admins:
            log.warning(
                "decision refused, not a champion: user=%s team=%s item=%s action=%s",
                user_id,
                team.name,
                item_id,
                kind,
            )
            raise NotAChampion(user_id, team.name, champions)

    earlier = _existing(db, finding_id, round_)
    if earlier is not None:
        log.info("decision already made: finding=%s round=%s user=%s", finding_id, round_, user_id)
        return _result(earlier, False, message_id)

    decision = Decision(
        finding_id=finding_id,
        round=round_,
        digest_item_id=item_id,
        kind=kind,
        decided_by=user_id,
        decided_at=now,
        defer_until=now + timedelta(days=defer_days) if kind == "defer" else None,
        reason=reason,
        frozen=frozen,
    )
    try:
        with db.session() as session:
            session.add(decision)
    except IntegrityError:
        # Two clicks raced past the check; the unique (finding, round) kept only the first.
        winner = _existing(db, finding_id, round_)
        if winner is None:
            raise
        log.info("decision lost a race: finding=%s round=%s user=%s", finding_id, round_, user_id)
        return _result(winner, False, message_id)
    log.info(
        "decision recorded: finding=%s round=%s kind=%s user=%s",
        finding_id,
        round_,
        kind,
        user_id,
    )
    return _result(decision, True, message_id)
