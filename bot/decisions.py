"""Champions' decisions: exactly one per (finding, round), only from the team's champions."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from bot.db import Database
from bot.errors import FindingNotFound, NotAChampion, PareError
from models import Decision, DigestItem, Finding, Principal, Revocation, Team

log = logging.getLogger(__name__)

KINDS = ("approve", "defer", "exempt")
MAX_REASON = 1000


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


@dataclass(frozen=True)
class Target:
    """A digest row a user may decide: its finding, round, message and frozen view."""

    item_id: int
    finding_id: int
    round: int
    message_id: int
    team: str
    shown: dict


def parse_id(value: object, what: str) -> int:
    """Return a button value as a row id, or raise FindingNotFound."""
    try:
        return int(str(value))
    except (TypeError, ValueError):
        raise FindingNotFound(f"no {what} {value!r}") from None


def authorize(
    db: Database, item_id: int | str, user_id: str, admins: tuple[str, ...], kind: str
) -> Target:
    """Return the row if user_id may decide it; refuse (and log) anyone else."""
    item_id = parse_id(item_id, "digest row")
    with db.session() as session:
        item = session.get(DigestItem, item_id)
        if item is None:
            raise FindingNotFound(f"no digest row {item_id}")
        team = item.message.digest.team
        champions = [c.slack_user_id for c in team.champions]
        if user_id not in champions and user_id not in admins:
            log.warning(
                "decision refused, not a champion: user=%s team=%s item=%s action=%s",
                user_id,
                team.name,
                item_id,
                kind,
            )
            raise NotAChampion(user_id, team.name, champions)
        return Target(
            item_id, item.finding_id, item.round, item.message_id, team.name, dict(item.shown)
        )


def standing(db: Database, item_id: int | str) -> DecisionResult | None:
    """Return the decision already made on a row's finding and round, if any."""
    item_id = parse_id(item_id, "digest row")
    with db.session() as session:
        item = session.get(DigestItem, item_id)
        if item is None:
            raise FindingNotFound(f"no digest row {item_id}")
        finding_id, round_, message_id = item.finding_id, item.round, item.message_id
    earlier = _existing(db, finding_id, round_)
    return None if earlier is None else _result(earlier, False, message_id)


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
    item_id = parse_id(digest_item_id, "digest row")
    now = now if now is not None else datetime.now(UTC)
    target = authorize(db, item_id, user_id, admins, kind)
    if kind == "exempt" and not (reason or "").strip():
        raise PareError("an exemption needs a reason")
    finding_id, round_, message_id = target.finding_id, target.round, target.message_id
    frozen = target.shown

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
        reason=(reason or "").strip()[:MAX_REASON] or None,
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


@dataclass(frozen=True)
class BulkResult:
    """What an approve-all did: the decisions it made and the rows already decided."""

    made: list[DecisionResult]
    already: int

    @property
    def message_ids(self) -> set[int]:
        """Return the digest messages that show a row it decided."""
        return {r.message_id for r in self.made}


def decide_all(
    db: Database,
    digest_item_id: int | str,
    user_id: str,
    *,
    admins: tuple[str, ...] = (),
    now: datetime | None = None,
) -> BulkResult:
    """Approve every undecided row of one principal in the clicked message (each exactly once).

    Only the rows of that message: the button's label counts those, and a principal continued
    in the thread has its own button there.
    """
    first = authorize(db, digest_item_id, user_id, admins, "approve_all")
    with db.session() as session:
        item = session.get_one(DigestItem, first.item_id)
        arn = item.shown.get("arn")
        siblings = [
            i.id
            for i in session.scalars(
                select(DigestItem)
                .where(DigestItem.message_id == item.message_id)
                .order_by(DigestItem.id)
            )
            if i.shown.get("arn") == arn
        ]
    made: list[DecisionResult] = []
    already = 0
    for sibling in siblings:
        result = decide(db, sibling, user_id, "approve", admins=admins, now=now)
        if result.created:
            made.append(result)
        else:
            already += 1
    log.info(
        "approve all: item=%s user=%s decided=%s already=%s",
        first.item_id,
        user_id,
        len(made),
        already,
    )
    return BulkResult(made, already)


@dataclass(frozen=True)
class RevokeResult:
    """The revocation that stands for an exemption, and whether this call made it."""

    created: bool
    decision_id: int
    revoked_by: str
    revoked_at: datetime
    team: str


def revoke(
    db: Database,
    decision_id: int | str,
    user_id: str,
    *,
    admins: tuple[str, ...] = (),
    reason: str | None = None,
    now: datetime | None = None,
) -> RevokeResult:
    """End an exemption (the decision itself stays); only the team's champions and admins."""
    decision_id = parse_id(decision_id, "exemption")
    now = now if now is not None else datetime.now(UTC)
    with db.session() as session:
        decision = session.get(Decision, decision_id)
        if decision is None or decision.kind != "exempt":
            raise FindingNotFound(f"no exemption {decision_id}")
        team = session.scalar(
            select(Team)
            .join(Principal, Principal.team_id == Team.id)
            .join(Finding, Finding.principal_id == Principal.id)
            .where(Finding.id == decision.finding_id)
        )
        champions = [c.slack_user_id for c in team.champions] if team else []
        team_name = team.name if team else "(no team)"
        if user_id not in champions and user_id not in admins:
            log.warning("revoke refused, not a champion: user=%s decision=%s", user_id, decision_id)
            raise NotAChampion(user_id, team_name, champions)
    try:
        with db.session() as session:
            session.add(
                Revocation(
                    decision_id=decision_id,
                    revoked_by=user_id,
                    revoked_at=now,
                    reason=(reason or "").strip()[:MAX_REASON] or None,
                )
            )
        created = True
    except IntegrityError:
        created = False
    with db.session() as session:
        row = session.scalars(select(Revocation).where(Revocation.decision_id == decision_id)).one()
        result = RevokeResult(created, decision_id, row.revoked_by, row.revoked_at, team_name)
    log.info("exemption revoked: decision=%s user=%s new=%s", decision_id, user_id, created)
    return result


def latest_message(db: Database, decision_id: int) -> int | None:
    """Return the digest message that showed a decision's row, if any."""
    with db.session() as session:
        return session.scalar(
            select(DigestItem.message_id)
            .join(Decision, Decision.digest_item_id == DigestItem.id)
            .where(Decision.id == decision_id)
        )
