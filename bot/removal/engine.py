"""Run a change's steps as a durable state machine: resumable after a crash, rolled back on a
refusal, every transition appended as an event.

A step is marked `applying` in the database before its AWS call and `done` after it; a crash in
between leaves it pending, and the next run makes the same (idempotent) call again. A refusal
half-way reverses the steps already done, in reverse order.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from bot.aws.iam_write import IamWriteError
from bot.db import Database
from bot.removal.plan import Plan, Step, inverse
from models import Change, ChangeEvent, ChangeStep

log = logging.getLogger(__name__)

FINAL = frozenset({"applied", "refused", "failed", "rolled_back", "dropped", "dry_run"})
UNFINISHED = ("planned", "before_state_saved", "applying", "rolling_back")


def _now() -> datetime:
    return datetime.now(UTC)


def transition(
    change: Change, status: str, detail: str | None = None, step: int | None = None
) -> ChangeEvent:
    """Move a change to status and return the event that records it (to add to a session)."""
    change.status = status
    if step is not None:
        change.step = step
    change.updated_at = _now()
    if status in FINAL:
        change.finished_at = change.updated_at
    return ChangeEvent(change_id=change.id, status=status, step=change.step, detail=detail)


def record_plan(
    db: Database,
    change: Change,
    plan: Plan,
    before: dict[str, Any] | None,
    dry_run: bool,
    claim: Callable[[Session], None] | None = None,
) -> int:
    """Store a planned change with its before-state and steps in one transaction.

    claim runs first in that transaction; if it raises, nothing is recorded.
    """
    change.steps = len(plan.steps)
    change.removed = list(plan.removed)
    change.kept = list(plan.kept)
    change.before_state = before
    with db.session() as session:
        if claim is not None:
            claim(session)
        session.add(change)
        session.flush()
        session.add(ChangeEvent(change_id=change.id, status="planned", step=0))
        for number, step in enumerate(plan.steps, start=1):
            session.add(
                ChangeStep(change_id=change.id, number=number, op=step.op, params=step.params)
            )
        if plan.refused:
            change.reason = plan.refused
            session.add(transition(change, "refused", plan.refused))
        elif not plan.steps:
            change.reason = "; ".join(f"{k['what']}: {k['why']}" for k in plan.kept) or None
            session.add(transition(change, "dropped", change.reason))
        elif dry_run:
            session.add(transition(change, "dry_run"))
        else:
            session.add(transition(change, "before_state_saved"))
    log.info(
        "change planned: change=%s kind=%s principal=%s steps=%d status=%s",
        change.id,
        change.kind,
        change.principal_id,
        change.steps,
        change.status,
    )
    return change.id


def _steps(db: Database, change_id: int) -> list[ChangeStep]:
    with db.session() as session:
        return list(
            session.scalars(
                select(ChangeStep)
                .where(ChangeStep.change_id == change_id)
                .order_by(ChangeStep.number)
            )
        )


def run(db: Database, writer: Any, change_id: int) -> str:
    """Make (or resume) a change's calls; return its final status.

    Anything but an AWS refusal (a crash, a bug) propagates and leaves the change resumable.
    """
    with db.session() as session:
        status = session.get_one(Change, change_id).status
    if status in FINAL:
        return status
    if status == "rolling_back":
        return _roll_back(db, writer, change_id, "resumed")
    for row in _steps(db, change_id):
        if row.status != "pending":
            continue
        with db.session() as session:
            change = session.get_one(Change, change_id)
            session.add(transition(change, "applying", f"{row.op}", row.number))
        try:
            result = writer.call(row.op, row.params)
        except IamWriteError as exc:
            return _refused(db, writer, change_id, row.number, exc)
        with db.session() as session:
            done = session.get_one(ChangeStep, row.id)
            done.status = "done"
            done.result = result
            done.done_at = _now()
    with db.session() as session:
        change = session.get_one(Change, change_id)
        session.add(transition(change, "applied"))
    log.info("change applied: change=%s", change_id)
    return "applied"


def _refused(db: Database, writer: Any, change_id: int, number: int, exc: IamWriteError) -> str:
    with db.session() as session:
        change = session.get_one(Change, change_id)
        change.error_code = exc.code
        change.reason = str(exc)
        done = session.scalar(
            select(ChangeStep).where(ChangeStep.change_id == change_id, ChangeStep.status == "done")
        )
        if done is None:
            # Nothing was changed: the refusal is the whole outcome, not retried blindly.
            session.add(transition(change, "refused", str(exc), number))
            log.warning("change refused: change=%s code=%s", change_id, exc.code)
            return "refused"
        session.add(transition(change, "rolling_back", str(exc), number))
    return _roll_back(db, writer, change_id, str(exc))


def _roll_back(db: Database, writer: Any, change_id: int, why: str) -> str:
    done = [r for r in _steps(db, change_id) if r.status == "done"]
    for row in reversed(done):
        try:
            for back in inverse(Step(row.op, row.params), row.result):
                writer.call(back.op, back.params)
        except IamWriteError as exc:
            with db.session() as session:
                change = session.get_one(Change, change_id)
                change.reason = f"{why}; rollback stopped at step {row.number}: {exc}"
                session.add(transition(change, "failed", change.reason, row.number))
            log.error("rollback failed: change=%s step=%s code=%s", change_id, row.number, exc.code)
            return "failed"
        with db.session() as session:
            session.get_one(ChangeStep, row.id).status = "rolled_back"
    with db.session() as session:
        change = session.get_one(Change, change_id)
        session.add(transition(change, "rolled_back", why))
    log.warning("change rolled back: change=%s", change_id)
    return "rolled_back"
